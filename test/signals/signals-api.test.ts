/**
 * Signals over the admin API against a real server: accepted, stored,
 * audited as `signal.received`, published on the bus (seen on the PEP
 * stream), readable as the latest posture/risk of a subject; refused with the
 * right code when malformed or when the role may not submit.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startTestServer } from '../support/server.ts';
import type { TestServer } from '../support/server.ts';
import { skipWithoutPostgres, IN_CI } from '../support/services.ts';
import { natsServerAvailable, startOwnNats, NATS_SERVER_BIN } from './nats-server.ts';

const ID = 'spiffe://writ.local/ns/prod/sa/api';

async function scenario(s: TestServer): Promise<void> {
  const pep = (await s.call('POST', '/admin/v1/principals', { body: { name: 'pep-1', role: 'pep' } })).json.token as string;
  const ac = new AbortController();
  const stream = await fetch(`${s.url}/v1/revocations/stream?after=0`, { headers: { authorization: `Bearer ${pep}` }, signal: ac.signal });
  assert.equal(stream.status, 200);

  const none = await s.call('GET', `/admin/v1/signals/context?subject=${encodeURIComponent(ID)}`);
  assert.deepEqual(none.json, { subject: ID, posture: null, risk: null });

  const posture = await s.call('POST', '/admin/v1/signals', { body: { type: 'posture-changed', subject: ID, score: 35, failingChecks: ['disk-encryption'], reason: 'scan-failed' } });
  assert.equal(posture.status, 201, posture.text);
  assert.equal(posture.json.signal.type, 'posture-changed');
  assert.match(posture.json.signal.id, /^sig_[0-9a-z]{9}[0-9a-f]{12}$/);
  assert.equal(typeof posture.json.cursor, 'number');
  const risk = await s.call('POST', '/admin/v1/signals', { body: { type: 'risk-changed', subject: ID, level: 'high' } });
  assert.equal(risk.status, 201, risk.text);
  const better = await s.call('POST', '/admin/v1/signals', { body: { type: 'posture-changed', subject: ID, score: 90 } });
  assert.equal(better.status, 201);

  const ctx = await s.call('GET', `/admin/v1/signals/context?subject=${encodeURIComponent(ID)}`);
  assert.equal(ctx.json.posture.score, 90, 'the latest posture wins');
  assert.deepEqual(ctx.json.posture.failingChecks, []);
  assert.equal(ctx.json.risk.level, 'high');

  const list = await s.call('GET', `/admin/v1/signals?subject=${encodeURIComponent(ID)}&type=posture-changed`);
  assert.deepEqual(list.json.signals.map((r: { id: string }) => r.id), [better.json.signal.id, posture.json.signal.id]);

  const audit = await s.call('GET', '/admin/v1/audit/events?action=signal.received');
  const events = audit.json.events as { target: { id: string }; reasons: string[]; details: { signal: { score?: number } } }[];
  assert.deepEqual(events.map((e) => e.target.id), [posture.json.signal.id, risk.json.signal.id, better.json.signal.id]);
  assert.deepEqual(events[0]?.reasons, ['posture-changed', 'scan-failed']);
  assert.equal(events[0]?.details.signal.score, 35);

  // The bus carried each signal to the PEP stream as a `signal` event.
  const seen: { id: string; kind: string; reason: string; subject: string }[] = [];
  let buf = '';
  const dec = new TextDecoder();
  for await (const chunk of stream.body as unknown as AsyncIterable<Uint8Array>) {
    buf += dec.decode(chunk, { stream: true });
    for (const m of buf.matchAll(/event: revocation\ndata: (.*)\n\n/g)) if (m[1] !== undefined && !seen.some((x) => m[1]?.includes(x.id))) seen.push(JSON.parse(m[1]) as (typeof seen)[number]);
    if (seen.length >= 3) break;
  }
  ac.abort();
  assert.deepEqual(seen.map((e) => [e.id, e.kind, e.reason, e.subject]), [
    [posture.json.signal.id, 'signal', 'posture-changed', ID],
    [risk.json.signal.id, 'signal', 'risk-changed', ID],
    [better.json.signal.id, 'signal', 'posture-changed', ID],
  ]);

  const bad = await s.call('POST', '/admin/v1/signals', { body: { type: 'posture-changed', subject: 'spiffe://writ.local/../x', score: 1 } });
  assert.equal(bad.status, 400);
  assert.equal(bad.json.code, 'ERR_SIGNALS_INVALID');
  assert.equal(bad.json.message, '`subject` `spiffe://writ.local/../x` is not a valid SPIFFE ID');
  const unknown = await s.call('POST', '/admin/v1/signals', { body: { type: 'weather', subject: ID } });
  assert.equal(unknown.status, 400);
  assert.equal(unknown.json.code, 'ERR_SERVER_BAD_REQUEST');

  const auditor = (await s.call('POST', '/admin/v1/principals', { body: { name: 'aud-1', role: 'auditor' } })).json.token as string;
  assert.equal((await s.call('GET', '/admin/v1/signals', { token: auditor })).status, 200);
  const denied = await s.call('POST', '/admin/v1/signals', { token: auditor, body: { type: 'risk-changed', subject: ID, level: 'low' } });
  assert.equal(denied.status, 403);
  assert.equal(denied.json.message, 'role `auditor` lacks permission `signals.submit`');
}

test('signals over the admin API (SQLite store, in-process bus)', async () => {
  const s = await startTestServer();
  try {
    await scenario(s);
  } finally {
    await s.stop();
  }
});

test('signals over the admin API (PostgreSQL store, PostgreSQL bus)', async (t) => {
  if (await skipWithoutPostgres(t)) return;
  const s = await startTestServer({ postgres: true, flags: { 'bus.kind': 'postgres' } });
  try {
    await scenario(s);
  } finally {
    await s.stop();
  }
});

test('signals over the admin API (PostgreSQL store, NATS JetStream bus)', async (t) => {
  if (await skipWithoutPostgres(t)) return;
  if (!natsServerAvailable()) {
    if (IN_CI) throw new Error(`no nats-server binary at ${NATS_SERVER_BIN}; CI=true forbids skipping`);
    t.skip(`no nats-server binary at ${NATS_SERVER_BIN}`);
    return;
  }
  const nats = await startOwnNats();
  try {
    const s = await startTestServer({ postgres: true, flags: { 'bus.kind': 'nats', 'bus.natsUrl': nats.url } });
    try {
      await scenario(s);
    } finally {
      await s.stop();
    }
  } finally {
    await nats.dispose();
  }
});

test('bus.kind postgres on a SQLite store refuses to start', async () => {
  await assert.rejects(startTestServer({ flags: { 'bus.kind': 'postgres' } }), (e: { code?: string; message?: string }) => {
    assert.equal(e.code, 'ERR_SIGNALS_BUS_CONFIG');
    assert.equal(e.message, 'option `bus.kind` `postgres` needs a PostgreSQL store (`store` = `postgres://…`)');
    return true;
  });
});
