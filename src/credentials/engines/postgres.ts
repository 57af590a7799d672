/**
 * PostgreSQL engine: each credential is a role created with
 * `LOGIN PASSWORD … VALID UNTIL …` and the grants of a template; revoking it
 * stops new logins, terminates its sessions, removes its grants and drops it.
 */
import pg from 'pg';
import type { Secret } from '../../kernel/index.ts';
import { credentialErrors } from '../errors.ts';
import { ACCOUNT_PREFIX, ENGINE_NAME, ROLE_NAME, generatePassword, invalid, isAccountName, objectOf, optionalSeconds, stringList } from './engine.ts';
import type { AdminSecretSource, DynamicAccount, EnginePlugin, SecretEngine } from './engine.ts';
import { scramSha256Verifier } from './scram.ts';

/** A PostgreSQL engine definition. */
export interface PostgresEngineConfig {
  readonly name: string;
  readonly type: 'postgres';
  /** Admin connection (a role with CREATEROLE). */
  readonly url: string;
  readonly prefix: string;
  /** Role name → SQL statements run after CREATE ROLE; `{{name}}` is the quoted new role. */
  readonly roles: Readonly<Record<string, { readonly grants: readonly string[]; readonly maxTtlSeconds?: number }>>;
  readonly poolSize: number;
  /** Rotate the admin role's password this often; absent: only on demand. */
  readonly rotateEverySeconds?: number;
}

/** PostgreSQL `invalid_password` (SQLSTATE 28P01): the password was refused. */
const INVALID_PASSWORD = '28P01';
/** Connection attempts when the admin password is refused (a rotation on another replica may be between steps). */
const AUTH_ATTEMPTS = 3;

/** Serializes role changes across replicas: concurrent GRANTs on one object collide ("tuple concurrently updated"). */
const ROLE_LOCK = 0x77726372; // 'wrcr'

