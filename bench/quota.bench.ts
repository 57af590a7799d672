/**
 * Lease opening with atomic quotas (count + insert under advisory locks),
 * two lease managers on two pools sharing one PostgreSQL store — as two
 * server replicas would — against a floor of plain single-row lease INSERTs
 * over the same pools and concurrency. Two shapes: every opener a different
 * subject (the locks never collide), and every opener the same subject (all
 * serialize on one lock: the worst case a quota can cost).
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { systemClock } from '../src/kernel/index.ts';
import type { AuditEventInput, AuditRecord, AuditSink } from '../src/kernel/index.ts';
import { LeaseManager, newLeaseId } from '../src/credentials/index.ts';
import type { Lease } from '../src/credentials/index.ts';
import { openStore } from '../src/storage/index.ts';
import { figure, pool, sample } from './harness.ts';
import type { BenchResult } from './harness.ts';

const PG_URL = process.env.WRIT_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const RUNS = Number(process.env.WRIT_BENCH_RUNS ?? 5);
const OPS = 1000;
const IN_FLIGHT = 8;

/** The audit log is measured elsewhere; here it must cost nothing. */
const nullAudit: AuditSink = { append: async (e: AuditEventInput) => ({ seq: 0, time: '', action: e.action, actor: e.actor, outcome: e.outcome, reasons: [], correlationId: e.correlationId }) as unknown as AuditRecord };

export async function runQuotaBench(): Promise<BenchResult> {
  const schema = `writ_bench_${randomBytes(4).toString('hex')}`;
  const a = await openStore({ url: PG_URL, dataDir: '', pgSchema: schema, pgPoolMax: IN_FLIGHT / 2 });
  await a.migrate();
  const b = await openStore({ url: PG_URL, dataDir: '', pgSchema: schema, pgPoolMax: IN_FLIGHT / 2 });
  const limits = { maxTtlMs: 3_600_000, maxPerIdentity: 10_000_000, maxPerTask: 10_000_000 };
  const managers = [a, b].map((s) => new LeaseManager({ store: s.credentials, tasks: s.credentials, audit: nullAudit, clock: systemClock, limits }));
  const stores = [a, b];
  try {
    const row = (subject: string): Lease => {
      const now = Date.now();
      return { id: newLeaseId(), kind: 'access_token', subject, taskId: null, audience: 'api', state: 'pending', createdAt: new Date(now).toISOString(), expiresAt: new Date(now + 600_000).toISOString(), maxExpiresAt: new Date(now + 600_000).toISOString(), revokedAt: null, revokeReason: null, handle: {} };
    };
    const raw: number[] = [];
    const distinct: number[] = [];
    const same: number[] = [];
    for (let r = 0; r < RUNS; r++) {
      raw.push(await pool(OPS, IN_FLIGHT, (i) => (stores[i % 2] ?? a).credentials.insertLease(row(`spiffe://bench/raw/${r}/${i}`))));
      distinct.push(await pool(OPS, IN_FLIGHT, (i) => (managers[i % 2] ?? managers[0])?.open({ kind: 'access_token', subject: `spiffe://bench/d/${r}/${i}`, ttlMs: 600_000, correlationId: 'bench' }) ?? Promise.resolve()));
      same.push(await pool(OPS, IN_FLIGHT, (i) => (managers[i % 2] ?? managers[0])?.open({ kind: 'access_token', subject: `spiffe://bench/same/${r}`, ttlMs: 600_000, correlationId: 'bench' }) ?? Promise.resolve()));
    }
    const pick = (xs: number[]) => sample(xs.length, (() => { let i = 0; return () => xs[i++] ?? 0; })());
    const rawFig = figure('plain lease INSERT, two pools (floor)', 'rows/s', await pick(raw), undefined, `${IN_FLIGHT} in flight`);
    const distinctFig = figure('lease open with atomic quotas, two replicas, distinct subjects', 'leases/s', await pick(distinct), rawFig, 'advisory lock per subject, then one count-guarded INSERT, in one transaction');
    const sameFig = figure('lease open with atomic quotas, two replicas, one subject', 'leases/s', await pick(same), rawFig, 'every opener waits on the same subject lock and counts up to 1,000 live leases of it');
    return {
      bench: 'lease quotas across replicas (PostgreSQL store)',
      figures: [rawFig, distinctFig, sameFig],
      goals: [{ text: 'quota-checked opens for distinct subjects reach at least a third of plain INSERTs', met: (distinctFig.ratio ?? 0) >= 1 / 3 }],
    };
  } finally {
    await a.close();
    await b.close();
    const c = new pg.Client({ connectionString: PG_URL });
    await c.connect();
    await c.query(`drop schema ${schema} cascade`);
    await c.end();
  }
}

if (import.meta.main) {
  const r = await runQuotaBench();
  process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
}
