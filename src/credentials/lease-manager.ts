/**
 * The lease manager: every credential Writ issues has a lease row written
 * before the credential exists (ARCHITECTURE invariant 2). It caps lifetimes
 * by policy and task deadline, enforces quotas, revokes by id, task, subject
 * or subject prefix, and audits every state change (never a secret).
 */
import { randomBytes } from 'node:crypto';
import type { AuditActor, AuditSink, Clock } from '../kernel/index.ts';
import { credentialErrors } from './errors.ts';
import type { Lease, LeaseKind, LeaseManagerPort, LeaseState, OpenLeaseRequest } from './lease-port.ts';
import type { LeaseStore, TaskStore } from './ports.ts';

/** Undoes what an issuer created for a lease (drops a role, deletes an ACL user). Idempotent. */
export type LeaseRevoker = (lease: Lease) => Promise<void>;

/** Limits the manager applies. */
export interface LeaseLimits {
  /** Cap on any lease's lifetime from its creation, renewals included. */
  readonly maxTtlMs: number;
  /** Live leases one subject may hold. */
  readonly maxPerIdentity: number;
  /** Live leases one task may hold. */
  readonly maxPerTask: number;
}

const LIVE: readonly LeaseState[] = ['pending', 'active'];
const LEASE_ID = /^[0-9a-f]{24}$/;
const SYSTEM: AuditActor = { type: 'system', id: 'writ' };

