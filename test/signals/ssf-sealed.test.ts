/**
 * A push stream's `authorization_header` at rest, against a real server on
 * SQLite: it is stored sealed under the KEK (nowhere in the data folder in
 * plain text), pushes still carry it, a row an older version wrote in plain
 * text is sealed when the server starts, and a tampered sealed value fails
 * closed (nothing pushed, a warning and an audit event, no secret anywhere).
 * The same behaviours on PostgreSQL: test/storage/conformance.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { Secret } from '../../src/kernel/index.ts';
import { KeyEncryptionKey } from '../../src/identity/index.ts';
import { ssfStreamSecretContext } from '../../src/signals/index.ts';
import { kekSealer } from '../../src/server/index.ts';
import { startTestServer } from '../support/server.ts';
import type { TestServer } from '../support/server.ts';
import { startRecordingReceiver } from '../support/recording-receiver.ts';

const SSF_PUSH = 'urn:ietf:rfc:8935';
const SECRET = `Bearer ssf-rx-${randomBytes(8).toString('hex')}`;
const LEGACY = `Bearer ssf-legacy-${randomBytes(8).toString('hex')}`;

interface Row {
  stream_id: string;
  body: string;
  authorization_sealed: string | null;
  revision: number;
}

function withDb<T>(dataDir: string, f: (db: DatabaseSync) => T): T {
  const db = new DatabaseSync(join(dataDir, 'writ.db'));
  try {
    return f(db);
  } finally {
    db.close();
  }
}

function row(dataDir: string, id: string): Row {
  return withDb(dataDir, (db) => db.prepare('select stream_id, body, authorization_sealed, revision from ssf_streams where stream_id = ?').get(id) as unknown as Row);
}

/** Every byte in the data folder (database, WAL, logs), as latin1 text, to search. */
function dataFolderText(dataDir: string): string {
  return readdirSync(dataDir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => readFileSync(join(e.parentPath, e.name)).toString('latin1'))
    .join('\n');
}

/**
 * The sealed value with one bit of its last byte (the GCM tag) flipped. Editing base64 text
 * instead can touch only padding bits, and then the bytes, and the decryption, do not change.
 */
function flipLastByte(b64url: string): string {
  const bytes = Buffer.from(b64url, 'base64url');
  bytes[bytes.length - 1] = (bytes[bytes.length - 1] ?? 0) ^ 1;
  return bytes.toString('base64url');
}

