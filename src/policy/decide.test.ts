import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../kernel/index.ts';
import type { CedarValueJson, EntityJson } from './cedar.ts';
import { Decider } from './decide.ts';
import type { DecisionRequest } from './decide.ts';
import { recordingAuditSink } from './fakes.ts';
import { PolicyEngine } from './policy-set.ts';
import type { PolicySource } from './policy-set.ts';
import { readWritSchema } from './policy-source.ts';
import { memoryEntityLoader } from './ports.ts';
import type { ContextSource, EntityLoader } from './ports.ts';

const schema = await readWritSchema();

const POLICIES = `
@id("http-in-prod-team")
@reason("team-member")
permit (principal in Writ::Team::"payments", action in Writ::Action::"http", resource);

@id("posture-floor")
@reason("posture-below-floor")
forbid (principal, action in Writ::Action::"http", resource)
unless { context has posture && context.posture.score >= 50 };

// Overflows at run time whenever a posture is present: an engine error on demand.
@id("delete-overflows")
permit (principal, action == Writ::Action::"http:DELETE", resource)
when { context has posture && context.posture.score + 9223372036854775807 > 0 };
`;

const source = (text = POLICIES): PolicySource => ({ schema, files: [{ path: 'base.cedar', text }] });

const workload = (id: string, extra: Record<string, CedarValueJson> = {}): EntityJson => ({
  uid: { type: 'Writ::Workload', id },
  attrs: { spiffeId: `spiffe://example.org/${id}`, labels: [], legacy: false, ...extra },
  parents: [{ type: 'Writ::Team', id: 'payments' }],
});
const api: EntityJson = {
  uid: { type: 'Writ::Service', id: 'api' },
  attrs: { internetFacing: false, legacy: false, sensitivity: 'low' },
  parents: [],
};
const ENTITIES = [workload('w1'), api, { uid: { type: 'Writ::Team', id: 'payments' }, attrs: {}, parents: [] }];

function postureSource(scores: Map<string, number | 'throw'>, versionBox = { v: '1' }): ContextSource {
  return {
    name: 'posture',
    key: 'posture',
    required: true,
    version: () => versionBox.v,
    load: async (q) => {
      const s = scores.get(q.principal.id);
      if (s === 'throw') throw new Error('signal store down');
      return s === undefined ? undefined : { score: s, compliant: s >= 50, observedAt: 0 };
    },
  };
}

const GET = (principal = 'w1', resource = 'api'): DecisionRequest => ({
  principal: { type: 'Writ::Workload', id: principal },
  action: 'http:GET',
  resource: { type: 'Writ::Service', id: resource },
  context: { http: { method: 'GET', path: '/v1/pay' } },
});

async function pdpWith(options: {
  text?: string;
  loader?: EntityLoader;
  sources?: ContextSource[];
  timeoutMs?: number;
  monotonicNow?: () => number;
  load?: boolean;
} = {}) {
  const clock = new ManualClock(Date.parse('2026-03-01T00:00:00Z'));
  const audit = recordingAuditSink(clock);
  const engine = new PolicyEngine({ clock });
  if (options.load !== false) {
    const r = await engine.load(source(options.text));
    assert.equal(r.ok, true, JSON.stringify(r.problems));
  }
  const pdp = new Decider({
    engine,
    audit,
    clock,
    entityLoader: options.loader ?? memoryEntityLoader(ENTITIES),
    contextSources: options.sources ?? [postureSource(new Map([['w1', 80]]))],
    // No wall-clock budget on a ManualClock: load on the machine must not turn an allow into a timeout; the timeout rows set their own.
    timeoutMs: options.timeoutMs ?? Infinity,
    ...(options.monotonicNow === undefined ? {} : { monotonicNow: options.monotonicNow }),
  });
  return { pdp, engine, audit, clock };
}

test('an explicit permit with every input present allows, and explains itself', async () => {
  const { pdp, audit, engine } = await pdpWith();
  const d = await pdp.decide({ ...GET(), correlationId: 'c0ffee' });
  assert.equal(d.decision, 'allow');
  assert.deepEqual(d.reasons, ['team-member']);
  assert.deepEqual(d.determiningPolicies, ['http-in-prod-team']);
  assert.equal(d.policyVersion, engine.active?.version);
  assert.match(d.decisionId, /^[0-9a-f-]{36}$/);
  const e = audit.events[0];
  assert.equal(e?.action, 'decision.made');
  assert.equal(e?.outcome, 'success');
  assert.equal(e?.correlationId, 'c0ffee');
  assert.deepEqual(e?.actor, { type: 'workload', id: 'w1' });
  assert.equal(e?.details?.decisionId, d.decisionId);
  assert.equal(e?.details?.policyVersion, d.policyVersion);
  assert.equal(typeof e?.details?.latencyMs, 'number');
});

