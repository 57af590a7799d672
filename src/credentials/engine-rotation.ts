/**
 * Rotation of the secret engines' own admin credentials (issue item 7: the
 * admin connection Writ uses is itself rotated by Writ), on a schedule and on
 * demand. Write-ahead like leases: the new secret is sealed into the store as
 * `next` before the database or cache is told, so a crash between the steps
 * leaves a secret Writ can still find; then it becomes `current`.
 *
 * In-flight issuance is never dropped: PostgreSQL checks a password only at
 * login and Redis keeps both passwords until the old one is retired, so open
 * connections carry on, and new ones read the current secret from the store
 * (every replica sees it there).
 */
import type { AuditActor, AuditSink, Clock, Secret } from '../kernel/index.ts';
import type { KeyEncryptionKey } from '../identity/index.ts';
import { credentialErrors } from './errors.ts';
import { generatePassword } from './engines/index.ts';
import type { AdminSecretSource, SecretEngine } from './engines/index.ts';
import type { EngineSecretRow, EngineSecretStore } from './ports.ts';
import { engineSecretContext, openSecret, sealSecret } from './sealed.ts';

/**
 * A `next` secret older than this belongs to a rotation that was interrupted.
 *
 * @example
 * const stale = Date.now() - Date.parse(row.nextAt) >= STALE_ROTATION_MS;
 */
export const STALE_ROTATION_MS = 5 * 60_000;

const SYSTEM: AuditActor = { type: 'system', id: 'writ' };

/** What a rotation did (never the secret). */
export interface EngineRotation {
  readonly engine: string;
  readonly type: 'postgres' | 'redis';
  readonly account: string;
  readonly rotatedAt: string;
  readonly trigger: 'admin' | 'schedule';
}

/** Where an engine's rotation stands, for status output. */
export interface EngineRotationStatus {
  readonly engine: string;
  readonly type: 'postgres' | 'redis';
  readonly account: string;
  /** Null when Writ never rotated it (the URL's secret is current). */
  readonly rotatedAt: string | null;
  readonly rotateEverySeconds: number | null;
  readonly nextRotationAt: string | null;
  readonly rotationPending: boolean;
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

/**
 * @example
 * const rotator = new EngineRotator({ store, kek, audit, clock });
 * const engines = buildEngines(defs, (name) => rotator.source(name));
 * rotator.attach(engines);
 * await rotator.rotate('main', 'admin', actor, correlationId);
 */
export class EngineRotator {
  readonly #store: EngineSecretStore;
  readonly #kek: KeyEncryptionKey;
  readonly #audit: AuditSink;
  readonly #clock: Clock;
  readonly #engines = new Map<string, SecretEngine>();
  /** A secret this replica set on the server and has not yet made `current` in the store. */
  readonly #inflight = new Map<string, Secret>();
  readonly #running = new Set<string>();

  constructor(deps: { store: EngineSecretStore; kek: KeyEncryptionKey; audit: AuditSink; clock: Clock }) {
    this.#store = deps.store;
    this.#kek = deps.kek;
    this.#audit = deps.audit;
    this.#clock = deps.clock;
  }

  /** The engines to rotate (built with {@link source}). */
  attach(engines: readonly SecretEngine[]): void {
    for (const e of engines) this.#engines.set(e.name, e);
  }

  /** The admin secret source of engine `name`: the secret in flight here, else the store's current (or next, after a refused login). */
  source(name: string): AdminSecretSource {
    return async (preferNext) => {
      const mine = this.#inflight.get(name);
      if (mine !== undefined) return mine;
      const row = await this.#store.getEngineSecret(name);
      if (row === undefined) return undefined;
      const pick = preferNext && row.next !== null ? row.next : row.current;
      return pick === null ? undefined : openSecret(this.#kek, pick, engineSecretContext(name));
    };
  }

  #engine(name: string): SecretEngine {
    const e = this.#engines.get(name);
    if (e === undefined) throw credentialErrors.error('ERR_CRED_ENGINE_NOT_FOUND', `no secret engine \`${name}\``);
    return e;
  }

  async status(): Promise<readonly EngineRotationStatus[]> {
    const out: EngineRotationStatus[] = [];
    for (const e of this.#engines.values()) {
      const row = await this.#store.getEngineSecret(e.name);
      const rotated = row !== undefined && row.current !== null ? row.rotatedAt : null;
      const every = e.rotateEverySeconds ?? null;
      const base = row?.rotatedAt;
      out.push({ engine: e.name, type: e.type, account: e.adminAccount(), rotatedAt: rotated, rotateEverySeconds: every, nextRotationAt: every === null || base === undefined ? null : iso(Date.parse(base) + every * 1000), rotationPending: row !== undefined && row.next !== null });
    }
    return out;
  }

