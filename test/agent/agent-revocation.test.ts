/**
 * The agent stops serving a revoked workload's SVIDs (docs/agent.md,
 * "Revocation"), end to end with real processes: `writ up` with a posture
 * `forbid` policy and its mutual-TLS listener, `writ agent` following the
 * node revocation stream, and workloads as `writ svid fetch --watch` (a live
 * FetchX509SVID stream), `writ svid fetch` and `writ svid jwt`. Workload A
 * runs as this test's uid, workload B as `nobody` on the same agent.
 *
 * - a posture signal makes the forbid match: A's live stream loses its SVID,
 *   A gets no identity (not even from the agent's cache), the agent status
 *   and the audit log show the policy refusal, B keeps its SVID; restoring
 *   the posture brings A a new SVID at the next sync;
 * - a `subject-revoked` published through `POST /admin/v1/revocations` drops
 *   A's cached X.509 and JWT SVIDs (what A gets next is newly issued);
 * - the node revocation stream refuses a caller without a node SVID.
 *
 * Every wait polls for a state with a generous timeout; nothing is decided by
 * a fixed sleep.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { WRIT, freePort, waitFor, writ } from './process-support.ts';

const uid = process.getuid?.() ?? 0;
const NOBODY = 65534;
const TD = 'writ.local';
const A = `spiffe://${TD}/rev/a`;
const B = `spiffe://${TD}/rev/b`;
const POLICIES = `
@id("posture-floor")
forbid(principal, action == Writ::Action::"credential/issue", resource) when { context has posture && context.posture.score < 50 };
`;

interface Proc {
  readonly child: ChildProcess;
  stdout(): string;
  stderr(): string;
  readonly exited: Promise<number | null>;
}

const ENV = { PATH: process.env.PATH ?? '/usr/bin:/bin' };

function start(args: string[], opts: { env?: NodeJS.ProcessEnv; uid?: number; gid?: number } = {}): Proc {
  const { env, ...ids } = opts;
  const child = spawn(process.execPath, [WRIT, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...ENV, ...env }, ...ids });
  let out = '';
  let err = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  return { child, stdout: () => out, stderr: () => err, exited };
}

function serialOf(file: string): string {
  return new X509Certificate(readFileSync(file)).serialNumber.toLowerCase();
}

/** The serials `writ svid fetch --watch` reported writing, in order. */
function watchedSerials(p: Proc): string[] {
  return [...p.stdout().matchAll(/^\S+: wrote svid\.pem, svid_key\.pem, bundle\.pem to \S+ \(serial ([0-9a-f]+), expires /gm)].map((m) => m[1] ?? '');
}

interface EntryStatus {
  id: string;
  spiffeId: string;
  x509?: { serial: string };
  refusal?: { code: string; message: string };
  revoked?: { reason: string };
}
interface Status {
  state: string;
  message: string;
  entries: EntryStatus[];
  revocations: { following: boolean; connected: boolean; cursor?: number };
}

const skip = process.platform !== 'linux' ? 'the agent attests callers on Linux only' : uid !== 0 ? 'needs root to run the second workload as nobody' : false;

describe('the agent stops serving a revoked workload\'s SVIDs', { skip }, () => {
  let dir: string;
  let url: string;
  let tlsPort: number;
  let token: string;
  let server: Proc;
  let agent: Proc;
  let watchA: Proc | undefined;
  let socket: string;
  let agentData: string;

  const admin = async (method: string, path: string, body?: unknown): Promise<{ status: number; json: any }> => {
    const res = await fetch(`${url}${path}`, { method, headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) }, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
    const text = await res.text();
    return { status: res.status, json: text === '' ? undefined : JSON.parse(text) };
  };
  const status = async (): Promise<Status> => {
    const s = await writ(['agent', 'status', '--data-dir', agentData, '--json']);
    return JSON.parse(s.stdout) as Status;
  };
  const entryOf = (s: Status, spiffeId: string): EntryStatus | undefined => s.entries.find((e) => e.spiffeId === spiffeId);
  const fetchAs = (who: 'a' | 'b', out: string) => writ(['svid', 'fetch', '--socket', socket, '--out', out, '--timeout', '60'], who === 'b' ? { uid: NOBODY, gid: NOBODY } : {});
  const jwtA = () => writ(['svid', 'jwt', '--audience', 'https://rev.example.org', '--socket', socket, '--timeout', '60']);

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'writ-agent-rev-'));
    chmodSync(dir, 0o755);
    const policyDir = join(dir, 'policies');
    mkdirSync(policyDir);
    writeFileSync(join(policyDir, 'svid.cedar'), POLICIES);
    const port = await freePort();
    tlsPort = await freePort();
    url = `http://127.0.0.1:${port}`;
    const serverData = join(dir, 'server');
    server = start(['up', '--listen', `127.0.0.1:${port}`, '--tls-listen', `127.0.0.1:${tlsPort}`, '--data-dir', serverData, '--log-level', 'warn'], { env: { WRIT_POLICY_DIR: policyDir, WRIT_REVOCATIONS_HEARTBEAT_MS: '500' } });
    await waitFor('writ up to listen', () => (server.stderr().includes(`writ: mutual TLS on https://localhost:${tlsPort}`) ? true : server.child.exitCode !== null ? (() => { throw new Error(server.stderr()); })() : undefined));
    token = readFileSync(join(serverData, 'admin.token'), 'utf8').trim();

    const jt = await admin('POST', '/admin/v1/join-tokens', { ttlSeconds: 300 });
    assert.equal(jt.status, 201, JSON.stringify(jt.json));
    for (const [spiffeId, who] of [[A, uid], [B, NOBODY]] as const) {
      const e = await admin('POST', '/admin/v1/entries', { spiffeId, nodeSelectors: [`join_token:id:${jt.json.id}`], selectors: [`unix:uid:${who}`], owner: { team: 'platform', contact: 'oncall@example.org' } });
      assert.equal(e.status, 201, JSON.stringify(e.json));
    }
    socket = join(dir, 'agent.sock');
    agentData = join(dir, 'agent');
    agent = start(['agent', '--server', url, '--join-token', jt.json.token, '--socket', socket, '--data-dir', agentData, '--sync-interval', '1', '--log-level', 'warn']);
    await waitFor('the agent to serve', () => (agent.stderr().includes('writ agent: serving the Workload API') ? true : agent.child.exitCode !== null ? (() => { throw new Error(agent.stderr()); })() : undefined));
    // The agent follows the node revocation stream over mutual TLS before anything is revoked.
    await waitFor('the agent to follow revocations', async () => ((await status()).revocations.connected ? true : undefined));
    for (const d of ['b1', 'b2', 'b3']) {
      mkdirSync(join(dir, d));
      chmodSync(join(dir, d), 0o777);
    }
  });

  after(async () => {
    for (const p of [watchA, agent, server]) {
      if (p !== undefined && p.child.exitCode === null) {
        p.child.kill('SIGKILL');
        await p.exited;
      }
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it('the node revocation stream refuses a caller without a node SVID', async () => {
    const plain = await fetch(`${url}/node/v1/revocations/stream`, { headers: { accept: 'text/event-stream' } });
    const body = (await plain.json()) as { code: string; message: string };
    assert.equal(plain.status, 401);
    assert.equal(body.code, 'ERR_ATTEST_NODE_UNAUTHENTICATED');
    // Over the mutual-TLS listener without a client certificate: refused the same way.
    const tls = await new Promise<{ status: number; json: { code: string } }>((resolve, reject) => {
      const req = httpsRequest({ host: '127.0.0.1', port: tlsPort, path: '/node/v1/revocations/stream', rejectUnauthorized: false, headers: { accept: 'text/event-stream' } }, (res) => {
        let t = '';
        res.on('data', (c: Buffer) => (t += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(t) as { code: string } }));
      });
      req.on('error', reject);
      req.end();
    });
    assert.equal(tls.status, 401);
    assert.equal(tls.json.code, 'ERR_ATTEST_NODE_UNAUTHENTICATED');
  });

  it('a posture signal that makes a forbid match cuts A\'s live stream and refuses A new SVIDs; B is unaffected; restoring the posture brings A an SVID again', async () => {
    const outA = join(dir, 'a');
    watchA = start(['svid', 'fetch', '--watch', '--socket', socket, '--out', outA]);
    const watch = watchA;
    const [first] = await waitFor('A\'s first SVID on its live stream', () => (watchedSerials(watch).length > 0 ? watchedSerials(watch) : undefined));
    assert.equal(serialOf(join(outA, 'svid.pem')), first);
    const b1 = await fetchAs('b', join(dir, 'b1'));
    assert.equal(b1.code, 0, b1.stderr);
    const bSerial = serialOf(join(dir, 'b1', 'svid.pem'));
    assert.equal((await jwtA()).code, 0);

    const sig = await admin('POST', '/admin/v1/signals', { type: 'posture-changed', subject: A, score: 20, failingChecks: ['disk-encryption'], reason: 'scan-failed' });
    assert.equal(sig.status, 201, JSON.stringify(sig.json));
    const svidItem = (sig.json.reevaluation.items as { type: string; id: string; outcome: string }[]).find((i) => i.type === 'svid' && i.id === A);
    assert.equal(svidItem?.outcome, 'revoked');

    // The open FetchX509SVID stream is told: A has nothing left, so it gets "no identity".
    await waitFor('A\'s live stream to lose its SVID', () => (watch.stderr().includes('writ svid fetch: stream ended: no identity issued (PERMISSION_DENIED)') ? true : undefined));
    // Not from the cache either, for X.509 and JWT.
    const denied = await fetchAs('a', join(dir, 'a-denied'));
    assert.equal(denied.code, 1);
    assert.equal(denied.stderr, 'writ svid fetch: no identity issued (PERMISSION_DENIED)\n');
    const jwtDenied = await jwtA();
    assert.equal(jwtDenied.code, 1);
    assert.equal(jwtDenied.stderr, 'writ svid jwt: no identity issued (PERMISSION_DENIED)\n');

    // The agent reports the server's refusal for A only.
    const refused = await waitFor('the policy refusal in the agent status', async () => {
      const s = await status();
      return entryOf(s, A)?.refusal === undefined ? undefined : s;
    });
    const a = entryOf(refused, A);
    assert.equal(a?.refusal?.code, 'ERR_IDENTITY_SVID_FORBIDDEN');
    assert.equal(a?.refusal?.message, `policy forbids issuing an SVID of \`${A}\` now (posture-floor)`);
    assert.equal(a?.x509, undefined);
    assert.equal(refused.state, 'ready');
    assert.equal(refused.message, 'serving 1 of 2 entries; 1 refused by policy');
    assert.equal(entryOf(refused, B)?.refusal, undefined);
    assert.equal(entryOf(refused, B)?.x509?.serial.toLowerCase(), bSerial);
    const human = await writ(['agent', 'status', '--data-dir', agentData]);
    assert.match(human.stdout, new RegExp(`${A.replace(/\./g, '\\.')} +\\(none\\) +- +refused: policy forbids issuing an SVID of \`${A.replace(/\./g, '\\.')}\` now \\(posture-floor\\) \\(ERR_IDENTITY_SVID_FORBIDDEN\\)`));

    // B on the same agent keeps its (cached) SVID.
    const b2 = await fetchAs('b', join(dir, 'b2'));
    assert.equal(b2.code, 0, b2.stderr);
    assert.equal(serialOf(join(dir, 'b2', 'svid.pem')), bSerial);

    // The refusal is audited, without key material.
    const events = (await admin('GET', '/admin/v1/audit/events?action=svid.issued&limit=1000')).json.events as { outcome: string; reasons: string[]; target: { name: string }; details: Record<string, unknown> }[];
    const refusals = events.filter((e) => e.outcome === 'denied' && e.target.name === A);
    assert.ok(refusals.length >= 1);
    assert.deepEqual(refusals[0]?.reasons.slice(0, 1), ['policy-forbid']);
    assert.deepEqual(refusals[0]?.details.policies, ['posture-floor']);
    assert.doesNotMatch(JSON.stringify(refusals), /BEGIN|privateKey|eyJ/);

    // Posture restored: the forbid no longer matches and the next sync brings A a new SVID.
    const ok = await admin('POST', '/admin/v1/signals', { type: 'posture-changed', subject: A, score: 90 });
    assert.equal(ok.status, 201, JSON.stringify(ok.json));
    const back = await waitFor('A\'s live stream to get a new SVID', () => {
      const s = watchedSerials(watch);
      return s.length > 1 ? s[s.length - 1] : undefined;
    });
    assert.notEqual(back, first);
    const again = await fetchAs('a', join(dir, 'a-again'));
    assert.equal(again.code, 0, again.stderr);
    const s = await waitFor('the refusal to clear', async () => {
      const st = await status();
      return entryOf(st, A)?.refusal === undefined && entryOf(st, A)?.x509 !== undefined ? st : undefined;
    });
    assert.equal(s.message, 'serving 2 of 2 entries');
  });

  it('a subject-revoked published through the admin API drops A\'s cached X.509 and JWT SVIDs; B is unaffected', async () => {
    const watch = watchA;
    assert.ok(watch !== undefined);
    const before = await fetchAs('a', join(dir, 'a-before'));
    assert.equal(before.code, 0, before.stderr);
    const oldSerial = serialOf(join(dir, 'a-before', 'svid.pem'));
    const jwt1 = await jwtA();
    assert.equal(jwt1.code, 0, jwt1.stderr);
    // Cached: asked again, the same JWT-SVID.
    assert.equal((await jwtA()).stdout, jwt1.stdout);
    const b = await fetchAs('b', join(dir, 'b3'));
    assert.equal(b.code, 0, b.stderr);
    const bSerial = serialOf(join(dir, 'b3', 'svid.pem'));
    const seen = watchedSerials(watch).length;

    const rev = await admin('POST', '/admin/v1/revocations', { kind: 'subject-revoked', subject: A, reason: 'admin-revoked' });
    assert.equal(rev.status, 201, JSON.stringify(rev.json));

    // Nothing forbids A, so it is issued anew: the live stream gets the update, with a new SVID.
    const next = await waitFor('A\'s live stream to get the update', () => {
      const s = watchedSerials(watch);
      return s.length > seen ? s[s.length - 1] : undefined;
    });
    assert.notEqual(next, oldSerial);
    const st = await waitFor('the revocation in the agent status', async () => {
      const x = await status();
      return entryOf(x, A)?.revoked?.reason === 'admin-revoked' ? x : undefined;
    });
    assert.equal(st.revocations.cursor, rev.json.cursor);
    const after1 = await fetchAs('a', join(dir, 'a-after'));
    assert.equal(after1.code, 0, after1.stderr);
    assert.notEqual(serialOf(join(dir, 'a-after', 'svid.pem')), oldSerial);
    const jwt2 = await jwtA();
    assert.equal(jwt2.code, 0, jwt2.stderr);
    assert.notEqual(jwt2.stdout, jwt1.stdout);
    // B's SVID is the one it had.
    assert.equal(entryOf(await status(), B)?.x509?.serial.toLowerCase(), bSerial);
  });
});
