/**
 * A lease revocation whose publication fails is retried in the background
 * until the bus takes it (the lease stays revoked meanwhile, and the failure
 * is reported at once); a bus that never recovers is reported as given up.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { systemClock } from '../../src/kernel/index.ts';
import { InProcessRevocationBus } from '../../src/signals/index.ts';
import type { RevocationBus, RevocationInput } from '../../src/signals/index.ts';
import { publishLeaseRevocations } from '../../src/server/signals-reevaluation.ts';
import { credContext } from '../credentials/support.ts';

const SUBJ = 'spiffe://example.org/ns/ci/runner';
const admin = { type: 'admin' as const, id: 'adm1', name: 'ops' };

/** An in-process bus whose first `failures` publishes throw. */
function flakyBus(failures: number): { bus: RevocationBus; attempts: () => number } {
  const inner = new InProcessRevocationBus(systemClock);
  let n = 0;
  const bus: RevocationBus = {
    kind: inner.kind,
    publish: async (input: RevocationInput) => {
      n += 1;
      if (n <= failures) throw new Error('bus unreachable');
      return inner.publish(input);
    },
    subscribe: (c, h, o) => inner.subscribe(c, h, o),
    head: () => inner.head(),
    close: () => inner.close(),
  };
  return { bus, attempts: () => n };
}

async function until(what: string, pred: () => boolean | Promise<boolean>): Promise<void> {
  for (const end = Date.now() + 10_000; !(await pred()); ) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

test('a failed publication is reported at once and retried until the bus takes it, once', async () => {
  const c = await credContext();
  const { bus, attempts } = flakyBus(2);
  const reported: string[] = [];
  c.leases.onRevokedListenerError = (l) => reported.push(l.id);
  publishLeaseRevocations(c.leases, bus, { firstRetryMs: 5 });
  try {
    const l = await c.leases.open({ kind: 'access_token', subject: SUBJ, ttlMs: 60_000, correlationId: 'c' });
    const r = await c.leases.revoke(l.id, 'admin-revoked', 'c', admin);
    assert.equal(r?.state, 'revoked', 'the revocation stands while the bus is down');
    assert.deepEqual(reported, [l.id]);
    await until('the retried publication', async () => (await bus.head()) === 1);
    assert.equal(attempts(), 3);
    const seen: RevocationInput[] = [];
    await bus.subscribe(0, (e) => void seen.push(e));
    await until('the event', () => seen.length === 1);
    assert.deepEqual([seen[0]?.kind, seen[0]?.tokenId, seen[0]?.subject, seen[0]?.reason], ['token-revoked', l.id, SUBJ, 'admin-revoked']);
  } finally {
    await bus.close();
    await c.close();
  }
});

test('a bus that never recovers is reported as given up after the retries', async () => {
  const c = await credContext();
  const { bus, attempts } = flakyBus(Number.MAX_SAFE_INTEGER);
  const gaveUp: string[] = [];
  c.leases.onRevokedListenerError = () => undefined;
  publishLeaseRevocations(c.leases, bus, { firstRetryMs: 1, retries: 3, onGaveUp: (id) => gaveUp.push(id) });
  try {
    const l = await c.leases.open({ kind: 'postgres', subject: SUBJ, ttlMs: 60_000, correlationId: 'c' });
    await c.leases.revoke(l.id, 'admin-revoked', 'c', admin);
    await until('giving up', () => gaveUp.length === 1);
    assert.deepEqual(gaveUp, [l.id]);
    assert.equal(attempts(), 4, 'the first try and three retries');
  } finally {
    await bus.close();
    await c.close();
  }
});
