/**
 * The SSF receiver against an independent transmitter built here with jose:
 * it serves its JWKS and an RFC 8936 poll endpoint and signs CAEP/RISC SETs.
 * Pushed and polled SETs become signals; forged or wrong SETs are refused
 * with the RFC 8935 §2.4 `err` code, and the refusals are audited.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import { randomUUID } from 'node:crypto';
import { SignJWT, exportJWK, generateKeyPair } from 'jose';
import type { JWK } from 'jose';
import { startTestServer } from '../support/server.ts';
import type { TestServer } from '../support/server.ts';

const TX = 'https://tx.example';
const AUD = 'https://writ.example/ssf-receiver';
const CAEP = 'https://schemas.openid.net/secevent/caep/event-type/';
const RISC = 'https://schemas.openid.net/secevent/risc/event-type/';
const W = 'spiffe://writ.local/svc/from-ssf';

type Key = Awaited<ReturnType<typeof generateKeyPair>>['privateKey'];
let s: TestServer;
let tx: Server;
let txUrl: string;
let key: Key;
let attackerKey: Key;
const KID = 'tx-key-1';
/** What the transmitter's poll endpoint hands out next, and every poll request it got. */
let queue: Record<string, string> = {};
const pollRequests: Record<string, unknown>[] = [];

before(async () => {
  const pair = await generateKeyPair('RS256', { modulusLength: 2048 });
  key = pair.privateKey;
  attackerKey = (await generateKeyPair('RS256', { modulusLength: 2048 })).privateKey;
  const publicKey = pair.publicKey;
  const jwk: JWK = { ...(await exportJWK(publicKey)), kid: KID, alg: 'RS256', use: 'sig' };
  tx = createServer((req, res) => {
    let b = '';
    req.on('data', (c: Buffer) => (b += c.toString()));
    req.on('end', () => {
      if (req.url === '/jwks') return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [jwk] }));
      if (req.url === '/poll' && req.method === 'POST') {
        if (req.headers.authorization !== 'Bearer writ-polls') return void res.writeHead(401).end();
        pollRequests.push(JSON.parse(b) as Record<string, unknown>);
        const sets = queue;
        queue = {};
        return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ sets, moreAvailable: false }));
      }
      res.writeHead(404).end();
    });
  });
  await new Promise<void>((r) => tx.listen(0, '127.0.0.1', r));
  const addr = tx.address();
  txUrl = `http://127.0.0.1:${typeof addr === 'object' && addr !== null ? addr.port : 0}`;
  s = await startTestServer({
    flags: {
      'ssf.transmitters': JSON.stringify([
        { issuer: TX, jwksUri: `${txUrl}/jwks`, audience: AUD, pushAuthorizationEnv: 'SSF_TX_PUSH_AUTH', pollUrl: `${txUrl}/poll`, pollAuthorizationEnv: 'SSF_TX_POLL_AUTH', pollIntervalMs: 100 },
        { issuer: 'https://poll-only.example', jwksUri: `${txUrl}/jwks`, audience: AUD, push: false },
      ]),
    },
    env: { SSF_TX_PUSH_AUTH: 'Bearer tx-pushes', SSF_TX_POLL_AUTH: 'Bearer writ-polls' },
  });
});

after(async () => {
  await s.stop();
  await new Promise<void>((r) => tx.close(() => r()));
});

interface SetOpts {
  readonly iss?: string;
  readonly aud?: string;
  readonly typ?: string;
  readonly kid?: string;
  readonly key?: Key;
  readonly extra?: Record<string, unknown>;
  readonly subId?: Record<string, unknown>;
}

async function set(events: Record<string, Record<string, unknown>>, o: SetOpts = {}): Promise<{ jwt: string; jti: string }> {
  const jti = randomUUID();
  const jwt = await new SignJWT({ sub_id: o.subId ?? { format: 'uri', uri: W }, events, ...o.extra })
    .setProtectedHeader({ alg: 'RS256', typ: o.typ ?? 'secevent+jwt', kid: o.kid ?? KID })
    .setIssuer(o.iss ?? TX)
    .setAudience(o.aud ?? AUD)
    .setIssuedAt()
    .setJti(jti)
    .sign(o.key ?? key);
  return { jwt, jti };
}

