/**
 * RFC 8693 token exchanges per second over HTTP (form parsing, JWT-SVID
 * validation against the served bundle, a PDP decision, the write-ahead
 * lease opened and activated in the store, ES256 signing of the at+jwt, the
 * audit events made durable), against the floor: raw node:crypto ES256
 * signatures per second, measured in alternation in the same run.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer } from '../src/server/index.ts';
import { sample, figure, rawEs256SignRate, pool } from './harness.ts';
import type { BenchResult } from './harness.ts';

const RUNS = Number(process.env.WRIT_BENCH_RUNS ?? 5);
const IN_FLIGHT = 16;
const PER_RUN = 1000;
const API = 'https://api.example.com';

export async function runOAuthBench(): Promise<BenchResult> {
  const dir = mkdtempSync(join(tmpdir(), 'writ-bench-oauth-'));
  const policies = join(dir, 'policies');
  (await import('node:fs')).mkdirSync(policies);
  writeFileSync(join(policies, 'oauth.cedar'), `permit(principal, action == Writ::Action::"token/exchange", resource == Writ::Service::"${API}");\n`);
  const server = await startServer({
    env: {},
    flags: { listen: '127.0.0.1:0', dataDir: join(dir, 'data'), logLevel: 'silent', 'identity.rotationCheckSeconds': 0, 'policy.dir': policies, 'credentials.maxLeasesPerIdentity': 10_000_000, 'credentials.reaperIntervalSeconds': 0 },
  });
  try {
    // Subject tokens: 64 workloads, each JWT-SVID reused (they are bearer tokens for their lifetime).
    const subjects = await Promise.all(Array.from({ length: 64 }, async (_, i) => (await server.identity.ca.signJwtSvid({ spiffeId: `spiffe://writ.local/bench/w${i}`, audience: server.url, ttlMs: 3_600_000 })).token));
    const one = async (i: number) => {
      const body = new URLSearchParams({ grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange', subject_token: subjects[i % subjects.length] ?? '', subject_token_type: 'urn:ietf:params:oauth:token-type:jwt', audience: API, scope: 'read' });
      const r = await fetch(`${server.url}/oauth2/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body });
      if (r.status !== 200) throw new Error(`token endpoint answered ${r.status}: ${await r.text()}`);
      await r.arrayBuffer();
    };
    await pool(200, IN_FLIGHT, one);
    const floors: number[] = [];
    const paired: number[] = [];
    const ex = await sample(RUNS, async () => {
      const f = rawEs256SignRate(1000);
      floors.push(f);
      const r = await pool(PER_RUN, IN_FLIGHT, one);
      paired.push(r / f);
      return r;
    });
    const floor = figure('raw node:crypto ES256 sign (floor)', 'signatures/s', await sample(floors.length, () => floors.shift() ?? 0));
    const pairedS = await sample(paired.length, () => paired.shift() ?? 0);
    const fig = figure('token exchanges over HTTP (JWT-SVID → at+jwt)', 'exchanges/s', ex, floor, `${IN_FLIGHT} in flight, SQLite, PDP + lease + audit per token; median of per-run ratios ${pairedS.median.toFixed(3)}`);
    return { bench: 'oauth: token exchange', figures: [floor, fig], goals: [] };
  } finally {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const r = await runOAuthBench();
  process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
}
