// Context assembly through a running server: a real node attests, an entry is
// registered on it, and posture and risk signals sent to the admin API change
// the PDP's answers at once, with the decision cache never serving a stale
// allow. Policies: the example NHI set (examples/policies).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { startTestServer } from '../support/server.ts';
import type { TestServer } from '../support/server.ts';
import { attestWithJoinToken } from '../identity/support.ts';

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const EXAMPLE = here('../../examples/policies');
const API = 'spiffe://writ.local/payments/api';

describe('PIP: registration entries and signals feed the PDP', () => {
  let s: TestServer;
  let pep: string;
  let nodeId: string;
  const subject = { type: 'workload', id: API };
  const paymentsApi = { type: 'service', id: 'payments-api' };
  const evaluate = async (action: string, resource = paymentsApi, sub = subject) => {
    const r = await s.call('POST', '/access/v1/evaluation', { token: pep, body: { subject: sub, action: { name: action }, resource } });
    assert.equal(r.status, 200, r.text);
    return { decision: r.json.decision as boolean, correlationId: r.headers.get('x-correlation-id') ?? '' };
  };
  const explain = async (action: string, resource = paymentsApi, sub = subject) => {
    const r = await s.call('POST', '/admin/v1/policy/explain', { body: { subject: sub, action: { name: action }, resource } });
    assert.equal(r.status, 200, r.text);
    return r.json as { decision: string; reasons: string[] };
  };
  const signal = async (body: Record<string, unknown>) => {
    const r = await s.call('POST', '/admin/v1/signals', { body });
    assert.equal(r.status, 201, r.text);
  };
  const posture = (subjectId: string, score: number, failingChecks: string[] = [], subjectKind = 'workload') => signal({ type: 'posture-changed', subject: subjectId, subjectKind, score, failingChecks });

  before(async () => {
    s = await startTestServer({ flags: { 'policy.dir': EXAMPLE } });
    pep = (await s.call('POST', '/admin/v1/principals', { body: { name: 'pip-pep', role: 'pep' } })).json.token as string;
    const node = await attestWithJoinToken(s);
    nodeId = node.spiffeId;
    const e = await s.call('POST', '/admin/v1/entries', {
      body: { spiffeId: API, parentId: nodeId, selectors: ['unix:uid:1000'], environment: 'prod', owner: { team: 'payments', contact: 'ana@example.com' } },
    });
    assert.equal(e.status, 201, e.text);
  });
  after(async () => {
    await s.stop();
  });

  it('the registered workload is in prod and in the payments team; without a posture signal the floor denies', async () => {
    assert.deepEqual((await explain('http:GET')).reasons, ['posture-below-floor']);
    assert.equal((await evaluate('http:GET')).decision, false);
    // Its registration puts it in prod: stage is out of reach whatever its posture.
    assert.deepEqual((await explain('http:GET', { type: 'service', id: 'payments-api-stage' })).reasons.includes('prod-to-stage-denied'), true);
  });

  it('a good posture signal allows; a posture drop denies the very next request, though the allow was cached', async () => {
    await posture(API, 92);
    const ok = await explain('http:GET');
    assert.deepEqual([ok.decision, ok.reasons], ['allow', ['team-owns-service']]);
    // Ask until the decision cache answers (the clock source's version moves each second, so it may take a few).
    let cachedSeen = false;
    for (let i = 0; i < 50 && !cachedSeen; i++) {
      const { decision, correlationId } = await evaluate('http:GET');
      assert.equal(decision, true);
      const events = (await s.call('GET', `/admin/v1/audit/events?correlationId=${encodeURIComponent(correlationId)}&limit=10`)).json.events as { action: string; details: { cached?: boolean } }[];
      cachedSeen = events.some((e) => e.action === 'decision.made' && e.details.cached === true);
    }
    assert.ok(cachedSeen, 'a cached allow was served');
    await posture(API, 30, ['disk-encryption']);
    assert.equal((await evaluate('http:GET')).decision, false);
    assert.deepEqual((await explain('http:GET')).reasons, ['posture-below-floor']);
  });

  it('the posture of the workload\'s node counts too', async () => {
    await posture(API, 95);
    assert.equal((await evaluate('token/exchange')).decision, true);
    await posture(nodeId, 35, ['kernel-patch'], 'node');
    assert.equal((await evaluate('token/exchange')).decision, false);
    assert.deepEqual((await explain('token/exchange')).reasons, ['node-posture-failing']);
    await posture(nodeId, 99, [], 'node');
    assert.equal((await evaluate('token/exchange')).decision, true);
  });

  it('a high risk signal stops writes but not reads', async () => {
    assert.equal((await evaluate('http:POST')).decision, true);
    await signal({ type: 'risk-changed', subject: API, level: 'high' });
    assert.equal((await evaluate('http:POST')).decision, false);
    assert.deepEqual((await explain('http:POST')).reasons, ['risk-too-high']);
    assert.equal((await evaluate('http:GET')).decision, true);
    await signal({ type: 'risk-changed', subject: API, level: 'low' });
    assert.equal((await evaluate('http:POST')).decision, true);
  });

  it('missing data is a deny reason: an unregistered workload, an unknown service', async () => {
    // AuthZEN always names the entity, so an unknown one arrives without the attributes the schema requires.
    assert.deepEqual((await explain('http:GET', paymentsApi, { type: 'workload', id: 'spiffe://writ.local/nobody' })).reasons, ['entity-data-invalid']);
    assert.deepEqual((await explain('http:GET', { type: 'service', id: 'no-such-service' })).reasons, ['entity-data-invalid']);
    assert.equal((await evaluate('http:GET', { type: 'service', id: 'no-such-service' })).decision, false);
  });

  it('a workload registered after the first decisions is seen without waiting for a refresh', async () => {
    const late = 'spiffe://writ.local/payments/late';
    const e = await s.call('POST', '/admin/v1/entries', { body: { spiffeId: late, parentId: nodeId, selectors: ['unix:uid:1001'], environment: 'prod', owner: { team: 'payments', contact: 'ana@example.com' } } });
    assert.equal(e.status, 201, e.text);
    await posture(late, 90);
    // The miss re-read happens once the snapshot is 250 ms old: poll for it.
    let reasons: string[] = [];
    for (let i = 0; i < 100; i++) {
      reasons = (await explain('http:GET', paymentsApi, { type: 'workload', id: late })).reasons;
      if (!reasons.includes('principal-not-found')) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.deepEqual(reasons, ['team-owns-service']);
  });

  it('search and analysis see the registered workloads as candidates', async () => {
    const r = await s.call('POST', '/access/v1/search/subject', { token: pep, body: { subject: { type: 'workload' }, action: { name: 'http:GET' }, resource: paymentsApi } });
    assert.equal(r.status, 200, r.text);
    const ids = (r.json.results as { id: string }[]).map((x) => x.id);
    // Registered and healthy: both entries; the entities file's ledger and old-batch have no posture signal.
    assert.deepEqual(ids, [API, 'spiffe://writ.local/payments/late']);
    const a = await s.call('POST', '/admin/v1/policy/analyze', { body: { principal: { type: 'workload', id: API } } });
    assert.equal(a.status, 200, a.text);
    const reach = (a.json.findings as { action: string; resource: { id: string }; determiningPolicies: string[] }[]).map((f) => `${f.action} ${f.resource.id}`);
    assert.deepEqual(reach, ['http:DELETE', 'http:GET', 'http:HEAD', 'http:OPTIONS', 'http:PATCH', 'http:POST', 'http:PUT', 'token/exchange'].map((x) => `${x} payments-api`));
    const bad = await s.call('POST', '/admin/v1/policy/analyze', { body: { principal: { type: 'workload', id: API }, resource: paymentsApi } });
    assert.equal(bad.status, 400);
    assert.deepEqual([bad.json.code, bad.json.message], ['ERR_POLICY_ANALYSIS_INVALID', 'name exactly one of `principal` and `resource`']);
    const unknown = await s.call('POST', '/admin/v1/policy/analyze', { body: { resource: { type: 'spaceship', id: 'x' } } });
    assert.deepEqual([unknown.status, unknown.json.message], [400, 'type `spaceship` is not declared by the active policy schema']);
  });
});
