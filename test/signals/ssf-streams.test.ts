/**
 * SSF stream management against a real server, checked with jose as the
 * independent verifier: create/read/update/replace/delete, status with
 * stream-updated SETs, subjects, verification (rate-limited), RFC 8936 poll
 * with acknowledgements, RFC 8935 push with retries and backoff.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import { createRemoteJWKSet, jwtVerify, decodeProtectedHeader } from 'jose';
import type { JWTPayload } from 'jose';
import { CAEP_SESSION_REVOKED, CAEP_CREDENTIAL_CHANGE, SSF_POLL, SSF_VERIFICATION, SSF_STREAM_UPDATED } from '../../src/signals/index.ts';
import { startTestServer } from '../support/server.ts';
import type { TestServer } from '../support/server.ts';

const SSF_PUSH = 'urn:ietf:rfc:8935';
let s: TestServer;
let rx: { id: string; token: string };
let other: { id: string; token: string };

async function principal(name: string, role: string): Promise<{ id: string; token: string }> {
  const r = await s.call('POST', '/admin/v1/principals', { body: { name, role } });
  assert.equal(r.status, 201, r.text);
  return { id: r.json.principal?.id ?? r.json.id, token: r.json.token };
}

before(async () => {
  s = await startTestServer();
  rx = await principal('ssf-rx', 'pep');
  other = await principal('ssf-other', 'pep');
});
after(async () => {
  await s.stop();
});

type Claims = JWTPayload & { sub_id: Record<string, unknown>; events: Record<string, Record<string, unknown>>; txn?: string };

async function verify(jwt: string, aud: string): Promise<Claims> {
  const header = decodeProtectedHeader(jwt);
  assert.equal(header.typ, 'secevent+jwt');
  assert.equal(header.alg, 'RS256');
  const { payload } = await jwtVerify(jwt, createRemoteJWKSet(new URL(`${s.url}/ssf/jwks`)), { issuer: s.url, audience: aud, typ: 'secevent+jwt', algorithms: ['RS256'] });
  assert.equal('sub' in payload, false);
  assert.equal('exp' in payload, false);
  assert.equal(Object.keys(payload.events as object).length, 1);
  return payload as Claims;
}

const as = (p: { token: string }) => ({ token: p.token });

async function poll(id: string, body: Record<string, unknown>, who = rx): Promise<{ sets: Record<string, string>; moreAvailable: boolean }> {
  const r = await s.call('POST', `/ssf/poll/${id}`, { ...as(who), body });
  assert.equal(r.status, 200, r.text);
  return r.json;
}

/** Poll (without acknowledging) until `pred` holds over everything seen. */
async function pollUntil(id: string, pred: (all: Claims[]) => boolean, aud: string): Promise<{ all: Claims[]; jtis: string[] }> {
  const end = Date.now() + 15_000;
  for (;;) {
    const r = await poll(id, { returnImmediately: true });
    const all = await Promise.all(Object.values(r.sets).map((j) => verify(j, aud)));
    if (pred(all)) return { all, jtis: Object.keys(r.sets) };
    if (Date.now() > end) throw new Error(`timed out; saw ${JSON.stringify(all.map((c) => Object.keys(c.events)))}`);
    await new Promise((res) => setTimeout(res, 25));
  }
}

async function revoke(body: Record<string, unknown>): Promise<void> {
  const r = await s.call('POST', '/admin/v1/revocations', { body });
  assert.equal(r.status, 201, r.text);
}

test('metadata names the stream endpoints; stream management needs `revocations.subscribe`', async () => {
  const meta = (await s.call('GET', '/.well-known/ssf-configuration', { token: null })).json;
  assert.deepEqual(meta.delivery_methods_supported, [SSF_PUSH, SSF_POLL]);
  assert.equal(meta.configuration_endpoint, `${s.url}/ssf/stream`);
  assert.equal((await s.call('POST', '/ssf/stream', { token: null, body: {} })).status, 401);
  const auditor = await principal('ssf-auditor', 'auditor');
  const denied = await s.call('POST', '/ssf/stream', { ...as(auditor), body: {} });
  assert.equal(denied.status, 403);
  assert.equal(denied.json.code, 'ERR_GOV_FORBIDDEN');
});

