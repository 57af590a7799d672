/**
 * Registered OAuth clients are stored, not held in memory: a client
 * registered before a restart still authenticates after it, and a client
 * deleted before it stays deleted.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SignJWT, exportJWK, generateKeyPair } from 'jose';
import type { CryptoKey } from 'jose';
import { startTestServer } from '../support/server.ts';
import type { TestServer } from '../support/server.ts';
import { API, form } from './support.ts';

const POLICY = `@id("issue-api")\npermit(principal, action == Writ::Action::"credential/issue", resource == Writ::Service::"${API}");\n`;

async function clientCredentials(ts: TestServer, clientId: string, key: CryptoKey) {
  const assertion = await new SignJWT({}).setProtectedHeader({ alg: 'ES256', kid: 'k1' }).setIssuer(clientId).setSubject(clientId).setAudience(ts.url).setIssuedAt().setExpirationTime('1m').setJti(crypto.randomUUID()).sign(key);
  return form(ts, '/oauth2/token', { grant_type: 'client_credentials', scope: 'read', audience: API, client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', client_assertion: assertion });
}

test('a registered client survives a restart; a deleted one stays deleted', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'writ-clients-'));
  const policies = mkdtempSync(join(tmpdir(), 'writ-clients-policy-'));
  writeFileSync(join(policies, 'p.cedar'), POLICY);
  const { privateKey, publicKey } = await generateKeyPair('ES256');
  const jwk = { ...(await exportJWK(publicKey)), kid: 'k1' };
  try {
    const first = await startTestServer({ dataDir, flags: { 'policy.dir': policies } });
    try {
      for (const id of ['keeps', 'goes']) {
        const r = await first.call('POST', '/admin/v1/oauth/clients', { body: { client_id: id, jwks: { keys: [jwk] }, scope: 'read', grant_types: ['client_credentials'] } });
        assert.equal(r.status, 201, r.text);
      }
      assert.equal((await clientCredentials(first, 'keeps', privateKey)).status, 200);
      assert.equal((await first.call('DELETE', '/admin/v1/oauth/clients/goes')).status, 204);
    } finally {
      await first.stop();
    }

    const second = await startTestServer({ dataDir, flags: { 'policy.dir': policies } });
    try {
      const listed = await second.call('GET', '/admin/v1/oauth/clients');
      assert.equal(listed.status, 200, listed.text);
      assert.deepEqual(listed.json.clients.map((c: { client_id: string }) => c.client_id), ['keeps']);
      const ok = await clientCredentials(second, 'keeps', privateKey);
      assert.equal(ok.status, 200, JSON.stringify(ok.json));
      const gone = await clientCredentials(second, 'goes', privateKey);
      assert.equal(gone.status, 401);
      assert.equal(gone.json.error, 'invalid_client');
      // The id is free again, and a second registration of a taken id is refused with its code.
      const dup = await second.call('POST', '/admin/v1/oauth/clients', { body: { client_id: 'keeps', jwks: { keys: [jwk] } } });
      assert.equal(dup.status, 409, dup.text);
      assert.equal(dup.json.code, 'ERR_OAUTH_CLIENT_EXISTS');
    } finally {
      await second.stop();
    }
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
    rmSync(policies, { recursive: true, force: true });
  }
});

test('a client with the longest id the API accepts (256 characters) can be read back and deleted', async () => {
  const ts = await startTestServer({ flags: { logLevel: 'warn' } });
  try {
    const id = 'c'.repeat(256);
    const r = await ts.call('POST', '/admin/v1/oauth/clients', { body: { client_id: id, spiffe_id: 'spiffe://writ.local/long-id' } });
    assert.equal(r.status, 201, r.text);
    const del = await ts.call('DELETE', `/admin/v1/oauth/clients/${id}`);
    assert.equal(del.status, 204, del.text);
    assert.deepEqual((await ts.call('GET', '/admin/v1/oauth/clients')).json.clients, []);
    const again = await ts.call('DELETE', `/admin/v1/oauth/clients/${id}`);
    assert.equal(again.status, 404, again.text);
    assert.equal(again.json.code, 'ERR_OAUTH_CLIENT_NOT_FOUND');
    assert.equal(again.json.message, `no OAuth client \`${'c'.repeat(128)}\``);
  } finally {
    await ts.stop();
  }
});

test('a registration whose JWKS holds an unusable key is refused at once, with the key named', async () => {
  const ts = await startTestServer({ flags: { logLevel: 'warn' } });
  try {
    const cases: [Record<string, unknown>[], string][] = [
      [[{ kty: 'RSA' }], 'key 1 of `jwks` is not a usable RSA public key (missing or malformed members)'],
      [[{ kty: 'EC', crv: 'P-256', x: 'AAAA', y: 'AAAA' }], 'key 1 of `jwks` is not a usable EC public key (missing or malformed members)'],
      [[{ kty: 'OKP', crv: 'Ed25519', x: 'not base64url!' }], 'key 1 of `jwks` is not a usable OKP public key (missing or malformed members)'],
    ];
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const good = publicKey.export({ format: 'jwk' }) as Record<string, unknown>;
    cases.push([[good, { kty: 'RSA', n: 'AQAB' }], 'key 2 of `jwks` is not a usable RSA public key (missing or malformed members)']);
    for (const [keys, message] of cases) {
      const r = await ts.call('POST', '/admin/v1/oauth/clients', { body: { client_id: 'broken-keys', jwks: { keys } } });
      assert.equal(r.status, 400, r.text);
      assert.deepEqual([r.json.code, r.json.message], ['ERR_OAUTH_CLIENT_INVALID', message]);
    }
    assert.equal((await ts.call('POST', '/admin/v1/oauth/clients', { body: { client_id: 'good-keys', jwks: { keys: [good] } } })).status, 201);
  } finally {
    await ts.stop();
  }
});
