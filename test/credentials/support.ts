/**
 * A credentials context over a real store (SQLite in memory unless told),
 * a manual clock and an audit sink that keeps what it is given.
 */
import { ManualClock } from '../../src/kernel/index.ts';
import type { AuditEventInput, AuditRecord, AuditSink } from '../../src/kernel/index.ts';
import { LeaseManager, TaskService, DynamicCredentials, Reaper } from '../../src/credentials/index.ts';
import type { LeaseLimits, SecretEngine } from '../../src/credentials/index.ts';
import { openStore } from '../../src/storage/index.ts';
import type { Store } from '../../src/storage/index.ts';

/** Keeps every event, as the audit writer would receive it. */
export class KeepingAuditSink implements AuditSink {
  readonly events: AuditEventInput[] = [];
  async append(event: AuditEventInput): Promise<AuditRecord> {
    this.events.push(event);
    return { seq: this.events.length, time: event.time ?? new Date(0).toISOString(), action: event.action, actor: event.actor, outcome: event.outcome, reasons: event.reasons ?? [], correlationId: event.correlationId } as AuditRecord;
  }
  actions(): string[] {
    return this.events.map((e) => e.action);
  }
}

export interface CredContext {
  readonly store: Store;
  readonly clock: ManualClock;
  readonly audit: KeepingAuditSink;
  readonly leases: LeaseManager;
  readonly tasks: TaskService;
  readonly dynamic: DynamicCredentials;
  readonly reaper: Reaper;
  close(): Promise<void>;
}

export const T0 = Date.parse('2026-03-01T12:00:00.000Z');

export async function credContext(opts: { limits?: Partial<LeaseLimits>; engines?: SecretEngine[]; pendingGraceMs?: number; clock?: ManualClock } = {}): Promise<CredContext> {
  const store = await openStore({ url: 'sqlite::memory:', dataDir: '' });
  await store.migrate();
  const clock = opts.clock ?? new ManualClock(T0);
  const audit = new KeepingAuditSink();
  const leases = new LeaseManager({ store: store.credentials, tasks: store.credentials, audit, clock, limits: { maxTtlMs: 3_600_000, maxPerIdentity: 50, maxPerTask: 50, ...opts.limits } });
  const tasks = new TaskService({ store: store.credentials, leases, audit, clock, maxTtlMs: 86_400_000 });
  const dynamic = new DynamicCredentials(leases, opts.engines ?? []);
  const reaper = new Reaper({ leases, tasks, dynamic, audit, clock, pendingGraceMs: opts.pendingGraceMs ?? 60_000 });
  return {
    store, clock, audit, leases, tasks, dynamic, reaper,
    async close() {
      await dynamic.close();
      await store.close();
    },
  };
}