test('create / read / update / replace / delete; another receiver cannot see the stream', async () => {
  const c = await s.call('POST', '/ssf/stream', { ...as(rx), body: { events_requested: [CAEP_SESSION_REVOKED, 'https://example.com/unknown-event'], description: 'edge pep' } });
  assert.equal(c.status, 201, c.text);
  const id = c.json.stream_id as string;
  assert.match(id, /^st_[0-9a-f]{24}$/);
  assert.deepEqual(c.json, {
    stream_id: id,
    iss: s.url,
    aud: rx.id,
    events_supported: [CAEP_SESSION_REVOKED, CAEP_CREDENTIAL_CHANGE],
    events_requested: [CAEP_SESSION_REVOKED, 'https://example.com/unknown-event'],
    events_delivered: [CAEP_SESSION_REVOKED],
    delivery: { method: SSF_POLL, endpoint_url: `${s.url}/ssf/poll/${id}` },
    min_verification_interval: 5,
    description: 'edge pep',
  });
  assert.deepEqual((await s.call('GET', `/ssf/stream?stream_id=${id}`, as(rx))).json, c.json);
  assert.deepEqual((await s.call('GET', '/ssf/stream', as(rx))).json.map((x: { stream_id: string }) => x.stream_id), [id]);
  const hidden = await s.call('GET', `/ssf/stream?stream_id=${id}`, as(other));
  assert.equal(hidden.status, 404);
  assert.deepEqual([hidden.json.code, hidden.json.message], ['ERR_SIGNALS_SSF_STREAM_NOT_FOUND', `no stream \`${id}\``]);
  assert.deepEqual((await s.call('GET', '/ssf/stream', as(other))).json, []);

  const patched = await s.call('PATCH', '/ssf/stream', { ...as(rx), body: { stream_id: id, description: 'edge pep 2' } });
  assert.equal(patched.status, 200, patched.text);
  assert.equal(patched.json.description, 'edge pep 2');
  assert.deepEqual(patched.json.events_delivered, [CAEP_SESSION_REVOKED], 'PATCH keeps what it does not name');
  const replaced = await s.call('PUT', '/ssf/stream', { ...as(rx), body: { stream_id: id, delivery: { method: SSF_POLL } } });
  assert.equal(replaced.status, 200, replaced.text);
  assert.equal(replaced.json.description, undefined, 'PUT replaces');
  assert.deepEqual(replaced.json.events_delivered, [CAEP_SESSION_REVOKED, CAEP_CREDENTIAL_CHANGE]);

  const bad = await s.call('POST', '/ssf/stream', { ...as(rx), body: { delivery: { method: 'urn:example:carrier-pigeon' } } });
  assert.equal(bad.status, 400);
  assert.deepEqual([bad.json.code, bad.json.message], ['ERR_SIGNALS_SSF_STREAM_INVALID', `\`delivery.method\` must be \`${SSF_PUSH}\` or \`${SSF_POLL}\``]);
  const unknown = await s.call('PATCH', '/ssf/stream', { ...as(rx), body: { stream_id: id, colour: 'red' } });
  assert.deepEqual([unknown.status, unknown.json.message], [400, 'field `colour` is not part of a stream configuration']);

  assert.equal((await s.call('DELETE', `/ssf/stream?stream_id=${id}`, as(other))).status, 404);
  assert.equal((await s.call('DELETE', `/ssf/stream?stream_id=${id}`, as(rx))).status, 204);
  assert.equal((await s.call('GET', `/ssf/stream?stream_id=${id}`, as(rx))).status, 404);
  const audited = await s.call('GET', '/admin/v1/audit/events?action=ssf.stream.created&limit=1000');
  assert.ok((audited.json.events as { target?: { id: string } }[]).some((e) => e.target?.id === id), 'stream creation is audited');

  // A push endpoint is audited without its userinfo, query or fragment: a receiver may put a credential there.
  const push = await s.call('POST', '/ssf/stream', { ...as(rx), body: { delivery: { method: SSF_PUSH, endpoint_url: 'https://rx:pw-QzXw@receiver.example.com/events?access_token=tok-QzXw#frag' } } });
  assert.equal(push.status, 201, push.text);
  const pushAudit = await s.call('GET', '/admin/v1/audit/events?action=ssf.stream.created&limit=1000');
  const event = (pushAudit.json.events as { target?: { id: string }; details: Record<string, unknown> }[]).find((e) => e.target?.id === push.json.stream_id);
  assert.equal(event?.details.endpointUrl, 'https://receiver.example.com/events');
  assert.doesNotMatch(pushAudit.text, /QzXw/);
  assert.equal((await s.call('DELETE', `/ssf/stream?stream_id=${push.json.stream_id}`, as(rx))).status, 204);
});

