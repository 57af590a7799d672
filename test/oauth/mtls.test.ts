/**
 * OAuth over mutual TLS (RFC 8705), on the server's TLS listener with real
 * TLS connections: `tls_client_auth` with the URI SAN of an X.509-SVID, its
 * error paths, certificate-bound access tokens (`cnf.x5t#S256`) checked by an
 * independent client (curl for the grant, openssl for the thumbprint),
 * token exchange with the caller's X.509-SVID as the subject, the metadata,
 * and the resource-server check.
 */
import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { X509Certificate, generateKeyPairSync } from 'node:crypto';
import { SignJWT, calculateJwkThumbprint, exportJWK, generateKeyPair } from 'jose';
import { checkCertificateBinding } from '../../src/credentials/index.ts';
import type { TestServer } from '../support/server.ts';
import { foreignCert, run, svidFromServerCa, tempDir, tlsCall, writeIdentity } from '../support/tls.ts';
import type { ClientIdentity } from '../support/tls.ts';
import { API, TD, TOKEN_EXCHANGE, decodePayload, form, startOAuthServer } from './support.ts';

const CI = `spiffe://${TD}/svc/ci`;
const OTHER = `spiffe://${TD}/svc/other`;
const X509_SVID = 'urn:writ:params:oauth:token-type:x509-svid';

