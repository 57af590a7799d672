// Blast radius over the example NHI policy set, with the answers worked out by
// hand from examples/policies (base.cedar, guardrails.cedar, entities.json).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { ManualClock } from '../kernel/index.ts';
import { analyzeAccess } from './analyze.ts';
import { clockContextSource } from './context-sources.ts';
import { Decider } from './decide.ts';
import { recordingAuditSink } from './fakes.ts';
import { PolicyEngine } from './policy-set.ts';
import { readPolicyFolder } from './policy-source.ts';
import { memoryEntityLoader } from './ports.ts';

const EXAMPLE = fileURLToPath(new URL('../../examples/policies', import.meta.url));
const clock = new ManualClock(Date.parse('2026-01-01T00:00:00Z'));
const engine = new PolicyEngine({ clock });
assert.equal((await engine.load(await readPolicyFolder(EXAMPLE))).ok, true);
const audit = recordingAuditSink(clock);
const pdp = new Decider({ engine, audit, clock, timeoutMs: Infinity, contextSources: [clockContextSource(clock)] });
const decide = (r: Parameters<Decider['decide']>[0]) => pdp.decide(r);
const GOOD = { posture: { score: 90, compliant: true, observedAt: 1767225600 } };

const W = (id: string) => ({ type: 'Writ::Workload', id });
const S = (id: string) => ({ type: 'Writ::Service', id });
const HTTP = ['http:DELETE', 'http:GET', 'http:HEAD', 'http:OPTIONS', 'http:PATCH', 'http:POST', 'http:PUT'];
const READS = ['http:GET', 'http:HEAD', 'http:OPTIONS'];

const rows = (r: Awaited<ReturnType<typeof analyzeAccess>>) => r.findings.map((f) => `${f.principal.id} ${f.action} ${f.resource.id} <- ${f.determiningPolicies.join('+')}`);

test('what the prod ledger can reach: every HTTP verb and token exchange on the prod payments API, nothing in stage', async () => {
  const r = await analyzeAccess({ decide, set: engine.active }, { principal: W('ledger') }, { context: GOOD });
  assert.deepEqual(rows(r), [
    ...HTTP.map((a) => `ledger ${a} payments-api <- payments-team-calls-payments-api`),
    'ledger token/exchange payments-api <- payments-team-token-exchange',
  ]);
  // Workload actions × the entities of their resource types: http 7×3 services, tools/call 2 tools,
  // token/exchange 3 services, credential/issue 3 services + 3 workloads + 1 agent.
  assert.equal(r.decided, 33);
  assert.equal(r.denied, 25);
  assert.equal(r.truncated, false);
  assert.equal(r.policyVersion, engine.active?.version);
});

test('the legacy batch job reaches the internet-facing API read-only; the stage ledger only stage', async () => {
  const legacy = await analyzeAccess({ decide, set: engine.active }, { principal: W('old-batch') }, { context: GOOD });
  assert.deepEqual(rows(legacy), [
    ...READS.map((a) => `old-batch ${a} payments-api <- payments-team-calls-payments-api`),
    'old-batch token/exchange payments-api <- payments-team-token-exchange',
  ]);
  const stage = await analyzeAccess({ decide, set: engine.active }, { principal: W('ledger-stage') }, { context: GOOD });
  assert.deepEqual(rows(stage), HTTP.map((a) => `ledger-stage ${a} payments-api-stage <- payments-team-calls-payments-api-stage`));
});

test('who can reach the prod payments API: the ledger fully, the legacy job read-only, nobody from stage, no agent', async () => {
  const r = await analyzeAccess({ decide, set: engine.active }, { resource: S('payments-api') }, { context: GOOD });
  const want = [
    ...HTTP.flatMap((a) => (READS.includes(a) ? [`ledger ${a}`, `old-batch ${a}`] : [`ledger ${a}`])),
    'ledger token/exchange',
    'old-batch token/exchange',
  ].map((x) => `${x.split(' ')[0]} ${x.split(' ')[1]} payments-api <- ${x.endsWith('token/exchange') ? 'payments-team-token-exchange' : 'payments-team-calls-payments-api'}`);
  assert.deepEqual(rows(r).sort(), want.sort());
  // Service actions (7 http, token/exchange, credential/issue) × 3 workloads + 1 agent.
  assert.equal(r.decided, 36);
});

test('without a posture signal the posture floor leaves nothing reachable', async () => {
  const r = await analyzeAccess({ decide, set: engine.active }, { principal: W('ledger') });
  assert.deepEqual(r.findings, []);
  assert.equal(r.denied, r.decided);
});

test('candidates from a listing loader count, maxDecisions truncates, and decisions are audited as analyses', async () => {
  const extra = memoryEntityLoader([{ uid: W('ledger-2'), attrs: { spiffeId: 'spiffe://example.org/ledger-2', labels: [], legacy: false }, parents: [{ type: 'Writ::Team', id: 'payments' }, { type: 'Writ::Environment', id: 'prod' }] }]);
  const withLoader = new Decider({ engine, audit, clock, timeoutMs: Infinity, entityLoader: extra, contextSources: [clockContextSource(clock)] });
  const r = await analyzeAccess({ decide: (q) => withLoader.decide(q), set: engine.active, loaders: [extra] }, { resource: S('payments-api') }, { context: GOOD });
  assert.equal(rows(r).filter((x) => x.startsWith('ledger-2 ')).length, 8);
  const before = audit.events.length;
  const cut = await analyzeAccess({ decide, set: engine.active }, { principal: W('ledger') }, { context: GOOD, maxDecisions: 5 });
  assert.equal(cut.truncated, true);
  assert.equal(cut.decided, 5);
  const recorded = audit.events.slice(before);
  assert.equal(recorded.length, 5);
  assert.ok(recorded.every((e) => e.details?.purpose === 'analyze'));
});

test('no active set: an empty report', async () => {
  const r = await analyzeAccess({ decide, set: undefined }, { principal: W('ledger') });
  assert.deepEqual(r, { policyVersion: null, findings: [], decided: 0, denied: 0, truncated: false });
});
