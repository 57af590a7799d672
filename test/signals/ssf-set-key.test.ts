/**
 * The SET signing key outlives a restart: a SET queued for a poll stream
 * before the server restarted verifies, with jose, against the JWKS the
 * restarted server publishes (before, each process made a fresh key at start,
 * so every SET still queued became unverifiable).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';
import type { JSONWebKeySet } from 'jose';
import { startTestServer } from '../support/server.ts';

test('a SET queued before a restart verifies against the restarted server\'s JWKS; the key is stored sealed', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'writ-set-key-'));
  try {
    let first = await startTestServer({ dataDir });
    let streamId: string;
    let rxToken: string;
    let kid: string;
    try {
      const rx = await first.call('POST', '/admin/v1/principals', { body: { name: 'ssf-rx', role: 'pep' } });
      rxToken = rx.json.token as string;
      const c = await first.call('POST', '/ssf/stream', { token: rxToken, body: { events_requested: ['https://schemas.openid.net/secevent/caep/event-type/session-revoked'] } });
      assert.equal(c.status, 201, c.text);
      streamId = c.json.stream_id as string;
      // A verification SET, queued for the poll and not acknowledged.
      assert.equal((await first.call('POST', '/ssf/verify', { token: rxToken, body: { stream_id: streamId, state: 'before-restart' } })).status, 204);
      const jwks = (await first.call('GET', '/ssf/jwks', { token: null })).json as JSONWebKeySet;
      assert.equal(jwks.keys.length, 1);
      kid = jwks.keys[0]?.kid as string;
    } finally {
      await first.stop();
    }
    first = await startTestServer({ dataDir });
    try {
      const jwks = (await first.call('GET', '/ssf/jwks', { token: null })).json as JSONWebKeySet;
      assert.deepEqual(jwks.keys.map((k) => k.kid), [kid], 'the same key after the restart');
      const polled = await first.call('POST', `/ssf/poll/${streamId}`, { token: rxToken, body: { returnImmediately: true } });
      assert.equal(polled.status, 200, polled.text);
      const sets = Object.values(polled.json.sets as Record<string, string>);
      assert.equal(sets.length, 1);
      const set = sets[0] as string;
      assert.equal(decodeProtectedHeader(set).kid, kid);
      const { payload } = await jwtVerify(set, createLocalJWKSet(jwks), { typ: 'secevent+jwt', algorithms: ['RS256'] });
      assert.equal((payload.events as Record<string, { state?: string }>)['https://schemas.openid.net/secevent/ssf/event-type/verification']?.state, 'before-restart');
    } finally {
      await first.stop();
    }
    // The private key is in the store only sealed: its JWK members never appear in clear.
    const db = readFileSync(join(dataDir, 'writ.db')).toString('latin1');
    assert.ok(db.includes(kid), 'the key row is there');
    assert.doesNotMatch(db, /"d":"|"dp":"|"qi":"/);
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
});
