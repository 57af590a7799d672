import { test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate, randomBytes } from 'node:crypto';
import { ManualClock } from '../kernel/index.ts';
import { CaManager } from './ca.ts';
import { CollectingAuditSink } from './audit-sink.test-support.ts';
import { MemoryCaKeyStore } from './memory-ca-key-store.test-support.ts';
import { TrustBundle, bundleSet } from './bundle.ts';

async function ca(): Promise<CaManager> {
  return CaManager.open({ trustDomain: 'example.org', clock: new ManualClock(Date.parse('2026-03-01T00:00:00Z')), audit: new CollectingAuditSink(), store: new MemoryCaKeyStore(), kek: randomBytes(32) });
}

test('the SPIFFE bundle document has x509-svid keys with one x5c and no kid, jwt-svid keys with a kid, sequence and hint', async () => {
  const c = await ca();
  const doc = JSON.parse(c.bundle().toJson()) as { keys: Record<string, unknown>[]; spiffe_sequence: number; spiffe_refresh_hint: number };
  assert.equal(doc.spiffe_refresh_hint, 300);
  assert.equal(doc.spiffe_sequence, 2);
  const x = doc.keys.filter((k) => k.use === 'x509-svid');
  const j = doc.keys.filter((k) => k.use === 'jwt-svid');
  assert.equal(x.length, 1);
  assert.equal(j.length, 1);
  for (const k of x) {
    assert.equal(k.kid, undefined);
    assert.equal(k.kty, 'EC');
    assert.ok(Array.isArray(k.x5c) && k.x5c.length === 1);
    const cert = new X509Certificate(Buffer.from(String((k.x5c as string[])[0]), 'base64'));
    assert.equal(cert.ca, true);
    // The JWK members are the certificate's own public key.
    assert.deepEqual({ crv: k.crv, x: k.x, y: k.y }, (({ crv, x, y }) => ({ crv, x, y }))(cert.publicKey.export({ format: 'jwk' })));
  }
  assert.equal(j[0]?.kid, c.activeKeyId('jwt'));
  for (const k of doc.keys) assert.equal(k.d, undefined);
  // Round trip.
  const parsed = TrustBundle.parse(c.bundle().toJson(), 'example.org');
  assert.ok(parsed.sameKeysAs(c.bundle()));
  assert.equal(parsed.sequence, 2);
});

test('the JWKS view is use sig with alg and kid; the PEM view holds the X.509 authorities', async () => {
  const c = await ca();
  const jwks = c.bundle().toJwks();
  assert.equal(jwks.keys.length, 1);
  const [k] = jwks.keys;
  assert.deepEqual(Object.keys(k ?? {}).sort(), ['alg', 'crv', 'kid', 'kty', 'use', 'x', 'y']);
  assert.equal(k?.use, 'sig');
  assert.equal(k?.alg, 'ES256');
  const pem = c.bundle().toPem();
  assert.equal(pem.match(/BEGIN CERTIFICATE/g)?.length, 1);
  assert.equal(new X509Certificate(pem).raw.toString('base64'), Buffer.from(c.bundle().x509Authorities[0] ?? []).toString('base64'));
});

test('spiffe_sequence increases on every change of the keys and not otherwise', async () => {
  const c = await ca();
  const seen = [c.bundle().sequence ?? 0];
  await c.rotate('jwt');
  seen.push(c.bundle().sequence ?? 0);
  await c.rotate('x509', { newRoot: true });
  seen.push(c.bundle().sequence ?? 0);
  await c.rotate('x509');
  seen.push(c.bundle().sequence ?? 0);
  assert.deepEqual(seen, [2, 3, 4, 4]);
});

