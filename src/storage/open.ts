/**
 * Open a store from its URL: empty for SQLite under the data dir,
 * `sqlite:<path>`, `sqlite::memory:` (the in-memory adapter: real SQLite,
 * nothing on disk), or `postgres://` / `postgresql://`.
 */
import { mkdirSync, existsSync } from 'node:fs';
import { resolve, join } from 'node:path';
import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import { openNodeSqlite, NodeSqliteDialect } from './sqlite/node-sqlite.ts';
import { Store } from './store.ts';
import { SqliteAuditAppender } from './sqlite/audit-appender.ts';
import type { Database } from './schema.ts';
import { storageErrors } from './errors.ts';

/** How to open a store. */
export interface OpenStoreOptions {
  /** Store URL (see module doc). */
  readonly url: string;
  /** Folder for the SQLite file when the URL is empty. */
  readonly dataDir: string;
  /** PostgreSQL: schema to use (created if missing); default `public`. */
  readonly pgSchema?: string;
  /** Open for reading only (offline verification): SQLite opens read-only and the folder must exist. */
  readonly readOnly?: boolean;
  /** PostgreSQL: pool size. */
  readonly pgPoolMax?: number;
}

const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

/** The store location without credentials, safe to print. */
export function describeStoreUrl(url: string, dataDir: string): string {
  if (url === '') return `sqlite:${join(resolve(dataDir), 'writ.db')}`;
  if (url.startsWith('sqlite:')) return url;
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.hostname}${u.port === '' ? '' : `:${u.port}`}${u.pathname}`;
  } catch {
    return '(unparsable store URL)';
  }
}

/**
 * @example
 * const store = await openStore({ url: 'postgres://postgres@127.0.0.1:5432/test', dataDir: '.writ' });
 * await store.migrate();
 */
export async function openStore(opts: OpenStoreOptions): Promise<Store> {
  const url = opts.url;
  if (url === '' || url.startsWith('sqlite:')) {
    let path: string;
    if (url === '') {
      if (opts.readOnly !== true) mkdirSync(opts.dataDir, { recursive: true, mode: 0o700 });
      path = join(resolve(opts.dataDir), 'writ.db');
      if (opts.readOnly === true && !existsSync(path)) throw storageErrors.error('ERR_STORE_UNAVAILABLE', `no store at ${path}`);
    } else {
      path = url.slice('sqlite:'.length);
      if (path === '') throw storageErrors.error('ERR_STORE_URL_INVALID', 'store URL `sqlite:` needs a path or `:memory:`');
    }
    const database = openNodeSqlite(path, opts.readOnly === true);
    const db = new Kysely<Database>({ dialect: new NodeSqliteDialect({ database }) });
    // A file on disk: the audit log's durable commits run on a worker thread's connection, off
    // the event loop. (An in-memory database is private to its connection: it keeps one.)
    const appender = path === ':memory:' || opts.readOnly === true ? undefined : new SqliteAuditAppender(path);
    return new Store('sqlite', db, path === ':memory:' ? 'sqlite::memory:' : `sqlite:${path}`, appender);
  }
  if (url.startsWith('postgres://') || url.startsWith('postgresql://')) {
    const schema = opts.pgSchema;
    if (schema !== undefined && !SCHEMA_NAME.test(schema)) throw new TypeError('pgSchema must be a plain lower-case identifier');
    const pool = new pg.Pool({
      connectionString: url,
      max: opts.pgPoolMax ?? 10,
      connectionTimeoutMillis: 5000,
      ...(schema === undefined ? {} : { options: `-c search_path=${schema}` }),
    });
    pool.on('error', () => {
      // An idle client lost its connection; the next query reconnects or fails with a clear error.
    });
    if (schema !== undefined) {
      const c = await pool.connect().catch((cause: unknown) => {
        throw storageErrors.error('ERR_STORE_UNAVAILABLE', `store at ${describeStoreUrl(url, opts.dataDir)} did not answer`, { cause });
      });
      try {
        await c.query(`create schema if not exists ${schema}`).catch((e: { code?: string }) => {
          // Two replicas creating it at once: the loser sees unique_violation; the schema exists.
          if (e.code !== '23505') throw e;
        });
      } finally {
        c.release();
      }
    }
    const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
    return new Store('postgres', db, describeStoreUrl(url, opts.dataDir));
  }
  throw storageErrors.error('ERR_STORE_URL_INVALID', 'store URL must be empty, `sqlite:<path>`, `sqlite::memory:` or start with `postgres://`');
}
