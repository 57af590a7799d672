// The request mapping every front end shares, with a real in-process PDP
// (Decider over the enforcement test policy) and JWT-SVIDs signed by a key of
// a local bundle.
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { ManualClock } from '../kernel/index.ts';
import { TrustBundle, signJwtSvid } from '../identity/index.ts';
import { Decider, PolicyEngine, readPolicyFolder, recordingAuditSink } from '../policy/index.ts';
import { HttpAuthorizer, normalizePath } from './authorizer.ts';
import { StaticBundleSource } from './caller.ts';
import { CachingPdp, LocalPdp } from './pdp-client.ts';
import { checkRequestToHttp, checkResponseOf, httpModeRequest } from './ext-authz.ts';
import type { IncomingMessage } from 'node:http';

const POLICIES = fileURLToPath(new URL('../../test/enforcement/fixtures/policies', import.meta.url));
const ALLOWED = 'spiffe://writ.local/hello-client';

describe('normalizePath', () => {
  const cases: [string, string | undefined][] = [
    ['/hello', '/hello'],
    ['/hello?x=1', '/hello'],
    ['/a/./b/../c', '/a/c'],
    ['/hello/%2e%2e/admin', '/admin'],
    ['/../../etc', '/etc'],
    ['hello', undefined],
    ['//evil.example/x', undefined],
    ['', undefined],
  ];
  for (const [input, want] of cases) it(`${JSON.stringify(input)} → ${String(want)}`, () => assert.equal(normalizePath(input), want));
});

