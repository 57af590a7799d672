/**
 * `writ mcp-gateway` as a process: --help, usage errors, and an MCP SDK
 * client reaching an SDK McpServer through it with a token from Writ; the
 * process writes one audit line per decided call, without any token.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { McpError } from '@modelcontextprotocol/sdk/types.js';
import type { TestServer } from '../support/server.ts';
import { writ as writProcess } from '../agent/process-support.ts';
import { AGENT, AgentTokenProvider, OWNER, spawnGateway, startGatewayWrit, startTask, startUpstream } from './mcp-support.ts';
import type { GatewayProcess, UpstreamMcp } from './mcp-support.ts';

function writ(args: string[], env: Record<string, string> = {}): ReturnType<typeof writProcess> {
  return writProcess(args, { env });
}

describe('writ mcp-gateway usage', () => {
  it('--help lists its options', async () => {
    const r = await writ(['mcp-gateway', '--help']);
    assert.equal(r.code, 0);
    for (const o of ['--listen HOST:PORT', '--upstream URL', '--resource URL', '--upstream-audience AUD', '--budget-total N', '--budget-tool NAME=N', '--no-revocations', '--pdp-mode MODE']) assert.ok(r.stdout.includes(o), o);
  });

  it('--pdp-mode is `remote` or `local`: anything else exits 2 with one line naming the option', async () => {
    const r = await writ(['mcp-gateway', '--server', 'http://127.0.0.1:1', '--listen', '127.0.0.1:0', '--upstream', 'http://127.0.0.1:1/mcp', '--pdp-mode', 'bogus'], { WRIT_TOKEN: 'x' });
    assert.equal(r.code, 2);
    assert.equal(r.stderr.trim(), 'writ mcp-gateway: --pdp-mode must be `remote` or `local`, not `bogus` (ERR_CLI_USAGE)');
  });

  it('needs --listen and --upstream, a PEP credential and well-formed budgets', async () => {
    const r = await writ(['mcp-gateway', '--server', 'http://127.0.0.1:1'], { WRIT_TOKEN: 'x' });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--listen and --upstream are required/);
    const none = await writ(['mcp-gateway', '--listen', '127.0.0.1:0', '--upstream', 'http://127.0.0.1:1/mcp'], { WRIT_TOKEN: '' });
    assert.equal(none.code, 2);
    assert.match(none.stderr, /no PEP credential/);
    const budget = await writ(['mcp-gateway', '--listen', '127.0.0.1:0', '--upstream', 'http://127.0.0.1:1/mcp', '--budget-tool', 'search'], { WRIT_TOKEN: 'x' });
    assert.equal(budget.code, 2);
    assert.match(budget.stderr, /--budget-tool must be NAME=N, not `search`/);
  });
});

describe('writ mcp-gateway against a real server and upstream', () => {
  let ts: TestServer;
  let upstream: UpstreamMcp;
  let gateway: GatewayProcess;
  let dir: string;
  let gatewayUrl: string;
  const output = () => gateway.output();

  before(async () => {
    const w = await startGatewayWrit();
    ts = w.ts;
    upstream = await startUpstream();
    dir = mkdtempSync(join(tmpdir(), 'writ-mcp-pep-'));
    const tokenFile = join(dir, 'pep.token');
    writeFileSync(tokenFile, `${w.pep}\n`, { mode: 0o600 });
    gateway = await spawnGateway(ts.url, tokenFile, upstream.url, ['--budget-tool', 'search=1']);
    gatewayUrl = gateway.url;
  });

  after(async () => {
    await gateway?.stop();
    await upstream.stop();
    await ts.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('an SDK client calls a permitted tool, is refused a forbidden one and its budget, and every call is an audit line', async () => {
    const task = await startTask(ts, ['tools:search', 'tools:read']);
    const provider = new AgentTokenProvider(ts, task, 'tools:search tools:read');
    const client = new Client({ name: 'triage-agent', version: '1.0.0' });
    await client.connect(new StreamableHTTPClientTransport(new URL(gatewayUrl), { authProvider: provider }));
    try {
      assert.deepEqual((await client.listTools()).tools.map((t) => t.name).sort(), ['read_file', 'search']);
      const ok = await client.callTool({ name: 'search', arguments: { query: 'cli' } });
      assert.deepEqual(ok.content, [{ type: 'text', text: 'results for cli' }]);
      const over = await client.callTool({ name: 'search', arguments: { query: 'again' } }).then(() => undefined, (e: unknown) => e);
      assert.ok(over instanceof McpError);
      assert.equal(over.code, -32001);
      assert.equal((over.data as { code: string }).code, 'ERR_ENFORCE_BUDGET_EXCEEDED');
      const forbidden = await client.callTool({ name: 'delete_repo', arguments: { name: 'x' } }).then(() => undefined, (e: unknown) => e);
      assert.ok(forbidden instanceof McpError);
      assert.equal(forbidden.code, -32001);
    } finally {
      await client.close();
    }
    const deadline = Date.now() + 10_000;
    const lines = () => output().split('\n').filter((l) => l.startsWith('{"msg":"audit"')).map((l) => JSON.parse(l) as { action: string; outcome: string; actor: { id: string }; target: { id: string }; details: Record<string, unknown> });
    while (lines().filter((l) => l.details.taskId === task).length < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
    const mine = lines().filter((l) => l.details.taskId === task);
    assert.deepEqual(mine.map((l) => [l.target.id, l.outcome]), [['search', 'success'], ['search', 'denied'], ['delete_repo', 'denied']]);
    for (const l of mine) {
      assert.equal(l.action, 'mcp.call.decided');
      assert.equal(l.actor.id, AGENT);
      assert.equal(l.details.onBehalfOf, OWNER);
      assert.equal(typeof l.details.decisionId, 'string');
    }
    assert.ok(!output().includes(provider.tokens()?.access_token ?? 'no-token'), 'no token in the output');
    assert.ok(!/eyJ[A-Za-z0-9_-]{20,}\./.test(output()), 'no JWT in the output');
  });
});
