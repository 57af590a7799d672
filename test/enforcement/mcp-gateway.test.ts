/**
 * `McpGateway` end to end with real components: a `@modelcontextprotocol/sdk`
 * Client gets its token from a real Writ server (401 → RFC 9728 metadata →
 * RFC 8414 metadata → token exchange with `resource`), and calls tools on an
 * SDK `McpServer` (Streamable HTTP) through the gateway, which asks Writ's
 * AuthZEN PDP and exchanges the token for the upstream.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { McpError } from '@modelcontextprotocol/sdk/types.js';
import { AccessTokenVerifier, CachingPdp, CallBudgets, McpGateway, MCP_DENIED, MCP_INTERNAL, RemotePdp, TokenExchanger } from '../../src/enforcement/index.ts';
import type { McpGatewayOptions } from '../../src/enforcement/index.ts';
import { AuditWriter, toOcsf } from '../../src/audit/index.ts';
import { MemoryAuditStore } from '../../src/audit/memory-store.test-support.ts';
import { Secret, systemClock } from '../../src/kernel/index.ts';
import { RevocationStreamClient } from '../../src/signals/index.ts';
import type { AuditRecord } from '../../src/kernel/index.ts';
import { loadOcsfSchema } from '../support/ocsf-schema.ts';
import type { TestServer } from '../support/server.ts';
import { AGENT, AgentTokenProvider, OWNER, TOKEN_EXCHANGE, TT_JWT, decodeHeader, decodePayload, startGatewayWrit, startTask, startUpstream, svid } from './mcp-support.ts';
import type { UpstreamMcp } from './mcp-support.ts';

interface RunningGateway {
  readonly gateway: McpGateway;
  readonly url: string;
  readonly records: AuditRecord[];
  stop(): Promise<void>;
}

let ts: TestServer;
let pep: string;
let upstream: UpstreamMcp;
let main: RunningGateway;
const clients: Client[] = [];

async function startGateway(o: { pdpUrl?: string; budgets?: CallBudgets; revocations?: McpGatewayOptions['revocations'] } = {}): Promise<RunningGateway> {
  let gateway: McpGateway | undefined;
  const server: Server = createServer((req, res) => {
    if (gateway === undefined) return void res.writeHead(503).end();
    gateway.handle(req, res).catch(() => res.destroy());
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', () => ok()));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/mcp`;
  const records: AuditRecord[] = [];
  const writer = new AuditWriter(new MemoryAuditStore(), systemClock, { flushEvents: 1, flushDelayMs: 0, maxBatchEvents: 16, queueLimit: 1000 });
  const options: McpGatewayOptions = {
    tokens: new AccessTokenVerifier({ issuer: ts.url, audience: url, clock: systemClock }),
    pdp: new CachingPdp(new RemotePdp({ url: o.pdpUrl ?? ts.url, credential: new Secret(pep), timeoutMs: 5000 }), { clock: systemClock, ttlMs: 0 }),
    exchanger: new TokenExchanger({ tokenEndpoint: `${ts.url}/oauth2/token`, clock: systemClock }),
    upstream: upstream.url,
    resource: url,
    authorizationServer: ts.url,
    clock: systemClock,
    audit: { append: async (e) => {
      const r = await writer.append(e);
      records.push(r);
      return r;
    } },
    ...(o.budgets === undefined ? {} : { budgets: o.budgets }),
    ...(o.revocations === undefined ? {} : { revocations: o.revocations }),
  };
  gateway = new McpGateway(options);
  return {
    gateway,
    url,
    records,
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((ok) => server.close(() => ok()));
    },
  };
}

async function connect(gatewayUrl: string, scopes: string[] = ['tools:search', 'tools:read']): Promise<{ client: Client; provider: AgentTokenProvider; task: string }> {
  const task = await startTask(ts, scopes);
  const provider = new AgentTokenProvider(ts, task, scopes.join(' '));
  const client = new Client({ name: 'triage-agent', version: '1.0.0' });
  await client.connect(new StreamableHTTPClientTransport(new URL(gatewayUrl), { authProvider: provider }));
  clients.push(client);
  return { client, provider, task };
}

async function callError(client: Client, name: string, args: Record<string, unknown>): Promise<McpError> {
  const e = await client.callTool({ name, arguments: args }).then(() => undefined, (err: unknown) => err);
  assert.ok(e instanceof McpError, `expected an McpError, got ${String(e)}`);
  return e;
}

before(async () => {
  ({ ts, pep } = await startGatewayWrit());
  upstream = await startUpstream();
  main = await startGateway({ budgets: new CallBudgets({ perTool: { search: 3 } }) });
});

after(async () => {
  for (const c of clients) await c.close().catch(() => undefined);
  await main.stop();
  await upstream.stop();
  await ts.stop();
});

test('the SDK client gets its token through Writ and tools/list shows only the permitted tools', async () => {
  const { client, provider, task } = await connect(main.url);
  assert.equal(provider.tokenRequests, 1, 'the SDK fetched one token after the 401');
  const claims = decodePayload(provider.tokens()?.access_token ?? '');
  assert.equal(claims.aud, main.url);
  assert.equal(claims.sub, OWNER);
  assert.deepEqual(claims.act, { sub: AGENT });
  assert.equal(claims.task, task);
  const list = await client.listTools();
  assert.deepEqual(list.tools.map((t) => t.name).sort(), ['read_file', 'search']);
  assert.ok(client.getServerVersion()?.name === 'docs-tools');
});

test('a permitted tool works; a forbidden tool is JSON-RPC -32001 and never reaches the upstream', async () => {
  const { client, task } = await connect(main.url);
  const ok = await client.callTool({ name: 'search', arguments: { query: 'rotation' } });
  assert.deepEqual(ok.content, [{ type: 'text', text: 'results for rotation' }]);

  const before = upstream.calls.length;
  const e = await callError(client, 'delete_repo', { name: 'writ' });
  assert.equal(e.code, MCP_DENIED);
  assert.match(e.message, /denied: denied by policy/);
  assert.equal((e.data as { code: string }).code, 'ERR_ENFORCE_DENIED');
  assert.equal(upstream.calls.length, before, 'the denied call did not reach the upstream');

  // Audited with both identities, the task and the decision id, as valid OCSF.
  const denied = main.records.find((r) => r.action === 'mcp.call.decided' && r.target?.id === 'delete_repo' && r.details.taskId === task);
  assert.ok(denied, 'the deny is audited');
  assert.equal(denied.outcome, 'denied');
  assert.equal(denied.actor.id, AGENT);
  assert.equal(denied.details.onBehalfOf, OWNER);
  assert.deepEqual(denied.details.delegation, [AGENT]);
  assert.equal(typeof denied.details.decisionId, 'string');
  const allowed = main.records.find((r) => r.target?.id === 'search' && r.details.taskId === task);
  assert.equal(allowed?.outcome, 'success');
  const schema = loadOcsfSchema();
  for (const r of [denied, allowed]) {
    assert.ok(r);
    const event = toOcsf(r, { name: 'writ', version: '0.1.0' });
    assert.deepEqual(schema.validate(event), []);
    assert.ok(!JSON.stringify(event).includes('eyJ'), 'no token in the audit event');
  }
});

test('arguments outside the task scope are denied', async () => {
  const { client } = await connect(main.url);
  const ok = await client.callTool({ name: 'read_file', arguments: { path: '/docs/rotation.md' } });
  assert.deepEqual(ok.content, [{ type: 'text', text: 'contents of /docs/rotation.md' }]);
  const e = await callError(client, 'read_file', { path: '/etc/shadow' });
  assert.equal(e.code, MCP_DENIED);
  assert.equal((e.data as { code: string }).code, 'ERR_ENFORCE_DENIED');
  assert.ok(!upstream.calls.some((c) => (c.args as { path?: string }).path === '/etc/shadow'));
});

test('a tool outside the task\'s declared tools is denied and not listed', async () => {
  const { client } = await connect(main.url, ['tools:search']);
  assert.deepEqual((await client.listTools()).tools.map((t) => t.name), ['search']);
  const e = await callError(client, 'read_file', { path: '/docs/a.md' });
  assert.equal(e.code, MCP_DENIED);
});

test('the upstream sees an exchanged token naming the agent in act, never the client token', async () => {
  const { client, provider } = await connect(main.url);
  const seenBefore = upstream.authorizations.length;
  await client.callTool({ name: 'search', arguments: { query: 'act' } });
  const clientToken = provider.tokens()?.access_token ?? '';
  const seen = upstream.authorizations.slice(seenBefore);
  assert.ok(seen.length > 0);
  for (const a of upstream.authorizations) assert.ok(!a.includes(clientToken), 'the client token never reaches the upstream');
  const token = (seen.at(-1) ?? '').replace(/^Bearer /, '');
  assert.equal(decodeHeader(token).typ, 'at+jwt');
  const c = decodePayload(token);
  assert.equal(c.aud, upstream.url);
  assert.equal(c.sub, OWNER);
  assert.deepEqual(c.act, { sub: AGENT });
  assert.equal(c.task, decodePayload(clientToken).task);
  assert.notEqual(c.jti, decodePayload(clientToken).jti);
});

test('no token and a token for another audience are 401 with the resource metadata challenge', async () => {
  const init = { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'curl', version: '0' } } };
  const headers = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' };
  const prm = `${new URL(main.url).origin}/.well-known/oauth-protected-resource/mcp`;

  const none = await fetch(main.url, { method: 'POST', headers, body: JSON.stringify(init) });
  assert.equal(none.status, 401);
  assert.equal(none.headers.get('www-authenticate'), `Bearer resource_metadata="${prm}", DPoP algs="ES256 ES384 PS256 RS256 EdDSA"`);

  const r = await fetch(`${ts.url}/oauth2/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: TOKEN_EXCHANGE, subject_token: await svid(ts, OWNER), subject_token_type: TT_JWT, actor_token: await svid(ts, AGENT), actor_token_type: TT_JWT, audience: 'https://other.example.com/mcp' }),
  });
  assert.equal(r.status, 200);
  const other = ((await r.json()) as { access_token: string }).access_token;
  const res = await fetch(main.url, { method: 'POST', headers: { ...headers, authorization: `Bearer ${other}` }, body: JSON.stringify(init) });
  assert.equal(res.status, 401);
  assert.equal(res.headers.get('www-authenticate'), `Bearer resource_metadata="${prm}", error="invalid_token", DPoP algs="ES256 ES384 PS256 RS256 EdDSA"`);
  assert.deepEqual(await res.json(), { error: 'invalid_token', error_description: 'access token is not for this audience', code: 'ERR_ENFORCE_CREDENTIAL_INVALID' });
  assert.ok(!upstream.authorizations.some((a) => a.includes(other)));

  const meta = await fetch(prm);
  assert.equal(meta.status, 200);
  const doc = (await meta.json()) as Record<string, unknown>;
  assert.equal(doc.resource, main.url);
  assert.deepEqual(doc.authorization_servers, [ts.url]);
});

test('a budget overrun is denied with -32001', async () => {
  const { client } = await connect(main.url);
  for (let i = 0; i < 3; i++) await client.callTool({ name: 'search', arguments: { query: `q${i}` } });
  const before = upstream.calls.length;
  const e = await callError(client, 'search', { query: 'one too many' });
  assert.equal(e.code, MCP_DENIED);
  assert.equal((e.data as { code: string }).code, 'ERR_ENFORCE_BUDGET_EXCEEDED');
  assert.match(e.message, /tool-budget-exceeded: limit 3/);
  assert.equal(upstream.calls.length, before);
  // Another tool still has budget in the same task.
  await client.callTool({ name: 'read_file', arguments: { path: '/docs/x.md' } });
});

test('closing the sessions of an agent ends them and refuses their token', async () => {
  const { client } = await connect(main.url);
  await client.callTool({ name: 'search', arguments: { query: 'before' } });
  const n = await main.gateway.closeSessionsFor(AGENT);
  assert.ok(n >= 1);
  const after = await client.callTool({ name: 'search', arguments: { query: 'after' } }).then(() => 'allowed', () => 'refused');
  assert.equal(after, 'refused');
  assert.ok(!upstream.calls.some((c) => (c.args as { query?: string }).query === 'after'));
});

test('fail closed: with the PDP unreachable every call is refused and no tool is listed', async () => {
  const dead = createServer();
  await new Promise<void>((ok) => dead.listen(0, '127.0.0.1', () => ok()));
  const deadUrl = `http://127.0.0.1:${(dead.address() as AddressInfo).port}`;
  await new Promise<void>((ok) => dead.close(() => ok()));
  const gw = await startGateway({ pdpUrl: deadUrl });
  try {
    const { client } = await connect(gw.url);
    assert.deepEqual((await client.listTools()).tools, []);
    const before = upstream.calls.length;
    const e = await callError(client, 'search', { query: 'x' });
    assert.equal(e.code, MCP_INTERNAL);
    assert.equal((e.data as { code: string }).code, 'ERR_ENFORCE_PDP_UNAVAILABLE');
    assert.equal(upstream.calls.length, before);
  } finally {
    await gw.stop();
  }
});

test('protocol hygiene: no batches, Mcp-* headers must match the body, unknown methods and foreign origins are refused', async () => {
  const { client, provider } = await connect(main.url);
  await client.listTools();
  const token = provider.tokens()?.access_token ?? '';
  const post = async (body: unknown, extra: Record<string, string> = {}) => {
    const r = await fetch(main.url, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', authorization: `Bearer ${token}`, ...extra }, body: JSON.stringify(body) });
    return { status: r.status, json: (await r.json()) as { error?: { code: number; message: string; data?: { code?: string } } } };
  };
  const call = { jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'search', arguments: { query: 'x' } } };
  const batch = await post([call, call]);
  assert.equal(batch.status, 400);
  assert.deepEqual(batch.json.error, { code: -32600, message: 'JSON-RPC batches are not supported' });
  const mismatch = await post(call, { 'mcp-method': 'tools/call', 'mcp-name': 'delete_repo' });
  assert.equal(mismatch.status, 400);
  assert.deepEqual(mismatch.json.error, { code: -32020, message: '`Mcp-Name` does not match the body' });
  const unknown = await post({ jsonrpc: '2.0', id: 8, method: 'tasks/cancel', params: {} });
  assert.equal(unknown.status, 200);
  assert.equal(unknown.json.error?.code, MCP_DENIED);
  assert.equal(unknown.json.error?.data?.code, 'ERR_ENFORCE_METHOD_NOT_ALLOWED');
  const origin = await post(call, { origin: 'https://evil.example.com' });
  assert.equal(origin.status, 403);
  assert.equal(origin.json.error?.message, 'origin `https://evil.example.com` is not allowed');
  // resources/read and prompts/get are decided too: this policy allows neither.
  const read = await post({ jsonrpc: '2.0', id: 10, method: 'resources/read', params: { uri: 'file:///etc/passwd' } });
  assert.equal(read.json.error?.code, MCP_DENIED);
  assert.equal(read.json.error?.data?.code, 'ERR_ENFORCE_DENIED');
  const prompt = await post({ jsonrpc: '2.0', id: 11, method: 'prompts/get', params: { name: 'exfiltrate', arguments: {} } });
  assert.equal(prompt.json.error?.code, MCP_DENIED);
  assert.ok(main.records.some((r) => r.target?.type === 'resource' && r.target.id === 'file:///etc/passwd' && r.outcome === 'denied'));
  const noName = await post({ jsonrpc: '2.0', id: 9, method: 'tools/call', params: { arguments: {} } });
  assert.equal(noName.json.error?.code, -32600);
  assert.equal(noName.json.error?.data?.code, 'ERR_ENFORCE_MCP_INVALID');
});

// Last: the revocation marks AGENT revoked on this Writ server.
/** A gateway following Writ's revocation stream, with one agent session open after a first call. */
async function withFollowingGateway(fn: (o: { gw: RunningGateway; provider: AgentTokenProvider; open: number; deadline: number }) => Promise<void>): Promise<void> {
  let gw: RunningGateway | undefined;
  const stream = new RevocationStreamClient({ url: ts.url, token: pep, clock: systemClock, stalenessMs: 60_000, onEvent: (e) => void gw?.gateway.onRevocation(e) });
  stream.start();
  try {
    gw = await startGateway({ revocations: stream });
    const deadline = Date.now() + 20_000;
    while (!stream.connected && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
    assert.ok(stream.connected, 'the revocation stream connected');
    const { client, provider } = await connect(gw.url);
    await client.callTool({ name: 'search', arguments: { query: 'before revocation' } });
    const open = gw.gateway.sessionCount;
    assert.ok(open >= 1);
    await fn({ gw, provider, open, deadline });
  } finally {
    stream.stop();
    await gw?.stop();
  }
}

/** Wait for the session count to drop below `open`; then the token cannot open a new session. */
async function assertSessionClosedAndTokenRefused(gw: RunningGateway, provider: AgentTokenProvider, open: number, deadline: number): Promise<void> {
  while (gw.gateway.sessionCount >= open && Date.now() < deadline) await new Promise((res) => setTimeout(res, 25));
  assert.ok(gw.gateway.sessionCount < open, 'the session was closed by the revocation');
  const init = { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'curl', version: '0' } } };
  const res = await fetch(gw.url, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', authorization: `Bearer ${provider.tokens()?.access_token ?? ''}` }, body: JSON.stringify(init) });
  assert.equal(res.status, 401);
  assert.deepEqual(await res.json(), { error: 'invalid_token', error_description: 'access token was revoked', code: 'ERR_ENFORCE_CREDENTIAL_REVOKED' });
}

