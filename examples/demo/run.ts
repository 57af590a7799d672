/**
 * `npm run demo`: Writ end to end with real processes.
 *
 * A support triage agent (a workload of this process's uid) attests through
 * `writ agent`, fetches its SVIDs, exchanges its JWT-SVID for task-bound
 * access tokens, calls the `orders` service through `writ proxy` (allowed),
 * tries a prod write outside its scope (denied), calls tools of an MCP server
 * through `writ mcp-gateway` (one permitted, one refused with -32001); then a
 * posture signal arrives and the demo measures how long the proxy and the
 * gateway take to deny the same caller; finally `writ audit verify`.
 *
 * Every Writ piece is a child process of `bin/writ.js` (run by this Node);
 * the services are child processes too. Everything lives in a temporary
 * folder on random free ports and is removed on exit, on failure, on SIGINT
 * and when the deadline passes.
 *
 *   node examples/demo/run.ts [--server URL --token-file F] [--deadline-s N] [--keep]
 *
 * Exit 0 only when every step had the expected outcome; 1 naming the failing
 * step otherwise; 2 for a usage error.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { randomBytes } from 'node:crypto';
import { decodeJwt } from 'jose';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { McpError } from '@modelcontextprotocol/sdk/types.js';

const HERE = fileURLToPath(new URL('.', import.meta.url));
const ROOT = resolve(HERE, '..', '..');
const WRIT = join(ROOT, 'bin', 'writ.js');
const POLICIES = join(HERE, 'policies');
const TOTAL_STEPS = 14;

// ------------------------------------------------------------------ options

const HELP = `run Writ's end-to-end demo with real processes

usage: node examples/demo/run.ts [--server URL --token-file FILE] [--deadline-s N] [--keep]

options:
  --server URL        use a running Writ (started with --policies examples/demo/policies) instead of starting one
  --token-file FILE   with --server: an admin credential file
  --deadline-s N      give up (exit 1) when the whole run takes longer than N seconds (default 180)
  --keep              keep the temporary folder (store, configuration, proxy audit log, each process's output) and print where it is
  -h, --help          show this help
`;

let opts: { server?: string; tokenFile?: string; deadlineS: number; keep: boolean };
try {
  const { values } = parseArgs({ options: { server: { type: 'string' }, 'token-file': { type: 'string' }, 'deadline-s': { type: 'string', default: '180' }, keep: { type: 'boolean', default: false }, help: { type: 'boolean', short: 'h', default: false } } });
  if (values.help) {
    process.stdout.write(HELP);
    process.exit(0);
  }
  const deadlineS = Number(values['deadline-s']);
  if (!Number.isInteger(deadlineS) || deadlineS < 1 || deadlineS > 3600) throw new Error('--deadline-s must be a whole number from 1 to 3600');
  if ((values.server === undefined) !== (values['token-file'] === undefined)) throw new Error('--server and --token-file go together');
  opts = { ...(values.server === undefined ? {} : { server: values.server.replace(/\/+$/, '') }), ...(values['token-file'] === undefined ? {} : { tokenFile: resolve(values['token-file']) }), deadlineS, keep: values.keep };
} catch (e) {
  process.stderr.write(`demo: ${e instanceof Error ? e.message : String(e)}\n${HELP}`);
  process.exit(2);
}

if (process.platform !== 'linux') {
  // `writ agent` attests its callers by kernel-verified peer credentials, which it reads on Linux only.
  process.stderr.write(`demo: needs Linux (writ agent attests callers on Linux only), not ${process.platform}\n`);
  process.exit(1);
}

// ------------------------------------------------------------------ processes

interface Proc {
  readonly name: string;
  readonly child: ChildProcess;
  output(): string;
  readonly exited: Promise<number | null>;
  /** Exited and its output streams drained. */
  readonly closed: Promise<number | null>;
}

const procs: Proc[] = [];
const dir = mkdtempSync(join(tmpdir(), 'writ-demo-'));
const baseEnv = { PATH: process.env.PATH ?? '/usr/bin:/bin', ...(process.env.HOME === undefined ? {} : { HOME: process.env.HOME }) };

