/**
 * Delegation chains over HTTP (narrowing only, policy on every hop with the
 * chain as context, depth cap, chain in the audit log) and the table of
 * every OAuth error the token, introspection and revocation endpoints answer.
 * Last, no token or assertion appears in the log output or the audit table.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { SignJWT, exportJWK, generateKeyPair } from 'jose';
import type { webcrypto } from 'node:crypto';
import type { TestServer } from '../support/server.ts';

type CryptoKey = webcrypto.CryptoKey;
import { API, FORBIDDEN, JWT_BEARER, JWT_SPIFFE, REPORTS, TD, TOKEN_EXCHANGE, TT_AT, TT_JWT, decodePayload, form, startOAuthServer, svid } from './support.ts';

let ts: TestServer;
let clientKey: CryptoKey;
const CLIENT_ID = 'rs-reporting';
/** Every token and assertion this file sent or received, to grep for at the end. */
const secrets = new Set<string>();

before(async () => {
  ts = await startOAuthServer({ 'oauth.dpopNonce': true, logLevel: 'debug' });
  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
  clientKey = privateKey;
  const reg = await ts.call('POST', '/admin/v1/oauth/clients', { body: { client_id: CLIENT_ID, jwks: { keys: [{ ...(await exportJWK(publicKey)), kid: 'r1' }] }, scope: 'read', grant_types: ['client_credentials'] } });
  assert.equal(reg.status, 201, reg.text);
});

after(async () => {
  await ts.stop();
});

async function s(path: string, aud?: string | readonly string[]): Promise<string> {
  const t = await svid(ts, path, aud);
  secrets.add(t);
  return t;
}

async function assertion(claims: Record<string, unknown> = {}, aud: string = ts.url): Promise<string> {
  const a = await new SignJWT(claims).setProtectedHeader({ alg: 'ES256', kid: 'r1' }).setIssuer(CLIENT_ID).setSubject(CLIENT_ID).setAudience(aud).setIssuedAt().setExpirationTime('1m').setJti(crypto.randomUUID()).sign(clientKey);
  secrets.add(a);
  return a;
}

async function exchange(params: Record<string, string | string[]>): Promise<{ status: number; json: any; headers: Headers }> {
  const r = await form(ts, '/oauth2/token', { grant_type: TOKEN_EXCHANGE, ...params });
  if (typeof r.json?.access_token === 'string') secrets.add(r.json.access_token);
  return r;
}

async function auditEvents(action: string): Promise<any[]> {
  const r = await ts.call('GET', `/admin/v1/audit/events?action=${action}&limit=10000`);
  assert.equal(r.status, 200);
  return r.json.events;
}

