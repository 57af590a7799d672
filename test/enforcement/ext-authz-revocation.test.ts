// `writ ext-authz` follows the server's revocation stream (security invariant
// 4), against a real `writ up`: a caller whose SPIFFE ID the server revokes is
// refused at once over HTTP (nginx auth_request) and gRPC Check while another
// caller still passes, in both PDP modes; a policy change drops the cached
// decisions; with the server gone the authorizer denies everything once the
// stream has been silent past `--revocation-staleness-ms`, logging the outage
// once; `--no-revocations` keeps allowing; a PEP credential without the `pep`
// role is named as the cause.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { ALLOWED, DENIED, OTHER_READS_HELLO, POLICIES, authRequest, spawnExtAuthz, startWrit, until } from './support.ts';
import type { AuthAnswer, ExtAuthzProcess, Writ } from './support.ts';

type Msg = Record<string, any>;
const PROTO_ROOT = fileURLToPath(new URL('../../proto/', import.meta.url));
/** Permitted by the extra policy below, and never revoked. */
const OTHER = DENIED;
const REVOKED_MESSAGE = 'the caller\'s credential or identity has been revoked';

function grpcCheck(port: number, token: string): Promise<Msg> {
  const def = protoLoader.loadSync('envoy/service/auth/v3/external_auth.proto', { includeDirs: [PROTO_ROOT], keepCase: true, longs: String, enums: String, defaults: false, oneofs: true });
  const pkg = grpc.loadPackageDefinition(def) as any;
  const client = new pkg.envoy.service.auth.v3.Authorization(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  const req = { attributes: { request: { http: { method: 'GET', path: '/hello', host: 'hello.test', headers: { authorization: `Bearer ${token}` } } } } };
  return new Promise((ok, fail) =>
    client.Check(req, { deadline: Date.now() + 10_000 }, (err: Error | null, res: Msg) => {
      client.close();
      if (err === null) ok(res);
      else fail(err);
    }),
  );
}

function assertRevoked(r: AuthAnswer, what: string): void {
  assert.equal(r.status, 401, `${what}: ${JSON.stringify(r.body)}`);
  assert.equal(r.body.code, 'ERR_ENFORCE_CREDENTIAL_REVOKED', what);
  assert.equal(r.body.message, REVOKED_MESSAGE, what);
  assert.equal(r.headers.get('www-authenticate'), 'Bearer realm="writ", error="invalid_token", error_description="revoked"', what);
}

describe('writ ext-authz follows the revocation stream', () => {
  let w: Writ;
  let dir: string;
  let remote: ExtAuthzProcess;
  let local: ExtAuthzProcess;
  let unsafe: ExtAuthzProcess;
  let allowed = '';
  let other = '';
  let serverStopped = false;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'writ-ext-authz-rev-'));
    cpSync(POLICIES, join(dir, 'policies'), { recursive: true });
    writeFileSync(join(dir, 'policies', 'other.cedar'), OTHER_READS_HELLO);
    // Heartbeats well inside the local authorizer's small staleness bound.
    w = await startWrit({ policies: join(dir, 'policies'), flags: { 'revocations.heartbeatMs': 300, 'policy.reloadDebounceMs': 100 } });
    allowed = await w.jwt(ALLOWED);
    other = await w.jwt(OTHER);
    // A long decision cache: only the revocation stream can make it forget.
    remote = await spawnExtAuthz(w.s.url, w.tokenFile, ['--cache-ttl-ms', '60000'], { grpc: true, http: true });
    local = await spawnExtAuthz(w.s.url, w.tokenFile, ['--pdp-mode', 'local', '--revocation-staleness-ms', '1500'], { http: true });
    unsafe = await spawnExtAuthz(w.s.url, w.tokenFile, ['--pdp-mode', 'local', '--no-revocations'], { http: true });
  });

  after(async () => {
    await remote?.stop();
    await local?.stop();
    await unsafe?.stop();
    if (!serverStopped) await w?.stop().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  });

  it('says whether it refuses revoked callers', () => {
    assert.match(remote.output(), new RegExp(`writ ext-authz: refusing revoked callers \\(revocation stream of ${w.s.url.replace(/[.]/g, '\\.')}; every request denied when silent for 30000 ms\\)`));
    assert.match(local.output(), /writ ext-authz: refusing revoked callers \(revocation stream of http:\/\/127\.0\.0\.1:\d+; every request denied when silent for 1500 ms\)/);
    assert.ok(unsafe.output().includes('writ ext-authz: NOT refusing revoked callers (--no-revocations): a revoked caller passes until its SVID expires'), unsafe.output());
  });

  it('a revoked subject is refused with 401 ERR_ENFORCE_CREDENTIAL_REVOKED over HTTP and gRPC, in both modes, while another caller passes', async () => {
    assert.ok(remote.grpcPort !== undefined);
    for (const p of [remote, local, unsafe]) {
      for (const t of [allowed, other]) {
        const r = await authRequest(p.httpPort, 'GET', '/hello', t);
        assert.equal(r.status, 200, JSON.stringify(r.body));
      }
    }
    const before = await grpcCheck(remote.grpcPort, allowed);
    assert.equal(before.status.code, 0);

    const rev = await w.s.call('POST', '/admin/v1/revocations', { body: { kind: 'subject-revoked', subject: ALLOWED, reason: 'credential-compromised' } });
    assert.equal(rev.status, 201, rev.text);

    // The first answer other than an allow, once the event arrived, is the revocation.
    for (const [name, p] of [['remote', remote], ['local', local]] as const) {
      const r = await until(`${name} to refuse the revoked subject`, async () => {
        const a = await authRequest(p.httpPort, 'GET', '/hello', allowed);
        return a.status === 200 ? undefined : a;
      }, 20_000);
      assertRevoked(r, name);
      assertRevoked(await authRequest(p.httpPort, 'GET', '/hello', allowed), `${name}, again`);
      const o = await authRequest(p.httpPort, 'GET', '/hello', other);
      assert.equal(o.status, 200, `${name}, other caller: ${JSON.stringify(o.body)}`);
      assert.equal(o.headers.get('x-writ-spiffe-id'), OTHER);
    }
    const g = await grpcCheck(remote.grpcPort, allowed);
    assert.equal(g.status.code, 16);
    assert.equal(g.status.message, 'ERR_ENFORCE_CREDENTIAL_REVOKED');
    assert.equal(g.denied_response.status.code, 'Unauthorized');
    assert.deepEqual({ ...JSON.parse(g.denied_response.body), decisionId: undefined }, { code: 'ERR_ENFORCE_CREDENTIAL_REVOKED', message: REVOKED_MESSAGE, decisionId: undefined });
    assert.equal((await grpcCheck(remote.grpcPort, other)).status.code, 0);
    assert.match(remote.output(), /\{"msg":"decision","via":"http","allow":false,"method":"GET","path":"\/hello","spiffeId":"spiffe:\/\/writ\.local\/hello-client","code":"ERR_ENFORCE_CREDENTIAL_REVOKED","decisionId":"[0-9a-f]{32}"\}/);

    // --no-revocations: today's behaviour, the revoked caller still passes.
    const u = await authRequest(unsafe.httpPort, 'GET', '/hello', allowed);
    assert.equal(u.status, 200, JSON.stringify(u.body));
    for (const t of [allowed, other]) assert.ok(!remote.output().includes(t) && !local.output().includes(t), 'a token reached the output');
  });

  it('a policy change drops every cached decision in remote mode', async () => {
    // Cached for 60 s by the remote authorizer; the policy that allowed it goes.
    assert.equal((await authRequest(remote.httpPort, 'GET', '/hello', other)).status, 200);
    rmSync(join(dir, 'policies', 'other.cedar'));
    const reload = await w.s.call('POST', '/admin/v1/policy/reload');
    assert.equal(reload.status, 200, reload.text);
    const r = await until('the remote authorizer to drop the cached allow', async () => {
      const a = await authRequest(remote.httpPort, 'GET', '/hello', other);
      return a.status === 200 ? undefined : a;
    }, 20_000);
    assert.equal(r.status, 403, JSON.stringify(r.body));
    assert.equal(r.body.code, 'ERR_ENFORCE_DENIED');
  });

  it('with the server gone, past --revocation-staleness-ms every request is 403 ERR_ENFORCE_REVOCATION_STALE, logged once; --no-revocations keeps allowing', async () => {
    // The revoked subject still passes where revocations are not followed.
    assert.equal((await authRequest(unsafe.httpPort, 'GET', '/hello', allowed)).status, 200);
    serverStopped = true;
    await w.stop();
    const stale = await until('the local authorizer to find the stream stale', async () => {
      const a = await authRequest(local.httpPort, 'GET', '/hello', other);
      return a.body.code === 'ERR_ENFORCE_REVOCATION_STALE' ? a : undefined;
    }, 20_000);
    assert.equal(stale.status, 403);
    assert.equal(stale.body.message, 'the revocation stream has not been heard from within 1500 ms');
    assert.equal(stale.headers.get('www-authenticate'), null);
    assert.equal((await authRequest(local.httpPort, 'GET', '/hello', other)).body.code, 'ERR_ENFORCE_REVOCATION_STALE');
    const outages = local.output().split('\n').filter((l) => l.startsWith('{"msg":"revocations"'));
    assert.equal(outages.length, 1, local.output());
    assert.match(outages[0] ?? '', /^\{"msg":"revocations","error":"revocation stream unavailable, retrying: /);
    // --no-revocations decides with the policy it holds, as before.
    const u = await authRequest(unsafe.httpPort, 'GET', '/hello', allowed);
    assert.equal(u.status, 200, JSON.stringify(u.body));
  });
});