/** A fresh lease id: 24 lowercase hex characters (96 random bits). */
export function newLeaseId(): string {
  return randomBytes(12).toString('hex');
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

/**
 * @example
 * const leases = new LeaseManager({ store, tasks: store, audit, clock, limits });
 * const lease = await leases.open({ kind: 'postgres', subject, ttlMs: 600_000, correlationId });
 * await leases.activate(lease.id);
 */
export class LeaseManager implements LeaseManagerPort {
  readonly #store: LeaseStore;
  readonly #tasks: TaskStore;
  readonly #audit: AuditSink;
  readonly #clock: Clock;
  readonly #limits: LeaseLimits;
  readonly #revokers = new Map<LeaseKind, LeaseRevoker>();
  /** Called when an engine revocation fails after the row was revoked (the reconciler retries). */
  onRevokerError: (lease: Lease, err: unknown) => void = () => undefined;
  /** Called when an `onRevoked` listener fails (the revocation itself stands). */
  onRevokedListenerError: (lease: Lease, err: unknown) => void = () => undefined;
  readonly #revokedListeners = new Set<(lease: Lease) => Promise<void>>();

  constructor(deps: { store: LeaseStore; tasks: TaskStore; audit: AuditSink; clock: Clock; limits: LeaseLimits }) {
    if (!(deps.limits.maxTtlMs > 0) || !(deps.limits.maxPerIdentity > 0) || !(deps.limits.maxPerTask > 0)) throw new TypeError('lease limits must be positive');
    this.#store = deps.store;
    this.#tasks = deps.tasks;
    this.#audit = deps.audit;
    this.#clock = deps.clock;
    this.#limits = deps.limits;
  }

  /**
   * Call `fn` for every lease this manager revokes (not for expiries: an
   * expired credential is refused by its own `exp`), after the row moved and
   * before the revoke call returns, so that a caller's acknowledgement means
   * the listeners ran (the server publishes on the revocation bus here). A
   * listener that throws is reported through `onRevokedListenerError` and does not
   * undo the revocation. Returns an unsubscribe function.
   */
  onRevoked(fn: (lease: Lease) => Promise<void>): () => void {
    this.#revokedListeners.add(fn);
    return () => this.#revokedListeners.delete(fn);
  }

  async #notifyRevoked(lease: Lease): Promise<void> {
    for (const fn of this.#revokedListeners) {
      try {
        await fn(lease);
      } catch (err) {
        this.onRevokedListenerError(lease, err);
      }
    }
  }

  /** Register what undoes a credential of `kind` when its lease ends. */
  setRevoker(kind: LeaseKind, revoker: LeaseRevoker): void {
    this.#revokers.set(kind, revoker);
  }

  async open(req: OpenLeaseRequest): Promise<Lease> {
    if (!Number.isSafeInteger(req.ttlMs) || req.ttlMs <= 0) throw credentialErrors.error('ERR_CRED_TTL_INVALID', `lease lifetime \`${String(req.ttlMs)}\` ms is not a positive integer`);
    if (req.maxTtlMs !== undefined && (!Number.isSafeInteger(req.maxTtlMs) || req.maxTtlMs <= 0)) throw credentialErrors.error('ERR_CRED_TTL_INVALID', `maximum lease lifetime \`${String(req.maxTtlMs)}\` ms is not a positive integer`);
    if (req.id !== undefined && !LEASE_ID.test(req.id)) throw new TypeError('a caller-chosen lease id is 24 lowercase hex characters');
    if (req.subject === '') throw new TypeError('a lease needs a subject');
    const now = this.#clock.nowMs();
    const nowIso = iso(now);
    let cap = now + Math.min(req.maxTtlMs ?? this.#limits.maxTtlMs, this.#limits.maxTtlMs);
    if (req.taskId !== undefined) {
      const task = await this.#tasks.getTask(req.taskId);
      if (task === undefined) throw credentialErrors.error('ERR_CRED_TASK_NOT_FOUND', `no task \`${req.taskId}\``);
      const deadline = Date.parse(task.deadline);
      if (task.state !== 'active' || deadline <= now) throw credentialErrors.error('ERR_CRED_TASK_NOT_ACTIVE', `task \`${req.taskId}\` is ${task.state === 'active' ? 'past its deadline' : task.state}`);
      // A credential never outlives the task it is bound to.
      cap = Math.min(cap, deadline);
    }
    const lease: Lease = {
      id: req.id ?? newLeaseId(),
      kind: req.kind,
      subject: req.subject,
      taskId: req.taskId ?? null,
      audience: req.audience ?? null,
      state: 'pending',
      createdAt: nowIso,
      expiresAt: iso(Math.min(now + req.ttlMs, cap)),
      maxExpiresAt: iso(cap),
      revokedAt: null,
      revokeReason: null,
      handle: { ...(req.handle ?? {}) },
    };
    // INVARIANT: the row is durable before the caller mints anything (write-ahead),
    // and the quota check and the insert are one step in the store, so replicas
    // racing for the last slot cannot both take it.
    const outcome = await this.#store.insertLeaseWithinQuota(lease, { maxPerSubject: this.#limits.maxPerIdentity, maxPerTask: this.#limits.maxPerTask }, nowIso);
    if (!outcome.inserted) {
      if (outcome.by === 'task') throw credentialErrors.error('ERR_CRED_QUOTA_EXCEEDED', `task \`${req.taskId ?? ''}\` holds ${outcome.live} live leases; the quota is ${this.#limits.maxPerTask}`);
      throw credentialErrors.error('ERR_CRED_QUOTA_EXCEEDED', `\`${req.subject}\` holds ${outcome.live} live leases; the quota is ${this.#limits.maxPerIdentity}`);
    }
    await this.#event('lease.opened', lease, req.correlationId, req.actor ?? { type: 'workload', id: req.subject });
    return lease;
  }

  async activate(id: string, correlationId = ''): Promise<Lease> {
    const lease = await this.#store.updateLease(id, ['pending'], { state: 'active' });
    if (lease === undefined) {
      const cur = await this.#store.getLease(id);
      if (cur === undefined) throw credentialErrors.error('ERR_CRED_LEASE_NOT_FOUND', `no lease \`${id}\``);
      throw credentialErrors.error('ERR_CRED_LEASE_NOT_PENDING', `lease \`${id}\` is ${cur.state}`);
    }
    await this.#event('lease.activated', lease, correlationId, SYSTEM);
    return lease;
  }

  get(id: string): Promise<Lease | undefined> {
    return this.#store.getLease(id);
  }

  async isLive(id: string): Promise<boolean> {
    const lease = await this.#store.getLease(id);
    if (lease === undefined) return false;
    if (lease.state === 'active' && Date.parse(lease.expiresAt) > this.#clock.nowMs()) return true;
    return false;
  }

  async renew(id: string, ttlMs: number, correlationId: string, by: AuditActor = SYSTEM): Promise<Lease> {
    if (!Number.isSafeInteger(ttlMs) || ttlMs <= 0) throw credentialErrors.error('ERR_CRED_TTL_INVALID', `lease lifetime \`${String(ttlMs)}\` ms is not a positive integer`);
    const cur = await this.#store.getLease(id);
    if (cur === undefined) throw credentialErrors.error('ERR_CRED_LEASE_NOT_FOUND', `no lease \`${id}\``);
    const now = this.#clock.nowMs();
    const max = Date.parse(cur.maxExpiresAt);
    if (cur.state !== 'active' || Date.parse(cur.expiresAt) <= now) throw credentialErrors.error('ERR_CRED_LEASE_NOT_RENEWABLE', `lease \`${id}\` is ${cur.state === 'active' ? 'expired' : cur.state}`);
    if (Date.parse(cur.expiresAt) >= max) throw credentialErrors.error('ERR_CRED_LEASE_NOT_RENEWABLE', `lease \`${id}\` already reached its maximum lifetime`);
    const next = iso(Math.min(now + ttlMs, max));
    const lease = await this.#store.updateLease(id, ['active'], { expiresAt: next });
    if (lease === undefined) throw credentialErrors.error('ERR_CRED_LEASE_NOT_RENEWABLE', `lease \`${id}\` changed while it was renewed`);
    await this.#event('lease.renewed', lease, correlationId, by, { previousExpiresAt: cur.expiresAt });
    return lease;
  }

  async revoke(id: string, reason: string, correlationId: string, by: AuditActor = SYSTEM): Promise<Lease | undefined> {
    return this.#end(id, 'revoked', reason, correlationId, by);
  }

  /**
   * End a lease: the row moves first (so it is no longer live anywhere), then
   * the engine undoes the credential. A failing engine is reported and left
   * to the reconciler, which removes accounts whose lease is not live.
   */
  async #end(id: string, state: 'revoked' | 'expired', reason: string, correlationId: string, by: AuditActor): Promise<Lease | undefined> {
    const lease = await this.#store.updateLease(id, LIVE, { state, revokedAt: iso(this.#clock.nowMs()), revokeReason: reason });
    if (lease === undefined) return undefined;
    const revoker = this.#revokers.get(lease.kind);
    let engineRevoked = revoker === undefined ? 'not-needed' : 'done';
    if (revoker !== undefined) {
      try {
        await revoker(lease);
      } catch (err) {
        engineRevoked = 'failed';
        this.onRevokerError(lease, err);
      }
    }
    await this.#event(state === 'revoked' ? 'lease.revoked' : 'lease.expired', lease, correlationId, by, { reason, engineRevoked }, engineRevoked === 'failed' ? 'failure' : 'success');
    if (state === 'revoked') await this.#notifyRevoked(lease);
    return lease;
  }

  /** Expire a lease whose time is up (the reaper calls this). */
  expire(id: string, correlationId: string): Promise<Lease | undefined> {
    return this.#end(id, 'expired', 'ttl-elapsed', correlationId, SYSTEM);
  }

  async #endMany(leases: readonly Lease[], reason: string, correlationId: string, by: AuditActor): Promise<Lease[]> {
    const out: Lease[] = [];
    let queue = [...leases];
    // Leases with nothing to undo outside the store (access tokens) move in one compare-and-set.
    const plain = queue.filter((l) => !this.#revokers.has(l.kind));
    if (plain.length > 0 && this.#store.updateLeasesByIds !== undefined) {
      const moved = await this.#store.updateLeasesByIds(plain.map((l) => l.id), LIVE, { state: 'revoked', revokedAt: iso(this.#clock.nowMs()), revokeReason: reason });
      await Promise.all(moved.map((l) => this.#event('lease.revoked', l, correlationId, by, { reason, engineRevoked: 'not-needed' })));
      await Promise.all(moved.map((l) => this.#notifyRevoked(l)));
      out.push(...moved);
      queue = queue.filter((l) => this.#revokers.has(l.kind));
    }
    // Bounded parallelism: engines hold a small pool each.
    const worker = async (): Promise<void> => {
      for (let l = queue.shift(); l !== undefined; l = queue.shift()) {
        const done = await this.#end(l.id, 'revoked', reason, correlationId, by);
        if (done !== undefined) out.push(done);
      }
    };
    await Promise.all(Array.from({ length: Math.min(8, queue.length) }, worker));
    return out;
  }

  async revokeByTask(taskId: string, reason: string, correlationId: string, by: AuditActor = SYSTEM): Promise<readonly Lease[]> {
    return this.#endMany(await this.#store.listLeases({ taskId, states: LIVE }), reason, correlationId, by);
  }

  async revokeBySubject(subject: string, reason: string, correlationId: string, by: AuditActor = SYSTEM): Promise<readonly Lease[]> {
    return this.#endMany(await this.#store.listLeases({ subject, states: LIVE }), reason, correlationId, by);
  }

  /** Revoke every live lease whose subject starts with `prefix` (e.g. a SPIFFE ID path). */
  async revokeByPrefix(prefix: string, reason: string, correlationId: string, by: AuditActor = SYSTEM): Promise<readonly Lease[]> {
    if (prefix === '') throw credentialErrors.error('ERR_CRED_REVOKE_SELECTOR_INVALID', 'a revocation prefix must not be empty');
    return this.#endMany(await this.#store.listLeases({ subjectPrefix: prefix, states: LIVE }), reason, correlationId, by);
  }

  list(filter: Parameters<LeaseStore['listLeases']>[0]): Promise<readonly Lease[]> {
    return this.#store.listLeases(filter);
  }

  async #event(action: string, lease: Lease, correlationId: string, actor: AuditActor, extra: Record<string, unknown> = {}, outcome: 'success' | 'failure' = 'success'): Promise<void> {
    // Only the lease's public fields: the handle names an account, never its secret.
    await this.#audit.append({
      action,
      actor,
      target: { type: 'lease', id: lease.id },
      outcome,
      correlationId: correlationId === '' ? lease.id : correlationId,
      details: { kind: lease.kind, subject: lease.subject, taskId: lease.taskId, audience: lease.audience, state: lease.state, expiresAt: lease.expiresAt, maxExpiresAt: lease.maxExpiresAt, handle: lease.handle, ...extra },
    });
  }
}
