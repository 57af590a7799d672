/**
 * Context sources and entity loaders of the PIP: the clock, which the PDP
 * fills by itself, and adapters over the ports the server feeds from the
 * stores (registered identities, the latest posture and risk signals).
 */
import type { Clock } from '../kernel/index.ts';
import type { CedarValueJson, EntityJson } from './cedar.ts';
import type { ContextQuery, ContextSource, EntityLoader, EntityRef } from './ports.ts';

/**
 * Request time from the clock into `context.time` as
 * `{epochSeconds, hourUtc, weekday}` (weekday 0 = Sunday). Its version is the
 * current second, so a cached decision never outlives the second it was made in.
 *
 * @example
 * new Decider({ engine, audit, clock, contextSources: [clockContextSource(clock)] });
 */
export function clockContextSource(clock: Clock): ContextSource {
  return {
    name: 'clock',
    key: 'time',
    required: true,
    version: () => String(Math.floor(clock.nowMs() / 1000)),
    load: async () => {
      const d = clock.now();
      return { epochSeconds: Math.floor(d.getTime() / 1000), hourUtc: d.getUTCHours(), weekday: d.getUTCDay() };
    },
  };
}

// ---------------------------------------------------------------- registered identities

/** A registered workload as the PDP needs it (the server adapts registration entries to this). */
export interface RegisteredWorkload {
  readonly spiffeId: string;
  /** Environment label (`prod`, `stage`); the entity is `in Writ::Environment::"<env>"`. */
  readonly environment?: string;
  /** Owning team and human contact; the entity is `in Writ::Team::"<team>"`. */
  readonly owner?: { readonly team: string; readonly contact: string };
  /** Workload selectors (`k8s:ns:payments`), offered to policies as `labels`. */
  readonly selectors: readonly string[];
  /** SPIFFE ID of the node it is registered on, when the entry names one. */
  readonly nodeSpiffeId?: string;
}

/** An attested node as the PDP needs it. */
export interface RegisteredNode {
  readonly spiffeId: string;
  /** `join_token`, `oidc` … */
  readonly attestationMethod: string;
  readonly selectors: readonly string[];
}

/** Port: the registered identities (entries and live nodes), read in one go. */
export interface IdentityDirectory {
  workloads(): Promise<readonly RegisteredWorkload[]>;
  /** Attested nodes that are not evicted. */
  nodes(): Promise<readonly RegisteredNode[]>;
  /**
   * Owner contacts (lower case) that were offboarded (`owner-offboarded`
   * signals): their `Writ::Owner` entity has `active` false. Optional.
   */
  offboardedOwners?(): Promise<ReadonlySet<string>>;
}

/** The Cedar entities one snapshot of the directory stands for, by uid key. */
function entitiesOf(workloads: readonly RegisteredWorkload[], nodes: readonly RegisteredNode[], offboarded: ReadonlySet<string> = new Set()): Map<string, EntityJson> {
  const out = new Map<string, EntityJson>();
  const key = (type: string, id: string) => `${type}::${JSON.stringify(id)}`;
  const nodeById = new Map(nodes.map((n) => [n.spiffeId, n]));
  for (const n of nodes) {
    out.set(key('Writ::Node', n.spiffeId), { uid: { type: 'Writ::Node', id: n.spiffeId }, attrs: { attestationMethod: n.attestationMethod, labels: [...n.selectors] }, parents: [] });
  }
  for (const w of workloads) {
    const parents: { type: string; id: string }[] = [];
    if (w.environment !== undefined) parents.push({ type: 'Writ::Environment', id: w.environment });
    if (w.owner !== undefined) {
      parents.push({ type: 'Writ::Team', id: w.owner.team });
      const ownerKey = key('Writ::Owner', w.owner.contact);
      if (!out.has(ownerKey)) {
        out.set(ownerKey, {
          uid: { type: 'Writ::Owner', id: w.owner.contact },
          attrs: { active: !offboarded.has(w.owner.contact.toLowerCase()), ...(w.owner.contact.includes('@') ? { email: w.owner.contact } : {}) },
          parents: [{ type: 'Writ::Team', id: w.owner.team }],
        });
      }
    }
    const node = w.nodeSpiffeId === undefined ? undefined : nodeById.get(w.nodeSpiffeId);
    const common: Record<string, CedarValueJson> = {
      spiffeId: w.spiffeId,
      labels: [...w.selectors],
      ...(w.owner === undefined ? {} : { owner: { __entity: { type: 'Writ::Owner', id: w.owner.contact } } }),
    };
    // `legacy` is not registration data: false here, and the policy folder's entities file (which wins) may say otherwise.
    out.set(key('Writ::Workload', w.spiffeId), {
      uid: { type: 'Writ::Workload', id: w.spiffeId },
      attrs: {
        ...common,
        legacy: false,
        ...(node === undefined ? {} : { node: { __entity: { type: 'Writ::Node', id: node.spiffeId } }, attestationMethod: node.attestationMethod }),
      },
      parents,
    });
    // The same registration acting as an AI agent (the enforcement point names the type).
    out.set(key('Writ::Agent', w.spiffeId), { uid: { type: 'Writ::Agent', id: w.spiffeId }, attrs: common, parents });
  }
  return out;
}

