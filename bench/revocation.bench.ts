/**
 * Revocation propagation latency: from the publisher's acknowledgement (the
 * bus has the event durably) to its receipt at each of N subscribers, for the
 * three bus adapters:
 * - in-process: one bus, N subscribers;
 * - PostgreSQL: N bus instances (one per server replica) sharing the store's
 *   outbox, woken by LISTEN/NOTIFY, plus the publisher's own instance;
 * - NATS JetStream: the same with N connections to the broker.
 * And end to end through the server: three Writ replicas sharing PostgreSQL
 * (bus `postgres`) or NATS (bus `nats`), a revocation posted to replica 1
 * (`POST /admin/v1/revocations`, acknowledged) and received by one PEP stream
 * client on each replica (`GET /v1/revocations/stream`).
 *
 * Floors measured in the same run: raw NATS core publish→subscribe and raw
 * PostgreSQL NOTIFY→notification between two connections. Events are spaced
 * (not a throughput test); p50/p99 over every (event, subscriber) pair.
 * Goal: p99 <= 100 ms for each adapter.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { connect } from 'nats';
import { systemClock } from '../src/kernel/index.ts';
import { InProcessRevocationBus, RevocationStreamClient } from '../src/signals/index.ts';
import type { RevocationBus, RevocationEvent } from '../src/signals/index.ts';
import { openStore, PostgresRevocationBus, NatsRevocationBus } from '../src/storage/index.ts';
import { startServer } from '../src/server/index.ts';
import { figure, postgresAnswers } from './harness.ts';
import type { BenchResult, Figure } from './harness.ts';

const PG_URL = process.env.WRIT_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const NATS_URL = process.env.WRIT_TEST_NATS_URL ?? 'nats://127.0.0.1:4222';
const EVENTS = Number(process.env.WRIT_BENCH_REVOCATIONS ?? 200);
const SUBSCRIBERS = 3;
const GAP_MS = 3;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function percentile(xs: readonly number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))] ?? NaN;
}

function stats(xs: readonly number[]): { median: number; min: number; max: number; runs: number } {
  return { median: percentile(xs, 50), min: Math.min(...xs), max: Math.max(...xs), runs: xs.length };
}

/** Latencies of one case: from the acknowledgement, and from the start of the publish call. */
interface Latencies {
  readonly fromAck: number[];
  readonly fromCall: number[];
}

/**
 * Publish `EVENTS` events, each after the previous was received everywhere
 * plus a small gap, and measure per subscriber (a) acknowledgement → receipt,
 * where a receipt that beats the acknowledgement counts as 0 ms, and (b) the
 * start of the publish call → receipt, which includes making the event durable.
 */
async function measure(publish: (i: number) => Promise<string>, subscribe: (onReceipt: (id: string) => void) => Promise<() => Promise<void>>, n: number): Promise<Latencies> {
  const acks = new Map<string, number>();
  const receipts = new Map<string, number[]>();
  let received = 0;
  let wake: (() => void) | undefined;
  const onReceipt = (id: string): void => {
    const l = receipts.get(id) ?? [];
    l.push(performance.now());
    receipts.set(id, l);
    received += 1;
    wake?.();
  };
  const stops: (() => Promise<void>)[] = [];
  for (let s = 0; s < n; s++) stops.push(await subscribe(onReceipt));
  await sleep(200);
  const fromAck: number[] = [];
  const fromCall: number[] = [];
  const calls = new Map<string, number>();
  for (let i = 0; i < EVENTS; i++) {
    const call = performance.now();
    const id = await publish(i);
    acks.set(id, performance.now());
    calls.set(id, call);
    const want = (i + 1) * n;
    const deadline = performance.now() + 5000;
    while (received < want && performance.now() < deadline) await new Promise<void>((r) => { wake = r; setTimeout(r, 50); });
    await sleep(GAP_MS);
  }
  for (const s of stops) await s();
  for (const [id, ts] of receipts) {
    const ack = acks.get(id);
    const call = calls.get(id);
    if (ack === undefined || call === undefined) continue;
    for (const t of ts) {
      fromAck.push(Math.max(0, t - ack));
      fromCall.push(t - call);
    }
  }
  if (fromAck.length < EVENTS * n) process.stderr.write(`bench: revocation: ${EVENTS * n - fromAck.length} receipts missing\n`);
  return { fromAck, fromCall };
}

function busCase(publisher: RevocationBus, subscriberBus: (s: number) => RevocationBus, n: number): Promise<Latencies> {
  let s = 0;
  return measure(
    async (i) => (await publisher.publish({ kind: 'subject-revoked', subject: `spiffe://writ.local/bench/${i}`, reason: 'admin-revoked' })).id,
    async (onReceipt) => subscriberBus(s++).subscribe(undefined, (e: RevocationEvent) => onReceipt(e.id)),
    n,
  );
}