describe('OAuth over mutual TLS (RFC 8705)', () => {
  let s: TestServer;
  let port: number;
  let bundle: string;
  let dir: string;
  let ci: ClientIdentity;
  let other: ClientIdentity;

  const token = (client: ClientIdentity | undefined, params: Record<string, string>, path = '/oauth2/token') =>
    tlsCall(port, bundle, 'POST', path, { ...(client === undefined ? {} : { client }), body: new URLSearchParams(params).toString(), headers: { 'content-type': 'application/x-www-form-urlencoded' } });

  before(async () => {
    s = await startOAuthServer({ 'tls.listen': '127.0.0.1:0' });
    assert.ok(s.server.tls !== undefined);
    port = s.server.tls.port;
    bundle = (await s.call('GET', '/bundle.pem', { token: null })).text;
    dir = tempDir();
    writeFileSync(join(dir, 'bundle.pem'), bundle);
    ci = await svidFromServerCa(s, CI);
    other = await svidFromServerCa(s, OTHER);
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const reg = await s.call('POST', '/admin/v1/oauth/clients', { body: { client_id: 'ci-bot', spiffe_id: `spiffe://${TD}/svc/registered`, scope: 'deploy' } });
    assert.equal(reg.status, 201, JSON.stringify(reg.json));
    assert.equal(reg.json.tls_client_auth_san_uri, `spiffe://${TD}/svc/registered`);
    const pk = await s.call('POST', '/admin/v1/oauth/clients', { body: { client_id: 'pk-client', jwks: { keys: [publicKey.export({ format: 'jwk' })] } } });
    assert.equal(pk.status, 201, JSON.stringify(pk.json));
  });
  after(async () => {
    await s.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('advertises tls_client_auth, bound tokens and the mTLS endpoint aliases', async () => {
    const m = (await s.call('GET', '/.well-known/oauth-authorization-server', { token: null })).json;
    const base = s.server.tls?.url ?? '';
    assert.equal(base, `https://localhost:${port}`);
    assert.equal(m.tls_client_certificate_bound_access_tokens, true);
    assert.ok(m.token_endpoint_auth_methods_supported.includes('tls_client_auth'));
    assert.deepEqual(m.mtls_endpoint_aliases, { token_endpoint: `${base}/oauth2/token`, introspection_endpoint: `${base}/oauth2/introspect`, revocation_endpoint: `${base}/oauth2/revoke` });
    // The same document on both listeners.
    assert.deepEqual((await tlsCall(port, bundle, 'GET', '/.well-known/oauth-authorization-server')).json, m);
    // Without a TLS listener: nothing of it.
    const plain = await startOAuthServer();
    try {
      const p = (await plain.call('GET', '/.well-known/oauth-authorization-server', { token: null })).json;
      assert.equal(p.tls_client_certificate_bound_access_tokens, false);
      assert.equal(p.mtls_endpoint_aliases, undefined);
      assert.ok(!p.token_endpoint_auth_methods_supported.includes('tls_client_auth'));
    } finally {
      await plain.stop();
    }
  });

  it('refuses tls_client_auth that does not hold (table)', async () => {
    const foreign = await foreignCert(dir);
    const cases: { name: string; client: () => ClientIdentity | undefined; clientId: string; error: string; message: string; status?: number }[] = [
      { name: 'no certificate', client: () => undefined, clientId: CI, error: 'invalid_client', message: 'client_credentials needs client authentication (private_key_jwt, a JWT-SVID, or tls_client_auth with an X.509-SVID)' },
      { name: 'certificate from another trust domain', client: () => foreign, clientId: 'spiffe://other.example/w', error: 'invalid_client', message: 'the TLS client certificate is not a valid X.509-SVID of a trusted trust domain (ERR_IDENTITY_BUNDLE_NOT_FOUND)' },
      { name: 'URI SAN is not the client_id', client: () => other, clientId: CI, error: 'invalid_client', message: `\`client_id\` \`${CI}\` does not match the TLS client certificate's URI SAN \`${OTHER}\`` },
      { name: 'URI SAN is not the registered one', client: () => other, clientId: 'ci-bot', error: 'invalid_client', message: `the TLS client certificate's URI SAN \`${OTHER}\` is not the one registered for client \`ci-bot\`` },
      { name: 'client registered for private_key_jwt', client: () => ci, clientId: 'pk-client', error: 'invalid_client', message: 'client `pk-client` is registered for private_key_jwt, not tls_client_auth' },
    ];
    for (const c of cases) {
      const client = c.client();
      const r = await token(client, { grant_type: 'client_credentials', client_id: c.clientId, audience: API });
      assert.equal(r.status, c.status ?? 401, `${c.name}: ${r.text}`);
      assert.deepEqual(r.json, { error: c.error, error_description: c.message }, c.name);
    }
    // The plain listener never sees a certificate: a SPIFFE client_id there is not authenticated.
    const plain = await form(s, '/oauth2/token', { grant_type: 'client_credentials', client_id: CI, audience: API });
    assert.equal(plain.status, 401);
    assert.equal(plain.json.error, 'invalid_client');
    // Each refusal is in the audit trail.
    const audit = await s.call('GET', '/admin/v1/audit/events?action=token.refused&limit=1000');
    assert.ok(audit.json.events.filter((e: { details: { error: string } }) => e.details.error === 'invalid_client').length >= cases.length);
  });

  it('curl: client_credentials with tls_client_auth gives a token bound to the certificate (x5t#S256 = openssl SHA-256 of the DER)', async () => {
    const files = writeIdentity(dir, 'ci', ci);
    const { stdout } = await run('curl', ['-sS', '--fail-with-body', '--cacert', join(dir, 'bundle.pem'), '--cert', files.certFile, '--key', files.keyFile, '--resolve', `localhost:${port}:127.0.0.1`,
      '--data-urlencode', 'grant_type=client_credentials', '--data-urlencode', `client_id=${CI}`, '--data-urlencode', `audience=${API}`, `https://localhost:${port}/oauth2/token`]);
    const body = JSON.parse(stdout) as { access_token: string; token_type: string; expires_in: number };
    assert.equal(body.token_type, 'Bearer');
    const claims = decodePayload(body.access_token);
    assert.equal(claims.sub, CI);
    assert.equal(claims.client_id, CI);
    assert.equal(claims.aud, API);
    const { stdout: thumb } = await run('bash', ['-c', `openssl x509 -in ${files.certFile} -outform der | openssl dgst -sha256 -binary | base64 | tr '+/' '-_' | tr -d '=\\n'`]);
    assert.equal(thumb.length, 43);
    assert.deepEqual(claims.cnf, { 'x5t#S256': thumb });

    // Introspection over mTLS, the caller authenticated the same way, shows the binding.
    const intro = await token(ci, { token: body.access_token, client_id: CI }, '/oauth2/introspect');
    assert.equal(intro.status, 200, intro.text);
    assert.equal(intro.json.active, true);
    assert.deepEqual(intro.json.cnf, { 'x5t#S256': thumb });

    // The resource-server check: the same certificate passes, another fails with invalid_token.
    const verified = await s.server.oauth.as.verifyAccessToken(body.access_token);
    assert.ok(verified !== undefined);
    checkCertificateBinding(verified, ci.leafDer);
    assert.throws(() => checkCertificateBinding(verified, other.leafDer), { code: 'ERR_OAUTH_INVALID_TOKEN', status: 401, message: 'access token is bound to another TLS client certificate (`cnf.x5t#S256` mismatch)' });
    assert.throws(() => checkCertificateBinding(verified, undefined), { code: 'ERR_OAUTH_INVALID_TOKEN', message: 'access token is bound to a TLS client certificate, and the request presented none' });
  });

  it('on the mTLS alias: a DPoP proof names the alias URL and binds the key; revocation with tls_client_auth', async () => {
    const k = await generateKeyPair('ES256', { extractable: true });
    const jwk = await exportJWK(k.publicKey);
    const proofFor = (htu: string) => new SignJWT({ htm: 'POST', htu }).setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk }).setIssuedAt().setJti(crypto.randomUUID()).sign(k.privateKey);
    const params = new URLSearchParams({ grant_type: 'client_credentials', client_id: CI, audience: API }).toString();
    const headers = (dpop: string) => ({ 'content-type': 'application/x-www-form-urlencoded', dpop });
    // RFC 9449 §4.3: htu is the URL the request was sent to, here the alias.
    const wrongHtu = await tlsCall(port, bundle, 'POST', '/oauth2/token', { client: ci, body: params, headers: headers(await proofFor(`${s.url}/oauth2/token`)) });
    assert.equal(wrongHtu.status, 400, wrongHtu.text);
    assert.equal(wrongHtu.json.error, 'invalid_dpop_proof');
    const ok = await tlsCall(port, bundle, 'POST', '/oauth2/token', { client: ci, body: params, headers: headers(await proofFor(`https://localhost:${port}/oauth2/token`)) });
    assert.equal(ok.status, 200, ok.text);
    assert.equal(ok.json.token_type, 'DPoP');
    // A DPoP proof takes precedence: the token is bound to the proof key, not the certificate.
    assert.deepEqual(decodePayload(ok.json.access_token).cnf, { jkt: await calculateJwkThumbprint(jwk) });

    const bound = await token(ci, { grant_type: 'client_credentials', client_id: CI, audience: API });
    assert.equal(bound.status, 200, bound.text);
    // Another SVID may not revoke it; the client it was issued to may.
    const foreign = await token(other, { token: bound.json.access_token, client_id: OTHER }, '/oauth2/revoke');
    assert.equal(foreign.status, 400);
    assert.deepEqual(foreign.json, { error: 'invalid_request', error_description: 'the token was not issued to this client' });
    const revoked = await token(ci, { token: bound.json.access_token, client_id: CI }, '/oauth2/revoke');
    assert.equal(revoked.status, 200, revoked.text);
    const intro = await token(ci, { token: bound.json.access_token, client_id: CI }, '/oauth2/introspect');
    assert.deepEqual(intro.json, { active: false });
  });

  it('a registered SPIFFE client authenticates by its X.509-SVID under its own client_id', async () => {
    const registered = await svidFromServerCa(s, `spiffe://${TD}/svc/registered`);
    const r = await token(registered, { grant_type: 'client_credentials', client_id: 'ci-bot', audience: API, scope: 'deploy' });
    assert.equal(r.status, 200, r.text);
    const claims = decodePayload(r.json.access_token);
    assert.equal(claims.client_id, 'ci-bot');
    assert.equal(claims.sub, `spiffe://${TD}/svc/registered`);
    assert.equal(claims.scope, 'deploy');
    assert.ok(typeof claims.cnf['x5t#S256'] === 'string');
  });

  it('token exchange with the caller\'s X.509-SVID over mTLS as the subject', async () => {
    const leaf = Buffer.from(ci.leafDer).toString('base64url');
    const ok = await token(ci, { grant_type: TOKEN_EXCHANGE, subject_token: leaf, subject_token_type: X509_SVID, audience: API });
    assert.equal(ok.status, 200, ok.text);
    assert.equal(ok.json.issued_token_type, 'urn:ietf:params:oauth:token-type:access_token');
    const claims = decodePayload(ok.json.access_token);
    assert.equal(claims.sub, CI);
    assert.equal(claims.act, undefined);
    // Never outlives the subject SVID.
    assert.ok(claims.exp * 1000 <= new X509Certificate(Buffer.from(ci.leafDer)).validToDate.getTime());
    const verified = await s.server.oauth.as.verifyAccessToken(ok.json.access_token);
    assert.ok(verified !== undefined);
    checkCertificateBinding(verified, ci.leafDer);

    // Another certificate than the one on the connection: refused.
    const wrong = await token(ci, { grant_type: TOKEN_EXCHANGE, subject_token: Buffer.from(other.leafDer).toString('base64url'), subject_token_type: X509_SVID, audience: API });
    assert.equal(wrong.status, 400);
    assert.deepEqual(wrong.json, { error: 'invalid_grant', error_description: 'the X.509-SVID subject token is not the TLS client certificate of this connection' });
    // No certificate on the connection (plain listener): refused.
    const plain = await form(s, '/oauth2/token', { grant_type: TOKEN_EXCHANGE, subject_token: leaf, subject_token_type: X509_SVID, audience: API });
    assert.equal(plain.status, 400);
    assert.deepEqual(plain.json, { error: 'invalid_grant', error_description: 'an X.509-SVID subject token needs that SVID as the TLS client certificate (call the mTLS endpoint)' });
  });
});
