/**
 * Kysely's SQLite dialect over Node's built-in `node:sqlite` (no native addon).
 * Kysely expects a better-sqlite3-shaped database; this adapts the shape.
 */
import { DatabaseSync } from 'node:sqlite';
import type { StatementSync, SQLInputValue } from 'node:sqlite';
import { CompiledQuery, SqliteDialect, SqliteDriver } from 'kysely';
import type { DatabaseConnection, Driver, SqliteDatabase, SqliteDialectConfig, SqliteStatement } from 'kysely';

class Statement implements SqliteStatement {
  readonly #stmt: StatementSync;
  readonly reader: boolean;
  constructor(stmt: StatementSync) {
    this.#stmt = stmt;
    this.reader = stmt.columns().length > 0;
  }
  all(parameters: ReadonlyArray<unknown>): unknown[] {
    return this.#stmt.all(...(parameters as SQLInputValue[]));
  }
  run(parameters: ReadonlyArray<unknown>): { changes: number | bigint; lastInsertRowid: number | bigint } {
    return this.#stmt.run(...(parameters as SQLInputValue[]));
  }
  iterate(parameters: ReadonlyArray<unknown>): IterableIterator<unknown> {
    return this.#stmt.iterate(...(parameters as SQLInputValue[]));
  }
}

/**
 * Open a SQLite database for Kysely: WAL journal, `synchronous=FULL` (a commit
 * is on disk before it returns, so an acknowledged write survives `kill -9`
 * and power loss), foreign keys on, and a busy timeout for a second process.
 *
 * @example
 * const db = openNodeSqlite('/var/lib/writ/writ.db');
 */
export function openNodeSqlite(path: string, readOnly = false): SqliteDatabase & { raw: DatabaseSync } {
  const raw = new DatabaseSync(path, { readOnly });
  raw.exec('PRAGMA busy_timeout = 5000');
  if (path !== ':memory:' && !readOnly) raw.exec('PRAGMA journal_mode = WAL');
  raw.exec('PRAGMA synchronous = FULL');
  raw.exec('PRAGMA foreign_keys = ON');
  const cache = new Map<string, Statement>();
  return {
    raw,
    close: () => raw.close(),
    prepare(sql: string): SqliteStatement {
      let s = cache.get(sql);
      if (s === undefined) {
        s = new Statement(raw.prepare(sql));
        if (cache.size > 500) cache.clear();
        cache.set(sql, s);
      }
      return s;
    },
  };
}

/**
 * SQLite driver whose transactions start with `BEGIN IMMEDIATE`: the write
 * lock is taken up front, so a second process waits (busy timeout) instead of
 * failing when a read-then-write transaction tries to upgrade its lock.
 */
class ImmediateSqliteDriver extends SqliteDriver {
  override async beginTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw('begin immediate'));
  }
}

/** Kysely's SQLite dialect with {@link ImmediateSqliteDriver}. */
export class NodeSqliteDialect extends SqliteDialect {
  readonly #config: SqliteDialectConfig;
  constructor(config: SqliteDialectConfig) {
    super(config);
    this.#config = config;
  }
  override createDriver(): Driver {
    return new ImmediateSqliteDriver(this.#config);
  }
}
