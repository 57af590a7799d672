// The local PDP mode of `writ proxy` (issue 6 item 1: "a local PDP with the
// policy bundle synced from the server"), against a real `writ up`:
// - `GET /v1/policy/bundle` serves the active set's source to a PEP with
//   ETag = version and 304 on If-None-Match, and refuses other callers;
// - a local-mode proxy process allows and denies exactly as a remote-mode
//   one for the same policy, audits its local decisions in its own log, and
//   follows a policy change on the server;
// - in process, over a relay in front of the server: with the server
//   unreachable at start every request is denied with
//   ERR_ENFORCE_POLICY_UNAVAILABLE until a bundle compiled; a bundle that does
//   not compile, or compiles to another version than advertised, keeps the
//   previous set serving and is not fetched again.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, request } from 'node:http';
import type { IncomingHttpHeaders, Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { ManualClock, Secret, systemClock } from '../../src/kernel/index.ts';
import { compilePolicySet, recordingAuditSink } from '../../src/policy/index.ts';
import { IdentityProxy, ProxyAuthenticator, ServerBundleSource, SyncedLocalPdp, parseProxyConfig } from '../../src/enforcement/index.ts';
import { ALLOWED, DENIED, OTHER_READS_HELLO, POLICIES, WRIT, startWrit, until, listen } from './support.ts';
import type { Writ } from './support.ts';

const AUD = 'writ-ext-authz';

function call(port: number, path: string, headers: Record<string, string> = {}, method = 'GET'): Promise<{ status: number; headers: IncomingHttpHeaders; text: string }> {
  return new Promise((ok, fail) => {
    const req = request({ host: '127.0.0.1', port, path, method, agent: false, headers: { host: 'hello.test', ...headers } }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      res.on('end', () => ok({ status: res.statusCode ?? 0, headers: res.headers, text }));
    });
    req.on('error', fail);
    req.end();
  });
}

interface ProxyProcess {
  readonly child: ChildProcess;
  readonly port: number;
  output(): string;
  stop(): Promise<void>;
}