/** A long-running child; its output is kept (the last 256 KiB) for the failure report. */
function start(name: string, args: string[], env: Record<string, string> = {}): Proc {
  const child = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...baseEnv, ...env } });
  let out = '';
  const keep = (d: Buffer): void => {
    out += d.toString();
    if (out.length > 256 * 1024) out = out.slice(-128 * 1024);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const closed = new Promise<number | null>((r) => child.once('close', (code) => r(code)));
  const p = { name, child, output: () => out, exited, closed };
  procs.push(p);
  return p;
}

interface Run {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** A `writ` command to completion (killed after 60 s). */
async function writ(args: string[], env: Record<string, string> = {}): Promise<Run> {
  const p = start(`writ ${args.slice(0, 2).filter((a) => !a.startsWith('-')).join(' ')}`, [WRIT, ...args], env);
  let stdout = '';
  let stderr = '';
  p.child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
  p.child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => p.child.kill('SIGKILL'), 60_000);
  const code = await p.closed;
  clearTimeout(timer);
  procs.splice(procs.indexOf(p), 1);
  return { code, stdout, stderr };
}

/** `writ` that must succeed; its stdout. */
async function writOk(args: string[], env: Record<string, string> = {}): Promise<string> {
  const r = await writ(args, env);
  if (r.code !== 0) throw new Error(`\`writ ${args.slice(0, 2).filter((a) => !a.startsWith('-')).join(' ')}\` exited ${r.code}: ${(r.stderr || r.stdout).trim().split('\n').slice(-3).join(' | ')}`);
  return r.stdout;
}

async function until<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, ms = 60_000, everyMs = 100): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms / 1000} s waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Wait until a child prints `re`; fails at once when it exits first. */
function waitOutput(p: Proc, re: RegExp, what: string, ms = 60_000): Promise<RegExpExecArray> {
  return until(what, () => {
    const m = re.exec(p.output());
    if (m !== null) return m;
    if (p.child.exitCode !== null) throw new Error(`${p.name} exited ${p.child.exitCode} before ${what}: ${p.output().trim().split('\n').slice(-3).join(' | ')}`);
    return undefined;
  }, ms, 50);
}

function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once('error', fail);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => ok(typeof a === 'object' && a !== null ? a.port : 0));
    });
  });
}

let cleaned: Promise<void> | undefined;

/** Stop every child (enforcement points and services first, the server last), then remove the folder. */
function cleanup(): Promise<void> {
  cleaned ??= (async () => {
    const stop = async (ps: Proc[]): Promise<void> => {
      await Promise.all(ps.map(async (p) => {
        if (p.child.exitCode !== null || p.child.signalCode !== null) return;
        p.child.kill('SIGTERM');
        const t = setTimeout(() => p.child.kill('SIGKILL'), 5000);
        await p.exited;
        clearTimeout(t);
      }));
    };
    await stop(procs.filter((p) => p.name !== 'writ up'));
    await stop(procs.filter((p) => p.name === 'writ up'));
    if (opts.keep) {
      // The children's output, for a look after the run.
      mkdirSync(join(dir, 'logs'), { recursive: true });
      for (const p of procs) writeFileSync(join(dir, 'logs', `${p.name.replaceAll(' ', '-')}.log`), p.output());
      process.stdout.write(`kept ${dir} (logs/ holds each process's output)\n`);
    } else {
      rmSync(dir, { recursive: true, force: true });
    }
  })();
  return cleaned;
}

// ------------------------------------------------------------------ steps

let current = { n: 0, title: 'starting' };

function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

async function step<T>(title: string, f: () => Promise<{ outcome: string; value: T }>): Promise<T> {
  if (failed) throw new Error('the run has already failed');
  current = { n: current.n + 1, title };
  const { outcome, value } = await f();
  // A step that finished after the run failed (deadline, interrupt) reports nothing.
  if (failed) throw new Error('the run has already failed');
  say(`[${String(current.n).padStart(2)}/${TOTAL_STEPS}] ok  ${title}: ${outcome}`);
  return value;
}

function short(id: string): string {
  return id.length > 16 ? `${id.slice(0, 16)}…` : id;
}

