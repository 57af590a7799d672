/**
 * One store over Kysely for both SQLite and PostgreSQL. It implements every
 * context's storage port; the few statements that differ by dialect are
 * marked where they are.
 */
import { CompiledQuery, Kysely, Migrator, sql } from 'kysely';
import type { Transaction } from 'kysely';
import type { AuditQuery, AuditStore, ChainHead, SealInput, StoredAuditRow } from '../audit/index.ts';
import type { SqliteAuditAppender } from './sqlite/audit-appender.ts';
import type { AdminPrincipalRow, AdminPrincipalStore } from '../governance/index.ts';
import type { Database, AuditEventsTable } from './schema.ts';
import { migrationProvider, MIGRATION_NAMES } from './migrations.ts';
import { AUDIT_INSERT_CHUNKS, auditInsertSql } from './audit-sql.ts';
import { storageErrors } from './errors.ts';
import { IdentityTables } from './identity-store.ts';
import { CredentialTables } from './credentials-store.ts';
import { SignalTables } from './signals-store.ts';
import { SsfTables } from './ssf-store.ts';
import { OAuthClientTables } from './oauth-clients-store.ts';

/** Which engine is behind the store. */
export type StoreKind = 'sqlite' | 'postgres';

/** Advisory lock key that serializes migrations across replicas ('writ' in ASCII). */
const MIGRATION_LOCK_KEY = 0x77726974;

function toRow(r: AuditEventsTable): StoredAuditRow {
  return {
    seq: Number(r.seq),
    time: r.time,
    action: r.action,
    outcome: r.outcome,
    actorId: r.actor_id,
    correlationId: r.correlation_id,
    event: r.event,
    prevHash: r.prev_hash,
    hash: r.hash,
  };
}

function isUniqueViolation(e: unknown): boolean {
  const err = e as { code?: unknown; errcode?: unknown; message?: unknown };
  // PostgreSQL unique_violation; SQLite SQLITE_CONSTRAINT_UNIQUE / PRIMARYKEY.
  return err.code === '23505' || err.errcode === 2067 || err.errcode === 1555;
}

/**
 * The store: all ports, plus lifecycle.
 *
 * @example
 * const store = await openStore({ url: '', dataDir: './.writ' });
 * await store.migrate();
 */
export class Store implements AuditStore, AdminPrincipalStore {
  readonly kind: StoreKind;
  readonly db: Kysely<Database>;
  /** Where the data lives, without credentials (for status output). */
  readonly location: string;
  /** The identity context's ports (CA keys, entries, join tokens, nodes, replay cache). */
  readonly identity: IdentityTables;
  /** The credentials context's ports (leases, tasks). */
  readonly credentials: CredentialTables;
  /** The signals context's store port. */
  readonly signals: SignalTables;
  /** The signals context's Shared Signals port (streams, SET queues, receiver replay cache). */
  readonly ssf: SsfTables;
  /** The credentials context's OAuth client registry. */
  readonly oauthClients: OAuthClientTables;
  /** SQLite on a file: audit batches are committed by a worker thread (see `sqlite/audit-worker.ts`). */
  readonly appendInOrder?: (events: readonly SealInput[]) => Promise<readonly StoredAuditRow[]>;
  readonly #auditAppender: SqliteAuditAppender | undefined;
  #closed = false;

  constructor(kind: StoreKind, db: Kysely<Database>, location: string, auditAppender?: SqliteAuditAppender) {
    this.kind = kind;
    this.db = db;
    this.location = location;
    this.#auditAppender = auditAppender;
    if (auditAppender !== undefined) this.appendInOrder = (events) => auditAppender.append(events);
    this.identity = new IdentityTables(kind, db);
    this.credentials = new CredentialTables(kind, db);
    this.signals = new SignalTables(db);
    this.ssf = new SsfTables(db);
    this.oauthClients = new OAuthClientTables(db);
  }

