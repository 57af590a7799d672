import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { SignJWT, exportJWK, generateKeyPair } from 'jose';
import type { webcrypto } from 'node:crypto';
import { ManualClock } from '../../kernel/index.ts';
import { TrustBundle } from '../../identity/index.ts';
import type { JwtAuthority } from '../../identity/index.ts';
import { recordingAuditSink } from '../../policy/index.ts';
import type { Decision, DecisionRequest } from '../../policy/index.ts';
import { AuthorizationServer, TOKEN_TYPES } from './authorization-server.ts';
import { FormParams } from './params.ts';
import { memoryClientStore } from './clients.ts';
import { memoryJtiCache, DpopNonces } from './dpop.ts';
import { generateAccessTokenKey } from './keys.ts';
import { MemoryLeaseManager } from './memory-leases.ts';
import { oauthErrors } from './errors.ts';

type CryptoKey = webcrypto.CryptoKey;
const ISSUER = 'https://writ.example.com';
const API = 'https://api.example.com';
const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';

async function fixture(o: { deny?: (r: DecisionRequest) => boolean; maxTtlSeconds?: number; nonces?: boolean } = {}) {
  const clock = new ManualClock(Date.parse('2026-11-22T12:00:00Z'));
  const svidKey = await generateKeyPair('ES256', { extractable: true });
  const bundle = new TrustBundle({ trustDomain: 'example.org', jwtAuthorities: [{ kid: 'k1', publicJwk: (await exportJWK(svidKey.publicKey)) as JwtAuthority['publicJwk'], alg: 'ES256' }] });
  const leases = new MemoryLeaseManager(clock);
  const audit = recordingAuditSink(clock);
  const decisions: DecisionRequest[] = [];
  let n = 0;
  const decide = async (r: DecisionRequest): Promise<Decision> => {
    decisions.push(r);
    n += 1;
    const allow = o.deny?.(r) !== true;
    return { decision: allow ? 'allow' : 'deny', reasons: allow ? ['policy-permit'] : ['no-permit'], determiningPolicies: [], policyVersion: 'pv-test', decisionId: `d${n}`, cached: false, diagnostics: [] };
  };
  const key = await generateAccessTokenKey();
  const as = new AuthorizationServer({
    issuer: () => ISSUER,
    clock,
    audit,
    leases,
    decide,
    bundles: () => bundle,
    keys: () => [key],
    clients: memoryClientStore(),
    jtis: memoryJtiCache(),
    maxTtlSeconds: o.maxTtlSeconds ?? 3600,
    ...(o.nonces === true ? { dpopNonces: new DpopNonces(clock, 300) } : {}),
  });
  const svid = (sub: string, extra: Record<string, unknown> = {}, ttlS = 300): Promise<string> =>
    new SignJWT(extra).setProtectedHeader({ alg: 'ES256', kid: 'k1', typ: 'JWT' }).setSubject(`spiffe://example.org${sub}`).setAudience(ISSUER).setIssuedAt(Math.floor(clock.nowMs() / 1000)).setExpirationTime(Math.floor(clock.nowMs() / 1000) + ttlS).sign(svidKey.privateKey);
  const token = (params: Record<string, string>, dpop?: string) => as.token({ params: FormParams.parse(new URLSearchParams({ grant_type: EXCHANGE, subject_token_type: TOKEN_TYPES.jwt, audience: API, ...params }).toString()), correlationId: 'c1', ...(dpop === undefined ? {} : { dpop: [dpop] }) });
  return { clock, as, leases, audit, decisions, svid, token };
}

function payload(jwt: unknown): Record<string, any> {
  return JSON.parse(Buffer.from(String(jwt).split('.')[1] ?? '', 'base64url').toString('utf8'));
}

function rejectsWith(code: string, message: string) {
  return (e: unknown): boolean => {
    assert.ok(oauthErrors.is(e), String(e));
    assert.equal(e.code, code);
    assert.equal(e.message, message);
    return true;
  };
}