interface Http {
  readonly status: number;
  readonly headers: Headers;
  readonly body: Record<string, unknown>;
}

async function http(url: string, init: RequestInit): Promise<Http> {
  const res = await fetch(url, { ...init, signal: AbortSignal.timeout(10_000) });
  const text = await res.text();
  let body: Record<string, unknown> = {};
  try {
    body = JSON.parse(text) as Record<string, unknown>;
  } catch {
    body = { text: text.slice(0, 200) };
  }
  return { status: res.status, headers: res.headers, body };
}

/** A caller refused by the MCP gateway: a JSON-RPC deny, or its transport refused (revoked token, closed session). */
function mcpRefusal(e: unknown): string | undefined {
  if (e instanceof McpError) {
    // -32001 is also the SDK's own request timeout: only the gateway's deny carries an ERR_ENFORCE_ code.
    const code = (e.data as { code?: unknown } | undefined)?.code;
    return e.code === -32001 && typeof code === 'string' && code.startsWith('ERR_ENFORCE_') ? `-32001 ${code}` : undefined;
  }
  // The SDK's StreamableHTTPError: `code` is the HTTP status, the message carries the body.
  const code = (e as { code?: unknown }).code;
  const message = e instanceof Error ? e.message : '';
  if (code === 401 && message.includes('access token was revoked')) return 'HTTP 401 access token was revoked';
  if (code === 404 && message.includes('session not found')) return 'HTTP 404 session closed';
  return undefined;
}