describe('delegation chains', () => {
  test('each hop nests act, narrows scope, and is decided by policy with the chain', async () => {
    // Hop 1: agent A acts for the frontend.
    const t1 = await exchange({ subject_token: await s('/svc/frontend'), subject_token_type: TT_JWT, actor_token: await s('/agent/a'), actor_token_type: TT_JWT, audience: API, scope: 'read write' });
    assert.equal(t1.status, 200, JSON.stringify(t1.json));
    assert.deepEqual(decodePayload(t1.json.access_token).act, { sub: `spiffe://${TD}/agent/a` });

    // Hop 2: agent B acts on that token with a narrower scope.
    const t2 = await exchange({ subject_token: t1.json.access_token, subject_token_type: TT_AT, actor_token: await s('/agent/b'), actor_token_type: TT_JWT, audience: API, scope: 'read' });
    assert.equal(t2.status, 200, JSON.stringify(t2.json));
    const c2 = decodePayload(t2.json.access_token);
    assert.equal(c2.sub, `spiffe://${TD}/svc/frontend`);
    assert.deepEqual(c2.act, { sub: `spiffe://${TD}/agent/b`, act: { sub: `spiffe://${TD}/agent/a` } });
    assert.equal(c2.scope, 'read');

    // The chain is in the audit event with the decision ids.
    const issued = (await auditEvents('token.issued')).find((e) => e.target?.id === c2.jti);
    assert.ok(issued);
    assert.deepEqual(issued.details.delegation, [`spiffe://${TD}/agent/b`, `spiffe://${TD}/agent/a`]);
    assert.equal(issued.details.decisionIds.length, 1);
    assert.equal(issued.details.grantType, TOKEN_EXCHANGE);
    const decision = (await auditEvents('decision.made')).find((e) => e.details?.decisionId === issued.details.decisionIds[0] || e.target?.id === issued.details.decisionIds[0] || JSON.stringify(e).includes(issued.details.decisionIds[0]));
    assert.ok(decision, 'the decision is in the audit log');
    assert.ok(JSON.stringify(decision).includes(`spiffe://${TD}/agent/b`), 'the PDP saw the chain');

    // A hop that widens scope is invalid_scope, and the refusal is audited with the chain.
    const wider = await exchange({ subject_token: t2.json.access_token, subject_token_type: TT_AT, actor_token: await s('/agent/c'), actor_token_type: TT_JWT, audience: API, scope: 'read write' });
    assert.equal(wider.status, 400);
    assert.deepEqual(wider.json, { error: 'invalid_scope', error_description: "scope `write` is wider than the subject token's" });
    const refused = (await auditEvents('token.refused')).at(-1);
    assert.deepEqual(refused.details.delegation, [`spiffe://${TD}/agent/c`, `spiffe://${TD}/agent/b`, `spiffe://${TD}/agent/a`]);
    assert.ok(refused.reasons.includes('scope-widened'));

    // A hop to an audience policy refuses for a chain deeper than one is invalid_target.
    const deepReports = await exchange({ subject_token: t1.json.access_token, subject_token_type: TT_AT, actor_token: await s('/agent/b'), actor_token_type: TT_JWT, audience: REPORTS, scope: 'read' });
    assert.equal(deepReports.status, 400);
    assert.deepEqual(deepReports.json, { error: 'invalid_target', error_description: `policy does not allow a token for audience \`${REPORTS}\`` });
    // …while the one-hop chain may reach it.
    const oneHop = await exchange({ subject_token: t1.json.access_token, subject_token_type: TT_AT, audience: REPORTS, scope: 'read' });
    assert.equal(oneHop.status, 200, JSON.stringify(oneHop.json));

    // Depth cap (3): hop 3 passes, hop 4 is refused.
    const t3 = await exchange({ subject_token: t2.json.access_token, subject_token_type: TT_AT, actor_token: await s('/agent/c'), actor_token_type: TT_JWT, audience: API });
    assert.equal(t3.status, 200, JSON.stringify(t3.json));
    assert.equal(decodePayload(t3.json.access_token).scope, 'read');
    const t4 = await exchange({ subject_token: t3.json.access_token, subject_token_type: TT_AT, actor_token: await s('/agent/d'), actor_token_type: TT_JWT, audience: API });
    assert.equal(t4.status, 400);
    assert.deepEqual(t4.json, { error: 'invalid_request', error_description: 'delegation chain would be 4 hops deep; the cap is 3' });

    // A revoked hop cannot be exchanged further.
    await ts.server.oauth.leases.revoke(decodePayload(t3.json.access_token).jti, 'test', 'c');
    const afterRevoke = await exchange({ subject_token: t3.json.access_token, subject_token_type: TT_AT, audience: API });
    assert.deepEqual(afterRevoke.json, { error: 'invalid_grant', error_description: 'subject token is not an active access token of this server' });
  });
});

