import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../kernel/index.ts';
import type { AuditEventInput, AuditRecord, AuditSink } from '../kernel/index.ts';
import { InProcessRevocationBus } from './memory-bus.ts';
import { Reevaluator } from './reevaluation.ts';
import type { LiveItem, ReevaluationPort, Redecision } from './reevaluation.ts';
import type { SignalRecord } from './signal.ts';

const W = 'spiffe://writ.local/svc/a';

function sink(): AuditSink & { events: AuditEventInput[] } {
  const events: AuditEventInput[] = [];
  return {
    events,
    async append(e) {
      events.push(e);
      return { seq: events.length, time: e.time ?? '', action: e.action, actor: e.actor, outcome: e.outcome, reasons: e.reasons ?? [], correlationId: e.correlationId, details: e.details ?? {}, prevHash: '', hash: '' } satisfies AuditRecord;
    },
  };
}

function record(signal: SignalRecord['signal']): SignalRecord {
  return { id: 'sig_1', type: signal.type, subject: signal.subject, receivedAt: '2026-01-01T00:00:00.000Z', occurredAt: '2026-01-01T00:00:00.000Z', source: 'test', signal };
}

/** A port over fixed items; `decide` answers per item; `cut` can fail per item. */
function port(items: LiveItem[], decide: (i: LiveItem) => Redecision | Error, failCut = new Set<string>()): ReevaluationPort & { cuts: string[]; invalidated: number } {
  const p = {
    cuts: [] as string[],
    invalidated: 0,
    async findLive() {
      return items;
    },
    async redecide(i: LiveItem) {
      const d = decide(i);
      if (d instanceof Error) throw d;
      return d;
    },
    async cut(i: LiveItem) {
      if (failCut.has(i.id)) throw new Error('engine down');
      p.cuts.push(i.id);
      return { cutAt: '2026-01-01T00:00:01.000Z' };
    },
    async invalidateDecisions() {
      p.invalidated += 1;
    },
  };
  return p;
}

const token: LiveItem = { type: 'token', id: 'tok1', subject: W, kind: 'access_token', audience: 'https://api', gated: true };
const lease: LiveItem = { type: 'lease', id: 'lease1', subject: W, kind: 'postgres', audience: 'postgres:main', gated: false };
const noPermit: Redecision = { decision: 'deny', reasons: ['no-permit'], policyVersion: 'v1', forbidden: false };
const context = { posture: async () => undefined, risk: async () => ({ level: 'high', at: '2026-01-01T00:00:00.000Z' }) };

test('a PDP failure is a deny (fail closed) for tokens; items issued outside the PDP go only on an explicit forbid', async () => {
  const clock = new ManualClock(Date.parse('2026-01-01T00:00:00Z'));
  const bus = new InProcessRevocationBus(clock);
  const audit = sink();
  const p = port([token, lease], (i) => (i.type === 'token' ? new Error('pdp down') : noPermit));
  const r = await new Reevaluator({ port: p, bus, audit, clock, context }).run(record({ type: 'risk-changed', subject: W, level: 'high' }), 'cid');
  assert.deepEqual(p.cuts, ['tok1']);
  assert.deepEqual(r.items.map((i) => [i.type, i.id, i.outcome, i.reasons]), [
    ['decision-cache', 'pdp', 'invalidated', ['risk-raised']],
    ['token', 'tok1', 'revoked', ['pdp-unavailable']],
    ['lease', 'lease1', 'kept', ['no-permit']],
    ['svid', W, 'kept', ['no-permit']],
  ]);
  assert.equal(p.invalidated, 1);
  const events: unknown[] = [];
  await bus.subscribe(0, (e) => void events.push([e.kind, e.tokenId, e.reason, e.at]));
  assert.deepEqual(events, [['token-revoked', 'tok1', 'risk-raised', '2026-01-01T00:00:01.000Z']]);
  assert.equal(audit.events.length, 1);
  assert.equal(audit.events[0]?.action, 'signal.reevaluated');
  assert.deepEqual(audit.events[0]?.reasons, ['risk-changed', 'access-revoked']);
  await bus.close();
});

