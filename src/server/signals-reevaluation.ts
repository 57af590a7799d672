/**
 * The server's side of re-evaluation: the signals context declares
 * `ReevaluationPort` and owns the orchestration (`Reevaluator`), because it
 * sits below credentials in the layering and beside the PDP; this composition
 * root implements the port over the lease manager (access and refresh tokens
 * are leases whose id is the `jti`; dynamic secrets are leases whose revoker
 * drops the account and its sessions), the task store and the PDP.
 */
import type { AuditActor, Clock } from '../kernel/index.ts';
import type { Lease, LeaseManager, LeaseState, TaskStore } from '../credentials/index.ts';
import type { Decider } from '../policy/index.ts';
import type { DrillTarget, LiveItem, ReevaluationPort, RevocationBus, RevocationInput, Unsubscribe } from '../signals/index.ts';

const LIVE: readonly LeaseState[] = ['pending', 'active'];
const TOKEN_KINDS = new Set(['access_token', 'refresh_token']);

function itemOf(l: Lease): LiveItem {
  return {
    type: TOKEN_KINDS.has(l.kind) ? 'token' : 'lease',
    id: l.id,
    subject: l.subject,
    kind: l.kind,
    ...(l.audience === null ? {} : { audience: l.audience }),
    ...(l.taskId === null ? {} : { taskId: l.taskId }),
    // Tokens are issued on a PDP decision; dynamic secrets through the admin API.
    gated: TOKEN_KINDS.has(l.kind),
  };
}

/**
 * @example
 * service.setReevaluator(new Reevaluator({ port: reevaluationPort({ leases, tasks: store.credentials, decider, clock }), bus, audit, clock, context: service.context() }));
 */
export function reevaluationPort(deps: {
  leases: LeaseManager;
  tasks: TaskStore;
  decider: Decider;
  clock: Clock;
  entries?: () => Promise<readonly { readonly spiffeId: string; readonly owner: { readonly contact: string } }[]>;
  /** Make the PDP re-read its registry and signal data before re-deciding (the signal was just stored). */
  refresh?: () => void;
}): ReevaluationPort {
  const { leases, tasks, decider, clock, entries, refresh } = deps;
  return {
    async findLive(q) {
      // The bus may deliver the signal to the PDP's own feed after this runs: refresh here, so the
      // re-decisions below see the signal (an offboarded owner, a posture) and not a cached view.
      refresh?.();
      const seen = new Map<string, LiveItem>();
      const add = (ls: readonly Lease[]): void => {
        for (const l of ls) if (!seen.has(l.id)) seen.set(l.id, itemOf(l));
      };
      if (q.all === true) add(await leases.list({ states: LIVE, limit: q.limit }));
      if (q.taskId !== undefined) add(await leases.list({ taskId: q.taskId, states: LIVE, limit: q.limit }));
      for (const subject of q.subjects) add(await leases.list({ subject, states: LIVE, limit: q.limit }));
      return [...seen.values()].slice(0, q.limit);
    },

    // The question re-asked is the one that lets a holder keep a credential:
    // `credential/issue` of the item's audience (a service), or of the
    // workload itself for its SVIDs, with the signal as context. A token may
    // also have come from a token exchange: it is kept when either action is
    // allowed and no `forbid` matched either.
    async redecide(item, signal, context, correlationId) {
      const principal = { type: 'Writ::Workload', id: item.subject };
      const resource = item.type === 'svid' ? principal : { type: 'Writ::Service', id: item.audience ?? item.kind };
      // An owner who left is visible as the workload's owner with `active` false.
      const owner = signal.type === 'owner-offboarded' ? { type: 'Writ::Owner', id: signal.subject } : undefined;
      const ask = (action: string) =>
        decider.decide({
          principal,
          action,
          resource,
          context: { ...context },
          entities: [
            { uid: principal, attrs: { spiffeId: item.subject, labels: [], legacy: false, ...(owner === undefined ? {} : { owner: { __entity: owner } }) } },
            ...(resource === principal ? [] : [{ uid: resource, attrs: { internetFacing: false, legacy: false, sensitivity: 'unknown' } }]),
            ...(owner === undefined ? [] : [{ uid: owner, attrs: { email: signal.subject, active: false } }]),
          ],
          correlationId,
          requestedBy: 'signal-reevaluation',
        });
      const decisions = item.type === 'token' ? await Promise.all([ask('credential/issue'), ask('token/exchange')]) : [await ask('credential/issue')];
      const forbid = decisions.find((d) => d.decision === 'deny' && d.determiningPolicies.length > 0);
      const allow = decisions.find((d) => d.decision === 'allow');
      const d = forbid ?? allow ?? decisions[0];
      if (d === undefined) throw new TypeError('no decision');
      return { decision: forbid === undefined && allow !== undefined ? 'allow' : 'deny', reasons: d.reasons, policyVersion: d.policyVersion, forbidden: forbid !== undefined };
    },

    async cut(item, reason, correlationId) {
      if (item.type === 'svid') {
        // No SVID registry to flip: the `subject-revoked` event the caller
        // publishes is the cut (agents stop serving, PEPs drop them).
        return { cutAt: new Date(clock.nowMs()).toISOString() };
      }
      const l = await leases.revoke(item.id, reason, correlationId);
      return l?.revokedAt === undefined || l.revokedAt === null ? {} : { cutAt: l.revokedAt };
    },

    async invalidateDecisions() {
      decider.invalidate();
    },

    async ownedBy(owner) {
      if (entries === undefined) return [];
      const o = owner.toLowerCase();
      return [...new Set((await entries()).filter((e) => e.owner.contact.toLowerCase() === o).map((e) => e.spiffeId))];
    },

    async endTask(taskId) {
      // Ends the row only (no new lease binds to it); the re-evaluator revokes
      // and receipts each lease. Already ended or unknown: nothing to do.
      await tasks.endTask(taskId, 'completed', new Date(clock.nowMs()).toISOString(), 'system:writ');
    },
  };
}

