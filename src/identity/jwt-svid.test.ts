import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import { SignJWT, createLocalJWKSet, createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';
import { ManualClock } from '../kernel/index.ts';
import { CaManager } from './ca.ts';
import { CollectingAuditSink } from './audit-sink.test-support.ts';
import { MemoryCaKeyStore } from './memory-ca-key-store.test-support.ts';
import { TrustBundle, bundleSet } from './bundle.ts';
import { generateSigningKeyPair } from './keys.ts';
import { signJwtSvid, validateJwtSvid } from './jwt-svid.ts';
import type { JwtSigner } from './jwt-svid.ts';

const MIN = 60_000;
const T0 = Date.parse('2026-03-01T00:00:00Z');
const LIMITS = { defaultTtlMs: 5 * MIN, maxTtlMs: 60 * MIN };

async function signer(kid: string, notAfterMs = T0 + 1000 * MIN): Promise<{ signer: JwtSigner; bundle: (td: string) => TrustBundle }> {
  const kp = await generateSigningKeyPair('ES256');
  const { createPublicKey } = await import('node:crypto');
  const publicJwk = createPublicKey({ key: Buffer.from(kp.spki), format: 'der', type: 'spki' }).export({ format: 'jwk' });
  return {
    signer: { kid, alg: 'ES256', privateKey: kp.privateKey, notAfter: new Date(notAfterMs) },
    bundle: (td) => new TrustBundle({ trustDomain: td, jwtAuthorities: [{ kid, publicJwk, alg: 'ES256' }] }),
  };
}

function b64(obj: unknown): string {
  return Buffer.from(JSON.stringify(obj)).toString('base64url');
}

test('JWT-SVIDs verify with jose createLocalJWKSet over the JWKS view; the header holds only alg, kid and typ', async () => {
  // jose checks exp against the wall clock, so this CA runs on real time.
  const clock = new ManualClock(Date.now());
  const ca = await CaManager.open({ trustDomain: 'example.org', clock, audit: new CollectingAuditSink(), store: new MemoryCaKeyStore(), kek: randomBytes(32) });
  const svid = await ca.signJwtSvid({ spiffeId: 'spiffe://example.org/api', audience: 'billing' });
  const header = decodeProtectedHeader(svid.token);
  assert.deepEqual(Object.keys(header).sort(), ['alg', 'kid', 'typ']);
  assert.equal(header.alg, 'ES256');
  assert.equal(header.typ, 'JWT');
  assert.equal(header.kid, ca.activeKeyId('jwt'));
  const { payload } = await jwtVerify(svid.token, createLocalJWKSet(ca.bundle().toJwks()), { audience: 'billing' });
  assert.deepEqual(Object.keys(payload).sort(), ['aud', 'exp', 'iat', 'sub']);
  assert.equal(payload.sub, 'spiffe://example.org/api');
  assert.equal(payload.aud, 'billing');
  assert.equal((payload.exp ?? 0) - (payload.iat ?? 0), 300);
  // The SPIFFE bundle itself is not usable by jose: its keys are `use: jwt-svid` (§8 gotcha 1).
  await assert.rejects(jwtVerify(svid.token, createLocalJWKSet(ca.bundle().toDocument() as never)), { code: 'ERR_JWKS_NO_MATCHING_KEY' });
});

test('JWT-SVIDs verify with jose createRemoteJWKSet against a served JWKS', async (t) => {
  const clock = new ManualClock(Date.now());
  const ca = await CaManager.open({ trustDomain: 'example.org', clock, audit: new CollectingAuditSink(), store: new MemoryCaKeyStore(), kek: randomBytes(32) });
  const server = createServer((req, res) => {
    if (req.url !== '/keys') {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(ca.bundle().toJwks()));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => server.close());
  const { port } = server.address() as AddressInfo;
  const jwks = createRemoteJWKSet(new URL(`http://127.0.0.1:${port}/keys`));
  const svid = await ca.signJwtSvid({ spiffeId: 'spiffe://example.org/api', audience: ['billing', 'ledger'] });
  const { payload, protectedHeader } = await jwtVerify(svid.token, jwks, { audience: 'ledger' });
  assert.equal(payload.sub, 'spiffe://example.org/api');
  assert.deepEqual(payload.aud, ['billing', 'ledger']);
  assert.equal(protectedHeader.kid, ca.activeKeyId('jwt'));
  // After a rotation the new kid is fetched from the endpoint.
  await ca.rotate('jwt');
  const after = await ca.signJwtSvid({ spiffeId: 'spiffe://example.org/api', audience: 'billing' });
  assert.notEqual(decodeProtectedHeader(after.token).kid, protectedHeader.kid);
  const again = await jwtVerify(after.token, createRemoteJWKSet(new URL(`http://127.0.0.1:${port}/keys`)), { audience: 'billing' });
  assert.equal(again.payload.sub, 'spiffe://example.org/api');
});

test('signing: 5 minute default TTL, capped by the maximum and the key expiry; audiences required', async () => {
  const clock = new ManualClock(T0);
  const { signer: s } = await signer('k1', T0 + 10 * MIN);
  const d = await signJwtSvid(s, { spiffeId: 'spiffe://example.org/a', audience: 'x' }, clock, LIMITS);
  assert.equal(d.expiresAt.getTime() - T0, 5 * MIN);
  const capped = await signJwtSvid(s, { spiffeId: 'spiffe://example.org/a', audience: 'x', ttlMs: 30 * MIN }, clock, LIMITS);
  assert.equal(capped.expiresAt.getTime(), T0 + 10 * MIN);
  await assert.rejects(signJwtSvid(s, { spiffeId: 'spiffe://example.org/a', audience: [] }, clock, LIMITS), {
    code: 'ERR_IDENTITY_SVID_REQUEST_INVALID',
    message: 'a JWT-SVID needs at least one audience',
  });
  await assert.rejects(signJwtSvid(s, { spiffeId: 'spiffe://example.org', audience: 'x' }, clock, LIMITS), {
    code: 'ERR_IDENTITY_SVID_REQUEST_INVALID',
    message: 'SPIFFE ID `spiffe://example.org` has no path and cannot name a workload',
  });
  clock.set(T0 + 10 * MIN);
  await assert.rejects(signJwtSvid(s, { spiffeId: 'spiffe://example.org/a', audience: 'x' }, clock, LIMITS), { code: 'ERR_IDENTITY_CA_EXPIRED' });
});

test('validateJwtSvid accepts a good token and rejects each failure with its own code', async () => {
  const clock = new ManualClock(T0);
  const { signer: s, bundle } = await signer('k1');
  const { signer: stranger } = await signer('k2');
  const ours = bundle('example.org');
  const partner = (await signer('p1')).bundle('partner.org');
  const bundles = bundleSet(ours, partner);
  const good = await signJwtSvid(s, { spiffeId: 'spiffe://example.org/api', audience: ['billing', 'other'] }, clock, LIMITS);
  const v = await validateJwtSvid(good.token, 'billing', bundles, clock);
  assert.equal(v.spiffeId.toString(), 'spiffe://example.org/api');
  assert.deepEqual(v.audience, ['billing', 'other']);
  assert.equal(v.kid, 'k1');
  assert.equal(v.expiresAt.getTime(), T0 + 5 * MIN);

  const [h, p, sig] = good.token.split('.') as [string, string, string];
  const flipped = `${sig.slice(0, 10)}${sig[10] === 'A' ? 'B' : 'A'}${sig.slice(11)}`;
  const foreignTd = await signJwtSvid(s, { spiffeId: 'spiffe://partner.org/api', audience: 'billing' }, clock, LIMITS);
  const unknownTd = await signJwtSvid(s, { spiffeId: 'spiffe://nowhere.org/api', audience: 'billing' }, clock, LIMITS);
  const unknownKid = await signJwtSvid(stranger, { spiffeId: 'spiffe://example.org/api', audience: 'billing' }, clock, LIMITS);
  const forgedKid = await signJwtSvid({ ...stranger, kid: 'k1' }, { spiffeId: 'spiffe://example.org/api', audience: 'billing' }, clock, LIMITS);
  const noExp = await new SignJWT({ sub: 'spiffe://example.org/api', aud: 'billing' }).setProtectedHeader({ alg: 'ES256', kid: 'k1', typ: 'JWT' }).sign(s.privateKey);
  const noAud = await new SignJWT({ sub: 'spiffe://example.org/api', exp: T0 / 1000 + 60 }).setProtectedHeader({ alg: 'ES256', kid: 'k1' }).sign(s.privateKey);
  const extraHeader = await new SignJWT({ sub: 'spiffe://example.org/api', aud: 'billing', exp: T0 / 1000 + 60 }).setProtectedHeader({ alg: 'ES256', kid: 'k1', typ: 'JWT', cty: 'x' }).sign(s.privateKey);
  const atJwt = await new SignJWT({ sub: 'spiffe://example.org/api', aud: 'billing', exp: T0 / 1000 + 60 }).setProtectedHeader({ alg: 'ES256', kid: 'k1', typ: 'at+jwt' }).sign(s.privateKey);
  const hs256 = `${b64({ alg: 'HS256', kid: 'k1' })}.${p}.${sig}`;
  const none = `${b64({ alg: 'none', kid: 'k1' })}.${p}.`;
  const cases: [string, string, string, string, number?][] = [
    ['expired', good.token, 'ERR_IDENTITY_JWT_SVID_EXPIRED', 'JWT-SVID has expired', T0 + 5 * MIN],
    ['wrong audience', good.token, 'ERR_IDENTITY_JWT_SVID_AUDIENCE_MISMATCH', 'JWT-SVID is not for audience `ledger`'],
    ['wrong trust domain', foreignTd.token, 'ERR_IDENTITY_JWT_SVID_KEY_UNKNOWN', 'key `k1` is not a JWT authority of trust domain `partner.org`'],
    ['trust domain without bundle', unknownTd.token, 'ERR_IDENTITY_JWT_SVID_TRUST_DOMAIN_UNKNOWN', 'no bundle for trust domain `nowhere.org`'],
    ['unknown kid', unknownKid.token, 'ERR_IDENTITY_JWT_SVID_KEY_UNKNOWN', 'key `k2` is not a JWT authority of trust domain `example.org`'],
    ['tampered signature', `${h}.${p}.${flipped}`, 'ERR_IDENTITY_JWT_SVID_SIGNATURE_INVALID', 'JWT-SVID signature does not verify'],
    ['tampered payload', `${h}.${b64({ sub: 'spiffe://example.org/admin', aud: 'billing', exp: T0 / 1000 + 60 })}.${sig}`, 'ERR_IDENTITY_JWT_SVID_SIGNATURE_INVALID', 'JWT-SVID signature does not verify'],
    ['signed by another key under a known kid', forgedKid.token, 'ERR_IDENTITY_JWT_SVID_SIGNATURE_INVALID', 'JWT-SVID signature does not verify'],
    ['HS256', hs256, 'ERR_IDENTITY_JWT_SVID_ALG_NOT_ALLOWED', 'algorithm `HS256` is not allowed for JWT-SVIDs'],
    ['alg none', none, 'ERR_IDENTITY_JWT_SVID_MALFORMED', 'malformed JWT-SVID: signature is not base64url'],
    ['missing exp', noExp, 'ERR_IDENTITY_JWT_SVID_MALFORMED', 'malformed JWT-SVID: `exp` is missing'],
    ['missing aud', noAud, 'ERR_IDENTITY_JWT_SVID_MALFORMED', 'malformed JWT-SVID: `aud` is missing'],
    ['extra header member', extraHeader, 'ERR_IDENTITY_JWT_SVID_MALFORMED', 'malformed JWT-SVID: header member `cty` is not allowed'],
    ['typ at+jwt', atJwt, 'ERR_IDENTITY_JWT_SVID_MALFORMED', 'malformed JWT-SVID: header `typ` must be JWT or JOSE'],
    ['not compact', 'abc.def', 'ERR_IDENTITY_JWT_SVID_MALFORMED', 'malformed JWT-SVID: token is not in JWS compact form'],
    ['header not JSON', `${Buffer.from('nope').toString('base64url')}.${p}.${sig}`, 'ERR_IDENTITY_JWT_SVID_MALFORMED', 'malformed JWT-SVID: header is not JSON'],
    ['sub not SPIFFE', `${h}.${b64({ sub: 'alice', aud: 'billing', exp: 1 })}.${sig}`, 'ERR_IDENTITY_JWT_SVID_MALFORMED', 'malformed JWT-SVID: `sub` is not a workload SPIFFE ID'],
  ];
  for (const [name, token, code, message, at] of cases) {
    const c = new ManualClock(at ?? T0);
    const audience = name === 'wrong audience' ? 'ledger' : 'billing';
    await assert.rejects(validateJwtSvid(token, audience, bundles, c), { code, message }, name);
  }
  // One second before exp it is still good.
  assert.equal((await validateJwtSvid(good.token, 'billing', bundles, new ManualClock(T0 + 5 * MIN - 1000))).kid, 'k1');
});
