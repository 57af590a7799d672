/**
 * The MCP gateway's added latency per `tools/call`: an MCP SDK client calling
 * a tool on an SDK `McpServer` (Streamable HTTP, loopback) directly, and
 * through `McpGateway` (token check, an AuthZEN evaluation at a real Writ
 * server over HTTP, budget, audit, the cached exchanged upstream token),
 * measured in alternation in the same run, one call in flight. With the
 * decision cache off every call asks the PDP; with it on (1 s) identical
 * calls are answered from the cache.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { AccessTokenVerifier, CachingPdp, CallBudgets, McpGateway, RemotePdp, TokenExchanger } from '../src/enforcement/index.ts';
import { Secret, systemClock } from '../src/kernel/index.ts';
import { AgentTokenProvider, startGatewayWrit, startTask, startUpstream } from '../test/enforcement/mcp-support.ts';
import { figure, sample } from './harness.ts';
import type { BenchResult } from './harness.ts';

const RUNS = Number(process.env.WRIT_BENCH_RUNS ?? 5);
const CALLS = 200;

function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? 0;
}

export async function runMcpGatewayBench(): Promise<BenchResult> {
  const { ts, pep } = await startGatewayWrit();
  const upstream = await startUpstream();
  const gateways: { close(): Promise<void> }[] = [];
  const clients: Client[] = [];
  const startGateway = async (cacheTtlMs: number): Promise<string> => {
    let gw: McpGateway | undefined;
    const server = createServer((req, res) => void gw?.handle(req, res).catch(() => res.destroy()));
    await new Promise<void>((ok) => server.listen(0, '127.0.0.1', () => ok()));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/mcp`;
    gw = new McpGateway({
      tokens: new AccessTokenVerifier({ issuer: ts.url, audience: url, clock: systemClock }),
      pdp: new CachingPdp(new RemotePdp({ url: ts.url, credential: new Secret(pep) }), { clock: systemClock, ttlMs: cacheTtlMs }),
      exchanger: new TokenExchanger({ tokenEndpoint: `${ts.url}/oauth2/token`, clock: systemClock }),
      upstream: upstream.url,
      resource: url,
      authorizationServer: ts.url,
      clock: systemClock,
      budgets: new CallBudgets({ totalCalls: 1_000_000 }),
      audit: { append: async (e) => ({ seq: 0, time: new Date().toISOString(), action: e.action, actor: e.actor, outcome: e.outcome, reasons: e.reasons ?? [], correlationId: e.correlationId, details: e.details ?? {}, prevHash: '', hash: '' }) },
    });
    gateways.push({ close: () => new Promise<void>((ok) => { server.closeAllConnections(); server.close(() => ok()); }) });
    return url;
  };
  const connect = async (url: string, auth: boolean): Promise<Client> => {
    const client = new Client({ name: 'bench-agent', version: '1.0.0' });
    const provider = auth ? new AgentTokenProvider(ts, await startTask(ts, ['tools:search']), 'tools:search') : undefined;
    await client.connect(new StreamableHTTPClientTransport(new URL(url), provider === undefined ? {} : { authProvider: provider }));
    clients.push(client);
    return client;
  };
  try {
    const direct = await connect(upstream.url, false);
    const viaNoCache = await connect(await startGateway(0), true);
    const viaCache = await connect(await startGateway(1000), true);
    const batch = async (c: Client): Promise<number[]> => {
      const lat: number[] = [];
      for (let i = 0; i < CALLS; i++) {
        const t = performance.now();
        await c.callTool({ name: 'search', arguments: { query: 'latency' } });
        lat.push(performance.now() - t);
      }
      return lat;
    };
    // The PDP alone: the same evaluation the gateway asks, over HTTP to Writ (decision + durable audit there).
    const pdp = new RemotePdp({ url: ts.url, credential: new Secret(pep) });
    const evaluation = { subject: { type: 'agent', id: 'spiffe://writ.local/agent/triage', properties: { spiffeId: 'spiffe://writ.local/agent/triage', labels: [] } }, action: { name: 'tools/call' }, resource: { type: 'tool', id: 'search', properties: { readOnly: true } }, context: { mcp: { server: upstream.url, tool: 'search', arguments: { query: 'latency' }, task: { id: 'task_bench', scopes: ['tools:search'] } } } };
    const pdpBatch = async (): Promise<number[]> => {
      const lat: number[] = [];
      for (let i = 0; i < CALLS; i++) {
        const t = performance.now();
        const d = await pdp.evaluate(evaluation);
        if (!d.allow) throw new Error(`bench evaluation denied: ${d.reason}`);
        lat.push(performance.now() - t);
      }
      return lat;
    };
    // Warm up every path (JIT, connections, the exchanged token).
    for (const c of [direct, viaNoCache, viaCache]) await batch(c);
    await pdpBatch();
    const pdp50: number[] = [];
    for (let r = 0; r < RUNS; r++) pdp50.push(quantile(await pdpBatch(), 0.5));
    const p50: Record<string, number[]> = { direct: [], nocache: [], cache: [] };
    const p99: Record<string, number[]> = { direct: [], nocache: [], cache: [] };
    for (let r = 0; r < RUNS; r++) {
      for (const [k, c] of [['direct', direct], ['nocache', viaNoCache], ['cache', viaCache]] as const) {
        const lat = await batch(c);
        p50[k]?.push(quantile(lat, 0.5));
        p99[k]?.push(quantile(lat, 0.99));
      }
    }
    const fig = async (k: string, q: Record<string, number[]>) => sample(q[k]?.length ?? 0, () => q[k]?.shift() ?? 0);
    const d50 = figure('direct tools/call p50 (SDK client → McpServer)', 'ms', await fig('direct', p50));
    const d99 = figure('direct tools/call p99', 'ms', await fig('direct', p99));
    const n50s = await fig('nocache', p50);
    const n99s = await fig('nocache', p99);
    const c50s = await fig('cache', p50);
    const c99s = await fig('cache', p99);
    const n50 = figure('via gateway p50, decision cache off', 'ms', n50s, d50, `added ${(n50s.median - d50.median).toFixed(2)} ms: token check, AuthZEN evaluation over HTTP, audit`);
    const n99 = figure('via gateway p99, decision cache off', 'ms', n99s, d99, `added ${(n99s.median - d99.median).toFixed(2)} ms`);
    const c50 = figure('via gateway p50, decision cache 1 s', 'ms', c50s, d50, `added ${(c50s.median - d50.median).toFixed(2)} ms`);
    const c99 = figure('via gateway p99, decision cache 1 s', 'ms', c99s, d99, `added ${(c99s.median - d99.median).toFixed(2)} ms`);
    const e50 = figure('AuthZEN evaluation alone p50 (RemotePdp → Writ, decision audited there)', 'ms', await sample(pdp50.length, () => pdp50.shift() ?? 0));
    return { bench: `mcp-gateway: added latency per tools/call (${CALLS} sequential calls per run, loopback)`, figures: [d50, d99, n50, n99, c50, c99, e50], goals: [] };
  } finally {
    for (const c of clients) await c.close().catch(() => undefined);
    for (const g of gateways) await g.close();
    await upstream.stop();
    await ts.stop();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const r = await runMcpGatewayBench();
  process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
}
