/**
 * Node attestation by OIDC/JWT token against a live server, with the issuer's
 * JWKS served by a local node:http server and tokens signed with jose. Every
 * rejection has its own code (table).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import { SignJWT, exportJWK, generateKeyPair } from 'jose';
import type { CryptoKey } from 'jose';
import { startTestServer } from '../support/server.ts';
import type { TestServer } from '../support/server.ts';
import { newKey } from './support.ts';

const ISSUER = 'https://ci.example';
let jwksServer: Server;
let s: TestServer;
let signing: CryptoKey;
let stranger: CryptoKey;

before(async () => {
  const pair = await generateKeyPair('ES256');
  signing = pair.privateKey;
  ({ privateKey: stranger } = await generateKeyPair('ES256'));
  // The JWKS publishes the public half of `signing` only.
  const jwk = { ...(await exportJWK(pair.publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' };
  jwksServer = createServer((req, res) => {
    if (req.url !== '/jwks') return void res.writeHead(404).end();
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [jwk] }));
  });
  await new Promise<void>((r) => jwksServer.listen(0, '127.0.0.1', r));
  const addr = jwksServer.address();
  const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
  s = await startTestServer({
    flags: {
      'identity.oidcIssuers': JSON.stringify([
        { issuer: ISSUER, jwksUrl: `http://127.0.0.1:${port}/jwks`, audience: 'writ', claimSelectors: { repository: 'repo', 'job/env': 'env' }, maxTokenTtlSeconds: 3600 },
      ]),
    },
  });
});

after(async () => {
  await s.stop();
  await new Promise<void>((r) => jwksServer.close(() => r()));
});

interface Claims { iss?: string; aud?: string; sub?: string; exp?: number; iat?: number; jti?: string; repository?: string; job?: Record<string, unknown> }

async function token(claims: Claims, opts: { kid?: string; key?: CryptoKey } = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const c: Claims = { iss: ISSUER, aud: 'writ', sub: 'repo:org/app:ref:refs/heads/main', iat: now, exp: now + 300, repository: 'org/app', job: { env: 'prod' }, ...claims };
  for (const k of Object.keys(c) as (keyof Claims)[]) if (c[k] === undefined) delete c[k];
  return new SignJWT(c as Record<string, unknown>).setProtectedHeader({ alg: 'ES256', kid: opts.kid ?? 'k1' }).sign(opts.key ?? signing);
}

async function attest(tok: string) {
  return s.call('POST', '/node/v1/attest', { token: null, body: { method: 'oidc', token: tok, publicKey: newKey().publicKeyPem } });
}

test('a valid OIDC token attests a node; claims become node selectors; the node SVID is issued', async () => {
  const r = await attest(await token({ jti: 'job-1' }));
  assert.equal(r.status, 200, r.text);
  assert.match(r.json.node.id, /^oidc-[0-9a-f]{24}$/);
  assert.equal(r.json.node.spiffeId, `spiffe://writ.local/writ/node/${r.json.node.id}`);
  assert.deepEqual(r.json.node.selectors, [`oidc:env:prod`, `oidc:iss:${ISSUER}`, 'oidc:repo:org/app']);
  assert.equal(r.json.svid.spiffeId, r.json.node.spiffeId);
});

test('OIDC attestation rejections, each with its own code (table)', async () => {
  const now = Math.floor(Date.now() / 1000);
  const replayed = await token({ jti: 'job-replay' });
  assert.equal((await attest(replayed)).status, 200);
  const cases: [string, string, string, string][] = [
    ['replay', replayed, 'ERR_ATTEST_OIDC_REPLAYED', 'attestation token was already used'],
    ['wrong iss', await token({ iss: 'https://evil.example' }), 'ERR_ATTEST_OIDC_ISSUER_UNKNOWN', 'attestation token `iss` is not a configured issuer'],
    ['wrong aud', await token({ aud: 'someone-else' }), 'ERR_ATTEST_OIDC_AUDIENCE_MISMATCH', `attestation token \`aud\` does not hold the audience configured for issuer \`${ISSUER}\``],
    ['expired', await token({ iat: now - 900, exp: now - 600 }), 'ERR_ATTEST_OIDC_EXPIRED', 'attestation token is expired'],
    ['unknown kid', await token({}, { kid: 'k-unknown', key: stranger }), 'ERR_ATTEST_OIDC_KEY_UNKNOWN', `no key of issuer \`${ISSUER}\` matches the attestation token's \`kid\``],
    ['bad signature', await token({}, { key: stranger }), 'ERR_ATTEST_OIDC_SIGNATURE_INVALID', `attestation token signature does not verify with the key of issuer \`${ISSUER}\``],
    ['lifetime too long', await token({ iat: now, exp: now + 7200 }), 'ERR_ATTEST_OIDC_TTL_TOO_LONG', 'attestation token lives 7200 seconds; issuer allows at most 3600'],
    ['no exp', await token({ exp: undefined }), 'ERR_ATTEST_OIDC_MALFORMED', 'attestation token claim `exp` is invalid'],
    ['not a JWT', 'not.a.jwt', 'ERR_ATTEST_OIDC_MALFORMED', 'attestation token is not a JWT'],
  ];
  const seen = new Set<string>();
  for (const [title, tok, code, message] of cases) {
    const r = await attest(tok);
    assert.equal(r.status, 401, `${title}: ${r.text}`);
    assert.equal(r.json.code, code, title);
    assert.equal(r.json.message, message, title);
    seen.add(code);
  }
  assert.equal(seen.size, cases.length - 1, 'replay, iss, aud, exp, kid, signature, ttl each have a distinct code');
  const failures = (await s.call('GET', '/admin/v1/audit/events?action=node.attested&limit=1000')).json.events.filter((e: { outcome: string }) => e.outcome === 'failure');
  assert.ok(failures.some((e: { details: { code: string } }) => e.details.code === 'ERR_ATTEST_OIDC_KEY_UNKNOWN'));
});

test('the same workload identity re-attests as the same node; once evicted it cannot come back', async () => {
  const first = await attest(await token({ sub: 'repo:org/evictee', jti: 'e-1' }));
  const again = await attest(await token({ sub: 'repo:org/evictee', jti: 'e-2' }));
  assert.equal(again.status, 200, again.text);
  assert.equal(again.json.node.id, first.json.node.id);
  assert.equal((await s.call('POST', `/admin/v1/nodes/${first.json.node.id}/evict`, { body: {} })).status, 200);
  const back = await attest(await token({ sub: 'repo:org/evictee', jti: 'e-3' }));
  assert.equal(back.status, 403);
  assert.equal(back.json.code, 'ERR_ATTEST_NODE_EVICTED');
  assert.equal(back.json.message, `node \`${first.json.node.id}\` was evicted`);
});
