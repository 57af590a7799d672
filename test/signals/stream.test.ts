/**
 * The revocation stream for enforcement points, against a real server:
 * authentication by role, Last-Event-ID replay, the PEP client's revoked sets,
 * reconnect through a cut connection with nothing lost, and staleness (fail
 * closed) while the server cannot be heard.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { systemClock } from '../../src/kernel/index.ts';
import { RevocationStreamClient } from '../../src/signals/index.ts';
import type { RevocationEvent } from '../../src/signals/index.ts';
import { startTestServer } from '../support/server.ts';
import type { TestServer } from '../support/server.ts';
import { startProxy } from './tcp-proxy.ts';

async function principal(s: TestServer, name: string, role: string): Promise<string> {
  const r = await s.call('POST', '/admin/v1/principals', { body: { name, role } });
  assert.equal(r.status, 201, r.text);
  return r.json.token as string;
}

async function until(pred: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Read SSE frames from a raw fetch until `n` revocation events arrived. */
async function readFrames(url: string, token: string, headers: Record<string, string>, n: number): Promise<{ id: string; data: RevocationEvent }[]> {
  const ac = new AbortController();
  const res = await fetch(`${url}/v1/revocations/stream`, { headers: { authorization: `Bearer ${token}`, ...headers }, signal: ac.signal });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/);
  const out: { id: string; data: RevocationEvent }[] = [];
  let buf = '';
  const dec = new TextDecoder();
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    buf += dec.decode(chunk, { stream: true });
    let i = buf.indexOf('\n\n');
    while (i !== -1) {
      const f = buf.slice(0, i);
      buf = buf.slice(i + 2);
      i = buf.indexOf('\n\n');
      if (!f.includes('event: revocation')) continue;
      const id = /^id: (.*)$/m.exec(f)?.[1] ?? '';
      const data = JSON.parse(/^data: (.*)$/m.exec(f)?.[1] ?? 'null') as RevocationEvent;
      out.push({ id, data });
    }
    if (out.length >= n) break;
  }
  ac.abort();
  return out;
}

test('revocation stream: pep role may subscribe; no credential is 401, a role without the permission 403', async () => {
  const s = await startTestServer({ flags: { 'revocations.heartbeatMs': 200 } });
  try {
    const none = await s.call('GET', '/v1/revocations/stream', { token: null });
    assert.equal(none.status, 401);
    assert.equal(none.json.code, 'ERR_GOV_UNAUTHENTICATED');
    const auditor = await principal(s, 'auditor-1', 'auditor');
    const denied = await s.call('GET', '/v1/revocations/stream', { token: auditor });
    assert.equal(denied.status, 403);
    assert.equal(denied.json.code, 'ERR_GOV_FORBIDDEN');
    assert.equal(denied.json.message, 'role `auditor` lacks permission `revocations.subscribe`');
    const pep = await principal(s, 'pep-1', 'pep');
    const publishByPep = await s.call('POST', '/admin/v1/revocations', { token: pep, body: { kind: 'subject-revoked', subject: 'spiffe://writ.local/a' } });
    assert.equal(publishByPep.status, 403);
    const bad = await s.call('GET', '/v1/revocations/stream', { token: pep, headers: { 'last-event-id': 'abc' } });
    assert.equal(bad.status, 400);
    assert.equal(bad.json.code, 'ERR_SIGNALS_CURSOR_INVALID');
    assert.equal(bad.json.message, 'cursor `abc` is not a non-negative integer');
    const invalid = await s.call('POST', '/admin/v1/revocations', { body: { kind: 'subject-revoked' } });
    assert.equal(invalid.status, 400);
    assert.equal(invalid.json.code, 'ERR_SIGNALS_REVOCATION_INVALID');
    assert.equal(invalid.json.message, '`subject-revoked` needs a `subject`');
  } finally {
    await s.stop();
  }
});