  /**
   * Rotate engine `name`'s admin secret now. Refuses (409) while another
   * rotation of it is under way here or on another replica.
   */
  async rotate(name: string, trigger: 'admin' | 'schedule', by: AuditActor, correlationId: string): Promise<EngineRotation> {
    const engine = this.#engine(name);
    if (this.#running.has(name)) throw credentialErrors.error('ERR_CRED_ROTATION_IN_PROGRESS', `a rotation of engine \`${name}\` is under way`);
    this.#running.add(name);
    try {
      return await this.#rotate(engine, trigger, by, correlationId);
    } finally {
      this.#running.delete(name);
    }
  }

  async #rotate(engine: SecretEngine, trigger: 'admin' | 'schedule', by: AuditActor, correlationId: string): Promise<EngineRotation> {
    const name = engine.name;
    let row = await this.#store.ensureEngineSecret(name, iso(this.#clock.nowMs()));
    if (row.next !== null) row = await this.#recover(engine, row, correlationId);
    const previous = row.current === null ? undefined : openSecret(this.#kek, row.current, engineSecretContext(name));
    const next = generatePassword();
    const sealed = sealSecret(this.#kek, next, engineSecretContext(name));
    // Write-ahead: the store knows the new secret before the server does.
    const claimed = await this.#store.updateEngineSecret(name, row.revision, { next: sealed, nextAt: iso(this.#clock.nowMs()) });
    if (claimed === undefined) throw credentialErrors.error('ERR_CRED_ROTATION_IN_PROGRESS', `a rotation of engine \`${name}\` is under way`);
    const base = { engine: name, type: engine.type, account: engine.adminAccount(), trigger };
    try {
      await engine.setAdminSecret(next);
    } catch (err) {
      // The server refused: the old secret is still the one in force.
      await this.#store.updateEngineSecret(name, claimed.revision, { next: null, nextAt: null }).catch(() => undefined);
      await this.#audit.append({ action: 'engine.secret.rotation-failed', actor: by, target: { type: 'secret_engine', id: name }, outcome: 'failure', reasons: ['engine-refused'], correlationId, details: { ...base, error: (err as { code?: unknown }).code ?? 'unknown' } });
      throw err;
    }
    // New connections here use the new secret at once; other replicas read it from the store.
    this.#inflight.set(name, next);
    const rotatedAt = iso(this.#clock.nowMs());
    try {
      const promoted = await this.#store.updateEngineSecret(name, claimed.revision, { current: sealed, next: null, nextAt: null, rotatedAt });
      if (promoted === undefined) throw credentialErrors.error('ERR_CRED_ROTATION_IN_PROGRESS', `engine \`${name}\` changed while its secret was rotated`);
    } finally {
      this.#inflight.delete(name);
    }
    let retired = true;
    try {
      await engine.retireAdminSecret(previous);
    } catch {
      // The new secret is in force; the old one still works until the next rotation retires it.
      retired = false;
    }
    await this.#audit.append({ action: 'engine.secret.rotated', actor: by, target: { type: 'secret_engine', id: name }, outcome: 'success', correlationId, details: { ...base, rotatedAt, previousRetired: retired } });
    return { ...base, rotatedAt };
  }

  /**
   * A `next` secret left by an interrupted rotation: if the server accepts
   * it, it becomes current; if not, it is dropped. A fresh one is another
   * rotation still under way (409).
   */
  async #recover(engine: SecretEngine, row: EngineSecretRow, correlationId: string): Promise<EngineSecretRow> {
    const name = engine.name;
    if (row.next === null) return row;
    if (row.nextAt !== null && this.#clock.nowMs() - Date.parse(row.nextAt) < STALE_ROTATION_MS) throw credentialErrors.error('ERR_CRED_ROTATION_IN_PROGRESS', `a rotation of engine \`${name}\` is under way`);
    const next = openSecret(this.#kek, row.next, engineSecretContext(name));
    const accepted = await engine.checkAdminSecret(next);
    const patch = accepted ? { current: row.next, next: null, nextAt: null, rotatedAt: iso(this.#clock.nowMs()) } : { next: null, nextAt: null };
    const moved = await this.#store.updateEngineSecret(name, row.revision, patch);
    if (moved === undefined) throw credentialErrors.error('ERR_CRED_ROTATION_IN_PROGRESS', `a rotation of engine \`${name}\` is under way`);
    if (accepted) await engine.retireAdminSecret(row.current === null ? undefined : openSecret(this.#kek, row.current, engineSecretContext(name))).catch(() => undefined);
    await this.#audit.append({ action: 'engine.secret.recovered', actor: SYSTEM, target: { type: 'secret_engine', id: name }, outcome: 'success', reasons: [accepted ? 'next-secret-in-force' : 'next-secret-never-applied'], correlationId, details: { engine: name, type: engine.type, account: engine.adminAccount() } });
    return moved;
  }

  /** Rotate every engine whose schedule is due, and finish interrupted rotations; failures are reported, not thrown. */
  async rotateDue(correlationId: string, report: (engine: string, err: unknown) => void): Promise<readonly EngineRotation[]> {
    const out: EngineRotation[] = [];
    for (const engine of this.#engines.values()) {
      if (this.#running.has(engine.name)) continue;
      try {
        const row = await this.#store.ensureEngineSecret(engine.name, iso(this.#clock.nowMs()));
        const stale = row.next !== null && (row.nextAt === null || this.#clock.nowMs() - Date.parse(row.nextAt) >= STALE_ROTATION_MS);
        const every = engine.rotateEverySeconds;
        const due = every !== undefined && Date.parse(row.rotatedAt) + every * 1000 <= this.#clock.nowMs();
        if (due) out.push(await this.rotate(engine.name, 'schedule', SYSTEM, correlationId));
        else if (stale) await this.#recover(engine, row, correlationId);
      } catch (err) {
        if ((err as { code?: unknown }).code !== 'ERR_CRED_ROTATION_IN_PROGRESS') report(engine.name, err);
      }
    }
    return out;
  }
}
