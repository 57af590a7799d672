/**
 * Tasks: the unit of work credentials are bound to. Completing or expiring a
 * task revokes every lease bound to it and writes a revocation receipt (what
 * was revoked, when, by whom) to the audit log.
 */
import { randomBytes } from 'node:crypto';
import type { AuditActor, AuditSink, Clock } from '../kernel/index.ts';
import { credentialErrors } from './errors.ts';
import type { LeaseManager } from './lease-manager.ts';
import type { Task, TaskStore } from './ports.ts';

const SCOPE = /^[\x21\x23-\x5b\x5d-\x7e]{1,256}$/; // RFC 6749 §3.3 scope-token
const SYSTEM: AuditActor = { type: 'system', id: 'writ' };

/** What starting a task takes. */
export interface StartTaskRequest {
  readonly owner: string;
  readonly description?: string;
  readonly scopes?: readonly string[];
  /** Lifetime from now. */
  readonly ttlMs: number;
}

/** What a completed or expired task revoked: the receipt. */
export interface RevocationReceipt {
  readonly task: Task;
  readonly revoked: readonly { leaseId: string; kind: string; subject: string; revokedAt: string | null }[];
}

function actorId(a: AuditActor): string {
  return `${a.type}:${a.id}`;
}

/**
 * @example
 * const tasks = new TaskService({ store, leases, audit, clock, maxTtlMs: 86_400_000 });
 * const task = await tasks.start({ owner: 'spiffe://example.org/ci', ttlMs: 3_600_000 }, actor, cid);
 * await tasks.complete(task.id, actor, cid);
 */
export class TaskService {
  readonly #store: TaskStore;
  readonly #leases: LeaseManager;
  readonly #audit: AuditSink;
  readonly #clock: Clock;
  readonly #maxTtlMs: number;

  constructor(deps: { store: TaskStore; leases: LeaseManager; audit: AuditSink; clock: Clock; maxTtlMs: number }) {
    this.#store = deps.store;
    this.#leases = deps.leases;
    this.#audit = deps.audit;
    this.#clock = deps.clock;
    this.#maxTtlMs = deps.maxTtlMs;
  }

  async start(req: StartTaskRequest, by: AuditActor, correlationId: string): Promise<Task> {
    const owner = req.owner.trim();
    if (owner === '' || owner.length > 2048) throw credentialErrors.error('ERR_CRED_TASK_INVALID', 'a task needs an owner (a SPIFFE ID or principal) of at most 2048 characters');
    if (!Number.isSafeInteger(req.ttlMs) || req.ttlMs <= 0 || req.ttlMs > this.#maxTtlMs) throw credentialErrors.error('ERR_CRED_TASK_INVALID', `a task deadline must be in the future and at most ${Math.floor(this.#maxTtlMs / 1000)} s away`);
    const scopes = [...new Set(req.scopes ?? [])];
    for (const s of scopes) if (!SCOPE.test(s)) throw credentialErrors.error('ERR_CRED_TASK_INVALID', `scope \`${s.slice(0, 64)}\` is not an OAuth scope token`);
    const description = (req.description ?? '').slice(0, 1024);
    const now = this.#clock.nowMs();
    const task: Task = {
      id: `task_${randomBytes(12).toString('hex')}`,
      owner,
      description,
      scopes,
      state: 'active',
      createdAt: new Date(now).toISOString(),
      deadline: new Date(now + req.ttlMs).toISOString(),
      endedAt: null,
      endedBy: null,
    };
    await this.#store.insertTask(task);
    await this.#audit.append({ action: 'task.started', actor: by, target: { type: 'task', id: task.id }, outcome: 'success', correlationId, details: { owner, scopes, deadline: task.deadline, description } });
    return task;
  }

  async get(id: string): Promise<Task> {
    const task = await this.#store.getTask(id);
    if (task === undefined) throw credentialErrors.error('ERR_CRED_TASK_NOT_FOUND', `no task \`${id}\``);
    return task;
  }

  /** Complete a task: revoke what is bound to it and audit the receipt. */
  async complete(id: string, by: AuditActor, correlationId: string): Promise<RevocationReceipt> {
    return this.#end(id, 'completed', by, correlationId);
  }

  async #end(id: string, state: 'completed' | 'expired', by: AuditActor, correlationId: string): Promise<RevocationReceipt> {
    const at = new Date(this.#clock.nowMs()).toISOString();
    const task = await this.#store.endTask(id, state, at, actorId(by));
    if (task === undefined) {
      const cur = await this.#store.getTask(id);
      if (cur === undefined) throw credentialErrors.error('ERR_CRED_TASK_NOT_FOUND', `no task \`${id}\``);
      throw credentialErrors.error('ERR_CRED_TASK_NOT_ACTIVE', `task \`${id}\` is already ${cur.state}`);
    }
    // The task row ended first: no new lease can bind to it while these are revoked.
    const leases = await this.#leases.revokeByTask(id, state === 'completed' ? 'task-completed' : 'task-expired', correlationId, by);
    const revoked = leases.map((l) => ({ leaseId: l.id, kind: l.kind, subject: l.subject, revokedAt: l.revokedAt }));
    await this.#audit.append({
      action: state === 'completed' ? 'task.completed' : 'task.expired',
      actor: by,
      target: { type: 'task', id },
      outcome: 'success',
      correlationId,
      details: { owner: task.owner, endedAt: at, endedBy: actorId(by), revokedCount: revoked.length, revoked },
    });
    return { task, revoked };
  }

  /** Expire every active task past its deadline (the reaper calls this). */
  async expireOverdue(correlationId: string, limit = 100): Promise<readonly RevocationReceipt[]> {
    const overdue = await this.#store.listOverdueTasks(new Date(this.#clock.nowMs()).toISOString(), limit);
    const out: RevocationReceipt[] = [];
    for (const t of overdue) {
      try {
        out.push(await this.#end(t.id, 'expired', SYSTEM, correlationId));
      } catch (e) {
        // Another replica ended it first.
        if ((e as { code?: unknown }).code !== 'ERR_CRED_TASK_NOT_ACTIVE') throw e;
      }
    }
    return out;
  }
}