/** Options of {@link registryEntityLoader}. */
export interface RegistryLoaderOptions {
  readonly clock: Clock;
  /** Re-read the directory when the snapshot is older than this (default 2,000 ms). */
  readonly refreshMs?: number;
  /**
   * When a registered type (`Workload`, `Agent`, `Node`, `Owner`) is asked
   * for and not in the snapshot, re-read in the background if the snapshot is
   * at least this old (default 250 ms): a new registration is seen within
   * moments, unknown ids cannot hammer the store, and no decision waits.
   */
  readonly missRefreshMs?: number;
}

/** An {@link EntityLoader} over an {@link IdentityDirectory}, with `refresh()` for change signals. */
export interface RegistryEntityLoader extends EntityLoader {
  /** Re-read on the next request (call on `entry-deleted`, `node-evicted` and similar signals). */
  refresh(): void;
}

/**
 * Principal attributes from the registered identities: each registration
 * entry is a `Writ::Workload` (and a `Writ::Agent`) keyed by its SPIFFE ID,
 * `in` its environment and its owner's team, with `spiffeId`, `labels` (its
 * selectors), `owner`, and `node` plus `attestationMethod` when it is
 * registered on an attested node; each live node is a `Writ::Node`.
 *
 * The directory is read as a whole snapshot: at once after `refresh()`, and
 * in the background on a miss or once the snapshot is `refreshMs` old (the
 * decision that notices uses the old snapshot, and caches nothing on it).
 * `version()` names the snapshot, so a cached decision never outlives the
 * data it was made with. A directory that fails keeps the
 * last snapshot until it answers again (no snapshot yet: the load rejects,
 * and the decision is a deny).
 *
 * @example
 * const loader = registryEntityLoader({ workloads: async () => entries, nodes: async () => [] }, { clock: systemClock });
 * new Decider({ engine, audit, clock, entityLoader: loader });
 */
export function registryEntityLoader(directory: IdentityDirectory, o: RegistryLoaderOptions): RegistryEntityLoader {
  const refreshMs = o.refreshMs ?? 2000;
  const missRefreshMs = o.missRefreshMs ?? 250;
  let snapshot: { at: number; entities: Map<string, EntityJson> } | undefined;
  let generation = 0;
  let stale = true;
  let inflight: Promise<Map<string, EntityJson>> | undefined;

  const read = (): Promise<Map<string, EntityJson>> => {
    inflight ??= (async () => {
      try {
        stale = false;
        const [w, n, gone] = await Promise.all([directory.workloads(), directory.nodes(), directory.offboardedOwners?.() ?? Promise.resolve(new Set<string>())]);
        snapshot = { at: o.clock.nowMs(), entities: entitiesOf(w, n, gone) };
        generation += 1;
        return snapshot.entities;
      } catch (e) {
        stale = true;
        if (snapshot === undefined) throw e;
        return snapshot.entities;
      } finally {
        inflight = undefined;
      }
    })();
    return inflight;
  };
  const current = async (): Promise<Map<string, EntityJson>> => {
    if (snapshot === undefined || stale) return read();
    // Only old: answer from the snapshot and re-read beside the decision, so
    // the periodic refresh never sits on a decision's latency budget.
    if (o.clock.nowMs() - snapshot.at >= refreshMs) void read().catch(() => undefined);
    return snapshot.entities;
  };

  return {
    // Before the first read there is no version to vouch for: no caching.
    version: () => (snapshot === undefined || stale || o.clock.nowMs() - snapshot.at >= refreshMs ? undefined : `registry-${generation}`),
    refresh: () => {
      stale = true;
    },
    list: async (type) => [...(await current()).values()].flatMap((e) => {
      const u = '__entity' in e.uid ? e.uid.__entity : e.uid;
      return u.type === type ? [{ type: u.type, id: u.id }] : [];
    }),
    load: async (uids) => {
      const all = await current();
      // Maybe a registration made since the snapshot: re-read in the background,
      // at most once per `missRefreshMs`; this decision denies (not found).
      const miss = uids.some((u) => REGISTRY_TYPES.has(u.type) && !all.has(`${u.type}::${JSON.stringify(u.id)}`));
      if (miss && snapshot !== undefined && inflight === undefined && o.clock.nowMs() - snapshot.at >= missRefreshMs) void read().catch(() => undefined);
      return { entities: uids.flatMap((u) => all.get(`${u.type}::${JSON.stringify(u.id)}`) ?? []) };
    },
  };
}