describe('writ ext-authz with a PEP credential that may not follow the revocation stream', () => {
  it('logs once that the credential needs the `pep` role, and denies every request as stale', async () => {
    const w = await startWrit();
    const dir = mkdtempSync(join(tmpdir(), 'writ-ext-authz-role-'));
    let p: ExtAuthzProcess | undefined;
    try {
      const r = await w.s.call('POST', '/admin/v1/principals', { body: { name: 'not-a-pep', role: 'auditor' } });
      assert.equal(r.status, 201, r.text);
      const tokenFile = join(dir, 'auditor.token');
      writeFileSync(tokenFile, `${r.json.token as string}\n`, { mode: 0o600 });
      p = await spawnExtAuthz(w.s.url, tokenFile, ['--revocation-staleness-ms', '1000'], { http: true });
      const line = '{"msg":"revocations","error":"the server refuses the PEP credential on the revocation stream (403): it needs the `pep` role (`writ principal create --role pep`); every request is denied as ERR_ENFORCE_REVOCATION_STALE until it has it; retrying"}';
      assert.equal(p.output().split('\n').filter((l) => l === line).length, 1, p.output());
      const a = await authRequest(p.httpPort, 'GET', '/hello', await w.jwt(ALLOWED));
      assert.equal(a.status, 403);
      assert.equal(a.body.code, 'ERR_ENFORCE_REVOCATION_STALE');
      assert.equal(a.body.message, 'the revocation stream has not been heard from within 1000 ms');
      assert.ok(!p.output().includes(r.json.token as string), 'the PEP credential reached the output');
    } finally {
      await p?.stop();
      await w.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