test('the same keys listed in another order are the same keys; one key more or less is not', async () => {
  // Slots created at the same instant are ordered by their random ids, so a
  // rebuilt bundle may list unchanged keys in another order (§4.2: keys are a set).
  const [a, b] = [(await ca()).bundle(), (await ca()).bundle()];
  const roots = [...a.x509Authorities, ...b.x509Authorities];
  const jwt = [...a.jwtAuthorities.values(), ...b.jwtAuthorities.values()];
  assert.equal(roots.length, 2);
  assert.equal(jwt.length, 2);
  const forward = new TrustBundle({ trustDomain: 'example.org', x509Authorities: roots, jwtAuthorities: jwt, sequence: 1 });
  const backward = new TrustBundle({ trustDomain: 'example.org', x509Authorities: [...roots].reverse(), jwtAuthorities: [...jwt].reverse(), sequence: 2 });
  assert.notEqual(forward.toJson(), backward.toJson());
  assert.equal(forward.sameKeysAs(backward), true);
  assert.equal(backward.sameKeysAs(forward), true);
  const fewer = new TrustBundle({ trustDomain: 'example.org', x509Authorities: roots.slice(1), jwtAuthorities: jwt });
  assert.equal(forward.sameKeysAs(fewer), false);
  assert.equal(fewer.sameKeysAs(forward), false);
  const otherJwt = new TrustBundle({ trustDomain: 'example.org', x509Authorities: roots, jwtAuthorities: jwt.slice(1) });
  assert.equal(forward.sameKeysAs(otherJwt), false);
  assert.equal(forward.sameKeysAs(new TrustBundle({ trustDomain: 'other.org', x509Authorities: roots, jwtAuthorities: jwt })), false);
});

test('parsing applies the bundle rules, one message each', () => {
  const bad: [unknown, string][] = [
    ['not json', 'bundle is not JSON'],
    [[], 'bundle is not a JSON object'],
    [{}, 'bundle has no `keys` array'],
    [{ keys: [], spiffe_sequence: -1 }, '`spiffe_sequence` must be a non-negative integer'],
    [{ keys: [], spiffe_refresh_hint: 0 }, '`spiffe_refresh_hint` must be a positive integer'],
    [{ keys: [1] }, 'key 0 is not a JSON object'],
    [{ keys: [{ kty: 'EC', use: 'x509-svid', x5c: [] }] }, 'x509-svid key 0 must have exactly one certificate in `x5c`'],
    [{ keys: [{ kty: 'EC', use: 'x509-svid', kid: 'k', x5c: ['AA=='] }] }, 'x509-svid key 0 must not have a `kid`'],
    [{ keys: [{ kty: 'EC', use: 'x509-svid', x5c: ['AAAA'] }] }, 'x509-svid key 0 has an unparseable certificate'],
    [{ keys: [{ kty: 'EC', use: 'jwt-svid', crv: 'P-256', x: 'a', y: 'b' }] }, 'jwt-svid key 0 must have a `kid`'],
    [{ keys: [{ kty: 'EC', use: 'jwt-svid', kid: 'k', crv: 'P-256', x: 'a', y: 'b', d: 'c' }] }, 'key 0 holds private key members'],
    [{ keys: [{ kty: 'EC', use: 'jwt-svid', kid: 'k', crv: 'P-256', x: 'a', y: 'b' }] }, 'jwt-svid key 0 is not a valid public key'],
  ];
  for (const [input, message] of bad) {
    assert.throws(() => TrustBundle.parse(input, 'example.org'), { code: 'ERR_IDENTITY_BUNDLE_INVALID', message });
  }
  // Keys with an unknown or missing use or kty are ignored (§4.2); an empty key set is valid but trusts nothing.
  const ignored = TrustBundle.parse({ keys: [{ kty: 'EC', use: 'enc' }, { use: 'jwt-svid', kid: 'x' }, { kty: 'XYZ', use: 'x509-svid' }] }, 'example.org');
  assert.equal(ignored.x509Authorities.length, 0);
  assert.equal(ignored.jwtAuthorities.size, 0);
});

test('bundle sets never merge two bundles of one trust domain', () => {
  const a = new TrustBundle({ trustDomain: 'example.org' });
  const b = new TrustBundle({ trustDomain: 'example.org' });
  assert.throws(() => bundleSet(a, b), { name: 'TypeError', message: 'two bundles for trust domain example.org' });
  assert.equal(bundleSet(a, new TrustBundle({ trustDomain: 'other.org' })).get('example.org'), a);
  assert.equal(a.get('other.org'), undefined);
});
