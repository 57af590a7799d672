import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../../src/kernel/index.ts';
import { CollectingAuditSink } from '../../src/identity/audit-sink.test-support.ts';
import { RefusalAuditLimiter } from '../../src/server/refusal-limiter.ts';

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

  it('refuses nonsense settings', () => {
    assert.throws(() => new RefusalAuditLimiter({ burst: 0, perMinute: 1 }, sink(), new ManualClock()), { name: 'TypeError', message: 'refusal limiter: burst must be >= 1 and perMinute >= 0' });
  });
});