test('the PDP sees the signal: risk as a Cedar Risk record; a cut that fails is recorded and the receipt is a failure', async () => {
  const clock = new ManualClock(Date.parse('2026-01-01T00:00:00Z'));
  const bus = new InProcessRevocationBus(clock);
  const audit = sink();
  const seen: unknown[] = [];
  const p = port([token], () => ({ decision: 'deny', reasons: ['policy-forbid'], policyVersion: 'v1', forbidden: true }), new Set(['tok1']));
  const redecide = p.redecide.bind(p);
  p.redecide = async (i, s, ctx, cid) => {
    seen.push(ctx);
    return redecide(i, s, ctx, cid);
  };
  const r = await new Reevaluator({ port: p, bus, audit, clock, context }).run(record({ type: 'risk-changed', subject: W, level: 'high' }), 'cid');
  assert.deepEqual(seen[0], { risk: { level: 'high', score: 75 } });
  assert.equal(r.items.find((i) => i.id === 'tok1')?.outcome, 'cut-failed');
  assert.equal(r.items.find((i) => i.id === W)?.outcome, 'revoked');
  assert.equal(audit.events[0]?.outcome, 'failure');
  assert.deepEqual(audit.events[0]?.reasons, ['risk-changed', 'access-revoked', 'cut-failed']);
  await bus.close();
});

test('credential-compromised cuts the named credential whatever policy says; maxItems bounds the work', async () => {
  const clock = new ManualClock(0);
  const bus = new InProcessRevocationBus(clock);
  const allow: Redecision = { decision: 'allow', reasons: [], policyVersion: 'v1', forbidden: false };
  const p = port([token, { ...token, id: 'tok2' }], () => allow);
  const r = await new Reevaluator({ port: p, bus, audit: sink(), clock, context, maxItems: 1 }).run(record({ type: 'credential-compromised', subject: W, tokenId: 'tok1' }), 'cid');
  assert.deepEqual(p.cuts, ['tok1']);
  assert.equal(r.truncated, true);
  assert.throws(() => new Reevaluator({ port: p, bus, audit: sink(), clock, context, maxItems: 0 }), { name: 'TypeError', message: 'maxItems must be a positive integer' });
  await bus.close();
});

test('a revocation the bus does not take is still a cut, and the receipt says it was not published', async () => {
  const clock = new ManualClock(0);
  const bus = new InProcessRevocationBus(clock);
  const audit = sink();
  const p = port([token], () => ({ decision: 'deny', reasons: ['policy-forbid'], policyVersion: 'v1', forbidden: true }));
  const failing = { ...bus, kind: 'memory', publish: async () => Promise.reject(new Error('bus down')), subscribe: bus.subscribe.bind(bus), head: bus.head.bind(bus), close: bus.close.bind(bus) };
  const r = await new Reevaluator({ port: p, bus: failing, audit, clock, context }).run(record({ type: 'risk-changed', subject: W, level: 'high' }), 'cid');
  assert.deepEqual(r.items.filter((i) => i.type !== 'decision-cache').map((i) => [i.id, i.outcome, i.unpublished]), [['tok1', 'revoked', true], [W, 'revoked', true]]);
  assert.equal(audit.events[0]?.outcome, 'failure');
  assert.deepEqual(audit.events[0]?.reasons, ['risk-changed', 'access-revoked', 'publish-failed']);
  await bus.close();
});

test('entry-deleted, node-evicted and an unnamed compromise end everything found, whatever policy says', async () => {
  for (const signal of [{ type: 'entry-deleted' as const, subject: W, entryId: 'e1' }, { type: 'node-evicted' as const, subject: W }, { type: 'credential-compromised' as const, subject: W }]) {
    const clock = new ManualClock(0);
    const bus = new InProcessRevocationBus(clock);
    const p = port([token, lease], () => ({ decision: 'allow', reasons: [], policyVersion: 'v1', forbidden: false }));
    const r = await new Reevaluator({ port: p, bus, audit: sink(), clock, context }).run(record(signal), 'cid');
    assert.deepEqual(r.items.filter((i) => i.type !== 'decision-cache').map((i) => [i.id, i.outcome, i.reasons]), [['tok1', 'revoked', [signal.type]], ['lease1', 'revoked', [signal.type]], [W, 'revoked', [signal.type]]], signal.type);
    await bus.close();
  }
});
