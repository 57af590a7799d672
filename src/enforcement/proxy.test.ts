// The proxy pipeline in process, over a real Decider and the enforcement test
// policy, with the clock pinned: the decision cache answers the same question
// only, drops on policy change and revocation, never keeps a PDP failure;
// the revocation view denies revoked and stale; an unknown route goes nowhere.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { createServer, request } from 'node:http';
import type { IncomingHttpHeaders, Server } from 'node:http';
import { fileURLToPath } from 'node:url';
import { ManualClock, Secret } from '../kernel/index.ts';
import { TrustBundle, signJwtSvid } from '../identity/index.ts';
import { Decider, PolicyEngine, readPolicyFolder, recordingAuditSink } from '../policy/index.ts';
import type { RevocationQuery, RevocationStatus } from '../signals/index.ts';
import { LocalPdp, RemotePdp } from './pdp-client.ts';
import type { AccessRequest, EvaluateOptions, PdpClient, PdpDecision } from './pdp-client.ts';
import { StaticBundleSource } from './caller.ts';
import { ProxyAuthenticator } from './proxy-auth.ts';
import { parseProxyConfig } from './proxy-config.ts';
import { IdentityProxy } from './proxy.ts';

const POLICIES = fileURLToPath(new URL('../../test/enforcement/fixtures/policies', import.meta.url));
const ALLOWED = 'spiffe://writ.local/hello-client';
const OTHER = 'spiffe://writ.local/other-client';
const T0 = Date.UTC(2026, 0, 1, 12, 0, 0);