describe('token exchange', () => {
  test('may_act (RFC 8693 §4.4) names who may act for the subject', async () => {
    const f = await fixture();
    const subject = await f.svid('/svc/frontend', { may_act: { sub: 'spiffe://example.org/agent/a' } });
    await assert.rejects(f.token({ subject_token: subject, actor_token: await f.svid('/agent/b'), actor_token_type: TOKEN_TYPES.jwt }), rejectsWith('ERR_OAUTH_INVALID_GRANT', 'actor `spiffe://example.org/agent/b` is not allowed to act for the subject (may_act)'));
    const ok = await f.token({ subject_token: subject, actor_token: await f.svid('/agent/a'), actor_token_type: TOKEN_TYPES.jwt });
    assert.deepEqual(payload(ok.access_token).act, { sub: 'spiffe://example.org/agent/a' });
  });

  test('the PDP gets the principal, audience and chain; a deny is invalid_target with its reasons and no lease', async () => {
    const f = await fixture({ deny: (r) => r.resource.id === 'https://other.example.com' });
    await f.token({ subject_token: await f.svid('/svc/frontend'), actor_token: await f.svid('/agent/a'), actor_token_type: TOKEN_TYPES.jwt });
    const d = f.decisions[0];
    assert.equal(d?.action, 'token/exchange');
    assert.deepEqual(d?.principal, { type: 'Writ::Workload', id: 'spiffe://example.org/svc/frontend' });
    assert.deepEqual(d?.resource, { type: 'Writ::Service', id: API });
    assert.deepEqual(d?.context?.delegation, { depth: 1, actors: ['spiffe://example.org/agent/a'] });
    const before = f.leases.all().length;
    await assert.rejects(f.token({ subject_token: await f.svid('/svc/frontend'), audience: 'https://other.example.com' }), (e: unknown) => {
      assert.ok(oauthErrors.is(e, 'ERR_OAUTH_INVALID_TARGET'));
      assert.equal(e.message, 'policy does not allow a token for audience `https://other.example.com`');
      assert.deepEqual(e.reasons, ['no-permit']);
      return true;
    });
    assert.equal(f.leases.all().length, before, 'no lease is opened for a refused grant');
  });

  test('write-ahead: the lease is opened before signing, its id is the jti, and it is active after', async () => {
    const f = await fixture();
    const r = await f.token({ subject_token: await f.svid('/svc/frontend'), scope: 'read' });
    const c = payload(r.access_token);
    const lease = await f.leases.get(c.jti);
    assert.equal(lease?.state, 'active');
    assert.equal(lease?.subject, 'spiffe://example.org/svc/frontend');
    assert.equal(lease?.audience, API);
    const issued = f.audit.events.find((e) => e.action === 'token.issued');
    assert.equal(issued?.target?.id, c.jti);
    assert.deepEqual(issued?.details?.decisionIds, ['d1']);
  });

  test('TTL = min(requested, max, subject token expiry), default 5 minutes', async () => {
    const f = await fixture({ maxTtlSeconds: 600 });
    assert.equal((await f.token({ subject_token: await f.svid('/svc/a') })).expires_in, 300);
    assert.equal((await f.token({ subject_token: await f.svid('/svc/a'), requested_expires_in: '30' })).expires_in, 30);
    assert.equal((await f.token({ subject_token: await f.svid('/svc/a', {}, 3600), requested_expires_in: '5000' })).expires_in, 600);
    assert.equal((await f.token({ subject_token: await f.svid('/svc/a', {}, 120), requested_expires_in: '5000' })).expires_in, 120);
  });

  test('an expired subject JWT-SVID is invalid_grant', async () => {
    const f = await fixture();
    const s = await f.svid('/svc/a', {}, 60);
    f.clock.advance(61_000);
    await assert.rejects(f.token({ subject_token: s }), rejectsWith('ERR_OAUTH_INVALID_GRANT', 'subject token is not a valid JWT-SVID for this server (expired)'));
  });
});