/**
 * The drill's port: the real emergency revocation of a SPIFFE ID (every live
 * lease, then `subject-revoked`), a task (the task ended, each lease revoked
 * and published) or a token (its lease revoked, `token-revoked`), and the
 * canary: an access-token lease minted for the drill and revoked at once.
 *
 * @example
 * const target = drillTarget({ leases, tasks: store.credentials, clock });
 */
export function drillTarget(deps: { leases: LeaseManager; tasks: TaskStore; clock: Clock }): DrillTarget {
  const { leases, tasks, clock } = deps;
  const reason = 'drill-revoke';
  const line = (l: Lease) => ({ id: l.id, kind: l.kind, revokedAt: l.revokedAt });
  const event = (l: Lease): Omit<RevocationInput, 'id'> => (TOKEN_KINDS.has(l.kind) ? { kind: 'token-revoked', subject: l.subject, tokenId: l.id, reason } : { kind: 'lease-revoked', subject: l.subject, leaseId: l.id, reason });
  return {
    async cut(kind, subject, correlationId, by: AuditActor) {
      switch (kind) {
        case 'spiffe-id': {
          const cut = await leases.revokeBySubject(subject, reason, correlationId, by);
          return { events: [{ kind: 'subject-revoked', subject, reason }], revoked: cut.map(line) };
        }
        case 'task': {
          await tasks.endTask(subject, 'completed', new Date(clock.nowMs()).toISOString(), `${by.type}:${by.id}`);
          const cut = await leases.revokeByTask(subject, reason, correlationId, by);
          return { events: cut.map(event), revoked: cut.map(line) };
        }
        case 'token': {
          const l = await leases.revoke(subject, reason, correlationId, by);
          // Published even when the lease is unknown here: enforcement points may still hold the token.
          return { events: [{ kind: 'token-revoked', ...(l === undefined ? {} : { subject: l.subject }), tokenId: subject, reason }], revoked: l === undefined ? [] : [line(l)] };
        }
      }
    },
    async canary(subject, drillId, correlationId) {
      const l = await leases.open({ kind: 'access_token', subject, audience: `writ:drill:${drillId}`, ttlMs: 60_000, correlationId, actor: { type: 'system', id: 'writ' } });
      await leases.activate(l.id);
      await leases.revoke(l.id, 'drill-canary', correlationId);
      return { leaseId: l.id };
    },
  };
}