async function main(): Promise<void> {
  const runId = randomBytes(4).toString('hex');
  const uid = process.getuid?.() ?? 0;
  const ports = new Set<number>();
  while (ports.size < 7) ports.add(await freePort());
  const [apiPort, tlsPort, ordersPort, inventoryPort, mcpPort, proxyPort, gatewayPort] = [...ports];
  const policiesShown = relative(process.cwd(), POLICIES) || POLICIES;

  // 1. Writ
  const server = await step(opts.server === undefined ? `writ up --policies ${policiesShown}` : `use the running Writ at ${opts.server}`, async () => {
    let url: string;
    let tokenFile: string;
    if (opts.server === undefined) {
      url = `http://127.0.0.1:${apiPort}`;
      const up = start('writ up', [WRIT, 'up', '--listen', `127.0.0.1:${apiPort}`, '--data-dir', join(dir, 'server'), '--policies', POLICIES, '--log-level', 'warn'], {
        WRIT_TLS_LISTEN: `127.0.0.1:${tlsPort}`,
        // Enforcement points learn that the stream is alive from heartbeats; a short interval makes them ready sooner.
        WRIT_REVOCATIONS_HEARTBEAT_MS: '500',
      });
      await waitOutput(up, /listening on http/, 'writ up to listen', 90_000);
      tokenFile = join(dir, 'server', 'admin.token');
    } else {
      url = opts.server;
      tokenFile = opts.tokenFile ?? '';
    }
    const env = { WRIT_SERVER: url, WRIT_TOKEN_FILE: tokenFile };
    const status = JSON.parse(await writOk(['status', '--json'], env)) as { config: Record<string, unknown> };
    const policy = JSON.parse(await writOk(['policy', 'show', '--json'], env)) as { activeVersion?: string; policies?: { id: string }[] };
    const ids = new Set((policy.policies ?? []).map((p) => p.id));
    if (!ids.has('posture-floor') || !ids.has('no-prod-writes')) throw new Error(`the server does not serve the demo policies (examples/demo/policies); it serves ${policy.activeVersion ?? 'no policy set'}`);
    const meta = (await (await fetch(`${url}/.well-known/oauth-authorization-server`)).json()) as { issuer: string; jwks_uri: string };
    const trustDomain = String(status.config['identity.trustDomain'] ?? 'writ.local');
    return { outcome: `${url} (trust domain ${trustDomain}, policy ${policy.activeVersion ?? '?'}, ${ids.size} policies)`, value: { url, env, issuer: meta.issuer, trustDomain } };
  });
  const { env } = server;

  // 2. PEP credential
  const pepFile = join(dir, 'pep.token');
  await step('writ principal create --role pep', async () => {
    await writOk(['principal', 'create', '--name', `demo-pep-${runId}`, '--role', 'pep', '--output', pepFile], env);
    return { outcome: `demo-pep-${runId}, the credential of the proxy and the gateway, in pep.token (0600)`, value: undefined };
  });

  // 3. entry
  const spiffeId = `spiffe://${server.trustDomain}/demo/triage/${runId}`;
  const nodeSelector = `demo:run:${runId}`;
  await step('writ entry create (owner required)', async () => {
    const e = JSON.parse(await writOk(['entry', 'create', '--spiffe-id', spiffeId, '--node-selector', nodeSelector, '-s', `unix:uid:${uid}`, '--environment', 'prod', '--jwt-ttl', '900', '--owner-team', 'support', '--owner-contact', 'alice@example.com', '--json'], env)) as { id: string };
    return { outcome: `${spiffeId} for unix:uid:${uid}, owner support / alice@example.com, entry ${e.id}`, value: undefined };
  });

  // 4. join token + agent
  const socket = join(dir, 'agent.sock');
  await step('writ token create + writ agent', async () => {
    const jt = JSON.parse(await writOk(['token', 'create', '--ttl', '600', '--node-selector', nodeSelector, '--json'], env)) as { id: string; token: string };
    const agent = start('writ agent', [WRIT, 'agent', '--server', server.url, '--socket', socket, '--data-dir', join(dir, 'agent'), '--sync-interval', '1', '--log-level', 'warn'], { WRIT_JOIN_TOKEN: jt.token });
    const m = await waitOutput(agent, /serving the Workload API on (\S+) as (\S+)/, 'writ agent to serve the Workload API');
    return { outcome: `node ${m[2]} attested (join token ${jt.id}), Workload API on ${m[1]}`, value: undefined };
  });

  // 5. X.509-SVID
  const svidDir = join(dir, 'svid');
  await step('writ svid fetch', async () => {
    // The agent may not have synced the entry yet: retry until it serves it.
    const out = await until('the agent to serve the workload its X.509-SVID', async () => {
      const r = await writ(['svid', 'fetch', '--socket', socket, '--out', svidDir, '--spiffe-id', spiffeId]);
      return r.code === 0 ? r.stdout.trim() : undefined;
    }, 60_000, 250);
    const m = /\(serial (\S+), expires (\S+)\)/.exec(out);
    return { outcome: `svid.pem, svid_key.pem, bundle.pem for ${spiffeId} (serial ${short(m?.[1] ?? '?')}, expires ${m?.[2] ?? '?'})`, value: undefined };
  });

  // 6. JWT-SVID
  const jwtFile = join(dir, 'svid.jwt');
  await step('writ svid jwt', async () => {
    const token = (await writOk(['svid', 'jwt', '--socket', socket, '--audience', server.issuer, '--spiffe-id', spiffeId])).trim();
    writeFileSync(jwtFile, `${token}\n`, { mode: 0o600 });
    const c = decodeJwt(token);
    return { outcome: `JWT-SVID sub ${c.sub}, aud ${String(c.aud)}, valid ${(c.exp ?? 0) - (c.iat ?? 0)} s`, value: undefined };
  });

  // 7. task + task-bound tokens
  const gatewayResource = `http://127.0.0.1:${gatewayPort}/mcp`;
  const tokens = await step('writ task start + writ oauth exchange --task', async () => {
    const task = JSON.parse(await writOk(['task', 'start', '--owner', 'alice@example.com', '--ttl', '600', '--scope', 'orders:read', '--scope', 'tools:lookup_order', '--description', 'triage ticket 4521', '--json'], env)) as { id: string };
    const exchange = async (audience: string, scope: string): Promise<string> => {
      const r = JSON.parse(await writOk(['oauth', 'exchange', '--server', server.url, '--subject-token-file', jwtFile, '--audience', audience, '--scope', scope, '--task', task.id, '--json'])) as { access_token: string };
      return r.access_token;
    };
    const proxy = await exchange('demo-proxy', 'orders:read');
    const gateway = await exchange(gatewayResource, 'tools:lookup_order');
    const c = decodeJwt(proxy);
    return { outcome: `task ${task.id} (scopes orders:read tools:lookup_order); access tokens for demo-proxy and the MCP gateway bound to it, ${(c.exp ?? 0) - (c.iat ?? 0)} s`, value: { task: task.id, proxy, gateway } };
  });

  // 8. services and enforcement points
  const proxyUrl = `http://127.0.0.1:${proxyPort}`;
  await step('services behind writ proxy and writ mcp-gateway', async () => {
    const orders = start('orders', [join(HERE, 'service.ts'), 'orders', '--port', String(ordersPort)]);
    const inventory = start('inventory', [join(HERE, 'service.ts'), 'inventory', '--port', String(inventoryPort)]);
    const mcp = start('orders-mcp', [join(HERE, 'mcp-server.ts'), '--port', String(mcpPort), '--issuer', server.issuer, '--audience', 'orders-mcp']);
    const config = JSON.parse(readFileSync(join(HERE, 'proxy.json'), 'utf8')) as { listen: string; trustDomain: string; upstreams: Record<string, { url: string }> };
    config.listen = `127.0.0.1:${proxyPort}`;
    config.trustDomain = server.trustDomain;
    config.upstreams = { orders: { url: `http://127.0.0.1:${ordersPort}` }, inventory: { url: `http://127.0.0.1:${inventoryPort}` } };
    writeFileSync(join(dir, 'proxy.json'), JSON.stringify(config, null, 2));
    const proxy = start('writ proxy', [WRIT, 'proxy', '--config', join(dir, 'proxy.json'), '--server', server.url, '--token-file', pepFile, '--audit-log', join(dir, 'proxy-audit.jsonl')]);
    const gateway = start('writ mcp-gateway', [WRIT, 'mcp-gateway', '--server', server.url, '--token-file', pepFile, '--listen', `127.0.0.1:${gatewayPort}`, '--upstream', `http://127.0.0.1:${mcpPort}/mcp`, '--upstream-audience', 'orders-mcp', '--server-id', 'orders-mcp', '--cache-ttl-ms', '30000']);
    await Promise.all([
      waitOutput(orders, /listening on/, 'orders to listen'),
      waitOutput(inventory, /listening on/, 'inventory to listen'),
      waitOutput(mcp, /listening on/, 'the MCP server to listen'),
      waitOutput(proxy, /listening on/, 'writ proxy to listen'),
      waitOutput(gateway, /deciding through/, 'writ mcp-gateway to start'),
    ]);
    return { outcome: `orders :${ordersPort} and inventory :${inventoryPort} behind writ proxy :${proxyPort} (routes of examples/demo/proxy.json); orders-mcp :${mcpPort} behind writ mcp-gateway :${gatewayPort}`, value: undefined };
  });

  const asAgent = { authorization: `Bearer ${tokens.proxy}` };

  // 9. allowed
  await step('GET /orders/1001 through writ proxy', async () => {
    // The proxy decides only once it has heard from the revocation stream (until then: fail closed, 403 stale).
    let last: Http | undefined;
    const ok = await until('the proxy to allow the task token', async () => {
      last = await http(`${proxyUrl}/orders/1001`, { headers: asAgent });
      if (last.status === 200) return last;
      if (last.body.code !== 'ERR_ENFORCE_REVOCATION_STALE') throw new Error(`expected 200, got ${last.status} ${JSON.stringify(last.body)}`);
      return undefined;
    }, 30_000, 100).catch((e: unknown) => {
      throw new Error(`${(e as Error).message}; last answer ${last?.status} ${JSON.stringify(last?.body)}`);
    });
    if (ok.body.servedTo !== spiffeId) throw new Error(`orders saw caller ${String(ok.body.servedTo)}, not ${spiffeId}`);
    return { outcome: `200 allowed (order ${String(ok.body.id)} ${String(ok.body.status)}), x-writ-decision-id ${ok.headers.get('x-writ-decision-id') ?? 'missing'}`, value: undefined };
  });

  // 10. denied
  await step('POST /inventory/prod/SKU-1/adjust through writ proxy (a prod write outside the task)', async () => {
    const r = await http(`${proxyUrl}/inventory/prod/SKU-1/adjust`, { method: 'POST', headers: asAgent });
    if (r.status !== 403 || r.body.code !== 'ERR_ENFORCE_DENIED') throw new Error(`expected 403 ERR_ENFORCE_DENIED, got ${r.status} ${JSON.stringify(r.body)}`);
    const decisionId = r.headers.get('x-writ-decision-id') ?? '';
    // The policy reason is in the PDP's audit record of that decision (same correlation id).
    const lines = (await writOk(['audit', 'tail', '-n', '200', '--action', 'decision.made', '--json'], env)).split('\n').filter((l) => l.startsWith('{'));
    const list = lines.map((l) => JSON.parse(l) as { correlationId?: string; reasons?: string[] });
    const rec = list.find((e) => e.correlationId === decisionId);
    return { outcome: `403 denied, reason code ${String(r.body.code)}${rec?.reasons === undefined ? '' : ` (policy: ${rec.reasons.join(', ')})`}, x-writ-decision-id ${decisionId}`, value: undefined };
  });

  // 11. MCP: permitted tool
  const client = new Client({ name: 'triage-agent', version: '1.0.0' });
  await step('agent calls lookup_order through writ mcp-gateway', async () => {
    // Like the proxy, the gateway refuses everything until its revocation stream is live (503): retry the connect.
    await until('the gateway to accept the agent', async () => {
      try {
        await client.connect(new StreamableHTTPClientTransport(new URL(gatewayResource), { requestInit: { headers: { authorization: `Bearer ${tokens.gateway}` } } }));
        return true;
      } catch (e) {
        if ((e as { code?: unknown }).code !== 503) throw e;
        await client.close().catch(() => undefined);
        return undefined;
      }
    }, 30_000, 200);
    const listed = (await client.listTools()).tools.map((t) => t.name);
    if (listed.join(',') !== 'lookup_order') throw new Error(`tools/list should show only lookup_order, showed ${listed.join(', ')}`);
    const r = await client.callTool({ name: 'lookup_order', arguments: { order_id: '1001' } });
    const text = (r.content as { type: string; text?: string }[])[0]?.text ?? '';
    if (r.isError === true || !text.startsWith('order 1001')) throw new Error(`lookup_order failed: ${JSON.stringify(r.content)}`);
    return { outcome: `tools/list shows [${listed.join(', ')}]; lookup_order → "${text}"`, value: undefined };
  });

  // 12. MCP: forbidden tool
  await step('agent calls refund_order through writ mcp-gateway (not in its task)', async () => {
    const e = await client.callTool({ name: 'refund_order', arguments: { order_id: '1001', amount: 4990 } }).then(() => undefined, (err: unknown) => err);
    if (!(e instanceof McpError) || mcpRefusal(e) === undefined) throw new Error(`expected JSON-RPC error -32001 from the gateway, got ${e === undefined ? 'a result' : String(e)}`);
    const data = e.data as { code?: string; decisionId?: string } | undefined;
    return { outcome: `JSON-RPC error -32001 ${data?.code ?? ''}, decision ${data?.decisionId ?? '?'}`, value: undefined };
  });

  // 13. posture signal → cut everywhere
  await step('writ signal posture (score 20, disk-encryption failing) cuts the caller everywhere', async () => {
    let ackAt: number | undefined;
    // Each probe answers `allowed`, `denied: <how>` (the cut we wait for) or `other: <what>` (anything
    // else, e.g. a call in flight when its session was closed): polled again, reported if it persists.
    type Probe = { allowed: true } | { denied: string } | { other: string };
    const cut = async (what: string, probe: () => Promise<Probe>): Promise<{ at: number; how: string }> => {
      let other = '';
      for (;;) {
        const r = await probe().catch((e: unknown): Probe => ({ other: String(e) }));
        if ('denied' in r) return { at: Date.now(), how: r.denied };
        if ('other' in r) other = r.other;
        if (ackAt !== undefined && Date.now() > ackAt + 30_000) throw new Error(`${what} did not deny the caller within 30 s of the signal${other === '' ? ' (it still allowed it)' : `; last answer: ${other}`}`);
        await new Promise((r) => setTimeout(r, 5));
      }
    };
    // The signal is sent first, then both enforcement points are polled until each denies;
    // the 30 s patience counts once the server has acknowledged the signal.
    const sent = writOk(['signal', 'posture', spiffeId, '--score', '20', '--failing', 'disk-encryption', '--reason', 'scan-failed', '--json'], env).finally(() => {
      ackAt = Date.now();
    });
    const proxyCut = cut('writ proxy', async () => {
      const r = await http(`${proxyUrl}/orders/1001`, { headers: asAgent });
      if (r.status === 200) return { allowed: true };
      const code = String(r.body.code);
      return ['ERR_ENFORCE_CREDENTIAL_REVOKED', 'ERR_ENFORCE_DENIED'].includes(code) ? { denied: `${r.status} ${code}` } : { other: `${r.status} ${code}` };
    });
    const gatewayCut = cut('writ mcp-gateway', async () => {
      try {
        await client.callTool({ name: 'lookup_order', arguments: { order_id: '1001' } }, undefined, { timeout: 10_000 });
        return { allowed: true };
      } catch (e) {
        const how = mcpRefusal(e);
        return how === undefined ? { other: String(e) } : { denied: how };
      }
    });
    const [out, p, g] = await Promise.all([sent, proxyCut, gatewayCut]);
    const receipt = JSON.parse(out) as { signal: { id: string; receivedAt: string }; reevaluation?: { revoked: number; items: { type: string; outcome: string }[] } };
    const accepted = Date.parse(receipt.signal.receivedAt);
    const ms = (at: number): number => Math.max(0, at - accepted);
    const revoked = (receipt.reevaluation?.items ?? []).filter((i) => i.outcome === 'revoked').map((i) => i.type);
    return {
      outcome: `re-evaluation revoked ${revoked.length} (${revoked.join(', ')}); caller cut at writ proxy ${ms(p.at)} ms and at writ mcp-gateway ${ms(g.at)} ms after the server accepted the signal (proxy: ${p.how}; gateway: ${g.how})`,
      value: undefined,
    };
  });
  await client.close().catch(() => undefined);

  // 14. audit
  await step('writ audit verify', async () => {
    const out = (await writOk(['audit', 'verify'], env)).trim();
    if (!out.startsWith('audit chain ok')) throw new Error(`unexpected answer: ${out}`);
    return { outcome: out, value: undefined };
  });
}

