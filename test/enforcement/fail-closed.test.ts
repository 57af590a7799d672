// Fail closed (issue 6 acceptance): with the server down from the start
// (bundle missing, cache cold), with the server going down after a warm start
// (PDP unreachable), with a bundle past its stale limit and with a refused PEP
// credential, `writ ext-authz` and the authorizer deny — never pass-through.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { ManualClock, Secret } from '../../src/kernel/index.ts';
import { HttpAuthorizer, RemotePdp, ServerBundleSource, enforcementErrors } from '../../src/enforcement/index.ts';
import { ALLOWED, AUDIENCE, startWrit, spawnExtAuthz } from './support.ts';

type Msg = Record<string, any>;
const PROTO_ROOT = fileURLToPath(new URL('../../proto/', import.meta.url));

function check(port: number, token: string, path = '/hello'): Promise<Msg> {
  const def = protoLoader.loadSync('envoy/service/auth/v3/external_auth.proto', { includeDirs: [PROTO_ROOT], keepCase: true, longs: String, enums: String, defaults: false, oneofs: true });
  const pkg = grpc.loadPackageDefinition(def) as any;
  const client = new pkg.envoy.service.auth.v3.Authorization(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  const req = { attributes: { request: { http: { method: 'GET', path, host: 'hello.test', headers: { authorization: `Bearer ${token}` } } } } };
  return new Promise((ok, fail) =>
    client.Check(req, { deadline: Date.now() + 10_000 }, (err: Error | null, res: Msg) => {
      client.close();
      if (err === null) ok(res);
      else fail(err);
    }),
  );
}

async function deadUrl(): Promise<string> {
  const w = await startWrit();
  const url = w.s.url;
  await w.stop();
  return url;
}

describe('fail closed', () => {
  it('server down from the start (no bundle, cold cache): a valid JWT-SVID is refused over gRPC and HTTP', async () => {
    const w = await startWrit();
    const jwt = await w.jwt(ALLOWED);
    const dir = mkdtempSync(join(tmpdir(), 'writ-fc-'));
    const tokenFile = join(dir, 'pep.token');
    writeFileSync(tokenFile, w.pep, { mode: 0o600 });
    const dead = await deadUrl();
    const p = await spawnExtAuthz(dead, tokenFile, ['--timeout-ms', '500']);
    try {
      assert.ok(p.grpcPort !== undefined && p.httpPort !== undefined);
      const res = await check(p.grpcPort, jwt);
      assert.equal(res.status.code, 16);
      const body = JSON.parse(res.denied_response.body);
      assert.equal(body.code, 'ERR_ENFORCE_BUNDLE_UNAVAILABLE');
      assert.equal(body.message, 'the trust bundle could not be fetched from the server');
      const http = await fetch(`http://127.0.0.1:${p.httpPort}/`, { headers: { authorization: `Bearer ${jwt}`, 'x-original-uri': '/hello', 'x-original-method': 'GET', host: 'hello.test' } });
      assert.equal(http.status, 401);
      assert.equal(((await http.json()) as Msg).code, 'ERR_ENFORCE_BUNDLE_UNAVAILABLE');
    } finally {
      await p.stop();
      await w.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('server goes down after a warm start: the PDP is unreachable and the next request is denied', async () => {
    const w = await startWrit();
    // A generous PDP budget: the warm call must succeed on a loaded machine; once the server is down the refusal is immediate.
    const p = await spawnExtAuthz(w.s.url, w.tokenFile, ['--cache-ttl-ms', '0', '--timeout-ms', '5000'], { grpc: true });
    try {
      assert.ok(p.grpcPort !== undefined);
      const jwt = await w.jwt(ALLOWED);
      assert.equal((await check(p.grpcPort, jwt)).status.code, 0);
      await w.s.stop();
      const res = await check(p.grpcPort, jwt);
      assert.equal(res.status.code, 7);
      const body = JSON.parse(res.denied_response.body);
      assert.equal(body.code, 'ERR_ENFORCE_PDP_UNAVAILABLE');
      assert.equal(body.message, 'policy decision point is unreachable');
    } finally {
      await p.stop();
      await w.stop().catch(() => undefined);
    }
  });

  it('with the decision cache on, a request the cache has not seen is denied once the server is down', async () => {
    const w = await startWrit();
    const p = await spawnExtAuthz(w.s.url, w.tokenFile, ['--cache-ttl-ms', '60000', '--timeout-ms', '5000'], { grpc: true });
    try {
      assert.ok(p.grpcPort !== undefined);
      const jwt = await w.jwt(ALLOWED);
      assert.equal((await check(p.grpcPort, jwt, '/hello')).status.code, 0);
      await w.s.stop();
      const cold = await check(p.grpcPort, jwt, '/hello/other');
      assert.equal(cold.status.code, 7);
      assert.equal(JSON.parse(cold.denied_response.body).code, 'ERR_ENFORCE_PDP_UNAVAILABLE');
    } finally {
      await p.stop();
      await w.stop().catch(() => undefined);
    }
  });

  it('a PEP credential the PDP refuses denies every request', async () => {
    const w = await startWrit();
    const dir = mkdtempSync(join(tmpdir(), 'writ-fc-'));
    const tokenFile = join(dir, 'pep.token');
    writeFileSync(tokenFile, 'wat_not-a-real-credential', { mode: 0o600 });
    // Without the revocation stream (which refuses the credential too: every request would be ERR_ENFORCE_REVOCATION_STALE), the PDP's refusal shows.
    const p = await spawnExtAuthz(w.s.url, tokenFile, ['--no-revocations'], { grpc: true });
    try {
      assert.ok(p.grpcPort !== undefined);
      const res = await check(p.grpcPort, await w.jwt(ALLOWED));
      assert.equal(res.status.code, 7);
      const body = JSON.parse(res.denied_response.body);
      assert.equal(body.code, 'ERR_ENFORCE_PDP_UNAVAILABLE');
      assert.equal(body.message, 'policy decision point answered status 401');
    } finally {
      await p.stop();
      await w.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a bundle past its refresh hint and stale limit, with the server down, authenticates nobody', async () => {
    const w = await startWrit();
    const clock = new ManualClock(Date.now());
    const bundles = new ServerBundleSource({ url: w.s.url, trustDomain: 'writ.local', clock, maxStaleSeconds: 60 });
    try {
      const jwt = await w.jwt(ALLOWED);
      const first = await bundles.current();
      const hint = first.refreshHintSeconds;
      assert.ok(hint !== undefined && hint > 0);
      const authz = new HttpAuthorizer({ pdp: new RemotePdp({ url: w.s.url, credential: new Secret(w.pep) }), bundles, clock, audience: AUDIENCE });
      const req = { method: 'GET', path: '/hello', host: 'hello.test', headers: { authorization: `Bearer ${jwt}` } };
      assert.equal((await authz.check(req)).allow, true);
      await w.s.stop();
      // Past the refresh time but inside the stale window: the refresh fails and the held bundle is still used.
      clock.advance(hint * 1000 + 1000);
      assert.equal(await bundles.current(), first);
      clock.advance(60_000);
      await assert.rejects(bundles.current(), (e: unknown) => enforcementErrors.is(e, 'ERR_ENFORCE_BUNDLE_UNAVAILABLE') && (e as Error).message === 'the trust bundle expired and could not be refreshed from the server');
      const expired = await authz.check(req);
      assert.equal(expired.allow, false);
      assert.equal(expired.allow === false && expired.status, 401);
      assert.equal(expired.allow === false && expired.code, 'ERR_ENFORCE_BUNDLE_UNAVAILABLE');
    } finally {
      await w.stop().catch(() => undefined);
    }
  });
});