test('revocation stream: Last-Event-ID replays exactly what came after it, with the cursor as the SSE id', async () => {
  const s = await startTestServer();
  try {
    const pep = await principal(s, 'pep-1', 'pep');
    const published: RevocationEvent[] = [];
    for (let i = 0; i < 6; i++) {
      const r = await s.call('POST', '/admin/v1/revocations', { body: { kind: 'subject-revoked', subject: `spiffe://writ.local/w${i}`, reason: 'posture-failed' } });
      assert.equal(r.status, 201, r.text);
      published.push(r.json as RevocationEvent);
    }
    const after = published[2]?.cursor ?? 0;
    const frames = await readFrames(s.url, pep, { 'last-event-id': String(after) }, 3);
    assert.deepEqual(frames.map((f) => f.data.id), published.slice(3).map((e) => e.id));
    assert.deepEqual(frames.map((f) => f.id), published.slice(3).map((e) => String(e.cursor)));
    assert.equal(frames[0]?.data.subject, 'spiffe://writ.local/w3');
    const audit = await s.call('GET', '/admin/v1/audit/events?action=revocation.published&limit=100');
    assert.equal(audit.status, 200, audit.text);
    const recorded = (audit.json.events as { target: { id: string }; details: { cursor: number } }[]).map((e) => [e.target.id, e.details.cursor]);
    assert.deepEqual(recorded, published.map((e) => [e.id, e.cursor]), 'each revocation audited with its cursor');
  } finally {
    await s.stop();
  }
});

test('PEP client: follows revocations, reconnects through a cut connection from its cursor with none lost, and is stale (fails closed) while cut off', async () => {
  const s = await startTestServer({ flags: { 'revocations.heartbeatMs': 100 } });
  const proxy = await startProxy(s.url);
  const errors: unknown[] = [];
  const client = new RevocationStreamClient({ url: proxy.url, token: '', clock: systemClock, stalenessMs: 400, minBackoffMs: 20, maxBackoffMs: 100, onError: (e) => errors.push(e) });
  try {
    const pep = await principal(s, 'pep-1', 'pep');
    const c = new RevocationStreamClient({ url: proxy.url, token: pep, clock: systemClock, stalenessMs: 400, minBackoffMs: 20, maxBackoffMs: 100 });
    assert.equal(c.check({ subject: 'spiffe://writ.local/x' }), 'stale', 'before the first heartbeat the client cannot vouch for anything');
    c.start();
    await until(() => !c.isStale(), 'first heartbeat');
    assert.equal(c.check({ subject: 'spiffe://writ.local/w0' }), 'clear');

    const revoke = async (body: Record<string, string>): Promise<RevocationEvent> => {
      const r = await s.call('POST', '/admin/v1/revocations', { body });
      assert.equal(r.status, 201, r.text);
      return r.json as RevocationEvent;
    };
    await revoke({ kind: 'subject-revoked', subject: 'spiffe://writ.local/w0' });
    await revoke({ kind: 'lease-revoked', leaseId: 'lease-1', reason: 'task-completed' });
    await until(() => c.check({ leaseId: 'lease-1' }) === 'revoked', 'lease revoked');
    assert.equal(c.check({ subject: 'spiffe://writ.local/w0' }), 'revoked');
    assert.equal(c.check({ subject: 'spiffe://writ.local/w1', leaseId: 'lease-2' }), 'clear');

    // Cut the PEP off: the server keeps publishing, the PEP must go stale and deny.
    proxy.cut();
    const during: RevocationEvent[] = [];
    for (let i = 1; i <= 5; i++) during.push(await revoke({ kind: 'subject-revoked', subject: `spiffe://writ.local/w${i}` }));
    during.push(await revoke({ kind: 'token-revoked', tokenId: 'jti-7', reason: 'credential-compromised' }));
    await until(() => c.isStale(), 'staleness beyond the bound');
    assert.equal(c.check({ subject: 'spiffe://writ.local/never-revoked' }), 'stale');
    assert.equal(c.connected, false);

    proxy.resume();
    await until(() => c.check({ tokenId: 'jti-7' }) === 'revoked', 'replay after reconnect');
    for (let i = 1; i <= 5; i++) assert.equal(c.check({ subject: `spiffe://writ.local/w${i}` }), 'revoked', `w${i} replayed`);
    assert.equal(c.cursor, during.at(-1)?.cursor);
    assert.ok(c.connects >= 2, 'reconnected');
    assert.equal(c.check({ subject: 'spiffe://writ.local/never-revoked' }), 'clear');
    c.stop();

    // A bad credential never connects and stays stale.
    client.start();
    await until(() => errors.length > 0, 'refusal reported');
    assert.equal((errors[0] as Error).message, 'revocation stream answered 401');
    assert.equal(client.check({ subject: 'spiffe://writ.local/x' }), 'stale');
  } finally {
    client.stop();
    await proxy.close();
    await s.stop();
  }
});
