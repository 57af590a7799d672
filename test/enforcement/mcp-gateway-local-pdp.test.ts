// `writ mcp-gateway --pdp-mode local` against a real `writ up` and an SDK
// upstream, with the MCP SDK client: it decides tool calls (and filters
// tool lists) in process with the server's synced policy bundle, as a
// remote-mode gateway does, writes the local `decision.made` records as audit
// lines on stderr, follows a policy change through the revocation stream,
// and keeps deciding once the server is gone, where the
// remote-mode gateway fails closed.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { McpError } from '@modelcontextprotocol/sdk/types.js';
import type { TestServer } from '../support/server.ts';
import { until } from './support.ts';
import { AgentTokenProvider, spawnGateway, startGatewayWrit, startTask, startUpstream } from './mcp-support.ts';
import type { GatewayProcess, UpstreamMcp } from './mcp-support.ts';

interface AuditLine {
  action: string;
  outcome: string;
  target?: { id: string };
  details: Record<string, unknown>;
}

function auditLines(out: string): AuditLine[] {
  return out.split('\n').filter((l) => l.startsWith('{"msg":"audit"')).map((l) => JSON.parse(l) as AuditLine);
}

/** The JSON-RPC error of a refused call (undefined when the call succeeded). */
async function refusal(p: Promise<unknown>): Promise<McpError | undefined> {
  const e = await p.then(() => undefined, (x: unknown) => x);
  if (e === undefined) return undefined;
  assert.ok(e instanceof McpError, String(e));
  return e;
}

describe('writ mcp-gateway --pdp-mode local', () => {
  let ts: TestServer;
  let upstream: UpstreamMcp;
  let local: GatewayProcess;
  let remote: GatewayProcess;
  let dir: string;
  let policyDir: string;
  const clients: Client[] = [];
  let localClient: Client;
  let remoteClient: Client;
  let serverStopped = false;

  before(async () => {
    const w = await startGatewayWrit();
    ts = w.ts;
    policyDir = w.dir;
    upstream = await startUpstream();
    dir = mkdtempSync(join(tmpdir(), 'writ-mcp-local-'));
    const tokenFile = join(dir, 'pep.token');
    writeFileSync(tokenFile, `${w.pep}\n`, { mode: 0o600 });
    local = await spawnGateway(ts.url, tokenFile, upstream.url, ['--pdp-mode', 'local']);
    remote = await spawnGateway(ts.url, tokenFile, upstream.url);
    const task = await startTask(ts, ['tools:search', 'tools:read']);
    for (const g of [local, remote]) {
      const c = new Client({ name: 'triage-agent', version: '1.0.0' });
      await c.connect(new StreamableHTTPClientTransport(new URL(g.url), { authProvider: new AgentTokenProvider(ts, task, 'tools:search tools:read') }));
      clients.push(c);
    }
    [localClient, remoteClient] = clients as [Client, Client];
  });

  after(async () => {
    for (const c of clients) await c.close().catch(() => undefined);
    await local?.stop();
    await remote?.stop();
    await upstream?.stop();
    if (!serverStopped) await ts?.stop();
    rmSync(dir, { recursive: true, force: true });
    rmSync(policyDir, { recursive: true, force: true });
  });

  it('says it decides locally, allows, denies and filters tool lists as the remote PDP does, and audits each local decision on stderr', async () => {
    const active = (await ts.call('GET', '/admin/v1/policy')).json.activeVersion as string;
    assert.ok(local.output().includes(`{"msg":"policy","first":"updated","version":"${active}"}`), local.output());
    assert.match(local.output(), new RegExp(`writ mcp-gateway: listening on 127\\.0\\.0\\.1:\\d+, resource ${local.url.replace(/[.]/g, '\\.')}, upstream ${upstream.url.replace(/[.]/g, '\\.')}, tokens from ${ts.url.replace(/[.]/g, '\\.')}, deciding locally with the policy bundle of ${ts.url.replace(/[.]/g, '\\.')}/v1/policy/bundle`));
    assert.match(remote.output(), /deciding through http:\/\/127\.0\.0\.1:\d+\/access\/v1\/evaluation/);

    for (const c of [localClient, remoteClient]) {
      assert.deepEqual((await c.listTools()).tools.map((t) => t.name).sort(), ['read_file', 'search']);
      const ok = await c.callTool({ name: 'search', arguments: { query: 'local' } });
      assert.deepEqual(ok.content, [{ type: 'text', text: 'results for local' }]);
      const docs = await c.callTool({ name: 'read_file', arguments: { path: '/docs/a.md' } });
      assert.deepEqual(docs.content, [{ type: 'text', text: 'contents of /docs/a.md' }]);
      for (const [name, args] of [['read_file', { path: '/etc/passwd' }], ['delete_repo', { name: 'x' }]] as const) {
        const e = await refusal(c.callTool({ name, arguments: args }));
        assert.equal(e?.code, -32001, name);
        assert.equal((e?.data as { code: string }).code, 'ERR_ENFORCE_DENIED', name);
      }
    }
    assert.equal(upstream.calls.filter((c) => c.name === 'delete_repo' || (c.name === 'read_file' && (c.args as { path: string }).path === '/etc/passwd')).length, 0);

    // Each local decision is a `decision.made` audit line with the id of the gateway's own `mcp.call.decided` line.
    const lines = await until('the audit lines of the four calls', async () => {
      const l = auditLines(local.output());
      return l.filter((x) => x.action === 'mcp.call.decided').length >= 4 ? l : undefined;
    });
    const decided = lines.filter((x) => x.action === 'mcp.call.decided');
    assert.deepEqual(decided.map((x) => [x.target?.id, x.outcome]), [['search', 'success'], ['read_file', 'success'], ['read_file', 'denied'], ['delete_repo', 'denied']]);
    for (const d of decided) {
      const made = lines.find((x) => x.action === 'decision.made' && x.details.decisionId === d.details.decisionId);
      assert.ok(made !== undefined, `no decision.made for ${d.target?.id} ${d.outcome}`);
      assert.equal(made.details.decision, d.outcome === 'success' ? 'allow' : 'deny');
      assert.equal(made.details.policyVersion, active);
      assert.equal(made.details.requestedBy, 'writ-mcp-gateway');
    }
    // The remote gateway's decisions are in the server's log, not on its stderr.
    assert.equal(auditLines(remote.output()).filter((x) => x.action === 'decision.made').length, 0);
    assert.ok(!/eyJ[A-Za-z0-9_-]{20,}\./.test(local.output()), 'no JWT in the output');
  });

  it('a policy change on the server reaches the local gateway through the revocation stream, before its 30 s poll', async () => {
    const docs = await localClient.callTool({ name: 'read_file', arguments: { path: '/docs/b.md' } });
    assert.deepEqual(docs.content, [{ type: 'text', text: 'contents of /docs/b.md' }]);
    writeFileSync(join(policyDir, 'no-read.cedar'), '@id("no-read-file")\nforbid (principal, action == Writ::Action::"tools/call", resource == Writ::Tool::"read_file");\n');
    const reload = await ts.call('POST', '/admin/v1/policy/reload');
    assert.equal(reload.status, 200, reload.text);
    const next = reload.json.activeVersion as string;
    await until('the local gateway to refuse read_file', async () => ((await refusal(localClient.callTool({ name: 'read_file', arguments: { path: '/docs/b.md' } })))?.code === -32001 ? true : undefined), 20_000);
    assert.match(local.output(), new RegExp(`"msg":"policy","updated":"${next}"`));
    const e = await refusal(remoteClient.callTool({ name: 'read_file', arguments: { path: '/docs/b.md' } }));
    assert.equal((e?.data as { code: string }).code, 'ERR_ENFORCE_DENIED');
    assert.deepEqual((await localClient.listTools()).tools.map((t) => t.name), ['search']);
  });

  it('with the server gone, the local gateway still allows the permitted call and denies the forbidden one; the remote one fails closed', async () => {
    serverStopped = true;
    await ts.stop();
    const ok = await localClient.callTool({ name: 'search', arguments: { query: 'offline' } });
    assert.deepEqual(ok.content, [{ type: 'text', text: 'results for offline' }]);
    const forbidden = await refusal(localClient.callTool({ name: 'delete_repo', arguments: { name: 'x' } }));
    assert.equal(forbidden?.code, -32001);
    assert.equal((forbidden?.data as { code: string }).code, 'ERR_ENFORCE_DENIED');
    const failed = await refusal(remoteClient.callTool({ name: 'search', arguments: { query: 'offline' } }));
    assert.equal(failed?.code, -32603);
    assert.equal((failed?.data as { code: string }).code, 'ERR_ENFORCE_PDP_UNAVAILABLE');
    assert.equal(upstream.calls.filter((c) => (c.args as { query?: string }).query === 'offline').length, 1);
  });
});

