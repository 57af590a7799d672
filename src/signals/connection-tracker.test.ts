import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, connect } from 'node:net';
import type { Socket } from 'node:net';
import { RevocationConnectionTracker } from './connection-tracker.ts';
import type { RevocationEvent } from './ports.ts';

const ev = (e: Partial<RevocationEvent> & Pick<RevocationEvent, 'kind'>): RevocationEvent => ({ id: 'x', cursor: 1, at: '2026-01-01T00:00:00.000Z', reason: 'posture-failed', ...e });

test('each revocation kind closes exactly the connections held by what it names', () => {
  const t = new RevocationConnectionTracker();
  const closed: string[] = [];
  t.track({ subject: 'spiffe://a', tokenId: 't1' }, (r) => closed.push(`a1 ${r}`));
  t.track({ subject: 'spiffe://a', leaseId: 'l1' }, () => closed.push('a2'));
  t.track({ subject: 'spiffe://b', tokenId: 't2' }, () => closed.push('b1'));
  const gone = t.track({ subject: 'spiffe://c' }, () => closed.push('c1'));
  gone();
  assert.equal(t.apply(ev({ kind: 'policy-changed' })), 0);
  assert.equal(t.apply(ev({ kind: 'signal', subject: 'spiffe://a' })), 0);
  assert.equal(t.apply(ev({ kind: 'token-revoked', tokenId: 't2' })), 1);
  assert.equal(t.apply(ev({ kind: 'subject-revoked', subject: 'spiffe://c' })), 0, 'an untracked connection is not closed');
  assert.equal(t.apply(ev({ kind: 'subject-revoked', subject: 'spiffe://a' })), 2);
  assert.deepEqual(closed, ['b1', 'a1 subject-revoked:posture-failed', 'a2']);
  assert.equal(t.size, 0);
  t.track({ leaseId: 'l9' }, () => {
    throw new Error('already closed');
  });
  assert.equal(t.apply(ev({ kind: 'lease-revoked', leaseId: 'l9' })), 1, 'a throwing close is still counted and forgotten');
  assert.equal(t.size, 0);
});

test('a real keep-alive TCP connection is cut by a revocation of its token', async () => {
  const t = new RevocationConnectionTracker();
  const server = createServer((sock: Socket) => {
    const untrack = t.track({ subject: 'spiffe://writ.local/svc/a', tokenId: 'jti-1' }, (reason) => sock.destroy(new Error(reason)));
    sock.once('close', untrack);
    sock.on('error', () => undefined);
    sock.write('hello\n');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const addr = server.address();
  const client = connect(typeof addr === 'object' && addr !== null ? addr.port : 0, '127.0.0.1');
  await new Promise<void>((r) => client.once('data', () => r()));
  assert.equal(t.size, 1);
  const closed = new Promise<void>((r) => client.once('close', () => r()));
  client.on('error', () => undefined);
  assert.equal(t.apply(ev({ kind: 'token-revoked', tokenId: 'jti-1' })), 1);
  await closed;
  assert.equal(client.destroyed, true);
  await new Promise<void>((r) => server.close(() => r()));
});
