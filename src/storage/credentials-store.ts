/**
 * The credentials context's ports over the store's Kysely handle: lease rows
 * (compare-and-set state changes) and task rows.
 */
import { sql } from 'kysely';
import type { Kysely } from 'kysely';
import type {
  EngineSecretPatch,
  EngineSecretRow,
  EngineSecretStore,
  ExceptionPatch,
  ExceptionStore,
  Lease,
  LeaseFilter,
  LeaseKind,
  LeasePatch,
  LeaseQuota,
  LeaseState,
  LeaseStore,
  LegacyException,
  QuotaOutcome,
  SealedSecret,
  Task,
  TaskState,
  TaskStore,
} from '../credentials/index.ts';
import type { Database, EngineSecretsTable, LeasesTable, LegacyExceptionsTable, TasksTable } from './schema.ts';

const INSERT_CHUNK = 400;

/** Advisory lock classes (first key of the two-key form): quota counts per task and per subject. */
const QUOTA_LOCK_TASK = 0x77716c74; // 'wqlt'
const QUOTA_LOCK_SUBJECT = 0x77716c73; // 'wqls'

function leaseOf(r: LeasesTable): Lease {
  return {
    id: r.id,
    kind: r.kind as LeaseKind,
    subject: r.subject,
    taskId: r.task_id,
    audience: r.audience,
    state: r.state as LeaseState,
    createdAt: r.created_at,
    expiresAt: r.expires_at,
    maxExpiresAt: r.max_expires_at,
    revokedAt: r.revoked_at,
    revokeReason: r.revoke_reason,
    handle: JSON.parse(r.handle) as Record<string, string>,
  };
}

function rowOf(l: Lease): LeasesTable {
  return {
    id: l.id,
    kind: l.kind,
    subject: l.subject,
    task_id: l.taskId,
    audience: l.audience,
    state: l.state,
    created_at: l.createdAt,
    expires_at: l.expiresAt,
    max_expires_at: l.maxExpiresAt,
    revoked_at: l.revokedAt,
    revoke_reason: l.revokeReason,
    handle: JSON.stringify(l.handle),
  };
}

function taskOf(r: TasksTable): Task {
  return {
    id: r.id,
    owner: r.owner,
    description: r.description,
    scopes: JSON.parse(r.scopes) as string[],
    state: r.state as TaskState,
    createdAt: r.created_at,
    deadline: r.deadline,
    endedAt: r.ended_at,
    endedBy: r.ended_by,
  };
}

function isUniqueViolation(e: unknown): boolean {
  const err = e as { code?: unknown; errcode?: unknown };
  return err.code === '23505' || err.errcode === 2067 || err.errcode === 1555;
}

function sealed(text: string | null): SealedSecret | null {
  return text === null ? null : (JSON.parse(text) as SealedSecret);
}

function sealedText(s: SealedSecret | null): string | null {
  return s === null ? null : JSON.stringify({ v: s.v, kekId: s.kekId, wrappedDek: s.wrappedDek, ciphertext: s.ciphertext });
}

function exceptionOf(r: LegacyExceptionsTable): LegacyException {
  return {
    id: r.id,
    name: r.name,
    account: r.account,
    system: r.system,
    engine: r.engine,
    rotateEverySeconds: r.rotate_every_seconds === null ? null : Number(r.rotate_every_seconds),
    owner: { team: r.owner_team, contact: r.owner_contact },
    justification: r.justification,
    compensatingControls: JSON.parse(r.compensating_controls) as string[],
    risks: JSON.parse(r.risks) as string[],
    expiresAt: r.expires_at,
    createdAt: r.created_at,
    createdBy: r.created_by,
    updatedAt: r.updated_at,
    revision: Number(r.revision),
    lastRotatedAt: r.last_rotated_at,
    nextRotationAt: r.next_rotation_at,
    lastRotationError: r.last_rotation_error,
    expiredFindingAt: r.expired_finding_at,
    secret: sealed(r.secret),
    pendingSecret: sealed(r.pending_secret),
  };
}

