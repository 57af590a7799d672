/**
 * End to end against a real server: `writ up`, an entry for this test's uid
 * and a join token through the admin API, `writ agent` attesting with the
 * token, `writ svid fetch|jwt` as the workload; the SVIDs verified with
 * openssl against the server's served bundle and with jose against its JWKS.
 * Then a server outage (the server process stopped and started again on the
 * same store) and a node eviction. The server runs its mutual-TLS listener,
 * so once attested the agent calls the node API there with its node SVID.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createRemoteJWKSet, jwtVerify } from 'jose';
import { WRIT, freePort, waitFor, writ } from './process-support.ts';

const uid = process.getuid?.() ?? 0;
const TD = 'writ.local';
const WEB = `spiffe://${TD}/e2e/web`;

interface Proc {
  readonly child: ChildProcess;
  output(): string;
  readonly exited: Promise<number | null>;
}

function start(args: string[], env: NodeJS.ProcessEnv = {}): Proc {
  const child = spawn(process.execPath, [WRIT, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env } });
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  return { child, output: () => out, exited };
}

describe('writ agent against a real writ up server', { skip: process.platform !== 'linux' ? 'the agent attests callers on Linux only' : false }, () => {
  let dir: string;
  let url: string;
  let port: number;
  let tlsPort: number;
  let serverDataDir: string;
  let server: Proc;
  let agent: Proc;
  let token: string;
  let socket: string;
  let agentData: string;

  const startServer = async (): Promise<Proc> => {
    const p = start(['up', '--listen', `127.0.0.1:${port}`, '--tls-listen', `127.0.0.1:${tlsPort}`, '--data-dir', serverDataDir, '--log-level', 'warn']);
    try {
      await waitFor('writ up to listen', () => (p.output().includes(`writ: mutual TLS on https://localhost:${tlsPort} as spiffe://${TD}/writ/server`) ? true : p.child.exitCode !== null ? (() => { throw new Error(p.output()); })() : undefined));
    } catch (e) {
      // Not yet assigned to `server`, so `after` would not stop it: a live child keeps the test file from ever ending.
      if (p.child.exitCode === null) {
        p.child.kill('SIGKILL');
        await p.exited;
      }
      throw e;
    }
    return p;
  };

  const admin = async (method: string, path: string, body?: unknown): Promise<{ status: number; json: any }> => {
    const res = await fetch(`${url}${path}`, { method, headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) }, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
    const text = await res.text();
    return { status: res.status, json: text === '' ? undefined : JSON.parse(text) };
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'writ-agent-e2e-'));
    chmodSync(dir, 0o755);
    serverDataDir = join(dir, 'server');
    port = await freePort();
    tlsPort = await freePort();
    url = `http://127.0.0.1:${port}`;
    server = await startServer();
    token = readFileSync(join(serverDataDir, 'admin.token'), 'utf8').trim();
    socket = join(dir, 'agent.sock');
    agentData = join(dir, 'agent');
  });

  after(async () => {
    for (const p of [agent, server]) {
      if (p !== undefined && p.child.exitCode === null) {
        p.child.kill('SIGKILL');
        await p.exited;
      }
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it('attests with a join token, serves an entry for this uid, and the SVIDs verify against the served bundle', async () => {
    const jt = await admin('POST', '/admin/v1/join-tokens', { ttlSeconds: 300 });
    assert.equal(jt.status, 201, JSON.stringify(jt.json));
    const entry = await admin('POST', '/admin/v1/entries', {
      spiffeId: WEB,
      nodeSelectors: [`join_token:id:${jt.json.id}`],
      selectors: [`unix:uid:${uid}`],
      owner: { team: 'platform', contact: 'oncall@example.org' },
    });
    assert.equal(entry.status, 201, JSON.stringify(entry.json));
    const tokenFile = join(dir, 'join-token');
    writeFileSync(tokenFile, jt.json.token, { mode: 0o600 });

    agent = start(['agent', '--server', url, '--join-token', jt.json.token, '--socket', socket, '--data-dir', agentData, '--sync-interval', '1', '--log-level', 'warn']);
    await waitFor('the agent to serve', () => (agent.output().includes('writ agent: serving the Workload API') ? true : agent.child.exitCode !== null ? (() => { throw new Error(agent.output()); })() : undefined));
    assert.match(agent.output(), new RegExp(`as spiffe://${TD}/writ/node/[0-9a-f]+ `));

    const out = join(dir, 'svid');
    // The agent serves before its first sync has brought the SVIDs; the Workload API then holds the
    // call until they arrive, which on a loaded machine can take longer than the CLI's 10 s default.
    const r = await writ(['svid', 'fetch', '--socket', socket, '--out', out, '--timeout', '60']);
    assert.equal(r.code, 0, r.stderr);
    const leaf = new X509Certificate(readFileSync(join(out, 'svid.pem')));
    assert.equal(r.stdout, `${WEB}: wrote svid.pem, svid_key.pem, bundle.pem to ${out} (serial ${leaf.serialNumber.toLowerCase()}, expires ${new Date(leaf.validTo).toISOString()})\n`);
    // The server's own bundle, fetched from it, not from the agent.
    const served = await (await fetch(`${url}/bundle.pem`)).text();
    writeFileSync(join(dir, 'served-bundle.pem'), served);
    assert.equal(readFileSync(join(out, 'bundle.pem'), 'utf8'), served);
    for (const purpose of ['sslclient', 'sslserver']) {
      const v = execFileSync('openssl', ['verify', '-purpose', purpose, '-CAfile', join(dir, 'served-bundle.pem'), '-untrusted', join(out, 'svid.pem'), join(out, 'svid.pem')]).toString();
      assert.equal(v, `${join(out, 'svid.pem')}: OK\n`);
    }
    // writ bundle show: the same PEM from the Workload API and from the server's bundle endpoint.
    const viaAgent = await writ(['bundle', 'show', '--socket', socket]);
    const viaServer = await writ(['bundle', 'show', '--server', url]);
    assert.equal(viaAgent.code, 0, viaAgent.stderr);
    assert.equal(viaAgent.stdout, served);
    assert.equal(viaServer.stdout, served);
    const doc = JSON.parse((await writ(['bundle', 'show', '--server', url, '--format', 'spiffe'])).stdout) as { spiffe_sequence: number; spiffe_refresh_hint: number };
    assert.ok(Number.isInteger(doc.spiffe_sequence) && doc.spiffe_refresh_hint > 0);
    // The server recorded the issuance for this entry and node.
    const nodes = await admin('GET', '/admin/v1/nodes');
    assert.equal(nodes.json.nodes.length, 1);
    // Once attested, the agent called the node API over mutual TLS with its node SVID.
    const issued = (await admin('GET', '/admin/v1/audit/events?action=svid.issued&limit=1000')).json.events as { details: { spiffeId: string; nodeAuth?: string } }[];
    const forWeb = issued.filter((e) => e.details.spiffeId === WEB);
    assert.ok(forWeb.length >= 1);
    assert.deepEqual([...new Set(forWeb.map((e) => e.details.nodeAuth))], ['mtls']);

    const jwt = await writ(['svid', 'jwt', '--audience', 'https://e2e.example.org', '--socket', socket]);
    assert.equal(jwt.code, 0, jwt.stderr);
    const { payload } = await jwtVerify(jwt.stdout.trimEnd(), createRemoteJWKSet(new URL(`${url}/keys`)), { audience: 'https://e2e.example.org' });
    assert.equal(payload.sub, WEB);

    const st = await writ(['agent', 'status', '--data-dir', agentData, '--json']);
    assert.equal(st.code, 0, st.stdout);
    const status = JSON.parse(st.stdout) as { state: string; entries: { id: string; spiffeId: string }[] };
    assert.equal(status.state, 'ready');
    assert.deepEqual(status.entries.map((e) => [e.id, e.spiffeId]), [[entry.json.id, WEB]]);
  });

  it('serves cached SVIDs while the server is down, and recovers when it is back', async () => {
    server.child.kill('SIGTERM');
    assert.equal(await server.exited, 0);
    const degraded = await waitFor('degraded status', async () => {
      const s = await writ(['agent', 'status', '--data-dir', agentData, '--json']);
      const st = JSON.parse(s.stdout) as { state: string; message: string; server: { outageSince: string } };
      return st.state === 'degraded' ? st : undefined;
    });
    assert.equal(degraded.message, `server unreachable since ${degraded.server.outageSince}; serving 1 cached X.509-SVID(s) until they expire`);
    const r = await writ(['svid', 'fetch', '--socket', socket, '--out', join(dir, 'outage')]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(readFileSync(join(dir, 'outage', 'svid.pem'), 'utf8'), readFileSync(join(dir, 'svid', 'svid.pem'), 'utf8'));

    server = await startServer();
    await waitFor('ready status', async () => {
      const s = await writ(['agent', 'status', '--data-dir', agentData, '--json']);
      return s.code === 0 && (JSON.parse(s.stdout) as { state: string }).state === 'ready' ? true : undefined;
    });
  });

  it('stops serving everything once the node is evicted', async () => {
    const nodes = await admin('GET', '/admin/v1/nodes');
    const id = nodes.json.nodes[0].id as string;
    // The operator's command, as documented: `writ node evict`.
    const ev = await writ(['node', 'evict', id, '--server', url, '--token-file', join(serverDataDir, 'admin.token')]);
    assert.equal(ev.code, 0, ev.stderr);
    assert.match(ev.stderr, new RegExp(`^evicted node ${id} \\(spiffe://${TD.replace(/\./g, '\\.')}/writ/node/${id}\\)\n$`));
    const denied = await waitFor('the agent to stop serving', async () => {
      const r = await writ(['svid', 'fetch', '--socket', socket, '--out', join(dir, 'evicted')]);
      return r.code === 1 ? r : undefined;
    });
    assert.equal(denied.stderr, 'writ svid fetch: no identity issued (PERMISSION_DENIED)\n');
    const s = await writ(['agent', 'status', '--data-dir', agentData, '--json']);
    assert.equal(s.code, 1);
    const st = JSON.parse(s.stdout) as { state: string; message: string; refusal: { code: string; message: string } };
    assert.equal(st.state, 'refused');
    assert.equal(st.refusal.code, 'ERR_ATTEST_NODE_EVICTED');
    assert.equal(st.message, `the server refused this node: ${st.refusal.message}; serving nothing`);
    assert.equal(existsSync(join(agentData, 'node-credential.json')), false);

    agent.child.kill('SIGTERM');
    assert.equal(await agent.exited, 0);
    assert.equal(existsSync(socket), false);
  });
});