async function spawnProxy(w: Writ, upstreamPort: number, extra: string[]): Promise<ProxyProcess> {
  const child = spawn(process.execPath, [WRIT, 'proxy', '--server', w.s.url, '--token-file', w.tokenFile, '--listen', '127.0.0.1:0', '--upstream', `http://127.0.0.1:${upstreamPort}`, '--audience', AUD, '--cache-ttl-ms', '0', ...extra], { stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } });
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise((r) => child.once('exit', r));
  await until('writ proxy to listen', async () => {
    if (child.exitCode !== null) throw new Error(`writ proxy exited ${child.exitCode}: ${out}`);
    return /listening on [^\s]+:(\d+)/.test(out) ? true : undefined;
  });
  return {
    child,
    port: Number(/listening on [^\s]+:(\d+)/.exec(out)?.[1]),
    output: () => out,
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

describe('writ proxy with pdp.mode local', () => {
  let w: Writ;
  let dir: string;
  let upstream: Server;
  let upPort = 0;
  let reached = 0;
  let local: ProxyProcess;
  let remote: ProxyProcess;
  let auditLog = '';
  let auditor = '';

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'writ-local-pdp-'));
    cpSync(POLICIES, join(dir, 'policies'), { recursive: true });
    auditLog = join(dir, 'proxy-audit.jsonl');
    w = await startWrit({ policies: join(dir, 'policies'), flags: { 'policy.reloadDebounceMs': 100 } });
    const a = await w.s.call('POST', '/admin/v1/principals', { body: { name: 'auditor', role: 'auditor' } });
    assert.equal(a.status, 201, a.text);
    auditor = a.json.token as string;
    upstream = createServer((req, res) => {
      reached++;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"hello":"world"}');
    });
    upPort = await listen(upstream);
    local = await spawnProxy(w, upPort, ['--pdp-mode', 'local', '--audit-log', auditLog]);
    remote = await spawnProxy(w, upPort, []);
  });

  after(async () => {
    await local?.stop();
    await remote?.stop();
    await new Promise<void>((r) => upstream.close(() => r()));
    await w.stop().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  });

  it('GET /v1/policy/bundle serves the active source to a pep with ETag = version, 304 on If-None-Match, and refuses other callers', async () => {
    const active = (await w.s.call('GET', '/admin/v1/policy')).json.activeVersion as string;
    assert.match(active, /^pv-[0-9a-f]+$/);
    const r = await w.s.call('GET', '/v1/policy/bundle', { token: w.pep });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers.get('etag'), `"${active}"`);
    assert.equal(r.json.version, active);
    assert.equal(r.json.schema.path, 'writ.cedarschema');
    assert.match(r.json.schema.text as string, /namespace Writ/);
    assert.deepEqual((r.json.files as { path: string }[]).map((f) => f.path), ['hello.cedar']);
    assert.equal(r.json.files[0].text, readFileSync(join(dir, 'policies', 'hello.cedar'), 'utf8'));
    assert.equal(r.json.entities.path, 'entities.json');
    assert.equal(r.json.entities.text, readFileSync(join(dir, 'policies', 'entities.json'), 'utf8'));

    const same = await w.s.call('GET', '/v1/policy/bundle', { token: w.pep, headers: { 'if-none-match': `"pv-0", "${active}"` } });
    assert.equal(same.status, 304);
    assert.equal(same.text, '');
    assert.equal(same.headers.get('etag'), `"${active}"`);
    const other = await w.s.call('GET', '/v1/policy/bundle', { token: w.pep, headers: { 'if-none-match': '"pv-0"' } });
    assert.equal(other.status, 200);

    const anonymous = await w.s.call('GET', '/v1/policy/bundle', { token: null });
    assert.equal(anonymous.status, 401);
    assert.equal(anonymous.json.code, 'ERR_GOV_UNAUTHENTICATED');
    const wrongRole = await w.s.call('GET', '/v1/policy/bundle', { token: auditor });
    assert.equal(wrongRole.status, 403);
    assert.equal(wrongRole.json.code, 'ERR_GOV_FORBIDDEN');
    assert.equal(wrongRole.json.message, 'role `auditor` lacks permission `decisions.evaluate`');

    // Every call is on the audit chain, refusals as denied.
    const events = await w.s.call('GET', '/admin/v1/audit/events?action=api.called&limit=1000');
    const mine = (events.json.events as { target?: { id: string }; outcome: string; details: { status: number } }[]).filter((e) => e.target?.id === 'GET /v1/policy/bundle');
    for (const [status, outcome] of [[200, 'success'], [304, 'success'], [401, 'denied'], [403, 'denied']] as const) {
      assert.ok(mine.some((e) => e.details.status === status && e.outcome === outcome), `no ${status} ${outcome} record`);
    }
  });

  it('decides like the remote PDP for the same policy, and audits each local decision in the proxy\'s own log', async () => {
    assert.match(local.output(), /deciding locally with the policy bundle of/);
    const allowed = await w.jwt(ALLOWED, AUD);
    const denied = await w.jwt(DENIED, AUD);
    const cases: [string, string, string][] = [
      ['allowed caller, /hello', allowed, '/hello'],
      ['allowed caller, /admin', allowed, '/admin'],
      ['allowed caller, /elsewhere', allowed, '/elsewhere'],
      ['other caller, /hello', denied, '/hello'],
    ];
    const before = reached;
    for (const [what, token, path] of cases) {
      const l = await call(local.port, path, { authorization: `Bearer ${token}` });
      const r = await call(remote.port, path, { authorization: `Bearer ${token}` });
      assert.equal(l.status, r.status, `${what}: local ${l.text} vs remote ${r.text}`);
      if (l.status !== 200) {
        assert.equal(JSON.parse(l.text).code, 'ERR_ENFORCE_DENIED', what);
        assert.equal(JSON.parse(r.text).code, 'ERR_ENFORCE_DENIED', what);
      }
    }
    const post = await call(local.port, '/hello', { authorization: `Bearer ${allowed}` }, 'POST');
    assert.equal(post.status, 403);
    // Only the allowed GET /hello reached the upstream, once through each proxy.
    assert.equal(reached - before, 2);
    const l = await call(local.port, '/hello', { authorization: `Bearer ${allowed}` });
    assert.equal(l.status, 200);
    const decisionId = String(l.headers['x-writ-decision-id']);
    const active = (await w.s.call('GET', '/admin/v1/policy')).json.activeVersion as string;
    const record = await until('the local decision in the proxy audit log', async () => {
      const lines = readFileSync(auditLog, 'utf8').trim().split('\n').map((x) => JSON.parse(x) as { action: string; details: Record<string, unknown> });
      return lines.find((e) => e.action === 'decision.made' && e.details.decisionId === decisionId);
    });
    assert.equal(record.details.decision, 'allow');
    assert.equal(record.details.policyVersion, active);
    assert.equal(record.details.requestedBy, 'writ-proxy');
    assert.ok(!readFileSync(auditLog, 'utf8').includes(allowed), 'a token reached the audit log');
  });

  it('a policy change on the server reaches the local PDP through the revocation stream, and through the ETag poll alone', async (t) => {
    // A second local PDP that follows no stream: only its poll can see the change.
    const polling = new SyncedLocalPdp({ url: w.s.url, credential: new Secret(w.pep), clock: systemClock, audit: recordingAuditSink(systemClock, false), pollIntervalMs: 1000 });
    t.after(() => polling.stop());
    assert.equal((await polling.start()).outcome, 'updated');
    const other = await w.jwt(DENIED, AUD);
    assert.equal((await call(local.port, '/hello', { authorization: `Bearer ${other}` })).status, 403);
    writeFileSync(join(dir, 'policies', 'other.cedar'), OTHER_READS_HELLO);
    const reload = await w.s.call('POST', '/admin/v1/policy/reload');
    assert.equal(reload.status, 200, reload.text);
    const next = reload.json.activeVersion as string;
    await until('the local proxy to allow the other caller', async () => ((await call(local.port, '/hello', { authorization: `Bearer ${other}` })).status === 200 ? true : undefined));
    assert.match(local.output(), new RegExp(`"updated":"${next}"`));
    await until('the polling PDP to install the new set', async () => (polling.version === next ? true : undefined));
    assert.equal((await call(remote.port, '/hello', { authorization: `Bearer ${other}` })).status, 200);
  });
});

