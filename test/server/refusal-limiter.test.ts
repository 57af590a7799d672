import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../../src/kernel/index.ts';
import { CollectingAuditSink } from '../../src/identity/audit-sink.test-support.ts';
import { GLOBAL_FACTOR, RefusalAuditLimiter, sourceOf } from '../../src/server/refusal-limiter.ts';
import type { AuditEventInput, AuditRecord } from '../../src/kernel/index.ts';

const sink = () => new CollectingAuditSink();

const T0 = Date.parse('2026-11-22T10:00:00.000Z');

describe('RefusalAuditLimiter', () => {
  it('audits a burst per source, then counts; the bucket refills at the per-minute rate', async () => {
    const clock = new ManualClock(T0);
    const audit = sink();
    const l = new RefusalAuditLimiter({ burst: 3, perMinute: 6 }, audit, clock);
    assert.deepEqual([1, 2, 3, 4, 5].map(() => l.admit('192.0.2.1', 'admin-api')), [true, true, true, false, false]);
    // Another source has its own budget.
    assert.equal(l.admit('192.0.2.2', 'admin-api'), true);
    clock.advance(10_000); // 6 per minute: one more after 10 s
    assert.deepEqual([l.admit('192.0.2.1', 'admin-api'), l.admit('192.0.2.1', 'admin-api')], [true, false]);
    assert.equal(l.suppressedTotal, 3);
    await l.close();
    assert.deepEqual(audit.events.map((e) => ({ ...e, correlationId: typeof e.correlationId })), [{
      action: 'api.refusals.suppressed',
      actor: { type: 'anonymous', id: 'anonymous', ip: '192.0.2.1' },
      outcome: 'denied',
      reasons: ['unauthenticated', 'rate-limited'],
      correlationId: 'string',
      details: { kind: 'admin-api', source: '192.0.2.1', count: 3, firstAt: '2026-11-22T10:00:00.000Z', lastAt: '2026-11-22T10:00:10.000Z' },
    }]);
    // Counted once: a second close writes nothing more.
    await l.close();
    assert.equal(audit.events.length, 1);
  });

  it('one budget per source, one count per source and kind', async () => {
    const audit = sink();
    const l = new RefusalAuditLimiter({ burst: 1, perMinute: 0 }, audit, new ManualClock(T0));
    for (const kind of ['admin-api', 'oauth', 'oauth'] as const) {
      l.admit('198.51.100.7', kind);
    }
    await l.flush();
    assert.deepEqual(audit.events.map((e) => [e.details?.kind, e.details?.count]), [['oauth', 2]]);
    l.admit('198.51.100.7', 'admin-api');
    await l.flush();
    assert.deepEqual(audit.events.map((e) => [e.details?.kind, e.details?.count]), [['oauth', 2], ['admin-api', 1]]);
  });

  it('tracks a bounded number of sources: beyond, new sources share one budget, and refilled ones are dropped first', async () => {
    const clock = new ManualClock(T0);
    const audit = sink();
    const l = new RefusalAuditLimiter({ burst: 1, perMinute: 60, maxSources: 2 }, audit, clock);
    assert.equal(l.admit('a', 'admin-api'), true);
    assert.equal(l.admit('b', 'admin-api'), true);
    assert.equal(l.admit('c', 'admin-api'), true, 'the shared bucket starts full');
    assert.equal(l.admit('d', 'admin-api'), false, 'and is shared');
    await l.flush();
    assert.deepEqual(audit.events.map((e) => [e.actor, e.details?.source]), [[{ type: 'anonymous', id: 'anonymous' }, 'many']]);
    clock.advance(60_000); // a and b refilled: they are swept, and a new source gets its own bucket again
    assert.equal(l.admit('e', 'admin-api'), true);
    assert.equal(l.admit('e', 'admin-api'), false);
  });

  it('counts IPv6 callers by their /64 and IPv4-mapped ones as IPv4', () => {
    assert.equal(sourceOf('2001:db8:1:2:aa::7'), '2001:db8:1:2::/64');
    assert.equal(sourceOf('2001:0db8:0001:0002:ffff:ffff:ffff:ffff'), '2001:db8:1:2::/64');
    assert.equal(sourceOf('2001:db8::1'), '2001:db8:0:0::/64');
    assert.equal(sourceOf('fe80::1%eth0'), 'fe80:0:0:0::/64');
    assert.equal(sourceOf('::1'), '0:0:0:0::/64');
    assert.equal(sourceOf('::ffff:192.0.2.9'), '192.0.2.9');
    assert.equal(sourceOf('192.0.2.9'), '192.0.2.9');
    // One host rotating through its /64 shares one budget.
    const l = new RefusalAuditLimiter({ burst: 2, perMinute: 0 }, sink(), new ManualClock(T0));
    assert.deepEqual(['2001:db8:1:2::1', '2001:db8:1:2::2', '2001:db8:1:2::3', '2001:db8:1:3::1'].map((a) => l.admit(a, 'admin-api')), [true, true, false, true]);
  });

  it('all sources together have a ceiling: many addresses cannot each spend a full budget', async () => {
    const audit = sink();
    const l = new RefusalAuditLimiter({ burst: 2, perMinute: 0 }, audit, new ManualClock(T0));
    const admitted = Array.from({ length: 100 }, (_, i) => l.admit(`198.51.100.${i}`, 'admin-api')).filter(Boolean).length;
    assert.equal(admitted, 2 * GLOBAL_FACTOR);
    await l.flush();
    assert.equal(audit.events.reduce((n, e) => n + Number(e.details?.count), 0), 100 - 2 * GLOBAL_FACTOR, 'the rest is counted, per source');
  });

  it('counts that could not be written are kept and written by the next flush, merged', async () => {
    const clock = new ManualClock(T0);
    let fail = true;
    const written: AuditEventInput[] = [];
    const audit = {
      async append(e: AuditEventInput): Promise<AuditRecord> {
        if (fail) throw new Error('store down');
        written.push(e);
        return { ...e, seq: written.length, time: '', reasons: [...(e.reasons ?? [])], details: e.details ?? {}, prevHash: '', hash: '' };
      },
    };
    const l = new RefusalAuditLimiter({ burst: 1, perMinute: 0 }, audit, clock);
    l.admit('192.0.2.1', 'admin-api');
    l.admit('192.0.2.1', 'admin-api');
    await assert.rejects(l.flush(), { message: 'store down' });
    clock.advance(1000);
    l.admit('192.0.2.1', 'admin-api');
    fail = false;
    await l.close();
    assert.deepEqual(written.map((e) => [e.details?.count, e.details?.firstAt, e.details?.lastAt]), [[2, '2026-11-22T10:00:00.000Z', '2026-11-22T10:00:01.000Z']]);
  });

  it('refuses nonsense settings', () => {
    assert.throws(() => new RefusalAuditLimiter({ burst: 0, perMinute: 1 }, sink(), new ManualClock()), { name: 'TypeError', message: 'refusal limiter: burst must be >= 1 and perMinute >= 0' });
  });
});
