// The AuthZEN 1.0 certification fixture (alice/bob, record-1/record-2,
// read/write/delete with `soft`): the eight mandated decisions, through the
// AuthZEN protocol module and decide(), against examples/authzen-certification/.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { ManualClock } from '../src/kernel/index.ts';
import { Decider, PolicyEngine, evaluate, evaluations, readPolicyFolder, recordingAuditSink } from '../src/policy/index.ts';

const clock = new ManualClock(Date.parse('2026-03-01T00:00:00Z'));
const engine = new PolicyEngine({ clock });
const loaded = await engine.load(await readPolicyFolder(fileURLToPath(new URL('../examples/authzen-certification', import.meta.url))));
const pdp = new Decider({ engine, audit: recordingAuditSink(clock), clock, timeoutMs: Infinity });
const decide = pdp.decide.bind(pdp);
const info = engine.active?.schemaInfo;

const alice = { type: 'user', id: 'alice' };
const bob = { type: 'user', id: 'bob' };
const record1 = { type: 'record', id: 'record-1' };

const MANDATED: { rule: number; body: Record<string, unknown>; want: boolean }[] = [
  { rule: 1, body: { subject: alice, action: { name: 'read' }, resource: record1 }, want: true },
  { rule: 2, body: { subject: alice, action: { name: 'write' }, resource: record1 }, want: true },
  { rule: 3, body: { subject: bob, action: { name: 'read' }, resource: record1 }, want: true },
  { rule: 4, body: { subject: bob, action: { name: 'write' }, resource: record1 }, want: false },
  { rule: 5, body: { subject: alice, action: { name: 'write' }, resource: { type: 'record', id: 'record-2', properties: { status: 'archived' } } }, want: false },
  { rule: 6, body: { subject: { ...bob, properties: { role: 'admin' } }, action: { name: 'write' }, resource: { type: 'record', id: 'record-2', properties: { status: 'archived' } } }, want: true },
  { rule: 7, body: { subject: alice, action: { name: 'delete', properties: { soft: true } }, resource: record1 }, want: true },
  { rule: 8, body: { subject: alice, action: { name: 'delete', properties: { soft: false } }, resource: record1 }, want: false },
];

test('the fixture loads', () => {
  assert.equal(loaded.ok, true, JSON.stringify(loaded.problems));
  assert.equal(engine.active?.policies.length, 4);
});

for (const m of MANDATED) {
  test(`mandated decision ${m.rule} is ${m.want}`, async () => {
    assert.deepEqual(await evaluate(decide, info, m.body), { decision: m.want });
  });
}

test('the same eight decisions come back from one batch, in order', async () => {
  const got = await evaluations(decide, info, { evaluations: MANDATED.map((m) => m.body) });
  assert.deepEqual(got, { evaluations: MANDATED.map((m) => ({ decision: m.want })) });
});

test('optional context, extra properties and unknown fields do not change a decision', async () => {
  const withContext = { subject: alice, action: { name: 'read' }, resource: record1, context: { time: '2025-06-27T18:03-07:00', ip: '192.168.1.1' } };
  assert.deepEqual(await evaluate(decide, info, withContext), { decision: true });
  const extra = {
    subject: { ...alice, properties: { department: 'Sales', role: 'manager' } },
    action: { name: 'read', properties: { method: 'GET' } },
    resource: { ...record1, properties: { status: 'active', owner: 'bob' } },
  };
  assert.deepEqual(await evaluate(decide, info, extra), { decision: true });
  const unknown = { subject: alice, action: { name: 'read' }, resource: record1, foo: 'bar', futureField: { nested: true } };
  assert.deepEqual(await evaluate(decide, info, unknown), { decision: true });
});

test('identical requests give identical results', async () => {
  const body = MANDATED[1]?.body;
  const a = await evaluate(decide, info, body);
  const b = await evaluate(decide, info, body);
  assert.deepEqual(a, b);
});
