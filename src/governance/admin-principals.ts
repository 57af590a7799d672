/**
 * Admin principals and their credentials.
 *
 * A credential is `writ.<id>.<secret>`: the id (64 random bits, hex) finds the
 * principal, the secret (256 random bits, base64url) proves it. Only
 * SHA-256(secret) is stored — the secret has full entropy, so a slow hash adds
 * nothing — and it is compared in constant time.
 */
import { randomBytes, createHash } from 'node:crypto';
import { Secret, constantTimeEqual } from '../kernel/index.ts';
import type { AuditSink, Clock } from '../kernel/index.ts';
import type { AdminPrincipalRow, AdminPrincipalStore } from './ports.ts';
import { governanceErrors } from './errors.ts';
import { isAdminRole } from './roles.ts';
import type { AdminRole } from './roles.ts';

/** An authenticated admin principal (never carries the secret). */
export interface AdminPrincipal {
  readonly id: string;
  readonly name: string;
  readonly role: AdminRole;
  readonly createdAt: string;
  readonly createdBy: string;
  readonly revokedAt: string | null;
}

const TOKEN = /^writ\.([0-9a-f]{16})\.([A-Za-z0-9_-]{43})$/;
const NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;
const DUMMY_HASH = createHash('sha256').update('writ-no-such-principal').digest('hex');

function hashSecret(secret: string): string {
  return createHash('sha256').update(secret, 'utf8').digest('hex');
}

function newCredential(): { id: string; secret: string; token: Secret } {
  const id = randomBytes(8).toString('hex');
  const secret = randomBytes(32).toString('base64url');
  return { id, secret, token: new Secret(`writ.${id}.${secret}`) };
}

function toPrincipal(row: AdminPrincipalRow): AdminPrincipal {
  if (!isAdminRole(row.role)) throw governanceErrors.error('ERR_GOV_ROLE_INVALID', `stored principal \`${row.id}\` has unknown role \`${row.role}\``);
  return { id: row.id, name: row.name, role: row.role, createdAt: row.createdAt, createdBy: row.createdBy, revokedAt: row.revokedAt };
}

/** Who asked, for the audit trail of principal changes. */
export interface ChangeContext {
  readonly actor: { readonly type: 'admin' | 'system'; readonly id: string; readonly name?: string; readonly role?: string; readonly ip?: string };
  readonly correlationId: string;
}

/**
 * @example
 * const admins = new AdminPrincipals(store, auditSink, systemClock);
 * const { principal, token } = await admins.create({ name: 'ci-bot', role: 'operator' }, ctx);
 * const who = await admins.authenticate(`Bearer ${token.reveal()}`);
 */
export class AdminPrincipals {
  readonly #store: AdminPrincipalStore;
  readonly #audit: AuditSink;
  readonly #clock: Clock;

  constructor(store: AdminPrincipalStore, audit: AuditSink, clock: Clock) {
    this.#store = store;
    this.#audit = audit;
    this.#clock = clock;
  }

  /**
   * Resolve an `Authorization` header to an active principal. Every failure is
   * the same 401 so a caller learns nothing about which part was wrong.
   */
  async authenticate(authorization: string | undefined): Promise<AdminPrincipal> {
    const unauthenticated = () => governanceErrors.error('ERR_GOV_UNAUTHENTICATED', 'admin credential is missing, malformed, unknown or revoked');
    if (authorization === undefined) throw unauthenticated();
    const m = /^Bearer ([^\s]+)$/i.exec(authorization.trim());
    const token = m?.[1];
    const parts = token === undefined ? undefined : TOKEN.exec(token);
    const id = parts?.[1];
    const secret = parts?.[2];
    if (id === undefined || secret === undefined) throw unauthenticated();
    const row = await this.#store.getPrincipal(id);
    // Compare even when the id is unknown, so timing does not tell ids apart.
    const match = constantTimeEqual(hashSecret(secret), row?.tokenHash ?? DUMMY_HASH);
    if (row === undefined || row.revokedAt !== null || !match) throw unauthenticated();
    return toPrincipal(row);
  }

