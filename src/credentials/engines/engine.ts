/**
 * Dynamic secret engines: a plugin validates an engine definition, then
 * creates the engine that makes and removes short-lived accounts.
 */
import { randomBytes } from 'node:crypto';
import { Secret } from '../../kernel/index.ts';
import { credentialErrors } from '../errors.ts';

/** An account an engine created. The password is returned once and never stored. */
export interface DynamicAccount {
  readonly username: string;
  readonly password: Secret;
  /** Where to connect (no secret): host, port, database. */
  readonly connection: Readonly<Record<string, string | number>>;
}

/**
 * Where an engine gets the secret of its own admin connection: the one Writ
 * rotated to, or undefined for the password in the engine's URL. After an
 * authentication failure the engine asks again with `preferNext` (another
 * replica may be part way through a rotation).
 */
export type AdminSecretSource = (preferNext: boolean) => Promise<Secret | undefined>;

/** A running engine. */
export interface SecretEngine {
  readonly type: 'postgres' | 'redis';
  readonly name: string;
  /** Accounts this engine creates are named `<prefix><lease id>`. */
  readonly prefix: string;
  /** Role names the definition offers. */
  roles(): readonly string[];
  /** Max lifetime of a role's credentials (ms), when the role caps it. */
  roleMaxTtlMs(role: string): number | undefined;
  /** Create `username` for `role`, valid until `expiresAt`. */
  create(role: string, username: string, expiresAt: Date): Promise<DynamicAccount>;
  /** Move the account's own expiry, where the engine has one. */
  extend(username: string, expiresAt: Date): Promise<void>;
  /** Disable, disconnect and remove the account; no error when it is already gone. */
  revoke(username: string): Promise<void>;
  /** Accounts that exist with this engine's prefix. */
  listAccounts(): Promise<readonly string[]>;
  /** Rotate the admin secret this often (seconds); undefined: only on demand. */
  readonly rotateEverySeconds: number | undefined;
  /** The account the engine's admin connection uses (a PostgreSQL role, a Redis ACL user). */
  adminAccount(): string;
  /** Make `next` a valid secret of the admin account on the server; open connections stay up. */
  setAdminSecret(next: Secret): Promise<void>;
  /** Stop accepting `previous` (undefined: the URL's). Redis holds two passwords during a rotation; PostgreSQL one, so there it does nothing. */
  retireAdminSecret(previous: Secret | undefined): Promise<void>;
  /** True when a fresh connection authenticates as the admin account with `secret`. */
  checkAdminSecret(secret: Secret): Promise<boolean>;
  /** Set the password of an account the engine does not create (a legacy exception); PostgreSQL only. */
  setAccountPassword?(account: string, password: Secret): Promise<void>;
  close(): Promise<void>;
}

/** A plugin: `validate(config)` → `create(config)`. */
export interface EnginePlugin<C> {
  readonly type: 'postgres' | 'redis';
  /** Check a raw definition; throws ERR_CRED_ENGINE_CONFIG_INVALID naming the field. */
  validate(raw: unknown): C;
  /** `adminSecret` supplies the rotated admin secret; without it the URL's is used. */
  create(config: C, adminSecret?: AdminSecretSource): SecretEngine;
}

/** 32 random bytes as base64url: a password both engines accept unquoted. */
export function generatePassword(): Secret {
  return new Secret(randomBytes(32).toString('base64url'));
}

export const ENGINE_NAME = /^[a-z][a-z0-9_-]{0,62}$/;
/** Account prefixes: lowercase, so PostgreSQL never folds them. */
export const ACCOUNT_PREFIX = /^[a-z][a-z0-9_]{0,29}$/;
export const ROLE_NAME = /^[a-z][a-z0-9_-]{0,62}$/;

/** True for a name an engine gives its accounts: the prefix, then a lease id (24 lowercase hex). */
export function isAccountName(prefix: string, name: string): boolean {
  return name.length === prefix.length + 24 && name.startsWith(prefix) && /^[0-9a-f]{24}$/.test(name.slice(prefix.length));
}

export function invalid(engine: string, what: string): never {
  throw credentialErrors.error('ERR_CRED_ENGINE_CONFIG_INVALID', `engine \`${engine}\`: ${what}`);
}

/** Read a plain object or fail. */
export function objectOf(engine: string, field: string, v: unknown): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) invalid(engine, `\`${field}\` must be an object`);
  return v as Record<string, unknown>;
}

export function stringList(engine: string, field: string, v: unknown, pattern?: RegExp): string[] {
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string' || x === '' || (pattern !== undefined && !pattern.test(x)))) invalid(engine, `\`${field}\` must be a list of non-empty strings${pattern === undefined ? '' : ' of the allowed form'}`);
  return v as string[];
}

export function optionalSeconds(engine: string, field: string, v: unknown): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) invalid(engine, `\`${field}\` must be a positive integer of seconds`);
  return v;
}
