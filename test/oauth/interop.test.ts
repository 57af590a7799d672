/**
 * Interop: `openid-client` as a real OAuth client against a real Writ server
 * (discovery, client credentials with private_key_jwt, token exchange,
 * introspection, revocation, DPoP with nonces), and `oauth4webapi` as an
 * independent resource server validating Writ's access tokens.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as client from 'openid-client';
import * as oauth from 'oauth4webapi';
import { SignJWT, calculateJwkThumbprint, exportJWK, generateKeyPair } from 'jose';
import type { webcrypto } from 'node:crypto';
import type { TestServer } from '../support/server.ts';

type CryptoKey = webcrypto.CryptoKey;
import { API, TD, TOKEN_EXCHANGE, TT_JWT, TT_AT, decodeHeader, decodePayload, form, startOAuthServer, svid } from './support.ts';

let ts: TestServer;
let clientKey: CryptoKey;
let config: client.Configuration;
const CLIENT_ID = 'ci-deployer';

before(async () => {
  // Nonces on: openid-client must follow `use_dpop_nonce` by itself.
  ts = await startOAuthServer({ 'oauth.dpopNonce': true });
  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
  clientKey = privateKey;
  const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' };
  const reg = await ts.call('POST', '/admin/v1/oauth/clients', { body: { client_id: CLIENT_ID, jwks: { keys: [jwk] }, scope: 'read write deploy' } });
  assert.equal(reg.status, 201, reg.text);
  assert.equal(reg.json.token_endpoint_auth_method, 'private_key_jwt');
  config = await client.discovery(new URL(ts.url), CLIENT_ID, undefined, client.PrivateKeyJwt({ key: clientKey, kid: 'k1' }), { execute: [client.allowInsecureRequests], algorithm: 'oauth2' });
});

after(async () => {
  await ts.stop();
});

async function resourceServerAs(): Promise<oauth.AuthorizationServer> {
  const issuer = new URL(ts.url);
  return oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, { algorithm: 'oauth2', [oauth.allowInsecureRequests]: true }));
}

describe('openid-client against Writ', () => {
  test('discovery reads complete RFC 8414 metadata (MCP SDK fields included)', () => {
    const m = config.serverMetadata();
    assert.equal(m.issuer, ts.url);
    assert.equal(m.token_endpoint, `${ts.url}/oauth2/token`);
    assert.equal(m.jwks_uri, `${ts.url}/oauth2/jwks`);
    assert.equal(m.introspection_endpoint, `${ts.url}/oauth2/introspect`);
    assert.equal(m.revocation_endpoint, `${ts.url}/oauth2/revoke`);
    assert.equal(m.authorization_endpoint, `${ts.url}/oauth2/authorize`);
    assert.deepEqual(m.response_types_supported, []);
    assert.deepEqual(m.grant_types_supported, ['client_credentials', TOKEN_EXCHANGE, 'urn:ietf:params:oauth:grant-type:jwt-bearer']);
    assert.ok(m.token_endpoint_auth_methods_supported?.includes('private_key_jwt'));
    assert.ok(m.dpop_signing_alg_values_supported?.includes('ES256'));
  });

  test('client credentials with PrivateKeyJwt: an audience-bound, scope-narrowed at+jwt behind a lease', async () => {
    const tokens = await client.clientCredentialsGrant(config, { scope: 'read', resource: API });
    assert.equal(tokens.token_type, 'bearer');
    assert.equal(tokens.scope, 'read');
    assert.equal(tokens.expires_in, 300);
    const h = decodeHeader(tokens.access_token);
    assert.equal(h.typ, 'at+jwt');
    assert.equal(h.alg, 'ES256');
    assert.match(h.kid, /^at-/);
    const c = decodePayload(tokens.access_token);
    assert.equal(c.iss, ts.url);
    assert.equal(c.sub, CLIENT_ID);
    assert.equal(c.client_id, CLIENT_ID);
    assert.equal(c.aud, API);
    assert.equal(c.scope, 'read');
    assert.equal(c.exp - c.iat, 300);
    const lease = await ts.server.oauth.leases.get(c.jti);
    assert.equal(lease?.state, 'active');
    assert.equal(lease?.kind, 'access_token');
    // The access-token key is not a JWT-SVID key (gotcha 2).
    const svidKids = ts.server.identity.bundle().toJwks().keys.map((k) => k.kid);
    assert.ok(!svidKids.includes(h.kid));
  });

  test('a scope the client is not registered for is invalid_scope', async () => {
    await assert.rejects(client.clientCredentialsGrant(config, { scope: 'admin', resource: API }), (e: unknown) => {
      assert.ok(e instanceof client.ResponseBodyError);
      assert.equal(e.error, 'invalid_scope');
      assert.equal(e.error_description, 'scope `admin` is not registered for this client');
      return true;
    });
  });

  test('token exchange (genericGrantRequest) of a JWT-SVID, then introspection and revocation', async () => {
    const subject = await svid(ts, '/agent/triage');
    const tokens = await client.genericGrantRequest(config, TOKEN_EXCHANGE, { subject_token: subject, subject_token_type: TT_JWT, audience: API, scope: 'read' });
    assert.equal(tokens.issued_token_type, TT_AT);
    assert.equal(tokens.token_type, 'bearer');
    const c = decodePayload(tokens.access_token);
    assert.equal(c.sub, `spiffe://${TD}/agent/triage`);
    assert.equal(c.client_id, CLIENT_ID);

    const active = await client.tokenIntrospection(config, tokens.access_token);
    assert.equal(active.active, true);
    assert.equal(active.sub, `spiffe://${TD}/agent/triage`);
    assert.equal(active.scope, 'read');
    assert.equal(active.token_type, 'Bearer');
    assert.equal(active.jti, c.jti);

    await client.tokenRevocation(config, tokens.access_token);
    assert.equal((await ts.server.oauth.leases.get(c.jti))?.state, 'revoked');
    const inactive = await client.tokenIntrospection(config, tokens.access_token);
    assert.deepEqual({ ...inactive }, { active: false });
    // RFC 7009 §2.2: unknown tokens are a 200 too.
    await client.tokenRevocation(config, 'not-a-token');
  });

  test('DPoP: openid-client follows use_dpop_nonce; the token is bound by cnf.jkt', async () => {
    const pair = await client.randomDPoPKeyPair('ES256');
    const DPoP = client.getDPoPHandle(config, pair);
    const tokens = await client.clientCredentialsGrant(config, { scope: 'deploy', resource: API }, { DPoP });
    assert.equal(tokens.token_type, 'dpop');
    const c = decodePayload(tokens.access_token);
    assert.equal(c.cnf.jkt, await calculateJwkThumbprint(await exportJWK(pair.publicKey), 'sha256'));
    const intro = await client.tokenIntrospection(config, tokens.access_token);
    assert.equal(intro.token_type, 'DPoP');
    assert.deepEqual(intro.cnf, { jkt: c.cnf.jkt });
  });
});

describe('oauth4webapi as an independent resource server', () => {
  test('validateJwtAccessToken accepts a Bearer token for its audience and refuses another audience', async () => {
    const as = await resourceServerAs();
    const { access_token } = await client.clientCredentialsGrant(config, { scope: 'read', resource: API });
    const req = new Request(`${API}/things`, { headers: { authorization: `Bearer ${access_token}` } });
    const claims = await oauth.validateJwtAccessToken(as, req, API, { [oauth.allowInsecureRequests]: true, signingAlgorithms: ['ES256'] });
    assert.equal(claims.client_id, CLIENT_ID);
    assert.equal(claims.scope, 'read');
    await assert.rejects(oauth.validateJwtAccessToken(as, req, 'https://other.example.com', { [oauth.allowInsecureRequests]: true, signingAlgorithms: ['ES256'] }), (e: unknown) => {
      assert.ok(e instanceof oauth.OperationProcessingError);
      assert.equal(e.message, 'unexpected JWT "aud" (audience) claim value');
      return true;
    });
  });

  test('a DPoP-bound token passes with a correct proof and fails with a forged one', async () => {
    const as = await resourceServerAs();
    const pair = await client.randomDPoPKeyPair('ES256');
    const { access_token } = await client.clientCredentialsGrant(config, { scope: 'read', resource: API }, { DPoP: client.getDPoPHandle(config, pair) });
    const url = `${API}/things`;
    const proofWith = async (key: CryptoKey, publicKey: CryptoKey): Promise<string> =>
      new SignJWT({ htm: 'GET', htu: url, ath: Buffer.from(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(access_token))).toString('base64url') })
        .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: await exportJWK(publicKey) })
        .setIssuedAt()
        .setJti(crypto.randomUUID())
        .sign(key);
    const good = new Request(url, { headers: { authorization: `DPoP ${access_token}`, dpop: await proofWith(pair.privateKey, pair.publicKey) } });
    const claims = await oauth.validateJwtAccessToken(as, good, API, { [oauth.allowInsecureRequests]: true, signingAlgorithms: ['ES256'] });
    assert.equal(claims.sub, CLIENT_ID);

    // Forged: a proof from a key the token is not bound to.
    const other = await generateKeyPair('ES256', { extractable: true });
    const forged = new Request(url, { headers: { authorization: `DPoP ${access_token}`, dpop: await proofWith(other.privateKey, other.publicKey) } });
    await assert.rejects(oauth.validateJwtAccessToken(as, forged, API, { [oauth.allowInsecureRequests]: true, signingAlgorithms: ['ES256'] }), (e: unknown) => {
      assert.ok(e instanceof oauth.OperationProcessingError);
      assert.equal(e.message, 'JWT Access Token confirmation mismatch');
      return true;
    });
    // And the token without any proof is refused too.
    const bare = new Request(url, { headers: { authorization: `DPoP ${access_token}` } });
    await assert.rejects(oauth.validateJwtAccessToken(as, bare, API, { [oauth.allowInsecureRequests]: true, signingAlgorithms: ['ES256'] }), oauth.OperationProcessingError);
  });
});

describe('SPIFFE client authentication and jwt-bearer', () => {
  test('a JWT-SVID client assertion (aud = issuer) authenticates client_credentials', async () => {
    const assertion = await svid(ts, '/svc/billing');
    const r = await form(ts, '/oauth2/token', { grant_type: 'client_credentials', client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-spiffe', client_assertion: assertion, resource: API });
    assert.equal(r.status, 200, JSON.stringify(r.json));
    const c = decodePayload(r.json.access_token);
    assert.equal(c.sub, `spiffe://${TD}/svc/billing`);
    assert.equal(c.client_id, `spiffe://${TD}/svc/billing`);
    assert.ok(r.headers.get('dpop-nonce'));
  });

  test('the jwt-bearer grant redeems a JWT-SVID whose aud is the token endpoint', async () => {
    const r = await form(ts, '/oauth2/token', { grant_type: 'urn:ietf:params:oauth:grant-type:jwt-bearer', assertion: await svid(ts, '/svc/batch', `${ts.url}/oauth2/token`), audience: API, scope: 'read' });
    assert.equal(r.status, 200, JSON.stringify(r.json));
    assert.equal(decodePayload(r.json.access_token).sub, `spiffe://${TD}/svc/batch`);
    assert.equal(r.json.scope, 'read');
  });
});
