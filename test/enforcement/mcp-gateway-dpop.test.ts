/**
 * The gateway's token check with DPoP-bound tokens issued by a real Writ
 * server: a bound token needs the DPoP scheme and a fresh proof of its key
 * for this request (RFC 9449 §7); proofs are made with jose, independently of
 * Writ's own DPoP code.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomUUID } from 'node:crypto';
import { SignJWT, exportJWK, generateKeyPair } from 'jose';
import type { CryptoKey, JWK } from 'jose';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { AccessTokenVerifier, McpGateway, RemotePdp, TokenExchanger } from '../../src/enforcement/index.ts';
import { Secret } from '../../src/kernel/index.ts';
import { systemClock } from '../../src/kernel/index.ts';
import type { TestServer } from '../support/server.ts';
import { AGENT, OWNER, TOKEN_EXCHANGE, TT_JWT, startGatewayWrit, svid } from './mcp-support.ts';

const RESOURCE = 'https://mcp.example.com/mcp';
let ts: TestServer;
let verifier: AccessTokenVerifier;
let key: { privateKey: CryptoKey; jwk: JWK };

async function proof(o: { htm?: string; htu?: string; token?: string; iat?: number; k?: typeof key } = {}): Promise<string> {
  const k = o.k ?? key;
  return new SignJWT({ htm: o.htm ?? 'POST', htu: o.htu ?? RESOURCE, jti: randomUUID(), iat: o.iat ?? Math.floor(Date.now() / 1000), ...(o.token === undefined ? {} : { ath: createHash('sha256').update(o.token).digest('base64url') }) })
    .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: k.jwk })
    .sign(k.privateKey);
}

async function newKey(): Promise<typeof key> {
  const kp = await generateKeyPair('ES256');
  const jwk = await exportJWK(kp.publicKey);
  return { privateKey: kp.privateKey, jwk: { kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y } };
}

async function token(dpop: boolean, resource: string = RESOURCE): Promise<string> {
  const tokenUrl = `${ts.url}/oauth2/token`;
  const res = await fetch(tokenUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...(dpop ? { dpop: await proof({ htu: tokenUrl }) } : {}) },
    body: new URLSearchParams({ grant_type: TOKEN_EXCHANGE, subject_token: await svid(ts, OWNER), subject_token_type: TT_JWT, actor_token: await svid(ts, AGENT), actor_token_type: TT_JWT, resource }),
  });
  const body = (await res.json()) as { access_token: string; token_type: string };
  assert.equal(res.status, 200, JSON.stringify(body));
  assert.equal(body.token_type, dpop ? 'DPoP' : 'Bearer');
  return body.access_token;
}

before(async () => {
  ({ ts } = await startGatewayWrit());
  key = await newKey();
  verifier = new AccessTokenVerifier({ issuer: ts.url, audience: RESOURCE, clock: systemClock });
});

after(async () => {
  await ts.stop();
});

async function rejects(p: { authorization: string; dpop: string[] }, message: string, dpopError?: 'invalid-dpop-proof' | 'invalid-token'): Promise<void> {
  await assert.rejects(verifier.verify({ ...p, method: 'POST', url: RESOURCE }), dpopError === undefined
    ? { code: 'ERR_ENFORCE_CREDENTIAL_INVALID', message }
    : { code: 'ERR_ENFORCE_DPOP_INVALID', message, reasons: [dpopError] });
}

test('a DPoP-bound token is accepted only with the DPoP scheme and a proof of its key', async () => {
  const at = await token(true);
  const who = await verifier.verify({ authorization: `DPoP ${at}`, dpop: [await proof({ token: at })], method: 'POST', url: RESOURCE });
  assert.equal(who.senderConstrained, true);
  assert.equal(who.agent, AGENT);
  assert.equal(who.subject, OWNER);
  assert.deepEqual(who.chain, [AGENT]);

  await rejects({ authorization: `Bearer ${at}`, dpop: [] }, 'access token is DPoP-bound: send it with the DPoP scheme and a proof', 'invalid-token');
  await rejects({ authorization: `DPoP ${at}`, dpop: [] }, 'DPoP proof is missing', 'invalid-dpop-proof');
  await rejects({ authorization: `DPoP ${at}`, dpop: [await proof({ token: at }), await proof({ token: at })] }, 'DPoP proof is sent more than once', 'invalid-dpop-proof');
  await rejects({ authorization: `DPoP ${at}`, dpop: [await proof({ token: at, k: await newKey() })] }, 'DPoP proof key is not the key the token is bound to', 'invalid-dpop-proof');
  await rejects({ authorization: `DPoP ${at}`, dpop: [await proof({ token: at, htu: 'https://elsewhere.example.com/mcp' })] }, 'DPoP proof `htu` does not match the request URL', 'invalid-dpop-proof');
  await rejects({ authorization: `DPoP ${at}`, dpop: [await proof({})] }, 'DPoP proof `ath` does not match the access token', 'invalid-dpop-proof');
  await rejects({ authorization: `DPoP ${at}`, dpop: [await proof({ token: at, iat: Math.floor(Date.now() / 1000) - 3600 })] }, 'DPoP proof `iat` is outside the accepted window', 'invalid-dpop-proof');
  // A proof is single use.
  const once = await proof({ token: at });
  await verifier.verify({ authorization: `DPoP ${at}`, dpop: [once], method: 'POST', url: RESOURCE });
  await rejects({ authorization: `DPoP ${at}`, dpop: [once] }, 'DPoP proof `jti` was already used', 'invalid-dpop-proof');
});

test('an unbound token is a bearer token; other credentials are refused with a reason', async () => {
  const at = await token(false);
  const who = await verifier.verify({ authorization: `Bearer ${at}`, dpop: [], method: 'POST', url: RESOURCE });
  assert.equal(who.senderConstrained, false);
  await rejects({ authorization: `DPoP ${at}`, dpop: [await proof({ token: at })] }, 'access token is not DPoP-bound: send it with the Bearer scheme', 'invalid-token');
  // A JWT-SVID is not an access token, even for the right audience.
  await rejects({ authorization: `Bearer ${await svid(ts, AGENT, RESOURCE)}`, dpop: [] }, 'access token is not a Writ access token');
  await rejects({ authorization: 'Basic Zm9vOmJhcg==', dpop: [] }, 'the authorization header is not a bearer or DPoP token');
  await assert.rejects(verifier.verify({ authorization: undefined, dpop: [], method: 'POST', url: RESOURCE }), { code: 'ERR_ENFORCE_UNAUTHENTICATED' });
});

test('over HTTP, the gateway challenges with both schemes and answers a DPoP failure under the DPoP scheme (RFC 9449 §7.1)', async () => {
  const server = createServer((req, res) => {
    gateway.handle(req, res).catch(() => res.destroy());
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', () => ok()));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/mcp`;
  // Every request here is refused at the token check: the PDP, the exchange and the upstream are never reached.
  const gateway = new McpGateway({
    tokens: new AccessTokenVerifier({ issuer: ts.url, audience: url, clock: systemClock }),
    pdp: new RemotePdp({ url: ts.url, credential: new Secret('unused'), timeoutMs: 1000 }),
    exchanger: new TokenExchanger({ tokenEndpoint: `${ts.url}/oauth2/token`, clock: systemClock }),
    upstream: 'http://127.0.0.1:9/mcp',
    resource: url,
    authorizationServer: ts.url,
    clock: systemClock,
  });
  try {
    const prm = `${new URL(url).origin}/.well-known/oauth-protected-resource/mcp`;
    const algs = 'algs="ES256 ES384 PS256 RS256 EdDSA"';
    const init = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 't', version: '0' } } });
    const headers = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' };
    const call = async (extra: Record<string, string>) => {
      const r = await fetch(url, { method: 'POST', headers: { ...headers, ...extra }, body: init });
      return { status: r.status, challenge: r.headers.get('www-authenticate'), body: (await r.json()) as Record<string, unknown> };
    };

    const none = await call({});
    assert.deepEqual(none, { status: 401, challenge: `Bearer resource_metadata="${prm}", DPoP ${algs}`, body: { error: 'unauthorized', error_description: 'no access token: send `Authorization: Bearer <token>` from Writ\'s token endpoint', code: 'ERR_ENFORCE_UNAUTHENTICATED' } });

    const bound = await token(true, url);
    const asBearer = await call({ authorization: `Bearer ${bound}` });
    assert.deepEqual(asBearer, {
      status: 401,
      challenge: `Bearer resource_metadata="${prm}", DPoP ${algs}, error="invalid_token", error_description="access token is DPoP-bound: send it with the DPoP scheme and a proof"`,
      body: { error: 'invalid_token', error_description: 'access token is DPoP-bound: send it with the DPoP scheme and a proof', code: 'ERR_ENFORCE_DPOP_INVALID' },
    });

    const noProof = await call({ authorization: `DPoP ${bound}` });
    assert.deepEqual(noProof, {
      status: 401,
      challenge: `Bearer resource_metadata="${prm}", DPoP ${algs}, error="invalid_dpop_proof", error_description="DPoP proof is missing"`,
      body: { error: 'invalid_dpop_proof', error_description: 'DPoP proof is missing', code: 'ERR_ENFORCE_DPOP_INVALID' },
    });

    // A bearer token for another audience stays a Bearer `invalid_token`; the DPoP challenge still offers the scheme.
    const other = await call({ authorization: `Bearer ${await token(false)}` });
    assert.equal(other.challenge, `Bearer resource_metadata="${prm}", error="invalid_token", DPoP ${algs}`);
    assert.equal(other.body.code, 'ERR_ENFORCE_CREDENTIAL_INVALID');
  } finally {
    await new Promise<void>((ok) => server.close(() => ok()));
  }
});
