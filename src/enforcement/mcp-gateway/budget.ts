/**
 * Per-task call budgets: how many `tools/call`s a task may make in all and per
 * tool. A call is charged only once the PDP allowed it; a call that would go
 * past a limit is refused before it reaches the upstream server. Without a
 * task claim the budget is kept per agent and principal.
 *
 * NOTE: counters live in this gateway process; several gateway replicas each
 * count on their own (a shared counter store is future work).
 */

/** Limits; an absent limit is unlimited. */
export interface BudgetLimits {
  /** Most `tools/call`s per task. */
  readonly totalCalls?: number;
  /** Most calls of any one tool per task. */
  readonly callsPerTool?: number;
  /** Per-tool overrides of `callsPerTool`, by tool name. */
  readonly perTool?: Readonly<Record<string, number>>;
}

/** The outcome of a charge. */
export type BudgetCharge = { readonly ok: true; readonly used: number; readonly usedForTool: number } | { readonly ok: false; readonly reason: 'task-budget-exceeded' | 'tool-budget-exceeded'; readonly limit: number };

interface Counter {
  total: number;
  readonly tools: Map<string, number>;
  lastMs: number;
}

function checkLimit(n: number | undefined, what: string): void {
  if (n !== undefined && (!Number.isSafeInteger(n) || n < 0)) throw new TypeError(`${what} must be a non-negative integer`);
}

/**
 * @example
 * const budgets = new CallBudgets({ totalCalls: 100, callsPerTool: 20 });
 * const c = budgets.charge('task_abc', 'search');
 * if (!c.ok) deny(c.reason);
 */
export class CallBudgets {
  readonly #limits: BudgetLimits;
  readonly #counters = new Map<string, Counter>();
  readonly #maxKeys: number;

  constructor(limits: BudgetLimits = {}, maxKeys = 100_000) {
    checkLimit(limits.totalCalls, 'totalCalls');
    checkLimit(limits.callsPerTool, 'callsPerTool');
    for (const [k, v] of Object.entries(limits.perTool ?? {})) checkLimit(v, `the budget of tool \`${k}\``);
    this.#limits = { ...limits, ...(limits.perTool === undefined ? {} : { perTool: { ...limits.perTool } }) };
    this.#maxKeys = maxKeys;
  }

  /** True when some limit is set. */
  get limited(): boolean {
    return this.#limits.totalCalls !== undefined || this.#limits.callsPerTool !== undefined || Object.keys(this.#limits.perTool ?? {}).length > 0;
  }

  #toolLimit(tool: string): number | undefined {
    const own = this.#limits.perTool === undefined ? undefined : Object.hasOwn(this.#limits.perTool, tool) ? this.#limits.perTool[tool] : undefined;
    return own ?? this.#limits.callsPerTool;
  }

  /** Charge one call of `tool` to `key`, or refuse it when a limit would be passed. */
  charge(key: string, tool: string, nowMs = 0): BudgetCharge {
    let c = this.#counters.get(key);
    const usedTool = c?.tools.get(tool) ?? 0;
    const total = this.#limits.totalCalls;
    if (total !== undefined && (c?.total ?? 0) >= total) return { ok: false, reason: 'task-budget-exceeded', limit: total };
    const perTool = this.#toolLimit(tool);
    if (perTool !== undefined && usedTool >= perTool) return { ok: false, reason: 'tool-budget-exceeded', limit: perTool };
    if (c === undefined) {
      if (this.#counters.size >= this.#maxKeys) {
        // Forget the least recently charged key (Map order is insertion order; charges re-insert).
        const oldest = this.#counters.keys().next();
        if (oldest.done !== true) this.#counters.delete(oldest.value);
      }
      c = { total: 0, tools: new Map(), lastMs: nowMs };
    } else {
      this.#counters.delete(key);
    }
    c.total += 1;
    c.tools.set(tool, usedTool + 1);
    c.lastMs = nowMs;
    this.#counters.set(key, c);
    return { ok: true, used: c.total, usedForTool: usedTool + 1 };
  }

  /** Calls charged so far to `key` (all tools, or one). */
  used(key: string, tool?: string): number {
    const c = this.#counters.get(key);
    if (c === undefined) return 0;
    return tool === undefined ? c.total : (c.tools.get(tool) ?? 0);
  }
}
