// AuthZEN 1.0 over real HTTP against a running Writ server: the openid/authzen
// todo interop file replayed the way its runner does (raw Authorization header,
// JSON.stringify comparisons), the certification fixture with the protocol
// rules, caller authentication, and audit of each decision exactly once.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { startTestServer } from '../support/server.ts';
import type { TestServer } from '../support/server.ts';

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const DECISIONS = here('../../../shared/conformance/authzen/todo-decisions-1_0-02.json');

interface SingleCase { request: unknown; expected: boolean }
interface BatchCase { request: unknown; expected: { decision: boolean }[] }

/** Create an admin principal of `role` and return its credential. */
async function credential(s: TestServer, name: string, role: string): Promise<string> {
  const r = await s.call('POST', '/admin/v1/principals', { body: { name, role } });
  assert.equal(r.status, 201, r.text);
  return r.json.token as string;
}

/** What the interop runner does: POST JSON with the raw credential as the Authorization value. */
async function runnerPost(url: string, apiKey: string, path: string, body: unknown): Promise<{ status: number; data: any }> {
  const res = await fetch(`${url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: apiKey },
    body: JSON.stringify(body),
  });
  return { status: res.status, data: await res.json() };
}

describe('AuthZEN todo interop file over HTTP', () => {
  let s: TestServer;
  let pep: string;
  const data = { evaluation: [] as SingleCase[], evaluations: [] as BatchCase[] };
  before(async () => {
    Object.assign(data, JSON.parse(await readFile(DECISIONS, 'utf8')));
    s = await startTestServer({ flags: { 'policy.dir': here('../../examples/authzen-todo') } });
    pep = await credential(s, 'todo-pep', 'pep');
  });
  after(async () => {
    await s.stop();
  });

  it('the file holds 40 single and 3 batch cases', () => {
    assert.equal(data.evaluation.length, 40);
    assert.equal(data.evaluations.length, 3);
  });

  it('all 40 single evaluations pass the way the runner checks them', async () => {
    const failures: string[] = [];
    for (const c of data.evaluation) {
      const { status, data: body } = await runnerPost(s.url, pep, '/access/v1/evaluation', c.request);
      assert.equal(status, 200);
      if (JSON.stringify(c.expected) !== JSON.stringify(body.decision || false)) failures.push(`${JSON.stringify(c.request)} → ${JSON.stringify(body)}`);
    }
    assert.deepEqual(failures, []);
  });

  it('all 3 batches pass the way the runner checks them', async () => {
    for (const c of data.evaluations) {
      const { status, data: body } = await runnerPost(s.url, pep, '/access/v1/evaluations', c.request);
      assert.equal(status, 200);
      assert.equal(JSON.stringify(body.evaluations), JSON.stringify(c.expected));
    }
  });

  it('the same credential works with the Bearer prefix', async () => {
    const c = data.evaluation[0];
    assert.ok(c !== undefined);
    const { status, data: body } = await runnerPost(s.url, `Bearer ${pep}`, '/access/v1/evaluation', c.request);
    assert.equal(status, 200);
    assert.deepEqual(body, { decision: c.expected });
  });
});

describe('AuthZEN certification fixture over HTTP', () => {
  let s: TestServer;
  let pep: string;
  const alice = { type: 'user', id: 'alice' };
  const bob = { type: 'user', id: 'bob' };
  const record1 = { type: 'record', id: 'record-1' };
  const archived = { type: 'record', id: 'record-2', properties: { status: 'archived' } };
  const MANDATED: { rule: number; body: Record<string, unknown>; want: boolean }[] = [
    { rule: 1, body: { subject: alice, action: { name: 'read' }, resource: record1 }, want: true },
    { rule: 2, body: { subject: alice, action: { name: 'write' }, resource: record1 }, want: true },
    { rule: 3, body: { subject: bob, action: { name: 'read' }, resource: record1 }, want: true },
    { rule: 4, body: { subject: bob, action: { name: 'write' }, resource: record1 }, want: false },
    { rule: 5, body: { subject: alice, action: { name: 'write' }, resource: archived }, want: false },
    { rule: 6, body: { subject: { ...bob, properties: { role: 'admin' } }, action: { name: 'write' }, resource: archived }, want: true },
    { rule: 7, body: { subject: alice, action: { name: 'delete', properties: { soft: true } }, resource: record1 }, want: true },
    { rule: 8, body: { subject: alice, action: { name: 'delete', properties: { soft: false } }, resource: record1 }, want: false },
  ];
  const post = (path: string, o: { body?: unknown; rawBody?: string; headers?: Record<string, string>; token?: string | null } = {}) =>
    s.call('POST', path, { token: o.token === undefined ? pep : o.token, ...(o.body === undefined ? {} : { body: o.body }), ...(o.rawBody === undefined ? {} : { rawBody: o.rawBody }), ...(o.headers === undefined ? {} : { headers: o.headers }) });

  before(async () => {
    s = await startTestServer({ flags: { 'policy.dir': here('../../examples/authzen-certification') } });
    pep = await credential(s, 'cert-pep', 'pep');
  });
  after(async () => {
    await s.stop();
  });

  it('gives the eight mandated decisions, a deny being 200 {"decision":false}', async () => {
    for (const m of MANDATED) {
      const r = await post('/access/v1/evaluation', { body: m.body });
      assert.equal(r.status, 200, `rule ${m.rule}`);
      assert.deepEqual(r.json, { decision: m.want }, `rule ${m.rule}`);
    }
  });

  it('gives the same eight from one batch, in order', async () => {
    const r = await post('/access/v1/evaluations', { body: { evaluations: MANDATED.map((m) => m.body) } });
    assert.equal(r.status, 200);
    assert.deepEqual(r.json, { evaluations: MANDATED.map((m) => ({ decision: m.want })) });
  });

  it('answers 400 with a code for missing fields, wrong types, non-JSON and malformed or empty bodies', async () => {
    const cases: { name: string; o: Parameters<typeof post>[1]; message: string }[] = [
      { name: 'missing subject', o: { body: { action: { name: 'read' }, resource: record1 } }, message: '`subject` is required' },
      { name: 'missing action', o: { body: { subject: alice, resource: record1 } }, message: '`action` is required' },
      { name: 'missing resource', o: { body: { subject: alice, action: { name: 'read' } } }, message: '`resource` is required' },
      { name: 'missing subject.id', o: { body: { subject: { type: 'user' }, action: { name: 'read' }, resource: record1 } }, message: '`subject.id` must be a non-empty string' },
      { name: 'subject is a string', o: { body: { subject: 'alice', action: { name: 'read' }, resource: record1 } }, message: '`subject` must be an object' },
      { name: 'action.name is a number', o: { body: { subject: alice, action: { name: 7 }, resource: record1 } }, message: '`action.name` must be a non-empty string' },
      { name: 'context is an array', o: { body: { subject: alice, action: { name: 'read' }, resource: record1, context: [] } }, message: '`context` must be an object' },
      { name: 'body is an array', o: { body: [] }, message: 'request body must be a JSON object' },
      { name: 'text/plain', o: { rawBody: JSON.stringify(MANDATED[0]?.body), headers: { 'content-type': 'text/plain' } }, message: 'content type must be `application/json`' },
      { name: 'no content type', o: { rawBody: JSON.stringify(MANDATED[0]?.body) }, message: 'content type must be `application/json`' },
      { name: 'malformed JSON', o: { rawBody: '{"subject": ', headers: { 'content-type': 'application/json' } }, message: 'request body is not valid JSON' },
      { name: 'empty body', o: { rawBody: '', headers: { 'content-type': 'application/json' } }, message: 'request body is empty' },
    ];
    for (const c of cases) {
      for (const path of ['/access/v1/evaluation', '/access/v1/evaluations']) {
        // Evaluations without items behaves like Evaluation (§7.1): the same 400s.
        const r = await post(path, c.o);
        assert.equal(r.status, 400, `${c.name} ${path}: ${r.text}`);
        assert.equal(r.json.code, 'ERR_POLICY_AUTHZEN_INVALID', c.name);
        assert.equal(r.json.message, c.message, `${c.name} ${path}`);
      }
    }
  });

  it('echoes X-Request-ID on decisions and on errors', async () => {
    const ok = await post('/access/v1/evaluation', { body: MANDATED[0]?.body, headers: { 'x-request-id': 'req-123' } });
    assert.equal(ok.status, 200);
    assert.equal(ok.headers.get('x-request-id'), 'req-123');
    const bad = await post('/access/v1/evaluation', { rawBody: '', headers: { 'content-type': 'application/json', 'x-request-id': 'req-456' } });
    assert.equal(bad.status, 400);
    assert.equal(bad.headers.get('x-request-id'), 'req-456');
    const batch = await post('/access/v1/evaluations', { body: { evaluations: [MANDATED[0]?.body] }, headers: { 'x-request-id': 'req-789' } });
    assert.equal(batch.headers.get('x-request-id'), 'req-789');
  });

  it('a bad batch item is false for that item only', async () => {
    const r = await post('/access/v1/evaluations', { body: { evaluations: [MANDATED[0]?.body, { subject: alice, action: { name: 'read' } }, MANDATED[2]?.body] } });
    assert.equal(r.status, 200);
    assert.equal(r.json.evaluations.length, 3);
    assert.deepEqual(r.json.evaluations[0], { decision: true });
    assert.equal(r.json.evaluations[1].decision, false);
    assert.deepEqual(r.json.evaluations[1].context, { error: { status: 400, message: '`evaluations[1].resource` is required' } });
    assert.deepEqual(r.json.evaluations[2], { decision: true });
  });

  it('ignores unknown fields, accepts a `page` object, and gives identical results for identical requests', async () => {
    const base = MANDATED[1]?.body ?? {};
    const r1 = await post('/access/v1/evaluation', { body: { ...base, page: { limit: 10, token: '' }, futureField: { nested: true } } });
    assert.equal(r1.status, 200);
    assert.deepEqual(r1.json, { decision: true });
    const withExtras = { subject: { ...alice, properties: { department: 'Sales' }, extra: 1 }, action: { name: 'read', extra: true }, resource: { ...record1, extra: 'x' }, context: { ip: '192.168.1.1' } };
    assert.deepEqual((await post('/access/v1/evaluation', { body: withExtras })).json, { decision: true });
    const r2 = await post('/access/v1/evaluation', { body: base });
    assert.deepEqual(r2.json, r1.json);
  });

  it('serves valid metadata whose policy_decision_point is the server base URL', async () => {
    const r = await s.call('GET', '/.well-known/authzen-configuration', { token: null });
    assert.equal(r.status, 200);
    assert.deepEqual(r.json, {
      policy_decision_point: s.url,
      access_evaluation_endpoint: `${s.url}/access/v1/evaluation`,
      access_evaluations_endpoint: `${s.url}/access/v1/evaluations`,
      search_subject_endpoint: `${s.url}/access/v1/search/subject`,
      search_resource_endpoint: `${s.url}/access/v1/search/resource`,
      search_action_endpoint: `${s.url}/access/v1/search/action`,
      capabilities: [],
    });
    // The endpoint it names answers.
    const e = await fetch(r.json.access_evaluation_endpoint, { method: 'POST', headers: { 'content-type': 'application/json', authorization: pep }, body: JSON.stringify(MANDATED[0]?.body) });
    assert.deepEqual(await e.json(), { decision: true });
  });

  it('401 without or with a bad credential, 403 for a role without decisions.evaluate', async () => {
    for (const token of [null, 'nonsense', `writ.0123456789abcdef.${'A'.repeat(43)}`]) {
      const r = await post('/access/v1/evaluation', { body: MANDATED[0]?.body, token });
      assert.equal(r.status, 401, String(token));
      assert.equal(r.json.code, 'ERR_GOV_UNAUTHENTICATED');
      assert.equal(r.json.message, 'admin credential is missing, malformed, unknown or revoked');
    }
    const auditor = await credential(s, 'cert-auditor', 'auditor');
    for (const path of ['/access/v1/evaluation', '/access/v1/evaluations']) {
      const r = await post(path, { body: MANDATED[0]?.body, token: auditor });
      assert.equal(r.status, 403);
      assert.equal(r.json.code, 'ERR_GOV_FORBIDDEN');
      assert.equal(r.json.message, 'role `auditor` lacks permission `decisions.evaluate`');
    }
    // A pep credential is not an admin: it cannot read the audit log or the policy.
    for (const path of ['/admin/v1/audit/events', '/admin/v1/policy']) {
      const r = await s.call('GET', path, { token: pep });
      assert.equal(r.status, 403, path);
    }
  });

  it('records each decision once, as decision.made with the caller, and no api.called for it', async () => {
    const rid = `audit-${Date.now()}`;
    const r = await post('/access/v1/evaluations', { body: { evaluations: [MANDATED[0]?.body, MANDATED[3]?.body] }, headers: { traceparent: `00-${'ab'.repeat(16)}-${'cd'.repeat(8)}-01`, 'x-request-id': rid } });
    assert.equal(r.status, 200);
    const correlationId = r.headers.get('x-correlation-id');
    assert.ok(correlationId !== null);
    // The audit writer commits before the decision is answered.
    const events = (await s.call('GET', `/admin/v1/audit/events?correlationId=${encodeURIComponent(correlationId)}&limit=100`)).json.events as { action: string; outcome: string; details: Record<string, unknown> }[];
    assert.deepEqual(events.map((e) => [e.action, e.outcome, e.details.decision]), [['decision.made', 'success', 'allow'], ['decision.made', 'denied', 'deny']]);
    const whoami = (await s.call('GET', '/admin/v1/principals')).json.principals.find((p: { name: string }) => p.name === 'cert-pep');
    assert.equal(events[0]?.details.requestedBy, whoami.id);
    assert.equal(typeof events[0]?.details.policyVersion, 'string');
    assert.deepEqual(events[0]?.details.policyIds, ['read-records']);
    assert.deepEqual((events[0]?.details.request as { principal: unknown }).principal, { type: 'User', id: 'alice' });
  });

  it('records a refused caller once as api.called denied', async () => {
    const r = await post('/access/v1/evaluation', { body: MANDATED[0]?.body, token: null });
    const correlationId = r.headers.get('x-correlation-id') ?? '';
    const events = (await s.call('GET', `/admin/v1/audit/events?correlationId=${encodeURIComponent(correlationId)}`)).json.events as { action: string; outcome: string; reasons: string[] }[];
    assert.deepEqual(events.map((e) => [e.action, e.outcome, e.reasons]), [['api.called', 'denied', ['unauthenticated']]]);
  });
});