  /** Apply every pending migration; refuse a schema newer than this build. */
  async migrate(): Promise<{ applied: string[] }> {
    if (this.kind === 'sqlite') return this.#migrateOn(this.db, undefined);
    // PostgreSQL: replicas starting together serialize on an advisory lock, so
    // only one creates the bookkeeping tables (Kysely's own lock comes after them).
    return this.db.connection().execute(async (conn) => {
      await sql`select pg_advisory_lock(${MIGRATION_LOCK_KEY})`.execute(conn);
      try {
        // Keep Kysely's bookkeeping tables in the schema the store uses (its search_path).
        const r = await sql<{ s: string | null }>`select current_schema() as s`.execute(conn);
        return await this.#migrateOn(conn, r.rows[0]?.s ?? undefined);
      } finally {
        await sql`select pg_advisory_unlock(${MIGRATION_LOCK_KEY})`.execute(conn);
      }
    });
  }

  async #migrateOn(db: Kysely<Database>, migrationTableSchema: string | undefined): Promise<{ applied: string[] }> {
    const migrator = new Migrator({ db, provider: migrationProvider, ...(migrationTableSchema === undefined ? {} : { migrationTableSchema }) });
    const { error, results } = await migrator.migrateToLatest();
    if (error !== undefined) {
      const msg = error instanceof Error ? error.message : String(error);
      if (/corrupted migrations|previously executed migration .* is missing/i.test(msg)) {
        throw storageErrors.error('ERR_STORE_NEWER_SCHEMA', 'the store holds migrations this version of writ does not know', { cause: error });
      }
      throw storageErrors.error('ERR_STORE_MIGRATION_FAILED', 'store migration failed', { cause: error });
    }
    return { applied: (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName) };
  }

  /** Names of the migrations this build knows. */
  static migrationNames(): readonly string[] {
    return MIGRATION_NAMES;
  }

  /** Resolves when the store answers a trivial query. */
  async ping(): Promise<void> {
    if (this.#closed) throw storageErrors.error('ERR_STORE_UNAVAILABLE', 'store is closed');
    try {
      await sql`select 1`.execute(this.db);
    } catch (cause) {
      throw storageErrors.error('ERR_STORE_UNAVAILABLE', `store at ${this.location} did not answer`, { cause });
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#auditAppender?.close();
    await this.db.destroy();
  }

  // ---- AuditStore -------------------------------------------------------

  async appendSealed(sealFn: (head: ChainHead) => readonly StoredAuditRow[]): Promise<readonly StoredAuditRow[]> {
    return this.db.transaction().execute(async (trx) => {
      const head = await this.#lockHead(trx);
      const rows = sealFn(head);
      if (rows.length === 0) return rows;
      let i = 0;
      for (const size of AUDIT_INSERT_CHUNKS) {
        for (; rows.length - i >= size; i += size) {
          const params: unknown[] = [];
          for (let j = i; j < i + size; j++) {
            const r = rows[j] as StoredAuditRow;
            params.push(r.seq, r.time, r.action, r.outcome, r.actorId, r.correlationId, r.event, r.prevHash, r.hash);
          }
          await trx.executeQuery(CompiledQuery.raw(this.#auditInsert(size), params));
        }
      }
      const last = rows[rows.length - 1];
      if (last === undefined) return rows;
      await trx.updateTable('audit_head').set({ seq: last.seq, hash: last.hash }).where('id', '=', 1).execute();
      return rows;
    });
  }

  readonly #auditInsertSql = new Map<number, string>();

  #auditInsert(rows: number): string {
    let text = this.#auditInsertSql.get(rows);
    if (text === undefined) {
      text = auditInsertSql(this.kind, rows);
      this.#auditInsertSql.set(rows, text);
    }
    return text;
  }

  async #lockHead(trx: Transaction<Database>): Promise<ChainHead> {
    // PostgreSQL: the row lock serializes appenders across replicas.
    // SQLite: one connection per process and a write lock per transaction do the same.
    const q = trx.selectFrom('audit_head').select(['seq', 'hash']).where('id', '=', 1);
    const row = await (this.kind === 'postgres' ? q.forUpdate() : q).executeTakeFirst();
    if (row === undefined) throw storageErrors.error('ERR_STORE_MIGRATION_FAILED', 'audit_head row is missing');
    return { seq: Number(row.seq), hash: row.hash };
  }

  async head(): Promise<ChainHead> {
    const row = await this.db.selectFrom('audit_head').select(['seq', 'hash']).where('id', '=', 1).executeTakeFirst();
    if (row === undefined) throw storageErrors.error('ERR_STORE_MIGRATION_FAILED', 'audit_head row is missing');
    return { seq: Number(row.seq), hash: row.hash };
  }

  async readRange(afterSeq: number, limit: number): Promise<readonly StoredAuditRow[]> {
    const rows = await this.db.selectFrom('audit_events').selectAll().where('seq', '>', afterSeq).orderBy('seq', 'asc').limit(limit).execute();
    return rows.map(toRow);
  }

  async query(q: AuditQuery): Promise<readonly StoredAuditRow[]> {
    let b = this.db.selectFrom('audit_events').selectAll().where('seq', '>', q.afterSeq ?? 0);
    if (q.action !== undefined) b = b.where('action', '=', q.action);
    if (q.correlationId !== undefined) b = b.where('correlation_id', '=', q.correlationId);
    if (q.since !== undefined) b = b.where('time', '>=', q.since);
    const rows = await b.orderBy('seq', 'asc').limit(q.limit).execute();
    return rows.map(toRow);
  }

  // ---- AdminPrincipalStore ---------------------------------------------

  async insertPrincipal(row: AdminPrincipalRow): Promise<boolean> {
    try {
      await this.db
        .insertInto('admin_principals')
        .values({ id: row.id, name: row.name, role: row.role, token_hash: row.tokenHash, created_at: row.createdAt, created_by: row.createdBy, revoked_at: row.revokedAt })
        .execute();
      return true;
    } catch (e) {
      if (isUniqueViolation(e)) return false;
      throw e;
    }
  }

  async getPrincipal(id: string): Promise<AdminPrincipalRow | undefined> {
    const r = await this.db.selectFrom('admin_principals').selectAll().where('id', '=', id).executeTakeFirst();
    return r === undefined ? undefined : principalRow(r);
  }

  async listPrincipals(): Promise<readonly AdminPrincipalRow[]> {
    const rows = await this.db.selectFrom('admin_principals').selectAll().orderBy('created_at', 'asc').orderBy('id', 'asc').execute();
    return rows.map(principalRow);
  }

  async setPrincipalTokenHash(id: string, tokenHash: string): Promise<boolean> {
    const r = await this.db.updateTable('admin_principals').set({ token_hash: tokenHash }).where('id', '=', id).where('revoked_at', 'is', null).executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }

  async revokePrincipal(id: string, at: string, protectRole: string): Promise<'revoked' | 'not-found' | 'last-of-role'> {
    return this.db.transaction().execute(async (trx) => {
      // Lock every active principal of the protected role, so two concurrent
      // revocations see each other (PostgreSQL); SQLite serializes writers.
      const q = trx.selectFrom('admin_principals').select(['id', 'role']).where('revoked_at', 'is', null).where((eb) => eb.or([eb('id', '=', id), eb('role', '=', protectRole)]));
      const rows = await (this.kind === 'postgres' ? q.forUpdate() : q).execute();
      const target = rows.find((r) => r.id === id);
      if (target === undefined) return 'not-found';
      if (target.role === protectRole && rows.filter((r) => r.role === protectRole).length <= 1) return 'last-of-role';
      await trx.updateTable('admin_principals').set({ revoked_at: at }).where('id', '=', id).execute();
      return 'revoked';
    });
  }

  async countActivePrincipals(): Promise<number> {
    const r = await this.db.selectFrom('admin_principals').select((eb) => eb.fn.countAll<number>().as('n')).where('revoked_at', 'is', null).executeTakeFirst();
    return Number(r?.n ?? 0);
  }
}

function principalRow(r: Database['admin_principals']): AdminPrincipalRow {
  return { id: r.id, name: r.name, role: r.role, tokenHash: r.token_hash, createdAt: r.created_at, createdBy: r.created_by, revokedAt: r.revoked_at };
}