async function natsUp(): Promise<boolean> {
  try {
    const nc = await connect({ servers: NATS_URL, timeout: 2000, reconnect: false });
    await nc.close();
    return true;
  } catch {
    return false;
  }
}

async function rawNotifyFloor(): Promise<number[]> {
  const a = new pg.Client({ connectionString: PG_URL });
  const b = new pg.Client({ connectionString: PG_URL });
  await a.connect();
  await b.connect();
  const channel = `writ_bench_${process.pid}`;
  await b.query(`listen ${channel}`);
  let got: (() => void) | undefined;
  b.on('notification', () => got?.());
  const out: number[] = [];
  for (let i = 0; i < EVENTS; i++) {
    const t = performance.now();
    const seen = new Promise<void>((r) => { got = r; });
    await a.query('select pg_notify($1, $2)', [channel, String(i)]);
    await seen;
    out.push(performance.now() - t);
    await sleep(GAP_MS);
  }
  await a.end();
  await b.end();
  return out;
}

async function rawNatsFloor(): Promise<number[]> {
  const a = await connect({ servers: NATS_URL });
  const b = await connect({ servers: NATS_URL });
  const subject = `writ.bench.${process.pid}`;
  let got: (() => void) | undefined;
  const sub = b.subscribe(subject, { callback: () => got?.() });
  await b.flush();
  const out: number[] = [];
  for (let i = 0; i < EVENTS; i++) {
    const t = performance.now();
    const seen = new Promise<void>((r) => { got = r; });
    a.publish(subject, new Uint8Array([i % 256]));
    await seen;
    out.push(performance.now() - t);
    await sleep(GAP_MS);
  }
  sub.unsubscribe();
  await a.close();
  await b.close();
  return out;
}