test('a forbid gives its own reason and is recorded as denied', async () => {
  const { pdp, audit } = await pdpWith({ sources: [postureSource(new Map([['w1', 10]]))] });
  const d = await pdp.decide(GET());
  assert.equal(d.decision, 'deny');
  assert.deepEqual(d.reasons, ['posture-below-floor']);
  assert.deepEqual(d.determiningPolicies, ['posture-floor']);
  assert.equal(audit.events[0]?.outcome, 'denied');
  assert.deepEqual(audit.events[0]?.reasons, ['posture-below-floor']);
});

// Fail closed: every row would be an allow if the failing input were healthy.
const FAIL_CLOSED: { name: string; want: string; run: () => Promise<{ decision: string; reasons: readonly string[] }> }[] = [
  {
    name: 'engine error (policy evaluation overflows)',
    want: 'policy-evaluation-error',
    run: async () => (await pdpWith()).pdp.decide({ ...GET(), action: 'http:DELETE' }),
  },
  {
    name: 'engine error (entity data breaks the schema)',
    want: 'entity-data-invalid',
    run: async () => {
      const bad = { ...workload('w1'), attrs: { spiffeId: 'x', labels: 'not-a-set', legacy: false } };
      return (await pdpWith({ loader: memoryEntityLoader([bad, api]) })).pdp.decide(GET());
    },
  },
  {
    name: 'invalid policy set (nothing ever loaded)',
    want: 'policy-set-unavailable',
    run: async () => {
      const { pdp, engine } = await pdpWith({ load: false });
      const r = await engine.load(source('permit (principal, action, resource) when { resource.nope };'));
      assert.equal(r.ok, false);
      return pdp.decide(GET());
    },
  },
  {
    name: 'missing principal entity',
    want: 'principal-not-found',
    run: async () => (await pdpWith()).pdp.decide(GET('ghost')),
  },
  {
    name: 'missing resource entity',
    want: 'resource-not-found',
    run: async () => (await pdpWith()).pdp.decide(GET('w1', 'nowhere')),
  },
  {
    name: 'missing context source value',
    want: 'posture-unavailable',
    run: async () => (await pdpWith({ sources: [postureSource(new Map())] })).pdp.decide(GET()),
  },
  {
    name: 'context source failing',
    want: 'posture-unavailable',
    run: async () => (await pdpWith({ sources: [postureSource(new Map([['w1', 'throw']]))] })).pdp.decide(GET()),
  },
  {
    name: 'timeout while gathering data',
    want: 'decision-timeout',
    run: async () => {
      const hanging: EntityLoader = { version: () => '1', load: () => new Promise(() => {}) };
      return (await pdpWith({ loader: hanging, timeoutMs: 20 })).pdp.decide(GET());
    },
  },
  {
    name: 'timeout overrun during evaluation',
    want: 'decision-timeout',
    run: async () => {
      let t = 0;
      // Each reading of the monotonic clock is 60 ms later than the last.
      return (await pdpWith({ timeoutMs: 100, monotonicNow: () => (t += 60) })).pdp.decide(GET());
    },
  },
  {
    name: 'unknown action',
    want: 'unknown-action',
    run: async () => (await pdpWith()).pdp.decide({ ...GET(), action: 'http:TELEPORT' }),
  },
  {
    name: 'unknown principal type',
    want: 'unknown-principal-type',
    run: async () => (await pdpWith()).pdp.decide({ ...GET(), principal: { type: 'Writ::Robot', id: 'w1' } }),
  },
  {
    name: 'malformed request',
    want: 'request-invalid',
    run: async () => (await pdpWith()).pdp.decide({ ...GET(), principal: { type: 'Writ::Workload' } } as unknown as DecisionRequest),
  },
  {
    name: 'audit sink down',
    want: 'audit-unavailable',
    run: async () => {
      const { pdp, audit } = await pdpWith();
      audit.failWith = new Error('disk full');
      return pdp.decide(GET());
    },
  },
];

for (const row of FAIL_CLOSED) {
  test(`fail closed: ${row.name} → deny ${row.want}`, async () => {
    const d = await row.run();
    assert.equal(d.decision, 'deny');
    assert.equal(d.reasons[0], row.want);
  });
}

test('the healthy twin of the fail-closed rows allows (the table is not vacuous)', async () => {
  const d = await (await pdpWith()).pdp.decide(GET());
  assert.equal(d.decision, 'allow');
});

test('context members the schema does not declare are dropped at every depth, not a context-invalid deny', async () => {
  const { pdp } = await pdpWith();
  const d = await pdp.decide({
    ...GET(),
    context: { http: { method: 'GET', path: '/v1/pay', trace: 'x' }, mcp: { server: 's', tool: '', arguments: { path: '/etc' } }, unknownTop: 1 } as never,
  });
  assert.equal(d.decision, 'allow', JSON.stringify(d.reasons));
  assert.deepEqual(d.reasons, ['team-member']);
});

test('a context source wins over the caller: the enforcement point cannot supply posture', async () => {
  const { pdp } = await pdpWith({ sources: [postureSource(new Map([['w1', 10]]))] });
  const d = await pdp.decide({ ...GET(), context: { posture: { score: 99, compliant: true, observedAt: 0 } } });
  assert.equal(d.decision, 'deny');
  assert.deepEqual(d.reasons, ['posture-below-floor']);
});

