// `writ ext-authz --pdp-mode local` against a real `writ up`, over the HTTP
// (nginx auth_request) contract: it decides in process with the server's
// synced policy bundle, allows and denies as a remote-mode authorizer does,
// audits each local decision on its stderr, follows a policy change through
// the revocation stream, and keeps deciding once the server is gone, where
// the remote-mode one fails closed.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ALLOWED, DENIED, OTHER_READS_HELLO, POLICIES, authRequest, spawnExtAuthz, startWrit, until } from './support.ts';
import type { ExtAuthzProcess, Writ } from './support.ts';
import { freePort } from '../agent/process-support.ts';

interface AuditLine {
  action?: string;
  details?: Record<string, unknown>;
}

function auditLines(out: string): AuditLine[] {
  return out.split('\n').filter((l) => l.startsWith('{"seq":')).map((l) => JSON.parse(l) as AuditLine);
}

describe('writ ext-authz --pdp-mode local', () => {
  let w: Writ;
  let dir: string;
  let local: ExtAuthzProcess;
  let remote: ExtAuthzProcess;
  let allowed = '';
  let denied = '';
  let serverStopped = false;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'writ-ext-authz-local-'));
    cpSync(POLICIES, join(dir, 'policies'), { recursive: true });
    w = await startWrit({ policies: join(dir, 'policies'), flags: { 'policy.reloadDebounceMs': 100 } });
    allowed = await w.jwt(ALLOWED);
    denied = await w.jwt(DENIED);
    local = await spawnExtAuthz(w.s.url, w.tokenFile, ['--pdp-mode', 'local', '--cache-ttl-ms', '0'], { http: true });
    remote = await spawnExtAuthz(w.s.url, w.tokenFile, ['--cache-ttl-ms', '0'], { http: true });
  });

  after(async () => {
    await local?.stop();
    await remote?.stop();
    if (!serverStopped) await w?.stop().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  });

  it('says it decides locally, allows and denies as the remote PDP does, and audits each local decision on stderr', async () => {
    const active = (await w.s.call('GET', '/admin/v1/policy')).json.activeVersion as string;
    assert.match(local.output(), new RegExp(`writ ext-authz: deciding locally with the policy bundle of ${w.s.url.replace(/[.]/g, '\\.')}/v1/policy/bundle`));
    assert.ok(local.output().includes(`{"msg":"policy","first":"updated","version":"${active}"}`), local.output());
    assert.match(remote.output(), /writ ext-authz: deciding through http:\/\/127\.0\.0\.1:\d+\/access\/v1\/evaluation/);

    const cases: [string, string, string, string, number][] = [
      ['allowed caller, GET /hello', allowed, 'GET', '/hello', 200],
      ['allowed caller, GET /hello?x=1', allowed, 'GET', '/hello?x=1', 200],
      ['allowed caller, GET /admin', allowed, 'GET', '/admin', 403],
      ['allowed caller, POST /hello', allowed, 'POST', '/hello', 403],
      ['other caller, GET /hello', denied, 'GET', '/hello', 403],
    ];
    for (const [what, token, method, uri, status] of cases) {
      const l = await authRequest(local.httpPort, method, uri, token);
      const r = await authRequest(remote.httpPort, method, uri, token);
      assert.equal(l.status, status, `${what}: local ${JSON.stringify(l.body)}`);
      assert.equal(r.status, status, `${what}: remote ${JSON.stringify(r.body)}`);
      if (status === 200) {
        assert.equal(l.headers.get('x-writ-spiffe-id'), ALLOWED, what);
      } else {
        assert.equal(l.body.code, 'ERR_ENFORCE_DENIED', what);
        assert.equal(r.body.code, 'ERR_ENFORCE_DENIED', what);
      }
    }

    const ok = await authRequest(local.httpPort, 'GET', '/hello', allowed);
    assert.equal(ok.status, 200);
    const decisionId = ok.headers.get('x-writ-decision-id');
    assert.ok(decisionId !== null && decisionId !== '');
    const record = await until('the local decision.made record on stderr', async () => auditLines(local.output()).find((e) => e.action === 'decision.made' && e.details?.decisionId === decisionId));
    assert.equal(record.details?.decision, 'allow');
    assert.equal(record.details?.policyVersion, active);
    assert.equal(record.details?.requestedBy, 'writ-ext-authz');
    const no = await authRequest(local.httpPort, 'GET', '/hello', denied);
    const deniedRecord = await until('the local deny on stderr', async () => auditLines(local.output()).find((e) => e.action === 'decision.made' && e.details?.decisionId === no.headers.get('x-writ-decision-id')));
    assert.equal(deniedRecord.details?.decision, 'deny');
    // The decision line of the authorizer itself, as in remote mode.
    assert.match(local.output(), new RegExp(`\\{"msg":"decision","via":"http","allow":true,.*"decisionId":"${decisionId}"`));
    for (const t of [allowed, denied]) assert.ok(!local.output().includes(t), 'a token reached the output');
  });

  it('a policy change on the server reaches the local authorizer through the revocation stream, before its 30 s poll', async () => {
    assert.equal((await authRequest(local.httpPort, 'GET', '/hello', denied)).status, 403);
    writeFileSync(join(dir, 'policies', 'other.cedar'), OTHER_READS_HELLO);
    const reload = await w.s.call('POST', '/admin/v1/policy/reload');
    assert.equal(reload.status, 200, reload.text);
    const next = reload.json.activeVersion as string;
    await until('the local authorizer to allow the other caller', async () => ((await authRequest(local.httpPort, 'GET', '/hello', denied)).status === 200 ? true : undefined), 20_000);
    assert.match(local.output(), new RegExp(`"msg":"policy","updated":"${next}"`));
    assert.equal((await authRequest(remote.httpPort, 'GET', '/hello', denied)).status, 200);
  });

  it('with the server gone, the local authorizer still allows what the policy allows and denies the rest; the remote one fails closed', async () => {
    serverStopped = true;
    await w.stop();
    const l = await authRequest(local.httpPort, 'GET', '/hello', allowed);
    assert.equal(l.status, 200, JSON.stringify(l.body));
    assert.equal(l.headers.get('x-writ-spiffe-id'), ALLOWED);
    const lDeny = await authRequest(local.httpPort, 'GET', '/admin', allowed);
    assert.equal(lDeny.status, 403);
    assert.equal(lDeny.body.code, 'ERR_ENFORCE_DENIED');
    const r = await authRequest(remote.httpPort, 'GET', '/hello', allowed);
    assert.equal(r.status, 403);
    assert.equal(r.body.code, 'ERR_ENFORCE_PDP_UNAVAILABLE');
  });
});

describe('writ ext-authz --pdp-mode local with the server unreachable at start', () => {
  it('starts as the proxy does: logs that no policy set serves, listens, and refuses every request', async () => {
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), 'writ-ext-authz-down-'));
    const tokenFile = join(dir, 'pep.token');
    writeFileSync(tokenFile, 'not-a-real-token\n', { mode: 0o600 });
    const p = await spawnExtAuthz(`http://127.0.0.1:${port}`, tokenFile, ['--pdp-mode', 'local'], { http: true });
    try {
      assert.ok(p.output().includes('{"msg":"policy","error":"cannot fetch the policy bundle: the server is unreachable; no set serves (every request is denied)"}'), p.output());
      assert.ok(p.output().includes('{"msg":"policy","first":"unavailable","version":null}'), p.output());
      // Without the server there is no trust bundle either: the caller cannot be authenticated, so the refusal comes first from there.
      const r = await authRequest(p.httpPort, 'GET', '/hello', 'x.y.z');
      assert.equal(r.status, 401);
      assert.equal(r.body.code, 'ERR_ENFORCE_BUNDLE_UNAVAILABLE');
      assert.ok(!p.output().includes('not-a-real-token'), 'the PEP credential reached the output');
    } finally {
      await p.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