/** The types a registry snapshot holds. */
const REGISTRY_TYPES = new Set(['Writ::Workload', 'Writ::Agent', 'Writ::Node', 'Writ::Owner']);

// ---------------------------------------------------------------- posture and risk

/** Port: the latest posture and risk of a subject (the signals store's read side). */
export interface SignalReader {
  posture(subject: string): Promise<{ readonly score: number; readonly failingChecks: readonly string[]; readonly at: string } | undefined>;
  risk(subject: string): Promise<{ readonly level: string; readonly at: string } | undefined>;
}

/** Risk words to the schema's `Risk.score` (0–100). */
const RISK_SCORE: Readonly<Record<string, number>> = { none: 0, low: 25, medium: 50, high: 75, critical: 100 };

function subjectOf(q: ContextQuery, ref: EntityRef): string {
  const e = q.entities.get(`${ref.type}::${JSON.stringify(ref.id)}`);
  const spiffeId = e?.attrs?.spiffeId;
  return typeof spiffeId === 'string' ? spiffeId : ref.id;
}

function nodeOf(q: ContextQuery): EntityRef | undefined {
  const e = q.entities.get(`${q.principal.type}::${JSON.stringify(q.principal.id)}`);
  const node = e?.attrs?.node;
  if (typeof node !== 'object' || node === null || Array.isArray(node) || !('__entity' in node)) return undefined;
  const r: unknown = node.__entity;
  if (typeof r !== 'object' || r === null) return undefined;
  const { type, id } = r as { type?: unknown; id?: unknown };
  return typeof type === 'string' && typeof id === 'string' ? { type, id } : undefined;
}

function postureValue(p: { score: number; failingChecks: readonly string[]; at: string }): CedarValueJson {
  const observed = Date.parse(p.at);
  return { score: p.score, compliant: p.failingChecks.length === 0, observedAt: Number.isNaN(observed) ? 0 : Math.floor(observed / 1000) };
}

/**
 * Context sources over the latest signals: `context.posture` (the
 * principal's, looked up by its `spiffeId` attribute, else its id),
 * `context.nodePosture` (its node's) and `context.risk`. None is required:
 * a subject without signals simply has no member, and policies say what that
 * means (`context has posture && …`). A reader that fails is a deny
 * (`posture-unavailable`, `node-posture-unavailable`, `risk-unavailable`).
 * `version` must change whenever a signal is accepted (the server counts
 * signals seen on the revocation bus), so a cached allow never outlives a
 * posture drop.
 *
 * @example
 * const sources = signalContextSources(signals.context(), () => String(seen));
 */
export function signalContextSources(reader: SignalReader, version: () => string | undefined): ContextSource[] {
  return [
    {
      name: 'posture',
      key: 'posture',
      required: false,
      version,
      load: async (q) => {
        const p = await reader.posture(subjectOf(q, q.principal));
        return p === undefined ? undefined : postureValue(p);
      },
    },
    {
      name: 'node-posture',
      key: 'nodePosture',
      required: false,
      version,
      load: async (q) => {
        const node = nodeOf(q);
        if (node === undefined) return undefined;
        const p = await reader.posture(node.id);
        return p === undefined ? undefined : postureValue(p);
      },
    },
    {
      name: 'risk',
      key: 'risk',
      required: false,
      version,
      load: async (q) => {
        const r = await reader.risk(subjectOf(q, q.principal));
        return r === undefined ? undefined : { level: r.level, score: RISK_SCORE[r.level] ?? 100 };
      },
    },
  ];
}
