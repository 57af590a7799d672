import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SignJWT, jwtVerify } from 'jose';
import { deriveAccessTokenKey, generateAccessTokenKey } from './keys.ts';

test('a key derived from the same secret is the same key (replicas and restarts agree); another secret gives another', async () => {
  const a = await deriveAccessTokenKey(new Uint8Array(32).fill(7));
  const b = await deriveAccessTokenKey(new Uint8Array(32).fill(7));
  const c = await deriveAccessTokenKey(new Uint8Array(32).fill(8));
  assert.equal(a.kid, b.kid);
  assert.notEqual(a.kid, c.kid);
  assert.match(a.kid, /^at-[A-Za-z0-9_-]{43}$/);
  assert.deepEqual(Object.keys(a.publicJwk).sort(), ['alg', 'crv', 'kid', 'kty', 'use', 'x', 'y']);
  const jwt = await new SignJWT({ n: 1 }).setProtectedHeader({ alg: 'ES256', kid: a.kid, typ: 'at+jwt' }).sign(a.privateKey);
  assert.equal((await jwtVerify(jwt, b.publicKey)).payload.n, 1);
  await assert.rejects(jwtVerify(jwt, c.publicKey), (e: unknown) => (e as { code?: string }).code === 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED');
});

test('a short secret is a programmer error; a generated key has its own kid', async () => {
  await assert.rejects(deriveAccessTokenKey(new Uint8Array(16)), { name: 'TypeError', message: 'the secret to derive the access-token key from must be at least 32 bytes' });
  const g = await generateAccessTokenKey();
  assert.match(g.kid, /^at-/);
  assert.equal(g.publicJwk.use, 'sig');
});