function exceptionSet(p: ExceptionPatch): Partial<LegacyExceptionsTable> {
  const set: Partial<LegacyExceptionsTable> = {};
  if (p.system !== undefined) set.system = p.system;
  if (p.rotateEverySeconds !== undefined) set.rotate_every_seconds = p.rotateEverySeconds;
  if (p.owner !== undefined) {
    set.owner_team = p.owner.team;
    set.owner_contact = p.owner.contact;
  }
  if (p.justification !== undefined) set.justification = p.justification;
  if (p.compensatingControls !== undefined) set.compensating_controls = JSON.stringify(p.compensatingControls);
  if (p.risks !== undefined) set.risks = JSON.stringify(p.risks);
  if (p.expiresAt !== undefined) set.expires_at = p.expiresAt;
  if (p.updatedAt !== undefined) set.updated_at = p.updatedAt;
  if (p.lastRotatedAt !== undefined) set.last_rotated_at = p.lastRotatedAt;
  if (p.nextRotationAt !== undefined) set.next_rotation_at = p.nextRotationAt;
  if (p.lastRotationError !== undefined) set.last_rotation_error = p.lastRotationError;
  if (p.expiredFindingAt !== undefined) set.expired_finding_at = p.expiredFindingAt;
  if (p.secret !== undefined) set.secret = sealedText(p.secret);
  if (p.pendingSecret !== undefined) set.pending_secret = sealedText(p.pendingSecret);
  return set;
}

function engineSecretOf(r: EngineSecretsTable): EngineSecretRow {
  return { engine: r.engine, current: sealed(r.current_secret), next: sealed(r.next_secret), nextAt: r.next_at, rotatedAt: r.rotated_at, revision: Number(r.revision) };
}

/**
 * @example
 * const creds = new CredentialTables('sqlite', db);
 * await creds.insertLease(lease);
 */
export class CredentialTables implements LeaseStore, TaskStore, ExceptionStore, EngineSecretStore {
  readonly #kind: 'sqlite' | 'postgres';
  readonly #db: Kysely<Database>;

  constructor(kind: 'sqlite' | 'postgres', db: Kysely<Database>) {
    this.#kind = kind;
    this.#db = db;
  }

  // ---- LeaseStore ----------------------------------------------------------

  async insertLease(lease: Lease): Promise<void> {
    await this.#db.insertInto('leases').values(rowOf(lease)).execute();
  }

  async insertLeases(leases: readonly Lease[]): Promise<void> {
    for (let i = 0; i < leases.length; i += INSERT_CHUNK) {
      await this.#db.insertInto('leases').values(leases.slice(i, i + INSERT_CHUNK).map(rowOf)).execute();
    }
  }

  async getLease(id: string): Promise<Lease | undefined> {
    const r = await this.#db.selectFrom('leases').selectAll().where('id', '=', id).executeTakeFirst();
    return r === undefined ? undefined : leaseOf(r);
  }

  async updateLease(id: string, from: readonly LeaseState[], patch: LeasePatch): Promise<Lease | undefined> {
    if (from.length === 0) return undefined;
    const set: Partial<LeasesTable> = {};
    if (patch.state !== undefined) set.state = patch.state;
    if (patch.expiresAt !== undefined) set.expires_at = patch.expiresAt;
    if (patch.revokedAt !== undefined) set.revoked_at = patch.revokedAt;
    if (patch.revokeReason !== undefined) set.revoke_reason = patch.revokeReason;
    // Compare-and-set on the state: of two concurrent revokers exactly one wins.
    const r = await this.#db.updateTable('leases').set(set).where('id', '=', id).where('state', 'in', [...from]).returningAll().executeTakeFirst();
    return r === undefined ? undefined : leaseOf(r);
  }

  async updateLeasesByIds(ids: readonly string[], from: readonly LeaseState[], patch: LeasePatch): Promise<readonly Lease[]> {
    if (ids.length === 0 || from.length === 0) return [];
    const set = this.#set(patch);
    const out: Lease[] = [];
    for (let i = 0; i < ids.length; i += INSERT_CHUNK) {
      const rows = await this.#db.updateTable('leases').set(set).where('id', 'in', ids.slice(i, i + INSERT_CHUNK)).where('state', 'in', [...from]).returningAll().execute();
      out.push(...rows.map(leaseOf));
    }
    return out;
  }

