/**
 * Slicing: index each policy by its scope (principal, action, resource) so a
 * request is evaluated against only the policies whose scope can match it.
 *
 * INVARIANT: a policy is left out of a slice only when its scope cannot match
 * the request (a scope that is unknown statically, like `principal in X`,
 * lands in the `any` bucket). Leaving out a policy whose scope is false does
 * not change Cedar's answer, because a false scope neither permits, forbids
 * nor errors.
 */
import type { EntityUidJson, PolicyJson } from './cedar.ts';
import { uidKey } from './schema-info.ts';

/** How one scope element constrains the request. */
export type EntityScope =
  | { readonly kind: 'any' }
  | { readonly kind: 'type'; readonly type: string }
  | { readonly kind: 'eq'; readonly key: string; readonly type: string };

/** How the action scope constrains the request. */
export type ActionScope = { readonly kind: 'any' } | { readonly kind: 'set'; readonly keys: ReadonlySet<string> };

/** The static scope of one policy. */
export interface PolicyScope {
  readonly principal: EntityScope;
  readonly action: ActionScope;
  readonly resource: EntityScope;
}

function uidOf(e: EntityUidJson): { type: string; id: string } {
  return '__entity' in e ? e.__entity : e;
}

function entityScope(c: PolicyJson['principal']): EntityScope {
  if (c.op === '==' && 'entity' in c) {
    const u = uidOf(c.entity);
    return { kind: 'eq', key: uidKey(u.type, u.id), type: u.type };
  }
  if (c.op === 'is') return { kind: 'type', type: c.entity_type };
  // `All`, `in` (descendants of any type) and template slots: any.
  return { kind: 'any' };
}

/**
 * The scope of a policy in Cedar's JSON form. Action groups are expanded to
 * every action in them through `descendants` (from the schema); a group the
 * schema does not know makes the scope `any`.
 *
 * @example
 * scopeOf(policyJson, info.actionDescendants);
 */
export function scopeOf(p: Pick<PolicyJson, 'principal' | 'action' | 'resource'>, descendants: ReadonlyMap<string, ReadonlySet<string>>): PolicyScope {
  let action: ActionScope = { kind: 'any' };
  const a = p.action;
  if (a.op === '==' && 'entity' in a) {
    const u = uidOf(a.entity);
    action = { kind: 'set', keys: new Set([uidKey(u.type, u.id)]) };
  } else if (a.op === 'in') {
    const targets = 'entities' in a ? a.entities : [a.entity];
    const keys = new Set<string>();
    let known = true;
    for (const t of targets) {
      const u = uidOf(t);
      const key = uidKey(u.type, u.id);
      const d = descendants.get(key);
      if (d === undefined) known = false;
      else for (const k of d) keys.add(k);
      keys.add(key);
    }
    if (known) action = { kind: 'set', keys };
  }
  return { principal: entityScope(p.principal), action, resource: entityScope(p.resource) };
}

function entityMatches(s: EntityScope, type: string, key: string): boolean {
  if (s.kind === 'any') return true;
  if (s.kind === 'type') return s.type === type;
  return s.key === key;
}

/** The request coordinates a slice is chosen by. */
export interface SliceRequest {
  readonly principalType: string;
  readonly principalKey: string;
  readonly actionKey: string;
  readonly resourceType: string;
  readonly resourceKey: string;
}

/**
 * Buckets of policy indexes by scope, for each of the three dimensions.
 *
 * @example
 * const index = new ScopeIndex(scopes);
 * index.select(req); // [0, 4, 17]
 */
export class ScopeIndex {
  readonly #scopes: readonly PolicyScope[];
  readonly #principal = new Map<string, number[]>();
  readonly #action = new Map<string, number[]>();
  readonly #resource = new Map<string, number[]>();

  constructor(scopes: readonly PolicyScope[]) {
    this.#scopes = scopes;
    scopes.forEach((s, i) => {
      push(this.#principal, entityBucket(s.principal), i);
      push(this.#resource, entityBucket(s.resource), i);
      if (s.action.kind === 'any') push(this.#action, '*', i);
      else for (const k of s.action.keys) push(this.#action, `a:${k}`, i);
    });
  }

  /** Indexes (ascending) of the policies whose scope can match `r`. */
  select(r: SliceRequest): number[] {
    const dims = [
      [this.#principal.get('*'), this.#principal.get(`t:${r.principalType}`), this.#principal.get(`e:${r.principalKey}`)],
      [this.#action.get('*'), this.#action.get(`a:${r.actionKey}`)],
      [this.#resource.get('*'), this.#resource.get(`t:${r.resourceType}`), this.#resource.get(`e:${r.resourceKey}`)],
    ];
    // Walk the smallest dimension's candidates and check the other two.
    let best = dims[0] ?? [];
    let bestSize = Infinity;
    for (const d of dims) {
      const size = d.reduce((n, b) => n + (b?.length ?? 0), 0);
      if (size < bestSize) {
        best = d;
        bestSize = size;
      }
    }
    const out: number[] = [];
    for (const bucket of best) {
      for (const i of bucket ?? []) {
        const s = this.#scopes[i];
        if (s === undefined) continue;
        if (!entityMatches(s.principal, r.principalType, r.principalKey)) continue;
        if (!entityMatches(s.resource, r.resourceType, r.resourceKey)) continue;
        if (s.action.kind === 'set' && !s.action.keys.has(r.actionKey)) continue;
        out.push(i);
      }
    }
    return out.sort((x, y) => x - y);
  }
}

function entityBucket(s: EntityScope): string {
  if (s.kind === 'any') return '*';
  if (s.kind === 'type') return `t:${s.type}`;
  return `e:${s.key}`;
}

function push(m: Map<string, number[]>, k: string, i: number): void {
  const list = m.get(k);
  if (list === undefined) m.set(k, [i]);
  else list.push(i);
}