async function push(jwt: string, auth: string | null = 'Bearer tx-pushes', type = 'application/secevent+jwt'): Promise<{ status: number; json: any }> {
  const res = await fetch(`${s.url}/ssf/receiver`, { method: 'POST', headers: { 'content-type': type, accept: 'application/json', ...(auth === null ? {} : { authorization: auth }) }, body: jwt });
  const text = await res.text();
  return { status: res.status, json: text === '' ? undefined : JSON.parse(text) };
}

const noncompliant = { [`${CAEP}device-compliance-change`]: { previous_status: 'compliant', current_status: 'not-compliant', event_timestamp: 1_767_225_600 } };

test('a pushed CAEP SET signed by the transmitter becomes a signal; a replay is accepted and not acted on twice', async () => {
  const { jwt, jti } = await set(noncompliant);
  const r = await push(jwt);
  assert.equal(r.status, 202, JSON.stringify(r.json));
  const list = await s.call('GET', `/admin/v1/signals?subject=${encodeURIComponent(W)}`);
  assert.equal(list.json.signals.length, 1);
  const sig = list.json.signals[0];
  assert.deepEqual([sig.type, sig.source, sig.reason, sig.occurredAt, sig.signal.score, sig.signal.failingChecks], ['posture-changed', `ssf:${TX}`, 'ssf-device-compliance-change', '2026-01-01T00:00:00.000Z', 0, ['device-compliance']]);
  assert.equal((await push(jwt)).status, 202);
  assert.equal((await s.call('GET', `/admin/v1/signals?subject=${encodeURIComponent(W)}`)).json.signals.length, 1, 'the replay made no second signal');
  const audited = await s.call('GET', '/admin/v1/audit/events?action=ssf.set.received&limit=1000');
  const mine = (audited.json.events as any[]).filter((e) => e.target?.id === jti);
  assert.deepEqual(mine.map((e) => e.reasons[0]), ['signals-accepted', 'replay']);
  // Unknown events are ignored (202), as SSF asks of receivers.
  assert.equal((await push((await set({ [`${CAEP}assurance-level-change`]: { current_level: 'nist-aal2' } })).jwt)).status, 202);
});

