/**
 * Audit appends per second, durable, with group commit — against
 * (a) the SHA-256 chain alone, no storage (the floor the goal is set on), and
 * (b) one write + fdatasync per event (what appending without group commit costs).
 */
import { mkdtempSync, openSync, writeSync, fdatasyncSync, closeSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { systemClock } from '../src/kernel/index.ts';
import type { AuditEventInput } from '../src/kernel/index.ts';
import { AuditWriter, prepareEvent, toEventBody, chainHash, GENESIS_HASH } from '../src/audit/index.ts';
import { openStore } from '../src/storage/index.ts';
import { sample, figure } from './harness.ts';
import type { BenchResult, Figure } from './harness.ts';

const RUNS = Number(process.env.WRIT_BENCH_RUNS ?? 5);

function event(i: number): AuditEventInput {
  return {
    action: 'api.called',
    actor: { type: 'admin', id: '0123456789abcdef', name: 'bench', role: 'admin', ip: '127.0.0.1' },
    target: { type: 'api_route', id: 'GET /admin/v1/whoami' },
    outcome: 'success',
    correlationId: `${i.toString(16).padStart(32, '0')}`,
    details: { method: 'GET', route: '/admin/v1/whoami', path: '/admin/v1/whoami', status: 200 },
  };
}

/** (a) prepare + hash each event in a chain; no storage. Events/s. */
function hashOnly(n: number): number {
  const t = performance.now();
  let prev = GENESIS_HASH;
  const now = new Date().toISOString();
  for (let i = 1; i <= n; i++) {
    const p = prepareEvent(toEventBody(event(i), now));
    prev = chainHash(prev, i, p.canonical);
  }
  if (prev.length !== 64) throw new Error('unreachable');
  return n / ((performance.now() - t) / 1000);
}

/** (b) one write + fdatasync per event. Events/s. */
function fsyncEach(dir: string, n: number): number {
  const fd = openSync(join(dir, 'fsync.log'), 'a');
  const now = new Date().toISOString();
  const t = performance.now();
  for (let i = 1; i <= n; i++) {
    writeSync(fd, `${prepareEvent(toEventBody(event(i), now)).canonical}\n`);
    fdatasyncSync(fd);
  }
  closeSync(fd);
  return n / ((performance.now() - t) / 1000);
}

/** Durable appends through the writer, `inFlight` callers at a time. Events/s. */
async function durable(url: string, dataDir: string, n: number, inFlight: number, pgSchema?: string): Promise<number> {
  const store = await openStore({ url, dataDir, ...(pgSchema === undefined ? {} : { pgSchema }) });
  await store.migrate();
  const writer = new AuditWriter(store, systemClock, { flushEvents: 100, flushDelayMs: 2, maxBatchEvents: 2000, queueLimit: 1_000_000 });
  let next = 0;
  const t = performance.now();
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (next < n) {
        const i = next++;
        await writer.append(event(i));
      }
    }),
  );
  const rate = n / ((performance.now() - t) / 1000);
  await writer.close();
  await store.close();
  return rate;
}

export async function runAuditBench(opts: { pgUrl?: string } = {}): Promise<BenchResult> {
  const dir = mkdtempSync(join(tmpdir(), 'writ-bench-'));
  const figures: Figure[] = [];
  try {
    hashOnly(20_000); // warm up
    const floor = figure('hash chain only, no storage (floor)', 'events/s', await sample(RUNS, () => hashOnly(50_000)));
    figures.push(floor);
    figures.push(figure('write + fdatasync per event', 'events/s', await sample(RUNS, () => fsyncEach(dir, 2_000)), floor));
    let k = 0;
    const sqlite = figure('durable appends, SQLite, group commit, 1000 in flight', 'events/s', await sample(RUNS, () => durable('', join(dir, `s${k++}`), 50_000, 1000)), floor);
    figures.push(sqlite);
    figures.push(figure('durable appends, SQLite, group commit, 1 in flight', 'events/s', await sample(RUNS, () => durable('', join(dir, `s${k++}`), 300, 1)), floor, 'a lone caller waits for the flush delay'));
    if (opts.pgUrl !== undefined) {
      const { default: pg } = await import('pg');
      const schemas: string[] = [];
      const pgRate = await sample(RUNS, async () => {
        const schema = `writ_bench_${process.pid}_${schemas.length}`;
        schemas.push(schema);
        return durable(opts.pgUrl ?? '', dir, 50_000, 1000, schema);
      });
      figures.push(figure('durable appends, PostgreSQL, group commit, 1000 in flight', 'events/s', pgRate, floor));
      const c = new pg.Client({ connectionString: opts.pgUrl });
      await c.connect();
      for (const s of schemas) await c.query(`drop schema if exists ${s} cascade`);
      await c.end();
    }
    const ratio = sqlite.ratio ?? 0;
    return { bench: 'audit log appends', figures, goals: [{ text: `durable appends (SQLite) >= 0.35 × hash-only floor: ${ratio.toFixed(3)}`, met: ratio >= 0.35 }] };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
