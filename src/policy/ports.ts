/**
 * Ports of the policy context: where the PDP gets the data it assembles into
 * a Cedar request (the PIP). Storage, identity and signals implement them
 * later; until then the PDP runs on its own entities file and on whatever the
 * caller supplies. Missing data is a deny reason, never a crash.
 */
import type { CedarValueJson, EntityJson } from './cedar.ts';

/** An entity reference in Cedar terms: fully qualified type and id. */
export interface EntityRef {
  readonly type: string;
  readonly id: string;
}

/** What an {@link EntityLoader} returns. */
export interface LoadedEntities {
  /** Cedar entity JSON for each uid it knows (unknown uids are simply absent). */
  readonly entities: readonly EntityJson[];
}

/**
 * Port: principal and resource attributes from the stores (entry labels,
 * owner, environment, attestation method, exposure, sensitivity…).
 *
 * @example
 * const loader: EntityLoader = { version: () => String(store.rev), load: async (uids) => ({ entities: await store.entities(uids) }) };
 */
export interface EntityLoader {
  /**
   * A cheap, synchronous version of the data: it MUST change whenever any
   * entity it can return changes. `undefined` means "unknown" and turns the
   * decision cache off.
   */
  version(): string | undefined;
  load(uids: readonly EntityRef[]): Promise<LoadedEntities>;
  /**
   * The ids of every entity of `type` (fully qualified) this loader knows, for
   * AuthZEN search and `writ policy analyze`. Optional: a loader without it
   * contributes no candidates (its entities are still loaded for decisions).
   */
  list?(type: string): Promise<readonly EntityRef[]>;
}

/** What a context source is asked about. */
export interface ContextQuery {
  readonly principal: EntityRef;
  readonly action: EntityRef;
  readonly resource: EntityRef;
  /** Entities assembled so far, by uid key (`Type::"id"`), for attribute look-ups (e.g. the principal's node). */
  readonly entities: ReadonlyMap<string, EntityJson>;
}

/**
 * Port: one source of live context (posture, risk, delegation chain, task,
 * request time). Its value lands in the Cedar context under `key`.
 *
 * @example
 * const posture: ContextSource = {
 *   name: 'posture', key: 'posture', required: true,
 *   version: () => String(signals.revision),
 *   load: async (q) => signals.latestPosture(q.principal.id),
 * };
 */
export interface ContextSource {
  /** Kebab-case; a failure is reported as the reason `<name>-unavailable`. */
  readonly name: string;
  /** The context attribute it fills (top level of the Cedar context). */
  readonly key: string;
  /**
   * When true, no value denies the request (`<name>-unavailable`); when
   * false, no value leaves the member absent for the policies to judge. An
   * error denies the request either way.
   */
  readonly required: boolean;
  /** Same contract as {@link EntityLoader.version}. */
  version(): string | undefined;
  /** The value, or `undefined` when there is none for this request. */
  load(q: ContextQuery): Promise<CedarValueJson | undefined>;
}

/**
 * An in-memory {@link EntityLoader} over a fixed list, for tests, policy test
 * cases and small deployments.
 *
 * @example
 * const loader = memoryEntityLoader([{ uid: { type: 'Writ::Workload', id: 'w' }, attrs: {}, parents: [] }]);
 */
export function memoryEntityLoader(entities: readonly EntityJson[], version = 'static'): EntityLoader {
  const byKey = new Map<string, EntityJson>();
  for (const e of entities) {
    const u = '__entity' in e.uid ? e.uid.__entity : e.uid;
    byKey.set(`${u.type}::${JSON.stringify(u.id)}`, e);
  }
  return {
    version: () => version,
    list: async (type) => [...byKey.values()].flatMap((e) => {
      const u = '__entity' in e.uid ? e.uid.__entity : e.uid;
      return u.type === type ? [{ type: u.type, id: u.id }] : [];
    }),
    load: async (uids) => ({
      entities: uids.flatMap((u) => {
        const e = byKey.get(`${u.type}::${JSON.stringify(u.id)}`);
        return e === undefined ? [] : [e];
      }),
    }),
  };
}
