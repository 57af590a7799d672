/**
 * Lease quotas hold across replicas: two lease managers, each over its own
 * connection pool (as two server replicas would have), share one PostgreSQL
 * store and open many leases at once for one subject and for one task. The
 * store counts and inserts under a lock, so no quota is ever exceeded.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../../src/kernel/index.ts';
import { LeaseManager, TaskService } from '../../src/credentials/index.ts';
import { openStore } from '../../src/storage/index.ts';
import type { Store } from '../../src/storage/index.ts';
import { PG_URL, postgresProblem, skipWithoutPostgres, scratchSchema, dropSchema } from '../support/services.ts';
import { KeepingAuditSink, T0 } from './support.ts';

const ATTEMPTS = 60;

describe('lease quotas under concurrent issuance on two replicas (PostgreSQL)', () => {
  const schema = scratchSchema('writ_quota');
  let a: Store | undefined;
  let b: Store | undefined;
  const clock = new ManualClock(T0);
  const limits = { maxTtlMs: 3_600_000, maxPerIdentity: 5, maxPerTask: 7 };
  let managers: LeaseManager[] = [];
  let tasks: TaskService | undefined;

  before(async () => {
    if ((await postgresProblem()) !== undefined) return;
    a = await openStore({ url: PG_URL, dataDir: '', pgSchema: schema, pgPoolMax: 12 });
    await a.migrate();
    b = await openStore({ url: PG_URL, dataDir: '', pgSchema: schema, pgPoolMax: 12 });
    managers = [a, b].map((s) => new LeaseManager({ store: s.credentials, tasks: s.credentials, audit: new KeepingAuditSink(), clock, limits }));
    const first = managers[0];
    if (first === undefined) throw new Error('no manager');
    tasks = new TaskService({ store: a.credentials, leases: first, audit: new KeepingAuditSink(), clock, maxTtlMs: 86_400_000 });
  });
  after(async () => {
    await a?.close();
    await b?.close();
    if (a !== undefined) await dropSchema(schema);
  });

  /** Fire every open at once, alternating replicas; count what was granted and what was refused. */
  async function race(open: (m: LeaseManager, i: number) => Promise<unknown>): Promise<{ ok: number; quota: number; other: unknown[] }> {
    const results = await Promise.allSettled(Array.from({ length: ATTEMPTS }, (_, i) => {
      const m = managers[i % 2];
      if (m === undefined) throw new Error('no manager');
      return open(m, i);
    }));
    const other: unknown[] = [];
    let ok = 0;
    let quota = 0;
    for (const r of results) {
      if (r.status === 'fulfilled') ok++;
      else if ((r.reason as { code?: string; status?: number }).code === 'ERR_CRED_QUOTA_EXCEEDED' && (r.reason as { status?: number }).status === 429) quota++;
      else other.push(r.reason);
    }
    return { ok, quota, other };
  }

  it('per identity: exactly the quota is granted, the rest are 429', async (t) => {
    if (await skipWithoutPostgres(t) || a === undefined) return;
    const subject = 'spiffe://example.org/ns/race/one';
    const r = await race((m) => m.open({ kind: 'access_token', subject, ttlMs: 60_000, correlationId: 'race' }));
    assert.deepEqual(r.other, []);
    assert.equal(r.ok, limits.maxPerIdentity);
    assert.equal(r.quota, ATTEMPTS - limits.maxPerIdentity);
    assert.equal(await a.credentials.countLiveLeases({ subject }, new Date(clock.nowMs()).toISOString()), limits.maxPerIdentity, 'the store holds exactly the quota');
  });

  it('per task: exactly the quota is granted across many subjects', async (t) => {
    if (await skipWithoutPostgres(t) || a === undefined || tasks === undefined) return;
    const task = await tasks.start({ owner: 'spiffe://example.org/ci', ttlMs: 3_600_000 }, { type: 'system', id: 'test' }, 'race');
    const r = await race((m, i) => m.open({ kind: 'access_token', subject: `spiffe://example.org/ns/race/w${i}`, taskId: task.id, ttlMs: 60_000, correlationId: 'race' }));
    assert.deepEqual(r.other, []);
    assert.equal(r.ok, limits.maxPerTask);
    assert.equal(r.quota, ATTEMPTS - limits.maxPerTask);
    assert.equal(await a.credentials.countLiveLeases({ taskId: task.id }, new Date(clock.nowMs()).toISOString()), limits.maxPerTask);
  });

  it('both quotas at once, and a revoked lease frees its slot on the other replica', async (t) => {
    if (await skipWithoutPostgres(t) || a === undefined || tasks === undefined) return;
    const task = await tasks.start({ owner: 'spiffe://example.org/ci', ttlMs: 3_600_000 }, { type: 'system', id: 'test' }, 'race');
    // Three subjects share the task: the per-subject quota (5) binds each, the task quota (7) binds the sum.
    const r = await race((m, i) => m.open({ kind: 'access_token', subject: `spiffe://example.org/ns/race/s${i % 3}`, taskId: task.id, ttlMs: 60_000, correlationId: 'race' }));
    assert.deepEqual(r.other, []);
    assert.equal(r.ok, limits.maxPerTask);
    for (let s = 0; s < 3; s++) assert.ok((await a.credentials.countLiveLeases({ subject: `spiffe://example.org/ns/race/s${s}` }, new Date(clock.nowMs()).toISOString())) <= limits.maxPerIdentity);
    const [one] = await a.credentials.listLeases({ taskId: task.id, states: ['pending'], limit: 1 });
    const [ma, mb] = managers;
    if (one === undefined || ma === undefined || mb === undefined) throw new Error('no lease');
    await ma.revoke(one.id, 'test', 'race');
    const again = await race((m, i) => m.open({ kind: 'access_token', subject: `spiffe://example.org/ns/race/t${i}`, taskId: task.id, ttlMs: 60_000, correlationId: 'race' }));
    assert.equal(again.ok, 1, 'exactly the freed slot is taken');
    assert.equal(await b?.credentials.countLiveLeases({ taskId: task.id }, new Date(clock.nowMs()).toISOString()), limits.maxPerTask);
  });
});