/** Three server replicas on one PostgreSQL schema with the given bus; PEP clients on each. */
async function replicasCase(bus: 'postgres' | 'nats', schema: string): Promise<Latencies> {
  const dirs = [0, 1, 2].map(() => mkdtempSync(join(tmpdir(), 'writ-bench-rev-')));
  const stream = `WRIT_BENCH_${process.pid}`;
  const flags = (dir: string) => ({ listen: '127.0.0.1:0', dataDir: dir, logLevel: 'warn', store: PG_URL, 'bus.kind': bus, 'bus.natsUrl': NATS_URL, 'bus.natsStream': stream, 'revocations.heartbeatMs': 1000 });
  const { Writable } = await import('node:stream');
  const quiet = new Writable({ write: (_c, _e, cb) => cb() });
  const servers: Awaited<ReturnType<typeof startServer>>[] = [];
  // Replicas share the store, so they share the key-encryption key of its CA keys.
  const kek = randomBytes(32).toString('base64');
  for (const d of dirs) servers.push(await startServer({ env: { WRIT_KEK: kek }, flags: flags(d), pgSchema: schema, logStream: quiet }));
  try {
    // The first replica bootstrapped the admin; its token file is in its data folder.
    const token = readFileSync(join(dirs[0] ?? '', 'admin.token'), 'utf8').trim();
    const first = servers[0];
    if (first === undefined) throw new Error('no replica');
    const post = async (path: string, body: unknown): Promise<{ id: string; token: string }> => {
      const r = await fetch(`${first.url}${path}`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
      if (r.status !== 201) throw new Error(`${path} answered ${r.status}: ${await r.text()}`);
      return (await r.json()) as { id: string; token: string };
    };
    const pepToken = (await post('/admin/v1/principals', { name: `bench-pep-${bus}`, role: 'pep' })).token;
    let s = 0;
    return await measure(
      async (i) => (await post('/admin/v1/revocations', { kind: 'subject-revoked', subject: `spiffe://writ.local/bench/${i}`, reason: 'admin-revoked' })).id,
      async (onReceipt) => {
        const replica = servers[s++ % servers.length];
        if (replica === undefined) throw new Error('no replica');
        const c = new RevocationStreamClient({ url: replica.url, token: pepToken, clock: systemClock, stalenessMs: 10_000, onEvent: (e) => onReceipt(e.id) });
        c.start();
        const until = Date.now() + 5000;
        while (c.isStale() && Date.now() < until) await sleep(10);
        return async () => c.stop();
      },
      SUBSCRIBERS,
    );
  } finally {
    for (const srv of servers) await srv.close();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  }
}

/** The revocation propagation benchmark. */
export async function runRevocationBench(): Promise<BenchResult> {
  const figures: Figure[] = [];
  const goals: { text: string; met: boolean }[] = [];
  const floorFigures = (name: string, xs: number[]): { p50: Figure; p99: Figure } => {
    const p50 = figure(`floor: ${name}: p50`, 'ms', { ...stats(xs), median: percentile(xs, 50) });
    const p99 = figure(`floor: ${name}: p99`, 'ms', { ...stats(xs), median: percentile(xs, 99) });
    figures.push(p50, p99);
    return { p50, p99 };
  };
  const report = (name: string, l: Latencies, floor?: { p50: Figure; p99: Figure }): Figure[] => {
    const out: Figure[] = [];
    for (const [label, xs] of [['ack → receipt', l.fromAck], ['publish call → receipt', l.fromCall]] as const) {
      out.push(figure(`${name}, ${label}: p50`, 'ms', { ...stats(xs), median: percentile(xs, 50) }, floor?.p50));
      out.push(figure(`${name}, ${label}: p99`, 'ms', { ...stats(xs), median: percentile(xs, 99) }, floor?.p99));
    }
    figures.push(...out);
    return out;
  };
  // Bus cases: the goal is on ack → receipt. Through the server, the PEPs hear
  // of a revocation before its HTTP acknowledgement arrives (the audit write
  // comes after the publish), so the goal is on the stricter call → receipt.
  const goal = (name: string, out: Figure[], which: 'ack' | 'call' = 'ack'): void => {
    const p99 = out[which === 'ack' ? 1 : 3];
    if (p99 === undefined) throw new Error('no figure');
    goals.push({ text: `${name}: p99 ${which === 'ack' ? 'ack' : 'publish call'} → receipt ${p99.median.toFixed(2)} ms <= 100 ms (${EVENTS} events × ${SUBSCRIBERS} subscribers)`, met: p99.median <= 100 });
  };

  const mem = new InProcessRevocationBus(systemClock);
  goal('in-process bus', report('in-process bus, 3 subscribers', await busCase(mem, () => mem, SUBSCRIBERS)));
  await mem.close();

  if (await postgresAnswers(PG_URL)) {
    const floor = floorFigures('raw PostgreSQL NOTIFY → LISTEN notification', await rawNotifyFloor());
    const schema = `writ_bench_rev_${process.pid}`;
    const store = await openStore({ url: PG_URL, dataDir: '', pgSchema: schema });
    await store.migrate();
    await store.close();
    const buses = [0, 1, 2, 3].map(() => new PostgresRevocationBus({ url: PG_URL, schema, clock: systemClock }));
    const [pub, ...subs] = buses;
    if (pub !== undefined) goal('PostgreSQL bus', report('PostgreSQL outbox + LISTEN/NOTIFY, 3 replica buses', await busCase(pub, (s) => subs[s] ?? pub, SUBSCRIBERS), floor));
    for (const b of buses) await b.close();
    goal('3 replicas on PostgreSQL, end to end', report('3 Writ replicas, bus postgres: POST /admin/v1/revocations → PEP stream client on each replica', await replicasCase('postgres', `${schema}_srv`), floor), 'call');
    const c = new pg.Client({ connectionString: PG_URL });
    await c.connect();
    await c.query(`drop schema if exists ${schema} cascade`);
    await c.query(`drop schema if exists ${schema}_srv cascade`);
    await c.end();
  } else process.stderr.write('bench: revocation: PostgreSQL not reachable; its figures are skipped\n');

  if (await natsUp()) {
    const floor = floorFigures('raw NATS core publish → subscriber', await rawNatsFloor());
    const opts = { url: NATS_URL, clock: systemClock, stream: `WRIT_BENCH_BUS_${process.pid}`, subject: `writ.bench.bus.${process.pid}` };
    const buses = [await NatsRevocationBus.open(opts), await NatsRevocationBus.open(opts), await NatsRevocationBus.open(opts), await NatsRevocationBus.open(opts)];
    const [pub, ...subs] = buses;
    if (pub !== undefined) goal('NATS JetStream bus', report('NATS JetStream, 3 replica buses', await busCase(pub, (s) => subs[s] ?? pub, SUBSCRIBERS), floor));
    for (const b of buses) await b.close();
    if (await postgresAnswers(PG_URL)) {
      const schema = `writ_bench_rev_nats_${process.pid}`;
      goal('3 replicas on NATS, end to end', report('3 Writ replicas, bus nats: POST /admin/v1/revocations → PEP stream client on each replica', await replicasCase('nats', schema), floor), 'call');
      const c = new pg.Client({ connectionString: PG_URL });
      await c.connect();
      await c.query(`drop schema if exists ${schema} cascade`);
      await c.end();
    }
    const nc = await connect({ servers: NATS_URL });
    const jsm = await nc.jetstreamManager();
    for (const name of [opts.stream, `WRIT_BENCH_${process.pid}`]) await jsm.streams.delete(name).catch(() => undefined);
    await nc.close();
  } else process.stderr.write('bench: revocation: NATS not reachable; its figures are skipped\n');

  return { bench: 'Revocation propagation latency (publish acknowledgement → receipt at each subscriber)', figures, goals };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const r = await runRevocationBench();
  const { renderMarkdown } = await import('./harness.ts');
  process.stdout.write(renderMarkdown([r], { date: new Date().toISOString() }));
}