// ------------------------------------------------------------------ run

let failed = false;

/** Report the failing step with the tail of every child's output, clean up, exit 1. */
function fail(why: string): void {
  if (failed) return;
  failed = true;
  clearTimeout(deadline);
  say(`[${String(current.n).padStart(2)}/${TOTAL_STEPS}] FAIL  ${current.title}: ${why}`);
  for (const p of procs) {
    const tail = p.output().trim().split('\n').slice(-8);
    if (tail.length > 0 && tail[0] !== '') say(`  --- last output of ${p.name}:\n${tail.map((l) => `  | ${l.slice(0, 400)}`).join('\n')}`);
  }
  say(`demo failed at step ${current.n} (${current.title})`);
  void cleanup().finally(() => process.exit(1));
}

const deadline = setTimeout(() => fail(`the whole run passed its deadline of ${opts.deadlineS} s`), opts.deadlineS * 1000);

for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    failed = true;
    clearTimeout(deadline);
    say(`demo interrupted (${sig}) during step ${current.n} (${current.title}); stopping every process`);
    void cleanup().finally(() => process.exit(130));
  });
}

const startedAt = Date.now();
say(`Writ end-to-end demo (${opts.server === undefined ? 'starting its own Writ' : `against ${opts.server}`}; working folder ${dir})`);
main().then(
  async () => {
    if (failed) return;
    clearTimeout(deadline);
    await cleanup();
    say(`demo ok: all ${TOTAL_STEPS} steps had the expected outcome (${Math.round((Date.now() - startedAt) / 1000)} s)`);
    process.exit(0);
  },
  (e: unknown) => fail(e instanceof Error ? e.message : String(e)),
);