function ident(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/**
 * Connection settings from the engine URL, password left out: it comes from
 * a function per connection (pg lets a connection string's empty password
 * override one, so the URL is not passed as a string).
 */
function connectionOf(u: URL): pg.ClientConfig {
  const sslmode = u.searchParams.get('sslmode');
  return {
    host: decodeURIComponent(u.hostname),
    port: Number(u.port === '' ? 5432 : u.port),
    user: u.username === '' ? 'postgres' : decodeURIComponent(u.username),
    database: decodeURIComponent(u.pathname.replace(/^\//, '')) || 'postgres',
    ...(sslmode === 'require' || sslmode === 'verify-ca' || sslmode === 'verify-full' ? { ssl: { rejectUnauthorized: sslmode !== 'require' } } : {}),
  };
}

function engineFailed(engine: string, op: string, cause: unknown): never {
  // The statement may hold a password: keep only the server's error code and message in the cause.
  const e = cause as { code?: unknown; message?: unknown };
  throw credentialErrors.error('ERR_CRED_ENGINE_FAILED', `postgres engine \`${engine}\` could not ${op}`, { cause: new Error(`${String(e.code ?? '')} ${String(e.message ?? '')}`.trim()) });
}

class PostgresEngine implements SecretEngine {
  readonly type = 'postgres' as const;
  readonly name: string;
  readonly prefix: string;
  readonly rotateEverySeconds: number | undefined;
  readonly #config: PostgresEngineConfig;
  readonly #pool: pg.Pool;
  readonly #connection: Record<string, string | number>;
  /** Where to connect, without a password: that comes from {@link AdminSecretSource} per connection. */
  readonly #target: pg.ClientConfig;
  readonly #urlPassword: string | undefined;
  readonly #admin: string;
  readonly #source: AdminSecretSource | undefined;
  #preferNext = false;

  constructor(config: PostgresEngineConfig, source?: AdminSecretSource) {
    this.name = config.name;
    this.prefix = config.prefix;
    this.rotateEverySeconds = config.rotateEverySeconds;
    this.#config = config;
    this.#source = source;
    const u = new URL(config.url);
    this.#urlPassword = u.password === '' ? undefined : decodeURIComponent(u.password);
    this.#admin = u.username === '' ? 'postgres' : decodeURIComponent(u.username);
    this.#target = connectionOf(u);
    this.#pool = new pg.Pool({ ...this.#target, password: () => this.#password(), max: config.poolSize, connectionTimeoutMillis: 10_000 });
    // A terminated idle connection must not crash the server.
    this.#pool.on('error', () => undefined);
    this.#connection = { host: u.hostname, port: Number(u.port === '' ? 5432 : u.port), database: decodeURIComponent(u.pathname.replace(/^\//, '')) || 'postgres' };
  }

  async #password(): Promise<string> {
    const rotated = await this.#source?.(this.#preferNext);
    // No password at all (a trust-authenticated server): an empty one is never sent.
    return rotated === undefined ? (this.#urlPassword ?? '') : rotated.reveal();
  }

  /** A pooled connection; a refused admin password is retried, asking for the next secret. */
  async #client(): Promise<pg.PoolClient> {
    for (let attempt = 1; ; attempt++) {
      try {
        const c = await this.#pool.connect();
        this.#preferNext = false;
        return c;
      } catch (e) {
        if ((e as { code?: unknown }).code !== INVALID_PASSWORD || attempt >= AUTH_ATTEMPTS) engineFailed(this.name, 'connect', e);
        this.#preferNext = !this.#preferNext;
        await new Promise((r) => setTimeout(r, 100 * attempt));
      }
    }
  }

  async #query(text: string, values: unknown[] = []): Promise<pg.QueryResult> {
    const c = await this.#client();
    try {
      return await c.query(text, values);
    } finally {
      c.release();
    }
  }

  roles(): readonly string[] {
    return Object.keys(this.#config.roles);
  }

  roleMaxTtlMs(role: string): number | undefined {
    const s = this.#config.roles[role]?.maxTtlSeconds;
    return s === undefined ? undefined : s * 1000;
  }

  async create(role: string, username: string, expiresAt: Date): Promise<DynamicAccount> {
    const def = this.#config.roles[role];
    if (def === undefined) throw credentialErrors.error('ERR_CRED_ROLE_NOT_FOUND', `engine \`${this.name}\` has no role \`${role}\``);
    if (!username.startsWith(this.prefix)) throw new TypeError('account name outside the engine prefix');
    const password = generatePassword();
    const client = await this.#client();
    try {
      await client.query('begin');
      await client.query('select pg_advisory_xact_lock($1)', [ROLE_LOCK]);
      // DDL takes no bind parameters; the password is base64url and the time ISO-8601, neither can break the quoting.
      await client.query(`create role ${ident(username)} login password '${password.reveal()}' valid until '${expiresAt.toISOString()}'`);
      for (const g of def.grants) await client.query(g.replaceAll('{{name}}', ident(username)));
      await client.query('commit');
    } catch (e) {
      await client.query('rollback').catch(() => undefined);
      engineFailed(this.name, `create a role for \`${role}\``, e);
    } finally {
      client.release();
    }
    return { username, password, connection: this.#connection };
  }

  async extend(username: string, expiresAt: Date): Promise<void> {
    try {
      await this.#query(`alter role ${ident(username)} valid until '${expiresAt.toISOString()}'`);
    } catch (e) {
      engineFailed(this.name, `extend \`${username}\``, e);
    }
  }

  async revoke(username: string): Promise<void> {
    if (!username.startsWith(this.prefix)) throw new TypeError('account name outside the engine prefix');
    const client = await this.#client();
    try {
      const exists = await client.query('select 1 from pg_roles where rolname = $1', [username]);
      if (exists.rowCount === 0) return;
      // Order matters: no new login, then end the sessions, then remove grants and the role.
      await client.query(`alter role ${ident(username)} nologin`);
      await client.query('select pg_terminate_backend(pid) from pg_stat_activity where usename = $1 and pid <> pg_backend_pid()', [username]);
      await client.query('begin');
      await client.query('select pg_advisory_xact_lock($1)', [ROLE_LOCK]);
      // REASSIGN/DROP OWNED need membership in the role: a CREATEROLE admin
      // (not a superuser) grants it to itself first; DROP ROLE ends it.
      const member = await client.query<{ m: boolean }>("select pg_has_role(current_user, $1, 'MEMBER') as m", [username]);
      if (member.rows[0]?.m !== true) await client.query(`grant ${ident(username)} to current_user`);
      await client.query(`reassign owned by ${ident(username)} to current_user`);
      await client.query(`drop owned by ${ident(username)}`);
      await client.query(`drop role if exists ${ident(username)}`);
      await client.query('commit');
    } catch (e) {
      await client.query('rollback').catch(() => undefined);
      engineFailed(this.name, `drop \`${username}\``, e);
    } finally {
      client.release();
    }
  }

  async listAccounts(): Promise<readonly string[]> {
    try {
      const r = await this.#query('select rolname from pg_roles where starts_with(rolname, $1) and not rolsuper', [this.prefix]);
      // Only names of the shape the engine gives (prefix + lease id): never the admin role or another role that shares the prefix.
      return r.rows.map((x: { rolname: string }) => x.rolname).filter((n: string) => isAccountName(this.prefix, n) && n !== this.#admin);
    } catch (e) {
      if ((e as { code?: unknown }).code === 'ERR_CRED_ENGINE_FAILED') throw e;
      engineFailed(this.name, 'list its roles', e);
    }
  }

  adminAccount(): string {
    return this.#admin;
  }

  async setAdminSecret(next: Secret): Promise<void> {
    // A role may change its own password; only the SCRAM verifier crosses the wire.
    // Open sessions keep working: PostgreSQL checks a password only at login.
    try {
      await this.#query(`alter role current_user password '${scramSha256Verifier(next)}'`);
    } catch (e) {
      if ((e as { code?: unknown }).code === 'ERR_CRED_ENGINE_FAILED') throw e;
      engineFailed(this.name, `set the password of its admin role \`${this.#admin}\``, e);
    }
  }

  async retireAdminSecret(): Promise<void> {
    // One password per role: setting the next one already retired the previous.
  }

  async checkAdminSecret(secret: Secret): Promise<boolean> {
    const c = new pg.Client({ ...this.#target, password: secret.reveal(), connectionTimeoutMillis: 10_000 });
    try {
      await c.connect();
      await c.query('select 1');
      return true;
    } catch (e) {
      if ((e as { code?: unknown }).code === INVALID_PASSWORD) return false;
      engineFailed(this.name, 'open a connection to check its admin secret', e);
    } finally {
      await c.end().catch(() => undefined);
    }
  }

  async setAccountPassword(account: string, password: Secret): Promise<void> {
    if (account.startsWith(this.prefix) || account === this.#admin) throw new TypeError('an exception account is neither a dynamic account nor the engine admin');
    const c = await this.#client();
    try {
      const r = await c.query<{ rolsuper: boolean }>('select rolsuper from pg_roles where rolname = $1', [account]);
      const row = r.rows[0];
      if (row === undefined) throw credentialErrors.error('ERR_CRED_ACCOUNT_NOT_FOUND', `postgres engine \`${this.name}\` has no role \`${account}\``);
      if (row.rolsuper) throw credentialErrors.error('ERR_CRED_ACCOUNT_NOT_ROTATABLE', `role \`${account}\` is a superuser; writ rotates only ordinary roles`);
      await c.query(`alter role ${ident(account)} password '${scramSha256Verifier(password)}'`);
    } catch (e) {
      if (typeof (e as { code?: unknown }).code === 'string' && String((e as { code: string }).code).startsWith('ERR_CRED_')) throw e;
      engineFailed(this.name, `set the password of \`${account}\``, e);
    } finally {
      c.release();
    }
  }

  async close(): Promise<void> {
    await this.#pool.end();
  }
}

/**
 * @example
 * const engine = postgresPlugin.create(postgresPlugin.validate({ name: 'main', type: 'postgres', url, roles: { reader: { grants: ['grant select on all tables in schema app to {{name}}'] } } }));
 */
export const postgresPlugin: EnginePlugin<PostgresEngineConfig> = {
  type: 'postgres',
  validate(raw: unknown): PostgresEngineConfig {
    const o = objectOf('?', 'engine', raw);
    const name = typeof o.name === 'string' && ENGINE_NAME.test(o.name) ? o.name : invalid('?', '`name` must be lowercase letters, digits, `-` or `_`');
    for (const k of Object.keys(o)) if (!['name', 'type', 'url', 'prefix', 'roles', 'poolSize', 'rotateEverySeconds'].includes(k)) invalid(name, `unknown field \`${k}\``);
    if (o.type !== 'postgres') invalid(name, '`type` must be `postgres`');
    let url: URL | undefined;
    try {
      url = typeof o.url === 'string' ? new URL(o.url) : undefined;
    } catch {
      url = undefined;
    }
    if (url === undefined || (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:')) invalid(name, '`url` must be a postgres:// URL');
    const prefix = o.prefix === undefined ? 'writ_' : typeof o.prefix === 'string' && ACCOUNT_PREFIX.test(o.prefix) ? o.prefix : invalid(name, '`prefix` must be lowercase letters, digits or `_`, at most 30 characters');
    const rolesRaw = objectOf(name, 'roles', o.roles);
    const roles: Record<string, { grants: string[]; maxTtlSeconds?: number }> = {};
    for (const [role, defRaw] of Object.entries(rolesRaw)) {
      if (!ROLE_NAME.test(role)) invalid(name, `role name \`${role.slice(0, 64)}\` must be lowercase letters, digits, \`-\` or \`_\``);
      const def = objectOf(name, `roles.${role}`, defRaw);
      for (const k of Object.keys(def)) if (!['grants', 'maxTtlSeconds'].includes(k)) invalid(name, `unknown field \`roles.${role}.${k}\``);
      const grants = stringList(name, `roles.${role}.grants`, def.grants ?? []);
      const maxTtlSeconds = optionalSeconds(name, `roles.${role}.maxTtlSeconds`, def.maxTtlSeconds);
      roles[role] = { grants, ...(maxTtlSeconds === undefined ? {} : { maxTtlSeconds }) };
    }
    const poolSize = optionalSeconds(name, 'poolSize', o.poolSize) ?? 8;
    const rotateEverySeconds = optionalSeconds(name, 'rotateEverySeconds', o.rotateEverySeconds);
    return { name, type: 'postgres', url: url.toString(), prefix, roles, poolSize, ...(rotateEverySeconds === undefined ? {} : { rotateEverySeconds }) };
  },
  create(config: PostgresEngineConfig, adminSecret?: AdminSecretSource): SecretEngine {
    return new PostgresEngine(config, adminSecret);
  },
};
