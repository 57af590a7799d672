// The PIP adapters: registered identities as Cedar entities, posture and risk
// signals as context, versions that keep the decision cache honest, and
// failures that deny with a reason instead of crashing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../kernel/index.ts';
import { clockContextSource, registryEntityLoader, signalContextSources } from './context-sources.ts';
import type { IdentityDirectory, RegisteredNode, RegisteredWorkload, SignalReader } from './context-sources.ts';
import { Decider } from './decide.ts';
import { recordingAuditSink } from './fakes.ts';
import { PolicyEngine } from './policy-set.ts';
import { readWritSchema } from './policy-source.ts';

const clock = new ManualClock(Date.parse('2026-01-01T00:00:00Z'));
const API = 'spiffe://writ.local/payments/api';
const NODE = 'spiffe://writ.local/writ/node/n1';

function directory(workloads: RegisteredWorkload[], nodes: RegisteredNode[]) {
  const calls = { n: 0 };
  const d: IdentityDirectory & { fail: boolean; calls: typeof calls } = {
    fail: false,
    calls,
    workloads: async () => {
      calls.n += 1;
      if (d.fail) throw new Error('store down');
      return workloads;
    },
    nodes: async () => nodes,
  };
  return d;
}

const apiEntry: RegisteredWorkload = { spiffeId: API, environment: 'prod', owner: { team: 'payments', contact: 'ana@example.com' }, selectors: ['k8s:ns:payments'], nodeSpiffeId: NODE };
const node: RegisteredNode = { spiffeId: NODE, attestationMethod: 'join_token', selectors: ['join_token:id:abc'] };

test('a registration entry becomes a Workload (and an Agent) in its environment and team, with owner, labels, node and attestation method', async () => {
  const loader = registryEntityLoader(directory([apiEntry], [node]), { clock });
  const { entities } = await loader.load([{ type: 'Writ::Workload', id: API }, { type: 'Writ::Node', id: NODE }, { type: 'Writ::Owner', id: 'ana@example.com' }, { type: 'Writ::Agent', id: API }]);
  assert.deepEqual(entities, [
    {
      uid: { type: 'Writ::Workload', id: API },
      attrs: { spiffeId: API, labels: ['k8s:ns:payments'], owner: { __entity: { type: 'Writ::Owner', id: 'ana@example.com' } }, legacy: false, node: { __entity: { type: 'Writ::Node', id: NODE } }, attestationMethod: 'join_token' },
      parents: [{ type: 'Writ::Environment', id: 'prod' }, { type: 'Writ::Team', id: 'payments' }],
    },
    { uid: { type: 'Writ::Node', id: NODE }, attrs: { attestationMethod: 'join_token', labels: ['join_token:id:abc'] }, parents: [] },
    { uid: { type: 'Writ::Owner', id: 'ana@example.com' }, attrs: { active: true, email: 'ana@example.com' }, parents: [{ type: 'Writ::Team', id: 'payments' }] },
    {
      uid: { type: 'Writ::Agent', id: API },
      attrs: { spiffeId: API, labels: ['k8s:ns:payments'], owner: { __entity: { type: 'Writ::Owner', id: 'ana@example.com' } } },
      parents: [{ type: 'Writ::Environment', id: 'prod' }, { type: 'Writ::Team', id: 'payments' }],
    },
  ]);
  // An entry on a node that is gone (evicted) has no node attribute; the directory lists only live nodes.
  const orphan = registryEntityLoader(directory([apiEntry], []), { clock });
  const [w] = (await orphan.load([{ type: 'Writ::Workload', id: API }])).entities;
  assert.equal(w?.attrs?.node, undefined);
  assert.deepEqual(await orphan.list?.('Writ::Workload'), [{ type: 'Writ::Workload', id: API }]);
});

test('the snapshot names its version, is re-read on refresh(), in the background when old or on a miss, and survives a failing store', async () => {
  const dir = directory([apiEntry], [node]);
  const loader = registryEntityLoader(dir, { clock, refreshMs: 2000, missRefreshMs: 250 });
  assert.equal(loader.version(), undefined, 'no snapshot yet: nothing to vouch for');
  await loader.load([{ type: 'Writ::Workload', id: API }]);
  assert.equal(loader.version(), 'registry-1');
  await loader.load([{ type: 'Writ::Workload', id: API }]);
  assert.equal(dir.calls.n, 1);
  // A miss re-reads only once the snapshot is 250 ms old.
  await loader.load([{ type: 'Writ::Workload', id: 'spiffe://writ.local/new' }]);
  assert.equal(dir.calls.n, 1);
  clock.advance(250);
  // The miss itself is answered from the snapshot (not found); the re-read runs beside it.
  assert.deepEqual((await loader.load([{ type: 'Writ::Workload', id: 'spiffe://writ.local/new' }])).entities, []);
  for (let i = 0; i < 20 && loader.version() !== 'registry-2'; i++) await new Promise((r) => setImmediate(r));
  assert.equal(dir.calls.n, 2);
  assert.equal(loader.version(), 'registry-2');
  loader.refresh();
  assert.equal(loader.version(), undefined);
  await loader.load([]);
  assert.equal(loader.version(), 'registry-3');
  clock.advance(2000);
  assert.equal(loader.version(), undefined, 'stale: no caching on it');
  // The store fails: the last snapshot keeps answering, and nothing is vouched for.
  dir.fail = true;
  assert.equal((await loader.load([{ type: 'Writ::Workload', id: API }])).entities.length, 1);
  assert.equal(loader.version(), undefined);
  // No snapshot at all and a failing store: the load rejects (the decision is then an engine-error deny).
  const cold = directory([apiEntry], [node]);
  cold.fail = true;
  await assert.rejects(registryEntityLoader(cold, { clock }).load([{ type: 'Writ::Workload', id: API }]), /store down/);
});