/** The PDP, counted; `down` switches to a PDP that cannot be reached. */
class CountingPdp implements PdpClient {
  calls = 0;
  down = false;
  readonly #up: PdpClient;
  readonly #dead = new RemotePdp({ url: 'http://127.0.0.1:1', credential: new Secret('unused'), timeoutMs: 1000 });
  constructor(up: PdpClient) {
    this.#up = up;
  }
  evaluate(r: AccessRequest, o?: EvaluateOptions): Promise<PdpDecision> {
    this.calls++;
    return (this.down ? this.#dead : this.#up).evaluate(r, o);
  }
}

/** The revocation stream's view, held in memory (the stream client itself is covered end to end). */
class View {
  revoked = new Set<string>();
  stale = false;
  check(q: RevocationQuery): RevocationStatus {
    if (this.stale) return 'stale';
    return q.subject !== undefined && this.revoked.has(q.subject) ? 'revoked' : 'clear';
  }
  staleness(): number {
    return this.stale ? Infinity : 0;
  }
}

function get(port: number, path: string, token: string): Promise<{ status: number; headers: IncomingHttpHeaders; body: { code?: string } }> {
  return new Promise((ok, fail) => {
    const req = request({ host: '127.0.0.1', port, path, agent: false, headers: { host: 'hello.test', authorization: `Bearer ${token}` } }, (res) => {
      let t = '';
      res.on('data', (c: Buffer) => (t += c.toString()));
      res.on('end', () => ok({ status: res.statusCode ?? 0, headers: res.headers, body: t.startsWith('{') ? (JSON.parse(t) as { code?: string }) : {} }));
    });
    req.on('error', fail);
    req.end();
  });
}

describe('IdentityProxy pipeline', () => {
  const clock = new ManualClock(T0);
  const view = new View();
  let pdp: CountingPdp;
  let auth: ProxyAuthenticator;
  let proxy: IdentityProxy;
  let upstream: Server;
  let port = 0;
  let allowed = '';
  let other = '';
  let reached = 0;
  let lastUrl: string | undefined;

  before(async () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const bundle = new TrustBundle({ trustDomain: 'writ.local', jwtAuthorities: [{ kid: 'k1', publicJwk: publicKey.export({ format: 'jwk' }), alg: 'ES256' }] });
    const key = await crypto.subtle.importKey('pkcs8', privateKey.export({ format: 'der', type: 'pkcs8' }), { name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign']);
    const sign = async (id: string) => (await signJwtSvid({ kid: 'k1', alg: 'ES256', privateKey: key, notAfter: new Date(T0 + 3_600_000) }, { spiffeId: id, audience: 'writ-proxy', ttlMs: 600_000 }, clock, { defaultTtlMs: 300_000, maxTtlMs: 3_600_000 })).token;
    allowed = await sign(ALLOWED);
    other = await sign(OTHER);
    const audit = recordingAuditSink(clock, false);
    const engine = new PolicyEngine({ clock, audit });
    await engine.loadFrom(() => readPolicyFolder(POLICIES));
    pdp = new CountingPdp(new LocalPdp({ decider: new Decider({ engine, audit, clock, cacheEntries: 0 }), schemaInfo: () => engine.active?.schemaInfo }));
    upstream = createServer((q, s) => {
      reached++;
      lastUrl = q.url;
      s.end('ok');
    });
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', () => r()));
    const ua = upstream.address();
    const config = parseProxyConfig({
      listen: '127.0.0.1:0',
      pdp: { cacheTtlMs: 60_000 },
      upstreams: { hello: { url: `http://127.0.0.1:${typeof ua === 'object' && ua !== null ? ua.port : 0}` } },
      routes: [{ name: 'hello', methods: ['GET'], path: '/{rest*}', upstream: 'hello', auth: ['jwt-svid'] }],
    });
    auth = new ProxyAuthenticator({ bundles: new StaticBundleSource(bundle), clock, audience: 'writ-proxy' });
    proxy = new IdentityProxy({ config, authenticator: auth, pdp, clock, revocations: view });
    port = await proxy.listen(0, '127.0.0.1');
  });
  after(async () => {
    await proxy.close();
    await new Promise<void>((r) => upstream.close(() => r()));
  });

  it('asks the PDP once for the same question and again for another path', async () => {
    const a = await get(port, '/hello', allowed);
    const b = await get(port, '/hello?page=2', allowed);
    assert.equal(a.status, 200);
    assert.equal(b.status, 200);
    assert.equal(pdp.calls, 1, 'the second request came from the decision cache');
    assert.equal(b.headers['x-writ-decision-id'], a.headers['x-writ-decision-id'], 'a cached allow names the PDP decision it repeats');
    const denied = await get(port, '/hello/other', allowed);
    assert.equal(denied.status, 403);
    assert.equal(denied.body.code, 'ERR_ENFORCE_DENIED');
    assert.equal(pdp.calls, 2);
    assert.equal(proxy.decisionCacheSize, 2);
  });

  it('forwards the path it decided, not a spelling the upstream could resolve differently', async () => {
    const r = await get(port, '/x/../hello?a=1', allowed);
    assert.equal(r.status, 200);
    assert.equal(lastUrl, '/hello?a=1');
  });

  it('a policy change drops every decision', async () => {
    const before = pdp.calls;
    proxy.onRevocation({ id: 'e1', cursor: 1, kind: 'policy-changed', at: new Date(T0).toISOString(), reason: 'policy-changed' });
    assert.equal(proxy.decisionCacheSize, 0);
    assert.equal((await get(port, '/hello', allowed)).status, 200);
    assert.equal(pdp.calls, before + 1);
  });

  it('a subject revocation drops that subject only, from both caches, and the view denies it', async () => {
    assert.equal((await get(port, '/hello', other)).status, 403);
    const tokens = auth.size;
    const decisions = proxy.decisionCacheSize;
    proxy.onRevocation({ id: 'e2', cursor: 2, kind: 'subject-revoked', subject: OTHER, at: new Date(T0).toISOString(), reason: 'owner-offboarded' });
    assert.equal(auth.size, tokens - 1);
    assert.equal(proxy.decisionCacheSize, decisions - 1);
    view.revoked.add(OTHER);
    const r = await get(port, '/hello', other);
    assert.equal(r.status, 401);
    assert.equal(r.body.code, 'ERR_ENFORCE_CREDENTIAL_REVOKED');
    assert.equal(r.headers['www-authenticate'], 'Bearer realm="writ", error="invalid_token", error_description="revoked"');
    const before = pdp.calls;
    assert.equal((await get(port, '/hello', allowed)).status, 200);
    assert.equal(pdp.calls, before, 'the other subject\'s decision stayed cached');
  });

  it('never caches a PDP failure and denies with the PDP down', async () => {
    pdp.down = true;
    const before = reached;
    const r = await get(port, '/hello/cold', allowed);
    assert.equal(r.status, 403);
    assert.equal(r.body.code, 'ERR_ENFORCE_PDP_UNAVAILABLE');
    pdp.down = false;
    const again = await get(port, '/hello/cold', allowed);
    assert.equal(again.body.code, 'ERR_ENFORCE_DENIED', 'the PDP was asked again');
    assert.equal(reached, before);
  });

  it('a stale revocation view denies even a cached allow; a cached token past its exp no longer counts', async () => {
    view.stale = true;
    const r = await get(port, '/hello', allowed);
    assert.equal(r.status, 403);
    assert.equal(r.body.code, 'ERR_ENFORCE_REVOCATION_STALE');
    view.stale = false;
    assert.equal((await get(port, '/hello', allowed)).status, 200);
    // Past the token's exp the cached verification no longer counts.
    clock.advance(600_000);
    const late = await get(port, '/hello', allowed);
    assert.equal(late.status, 401);
    assert.equal(late.body.code, 'ERR_ENFORCE_CREDENTIAL_INVALID');
  });
});
