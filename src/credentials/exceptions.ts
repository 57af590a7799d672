/**
 * Legacy exceptions (issue item 8): a static secret Writ cannot replace is
 * registered with an owner (team and a human contact), a justification,
 * compensating controls, the OWASP NHI Top 10 risks it accepts and an expiry.
 * When the account is a PostgreSQL role reachable through a secret engine,
 * Writ rotates its password on a schedule and on demand (write-ahead: the
 * new password is sealed into the store before `ALTER ROLE`), keeps it
 * envelope-encrypted under the KEK, and never logs or audits it. Expired
 * exceptions raise findings: an audit event once, and the findings list.
 */
import { randomBytes } from 'node:crypto';
import type { AuditActor, AuditSink, Clock, Secret } from '../kernel/index.ts';
import type { KeyEncryptionKey } from '../identity/index.ts';
import { credentialErrors } from './errors.ts';
import { generatePassword } from './engines/index.ts';
import type { SecretEngine } from './engines/index.ts';
import type { ExceptionOwner, ExceptionStore, LegacyException } from './ports.ts';
import { exceptionSecretContext, openSecret, sealSecret } from './sealed.ts';

/**
 * The OWASP Top 10 Non-Human Identities Risks, 2025 edition
 * (https://owasp.org/www-project-non-human-identities-top-10/2025/).
 *
 * @example
 * OWASP_NHI_TOP10.NHI7; // 'Long-Lived Secrets'
 */
export const OWASP_NHI_TOP10: Readonly<Record<string, string>> = Object.freeze({
  NHI1: 'Improper Offboarding',
  NHI2: 'Secret Leakage',
  NHI3: 'Vulnerable Third-Party NHI',
  NHI4: 'Insecure Authentication',
  NHI5: 'Overprivileged NHI',
  NHI6: 'Insecure Cloud Deployment Configurations',
  NHI7: 'Long-Lived Secrets',
  NHI8: 'Environment Isolation',
  NHI9: 'NHI Reuse',
  NHI10: 'Human Use of NHI',
});

/** Default rotation interval of an exception's password: 30 days. */
export const DEFAULT_EXCEPTION_ROTATION_SECONDS = 30 * 86_400;
/** Longest an exception may be accepted for before it must be renewed. */
export const MAX_EXCEPTION_TTL_MS = 366 * 86_400_000;

const NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;
const RISK = /^NHI([1-9]|10)(:2025)?$/i;
const EMAIL = /^[^\s@]{1,64}@[^\s@.]+(\.[^\s@.]+)+$/;
const SYSTEM: AuditActor = { type: 'system', id: 'writ' };

/** What registering an exception takes. */
export interface ExceptionInput {
  readonly name: string;
  readonly account: string;
  readonly system?: string;
  readonly engine?: string;
  readonly rotateEverySeconds?: number;
  readonly owner: ExceptionOwner;
  readonly justification: string;
  readonly compensatingControls: readonly string[];
  readonly risks: readonly string[];
  readonly expiresAt: string;
}

/** What renewing an exception takes. */
export interface ExceptionRenewal {
  readonly expiresAt: string;
  readonly justification?: string;
  readonly compensatingControls?: readonly string[];
}

/** A finding about an exception: it expired, or Writ could not rotate its secret. */
export interface ExceptionFinding {
  readonly id: string;
  readonly type: 'exception-expired' | 'exception-rotation-failing';
  readonly severity: 'high' | 'medium';
  readonly exceptionId: string;
  readonly name: string;
  readonly account: string;
  readonly owner: ExceptionOwner;
  readonly risks: readonly string[];
  readonly since: string;
  readonly detail: string;
}

/** What a sweep did. */
export interface ExceptionSweep {
  readonly findingsRaised: number;
  readonly rotated: number;
  readonly failed: number;
}

/**
 * The exception as the API and the audit log show it: everything but the secret.
 *
 * @example
 * reply.send(exceptionView(exc)); // { id, name, account, owner, risks: [{ id: 'NHI7', name: 'Long-Lived Secrets' }], hasSecret, … }
 */
