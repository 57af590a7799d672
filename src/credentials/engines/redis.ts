/**
 * Redis engine: each credential is an ACL user with key patterns and command
 * categories; revoking it disables the user, kills its clients and deletes it.
 */
import type { Secret } from '../../kernel/index.ts';
import { credentialErrors } from '../errors.ts';
import { ACCOUNT_PREFIX, ENGINE_NAME, ROLE_NAME, generatePassword, invalid, isAccountName, objectOf, optionalSeconds, stringList } from './engine.ts';
import type { AdminSecretSource, DynamicAccount, EnginePlugin, SecretEngine } from './engine.ts';
import { RespClient, RespError } from './resp.ts';

/** A Redis engine definition. */
export interface RedisEngineConfig {
  readonly name: string;
  readonly type: 'redis';
  /** Admin connection, `redis://[user:password@]host:port` (a user allowed `ACL` and `CLIENT`). */
  readonly url: string;
  readonly prefix: string;
  /** Role → key patterns (`app:*`), command rules (`+@read`, `-@dangerous`, `+get`), channel patterns. */
  readonly roles: Readonly<Record<string, { readonly keys: readonly string[]; readonly commands: readonly string[]; readonly channels: readonly string[]; readonly maxTtlSeconds?: number }>>;
  /** Rotate the admin user's password this often; absent: only on demand. */
  readonly rotateEverySeconds?: number;
}

function isWrongPass(e: unknown): boolean {
  return e instanceof RespError && /^WRONGPASS/.test(e.message);
}

const KEY_PATTERN = /^[\x21-\x7e]{1,256}$/;
const COMMAND_RULE = /^[+-]@?[a-z|_-]{1,64}$/;

