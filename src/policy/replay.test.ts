import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { ManualClock } from '../kernel/index.ts';
import { Decider } from './decide.ts';
import { recordingAuditSink } from './fakes.ts';
import { PolicyEngine } from './policy-set.ts';
import { readPolicyFolder } from './policy-source.ts';
import { replayDecisions } from './replay.ts';
import type { RecordedDecision } from './replay.ts';
import { parseEvaluationRequest, toDecisionRequest } from './authzen.ts';

const CERT = fileURLToPath(new URL('../../examples/authzen-certification', import.meta.url));
const alice = { type: 'user', id: 'alice' };
const bob = { type: 'user', id: 'bob' };
const record1 = { type: 'record', id: 'record-1' };
const BODIES = [
  { subject: alice, action: { name: 'read' }, resource: record1 },
  { subject: alice, action: { name: 'write' }, resource: record1 },
  { subject: bob, action: { name: 'read' }, resource: record1 },
  { subject: bob, action: { name: 'write' }, resource: record1 },
  { subject: alice, action: { name: 'delete', properties: { soft: true } }, resource: record1 },
  { subject: alice, action: { name: 'delete', properties: { soft: false } }, resource: record1 },
];

async function recorded(): Promise<RecordedDecision[]> {
  const clock = new ManualClock(Date.parse('2026-03-01T00:00:00Z'));
  const audit = recordingAuditSink(clock);
  const engine = new PolicyEngine({ clock });
  await engine.load(await readPolicyFolder(CERT));
  const pdp = new Decider({ engine, audit, clock, timeoutMs: Infinity });
  for (const b of BODIES) {
    await pdp.decide(toDecisionRequest(engine.active?.schemaInfo, parseEvaluationRequest(b)));
    clock.advance(1000);
  }
  await pdp.decide({ ...toDecisionRequest(engine.active?.schemaInfo, parseEvaluationRequest(BODIES[0])), purpose: 'explain' });
  return audit.events.map((e, i) => ({ seq: i + 1, time: e.time ?? '', details: e.details ?? {} }));
}

async function candidate(change: (policies: string) => string): Promise<PolicyEngine> {
  const source = await readPolicyFolder(CERT);
  const files = source.files.map((f) => ({ ...f, text: change(f.text) }));
  const engine = new PolicyEngine({ clock: new ManualClock(0) });
  const r = await engine.load({ ...source, files });
  assert.equal(r.ok, true, JSON.stringify(r.problems));
  return engine;
}

test('the unchanged set flips nothing; explains are skipped', async () => {
  const records = await recorded();
  const engine = new PolicyEngine({ clock: new ManualClock(0) });
  await engine.load(await readPolicyFolder(CERT));
  const r = await replayDecisions(engine, records);
  assert.deepEqual({ replayed: r.replayed, skipped: r.skipped, flips: r.flips }, { replayed: 6, skipped: 1, flips: [] });
});

test('a deliberate change flips exactly the decisions it should, both ways', async () => {
  const records = await recorded();
  // Drop soft deletes, forbid bob's reads, let bob write active records.
  const engine = await candidate((t) =>
    t
      .replace(/@id\("soft-delete"\)[\s\S]*$/, '')
      .concat('\n@id("no-bob-reads")\n@reason("bob-may-not-read")\nforbid (principal == User::"bob", action == Action::"read", resource);\n')
      .concat('@id("bob-writes")\npermit (principal == User::"bob", action == Action::"write", resource is Record);\n'),
  );
  const r = await replayDecisions(engine, records);
  assert.equal(r.replayed, 6);
  assert.deepEqual(
    r.flips.map((f) => [f.request.principal.id, typeof f.request.action === 'string' ? f.request.action : f.request.action.id, f.was, f.now, f.reasons, f.determiningPolicies]),
    [
      ['bob', 'read', 'allow', 'deny', ['bob-may-not-read'], ['no-bob-reads']],
      ['bob', 'write', 'deny', 'allow', ['policy-permit'], ['bob-writes']],
      ['alice', 'delete', 'allow', 'deny', ['no-matching-permit'], []],
    ],
  );
  assert.ok(r.flips.every((f) => f.wasVersion !== null && f.wasVersion !== engine.active?.version));
});

test('records without a replayable request are skipped, not errors', async () => {
  const engine = await candidate((t) => t);
  const r = await replayDecisions(engine, [
    { seq: 1, time: '2026-03-01T00:00:00Z', details: { decision: 'allow', requestTruncated: true } },
    { seq: 2, time: '2026-03-01T00:00:00Z', details: { decision: 'maybe', request: { principal: { type: 'User', id: 'a' }, action: 'read', resource: { type: 'Record', id: 'r' } } } },
    { seq: 3, time: 'not a time', details: { decision: 'allow', request: { principal: { type: 'User', id: 'a' }, action: 'read', resource: { type: 'Record', id: 'r' } } } },
  ]);
  assert.deepEqual(r, { replayed: 0, skipped: 3, flips: [] });
});