test('the cache answers repeats, and never outlives a policy change', async () => {
  const { pdp, engine } = await pdpWith();
  const first = await pdp.decide(GET());
  const second = await pdp.decide(GET());
  assert.equal(first.cached, false);
  assert.equal(second.cached, true);
  assert.equal(second.decision, 'allow');
  assert.notEqual(second.decisionId, first.decisionId);

  // Same request, new policy set that drops the permit: the cache must not answer.
  const r = await engine.load(source(POLICIES.replace('permit (principal in Writ::Team::"payments"', 'permit (principal in Writ::Team::"billing"')));
  assert.equal(r.ok, true);
  assert.equal(pdp.cacheSize, 0);
  const third = await pdp.decide(GET());
  assert.equal(third.cached, false);
  assert.equal(third.decision, 'deny');
  assert.equal(third.policyVersion, engine.active?.version);
  assert.notEqual(third.policyVersion, first.policyVersion);
});

test('the cache keys on data versions: a new posture version re-decides', async () => {
  const scores = new Map<string, number | 'throw'>([['w1', 80]]);
  const box = { v: '1' };
  const { pdp } = await pdpWith({ sources: [postureSource(scores, box)] });
  assert.equal((await pdp.decide(GET())).decision, 'allow');
  scores.set('w1', 5);
  box.v = '2';
  const d = await pdp.decide(GET());
  assert.equal(d.cached, false);
  assert.equal(d.decision, 'deny');
});

test('a port without a version turns the cache off', async () => {
  const base = memoryEntityLoader(ENTITIES);
  const unversioned: EntityLoader = { version: () => undefined, load: (u) => base.load(u) };
  const { pdp } = await pdpWith({ loader: unversioned });
  await pdp.decide(GET());
  assert.equal((await pdp.decide(GET())).cached, false);
  assert.equal(pdp.cacheSize, 0);
});

test('sliced and whole-set evaluation agree on every request', async () => {
  const { engine, audit, clock } = await pdpWith();
  const common = { engine, audit, clock, entityLoader: memoryEntityLoader([...ENTITIES, workload('w2', {}), { ...workload('w3'), parents: [] }]), contextSources: [postureSource(new Map([['w1', 80], ['w2', 20], ['w3', 90]]))], cacheEntries: 0, timeoutMs: Infinity };
  const sliced = new Decider(common);
  const whole = new Decider({ ...common, slicing: false });
  for (const p of ['w1', 'w2', 'w3']) {
    for (const action of ['http:GET', 'http:POST', 'http:DELETE', 'tools/call']) {
      const req = { ...GET(p), action };
      const a = await sliced.decide(req);
      const b = await whole.decide(req);
      assert.equal(a.decision, b.decision, `${p} ${action}`);
      assert.deepEqual(a.reasons, b.reasons, `${p} ${action}`);
    }
  }
});

test('allow sampling skips some allow records but never a deny', async () => {
  const clock = new ManualClock(0);
  const audit = recordingAuditSink(clock);
  const engine = new PolicyEngine({ clock });
  await engine.load(source());
  const pdp = new Decider({ engine, audit, clock, entityLoader: memoryEntityLoader(ENTITIES), contextSources: [postureSource(new Map([['w1', 80]]))], allowSampleRate: 0, cacheEntries: 0, timeoutMs: Infinity });
  assert.equal((await pdp.decide(GET())).decision, 'allow');
  assert.equal((await pdp.decide(GET('ghost'))).decision, 'deny');
  assert.deepEqual(audit.events.map((e) => e.outcome), ['denied']);
});

test('options are checked once, at construction', async () => {
  const { engine, audit, clock } = await pdpWith();
  assert.throws(() => new Decider({ engine, audit, clock, timeoutMs: 0 }), { name: 'TypeError', message: 'timeoutMs must be > 0' });
  assert.throws(() => new Decider({ engine, audit, clock, allowSampleRate: 2 }), { name: 'TypeError', message: 'allowSampleRate must be within [0, 1]' });
  const bad = { ...postureSource(new Map()), name: 'Posture' };
  assert.throws(() => new Decider({ engine, audit, clock, contextSources: [bad] }), { name: 'TypeError', message: 'context source name Posture must be kebab-case' });
});

test('timeoutMs Infinity sets no wall-clock budget: a slow data source still gets its answer', async () => {
  const slow: EntityLoader = {
    version: () => '1',
    load: async (uids) => {
      await new Promise((r) => setTimeout(r, 250));
      return memoryEntityLoader(ENTITIES).load(uids);
    },
  };
  const { pdp } = await pdpWith({ loader: slow, timeoutMs: Infinity });
  const d = await pdp.decide(GET());
  assert.equal(d.decision, 'allow');
  assert.deepEqual(d.reasons, ['team-member']);
});