  #set(patch: LeasePatch): Partial<LeasesTable> {
    const set: Partial<LeasesTable> = {};
    if (patch.state !== undefined) set.state = patch.state;
    if (patch.expiresAt !== undefined) set.expires_at = patch.expiresAt;
    if (patch.revokedAt !== undefined) set.revoked_at = patch.revokedAt;
    if (patch.revokeReason !== undefined) set.revoke_reason = patch.revokeReason;
    return set;
  }

  async listLeases(f: LeaseFilter): Promise<readonly Lease[]> {
    let q = this.#db.selectFrom('leases').selectAll();
    if (f.taskId !== undefined) q = q.where('task_id', '=', f.taskId);
    if (f.subject !== undefined) q = q.where('subject', '=', f.subject);
    if (f.subjectPrefix !== undefined) q = q.where(sql<string>`substr(subject, 1, ${f.subjectPrefix.length})`, '=', f.subjectPrefix);
    if (f.states !== undefined) {
      if (f.states.length === 0) return [];
      q = q.where('state', 'in', [...f.states]);
    }
    if (f.expiresBefore !== undefined) q = q.where('expires_at', '<=', f.expiresBefore);
    if (f.createdBefore !== undefined) q = q.where('created_at', '<=', f.createdBefore);
    q = q.orderBy('created_at').orderBy('id');
    if (f.limit !== undefined) q = q.limit(f.limit);
    return (await q.execute()).map(leaseOf);
  }

  countLiveLeases(by: { subject: string } | { taskId: string }, nowIso: string): Promise<number> {
    return this.#countLive(this.#db, by, nowIso);
  }

  async insertLeaseWithinQuota(lease: Lease, quota: LeaseQuota, nowIso: string): Promise<QuotaOutcome> {
    return this.#db.transaction().execute(async (trx) => {
      if (this.#kind === 'postgres') {
        // Transaction-scoped advisory locks serialize every opener of this task
        // and of this subject across replicas until commit. Always the task
        // first, then the subject (left to right, in one statement): one fixed
        // order, so two openers never wait on each other in a cycle. (SQLite:
        // BEGIN IMMEDIATE already holds the database's single write lock for the
        // whole transaction.)
        if (lease.taskId !== null) await sql`select pg_advisory_xact_lock(${QUOTA_LOCK_TASK}, hashtext(${lease.taskId})), pg_advisory_xact_lock(${QUOTA_LOCK_SUBJECT}, hashtext(${lease.subject}))`.execute(trx);
        else await sql`select pg_advisory_xact_lock(${QUOTA_LOCK_SUBJECT}, hashtext(${lease.subject}))`.execute(trx);
      }
      // Count and insert in one statement, after the locks: a statement of its own, so (READ
      // COMMITTED) it sees every lease the openers before it committed. The row goes in only when
      // the live leases of its task and of its subject are under their quotas.
      const row = rowOf(lease);
      const cols = Object.keys(row) as (keyof LeasesTable)[];
      const under = (col: 'task_id' | 'subject', value: string, max: number) =>
        sql`(select count(*) from leases where ${sql.ref(col)} = ${value} and state in ('pending', 'active') and expires_at > ${nowIso}) < ${max}`;
      const within = lease.taskId !== null
        ? sql`${under('task_id', lease.taskId, quota.maxPerTask)} and ${under('subject', lease.subject, quota.maxPerSubject)}`
        : under('subject', lease.subject, quota.maxPerSubject);
      const res = await sql`insert into leases (${sql.join(cols.map((c) => sql.ref(c)))}) select ${sql.join(cols.map((c) => sql`${row[c]}`))} where ${within}`.execute(trx);
      if (Number(res.numAffectedRows ?? 0n) === 1) return { inserted: true } as const;
      // Refused (rare): which quota, and how full it is, still under the locks.
      if (lease.taskId !== null) {
        const live = await this.#countLive(trx, { taskId: lease.taskId }, nowIso);
        if (live >= quota.maxPerTask) return { inserted: false, by: 'task', live } as const;
      }
      return { inserted: false, by: 'subject', live: await this.#countLive(trx, { subject: lease.subject }, nowIso) } as const;
    });
  }

  async #countLive(db: Kysely<Database>, by: { subject: string } | { taskId: string }, nowIso: string): Promise<number> {
    let q = db.selectFrom('leases').select((eb) => eb.fn.countAll<string | number>().as('n')).where('state', 'in', ['pending', 'active']).where('expires_at', '>', nowIso);
    q = 'subject' in by ? q.where('subject', '=', by.subject) : q.where('task_id', '=', by.taskId);
    const r = await q.executeTakeFirst();
    return Number(r?.n ?? 0);
  }

  // ---- TaskStore -------------------------------------------------------------

  async insertTask(t: Task): Promise<void> {
    await this.#db
      .insertInto('tasks')
      .values({ id: t.id, owner: t.owner, description: t.description, scopes: JSON.stringify(t.scopes), state: t.state, created_at: t.createdAt, deadline: t.deadline, ended_at: t.endedAt, ended_by: t.endedBy })
      .execute();
  }

  async getTask(id: string): Promise<Task | undefined> {
    const r = await this.#db.selectFrom('tasks').selectAll().where('id', '=', id).executeTakeFirst();
    return r === undefined ? undefined : taskOf(r);
  }

  async endTask(id: string, state: 'completed' | 'expired', at: string, by: string): Promise<Task | undefined> {
    const r = await this.#db.updateTable('tasks').set({ state, ended_at: at, ended_by: by }).where('id', '=', id).where('state', '=', 'active').returningAll().executeTakeFirst();
    return r === undefined ? undefined : taskOf(r);
  }

  async listOverdueTasks(nowIso: string, limit: number): Promise<readonly Task[]> {
    const rows = await this.#db.selectFrom('tasks').selectAll().where('state', '=', 'active').where('deadline', '<=', nowIso).orderBy('deadline').limit(limit).execute();
    return rows.map(taskOf);
  }

  // ---- ExceptionStore ----------------------------------------------------------

  async insertException(e: LegacyException): Promise<boolean> {
    try {
      await this.#db
        .insertInto('legacy_exceptions')
        .values({
          id: e.id,
          name: e.name,
          account: e.account,
          system: e.system,
          engine: e.engine,
          rotate_every_seconds: e.rotateEverySeconds,
          owner_team: e.owner.team,
          owner_contact: e.owner.contact,
          justification: e.justification,
          compensating_controls: JSON.stringify(e.compensatingControls),
          risks: JSON.stringify(e.risks),
          expires_at: e.expiresAt,
          created_at: e.createdAt,
          created_by: e.createdBy,
          updated_at: e.updatedAt,
          revision: e.revision,
          last_rotated_at: e.lastRotatedAt,
          next_rotation_at: e.nextRotationAt,
          last_rotation_error: e.lastRotationError,
          expired_finding_at: e.expiredFindingAt,
          secret: sealedText(e.secret),
          pending_secret: sealedText(e.pendingSecret),
        })
        .execute();
      return true;
    } catch (err) {
      if (isUniqueViolation(err)) return false;
      throw err;
    }
  }

  async getException(id: string): Promise<LegacyException | undefined> {
    const r = await this.#db.selectFrom('legacy_exceptions').selectAll().where('id', '=', id).executeTakeFirst();
    return r === undefined ? undefined : exceptionOf(r);
  }

  async listExceptions(): Promise<readonly LegacyException[]> {
    const rows = await this.#db.selectFrom('legacy_exceptions').selectAll().orderBy('name').execute();
    return rows.map(exceptionOf);
  }

  async updateException(id: string, revision: number, patch: ExceptionPatch): Promise<LegacyException | undefined> {
    const r = await this.#db
      .updateTable('legacy_exceptions')
      .set({ ...exceptionSet(patch), revision: revision + 1 })
      .where('id', '=', id)
      .where('revision', '=', revision)
      .returningAll()
      .executeTakeFirst();
    return r === undefined ? undefined : exceptionOf(r);
  }

  async deleteException(id: string): Promise<boolean> {
    const r = await this.#db.deleteFrom('legacy_exceptions').where('id', '=', id).executeTakeFirst();
    return Number(r.numDeletedRows) === 1;
  }

  // ---- EngineSecretStore ---------------------------------------------------------

  async ensureEngineSecret(engine: string, nowIso: string): Promise<EngineSecretRow> {
    await this.#db.insertInto('engine_secrets').values({ engine, current_secret: null, next_secret: null, next_at: null, rotated_at: nowIso, revision: 0 }).onConflict((oc) => oc.column('engine').doNothing()).execute();
    const row = await this.getEngineSecret(engine);
    if (row === undefined) throw new Error(`engine secret row for ${engine} vanished`);
    return row;
  }

  async getEngineSecret(engine: string): Promise<EngineSecretRow | undefined> {
    const r = await this.#db.selectFrom('engine_secrets').selectAll().where('engine', '=', engine).executeTakeFirst();
    return r === undefined ? undefined : engineSecretOf(r);
  }

  async updateEngineSecret(engine: string, revision: number, patch: EngineSecretPatch): Promise<EngineSecretRow | undefined> {
    const set: Partial<EngineSecretsTable> = { revision: revision + 1 };
    if (patch.current !== undefined) set.current_secret = sealedText(patch.current);
    if (patch.next !== undefined) set.next_secret = sealedText(patch.next);
    if (patch.nextAt !== undefined) set.next_at = patch.nextAt;
    if (patch.rotatedAt !== undefined) set.rotated_at = patch.rotatedAt;
    const r = await this.#db.updateTable('engine_secrets').set(set).where('engine', '=', engine).where('revision', '=', revision).returningAll().executeTakeFirst();
    return r === undefined ? undefined : engineSecretOf(r);
  }
}