/**
 * Every replica drops its PDP decision cache on a signal, a policy change or
 * a subject revocation heard on the bus, so a replica that did not accept the
 * signal does not answer from a decision made before it.
 *
 * @example
 * const stop = await invalidateDecisionsOnRevocations(bus, policy.decider);
 */
export function invalidateDecisionsOnRevocations(bus: RevocationBus, decider: Decider, onError?: (err: unknown) => void): Promise<Unsubscribe> {
  return bus.subscribe(undefined, (e) => {
    if (e.kind === 'signal' || e.kind === 'policy-changed' || e.kind === 'subject-revoked') decider.invalidate();
  }, onError === undefined ? {} : { onError });
}

/**
 * Every lease revoked on this replica — by the admin API, `/oauth2/revoke`, a
 * completed task, the reaper's revoke-by-identity or a re-evaluation — goes on
 * the revocation bus before the revoke call returns, so enforcement points
 * stop honouring the credential at once instead of at its expiry. The event
 * id is derived from the lease, so a revocation heard twice is applied once.
 *
 * @example
 * const stop = publishLeaseRevocations(creds.leases, signals.bus);
 */
export function publishLeaseRevocations(leases: LeaseManager, bus: RevocationBus, o: { retries?: number; firstRetryMs?: number; onGaveUp?: (leaseId: string, err: unknown) => void } = {}): () => void {
  const retries = o.retries ?? 8;
  const firstRetryMs = o.firstRetryMs ?? 250;
  return leases.onRevoked(async (l) => {
    const reason = l.revokeReason ?? 'revoked';
    const subject = l.subject.startsWith('spiffe://') ? { subject: l.subject } : {};
    const event: RevocationInput = TOKEN_KINDS.has(l.kind)
      ? { id: `lease:${l.id}:revoked`, kind: 'token-revoked', ...subject, tokenId: l.id, reason }
      : { id: `lease:${l.id}:revoked`, kind: 'lease-revoked', ...subject, leaseId: l.id, reason };
    try {
      await bus.publish(event);
    } catch (err) {
      // The lease stays revoked; what must not be lost is the news. Retry in the background with
      // backoff (the id makes a late duplicate harmless), and report this failure now.
      const retry = (attempt: number): void => {
        setTimeout(() => {
          bus.publish(event).catch((e: unknown) => {
            if (attempt + 1 < retries) retry(attempt + 1);
            else o.onGaveUp?.(l.id, e);
          });
        }, firstRetryMs * 2 ** attempt).unref();
      };
      if (retries > 0) retry(0);
      throw err;
    }
  });
}

/**
 * Each policy set that becomes active is announced on the bus as
 * `policy-changed`, so enforcement points drop decisions cached under the
 * previous set and other replicas drop theirs.
 *
 * @example
 * const stop = publishPolicyChanges(policy.engine, signals.bus, (err) => log.warn({ err }));
 */
export function publishPolicyChanges(engine: { onSwap(fn: (set: { readonly version: string }) => void): () => void }, bus: RevocationBus, onError: (err: unknown) => void): () => void {
  return engine.onSwap((set) => {
    bus.publish({ id: `policy:${set.version}:${Date.now()}`, kind: 'policy-changed', reason: set.version }).catch(onError);
  });
}