describe('writ mcp-gateway --pdp-mode local without a policy bundle', () => {
  it('starts as the proxy does, logs why no policy set serves, and refuses every call with −32603 ERR_ENFORCE_POLICY_UNAVAILABLE', async () => {
    const w = await startGatewayWrit();
    const upstream = await startUpstream();
    const dir = mkdtempSync(join(tmpdir(), 'writ-mcp-nobundle-'));
    let gateway: GatewayProcess | undefined;
    let client: Client | undefined;
    try {
      // A credential the bundle endpoint refuses (role `auditor`, not `pep`); the stream would refuse it too, so it is not followed.
      const a = await w.ts.call('POST', '/admin/v1/principals', { body: { name: 'auditor', role: 'auditor' } });
      assert.equal(a.status, 201, a.text);
      const tokenFile = join(dir, 'auditor.token');
      writeFileSync(tokenFile, `${a.json.token as string}\n`, { mode: 0o600 });
      gateway = await spawnGateway(w.ts.url, tokenFile, upstream.url, ['--pdp-mode', 'local', '--no-revocations']);
      assert.ok(gateway.output().includes('{"msg":"policy","error":"cannot fetch the policy bundle: the server answered status 403 (ERR_GOV_FORBIDDEN); no set serves (every request is denied)"}'), gateway.output());
      assert.ok(gateway.output().includes('{"msg":"policy","first":"unavailable","version":null}'), gateway.output());
      assert.match(gateway.output(), /deciding locally with the policy bundle of/);
      const task = await startTask(w.ts, ['tools:search']);
      client = new Client({ name: 'triage-agent', version: '1.0.0' });
      await client.connect(new StreamableHTTPClientTransport(new URL(gateway.url), { authProvider: new AgentTokenProvider(w.ts, task, 'tools:search') }));
      const e = await refusal(client.callTool({ name: 'search', arguments: { query: 'x' } }));
      assert.equal(e?.code, -32603);
      assert.equal((e?.data as { code: string }).code, 'ERR_ENFORCE_POLICY_UNAVAILABLE');
      assert.equal(upstream.calls.length, 0);
      assert.ok(!gateway.output().includes(a.json.token as string), 'the credential reached the output');
    } finally {
      await client?.close().catch(() => undefined);
      await gateway?.stop();
      await upstream.stop();
      await w.ts.stop();
      rmSync(dir, { recursive: true, force: true });
      rmSync(w.dir, { recursive: true, force: true });
    }
  });
});