test('a gateway whose revocation stream has not vouched for the present refuses every call: 503, ERR_ENFORCE_REVOCATION_STALE', async () => {
  // Never started: it has heard nothing, so it cannot say the caller is not revoked.
  const silent = new RevocationStreamClient({ url: ts.url, token: pep, clock: systemClock, stalenessMs: 1000 });
  const gw = await startGateway({ revocations: silent });
  try {
    const r = await fetch(`${ts.url}/oauth2/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: TOKEN_EXCHANGE, subject_token: await svid(ts, OWNER), subject_token_type: TT_JWT, actor_token: await svid(ts, AGENT), actor_token_type: TT_JWT, resource: gw.url }),
    });
    assert.equal(r.status, 200);
    const token = ((await r.json()) as { access_token: string }).access_token;
    const init = { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'curl', version: '0' } } };
    const before = upstream.calls.length;
    const res = await fetch(gw.url, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', authorization: `Bearer ${token}` }, body: JSON.stringify(init) });
    assert.equal(res.status, 503);
    assert.equal(res.headers.get('retry-after'), '5');
    assert.deepEqual(await res.json(), { jsonrpc: '2.0', id: null, error: { code: MCP_INTERNAL, message: 'revocation state is unknown (stream stale): refused', data: { code: 'ERR_ENFORCE_REVOCATION_STALE' } } });
    assert.equal(upstream.calls.length, before);
  } finally {
    await gw.stop();
  }
});

test('a subject revoked on Writ\'s revocation stream loses its sessions and its token', async () => {
  await withFollowingGateway(async ({ gw, provider, open, deadline }) => {
    const r = await ts.call('POST', '/admin/v1/revocations', { body: { kind: 'subject-revoked', subject: AGENT, reason: 'agent-compromised' } });
    assert.equal(r.status, 201, r.text);
    await assertSessionClosedAndTokenRefused(gw, provider, open, deadline);
  });
});

test('a posture signal for the token\'s subject: re-evaluation revokes the token and the gateway closes the live session', async () => {
  try {
    await withFollowingGateway(async ({ gw, provider, open, deadline }) => {
      const jti = String(decodePayload(provider.tokens()?.access_token ?? '').jti);
      const sig = await ts.call('POST', '/admin/v1/signals', { body: { type: 'posture-changed', subject: OWNER, score: 10, failingChecks: ['edr-missing'] } });
      assert.equal(sig.status, 201, sig.text);
      const item = (sig.json.reevaluation.items as { id: string; outcome: string }[]).find((i) => i.id === jti);
      assert.equal(item?.outcome, 'revoked', JSON.stringify(sig.json.reevaluation));
      await assertSessionClosedAndTokenRefused(gw, provider, open, deadline);
    });
  } finally {
    // Later tests of this file see a healthy owner again.
    await ts.call('POST', '/admin/v1/signals', { body: { type: 'posture-changed', subject: OWNER, score: 95, failingChecks: [] } });
  }
});