function engineFailed(engine: string, op: string, cause: unknown): never {
  // Redis may quote the offending ACL rule in its error, and `>…`/`<…` rules carry passwords.
  const message = String((cause as { message?: unknown }).message ?? cause).replace(/[<>][^\s']+/g, '[redacted]');
  throw credentialErrors.error('ERR_CRED_ENGINE_FAILED', `redis engine \`${engine}\` could not ${op}`, { cause: new Error(message) });
}

class RedisEngine implements SecretEngine {
  readonly type = 'redis' as const;
  readonly name: string;
  readonly prefix: string;
  readonly rotateEverySeconds: number | undefined;
  readonly #config: RedisEngineConfig;
  readonly #connection: Record<string, string | number>;
  readonly #admin: string;
  readonly #urlPassword: string | undefined;
  readonly #source: AdminSecretSource | undefined;
  #client: Promise<RespClient> | undefined;

  constructor(config: RedisEngineConfig, source?: AdminSecretSource) {
    this.name = config.name;
    this.prefix = config.prefix;
    this.rotateEverySeconds = config.rotateEverySeconds;
    this.#config = config;
    this.#source = source;
    const u = new URL(config.url);
    this.#admin = u.username === '' ? 'default' : decodeURIComponent(u.username);
    this.#urlPassword = u.password === '' ? undefined : decodeURIComponent(u.password);
    this.#connection = { host: u.hostname, port: Number(u.port === '' ? 6379 : u.port) };
  }

  /** The admin URL with `password` (undefined: the URL's own). */
  #urlWith(password: string | undefined): string {
    const u = new URL(this.#config.url);
    if (password === undefined) return u.toString();
    if (u.username === '') u.username = 'default';
    u.password = encodeURIComponent(password);
    return u.toString();
  }

  /** Connect with the current admin secret; a refused one is retried once with the next (a rotation may be under way elsewhere). */
  async #connect(): Promise<RespClient> {
    const current = await this.#source?.(false);
    try {
      return await RespClient.connect(this.#urlWith(current?.reveal()));
    } catch (e) {
      if (!isWrongPass(e)) throw e;
      const next = await this.#source?.(true);
      return RespClient.connect(this.#urlWith(next?.reveal()));
    }
  }

  async #run(args: readonly string[], op: string): Promise<unknown> {
    this.#client ??= this.#connect();
    try {
      const c = await this.#client;
      return await c.command(args);
    } catch (e) {
      // A dropped connection (or a refused login) is re-opened on the next call.
      if (!(e instanceof RespError) || isWrongPass(e)) this.#client = undefined;
      engineFailed(this.name, op, e);
    }
  }

  roles(): readonly string[] {
    return Object.keys(this.#config.roles);
  }

  roleMaxTtlMs(role: string): number | undefined {
    const s = this.#config.roles[role]?.maxTtlSeconds;
    return s === undefined ? undefined : s * 1000;
  }

  async create(role: string, username: string, _expiresAt: Date): Promise<DynamicAccount> {
    const def = this.#config.roles[role];
    if (def === undefined) throw credentialErrors.error('ERR_CRED_ROLE_NOT_FOUND', `engine \`${this.name}\` has no role \`${role}\``);
    if (!username.startsWith(this.prefix)) throw new TypeError('account name outside the engine prefix');
    const password = generatePassword();
    // Redis ACL users have no expiry of their own: the reaper removes them when the lease ends.
    const rules = ['reset', 'on', `>${password.reveal()}`, ...def.keys.map((k) => `~${k}`), 'resetchannels', ...def.channels.map((c) => `&${c}`), ...def.commands];
    await this.#run(['ACL', 'SETUSER', username, ...rules], `create a user for \`${role}\``);
    return { username, password, connection: this.#connection };
  }

  async extend(): Promise<void> {
    // Nothing to move: the lease is the expiry.
  }

  async revoke(username: string): Promise<void> {
    if (!username.startsWith(this.prefix)) throw new TypeError('account name outside the engine prefix');
    const users = (await this.#run(['ACL', 'USERS'], 'list users')) as string[];
    if (!users.includes(username)) return;
    // No new AUTH, then drop its connections, then the user.
    await this.#run(['ACL', 'SETUSER', username, 'off', 'resetpass'], `disable \`${username}\``);
    await this.#run(['CLIENT', 'KILL', 'USER', username], `disconnect \`${username}\``);
    await this.#run(['ACL', 'DELUSER', username], `delete \`${username}\``);
  }

  async listAccounts(): Promise<readonly string[]> {
    const users = (await this.#run(['ACL', 'USERS'], 'list users')) as string[];
    return users.filter((u) => isAccountName(this.prefix, u) && u !== this.#admin);
  }

  adminAccount(): string {
    return this.#admin;
  }

  async setAdminSecret(next: Secret): Promise<void> {
    // `>` adds a password: the previous one keeps working until it is retired,
    // so no connection of any replica is refused part way through.
    await this.#run(['ACL', 'SETUSER', this.#admin, `>${next.reveal()}`], `add a password to its admin user \`${this.#admin}\``);
  }

  async retireAdminSecret(previous: Secret | undefined): Promise<void> {
    const old = previous?.reveal() ?? this.#urlPassword;
    if (old === undefined) {
      // The admin user had no password (`nopass`): adding one already ended that.
      return;
    }
    await this.#run(['ACL', 'SETUSER', this.#admin, `<${old}`], `remove the previous password of \`${this.#admin}\``);
  }

  async checkAdminSecret(secret: Secret): Promise<boolean> {
    let c: RespClient | undefined;
    try {
      c = await RespClient.connect(this.#urlWith(secret.reveal()));
      await c.command(['PING']);
      return true;
    } catch (e) {
      if (isWrongPass(e)) return false;
      return engineFailed(this.name, 'open a connection to check its admin secret', e);
    } finally {
      c?.close();
    }
  }

  async close(): Promise<void> {
    const c = this.#client;
    this.#client = undefined;
    if (c !== undefined) (await c.catch(() => undefined))?.close();
  }
}

/**
 * @example
 * const engine = redisPlugin.create(redisPlugin.validate({ name: 'cache', type: 'redis', url: 'redis://127.0.0.1:6379', roles: { app: { keys: ['app:*'], commands: ['+@read'] } } }));
 */
export const redisPlugin: EnginePlugin<RedisEngineConfig> = {
  type: 'redis',
  validate(raw: unknown): RedisEngineConfig {
    const o = objectOf('?', 'engine', raw);
    const name = typeof o.name === 'string' && ENGINE_NAME.test(o.name) ? o.name : invalid('?', '`name` must be lowercase letters, digits, `-` or `_`');
    for (const k of Object.keys(o)) if (!['name', 'type', 'url', 'prefix', 'roles', 'rotateEverySeconds'].includes(k)) invalid(name, `unknown field \`${k}\``);
    if (o.type !== 'redis') invalid(name, '`type` must be `redis`');
    let url: URL | undefined;
    try {
      url = typeof o.url === 'string' ? new URL(o.url) : undefined;
    } catch {
      url = undefined;
    }
    if (url === undefined || url.protocol !== 'redis:') invalid(name, '`url` must be a redis:// URL');
    const prefix = o.prefix === undefined ? 'writ_' : typeof o.prefix === 'string' && ACCOUNT_PREFIX.test(o.prefix) ? o.prefix : invalid(name, '`prefix` must be lowercase letters, digits or `_`, at most 30 characters');
    const rolesRaw = objectOf(name, 'roles', o.roles);
    const roles: Record<string, { keys: string[]; commands: string[]; channels: string[]; maxTtlSeconds?: number }> = {};
    for (const [role, defRaw] of Object.entries(rolesRaw)) {
      if (!ROLE_NAME.test(role)) invalid(name, `role name \`${role.slice(0, 64)}\` must be lowercase letters, digits, \`-\` or \`_\``);
      const def = objectOf(name, `roles.${role}`, defRaw);
      for (const k of Object.keys(def)) if (!['keys', 'commands', 'channels', 'maxTtlSeconds'].includes(k)) invalid(name, `unknown field \`roles.${role}.${k}\``);
      const keys = stringList(name, `roles.${role}.keys`, def.keys ?? [], KEY_PATTERN);
      const commands = stringList(name, `roles.${role}.commands`, def.commands ?? [], COMMAND_RULE);
      const channels = stringList(name, `roles.${role}.channels`, def.channels ?? [], KEY_PATTERN);
      const maxTtlSeconds = optionalSeconds(name, `roles.${role}.maxTtlSeconds`, def.maxTtlSeconds);
      roles[role] = { keys, commands, channels, ...(maxTtlSeconds === undefined ? {} : { maxTtlSeconds }) };
    }
    const rotateEverySeconds = optionalSeconds(name, 'rotateEverySeconds', o.rotateEverySeconds);
    return { name, type: 'redis', url: url.toString(), prefix, roles, ...(rotateEverySeconds === undefined ? {} : { rotateEverySeconds }) };
  },
  create(config: RedisEngineConfig, adminSecret?: AdminSecretSource): SecretEngine {
    return new RedisEngine(config, adminSecret);
  },
};
