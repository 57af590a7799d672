/**
 * Every replica drops its PDP decision cache on a signal, a policy change or
 * a subject revocation heard on the bus; other revocations leave it alone.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../../src/kernel/index.ts';
import { Decider, PolicyEngine, memoryEntityLoader, readWritSchema, recordingAuditSink } from '../../src/policy/index.ts';
import { InProcessRevocationBus } from '../../src/signals/index.ts';
import { invalidateDecisionsOnRevocations } from '../../src/server/signals-reevaluation.ts';

test('the decision cache is dropped on signal, policy-changed and subject-revoked events, not on a token revocation', async () => {
  const clock = new ManualClock(Date.parse('2026-03-01T00:00:00Z'));
  const engine = new PolicyEngine({ clock });
  const r = await engine.load({ schema: await readWritSchema(), files: [{ path: 'p.cedar', text: 'permit(principal, action == Writ::Action::"credential/issue", resource);' }] });
  assert.equal(r.ok, true, JSON.stringify(r.problems));
  const decider = new Decider({ engine, audit: recordingAuditSink(clock, false), clock, entityLoader: memoryEntityLoader([]), timeoutMs: Infinity });
  const bus = new InProcessRevocationBus(clock);
  const stop = await invalidateDecisionsOnRevocations(bus, decider);
  const decide = () => decider.decide({ principal: { type: 'Writ::Workload', id: 'spiffe://writ.local/a' }, action: 'credential/issue', resource: { type: 'Writ::Service', id: 'api' }, entities: [{ uid: { type: 'Writ::Workload', id: 'spiffe://writ.local/a' }, attrs: { spiffeId: 'spiffe://writ.local/a', labels: [], legacy: false } }, { uid: { type: 'Writ::Service', id: 'api' }, attrs: { internetFacing: false, legacy: false, sensitivity: 'low' } }] });
  const cachedAfter = async (kind: 'signal' | 'policy-changed' | 'subject-revoked' | 'token-revoked'): Promise<boolean> => {
    await decide();
    assert.equal((await decide()).cached, true, 'the second decision comes from the cache');
    await bus.publish({ kind, subject: 'spiffe://writ.local/a', tokenId: 'jti-1', reason: 'test' });
    return (await decide()).cached;
  };
  assert.equal(await cachedAfter('signal'), false);
  assert.equal(await cachedAfter('policy-changed'), false);
  assert.equal(await cachedAfter('subject-revoked'), false);
  assert.equal(await cachedAfter('token-revoked'), true);
  await stop();
  await bus.close();
});
