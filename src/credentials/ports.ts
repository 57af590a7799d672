/**
 * What the credentials context needs from storage: lease rows and task rows.
 * `storage/` implements both over SQLite and PostgreSQL.
 */
import type { Lease, LeaseState } from './lease-port.ts';

/** Task lifecycle. */
export type TaskState = 'active' | 'completed' | 'expired';

/** A unit of work (a CI run, a deployment, an agent's plan) that credentials are bound to. */
export interface Task {
  readonly id: string;
  /** SPIFFE ID or admin principal that owns the task. */
  readonly owner: string;
  readonly description: string;
  /** Scopes credentials bound to this task may carry. */
  readonly scopes: readonly string[];
  readonly state: TaskState;
  readonly createdAt: string;
  readonly deadline: string;
  readonly endedAt: string | null;
  readonly endedBy: string | null;
}

/** Filter for {@link LeaseStore.listLeases}; every field given must match. */
export interface LeaseFilter {
  readonly taskId?: string;
  readonly subject?: string;
  /** Subject starts with this. */
  readonly subjectPrefix?: string;
  readonly states?: readonly LeaseState[];
  /** expires_at <= this ISO time. */
  readonly expiresBefore?: string;
  /** created_at <= this ISO time. */
  readonly createdBefore?: string;
  readonly limit?: number;
}

/** Live-lease limits checked by {@link LeaseStore.insertLeaseWithinQuota}. */
export interface LeaseQuota {
  readonly maxPerSubject: number;
  readonly maxPerTask: number;
}

/** What {@link LeaseStore.insertLeaseWithinQuota} did: inserted, or refused naming the full quota and its count. */
export type QuotaOutcome = { readonly inserted: true } | { readonly inserted: false; readonly by: 'subject' | 'task'; readonly live: number };

/** Changes a state transition writes. */
export interface LeasePatch {
  readonly state?: LeaseState;
  readonly expiresAt?: string;
  readonly revokedAt?: string;
  readonly revokeReason?: string;
}

/**
 * Lease rows.
 *
 * @example
 * await store.insertLease(lease);
 * const moved = await store.updateLease(lease.id, ['pending'], { state: 'active' });
 */
export interface LeaseStore {
  /** Durable when it resolves (write-ahead). */
  insertLease(lease: Lease): Promise<void>;
  getLease(id: string): Promise<Lease | undefined>;
  /** Compare-and-set: applies only when the row is in one of `from`; returns the new row, or undefined. */
  updateLease(id: string, from: readonly LeaseState[], patch: LeasePatch): Promise<Lease | undefined>;
  listLeases(filter: LeaseFilter): Promise<readonly Lease[]>;
  /** Pending or active leases not yet expired at `nowIso`, of one subject or one task. */
  countLiveLeases(by: { subject: string } | { taskId: string }, nowIso: string): Promise<number>;
  /**
   * Count and insert as one step: the lease is written only when its task (if
   * any) and its subject each hold fewer than their quota of live leases at
   * `nowIso`. Two replicas opening leases for one subject or task at once are
   * serialized, so a quota is never exceeded. Durable when it resolves.
   */
  insertLeaseWithinQuota(lease: Lease, quota: LeaseQuota, nowIso: string): Promise<QuotaOutcome>;
  /** Compare-and-set of many rows at once; returns the rows that moved. */
  updateLeasesByIds?(ids: readonly string[], from: readonly LeaseState[], patch: LeasePatch): Promise<readonly Lease[]>;
  /** Bulk insert (benchmarks and imports). */
  insertLeases?(leases: readonly Lease[]): Promise<void>;
}

/**
 * Task rows.
 *
 * @example
 * await store.insertTask(task);
 */
export interface TaskStore {
  insertTask(task: Task): Promise<void>;
  getTask(id: string): Promise<Task | undefined>;
  /** Compare-and-set from `active`; returns the new row, or undefined when it was not active. */
  endTask(id: string, state: 'completed' | 'expired', at: string, by: string): Promise<Task | undefined>;
  /** Active tasks whose deadline is at or before `nowIso`. */
  listOverdueTasks(nowIso: string, limit: number): Promise<readonly Task[]>;
}

/** A secret as the store holds it: envelope-encrypted under the KEK (never plaintext). */
export interface SealedSecret {
  readonly v: 1;
  readonly kekId: string;
  readonly wrappedDek: string;
  readonly ciphertext: string;
}

