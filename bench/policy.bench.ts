/**
 * Policy decision benchmark: Writ's decide() (sliced, uncached and cache-hit)
 * against raw cedar-wasm `statefulIsAuthorized` over the whole pre-parsed set
 * and against casbin on an equivalent ACL model, at 10, 100, 1,000 and 10,000
 * policies. Each policy grants one workload `http:GET` on one service, the
 * shape of per-identity grants in an NHI deployment; one extra forbid applies
 * to every request's type so slicing never gets to skip everything.
 *
 * Run through bench/run.ts, or alone: `npx node bench/policy.bench.ts`.
 */
import { newEnforcer, newModelFromString, StringAdapter } from 'casbin';
import { statefulIsAuthorized } from '@cedar-policy/cedar-wasm/nodejs';
import type { EntityJson } from '@cedar-policy/cedar-wasm/nodejs';
import { systemClock } from '../src/kernel/index.ts';
import { Decider, PolicyEngine, memoryEntityLoader, readWritSchema, recordingAuditSink } from '../src/policy/index.ts';
import type { DecisionRequest } from '../src/policy/index.ts';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer } from '../src/server/index.ts';
import { figure, sample } from './harness.ts';
import type { BenchResult, Figure } from './harness.ts';

/** One measured series (one engine, one size, one run). */
export interface Series {
  readonly engine: 'writ-decide' | 'writ-decide-cache-hit' | 'cedar-wasm-full-set' | 'casbin';
  readonly policies: number;
  readonly iterations: number;
  /** Median latency of one decision, microseconds. */
  readonly p50Us: number;
  /** 99th percentile latency, microseconds. */
  readonly p99Us: number;
  /** Decisions per second over the run (sequential, one thread). */
  readonly decisionsPerSec: number;
  /** Fraction of allows (every engine must agree: a sanity check). */
  readonly allowRate: number;
}

const SIZES = [10, 100, 1_000, 10_000] as const;
const SERVICES = 100;

function policyText(n: number): string {
  const lines: string[] = [
    '@id("no-legacy-internet-writes")\nforbid (principal is Writ::Workload, action in Writ::Action::"http", resource is Writ::Service)\nwhen { principal.legacy && resource.internetFacing };',
  ];
  for (let i = 0; i < n - 1; i++) {
    lines.push(`@id("p${i}")\npermit (principal == Writ::Workload::"w${i}", action == Writ::Action::"http:GET", resource == Writ::Service::"s${i % SERVICES}");`);
  }
  return lines.join('\n');
}

function entitiesFor(n: number): EntityJson[] {
  const out: EntityJson[] = [];
  for (let i = 0; i < n; i++) {
    out.push({ uid: { type: 'Writ::Workload', id: `w${i}` }, attrs: { spiffeId: `spiffe://bench.example/w${i}`, labels: [], legacy: false }, parents: [] });
  }
  for (let s = 0; s < SERVICES; s++) {
    out.push({ uid: { type: 'Writ::Service', id: `s${s}` }, attrs: { internetFacing: s % 2 === 0, legacy: false, sensitivity: 'low' }, parents: [] });
  }
  return out;
}

/** Requests: half hit a granted (workload, service) pair, half miss by one service. */
function requestsFor(n: number, count: number): { w: number; s: number }[] {
  const out: { w: number; s: number }[] = [];
  let x = 12345;
  for (let k = 0; k < count; k++) {
    x = (x * 1103515245 + 12345) % 2147483648;
    const w = x % Math.max(1, n - 1);
    const s = k % 2 === 0 ? w % SERVICES : (w + 1) % SERVICES;
    out.push({ w, s });
  }
  return out;
}

function percentile(sorted: number[], p: number): number {
  const i = Math.min(sorted.length - 1, Math.floor(p * sorted.length));
  return sorted[i] ?? 0;
}