describe('SyncedLocalPdp behind a relay to the server (server down, bundles that do not compile)', () => {
  let w: Writ;
  let relay: Server;
  let relayPort = 0;
  let upstream: Server;
  let upPort = 0;
  let reached = 0;
  /** `down`: connections are cut; `pass`: forwarded; `broken` / `mismatch`: a crafted bundle. */
  let mode: 'down' | 'pass' | 'broken' | 'mismatch' = 'down';
  let crafted: { version: string; body: string } | undefined;
  const ifNoneMatch: (string | undefined)[] = [];
  const clock = new ManualClock(Date.now());
  const audit = recordingAuditSink(clock);
  const logs: Record<string, unknown>[] = [];
  const metrics = new Registry();
  const metric = async (name: string, outcome?: string): Promise<number | undefined> => {
    const m = (await metrics.getMetricsAsJSON()).find((x) => x.name === name);
    return m?.values.find((v) => outcome === undefined || v.labels.outcome === outcome)?.value;
  };
  let pdp: SyncedLocalPdp;
  let proxy: IdentityProxy;
  let port = 0;

  before(async () => {
    w = await startWrit();
    relay = createServer((req, res) => {
      ifNoneMatch.push(req.headers['if-none-match']);
      if (mode === 'down') {
        req.socket.destroy();
        return;
      }
      void (async () => {
        if ((mode === 'broken' || mode === 'mismatch') && crafted !== undefined) {
          if (String(req.headers['if-none-match'] ?? '').includes(`"${crafted.version}"`)) {
            res.writeHead(304, { etag: `"${crafted.version}"` }).end();
            return;
          }
          res.writeHead(200, { 'content-type': 'application/json', etag: `"${crafted.version}"` }).end(crafted.body);
          return;
        }
        const r = await fetch(`${w.s.url}${req.url ?? '/'}`, { headers: Object.fromEntries(Object.entries(req.headers).filter(([k]) => k === 'authorization' || k === 'if-none-match') as [string, string][]) });
        const headers: Record<string, string> = { 'content-type': r.headers.get('content-type') ?? 'application/json' };
        const etag = r.headers.get('etag');
        if (etag !== null) headers.etag = etag;
        res.writeHead(r.status, headers).end(await r.text());
      })();
    });
    relayPort = await listen(relay);
    upstream = createServer((_req, res) => {
      reached++;
      res.writeHead(200).end('ok');
    });
    upPort = await listen(upstream);
    pdp = new SyncedLocalPdp({ url: `http://127.0.0.1:${relayPort}`, credential: new Secret(w.pep), clock, audit, requestedBy: 'test-proxy', pollIntervalMs: 3_600_000, decisionTimeoutMs: 10_000, log: (l) => logs.push(l), metrics });
    const config = parseProxyConfig({ listen: '127.0.0.1:0', audience: AUD, pdp: { mode: 'local', cacheTtlMs: 0 }, upstreams: { up: { url: `http://127.0.0.1:${upPort}` } }, routes: [{ name: 'all', path: '/{rest*}', upstream: 'up', auth: ['jwt-svid'] }] });
    const authenticator = new ProxyAuthenticator({ bundles: new ServerBundleSource({ url: w.s.url, trustDomain: 'writ.local', clock: systemClock }), clock: systemClock, audience: AUD });
    proxy = new IdentityProxy({ config, authenticator, pdp, clock: systemClock });
    pdp.onSwap(() => proxy.onPolicyChanged());
    port = await proxy.listen(0, '127.0.0.1');
  });

  after(async () => {
    pdp?.stop();
    await proxy?.close();
    await new Promise<void>((r) => relay.close(() => r()));
    relay.closeAllConnections();
    await new Promise<void>((r) => upstream.close(() => r()));
    await w.stop().catch(() => undefined);
  });

  it('with the server unreachable at start every request is denied with ERR_ENFORCE_POLICY_UNAVAILABLE, until the first bundle compiles', async () => {
    const first = await pdp.start();
    assert.equal(first.outcome, 'unavailable');
    assert.equal(pdp.version, undefined);
    assert.ok(logs.some((l) => typeof l.error === 'string' && l.error.startsWith('cannot fetch the policy bundle: the server is unreachable; no set serves')), JSON.stringify(logs));
    const token = await w.jwt(ALLOWED, AUD);
    const r = await call(port, '/hello', { authorization: `Bearer ${token}` });
    assert.equal(r.status, 403);
    const body = JSON.parse(r.text) as { code: string; message: string };
    assert.equal(body.code, 'ERR_ENFORCE_POLICY_UNAVAILABLE');
    assert.equal(body.message, 'no policy bundle has been fetched and compiled from the server yet');
    assert.equal(reached, 0);
    assert.equal(await metric('writ_proxy_local_policy_ready'), 0);
    // At least the first fetch; the once-a-second retry may have run again on a slow machine.
    assert.ok(((await metric('writ_proxy_local_policy_refreshes_total', 'unavailable')) ?? 0) >= 1);
    // The server comes back: the retry (every second until a set serves) picks the bundle up.
    mode = 'pass';
    await until('the first bundle', async () => ((await call(port, '/hello', { authorization: `Bearer ${token}` })).status === 200 ? true : undefined));
    assert.equal(pdp.version, (await w.s.call('GET', '/admin/v1/policy')).json.activeVersion);
    assert.equal(reached, 1);
    assert.equal((await call(port, '/admin', { authorization: `Bearer ${token}` })).status, 403);
    const made = audit.events.filter((e) => e.action === 'decision.made');
    assert.ok(made.some((e) => e.details?.requestedBy === 'test-proxy' && e.details.decision === 'allow' && e.details.policyVersion === pdp.version));
    assert.ok(audit.events.some((e) => e.action === 'policy-set.activated'));
    assert.equal(await metric('writ_proxy_local_policy_ready'), 1);
    assert.equal(await metric('writ_proxy_local_policy_refreshes_total', 'updated'), 1);
  });

  it('an unchanged bundle is answered 304 by ETag', async () => {
    const r = await pdp.refresh();
    assert.deepEqual(r, { outcome: 'unchanged', version: pdp.version });
    assert.equal(ifNoneMatch.at(-1), `"${pdp.version ?? ''}"`);
  });

  it('a bundle that does not compile keeps the previous set serving, is audited as rejected and is not fetched again', async () => {
    const serving = pdp.version;
    const good = (await w.s.call('GET', '/v1/policy/bundle', { token: w.pep })).json as { files: { path: string; text: string }[] };
    crafted = { version: 'pv-0123456789abcdef01234567', body: JSON.stringify({ ...good, version: 'pv-0123456789abcdef01234567', files: [...good.files, { path: 'broken.cedar', text: 'permit (principal, action, resource' }] }) };
    mode = 'broken';
    const r = await pdp.refresh();
    assert.equal(r.outcome, 'rejected');
    assert.ok(r.outcome === 'rejected' && r.problems.some((p) => p.startsWith('broken.cedar:')), JSON.stringify(r));
    assert.equal(pdp.version, serving);
    assert.ok(audit.events.some((e) => e.action === 'policy-set.rejected'));
    assert.ok(logs.some((l) => l.error === `policy bundle pv-0123456789abcdef01234567 rejected, ${serving ?? ''} keeps serving`));
    const token = await w.jwt(ALLOWED, AUD);
    assert.equal((await call(port, '/hello', { authorization: `Bearer ${token}` })).status, 200);
    // The rejected version rides along in If-None-Match, so it is not compiled again.
    const again = await pdp.refresh();
    assert.equal(ifNoneMatch.at(-1), `"${serving ?? ''}", "pv-0123456789abcdef01234567"`);
    assert.deepEqual(again, { outcome: 'unchanged', version: serving });
    assert.equal(await metric('writ_proxy_local_policy_refreshes_total', 'rejected'), 1);
  });

  it('a bundle that compiles to another version than advertised is rejected', async () => {
    const serving = pdp.version;
    const good = (await w.s.call('GET', '/v1/policy/bundle', { token: w.pep })).json as { files: { path: string; text: string }[] };
    const advertised = 'pv-fedcba9876543210fedcba98';
    crafted = { version: advertised, body: JSON.stringify({ ...good, version: advertised, files: [...good.files, { path: 'extra.cedar', text: 'forbid (principal, action, resource);' }] }) };
    mode = 'mismatch';
    const r = await pdp.refresh();
    assert.equal(r.outcome, 'rejected');
    assert.ok(r.outcome === 'rejected' && /^the bundle compiled to version pv-[0-9a-f]+, not the advertised pv-fedcba9876543210fedcba98$/.test(r.problems[0] ?? ''), JSON.stringify(r));
    assert.equal(pdp.version, serving);
    const token = await w.jwt(ALLOWED, AUD);
    assert.equal((await call(port, '/hello', { authorization: `Bearer ${token}` })).status, 200);
  });

  it('a refresh whose audit record cannot be written is reported, never thrown', async () => {
    const good = (await w.s.call('GET', '/v1/policy/bundle', { token: w.pep })).json as { schema: { path: string; text: string }; files: { path: string; text: string }[]; entities?: { path: string; text: string } };
    const files = [...good.files, { path: 'note.cedar', text: '// no policy here\n' }];
    const c = compilePolicySet({ schema: good.schema, files, ...(good.entities === undefined ? {} : { entities: good.entities }) });
    assert.ok(c.ok);
    crafted = { version: c.set.version, body: JSON.stringify({ ...good, version: c.set.version, files }) };
    mode = 'broken';
    audit.failWith = new Error('audit store unavailable');
    try {
      const r = await pdp.refresh();
      assert.deepEqual(r, { outcome: 'unavailable', reason: 'the bundle refresh failed: audit store unavailable' });
    } finally {
      audit.failWith = undefined;
    }
  });
});