test('poll (RFC 8936): verification SET, unacknowledged SETs come back, acknowledged ones do not; events and subjects filter', async () => {
  const c = await s.call('POST', '/ssf/stream', { ...as(rx), body: { events_requested: [CAEP_SESSION_REVOKED] } });
  assert.equal(c.status, 201, c.text);
  const id = c.json.stream_id as string;

  assert.equal((await s.call('POST', '/ssf/verify', { ...as(rx), body: { stream_id: id, state: 'nonce-1' } })).status, 204);
  const soon = await s.call('POST', '/ssf/verify', { ...as(rx), body: { stream_id: id, state: 'nonce-2' } });
  assert.deepEqual([soon.status, soon.json.code, soon.json.message], [429, 'ERR_SIGNALS_SSF_VERIFY_TOO_SOON', 'wait 5 s between verification requests']);

  const first = await poll(id, { returnImmediately: true });
  const jtis = Object.keys(first.sets);
  assert.equal(jtis.length, 1);
  assert.equal(first.moreAvailable, false);
  const v = await verify(first.sets[jtis[0] ?? ''] ?? '', rx.id);
  assert.deepEqual(v.sub_id, { format: 'opaque', id });
  assert.deepEqual(v.events[SSF_VERIFICATION], { state: 'nonce-1' });
  assert.equal(v.jti, jtis[0]);
  assert.deepEqual(Object.keys((await poll(id, { returnImmediately: true })).sets), jtis, 'not acknowledged: offered again');
  assert.deepEqual((await poll(id, { ack: jtis, returnImmediately: true })).sets, {}, 'acknowledged: gone');

  // Only requested event types, and not about a removed subject.
  const removed = { format: 'uri', uri: 'spiffe://writ.local/svc/muted' };
  assert.equal((await s.call('POST', '/ssf/subjects:remove', { ...as(rx), body: { stream_id: id, subject: removed } })).status, 204);
  await revoke({ kind: 'token-revoked', tokenId: 'jti-not-requested', reason: 'admin-revoked' });
  await revoke({ kind: 'subject-revoked', subject: removed.uri, reason: 'posture-failed' });
  await revoke({ kind: 'subject-revoked', subject: 'spiffe://writ.local/svc/loud', reason: 'posture-failed' });
  const seen = await pollUntil(id, (all) => all.some((c2) => c2.sub_id.uri === 'spiffe://writ.local/svc/loud'), rx.id);
  assert.deepEqual(seen.all.map((c2) => [Object.keys(c2.events)[0], c2.sub_id.uri]), [[CAEP_SESSION_REVOKED, 'spiffe://writ.local/svc/loud']]);
  assert.deepEqual((await poll(id, { ack: seen.jtis, maxEvents: 0 })).sets, {});
  // Added back: delivered again.
  const add = await s.call('POST', '/ssf/subjects:add', { ...as(rx), body: { stream_id: id, subject: removed, verified: true } });
  assert.equal(add.status, 200, add.text);
  await revoke({ kind: 'subject-revoked', subject: removed.uri, reason: 'posture-failed' });
  const back = await pollUntil(id, (all) => all.some((c2) => c2.sub_id.uri === removed.uri), rx.id);
  await poll(id, { ack: back.jtis, maxEvents: 0 });

  // A long poll waits for the next SET.
  const waiting = poll(id, { returnImmediately: false, maxEvents: 5 });
  await new Promise((r) => setTimeout(r, 100));
  await revoke({ kind: 'subject-revoked', subject: 'spiffe://writ.local/svc/late', reason: 'posture-failed' });
  const late = await waiting;
  const lateClaims = await Promise.all(Object.values(late.sets).map((j) => verify(j, rx.id)));
  assert.ok(lateClaims.some((c2) => c2.sub_id.uri === 'spiffe://writ.local/svc/late'), 'the long poll returned the new SET');
  await poll(id, { ack: Object.keys(late.sets), maxEvents: 0 });

  // A receiver's error for a SET is recorded and the SET is not offered again.
  await revoke({ kind: 'subject-revoked', subject: 'spiffe://writ.local/svc/refused', reason: 'posture-failed' });
  const refused = await pollUntil(id, (all) => all.some((c2) => c2.sub_id.uri === 'spiffe://writ.local/svc/refused'), rx.id);
  const j = refused.jtis[0] ?? '';
  assert.deepEqual((await poll(id, { setErrs: { [j]: { err: 'invalid_key', description: 'kid unknown' } }, returnImmediately: true })).sets, {});
  const errs = await s.call('GET', '/admin/v1/audit/events?action=ssf.set.rejected-by-receiver&limit=1000');
  assert.ok((errs.json.events as { details: { setErrs: Record<string, string> } }[]).some((e) => e.details.setErrs[j] === 'invalid_key'));

  const malformed = await s.call('POST', `/ssf/poll/${id}`, { ...as(rx), body: { maxEvents: -1 } });
  assert.deepEqual([malformed.status, malformed.json.code, malformed.json.message], [400, 'ERR_SIGNALS_SSF_POLL_INVALID', '`maxEvents` must be a non-negative integer']);
  assert.equal((await s.call('POST', `/ssf/poll/${id}`, { ...as(other), body: {} })).status, 404, 'another receiver cannot poll it');
});