async function measure(
  engine: Series['engine'],
  policies: number,
  requests: readonly { w: number; s: number }[],
  warmup: number,
  run: (r: { w: number; s: number }) => Promise<boolean> | boolean,
): Promise<Series> {
  for (let i = 0; i < warmup; i++) {
    const r = requests[i % requests.length];
    if (r !== undefined) await run(r);
  }
  const samples: number[] = [];
  let allows = 0;
  const t0 = performance.now();
  for (const r of requests) {
    const a = performance.now();
    if (await run(r)) allows++;
    samples.push((performance.now() - a) * 1000);
  }
  const total = (performance.now() - t0) / 1000;
  samples.sort((a, b) => a - b);
  return {
    engine,
    policies,
    iterations: requests.length,
    p50Us: Math.round(percentile(samples, 0.5) * 10) / 10,
    p99Us: Math.round(percentile(samples, 0.99) * 10) / 10,
    decisionsPerSec: Math.round(requests.length / total),
    allowRate: Math.round((allows / requests.length) * 1000) / 1000,
  };
}

/**
 * Measure every engine at every size, `runs` times each (runs interleaved so
 * machine noise spreads evenly). Returns the raw series.
 *
 * @example
 * const series = await measurePolicySeries({ sizes: [10, 100], iterations: 500, runs: 1 });
 */
export async function measurePolicySeries(options: { iterations?: number; sizes?: readonly number[]; runs?: number } = {}): Promise<Series[]> {
  const iterations = options.iterations ?? 1_000;
  const runs = options.runs ?? 3;
  const results: Series[] = [];
  const schema = await readWritSchema();
  for (const n of options.sizes ?? SIZES) {
    const text = policyText(n);
    const entities = entitiesFor(n);
    const requests = requestsFor(n, iterations);
    const t0 = performance.now();
    const engine = new PolicyEngine({ clock: systemClock });
    const report = await engine.load({ schema, files: [{ path: 'bench.cedar', text }] });
    const loadSeconds = (performance.now() - t0) / 1000;
    const set = engine.active;
    if (!report.ok || set === undefined) throw new Error(`bench policy set failed to load: ${report.problems[0]?.message ?? 'unknown'}`);
    const audit = recordingAuditSink(systemClock, false);
    const loader = memoryEntityLoader(entities);
    const req = (r: { w: number; s: number }): DecisionRequest => ({
      principal: { type: 'Writ::Workload', id: `w${r.w}` },
      action: 'http:GET',
      resource: { type: 'Writ::Service', id: `s${r.s}` },
    });

    const uncached = new Decider({ engine, audit, clock: systemClock, entityLoader: loader, cacheEntries: 0 });
    for (let run = 0; run < runs; run++) {
      results.push(await measure('writ-decide', n, requests, 200, async (r) => (await uncached.decide(req(r))).decision === 'allow'));

      const cached = new Decider({ engine, audit, clock: systemClock, entityLoader: loader, cacheEntries: 100_000 });
      for (const r of requests) await cached.decide(req(r));
      results.push(await measure('writ-decide-cache-hit', n, requests, 0, async (r) => (await cached.decide(req(r))).decision === 'allow'));

      // Raw cedar-wasm over the whole preparsed set, with the same entities a decision needs.
      const byId = new Map(entities.map((e) => ['__entity' in e.uid ? e.uid.__entity : e.uid, e] as const).map(([u, e]) => [`${u.type}::${u.id}`, e]));
      results.push(
        await measure('cedar-wasm-full-set', n, requests, 200, (r) => {
          const p = byId.get(`Writ::Workload::w${r.w}`);
          const s = byId.get(`Writ::Service::s${r.s}`);
          const answer = statefulIsAuthorized({
            principal: { type: 'Writ::Workload', id: `w${r.w}` },
            action: { type: 'Writ::Action', id: 'http:GET' },
            resource: { type: 'Writ::Service', id: `s${r.s}` },
            context: {},
            entities: p === undefined || s === undefined ? [] : [p, s],
            preparsedPolicySetId: set.fullSetId,
            preparsedSchemaName: set.schemaId,
            validateRequest: false,
          });
          return answer.type === 'success' && answer.response.decision === 'allow';
        }),
      );

      // casbin: the same grants as an ACL model (the forbid never applies to GET on a non-legacy workload).
      const model = newModelFromString(
        '[request_definition]\nr = sub, obj, act\n[policy_definition]\np = sub, obj, act\n[policy_effect]\ne = some(where (p.eft == allow))\n[matchers]\nm = r.sub == p.sub && r.obj == p.obj && r.act == p.act\n',
      );
      const lines: string[] = [];
      for (let i = 0; i < n - 1; i++) lines.push(`p, w${i}, s${i % SERVICES}, GET`);
      const enforcer = await newEnforcer(model, new StringAdapter(lines.join('\n')));
      results.push(await measure('casbin', n, requests, 200, (r) => enforcer.enforce(`w${r.w}`, `s${r.s}`, 'GET')));
    }
    process.stderr.write(`bench: policy ${n} policies loaded in ${loadSeconds.toFixed(2)} s\n`);
  }
  return results;
}