export function exceptionView(e: LegacyException): Record<string, unknown> {
  return {
    id: e.id,
    name: e.name,
    account: e.account,
    system: e.system,
    engine: e.engine,
    rotateEverySeconds: e.rotateEverySeconds,
    owner: { ...e.owner },
    justification: e.justification,
    compensatingControls: [...e.compensatingControls],
    risks: e.risks.map((id) => ({ id, name: OWASP_NHI_TOP10[id] ?? id })),
    expiresAt: e.expiresAt,
    createdAt: e.createdAt,
    createdBy: e.createdBy,
    updatedAt: e.updatedAt,
    revision: e.revision,
    lastRotatedAt: e.lastRotatedAt,
    nextRotationAt: e.nextRotationAt,
    lastRotationError: e.lastRotationError,
    expiredFindingAt: e.expiredFindingAt,
    hasSecret: e.secret !== null,
    rotationPending: e.pendingSecret !== null,
  };
}

function bad(message: string): never {
  throw credentialErrors.error('ERR_CRED_EXCEPTION_INVALID', message);
}

function text(field: string, v: unknown, max: number): string {
  if (typeof v !== 'string' || v.trim() === '' || v.length > max) bad(`\`${field}\` must be non-empty text of at most ${max} characters`);
  return v.trim();
}

/**
 * Normalize risk ids (`nhi7`, `NHI7:2025` → `NHI7`), refusing anything outside the Top 10.
 *
 * @example
 * normalizeRisks(['nhi7', 'NHI2:2025']); // ['NHI2', 'NHI7']
 */
export function normalizeRisks(raw: unknown): string[] {
  if (!Array.isArray(raw) || raw.length === 0) bad('`risks` must list at least one OWASP NHI Top 10 risk id (NHI1 … NHI10)');
  const out: string[] = [];
  for (const r of raw) {
    if (typeof r !== 'string' || !RISK.test(r.trim())) bad(`\`risks\`: \`${String(r).slice(0, 32)}\` is not an OWASP NHI Top 10 (2025) risk id (NHI1 … NHI10)`);
    const id = r.trim().toUpperCase().replace(/:2025$/, '');
    if (!out.includes(id)) out.push(id);
  }
  return out.sort((a, b) => Number(a.slice(3)) - Number(b.slice(3)));
}

function controls(raw: unknown): string[] {
  if (!Array.isArray(raw) || raw.length === 0 || raw.length > 32) bad('`compensatingControls` must list 1 to 32 controls');
  return raw.map((c, i) => text(`compensatingControls[${i}]`, c, 512));
}

/**
 * @example
 * const exceptions = new ExceptionService({ store, engine: (n) => dynamic.engines().find((e) => e.name === n), kek, audit, clock });
 * const exc = await exceptions.create({ name: 'billing-legacy', account: 'billing_app', engine: 'main', owner, justification, compensatingControls, risks: ['NHI2', 'NHI7'], expiresAt }, actor, cid);
 * await exceptions.rotate(exc.id, 'admin', actor, cid);
 */
export class ExceptionService {
  readonly #store: ExceptionStore;
  readonly #engine: (name: string) => SecretEngine | undefined;
  readonly #kek: KeyEncryptionKey;
  readonly #audit: AuditSink;
  readonly #clock: Clock;
  readonly #running = new Set<string>();

  constructor(deps: { store: ExceptionStore; engine: (name: string) => SecretEngine | undefined; kek: KeyEncryptionKey; audit: AuditSink; clock: Clock }) {
    this.#store = deps.store;
    this.#engine = deps.engine;
    this.#kek = deps.kek;
    this.#audit = deps.audit;
    this.#clock = deps.clock;
  }