async function until(what: string, pred: () => boolean, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('the sealer: another KEK, a tampered value, another stream id and not-a-sealed-value do not open, and the errors name no secret', () => {
  const kek = new KeyEncryptionKey(randomBytes(32));
  const sealer = kekSealer(kek);
  const sealed = sealer.seal(new Secret(SECRET), ssfStreamSecretContext('st_a'));
  assert.doesNotMatch(sealed, new RegExp(SECRET.slice(7)));
  assert.equal(sealer.open(sealed, ssfStreamSecretContext('st_a')).reveal(), SECRET);
  const w = JSON.parse(sealed) as { ciphertext: string };
  const flipped = flipLastByte(w.ciphertext);
  const attempts: [string, () => unknown, RegExp][] = [
    ['another KEK', () => kekSealer(new KeyEncryptionKey(randomBytes(32))).open(sealed, ssfStreamSecretContext('st_a')), /^key `writ\/signals\/ssf-stream\/st_a` was wrapped by another key-encryption key \(`[0-9a-f]{16}`\)$/],
    ['tampered', () => sealer.open(JSON.stringify({ ...w, ciphertext: flipped }), ssfStreamSecretContext('st_a')), /^key `writ\/signals\/ssf-stream\/st_a` could not be decrypted$/],
    ['another stream', () => sealer.open(sealed, ssfStreamSecretContext('st_b')), /^key `writ\/signals\/ssf-stream\/st_b` could not be decrypted$/],
    ['not sealed', () => sealer.open(SECRET, ssfStreamSecretContext('st_a')), /^unknown wrapped key version `undefined`$/],
  ];
  for (const [name, f, message] of attempts) {
    assert.throws(f, (e: Error & { code?: string }) => {
      assert.equal(e.code, 'ERR_IDENTITY_KEY_UNWRAP_FAILED', name);
      assert.match(e.message, message, name);
      assert.doesNotMatch(JSON.stringify({ message: e.message, stack: e.stack, cause: String(e.cause) }), /ssf-rx-/, name);
      return true;
    });
  }
});

test('SQLite server: stored sealed, pushed with the header; a plain-text row of an older version is sealed on start; a tampered one is not pushed', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'writ-ssf-sealed-'));
  const receiver = await startRecordingReceiver();
  const { got, base } = receiver;
  let s: TestServer | undefined;
  const logs: string[] = [];
  try {
    s = await startTestServer({ dataDir });
    const p = await s.call('POST', '/admin/v1/principals', { body: { name: 'ssf-sealed-rx', role: 'pep' } });
    assert.equal(p.status, 201, p.text);
    const rx = { token: p.json.token as string };
    const create = async (path: string, authorization: string): Promise<string> => {
      const c = await s!.call('POST', '/ssf/stream', { ...rx, body: { delivery: { method: SSF_PUSH, endpoint_url: `${base}${path}`, authorization_header: authorization } } });
      assert.equal(c.status, 201, c.text);
      assert.equal(JSON.stringify(c.json).includes('ssf-'), false, 'never read back');
      return c.json.stream_id as string;
    };
    const revoke = async (subject: string): Promise<void> => {
      const r = await s!.call('POST', '/admin/v1/revocations', { body: { kind: 'subject-revoked', subject, reason: 'posture-failed' } });
      assert.equal(r.status, 201, r.text);
    };
    const a = await create('/a', SECRET);
    const b = await create('/b', SECRET);

    const stored = row(dataDir, a);
    assert.equal(JSON.parse(stored.body).delivery.authorization_header, undefined);
    assert.deepEqual(Object.keys(JSON.parse(stored.authorization_sealed ?? '{}')).sort(), ['ciphertext', 'kekId', 'v', 'wrappedDek']);
    assert.equal(dataFolderText(dataDir).includes(SECRET.slice(7)), false, 'the credential is nowhere in the data folder in plain text');

    await revoke('spiffe://writ.local/svc/sealed-1');
    await until('a push on each stream', () => got.length >= 2);
    assert.deepEqual(got.map((g) => [g.path, g.auth]).sort(), [['/a', SECRET], ['/b', SECRET]]);

    // Back to an older version's row: stream `b` with its credential in plain text in the body.
    logs.push(s.logs());
    await s.stop();
    s = undefined;
    withDb(dataDir, (db) => {
      const body = JSON.parse(row(dataDir, b).body) as { delivery: Record<string, unknown> };
      body.delivery.authorization_header = LEGACY;
      db.prepare('update ssf_streams set body = ?, authorization_sealed = null where stream_id = ?').run(JSON.stringify(body), b);
    });
    assert.match(row(dataDir, b).body, new RegExp(LEGACY.slice(7)));
    s = await startTestServer({ dataDir });
    const migrated = row(dataDir, b);
    assert.ok(migrated.authorization_sealed !== null, 'sealed when the server started');
    assert.equal(migrated.body.includes(LEGACY.slice(7)) || (migrated.authorization_sealed ?? '').includes(LEGACY.slice(7)), false);
    got.length = 0;
    await revoke('spiffe://writ.local/svc/sealed-2');
    await until('a push on each stream after the restart', () => got.length >= 2);
    assert.deepEqual(got.map((g) => [g.path, g.auth]).sort(), [['/a', SECRET], ['/b', LEGACY]]);

    // Stream `a`'s sealed value tampered with: its push fails closed; `b` is unaffected.
    withDb(dataDir, (db) => {
      const w = JSON.parse(row(dataDir, a).authorization_sealed ?? '{}') as { ciphertext: string };
      const ciphertext = flipLastByte(w.ciphertext);
      db.prepare('update ssf_streams set authorization_sealed = ? where stream_id = ?').run(JSON.stringify({ ...w, ciphertext }), a);
    });
    got.length = 0;
    await revoke('spiffe://writ.local/svc/sealed-3');
    const server = s;
    await until('the warning for stream a', () => server.logs().includes('credential-unreadable'));
    await until('the push on stream b', () => got.length >= 1);
    await new Promise((r) => setTimeout(r, 500));
    assert.deepEqual(got, [{ path: '/b', auth: LEGACY }], 'nothing is sent on stream a');
    const warn = server.logs().split('\n').find((l) => l.includes('credential-unreadable'));
    assert.ok(warn !== undefined);
    const line = JSON.parse(warn) as Record<string, unknown>;
    assert.deepEqual([line.msg, line.streamId, line.outcome], ['SSF stream delivery did not succeed', a, 'credential-unreadable']);
    const audit = await s.call('GET', '/admin/v1/audit/events?action=ssf.stream.credential-unreadable&limit=100');
    assert.equal(audit.status, 200, audit.text);
    const events = audit.json.events as { outcome: string; target?: { id: string } }[];
    assert.deepEqual(events.map((e) => [e.target?.id, e.outcome]), [[a, 'failure']]);
    assert.equal((await s.call('GET', '/healthz', { token: null })).status, 200, 'the server keeps serving');

    // The receiver gives the header again: sealed anew, and the SET held back is pushed with it.
    const FRESH = `Bearer ssf-rx-${randomBytes(8).toString('hex')}`;
    const patched = await s.call('PATCH', '/ssf/stream', { ...rx, body: { stream_id: a, delivery: { method: SSF_PUSH, endpoint_url: `${base}/a`, authorization_header: FRESH } } });
    assert.equal(patched.status, 200, patched.text);
    assert.equal(dataFolderText(dataDir).includes(FRESH.slice(7)), false);
    await until('the held-back SET on stream a', () => got.some((g) => g.path === '/a'));
    assert.deepEqual([...new Set(got.filter((g) => g.path === '/a').map((g) => g.auth))], [FRESH]);
    // A new delivery without a header drops the stored one: pushes carry no Authorization.
    const replaced = await s.call('PUT', '/ssf/stream', { ...rx, body: { stream_id: a, delivery: { method: SSF_PUSH, endpoint_url: `${base}/a` } } });
    assert.equal(replaced.status, 200, replaced.text);
    assert.equal(row(dataDir, a).authorization_sealed, null);
    got.length = 0;
    await revoke('spiffe://writ.local/svc/sealed-4');
    await until('a push on each stream', () => got.length >= 2);
    assert.deepEqual(got.map((g) => [g.path, g.auth]).sort(), [['/a', undefined], ['/b', LEGACY]]);
    logs.push(s.logs());
    for (const secret of [SECRET, LEGACY, FRESH]) assert.equal(logs.join('\n').includes(secret.slice(7)), false, 'no credential in a log line');
  } finally {
    await s?.stop();
    await receiver.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
});