test('forged and wrong SETs are refused with the RFC 8935 err code', async () => {
  const cases: [string, Promise<{ status: number; json: any }>, string, string][] = [
    ['forged signature (attacker key, the transmitter kid)', set(noncompliant, { key: attackerKey }).then((x) => push(x.jwt)), 'invalid_key', 'the SET signature does not verify with the transmitter\'s keys'],
    ['unknown kid', set(noncompliant, { key: attackerKey, kid: 'attacker' }).then((x) => push(x.jwt)), 'invalid_key', 'the SET signature does not verify with the transmitter\'s keys'],
    ['unknown issuer', set(noncompliant, { iss: 'https://evil.example' }).then((x) => push(x.jwt)), 'invalid_issuer', 'the SET `iss` is not a configured transmitter'],
    ['wrong audience', set(noncompliant, { aud: 'https://someone-else.example' }).then((x) => push(x.jwt)), 'invalid_audience', 'the SET `aud` does not name this receiver'],
    ['typ JWT', set(noncompliant, { typ: 'JWT' }).then((x) => push(x.jwt)), 'invalid_request', 'the SET header `typ` must be `secevent+jwt`'],
    ['sub present', set(noncompliant, { extra: { sub: 'x' } }).then((x) => push(x.jwt)), 'invalid_request', 'a SET must not carry `sub` (use `sub_id`)'],
    ['exp present', set(noncompliant, { extra: { exp: 4_102_444_800 } }).then((x) => push(x.jwt)), 'invalid_request', 'a SET must not carry `exp`'],
    ['no events', set({}).then((x) => push(x.jwt)), 'invalid_request', 'the SET has no `events`'],
    ['a transmitter that may not push', set(noncompliant, { iss: 'https://poll-only.example' }).then((x) => push(x.jwt)), 'access_denied', 'this transmitter may not push; it is polled'],
    ['wrong Authorization', set(noncompliant).then((x) => push(x.jwt, 'Bearer guess')), 'authentication_failed', 'the `Authorization` header is missing or wrong'],
    ['no Authorization', set(noncompliant).then((x) => push(x.jwt, null)), 'authentication_failed', 'the `Authorization` header is missing or wrong'],
    ['not a JWT', push('hello'), 'invalid_request', 'the body must be one SET in JWS compact serialization'],
    ['JSON content type', set(noncompliant).then((x) => push(JSON.stringify({ set: x.jwt }), 'Bearer tx-pushes', 'application/json')), 'invalid_request', 'the content type must be `application/secevent+jwt`'],
  ];
  for (const [what, p, err, description] of cases) {
    const r = await p;
    assert.equal(r.status, 400, what);
    assert.deepEqual(r.json, { err, description }, what);
  }
  assert.equal((await s.call('GET', `/admin/v1/signals?subject=${encodeURIComponent(W)}&type=posture-changed`)).json.signals.length, 1, 'none of them made a signal');
  const rejected = await s.call('GET', '/admin/v1/audit/events?action=ssf.set.rejected&limit=1000');
  const errs = (rejected.json.events as any[]).map((e) => e.details.err);
  for (const e of ['invalid_key', 'invalid_issuer', 'invalid_audience', 'invalid_request', 'authentication_failed', 'access_denied']) assert.ok(errs.includes(e), `a refusal with ${e} is audited`);
  assert.ok(!JSON.stringify(rejected.json).includes('tx-pushes'), 'no Authorization value in the audit log');
});

test('poll client (RFC 8936): SETs taken from the transmitter become signals, valid ones are acknowledged, a forged one is reported in setErrs', async () => {
  const good = await set({ [`${RISC}account-disabled`]: { reason: 'bulk-account' } }, { subId: { format: 'email', email: 'Alice@Example.com' } });
  const risk = await set({ [`${CAEP}risk-level-change`]: { current_level: 'HIGH', previous_level: 'LOW' } });
  const forged = await set(noncompliant, { key: attackerKey });
  queue = { [good.jti]: good.jwt, [risk.jti]: risk.jwt, [forged.jti]: forged.jwt };
  const end = Date.now() + 15_000;
  let last: Record<string, unknown> | undefined;
  while (Date.now() < end) {
    last = pollRequests.find((r) => Array.isArray(r.ack) && (r.ack as string[]).includes(good.jti));
    if (last !== undefined) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.ok(last !== undefined, 'the next poll acknowledged the SETs');
  assert.deepEqual([...(last.ack as string[])].sort(), [good.jti, risk.jti].sort());
  assert.deepEqual(last.setErrs, { [forged.jti]: { err: 'invalid_key', description: 'the SET signature does not verify with the transmitter\'s keys' } });
  assert.equal(last.returnImmediately, true);
  const owner = await s.call('GET', '/admin/v1/signals?subject=alice%40example.com');
  assert.deepEqual(owner.json.signals.map((x: any) => [x.type, x.source]), [['owner-offboarded', `ssf:${TX}`]]);
  const r = await s.call('GET', `/admin/v1/signals?subject=${encodeURIComponent(W)}&type=risk-changed`);
  assert.deepEqual(r.json.signals.map((x: any) => x.signal.level), ['high']);
});

test('ssf.transmitters is checked at start', async () => {
  await assert.rejects(startTestServer({ flags: { 'ssf.transmitters': JSON.stringify([{ issuer: TX, jwksUri: 'ftp://x', audience: AUD }]) } }), (e: { code?: string; message?: string }) => {
    assert.equal(e.code, 'ERR_SIGNALS_SSF_TRANSMITTERS_CONFIG');
    assert.equal(e.message, '`ssf.transmitters[0].jwksUri` must be an http(s) URL');
    return true;
  });
});