  #expiry(raw: unknown, now: number): string {
    const ms = typeof raw === 'string' && /^\d{4}-\d{2}-\d{2}(T[\d:.]+(Z|[+-]\d{2}:\d{2}))?$/.test(raw) ? Date.parse(raw) : Number.NaN;
    if (Number.isNaN(ms)) bad('`expiresAt` must be an ISO 8601 date or time');
    if (ms <= now) bad('`expiresAt` must be in the future');
    if (ms - now > MAX_EXCEPTION_TTL_MS) bad(`\`expiresAt\` must be at most ${MAX_EXCEPTION_TTL_MS / 86_400_000} days away; renew the exception when it ends`);
    return new Date(ms).toISOString();
  }

  #rotatingEngine(name: string): { engine: SecretEngine; setPassword: (account: string, password: Secret) => Promise<void> } {
    const engine = this.#engine(name);
    if (engine === undefined) throw credentialErrors.error('ERR_CRED_ENGINE_NOT_FOUND', `no secret engine \`${name}\``);
    const setPassword = engine.setAccountPassword?.bind(engine);
    if (engine.type !== 'postgres' || setPassword === undefined) bad(`engine \`${name}\` is a ${engine.type} engine; writ rotates exception passwords through PostgreSQL engines only`);
    return { engine, setPassword };
  }

  async create(input: ExceptionInput, by: AuditActor, correlationId: string): Promise<LegacyException> {
    const now = this.#clock.nowMs();
    const name = typeof input.name === 'string' && NAME.test(input.name) ? input.name : bad('`name` must be lowercase letters, digits, `.`, `_` or `-` (at most 63)');
    const account = text('account', input.account, 63);
    const team = text('owner.team', input.owner?.team, 128);
    const contact = text('owner.contact', input.owner?.contact, 320);
    if (!EMAIL.test(contact)) bad('`owner.contact` must be the email address of a person who answers for the exception');
    const justification = text('justification', input.justification, 4096);
    const compensatingControls = controls(input.compensatingControls);
    const risks = normalizeRisks(input.risks);
    const expiresAt = this.#expiry(input.expiresAt, now);
    let engine: string | null = null;
    let every: number | null = null;
    if (input.engine !== undefined) {
      const { engine: e } = this.#rotatingEngine(input.engine);
      // Accounts the engine creates have leases; its admin is rotated as the engine's own secret.
      if (account.startsWith(e.prefix) || account === e.adminAccount()) throw credentialErrors.error('ERR_CRED_ACCOUNT_NOT_ROTATABLE', `\`${account}\` is ${account === e.adminAccount() ? 'the admin role' : 'a dynamic account'} of engine \`${e.name}\`; it cannot be a legacy exception`);
      engine = e.name;
      every = input.rotateEverySeconds ?? DEFAULT_EXCEPTION_ROTATION_SECONDS;
      if (!Number.isSafeInteger(every) || every < 60 || every > 366 * 86_400) bad('`rotateEverySeconds` must be a whole number of seconds from 60 to 366 days');
    } else if (input.rotateEverySeconds !== undefined) bad('`rotateEverySeconds` needs an `engine` to rotate through');
    const system = input.system === undefined && engine !== null ? `postgres:${engine}` : text('system', input.system, 256);
    const at = new Date(now).toISOString();
    const exc: LegacyException = {
      id: `exc_${randomBytes(12).toString('hex')}`,
      name,
      account,
      system,
      engine,
      rotateEverySeconds: every,
      owner: { team, contact },
      justification,
      compensatingControls,
      risks,
      expiresAt,
      createdAt: at,
      createdBy: `${by.type}:${by.id}`,
      updatedAt: at,
      revision: 1,
      lastRotatedAt: null,
      nextRotationAt: every === null ? null : new Date(now + every * 1000).toISOString(),
      lastRotationError: null,
      expiredFindingAt: null,
      secret: null,
      pendingSecret: null,
    };
    if (!(await this.#store.insertException(exc))) throw credentialErrors.error('ERR_CRED_EXCEPTION_CONFLICT', engine === null ? `an exception named \`${name}\` exists` : `an exception named \`${name}\`, or one for \`${account}\` on engine \`${engine}\`, exists`);
    await this.#event('exception.created', exc, by, correlationId);
    return exc;
  }

  async get(id: string): Promise<LegacyException> {
    const e = await this.#store.getException(id);
    if (e === undefined) throw credentialErrors.error('ERR_CRED_EXCEPTION_NOT_FOUND', `no exception \`${id}\``);
    return e;
  }

  list(): Promise<readonly LegacyException[]> {
    return this.#store.listExceptions();
  }

  /** Extend an exception (it must be re-justified to stay accepted); clears its expiry finding. */
  async renew(id: string, r: ExceptionRenewal, by: AuditActor, correlationId: string): Promise<LegacyException> {
    const cur = await this.get(id);
    const now = this.#clock.nowMs();
    const expiresAt = this.#expiry(r.expiresAt, now);
    const patch = {
      expiresAt,
      expiredFindingAt: null,
      updatedAt: new Date(now).toISOString(),
      ...(r.justification === undefined ? {} : { justification: text('justification', r.justification, 4096) }),
      ...(r.compensatingControls === undefined ? {} : { compensatingControls: controls(r.compensatingControls) }),
    };
    const next = await this.#store.updateException(id, cur.revision, patch);
    if (next === undefined) throw credentialErrors.error('ERR_CRED_ROTATION_IN_PROGRESS', `exception \`${id}\` changed while it was renewed; retry`);
    await this.#event('exception.renewed', next, by, correlationId, { previousExpiresAt: cur.expiresAt });
    return next;
  }

  async delete(id: string, by: AuditActor, correlationId: string): Promise<LegacyException> {
    const cur = await this.get(id);
    if (!(await this.#store.deleteException(id))) throw credentialErrors.error('ERR_CRED_EXCEPTION_NOT_FOUND', `no exception \`${id}\``);
    await this.#event('exception.deleted', cur, by, correlationId);
    return cur;
  }

  /** The current secret, for the account's owner to install; audited, never logged. */
  async reveal(id: string, by: AuditActor, correlationId: string): Promise<{ exception: LegacyException; password: Secret }> {
    const exc = await this.get(id);
    if (exc.secret === null) throw credentialErrors.error('ERR_CRED_EXCEPTION_NO_SECRET', `writ has not rotated the secret of exception \`${id}\` yet`);
    const password = openSecret(this.#kek, exc.secret, exceptionSecretContext(exc.id));
    await this.#event('exception.secret.revealed', exc, by, correlationId);
    return { exception: exc, password };
  }

  /**
   * Rotate the account's password through its engine now. Write-ahead: the
   * new password is sealed into the row (`pendingSecret`) before `ALTER
   * ROLE`; an interrupted rotation re-applies that same password (setting it
   * twice is harmless), so the store never loses the password in force.
   */
  async rotate(id: string, trigger: 'admin' | 'schedule', by: AuditActor, correlationId: string): Promise<LegacyException> {
    if (this.#running.has(id)) throw credentialErrors.error('ERR_CRED_ROTATION_IN_PROGRESS', `a rotation of exception \`${id}\` is under way`);
    this.#running.add(id);
    try {
      return await this.#rotate(id, trigger, by, correlationId);
    } finally {
      this.#running.delete(id);
    }
  }

  async #rotate(id: string, trigger: 'admin' | 'schedule', by: AuditActor, correlationId: string): Promise<LegacyException> {
    const exc = await this.get(id);
    if (exc.engine === null || exc.rotateEverySeconds === null) throw credentialErrors.error('ERR_CRED_EXCEPTION_NOT_ROTATABLE', `exception \`${id}\` names no PostgreSQL engine; writ cannot rotate \`${exc.account}\``);
    const { setPassword } = this.#rotatingEngine(exc.engine);
    const ctx = exceptionSecretContext(exc.id);
    let claimed = exc;
    let password: Secret;
    if (exc.pendingSecret !== null) {
      password = openSecret(this.#kek, exc.pendingSecret, ctx);
    } else {
      password = generatePassword();
      const row = await this.#store.updateException(id, exc.revision, { pendingSecret: sealSecret(this.#kek, password, ctx) });
      if (row === undefined) throw credentialErrors.error('ERR_CRED_ROTATION_IN_PROGRESS', `a rotation of exception \`${id}\` is under way`);
      claimed = row;
    }
    const details = { account: exc.account, engine: exc.engine, trigger };
    try {
      await setPassword(exc.account, password);
    } catch (err) {
      const code = String((err as { code?: unknown }).code ?? 'unknown');
      // The role kept its old password. A pending password this call created is
      // forgotten; one it found (another rotation's) is left for that rotation.
      const patch = { lastRotationError: code, updatedAt: new Date(this.#clock.nowMs()).toISOString(), ...(exc.pendingSecret === null ? { pendingSecret: null } : {}) };
      await this.#store.updateException(id, claimed.revision, patch).catch(() => undefined);
      await this.#audit.append({ action: 'exception.secret.rotation-failed', actor: by, target: { type: 'legacy_exception', id }, outcome: 'failure', reasons: ['engine-refused'], correlationId, details: { ...details, name: exc.name, error: code } });
      throw err;
    }
    const sealed = claimed.pendingSecret;
    let final: LegacyException | undefined;
    for (let row: LegacyException | undefined = claimed, tries = 0; row !== undefined && final === undefined && tries < 5; tries++) {
      // Promote only the password just applied: if the row moved (a renewal, or
      // another replica re-applying the same pending password), retry on the new revision.
      if (row.pendingSecret === null || sealed === null || row.pendingSecret.ciphertext !== sealed.ciphertext) {
        final = row;
        break;
      }
      const now = this.#clock.nowMs();
      final = await this.#store.updateException(id, row.revision, {
        secret: sealed,
        pendingSecret: null,
        lastRotatedAt: new Date(now).toISOString(),
        nextRotationAt: new Date(now + exc.rotateEverySeconds * 1000).toISOString(),
        lastRotationError: null,
        updatedAt: new Date(now).toISOString(),
      });
      if (final === undefined) row = await this.#store.getException(id);
    }
    if (final === undefined) throw credentialErrors.error('ERR_CRED_ROTATION_IN_PROGRESS', `exception \`${id}\` kept changing while its password was rotated; the pending password is re-applied by the next sweep`);
    await this.#event('exception.secret.rotated', final, by, correlationId, details);
    return final;
  }

  /** Findings now: expired exceptions and exceptions whose last rotation failed. */
  async findings(): Promise<readonly ExceptionFinding[]> {
    const now = this.#clock.nowMs();
    const out: ExceptionFinding[] = [];
    for (const e of await this.#store.listExceptions()) {
      const base = { exceptionId: e.id, name: e.name, account: e.account, owner: e.owner, risks: e.risks };
      if (Date.parse(e.expiresAt) <= now) out.push({ ...base, id: `${e.id}:expired`, type: 'exception-expired', severity: 'high', since: e.expiresAt, detail: `the accepted risk of \`${e.account}\` (${e.risks.join(', ')}) lapsed at ${e.expiresAt}; renew it with a fresh justification or retire the secret` });
      if (e.lastRotationError !== null) out.push({ ...base, id: `${e.id}:rotation-failing`, type: 'exception-rotation-failing', severity: 'medium', since: e.updatedAt, detail: `the last rotation of \`${e.account}\` failed (${e.lastRotationError})` });
    }
    return out;
  }

  /**
   * One scheduled pass: raise a finding (audit event, once per expiry) for
   * each newly expired exception, and rotate every password that is due.
   * Rotation failures are recorded on the exception and reported, not thrown.
   */
  async sweep(correlationId: string, report: (id: string, err: unknown) => void = () => undefined): Promise<ExceptionSweep> {
    const now = this.#clock.nowMs();
    let findingsRaised = 0;
    let rotated = 0;
    let failed = 0;
    for (const e of await this.#store.listExceptions()) {
      if (Date.parse(e.expiresAt) <= now && e.expiredFindingAt === null) {
        const raised = await this.#store.updateException(e.id, e.revision, { expiredFindingAt: new Date(now).toISOString() });
        if (raised !== undefined) {
          findingsRaised++;
          await this.#audit.append({ action: 'exception.expired', actor: SYSTEM, target: { type: 'legacy_exception', id: e.id }, outcome: 'failure', reasons: ['exception-expired'], correlationId, details: { ...exceptionView(raised), finding: 'exception-expired', severity: 'high' } });
        }
      }
      const due = e.nextRotationAt !== null && Date.parse(e.nextRotationAt) <= now;
      if (e.engine !== null && (due || e.pendingSecret !== null) && !this.#running.has(e.id)) {
        try {
          await this.rotate(e.id, 'schedule', SYSTEM, correlationId);
          rotated++;
        } catch (err) {
          if ((err as { code?: unknown }).code === 'ERR_CRED_ROTATION_IN_PROGRESS') continue;
          failed++;
          report(e.id, err);
        }
      }
    }
    return { findingsRaised, rotated, failed };
  }

  async #event(action: string, e: LegacyException, actor: AuditActor, correlationId: string, extra: Record<string, unknown> = {}): Promise<void> {
    // The view carries no secret, sealed or not.
    await this.#audit.append({ action, actor, target: { type: 'legacy_exception', id: e.id }, outcome: 'success', correlationId, details: { ...exceptionView(e), ...extra } });
  }
}
