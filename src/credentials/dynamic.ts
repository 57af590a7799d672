/**
 * Dynamic credentials: a lease is written first, the engine creates the
 * account named after it, then the lease becomes active. The password goes
 * back to the caller once, wrapped in a `Secret`; Writ keeps no copy.
 */
import type { AuditActor, Secret } from '../kernel/index.ts';
import { credentialErrors } from './errors.ts';
import { newLeaseId } from './lease-manager.ts';
import type { LeaseManager } from './lease-manager.ts';
import type { Lease } from './lease-port.ts';
import type { SecretEngine } from './engines/engine.ts';

/** What a caller asks for. */
export interface DynamicRequest {
  readonly engine: string;
  readonly role: string;
  readonly subject: string;
  readonly taskId?: string;
  readonly ttlMs: number;
  readonly actor: AuditActor;
  readonly correlationId: string;
}

/** What comes back, once. */
export interface DynamicCredential {
  readonly lease: Lease;
  readonly username: string;
  readonly password: Secret;
  readonly connection: Readonly<Record<string, string | number>>;
}

/**
 * @example
 * const dyn = new DynamicCredentials(leases, [pgEngine]);
 * const cred = await dyn.issue({ engine: 'main', role: 'reader', subject, ttlMs: 600_000, actor, correlationId });
 */
export class DynamicCredentials {
  readonly #leases: LeaseManager;
  readonly #engines = new Map<string, SecretEngine>();

  constructor(leases: LeaseManager, engines: readonly SecretEngine[]) {
    this.#leases = leases;
    for (const e of engines) {
      if (this.#engines.has(e.name)) throw new TypeError(`two engines are named ${e.name}`);
      this.#engines.set(e.name, e);
    }
    const revoker = async (lease: Lease): Promise<void> => {
      const engine = this.#engines.get(lease.handle.engine ?? '');
      const username = lease.handle.username;
      if (engine === undefined || username === undefined) return;
      await engine.revoke(username);
    };
    leases.setRevoker('postgres', revoker);
    leases.setRevoker('redis', revoker);
  }

  engines(): readonly SecretEngine[] {
    return [...this.#engines.values()];
  }

  engine(name: string): SecretEngine {
    const e = this.#engines.get(name);
    if (e === undefined) throw credentialErrors.error('ERR_CRED_ENGINE_NOT_FOUND', `no secret engine \`${name}\``);
    return e;
  }

  async issue(req: DynamicRequest): Promise<DynamicCredential> {
    const engine = this.engine(req.engine);
    if (!engine.roles().includes(req.role)) throw credentialErrors.error('ERR_CRED_ROLE_NOT_FOUND', `engine \`${engine.name}\` has no role \`${req.role}\``);
    const id = newLeaseId();
    const username = `${engine.prefix}${id}`;
    const roleMax = engine.roleMaxTtlMs(req.role);
    // Write-ahead: the lease names the account before the account exists.
    const lease = await this.#leases.open({
      id,
      kind: engine.type,
      subject: req.subject,
      ...(req.taskId === undefined ? {} : { taskId: req.taskId }),
      audience: `${engine.type}:${engine.name}`,
      ttlMs: req.ttlMs,
      ...(roleMax === undefined ? {} : { maxTtlMs: roleMax }),
      handle: { engine: engine.name, role: req.role, username },
      correlationId: req.correlationId,
      actor: req.actor,
    });
    let account;
    try {
      // The account's own expiry is the lease's maximum: renewals move it, the reaper ends it sooner.
      account = await engine.create(req.role, username, new Date(lease.expiresAt));
    } catch (e) {
      await this.#leases.revoke(id, 'engine-create-failed', req.correlationId).catch(() => undefined);
      throw e;
    }
    const active = await this.#leases.activate(id, req.correlationId);
    return { lease: active, username: account.username, password: account.password, connection: account.connection };
  }

  /** Renew a dynamic credential's lease and move the account's own expiry with it. */
  async renew(leaseId: string, ttlMs: number, correlationId: string, by: AuditActor): Promise<Lease> {
    const lease = await this.#leases.renew(leaseId, ttlMs, correlationId, by);
    const engine = this.#engines.get(lease.handle.engine ?? '');
    const username = lease.handle.username;
    if (engine !== undefined && username !== undefined) await engine.extend(username, new Date(lease.expiresAt));
    return lease;
  }

  async close(): Promise<void> {
    await Promise.all([...this.#engines.values()].map((e) => e.close()));
  }
}