test('status: paused holds SETs, every change emits a stream-updated SET, disabled drops', async () => {
  const id = (await s.call('POST', '/ssf/stream', { ...as(rx), body: {} })).json.stream_id as string;
  assert.deepEqual((await s.call('GET', `/ssf/status?stream_id=${id}`, as(rx))).json, { stream_id: id, status: 'enabled' });
  const paused = await s.call('POST', '/ssf/status', { ...as(rx), body: { stream_id: id, status: 'paused', reason: 'maintenance' } });
  assert.deepEqual(paused.json, { stream_id: id, status: 'paused', reason: 'maintenance' });
  await revoke({ kind: 'subject-revoked', subject: 'spiffe://writ.local/svc/held', reason: 'posture-failed' });
  assert.deepEqual((await poll(id, { returnImmediately: true })).sets, {}, 'paused: nothing is handed out');
  assert.equal((await s.call('POST', '/ssf/status', { ...as(rx), body: { stream_id: id, status: 'enabled' } })).status, 200);
  const got = await pollUntil(id, (all) => all.filter((c) => SSF_STREAM_UPDATED in c.events).length === 2 && all.some((c) => c.sub_id.uri === 'spiffe://writ.local/svc/held'), rx.id);
  const updates = got.all.filter((c) => SSF_STREAM_UPDATED in c.events);
  assert.deepEqual(updates.map((c) => c.events[SSF_STREAM_UPDATED]).sort((a, b) => String(a?.status).localeCompare(String(b?.status))), [{ status: 'enabled' }, { status: 'paused', reason: 'maintenance' }]);
  for (const u of updates) assert.deepEqual(u.sub_id, { format: 'opaque', id });
  await poll(id, { ack: got.jtis, maxEvents: 0 });
  assert.equal((await s.call('POST', '/ssf/status', { ...as(rx), body: { stream_id: id, status: 'disabled' } })).status, 200);
  await revoke({ kind: 'subject-revoked', subject: 'spiffe://writ.local/svc/dropped', reason: 'posture-failed' });
  const bad = await s.call('POST', '/ssf/status', { ...as(rx), body: { stream_id: id, status: 'asleep' } });
  assert.deepEqual([bad.status, bad.json.message], [400, '`status` must be `enabled`, `paused` or `disabled`']);
  assert.equal((await s.call('POST', '/ssf/status', { ...as(rx), body: { stream_id: id, status: 'enabled' } })).status, 200);
  const after = await pollUntil(id, (all) => all.some((c) => c.events[SSF_STREAM_UPDATED]?.status === 'enabled'), rx.id);
  assert.ok(!after.all.some((c) => c.sub_id.uri === 'spiffe://writ.local/svc/dropped'), 'disabled: the revocation was not queued');
});

test('push (RFC 8935): the receiver-supplied Authorization is sent; a 503 and a 500 are retried (with backoff) until 202', async () => {
  const got: { auth: string | undefined; type: string | undefined; jwt: string }[] = [];
  let answers = [503, 500];
  const receiver: Server = createServer((req, res) => {
    let b = '';
    req.on('data', (c: Buffer) => (b += c.toString()));
    req.on('end', () => {
      got.push({ auth: req.headers.authorization, type: req.headers['content-type'], jwt: b });
      const code = answers.shift() ?? 202;
      res.writeHead(code).end();
    });
  });
  await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
  const addr = receiver.address();
  const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
  try {
    const c = await s.call('POST', '/ssf/stream', { ...as(rx), body: { delivery: { method: SSF_PUSH, endpoint_url: `http://127.0.0.1:${port}/events`, authorization_header: 'Bearer rx-given' } } });
    assert.equal(c.status, 201, c.text);
    assert.deepEqual(c.json.delivery, { method: SSF_PUSH, endpoint_url: `http://127.0.0.1:${port}/events` }, 'the authorization header is never read back');
    const polled = await s.call('POST', `/ssf/poll/${c.json.stream_id}`, { ...as(rx), body: {} });
    assert.deepEqual([polled.status, polled.json.message], [400, `stream \`${c.json.stream_id}\` is not a poll stream`]);
    await revoke({ kind: 'subject-revoked', subject: 'spiffe://writ.local/svc/pushed', reason: 'posture-failed' });
    const end = Date.now() + 15_000;
    while (got.length < 3 && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    assert.equal(got.length, 3, 'two failures, then delivered');
    for (const g of got) {
      assert.equal(g.auth, 'Bearer rx-given');
      assert.equal(g.type, 'application/secevent+jwt');
      assert.equal(g.jwt, got[0]?.jwt, 'the same SET each try');
    }
    const claims = await verify(got[0]?.jwt ?? '', rx.id);
    assert.deepEqual(claims.sub_id, { format: 'uri', uri: 'spiffe://writ.local/svc/pushed' });
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(got.length, 3, 'a delivered SET is not sent again');
    answers = [];
  } finally {
    await new Promise<void>((r) => receiver.close(() => r()));
  }
});