/** Owner of a legacy exception: the team accountable and a human to reach. */
export interface ExceptionOwner {
  readonly team: string;
  readonly contact: string;
}

/**
 * A static secret Writ cannot replace, registered with who owns it, why it
 * exists, what compensates for it, the OWASP NHI risks it accepts and when
 * the acceptance ends. When `engine` names a PostgreSQL engine, Writ rotates
 * the password of `account` through it every `rotateEverySeconds`.
 */
export interface LegacyException {
  readonly id: string;
  readonly name: string;
  /** The account whose static secret this is (a PostgreSQL role name when `engine` is set). */
  readonly account: string;
  /** Where the account lives, in words (`billing PostgreSQL`, `vendor SFTP`). */
  readonly system: string;
  /** PostgreSQL engine Writ rotates the password through, or null when Writ cannot rotate it. */
  readonly engine: string | null;
  readonly rotateEverySeconds: number | null;
  readonly owner: ExceptionOwner;
  readonly justification: string;
  readonly compensatingControls: readonly string[];
  /** OWASP NHI Top 10 (2025) risk ids accepted, e.g. `NHI2`, `NHI7`. */
  readonly risks: readonly string[];
  readonly expiresAt: string;
  readonly createdAt: string;
  readonly createdBy: string;
  readonly updatedAt: string;
  /** Bumped by every change; compare-and-set guards rotation and renewal. */
  readonly revision: number;
  readonly lastRotatedAt: string | null;
  readonly nextRotationAt: string | null;
  /** Error code of the last failed rotation, null after a success. */
  readonly lastRotationError: string | null;
  /** When the expiry finding was raised (once per expiry), null while the exception is in force. */
  readonly expiredFindingAt: string | null;
  /** The current secret, sealed; null until Writ first rotates it. */
  readonly secret: SealedSecret | null;
  /** A rotation in flight: the new secret is stored here before the account is changed (write-ahead). */
  readonly pendingSecret: SealedSecret | null;
}

/** Fields a change may write; `revision` is bumped by the store. */
export type ExceptionPatch = Partial<Omit<LegacyException, 'id' | 'name' | 'account' | 'engine' | 'createdAt' | 'createdBy' | 'revision'>>;

/**
 * Legacy exception rows.
 *
 * @example
 * await store.insertException(exc);
 * const next = await store.updateException(exc.id, exc.revision, { expiresAt });
 */
export interface ExceptionStore {
  /** False when the name (or the engine and account pair) is taken. */
  insertException(exc: LegacyException): Promise<boolean>;
  getException(id: string): Promise<LegacyException | undefined>;
  listExceptions(): Promise<readonly LegacyException[]>;
  /** Compare-and-set on `revision`; returns the new row (revision + 1), or undefined when it moved or is gone. */
  updateException(id: string, revision: number, patch: ExceptionPatch): Promise<LegacyException | undefined>;
  deleteException(id: string): Promise<boolean>;
}

/** The admin secret of one secret engine, as rotated by Writ. */
export interface EngineSecretRow {
  readonly engine: string;
  /** Null until the first rotation: the password in the engine's URL is current. */
  readonly current: SealedSecret | null;
  /** A rotation in flight: written before the database is told (write-ahead). */
  readonly next: SealedSecret | null;
  /** When `next` was written; a rotation older than a few minutes was interrupted. */
  readonly nextAt: string | null;
  /** When the current secret was set (first sight of the engine before any rotation). */
  readonly rotatedAt: string;
  readonly revision: number;
}

/** Fields an engine secret change may write; `revision` is bumped by the store. */
export interface EngineSecretPatch {
  readonly current?: SealedSecret | null;
  readonly next?: SealedSecret | null;
  readonly nextAt?: string | null;
  readonly rotatedAt?: string;
}

/**
 * Engine admin secrets.
 *
 * @example
 * await store.ensureEngineSecret('main', nowIso);
 */
export interface EngineSecretStore {
  /** The row, created (no secret, `rotatedAt` = `nowIso`) when missing. */
  ensureEngineSecret(engine: string, nowIso: string): Promise<EngineSecretRow>;
  getEngineSecret(engine: string): Promise<EngineSecretRow | undefined>;
  /** Compare-and-set on `revision`; returns the new row (revision + 1), or undefined when it moved. */
  updateEngineSecret(engine: string, revision: number, patch: EngineSecretPatch): Promise<EngineSecretRow | undefined>;
}
