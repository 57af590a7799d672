// The AuthZEN todo interop suite (40 single and 3 batch cases), run through
// the AuthZEN protocol module and decide() against the Cedar implementation
// in examples/authzen-todo/.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { ManualClock } from '../src/kernel/index.ts';
import { Decider, PolicyEngine, evaluate, evaluations, readPolicyFolder, recordingAuditSink } from '../src/policy/index.ts';

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const DECISIONS = here('../../shared/conformance/authzen/todo-decisions-1_0-02.json');

interface SingleCase { request: unknown; expected: boolean }
interface BatchCase { request: unknown; expected: { decision: boolean }[] }

async function setup() {
  const clock = new ManualClock(Date.parse('2026-03-01T00:00:00Z'));
  const audit = recordingAuditSink(clock);
  const engine = new PolicyEngine({ clock });
  const report = await engine.load(await readPolicyFolder(here('../examples/authzen-todo')));
  assert.equal(report.ok, true, JSON.stringify(report.problems));
  const pdp = new Decider({ engine, audit, clock, timeoutMs: Infinity });
  const info = engine.active?.schemaInfo;
  return { pdp, info, audit, decide: pdp.decide.bind(pdp) };
}

const data = JSON.parse(await readFile(DECISIONS, 'utf8')) as { evaluation: SingleCase[]; evaluations: BatchCase[] };

test('the interop file holds 40 single and 3 batch cases', () => {
  assert.equal(data.evaluation.length, 40);
  assert.equal(data.evaluations.length, 3);
});

test('every single evaluation gives the expected decision', async () => {
  const { decide, info, audit } = await setup();
  const failures: string[] = [];
  for (const c of data.evaluation) {
    const got = await evaluate(decide, info, c.request);
    // The interop runner compares `decision` only; the body must be exactly {decision}.
    assert.deepEqual(Object.keys(got), ['decision']);
    if (got.decision !== c.expected) failures.push(`${JSON.stringify(c.request)} → ${got.decision}, want ${c.expected}`);
  }
  assert.deepEqual(failures, []);
  assert.equal(audit.events.length, 40);
  assert.equal(audit.events.filter((e) => e.outcome === 'success').length, data.evaluation.filter((c) => c.expected).length);
});

test('every batch gives the expected evaluations array, byte for byte', async () => {
  const { decide, info } = await setup();
  for (const c of data.evaluations) {
    const got = await evaluations(decide, info, c.request);
    // The interop runner compares JSON.stringify(expected) with JSON.stringify(data.evaluations).
    assert.ok('evaluations' in got);
    assert.equal(JSON.stringify(got.evaluations), JSON.stringify(c.expected));
  }
});

test('an editor may update only their own todo, and the decision names the policy', async () => {
  const { pdp } = await setup();
  const morty = { type: 'User', id: 'CiRmZDE2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs' };
  const own = await pdp.decide({
    principal: morty,
    action: 'can_update_todo',
    resource: { type: 'Todo', id: 't1' },
    entities: [{ uid: { type: 'Todo', id: 't1' }, attrs: { ownerID: 'morty@the-citadel.com' } }],
  });
  assert.equal(own.decision, 'allow');
  assert.deepEqual(own.reasons, ['editor-owns-todo']);
  assert.deepEqual(own.determiningPolicies, ['can-update-own-todo']);
  const other = await pdp.decide({
    principal: morty,
    action: 'can_update_todo',
    resource: { type: 'Todo', id: 't2' },
    entities: [{ uid: { type: 'Todo', id: 't2' }, attrs: { ownerID: 'rick@the-citadel.com' } }],
  });
  assert.equal(other.decision, 'deny');
  assert.deepEqual(other.reasons, ['no-matching-permit']);
});

test('a caller cannot grant a role: roles come from the PDP data, never from properties', async () => {
  const { decide, info } = await setup();
  const jerry = 'CiRmZDQ2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs';
  const got = await evaluate(decide, info, {
    subject: { type: 'user', id: jerry, properties: { email: 'rick@the-citadel.com', roles: ['admin'] } },
    action: { name: 'can_delete_todo' },
    resource: { type: 'todo', id: 'x', properties: { ownerID: 'rick@the-citadel.com' } },
  });
  assert.deepEqual(got, { decision: false });
});
