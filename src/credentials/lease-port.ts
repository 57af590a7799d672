/**
 * The lease contract every credential issuer in Writ goes through
 * (ARCHITECTURE invariant 2: no credential exists that the store does not
 * know). An issuer opens a lease BEFORE it mints the credential (write-ahead),
 * activates it after, and anything that stays `pending` past its grace is
 * revoked by the reaper. Implemented by the lease manager in this context.
 */

import type { AuditActor } from '../kernel/index.ts';

/** What kind of credential a lease covers. */
export type LeaseKind = 'access_token' | 'refresh_token' | 'postgres' | 'redis' | 'static_exception';

/** Lease lifecycle. */
export type LeaseState = 'pending' | 'active' | 'revoked' | 'expired';

/** A lease as issuers and readers see it. */
export interface Lease {
  readonly id: string;
  readonly kind: LeaseKind;
  /** Who holds it: a SPIFFE ID or an OAuth client id. */
  readonly subject: string;
  /** The task it is bound to, when there is one; completing the task revokes it. */
  readonly taskId: string | null;
  /** Audience or engine target (e.g. `postgres:main`). */
  readonly audience: string | null;
  readonly state: LeaseState;
  readonly createdAt: string;
  readonly expiresAt: string;
  /** Renewal never goes past this. */
  readonly maxExpiresAt: string;
  readonly revokedAt: string | null;
  readonly revokeReason: string | null;
  /** Engine-specific handle needed to revoke (a role name, an ACL user) — never a secret. */
  readonly handle: Readonly<Record<string, string>>;
}

/** What an issuer asks for. */
export interface OpenLeaseRequest {
  readonly kind: LeaseKind;
  readonly subject: string;
  readonly taskId?: string;
  readonly audience?: string;
  /** Requested lifetime; the manager caps it by policy max and the task deadline. */
  readonly ttlMs: number;
  readonly maxTtlMs?: number;
  readonly handle?: Readonly<Record<string, string>>;
  /** Audit correlation. */
  readonly correlationId: string;
  /** Caller-chosen id (24 lowercase hex), so an engine can name its account after the lease before the row exists; random when absent. */
  readonly id?: string;
  /** Who asked, for the audit log; the subject as a workload when absent. */
  readonly actor?: AuditActor;
}

/**
 * Port: open → (mint) → activate; revoke by id, task, subject or prefix.
 *
 * @example
 * const lease = await leases.open({ kind: 'access_token', subject, ttlMs: 300_000, correlationId });
 * const token = await mint(lease.id, lease.expiresAt);
 * await leases.activate(lease.id);
 */
export interface LeaseManagerPort {
  /** Write-ahead: the lease row is durable before this resolves. Throws a quota error (429) when a limit is hit. */
  open(req: OpenLeaseRequest): Promise<Lease>;
  /** The credential was minted; refuses a lease that is no longer pending. */
  activate(id: string): Promise<Lease>;
  get(id: string): Promise<Lease | undefined>;
  /** True only for an `active` lease that has not expired at the manager's clock. */
  isLive(id: string): Promise<boolean>;
  renew(id: string, ttlMs: number, correlationId: string): Promise<Lease>;
  /** `by` names who revoked, for the audit log; the system when absent. */
  revoke(id: string, reason: string, correlationId: string, by?: AuditActor): Promise<Lease | undefined>;
  revokeByTask(taskId: string, reason: string, correlationId: string, by?: AuditActor): Promise<readonly Lease[]>;
  revokeBySubject(subject: string, reason: string, correlationId: string, by?: AuditActor): Promise<readonly Lease[]>;
}