function stats(xs: readonly number[]): { median: number; min: number; max: number; runs: number } {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  const median = s.length % 2 === 1 ? (s[mid] ?? 0) : ((s[mid - 1] ?? 0) + (s[mid] ?? 0)) / 2;
  return { median, min: s[0] ?? 0, max: s[s.length - 1] ?? 0, runs: s.length };
}

/**
 * The policy benchmark in the harness's shape: one `BenchResult` per figure
 * kind (`policy.decision.p50`, `.p99`, `.throughput`), each with a figure per
 * engine and size (median of the runs, min–max), and the goals:
 * Writ's p50 at the largest size <= 2 x its p50 at the smallest, and Writ
 * faster than raw cedar-wasm and casbin at >= 100 policies. Cache hits are
 * reported as their own figures and are not used for the goals.
 *
 * @example
 * const results = await runPolicyBench(); // BenchResult[] for bench/run.ts
 */
export async function runPolicyBench(options: { iterations?: number; sizes?: readonly number[]; runs?: number } = {}): Promise<BenchResult[]> {
  const series = await measurePolicySeries(options);
  const sizes = [...new Set(series.map((s) => s.policies))].sort((a, b) => a - b);
  const engines: Series['engine'][] = ['writ-decide', 'writ-decide-cache-hit', 'cedar-wasm-full-set', 'casbin'];
  const pick = (engine: string, n: number) => series.filter((s) => s.engine === engine && s.policies === n);
  const kinds = [
    { bench: 'policy.decision.p50', unit: 'µs', get: (s: Series) => s.p50Us },
    { bench: 'policy.decision.p99', unit: 'µs', get: (s: Series) => s.p99Us },
    { bench: 'policy.decision.throughput', unit: 'decisions/s', get: (s: Series) => s.decisionsPerSec },
  ];
  const out: BenchResult[] = [];
  for (const k of kinds) {
    const figures: Figure[] = [];
    const median = (engine: string, n: number) => stats(pick(engine, n).map(k.get)).median;
    for (const n of sizes) {
      const writ = figure(`writ-decide @ ${n}`, k.unit, stats(pick('writ-decide', n).map(k.get)));
      figures.push(writ);
      for (const e of engines.slice(1)) {
        const agree = pick(e, n).every((s, i) => s.allowRate === pick('writ-decide', n)[i]?.allowRate);
        figures.push(figure(`${e} @ ${n}`, k.unit, stats(pick(e, n).map(k.get)), writ, agree ? undefined : 'allow rate differs from writ-decide'));
      }
    }
    const goals: { text: string; met: boolean }[] = [];
    if (k.bench === 'policy.decision.p50') {
      const lo = sizes[0];
      const hi = sizes[sizes.length - 1];
      if (lo !== undefined && hi !== undefined) {
        goals.push({ text: `writ-decide p50 at ${hi} policies <= 2 x its p50 at ${lo}`, met: median('writ-decide', hi) <= 2 * median('writ-decide', lo) });
      }
      for (const n of sizes.filter((x) => x >= 100)) {
        goals.push({
          text: `writ-decide p50 faster than cedar-wasm-full-set and casbin at ${n} policies`,
          met: median('writ-decide', n) < median('cedar-wasm-full-set', n) && median('writ-decide', n) < median('casbin', n),
        });
      }
    }
    out.push({ bench: k.bench, figures, goals });
  }
  out.push(await runAuthzenHttpBench(options.runs ?? 3));
  return out;
}

