/**
 * The reaper: ends what should no longer exist. One pass expires overdue
 * tasks, expires leases past their time, revokes `pending` leases older than
 * the grace period (an issuance a crash interrupted), and reconciles every
 * engine: an account with the engine's prefix whose lease is missing or ended
 * is removed.
 */
import type { AuditSink, Clock } from '../kernel/index.ts';
import { newCorrelationId } from '../kernel/index.ts';
import type { DynamicCredentials } from './dynamic.ts';
import type { LeaseManager } from './lease-manager.ts';
import type { TaskService } from './tasks.ts';

/** What one pass did. */
export interface ReaperPass {
  readonly tasksExpired: number;
  readonly leasesExpired: number;
  readonly pendingRevoked: number;
  readonly orphansRemoved: number;
}

const BATCH = 1000;

/**
 * @example
 * const reaper = new Reaper({ leases, tasks, dynamic, audit, clock, pendingGraceMs: 60_000 });
 * await reaper.pass();
 */
export class Reaper {
  readonly #leases: LeaseManager;
  readonly #tasks: TaskService;
  readonly #dynamic: DynamicCredentials;
  readonly #audit: AuditSink;
  readonly #clock: Clock;
  readonly #graceMs: number;
  #running: Promise<ReaperPass> | undefined;

  constructor(deps: { leases: LeaseManager; tasks: TaskService; dynamic: DynamicCredentials; audit: AuditSink; clock: Clock; pendingGraceMs: number }) {
    this.#leases = deps.leases;
    this.#tasks = deps.tasks;
    this.#dynamic = deps.dynamic;
    this.#audit = deps.audit;
    this.#clock = deps.clock;
    this.#graceMs = deps.pendingGraceMs;
  }

  /** Run one pass; a pass already running is joined, not doubled. */
  pass(): Promise<ReaperPass> {
    this.#running ??= this.#pass().finally(() => {
      this.#running = undefined;
    });
    return this.#running;
  }

  async #pass(): Promise<ReaperPass> {
    const cid = newCorrelationId();
    const tasks = await this.#tasks.expireOverdue(cid);
    const now = this.#clock.nowMs();
    let leasesExpired = 0;
    for (;;) {
      const due = await this.#leases.list({ states: ['active', 'pending'], expiresBefore: new Date(now).toISOString(), limit: BATCH });
      if (due.length === 0) break;
      for (const l of due) if ((await this.#leases.expire(l.id, cid)) !== undefined) leasesExpired++;
      if (due.length < BATCH) break;
    }
    let pendingRevoked = 0;
    for (;;) {
      const stale = await this.#leases.list({ states: ['pending'], createdBefore: new Date(now - this.#graceMs).toISOString(), limit: BATCH });
      if (stale.length === 0) break;
      for (const l of stale) if ((await this.#leases.revoke(l.id, 'pending-past-grace', cid)) !== undefined) pendingRevoked++;
      if (stale.length < BATCH) break;
    }
    const orphansRemoved = await this.reconcile(cid);
    return { tasksExpired: tasks.length, leasesExpired, pendingRevoked, orphansRemoved };
  }

  /** Remove every engine account whose lease is missing, revoked or expired. */
  async reconcile(correlationId: string = newCorrelationId()): Promise<number> {
    let removed = 0;
    for (const engine of this.#dynamic.engines()) {
      for (const username of await engine.listAccounts()) {
        const lease = await this.#leases.get(username.slice(engine.prefix.length));
        // A pending lease is an issuance in flight (or one the grace rule ends); an active one is live.
        if (lease !== undefined && (lease.state === 'pending' || lease.state === 'active')) continue;
        await engine.revoke(username);
        removed++;
        await this.#audit.append({
          action: 'credential.orphan.removed',
          actor: { type: 'system', id: 'writ' },
          target: { type: 'account', id: `${engine.type}:${engine.name}:${username}` },
          outcome: 'success',
          reasons: [lease === undefined ? 'no-lease' : `lease-${lease.state}`],
          correlationId,
          details: { engine: engine.name, username, leaseId: lease?.id ?? null },
        });
      }
    }
    return removed;
  }
}