describe('OAuth error table', () => {
  type Row = { name: string; status: number; error: string; description: string | RegExp; send: () => Promise<{ status: number; json: any; headers: Headers }> };
  const rows: Row[] = [
    { name: 'missing grant_type', status: 400, error: 'invalid_request', description: 'parameter `grant_type` is required', send: () => form(ts, '/oauth2/token', { scope: 'read' }) },
    { name: 'repeated parameter', status: 400, error: 'invalid_request', description: 'parameter `scope` is repeated', send: () => form(ts, '/oauth2/token', { grant_type: 'client_credentials', scope: ['a', 'b'] }) },
    { name: 'JSON body', status: 400, error: 'invalid_request', description: 'body must be `application/x-www-form-urlencoded`', send: async () => { const r = await ts.call('POST', '/oauth2/token', { token: null, body: { grant_type: 'client_credentials' } }); return { status: r.status, json: r.json, headers: r.headers }; } },
    { name: 'token exchange without subject_token_type', status: 400, error: 'invalid_request', description: 'parameter `subject_token_type` is required', send: async () => exchange({ subject_token: await s('/svc/x'), audience: API }) },
    { name: 'actor_token without actor_token_type', status: 400, error: 'invalid_request', description: 'parameter `actor_token_type` is required with `actor_token`', send: async () => exchange({ subject_token: await s('/svc/x'), subject_token_type: TT_JWT, actor_token: await s('/agent/a'), audience: API }) },
    { name: 'client secret in Authorization header', status: 401, error: 'invalid_client', description: 'client secrets (`Authorization` header) are not supported; use private_key_jwt or a JWT-SVID', send: () => form(ts, '/oauth2/token', { grant_type: 'client_credentials' }, { authorization: 'Basic YTpi' }) },
    { name: 'unknown client', status: 401, error: 'invalid_client', description: 'client `nobody` is not registered for private_key_jwt', send: async () => form(ts, '/oauth2/token', { grant_type: 'client_credentials', client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', client_assertion: await new SignJWT({}).setProtectedHeader({ alg: 'ES256' }).setIssuer('nobody').setSubject('nobody').setAudience(ts.url).setExpirationTime('1m').setJti('j').sign(clientKey) }) },
    { name: 'replayed private_key_jwt assertion', status: 401, error: 'invalid_client', description: 'client assertion `jti` was already used', send: async () => {
      const a = await assertion();
      const first = await form(ts, '/oauth2/token', { grant_type: 'client_credentials', client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', client_assertion: a, resource: API, scope: 'read' });
      assert.equal(first.status, 200, JSON.stringify(first.json));
      secrets.add(first.json.access_token);
      return form(ts, '/oauth2/token', { grant_type: 'client_credentials', client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', client_assertion: a, resource: API, scope: 'read' });
    } },
    { name: 'assertion for another audience', status: 401, error: 'invalid_client', description: 'client assertion fails the `aud` check', send: async () => form(ts, '/oauth2/token', { grant_type: 'client_credentials', client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', client_assertion: await assertion({}, 'https://elsewhere.example.com'), resource: API }) },
    { name: 'SPIFFE assertion with two audiences', status: 401, error: 'invalid_client', description: 'client assertion `aud` must be the issuer as its sole value', send: async () => form(ts, '/oauth2/token', { grant_type: 'client_credentials', client_assertion_type: JWT_SPIFFE, client_assertion: await s('/svc/x', [ts.url, 'https://other.example.com']), resource: API }) },
    { name: 'client_credentials without client authentication', status: 401, error: 'invalid_client', description: 'client_credentials needs client authentication (private_key_jwt, a JWT-SVID, or tls_client_auth with an X.509-SVID)', send: () => form(ts, '/oauth2/token', { grant_type: 'client_credentials', client_id: 'anyone', resource: API }) },
    { name: 'introspection without client authentication', status: 401, error: 'invalid_client', description: 'introspection needs client authentication', send: () => form(ts, '/oauth2/introspect', { token: 'x' }) },
    { name: 'client not registered for the grant', status: 400, error: 'unauthorized_client', description: 'client is not registered for grant type `urn:ietf:params:oauth:grant-type:token-exchange`', send: async () => exchange({ client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', client_assertion: await assertion(), subject_token: await s('/svc/x'), subject_token_type: TT_JWT, audience: API }) },
    { name: 'subject token signed by an unknown key', status: 400, error: 'invalid_grant', description: 'subject token is not a valid JWT-SVID for this server (key-unknown)', send: async () => {
      const k = await generateKeyPair('ES256');
      const forged = await new SignJWT({}).setProtectedHeader({ alg: 'ES256', kid: 'nope', typ: 'JWT' }).setSubject(`spiffe://${TD}/svc/x`).setAudience(ts.url).setExpirationTime('1m').sign(k.privateKey);
      return exchange({ subject_token: forged, subject_token_type: TT_JWT, audience: API });
    } },
    { name: 'subject token for another audience', status: 400, error: 'invalid_grant', description: 'subject token is not a valid JWT-SVID for this server (audience-mismatch)', send: async () => exchange({ subject_token: await s('/svc/x', 'https://someone-else.example.com'), subject_token_type: TT_JWT, audience: API }) },
    { name: 'jwt-bearer with a bad assertion', status: 400, error: 'invalid_grant', description: 'assertion is not a valid JWT-SVID for this server (malformed)', send: () => form(ts, '/oauth2/token', { grant_type: JWT_BEARER, assertion: 'a.b.c', audience: API }) },
    { name: 'no audience', status: 400, error: 'invalid_target', description: 'an `audience` or `resource` is required: tokens are audience-bound', send: async () => exchange({ subject_token: await s('/svc/x'), subject_token_type: TT_JWT }) },
    { name: 'audience the policy refuses', status: 400, error: 'invalid_target', description: `policy does not allow a token for audience \`${FORBIDDEN}\``, send: async () => exchange({ subject_token: await s('/svc/x'), subject_token_type: TT_JWT, audience: FORBIDDEN }) },
    { name: 'resource with a fragment', status: 400, error: 'invalid_target', description: '`resource` must be an absolute URI without a fragment', send: async () => exchange({ subject_token: await s('/svc/x'), subject_token_type: TT_JWT, resource: `${API}#x` }) },
    { name: 'scope with a forbidden character', status: 400, error: 'invalid_scope', description: 'scope has a character RFC 6749 §3.3 does not allow', send: async () => exchange({ subject_token: await s('/svc/x'), subject_token_type: TT_JWT, audience: API, scope: 'read "x"' }) },
    { name: 'client_credentials the policy refuses', status: 400, error: 'invalid_scope', description: `policy does not allow this scope for audience \`${FORBIDDEN}\``, send: async () => form(ts, '/oauth2/token', { grant_type: 'client_credentials', client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', client_assertion: await assertion(), resource: FORBIDDEN, scope: 'read' }) },
    { name: 'unknown grant type', status: 400, error: 'unsupported_grant_type', description: 'grant type `password` is not supported', send: () => form(ts, '/oauth2/token', { grant_type: 'password' }) },
    { name: 'unknown subject token type', status: 400, error: 'unsupported_token_type', description: 'subject token type `urn:ietf:params:oauth:token-type:saml2` is not supported', send: () => exchange({ subject_token: 'x', subject_token_type: 'urn:ietf:params:oauth:token-type:saml2', audience: API }) },
    { name: 'unknown requested token type', status: 400, error: 'unsupported_token_type', description: 'requested token type `urn:ietf:params:oauth:token-type:id_token` is not supported', send: async () => exchange({ subject_token: await s('/svc/x'), subject_token_type: TT_JWT, requested_token_type: 'urn:ietf:params:oauth:token-type:id_token', audience: API }) },
    { name: 'revocation with an unknown token type hint', status: 400, error: 'unsupported_token_type', description: 'token type hint `saml` is not supported', send: async () => form(ts, '/oauth2/revoke', { token: 'x', token_type_hint: 'saml', client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', client_assertion: await assertion({}, `${ts.url}/oauth2/revoke`) }) },
    { name: 'DPoP proof that is not a JWS', status: 400, error: 'invalid_dpop_proof', description: 'DPoP proof is not a compact JWS', send: async () => form(ts, '/oauth2/token', { grant_type: TOKEN_EXCHANGE, subject_token: await s('/svc/x'), subject_token_type: TT_JWT, audience: API }, { dpop: 'not-a-jws' }) },
    { name: 'DPoP proof for another URL', status: 400, error: 'invalid_dpop_proof', description: 'DPoP proof `htu` does not match the request URL', send: async () => {
      const nonce = (await form(ts, '/oauth2/token', { grant_type: 'password' })).headers.get('dpop-nonce') ?? '';
      return form(ts, '/oauth2/token', { grant_type: TOKEN_EXCHANGE, subject_token: await s('/svc/x'), subject_token_type: TT_JWT, audience: API }, { dpop: await proof({ htu: 'https://elsewhere.example.com/token', nonce }) });
    } },
    { name: 'DPoP proof with typ JWT', status: 400, error: 'invalid_dpop_proof', description: 'DPoP proof header `typ` must be `dpop+jwt`', send: async () => form(ts, '/oauth2/token', { grant_type: TOKEN_EXCHANGE, subject_token: await s('/svc/x'), subject_token_type: TT_JWT, audience: API }, { dpop: await proof({}, 'JWT') }) },
    { name: 'DPoP proof without the nonce', status: 400, error: 'use_dpop_nonce', description: 'DPoP proof must carry the server nonce', send: async () => form(ts, '/oauth2/token', { grant_type: TOKEN_EXCHANGE, subject_token: await s('/svc/x'), subject_token_type: TT_JWT, audience: API }, { dpop: await proof({}) }) },
  ];

  async function proof(claims: Record<string, unknown>, typ = 'dpop+jwt'): Promise<string> {
    const k = await generateKeyPair('ES256', { extractable: true });
    return new SignJWT({ htm: 'POST', htu: `${ts.url}/oauth2/token`, ...claims }).setProtectedHeader({ alg: 'ES256', typ, jwk: await exportJWK(k.publicKey) }).setIssuedAt().setJti(crypto.randomUUID()).sign(k.privateKey);
  }

  for (const row of rows) {
    test(`${row.error}: ${row.name}`, async () => {
      const r = await row.send();
      assert.equal(r.status, row.status, JSON.stringify(r.json));
      assert.deepEqual(Object.keys(r.json).sort(), ['error', 'error_description']);
      assert.equal(r.json.error, row.error);
      if (typeof row.description === 'string') assert.equal(r.json.error_description, row.description);
      else assert.match(r.json.error_description, row.description);
      assert.equal(r.headers.get('cache-control'), 'no-store');
      if (row.error === 'use_dpop_nonce') assert.ok((r.headers.get('dpop-nonce') ?? '').length > 20, 'DPoP-Nonce header is sent');
    });
  }

  test('every code in the list is covered by a row', () => {
    const covered = new Set(rows.map((r) => r.error));
    for (const e of ['invalid_request', 'invalid_client', 'invalid_grant', 'invalid_target', 'invalid_scope', 'unsupported_grant_type', 'unsupported_token_type', 'invalid_dpop_proof', 'use_dpop_nonce']) assert.ok(covered.has(e), e);
  });

  test('introspection of an unknown token is exactly {"active":false}', async () => {
    const r = await form(ts, '/oauth2/introspect', { token: 'whatever', client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', client_assertion: await assertion({}, `${ts.url}/oauth2/introspect`) });
    assert.equal(r.status, 200);
    assert.deepEqual(r.json, { active: false });
  });
});

describe('no secrets in logs or audit', () => {
  test('no token or assertion sent or issued appears in the log output or the audit table', async () => {
    assert.ok(secrets.size > 20, `collected ${secrets.size}`);
    const logs = ts.logs();
    const audit = JSON.stringify((await ts.call('GET', '/admin/v1/audit/events?limit=10000')).json);
    assert.ok(audit.includes('token.issued') && audit.includes('token.refused'));
    for (const t of secrets) {
      const sig = t.split('.')[2] ?? t;
      assert.ok(!logs.includes(sig), 'a token signature is in the log output');
      assert.ok(!audit.includes(sig), 'a token signature is in the audit table');
    }
  });
});
