// Shadow mode: a candidate set decides beside the live one; disagreements are
// recorded, never enforced, and nothing the candidate does changes a live decision.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { ManualClock } from '../kernel/index.ts';
import { Decider } from './decide.ts';
import type { DecisionRequest } from './decide.ts';
import { recordingAuditSink } from './fakes.ts';
import { PolicyEngine } from './policy-set.ts';
import type { PolicySource } from './policy-set.ts';
import { ShadowEvaluator } from './shadow.ts';

const CERT = fileURLToPath(new URL('../../examples/authzen-certification/', import.meta.url));
const schema = { path: 'certification.cedarschema', text: await readFile(`${CERT}certification.cedarschema`, 'utf8') };
const entities = { path: 'entities.json', text: await readFile(`${CERT}entities.json`, 'utf8') };
const LIVE = await readFile(`${CERT}certification.cedar`, 'utf8');
const source = (text: string): PolicySource => ({ schema, entities, files: [{ path: 'p.cedar', text }] });

const clock = new ManualClock(Date.parse('2026-01-01T00:00:00Z'));

async function setup(candidateText: string) {
  const live = new PolicyEngine({ clock });
  assert.equal((await live.load(source(LIVE))).ok, true);
  const candidate = new PolicyEngine({ clock });
  const loaded = await candidate.load(source(candidateText));
  assert.equal(loaded.ok, true, JSON.stringify(loaded.problems));
  const liveAudit = recordingAuditSink(clock);
  const shadowAudit = recordingAuditSink(clock);
  const pdp = new Decider({ engine: live, audit: liveAudit, clock, timeoutMs: Infinity });
  const results: string[] = [];
  const shadow = new ShadowEvaluator({ engine: candidate, audit: shadowAudit, clock, origin: '/candidates/next', timeoutMs: Infinity, onCompared: (r) => results.push(r) });
  pdp.observe((req, d) => shadow.compare(req, d));
  return { pdp, shadow, liveAudit, shadowAudit, results };
}

/** Comparisons run after the live decision, on a later microtask: wait until `n` are done. */
async function compared(shadow: ShadowEvaluator, n: number): Promise<void> {
  for (let i = 0; i < 1000 && shadow.stats.compared < n; i++) await new Promise((r) => setImmediate(r));
  assert.equal(shadow.stats.compared, n);
}

const req = (subject: string, action: string, resource: string, extra: Partial<DecisionRequest> = {}): DecisionRequest => ({
  principal: { type: 'User', id: subject },
  action,
  resource: { type: 'Record', id: resource },
  ...extra,
});

const FREEZE = `${LIVE}
@id("write-freeze")
@reason("change-freeze")
forbid (principal, action == Action::"write", resource);
`;

test('a disagreement is recorded with both sides; agreements are only counted; live answers are the live set\'s', async () => {
  const { pdp, shadow, liveAudit, shadowAudit, results } = await setup(FREEZE);
  const read = await pdp.decide(req('alice', 'read', 'record-1', { correlationId: 'c-read' }));
  const write = await pdp.decide(req('alice', 'write', 'record-1', { correlationId: 'c-write' }));
  assert.equal(read.decision, 'allow');
  assert.equal(write.decision, 'allow');
  await compared(shadow, 2);
  assert.deepEqual(shadow.stats, { compared: 2, disagreements: 1, errors: 0 });
  assert.deepEqual(results, ['agree', 'disagree']);
  // The live audit has only the live decisions; the candidate's do not pose as decision.made.
  assert.deepEqual(liveAudit.events.map((e) => e.action), ['decision.made', 'decision.made']);
  assert.equal(shadowAudit.events.length, 1);
  const e = shadowAudit.events[0];
  assert.equal(e?.action, 'policy.shadow.disagreed');
  assert.equal(e?.correlationId, 'c-write');
  assert.deepEqual(e?.reasons, ['shadow-disagreement']);
  assert.deepEqual(e?.target, { type: 'policy_set', id: shadow.version, name: '/candidates/next' });
  assert.deepEqual(e?.details, {
    decisionId: write.decisionId,
    principal: { type: 'User', id: 'alice' },
    action: 'write',
    resource: { type: 'Record', id: 'record-1' },
    live: { decision: 'allow', reasons: ['active-record-writable-by-non-admin'], policyIds: ['write-active-records'], policyVersion: write.policyVersion },
    shadow: { decision: 'deny', reasons: ['change-freeze'], policyIds: ['write-freeze'], policyVersion: shadow.version },
    policyVersion: shadow.version,
  });
});

test('a candidate that fails at run time, or whose record cannot be written, never changes a live decision', async () => {
  // The candidate overflows a Long whenever it reads a record: a Cedar evaluation error, so it denies.
  const broken = `${LIVE}
@id("overflows")
permit (principal is User, action == Action::"read", resource is Record) when { 9223372036854775807 + 1 > 0 };
`;
  const { pdp, shadow, shadowAudit } = await setup(broken);
  const d = await pdp.decide(req('alice', 'read', 'record-1'));
  assert.equal(d.decision, 'allow');
  await compared(shadow, 1);
  assert.equal(shadow.stats.disagreements, 1);
  const details = shadowAudit.events[0]?.details as { shadow: { decision: string; reasons: string[] } };
  assert.equal(details.shadow.decision, 'deny');
  assert.deepEqual(details.shadow.reasons, ['policy-evaluation-error']);

  // The disagreement cannot be recorded: counted as an error, the live answer untouched.
  shadowAudit.failWith = new Error('audit store down');
  const again = await pdp.decide(req('alice', 'read', 'record-1'));
  assert.equal(again.decision, 'allow');
  await compared(shadow, 2);
  assert.deepEqual(shadow.stats, { compared: 2, disagreements: 1, errors: 1 });
});

test('an observer that throws cannot change the decision; explains are not compared; observe(undefined) stops it', async () => {
  const { pdp, shadow } = await setup(FREEZE);
  pdp.observe(() => {
    throw new Error('boom');
  });
  assert.equal((await pdp.decide(req('alice', 'write', 'record-1'))).decision, 'allow');
  pdp.observe((r, d) => shadow.compare(r, d));
  await pdp.decide(req('alice', 'write', 'record-1', { purpose: 'explain' }));
  await pdp.decide(req('alice', 'write', 'record-1', { purpose: 'search' }));
  await pdp.decide(req('bob', 'write', 'record-1'));
  await compared(shadow, 1);
  pdp.observe(undefined);
  await pdp.decide(req('alice', 'write', 'record-1'));
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
  assert.equal(shadow.stats.compared, 1);
});

test('a live deny only because the audit log failed is not compared', async () => {
  const { pdp, shadow, liveAudit } = await setup(FREEZE);
  liveAudit.failWith = new Error('audit down');
  const d = await pdp.decide(req('alice', 'write', 'record-1'));
  assert.deepEqual([d.decision, d.reasons[0]], ['deny', 'audit-unavailable']);
  liveAudit.failWith = undefined;
  await pdp.decide(req('alice', 'read', 'record-1'));
  await compared(shadow, 1);
  assert.deepEqual(shadow.stats, { compared: 1, disagreements: 0, errors: 0 });
});

test('a permissive candidate does not grant what the live set denies', async () => {
  const { pdp, shadow } = await setup('permit (principal, action, resource);');
  const d = await pdp.decide(req('bob', 'write', 'record-1'));
  assert.equal(d.decision, 'deny');
  await compared(shadow, 1);
  assert.equal(shadow.stats.disagreements, 1);
});