describe('HttpAuthorizer with a local PDP', () => {
  const clock = new ManualClock(Date.parse('2026-11-22T12:00:00Z'));
  let authz: HttpAuthorizer;
  let token = '';
  let other = '';
  let audit: ReturnType<typeof recordingAuditSink>;
  before(async () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const bundle = new TrustBundle({ trustDomain: 'writ.local', jwtAuthorities: [{ kid: 'k1', publicJwk: publicKey.export({ format: 'jwk' }), alg: 'ES256' }] });
    const key = await crypto.subtle.importKey('pkcs8', privateKey.export({ format: 'der', type: 'pkcs8' }), { name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign']);
    const signer = { kid: 'k1', alg: 'ES256' as const, privateKey: key, notAfter: new Date(clock.nowMs() + 3_600_000) };
    const limits = { defaultTtlMs: 300_000, maxTtlMs: 3_600_000 };
    token = (await signJwtSvid(signer, { spiffeId: ALLOWED, audience: 'api' }, clock, limits)).token;
    other = (await signJwtSvid(signer, { spiffeId: 'spiffe://writ.local/other-client', audience: 'api' }, clock, limits)).token;
    audit = recordingAuditSink(clock);
    const engine = new PolicyEngine({ clock, audit });
    await engine.loadFrom(() => readPolicyFolder(POLICIES));
    const decider = new Decider({ engine, audit, clock, timeoutMs: Number.POSITIVE_INFINITY });
    authz = new HttpAuthorizer({ pdp: new LocalPdp({ decider, schemaInfo: () => engine.active?.schemaInfo, requestedBy: 'test' }), bundles: new StaticBundleSource(bundle), clock, audience: 'api' });
  });

  it('maps method, host and path to the AuthZEN request', () => {
    const r = authz.accessRequest({ method: 'get', path: '/hello/./x?y=1', host: 'Hello.Test:8443', headers: {} }, { spiffeId: ALLOWED, method: 'jwt-svid', expiresAt: new Date() });
    assert.deepEqual(r, {
      subject: { type: 'workload', id: ALLOWED },
      action: { name: 'http:GET' },
      resource: { type: 'resource', id: 'hello.test/hello/x' },
      context: { http: { method: 'GET', path: '/hello/x', host: 'hello.test' }, authn: { method: 'jwt-svid', senderConstrained: false } },
    });
  });

  it('allows the permitted workload and audits the decision', async () => {
    const r = await authz.check({ method: 'GET', path: '/hello', host: 'hello.test', headers: { authorization: `Bearer ${token}` } });
    assert.equal(r.allow, true);
    assert.equal(r.allow && r.upstreamHeaders['x-writ-spiffe-id'], ALLOWED);
    assert.ok(audit.events.some((e) => e.action === 'decision.made'));
  });

  it('denies another workload, an unknown route and an unmappable method', async () => {
    const a = await authz.check({ method: 'GET', path: '/hello', host: 'hello.test', headers: { authorization: `Bearer ${other}` } });
    assert.deepEqual(a.allow === false && [a.status, a.code], [403, 'ERR_ENFORCE_DENIED']);
    const b = await authz.check({ method: 'GET', path: '/nowhere', host: 'hello.test', headers: { authorization: `Bearer ${token}` } });
    assert.deepEqual(b.allow === false && [b.status, b.code, b.reason], [403, 'ERR_ENFORCE_DENIED', 'denied by policy: entity-data-invalid']);
    const c = await authz.check({ method: 'G E T', path: '/hello', host: 'hello.test', headers: { authorization: `Bearer ${token}` } });
    assert.deepEqual(c.allow === false && [c.status, c.code], [403, 'ERR_ENFORCE_REQUEST_INVALID']);
  });

  it('401 for a non-bearer authorization and for an expired JWT-SVID', async () => {
    const basic = await authz.check({ method: 'GET', path: '/hello', host: 'hello.test', headers: { authorization: 'Basic dXNlcjpwYXNz' } });
    assert.deepEqual(basic.allow === false && [basic.status, basic.code, basic.reason], [401, 'ERR_ENFORCE_CREDENTIAL_INVALID', 'the authorization header is not a bearer token']);
    clock.advance(301_000);
    const expired = await authz.check({ method: 'GET', path: '/hello', host: 'hello.test', headers: { authorization: `Bearer ${token}` } });
    assert.deepEqual(expired.allow === false && [expired.status, expired.code, expired.reason], [401, 'ERR_ENFORCE_CREDENTIAL_INVALID', 'JWT-SVID rejected: JWT-SVID has expired']);
    assert.equal(expired.allow === false && expired.wwwAuthenticate, 'Bearer realm="writ", error="invalid_token"');
  });
});

describe('Envoy and HTTP-mode mapping', () => {
  it('a CheckRequest maps to method, path, host, headers and the peer certificate', () => {
    const r = checkRequestToHttp({ attributes: { source: { certificate: '-----BEGIN%20CERTIFICATE-----' }, request: { http: { method: 'POST', path: '/a?b', host: 'h', headers: { 'X-A': '1' } } } } });
    assert.deepEqual(r, { method: 'POST', path: '/a?b', host: 'h', headers: { 'x-a': '1' }, peerCertificate: '-----BEGIN%20CERTIFICATE-----' });
    assert.deepEqual(checkRequestToHttp(null), { method: '', path: '', headers: {} });
  });

  it('a deny becomes status 7 or 16 with a denied_response', () => {
    const d = checkResponseOf({ allow: false, status: 401, code: 'ERR_ENFORCE_UNAUTHENTICATED', reason: 'r', decisionId: 'd', wwwAuthenticate: 'Bearer realm="writ"' });
    assert.equal((d.status as { code: number }).code, 16);
    const f = checkResponseOf({ allow: false, status: 403, code: 'ERR_ENFORCE_DENIED', reason: 'r', decisionId: 'd' });
    assert.equal((f.status as { code: number }).code, 7);
    assert.equal((f.denied_response as { body: string }).body, '{"code":"ERR_ENFORCE_DENIED","message":"r","decisionId":"d"}');
  });

  it('HTTP mode reads X-Original-*; strips the path prefix otherwise; reads the client cert header only when trusted', () => {
    const req = (url: string, headers: Record<string, string>) => ({ url, method: 'GET', headers }) as unknown as IncomingMessage;
    assert.deepEqual(httpModeRequest(req('/auth', { 'x-original-uri': '/hello?x', 'x-original-method': 'DELETE', host: 'h' })).path, '/hello?x');
    assert.equal(httpModeRequest(req('/auth', { 'x-original-method': 'DELETE' })).method, 'DELETE');
    assert.equal(httpModeRequest(req('/ext/hello', {}), '/ext').path, '/hello');
    assert.equal(httpModeRequest(req('/', { 'x-writ-client-cert': 'PEM' })).peerCertificate, undefined);
    assert.equal(httpModeRequest(req('/', { 'x-writ-client-cert': 'PEM' }), '', true).peerCertificate, 'PEM');
  });
});

describe('verified-token cache', () => {
  it('reuses a validated JWT-SVID only while its bundle is current: a bundle without the key refuses it', async () => {
    const clock = new ManualClock(Date.parse('2026-11-22T12:00:00Z'));
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const withKey = new TrustBundle({ trustDomain: 'writ.local', jwtAuthorities: [{ kid: 'k1', publicJwk: publicKey.export({ format: 'jwk' }), alg: 'ES256' }] });
    const withoutKey = new TrustBundle({ trustDomain: 'writ.local' });
    const key = await crypto.subtle.importKey('pkcs8', privateKey.export({ format: 'der', type: 'pkcs8' }), { name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign']);
    const token = (await signJwtSvid({ kid: 'k1', alg: 'ES256', privateKey: key, notAfter: new Date(clock.nowMs() + 3_600_000) }, { spiffeId: ALLOWED, audience: 'api' }, clock, { defaultTtlMs: 300_000, maxTtlMs: 3_600_000 })).token;
    let current = withKey;
    const authz = new HttpAuthorizer({ pdp: { evaluate: async () => ({ allow: true, reason: 'allowed by policy', decisionId: 'd', cached: false }) }, bundles: { current: async () => current }, clock, audience: 'api' });
    const req = { method: 'GET', path: '/hello', host: 'h', headers: { authorization: `Bearer ${token}` } };
    assert.equal((await authz.check(req)).allow, true);
    assert.equal((await authz.check(req)).allow, true);
    current = withoutKey;
    const r = await authz.check(req);
    assert.deepEqual(r.allow === false && [r.status, r.code, r.reason], [401, 'ERR_ENFORCE_CREDENTIAL_INVALID', 'JWT-SVID rejected: key `k1` is not a JWT authority of trust domain `writ.local`']);
  });
});

describe('revocations', () => {
  it('a revoked caller is 401 ERR_ENFORCE_CREDENTIAL_REVOKED, a stale stream 403 ERR_ENFORCE_REVOCATION_STALE, before the PDP; events drop cached decisions', async () => {
    const clock = new ManualClock(Date.parse('2026-11-22T12:00:00Z'));
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const bundle = new TrustBundle({ trustDomain: 'writ.local', jwtAuthorities: [{ kid: 'k1', publicJwk: publicKey.export({ format: 'jwk' }), alg: 'ES256' }] });
    const key = await crypto.subtle.importKey('pkcs8', privateKey.export({ format: 'der', type: 'pkcs8' }), { name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign']);
    const sign = async (spiffeId: string) => (await signJwtSvid({ kid: 'k1', alg: 'ES256', privateKey: key, notAfter: new Date(clock.nowMs() + 3_600_000) }, { spiffeId, audience: 'api' }, clock, { defaultTtlMs: 300_000, maxTtlMs: 3_600_000 })).token;
    let asked = 0;
    const pdp = new CachingPdp({ evaluate: async () => ({ allow: true, reason: 'allowed by policy', decisionId: `d${++asked}`, cached: false }) }, { clock, ttlMs: 60_000 });
    let state: 'clear' | 'stale' = 'clear';
    const revoked = new Set<string>();
    const view = { check: (q: { subject?: string }) => (state === 'stale' ? 'stale' as const : q.subject !== undefined && revoked.has(q.subject) ? 'revoked' as const : 'clear' as const), staleness: () => 0 };
    const authz = new HttpAuthorizer({ pdp, bundles: new StaticBundleSource(bundle), clock, audience: 'api', revocations: { view, maxStalenessMs: 5000 } });
    const other = 'spiffe://writ.local/other-client';
    const req = (token: string) => ({ method: 'GET', path: '/hello', host: 'h', headers: { authorization: `Bearer ${token}` } });
    const mine = req(await sign(ALLOWED));
    const theirs = req(await sign(other));
    assert.equal((await authz.check(mine)).allow, true);
    assert.equal((await authz.check(theirs)).allow, true);
    assert.equal(pdp.size, 2);

    revoked.add(ALLOWED);
    authz.onRevocation({ id: 'r1', cursor: 1, kind: 'subject-revoked', subject: ALLOWED, at: '2026-11-22T12:00:00Z', reason: 'credential-compromised' });
    assert.equal(pdp.size, 1, 'the revoked subject\'s decision is dropped, the other kept');
    const r = await authz.check(mine);
    assert.deepEqual(r.allow === false && [r.status, r.code, r.reason, r.wwwAuthenticate, r.caller?.spiffeId], [401, 'ERR_ENFORCE_CREDENTIAL_REVOKED', 'the caller\'s credential or identity has been revoked', 'Bearer realm="writ", error="invalid_token", error_description="revoked"', ALLOWED]);
    assert.equal((await authz.check(theirs)).allow, true);

    authz.onRevocation({ id: 'r2', cursor: 2, kind: 'policy-changed', at: '2026-11-22T12:00:00Z', reason: 'policy-activated' });
    assert.equal(pdp.size, 0, 'a policy change drops every decision');

    state = 'stale';
    const before = asked;
    const s = await authz.check(theirs);
    assert.deepEqual(s.allow === false && [s.status, s.code, s.reason, s.wwwAuthenticate], [403, 'ERR_ENFORCE_REVOCATION_STALE', 'the revocation stream has not been heard from within 5000 ms', undefined]);
    assert.equal(asked, before, 'the PDP is not asked');
  });
});