describe('DPoP proofs at the token endpoint (RFC 9449 §4.3)', () => {
  async function proof(clock: ManualClock, o: { key?: { privateKey: CryptoKey; publicKey: CryptoKey }; htm?: string; htu?: string; iat?: number; jti?: string; nonce?: string; jwkExtra?: Record<string, unknown> } = {}) {
    const k = o.key ?? (await generateKeyPair('ES256', { extractable: true }));
    return new SignJWT({ htm: o.htm ?? 'POST', htu: o.htu ?? `${ISSUER}/oauth2/token`, ...(o.nonce === undefined ? {} : { nonce: o.nonce }) })
      .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: { ...(await exportJWK(k.publicKey)), ...(o.jwkExtra ?? {}) } })
      .setIssuedAt(o.iat ?? Math.floor(clock.nowMs() / 1000))
      .setJti(o.jti ?? crypto.randomUUID())
      .sign(k.privateKey);
  }

  test('a good proof binds cnf.jkt; a replayed, stale, wrong-method or private-key proof is refused', async () => {
    const f = await fixture();
    const p = await proof(f.clock, { jti: 'once' });
    const r = await f.token({ subject_token: await f.svid('/svc/a') }, p);
    assert.equal(r.token_type, 'DPoP');
    assert.equal(typeof payload(r.access_token).cnf.jkt, 'string');
    await assert.rejects(f.token({ subject_token: await f.svid('/svc/a') }, p), rejectsWith('ERR_OAUTH_INVALID_DPOP_PROOF', 'DPoP proof `jti` was already used'));
    await assert.rejects(f.token({ subject_token: await f.svid('/svc/a') }, await proof(f.clock, { iat: Math.floor(f.clock.nowMs() / 1000) - 120 })), rejectsWith('ERR_OAUTH_INVALID_DPOP_PROOF', 'DPoP proof `iat` is outside the accepted window'));
    await assert.rejects(f.token({ subject_token: await f.svid('/svc/a') }, await proof(f.clock, { iat: Math.floor(f.clock.nowMs() / 1000) + 60 })), rejectsWith('ERR_OAUTH_INVALID_DPOP_PROOF', 'DPoP proof `iat` is outside the accepted window'));
    await assert.rejects(f.token({ subject_token: await f.svid('/svc/a') }, await proof(f.clock, { htm: 'GET' })), rejectsWith('ERR_OAUTH_INVALID_DPOP_PROOF', 'DPoP proof `htm` does not match the request method'));
    await assert.rejects(f.token({ subject_token: await f.svid('/svc/a') }, await proof(f.clock, { jwkExtra: { d: 'AAAA' } })), rejectsWith('ERR_OAUTH_INVALID_DPOP_PROOF', 'DPoP proof `jwk` holds private key material'));
    // A query string on htu is ignored (§4.3 check 9).
    const q = await f.token({ subject_token: await f.svid('/svc/a') }, await proof(f.clock, { htu: `${ISSUER}/oauth2/token?x=1` }));
    assert.equal(q.token_type, 'DPoP');
  });

  test('nonces: missing is use_dpop_nonce, the current one passes, one two windows old is stale', async () => {
    const f = await fixture({ nonces: true });
    await assert.rejects(f.token({ subject_token: await f.svid('/svc/a') }, await proof(f.clock)), rejectsWith('ERR_OAUTH_USE_DPOP_NONCE', 'DPoP proof must carry the server nonce'));
    const nonce = f.as.dpopNonce() ?? '';
    assert.equal((await f.token({ subject_token: await f.svid('/svc/a') }, await proof(f.clock, { nonce }))).token_type, 'DPoP');
    f.clock.advance(601_000);
    await assert.rejects(f.token({ subject_token: await f.svid('/svc/a') }, await proof(f.clock, { nonce })), rejectsWith('ERR_OAUTH_USE_DPOP_NONCE', 'DPoP proof nonce is stale or unknown'));
  });
});

describe('introspection and revocation', () => {
  test('an expired token no longer verifies for introspection; revocation still reads it', async () => {
    const f = await fixture();
    const r = await f.token({ subject_token: await f.svid('/svc/a'), requested_expires_in: '60' });
    const at = String(r.access_token);
    assert.equal((await f.as.verifyAccessToken(at))?.sub, 'spiffe://example.org/svc/a');
    f.clock.advance(61_000);
    assert.equal(await f.as.verifyAccessToken(at), undefined);
    assert.equal((await f.as.verifyAccessToken(at, true))?.sub, 'spiffe://example.org/svc/a');
  });
});