/** Requests/s of `send` with `concurrency` loops for `ms` milliseconds. */
async function rate(concurrency: number, ms: number, send: () => Promise<boolean>): Promise<number> {
  const end = performance.now() + ms;
  let ok = 0;
  let failed = 0;
  const start = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < end) {
        if (await send()) ok++;
        else failed++;
      }
    }),
  );
  if (failed > 0) throw new Error(`${failed} requests failed during the rate measurement`);
  return ok / ((performance.now() - start) / 1000);
}

/**
 * The AuthZEN endpoint over HTTP: `POST /access/v1/evaluation` requests/s
 * against a real server (SQLite store, every decision audited), as a ratio
 * to `GET /healthz` on the same server in the same run (the HTTP floor).
 *
 * @example
 * const result = await runAuthzenHttpBench(3);
 */
export async function runAuthzenHttpBench(runs = Number(process.env.WRIT_BENCH_RUNS ?? 3), concurrency = 16, ms = 2000): Promise<BenchResult> {
  const dataDir = mkdtempSync(join(tmpdir(), 'writ-bench-authzen-'));
  const server = await startServer({
    env: {},
    flags: { listen: '127.0.0.1:0', dataDir, logLevel: 'silent', 'policy.dir': fileURLToPath(new URL('../examples/authzen-certification', import.meta.url)) },
  });
  try {
    const admin = readFileSync(join(dataDir, 'admin.token'), 'utf8').trim();
    const created = await fetch(`${server.url}/admin/v1/principals`, { method: 'POST', headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' }, body: JSON.stringify({ name: 'bench-pep', role: 'pep' }) });
    const pep = ((await created.json()) as { token: string }).token;
    const bodies = [
      { subject: { type: 'user', id: 'alice' }, action: { name: 'read' }, resource: { type: 'record', id: 'record-1' } },
      { subject: { type: 'user', id: 'bob' }, action: { name: 'write' }, resource: { type: 'record', id: 'record-1' } },
    ].map((b) => JSON.stringify(b));
    let i = 0;
    const evaluation = async () => {
      const res = await fetch(`${server.url}/access/v1/evaluation`, { method: 'POST', headers: { authorization: pep, 'content-type': 'application/json' }, body: bodies[i++ % bodies.length] ?? '' });
      await res.arrayBuffer();
      return res.status === 200;
    };
    const healthz = async () => {
      const res = await fetch(`${server.url}/healthz`);
      await res.arrayBuffer();
      return res.status === 200;
    };
    await rate(concurrency, 500, evaluation);
    const floor = figure(`GET /healthz (HTTP floor, ${concurrency} in flight)`, 'requests/s', await sample(runs, () => rate(concurrency, ms, healthz)));
    const authzen = figure(`POST /access/v1/evaluation (${concurrency} in flight, each decision audited)`, 'requests/s', await sample(runs, () => rate(concurrency, ms, evaluation)), floor);
    return { bench: 'policy.authzen.http', figures: [floor, authzen], goals: [] };
  } finally {
    await server.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

if (import.meta.main) {
  console.table(await measurePolicySeries());
}