// ---- posture and risk, through the Decider --------------------------------

const POLICIES = `
@id("prod-calls") @reason("prod-workload")
permit (principal in Writ::Environment::"prod", action in Writ::Action::"http", resource);
@id("posture-floor") @reason("posture-below-floor")
forbid (principal, action in Writ::Action::"http", resource) unless { context has posture && context.posture.compliant && context.posture.score >= 60 };
@id("node-posture") @reason("node-posture-failing")
forbid (principal, action in Writ::Action::"http", resource) when { context has nodePosture && !context.nodePosture.compliant };
@id("risk") @reason("risk-too-high")
forbid (principal, action in Writ::Action::"http:write", resource) when { context has risk && context.risk.score >= 75 };
`;

async function pdpWith(reader: SignalReader, version: () => string | undefined) {
  const engine = new PolicyEngine({ clock });
  const entities = JSON.stringify([{ uid: { type: 'Writ::Service', id: 'api' }, attrs: { internetFacing: false, legacy: false, sensitivity: 'low' }, parents: [] }]);
  assert.equal((await engine.load({ schema: await readWritSchema(), files: [{ path: 'p.cedar', text: POLICIES }], entities: { path: 'entities.json', text: entities } })).ok, true);
  const loader = registryEntityLoader(directory([apiEntry], [node]), { clock, refreshMs: Infinity });
  return new Decider({ engine, audit: recordingAuditSink(clock), clock, timeoutMs: Infinity, entityLoader: loader, contextSources: [clockContextSource(clock), ...signalContextSources(reader, version)] });
}

function signals() {
  const posture = new Map<string, { score: number; failingChecks: string[]; at: string } | 'throw'>();
  const risk = new Map<string, { level: string; at: string }>();
  const reader: SignalReader = {
    posture: async (s) => {
      const p = posture.get(s);
      if (p === 'throw') throw new Error('signal store down');
      return p;
    },
    risk: async (s) => risk.get(s),
  };
  return { posture, risk, reader };
}

const GET = { principal: { type: 'Writ::Workload', id: API }, action: 'http:GET', resource: { type: 'Writ::Service', id: 'api' } };
const PUT = { ...GET, action: 'http:PUT' };
const AT = '2026-01-01T00:00:00.000Z';

test('posture of the workload and of its node, and risk, come from the signals and decide', async () => {
  const s = signals();
  let seen = 0;
  const pdp = await pdpWith(s.reader, () => `v${seen}`);
  assert.deepEqual((await pdp.decide(GET)).reasons, ['posture-below-floor'], 'no signal: the policy says what absence means');
  s.posture.set(API, { score: 90, failingChecks: [], at: AT });
  seen++;
  assert.equal((await pdp.decide(GET)).decision, 'allow');
  s.posture.set(NODE, { score: 40, failingChecks: ['kernel-patch'], at: AT });
  seen++;
  assert.deepEqual((await pdp.decide(GET)).reasons, ['node-posture-failing']);
  s.posture.set(NODE, { score: 95, failingChecks: [], at: AT });
  s.risk.set(API, { level: 'high', at: AT });
  seen++;
  assert.equal((await pdp.decide(GET)).decision, 'allow');
  assert.deepEqual((await pdp.decide(PUT)).reasons, ['risk-too-high']);
});

test('a signal store that fails is a deny with a reason, not a crash and not an allow', async () => {
  const s = signals();
  const pdp = await pdpWith(s.reader, () => 'v');
  s.posture.set(API, 'throw');
  const d = await pdp.decide(GET);
  assert.equal(d.decision, 'deny');
  assert.deepEqual(d.reasons, ['posture-unavailable']);
  assert.deepEqual(d.diagnostics, ['posture: signal store down']);
});

test('the decision cache: a posture drop with a version bump is seen at once; the version is what keeps it honest', async () => {
  const s = signals();
  let seen = 0;
  const pdp = await pdpWith(s.reader, () => `v${seen}`);
  s.posture.set(API, { score: 90, failingChecks: [], at: AT });
  // The first decision reads the registry (no version before that), the second is cached, the third hits.
  assert.equal((await pdp.decide(GET)).decision, 'allow');
  assert.equal((await pdp.decide(GET)).cached, false);
  const hit = await pdp.decide(GET);
  assert.equal(hit.cached, true);
  assert.equal(hit.decision, 'allow');
  // Data changed but nobody said so: the cache would still answer (this is why the server counts bus events).
  s.posture.set(API, { score: 20, failingChecks: ['disk-encryption'], at: AT });
  assert.equal((await pdp.decide(GET)).cached, true);
  // The server's bus subscription bumps the version: the stale allow is gone.
  seen++;
  const after = await pdp.decide(GET);
  assert.equal(after.cached, false);
  assert.equal(after.decision, 'deny');
  assert.deepEqual(after.reasons, ['posture-below-floor']);
});
