/**
 * `npm run bench`: runs every benchmark in bench/ and writes
 * bench/results/latest.md and latest.json. WRIT_BENCH_RUNS sets repetitions
 * (default 5); WRIT_BENCH_ONLY=audit,policy picks benchmarks (sections: audit,
 * policy, identity, revocation, proxy, proxy-pdp, oauth, credentials, quota).
 */
import { writeFileSync, mkdirSync } from 'node:fs';
import { cpus } from 'node:os';
import { renderMarkdown, postgresAnswers } from './harness.ts';
import type { BenchResult } from './harness.ts';
import { runAuditBench } from './audit.bench.ts';
import { runIdentityBench } from './identity.bench.ts';
import { runRevocationBench } from './revocation.bench.ts';
import { runProxyBench, runProxyPdpModeBench } from './proxy.bench.ts';
import { runOAuthBench } from './oauth.bench.ts';
import { runCredentialsBench } from './credentials.bench.ts';
import { runMcpGatewayBench } from './mcp-gateway.bench.ts';
import { runQuotaBench } from './quota.bench.ts';

const PG_URL = process.env.WRIT_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const only = new Set((process.env.WRIT_BENCH_ONLY ?? 'audit,policy,identity,revocation,proxy,proxy-pdp,oauth,credentials,quota,mcp').split(','));

const results: BenchResult[] = [];
const havePg = await postgresAnswers(PG_URL);
if (only.has('audit')) {
  process.stderr.write('bench: audit appends…\n');
  results.push(await runAuditBench(havePg ? { pgUrl: PG_URL } : {}));
}
if (only.has('policy')) {
  try {
    const mod = (await import('./policy.bench.ts')) as unknown as { runPolicyBench?: () => Promise<BenchResult[]> };
    if (mod.runPolicyBench !== undefined) {
      process.stderr.write('bench: policy decisions…\n');
      results.push(...(await mod.runPolicyBench()));
    }
  } catch (e) {
    if ((e as { code?: string }).code !== 'ERR_MODULE_NOT_FOUND') throw e;
  }
}

if (only.has('identity')) {
  process.stderr.write('bench: SVID issuance…\n');
  results.push(await runIdentityBench());
}

if (only.has('revocation')) {
  process.stderr.write('bench: revocation propagation…\n');
  results.push(await runRevocationBench());
}

if (only.has('proxy')) {
  process.stderr.write('bench: writ proxy vs a bare proxy…\n');
  results.push(await runProxyBench());
}

if (only.has('proxy-pdp')) {
  process.stderr.write('bench: the proxy\'s decision step, pdp.mode remote vs local…\n');
  results.push(await runProxyPdpModeBench());
}

if (only.has('oauth')) {
  process.stderr.write('bench: token exchanges over HTTP…\n');
  results.push(await runOAuthBench());
}

if (only.has('credentials') && havePg) {
  process.stderr.write('bench: dynamic PostgreSQL credentials and revoke-by-task…\n');
  results.push(await runCredentialsBench());
}

if (only.has('quota') && havePg) {
  process.stderr.write('bench: lease opens with atomic quotas across two replicas…\n');
  results.push(await runQuotaBench());
}

if (only.has('mcp')) {
  process.stderr.write('bench: MCP gateway added latency per tools/call…\n');
  results.push(await runMcpGatewayBench());
}

const meta = {
  date: new Date().toISOString(),
  node: process.version,
  cpu: `${cpus().length} × ${cpus()[0]?.model ?? 'unknown'}`,
  postgres: havePg ? 'reachable' : 'not reachable (PostgreSQL figures skipped)',
};
mkdirSync(new URL('./results/', import.meta.url), { recursive: true });
writeFileSync(new URL('./results/latest.json', import.meta.url), `${JSON.stringify({ meta, results }, null, 2)}\n`);
const md = renderMarkdown(results, meta);
writeFileSync(new URL('./results/latest.md', import.meta.url), md);
process.stdout.write(md);
const unmet = results.flatMap((r) => r.goals).filter((g) => !g.met);
if (unmet.length > 0) process.stderr.write(`bench: ${unmet.length} goal(s) not met\n`);
