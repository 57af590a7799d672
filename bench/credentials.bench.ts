/**
 * Credentials benchmarks, each against a floor measured in the same run:
 * - dynamic PostgreSQL credentials (write-ahead lease, CREATE ROLE … VALID
 *   UNTIL + grants, activation, revocation with session termination and DROP
 *   ROLE, every step audited) per second, vs a raw CREATE ROLE + GRANT +
 *   DROP ROLE loop over the same pool size and concurrency;
 * - revoke-by-task latency with 100,000 live leases in the store (a task of
 *   100 leases; each revocation audited), vs one raw UPDATE of the same rows.
 * The store is PostgreSQL in a scratch schema.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { systemClock } from '../src/kernel/index.ts';
import { AuditWriter } from '../src/audit/index.ts';
import { DynamicCredentials, LeaseManager, TaskService, buildEngines, newLeaseId } from '../src/credentials/index.ts';
import type { Lease } from '../src/credentials/index.ts';
import { openStore } from '../src/storage/index.ts';
import { sample, figure } from './harness.ts';
import type { BenchResult } from './harness.ts';

const PG_URL = process.env.WRIT_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const RUNS = Number(process.env.WRIT_BENCH_RUNS ?? 5);
const CREDS_PER_RUN = 100;
const CONCURRENCY = 8;
const LIVE_LEASES = 100_000;
const TASK_LEASES = 100;
const RAW_LOCK = 0x77726372;

async function inParallel(n: number, concurrency: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < n) await fn(next++);
  }));
}

export async function runCredentialsBench(): Promise<BenchResult> {
  const schema = `writ_bench_${randomBytes(4).toString('hex')}`;
  const prefix = `writ_b${randomBytes(4).toString('hex')}_`;
  const admin = new pg.Pool({ connectionString: PG_URL, max: CONCURRENCY });
  await admin.query(`create schema ${schema}; create table ${schema}.items (id int)`);
  const store = await openStore({ url: PG_URL, dataDir: '', pgSchema: schema });
  await store.migrate();
  const audit = new AuditWriter(store, systemClock, { flushEvents: 100, flushDelayMs: 2, maxBatchEvents: 2000, queueLimit: 1_000_000 });
  const grants = [`grant usage on schema ${schema} to {{name}}`, `grant select on all tables in schema ${schema} to {{name}}`];
  const engines = buildEngines([{ name: 'main', type: 'postgres', url: PG_URL, prefix, poolSize: CONCURRENCY, roles: { reader: { grants } } }]);
  const leases = new LeaseManager({ store: store.credentials, tasks: store.credentials, audit, clock: systemClock, limits: { maxTtlMs: 86_400_000, maxPerIdentity: 10_000_000, maxPerTask: 10_000_000 } });
  const tasks = new TaskService({ store: store.credentials, leases, audit, clock: systemClock, maxTtlMs: 86_400_000 });
  const dynamic = new DynamicCredentials(leases, engines);
  const actor = { type: 'system' as const, id: 'bench' };
  try {
    // ---- dynamic credentials: issue + revoke cycles, alternating with the raw floor
    const raw: number[] = [];
    const writ: number[] = [];
    for (let r = 0; r < RUNS; r++) {
      let t0 = performance.now();
      await inParallel(CREDS_PER_RUN, CONCURRENCY, async () => {
        const name = `${prefix}raw${randomBytes(8).toString('hex')}`;
        const c = await admin.connect();
        try {
          // Concurrent GRANTs on one table collide ("tuple concurrently updated"): serialize as the engine does.
          await c.query('begin');
          await c.query('select pg_advisory_xact_lock($1)', [RAW_LOCK]);
          await c.query(`create role "${name}" login password '${randomBytes(32).toString('base64url')}' valid until '${new Date(Date.now() + 3_600_000).toISOString()}'`);
          for (const g of grants) await c.query(g.replaceAll('{{name}}', `"${name}"`));
          await c.query('commit');
          await c.query('begin');
          await c.query('select pg_advisory_xact_lock($1)', [RAW_LOCK]);
          await c.query(`drop owned by "${name}"`);
          await c.query(`drop role "${name}"`);
          await c.query('commit');
        } catch (e) {
          await c.query('rollback').catch(() => undefined);
          throw e;
        } finally {
          c.release();
        }
      });
      raw.push(CREDS_PER_RUN / ((performance.now() - t0) / 1000));
      t0 = performance.now();
      await inParallel(CREDS_PER_RUN, CONCURRENCY, async () => {
        const cred = await dynamic.issue({ engine: 'main', role: 'reader', subject: 'spiffe://bench/a', ttlMs: 3_600_000, actor, correlationId: 'bench' });
        await leases.revoke(cred.lease.id, 'bench', 'bench');
      });
      writ.push(CREDS_PER_RUN / ((performance.now() - t0) / 1000));
    }
    const pick = (xs: number[]) => sample(xs.length, (() => { let i = 0; return () => xs[i++] ?? 0; })());
    const rawFig = figure('raw CREATE ROLE + GRANT + DROP ROLE (floor)', 'cycles/s', await pick(raw), undefined, `${CONCURRENCY} in flight`);
    const writFig = figure('dynamic PostgreSQL credential issue + revoke', 'cycles/s', await pick(writ), rawFig, 'lease write-ahead, activation, revocation with session termination, all audited');

    // ---- revoke-by-task with 100,000 live leases
    const now = Date.now();
    const mk = (taskId: string): Lease => ({ id: newLeaseId(), kind: 'access_token', subject: `spiffe://bench/w${Math.floor(Math.random() * 1000)}`, taskId, audience: 'api', state: 'active', createdAt: new Date(now).toISOString(), expiresAt: new Date(now + 3_600_000).toISOString(), maxExpiresAt: new Date(now + 3_600_000).toISOString(), revokedAt: null, revokeReason: null, handle: {} });
    const filler: Lease[] = [];
    for (let i = 0; i < LIVE_LEASES; i++) filler.push(mk(`task_filler_${i % 1000}`));
    await store.credentials.insertLeases(filler);
    await admin.query(`analyze ${schema}.leases`);
    const byTask: number[] = [];
    const rawUpdate: number[] = [];
    for (let r = 0; r < RUNS; r++) {
      const task = await tasks.start({ owner: 'spiffe://bench/owner', ttlMs: 3_600_000 }, actor, 'bench');
      await store.credentials.insertLeases(Array.from({ length: TASK_LEASES }, () => mk(task.id)));
      let t0 = performance.now();
      const out = await leases.revokeByTask(task.id, 'bench', 'bench', actor);
      byTask.push(performance.now() - t0);
      if (out.length !== TASK_LEASES) throw new Error(`revoked ${out.length} of ${TASK_LEASES}`);
      const other = `task_raw_${r}`;
      await store.credentials.insertLeases(Array.from({ length: TASK_LEASES }, () => mk(other)));
      t0 = performance.now();
      await admin.query(`update ${schema}.leases set state = 'revoked', revoked_at = $2, revoke_reason = 'bench' where task_id = $1 and state in ('pending', 'active')`, [other, new Date().toISOString()]);
      rawUpdate.push(performance.now() - t0);
    }
    const rawUpd = figure(`raw UPDATE of ${TASK_LEASES} leases of one task (floor)`, 'ms', await pick(rawUpdate), undefined, `${LIVE_LEASES.toLocaleString('en-US')} live leases in the store`);
    const revoke = figure(`revoke-by-task, ${TASK_LEASES} leases`, 'ms', await pick(byTask), rawUpd, `${LIVE_LEASES.toLocaleString('en-US')} live leases in the store; each lease CAS-revoked and audited`);
    return {
      bench: 'credentials (PostgreSQL store and engine)',
      figures: [rawFig, writFig, rawUpd, revoke],
      goals: [
        { text: 'dynamic credential cycles reach at least a third of the raw CREATE/DROP ROLE floor', met: (writFig.ratio ?? 0) >= 1 / 3 },
        { text: `revoke-by-task of ${TASK_LEASES} leases among ${LIVE_LEASES.toLocaleString('en-US')} takes under 1 s`, met: revoke.median < 1000 },
      ],
    };
  } finally {
    await dynamic.close();
    await audit.close();
    await store.close();
    const left = await admin.query<{ rolname: string }>('select rolname from pg_roles where starts_with(rolname, $1)', [prefix]);
    for (const r of left.rows) await admin.query(`drop owned by "${r.rolname}"; drop role "${r.rolname}"`);
    await admin.query(`drop schema ${schema} cascade`);
    await admin.end();
  }
}

if (import.meta.main) {
  const r = await runCredentialsBench();
  process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
}