  /** Create a principal; the credential is returned once and never stored. */
  async create(input: { name: string; role: string }, ctx: ChangeContext, hooks: { beforeInsert?: (token: Secret) => void } = {}): Promise<{ principal: AdminPrincipal; token: Secret }> {
    if (!NAME.test(input.name)) throw governanceErrors.error('ERR_GOV_PRINCIPAL_NAME_INVALID', `principal name \`${input.name.slice(0, 64)}\` must be 1-63 of a-z, 0-9, dot, dash, underscore, starting with a letter or digit`);
    if (!isAdminRole(input.role)) throw governanceErrors.error('ERR_GOV_ROLE_INVALID', `role \`${input.role}\` is not one of admin, operator, approver, auditor`);
    const cred = newCredential();
    const row: AdminPrincipalRow = {
      id: cred.id,
      name: input.name,
      role: input.role,
      tokenHash: hashSecret(cred.secret),
      createdAt: this.#clock.now().toISOString(),
      createdBy: ctx.actor.id,
      revokedAt: null,
    };
    hooks.beforeInsert?.(cred.token);
    if (!(await this.#store.insertPrincipal(row))) {
      throw governanceErrors.error('ERR_GOV_PRINCIPAL_EXISTS', `an admin principal named \`${input.name}\` already exists`);
    }
    await this.#audit.append({
      action: 'admin.principal.created',
      actor: ctx.actor,
      target: { type: 'admin_principal', id: row.id, name: row.name },
      outcome: 'success',
      correlationId: ctx.correlationId,
      details: { role: row.role },
    });
    return { principal: toPrincipal(row), token: cred.token };
  }

  /** Issue a new credential for a principal; the old one stops working at once. */
  async rotate(id: string, ctx: ChangeContext): Promise<{ principal: AdminPrincipal; token: Secret }> {
    const cred = newCredential();
    // The id is part of the credential, so rotation keeps the id and swaps the secret.
    const token = new Secret(`writ.${id}.${cred.secret}`);
    if (!(await this.#store.setPrincipalTokenHash(id, hashSecret(cred.secret)))) {
      throw governanceErrors.error('ERR_GOV_PRINCIPAL_NOT_FOUND', `no active admin principal has id \`${id}\``);
    }
    const row = await this.#store.getPrincipal(id);
    if (row === undefined) throw governanceErrors.error('ERR_GOV_PRINCIPAL_NOT_FOUND', `no active admin principal has id \`${id}\``);
    await this.#audit.append({
      action: 'admin.principal.rotated',
      actor: ctx.actor,
      target: { type: 'admin_principal', id, name: row.name },
      outcome: 'success',
      correlationId: ctx.correlationId,
    });
    return { principal: toPrincipal(row), token };
  }

  /** Revoke a principal; refuses to remove the last active admin. */
  async revoke(id: string, ctx: ChangeContext): Promise<void> {
    const result = await this.#store.revokePrincipal(id, this.#clock.now().toISOString(), 'admin');
    if (result === 'not-found') throw governanceErrors.error('ERR_GOV_PRINCIPAL_NOT_FOUND', `no active admin principal has id \`${id}\``);
    if (result === 'last-of-role') throw governanceErrors.error('ERR_GOV_LAST_ADMIN', `principal \`${id}\` is the last active admin and cannot be revoked`);
    await this.#audit.append({
      action: 'admin.principal.revoked',
      actor: ctx.actor,
      target: { type: 'admin_principal', id },
      outcome: 'success',
      correlationId: ctx.correlationId,
    });
  }

  async list(): Promise<AdminPrincipal[]> {
    return (await this.#store.listPrincipals()).map(toPrincipal);
  }

  async get(id: string): Promise<AdminPrincipal> {
    const row = await this.#store.getPrincipal(id);
    if (row === undefined) throw governanceErrors.error('ERR_GOV_PRINCIPAL_NOT_FOUND', `no admin principal has id \`${id}\``);
    return toPrincipal(row);
  }

  /**
   * On first start (no principal at all), create the `bootstrap` admin.
   * `persist` receives its credential BEFORE the principal exists, so a crash
   * can never leave an admin whose credential was lost; `unpersist` undoes it
   * when another replica bootstrapped first. Returns the principal when this
   * call created it.
   */
  async bootstrap(correlationId: string, persist: (token: Secret) => void, unpersist: () => void): Promise<AdminPrincipal | undefined> {
    if ((await this.#store.listPrincipals()).length > 0) return undefined;
    try {
      const { principal } = await this.create({ name: 'bootstrap', role: 'admin' }, { actor: { type: 'system', id: 'writ' }, correlationId }, { beforeInsert: persist });
      return principal;
    } catch (e) {
      if (governanceErrors.is(e, 'ERR_GOV_PRINCIPAL_EXISTS')) {
        unpersist();
        return undefined;
      }
      throw e;
    }
  }
}
