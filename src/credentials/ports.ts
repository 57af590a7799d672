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
