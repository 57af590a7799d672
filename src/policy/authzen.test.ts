import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  authzenMetadata,
  evaluate,
  evaluations,
  parseAuthzenBody,
  parseEvaluationRequest,
  parseEvaluationsRequest,
  toAuthzenDecision,
  toDecisionRequest,
} from './authzen.ts';
import { ManualClock } from '../kernel/index.ts';
import { Decider } from './decide.ts';
import type { Decision } from './decide.ts';
import { policyErrors } from './errors.ts';
import { recordingAuditSink } from './fakes.ts';
import { PolicyEngine } from './policy-set.ts';

// A real PDP: `read` is allowed exactly on docs whose `ok` property is true.
const clock = new ManualClock(0);
const audit = recordingAuditSink(clock);
const engine = new PolicyEngine({ clock });
await engine.load({
  schema: { path: 's.cedarschema', text: 'entity User = { role?: String }; entity Doc = { ok?: Bool }; action read, write appliesTo { principal: User, resource: Doc, context: { action?: { soft?: Bool } } };' },
  files: [{ path: 'p.cedar', text: 'permit (principal, action == Action::"read", resource) when { resource has ok && resource.ok };' }],
});
const pdp = new Decider({ engine, audit, clock, cacheEntries: 0, timeoutMs: Infinity });
const decide = pdp.decide.bind(pdp);
const info = engine.active?.schemaInfo;
const doc = (id: string) => ({ type: 'doc', id, properties: { ok: id.startsWith('ok') } });

const subject = { type: 'user', id: 'alice' };
const action = { name: 'read' };
const resource = { type: 'doc', id: 'd1' };

function rejects400(fn: () => unknown, message: string): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(policyErrors.is(e, 'ERR_POLICY_AUTHZEN_INVALID'));
    assert.equal(e.status, 400);
    assert.equal(e.message, message);
    return true;
  });
}

test('Evaluation: missing members and wrong types are 400 with a message naming the member', () => {
  const table: [unknown, string][] = [
    [null, 'request body must be a JSON object'],
    [[], 'request body must be a JSON object'],
    [{ action, resource }, '`subject` is required'],
    [{ subject, resource }, '`action` is required'],
    [{ subject, action }, '`resource` is required'],
    [{ subject: 'alice', action, resource }, '`subject` must be an object'],
    [{ subject: { type: 'user' }, action, resource }, '`subject.id` must be a non-empty string'],
    [{ subject: { type: '', id: 'a' }, action, resource }, '`subject.type` must be a non-empty string'],
    [{ subject: { type: 'user', id: 7 }, action, resource }, '`subject.id` must be a non-empty string'],
    [{ subject, action: { name: 3 }, resource }, '`action.name` must be a non-empty string'],
    [{ subject, action: { name: 'read', properties: [] }, resource }, '`action.properties` must be an object'],
    [{ subject, action, resource: { type: 'doc', id: 'd', properties: 'x' } }, '`resource.properties` must be an object'],
    [{ subject, action, resource, context: 'now' }, '`context` must be an object'],
  ];
  for (const [body, message] of table) rejects400(() => parseEvaluationRequest(body), message);
});

test('Evaluation: unknown fields are ignored and not copied', () => {
  const e = parseEvaluationRequest({ subject: { ...subject, extra: 1 }, action, resource, foo: 'bar' });
  assert.deepEqual(e, { subject, action, resource });
});

test('Evaluations: item entities replace the defaults whole; a bad item is an error for that item only', () => {
  const r = parseEvaluationsRequest({
    subject: { type: 'user', id: 'alice', properties: { role: 'admin' } },
    action,
    evaluations: [{ resource }, { subject: { type: 'user', id: 'bob' }, resource }, { resource: { type: 'doc' } }, 'nope'],
  });
  assert.equal(r.semantic, 'execute_all');
  assert.equal(r.single, false);
  const [a, b, c, d] = r.items;
  assert.deepEqual(a, { ok: true, evaluation: { subject: { type: 'user', id: 'alice', properties: { role: 'admin' } }, action, resource } });
  // The item's subject replaces the default whole: no properties inherited.
  assert.deepEqual(b, { ok: true, evaluation: { subject: { type: 'user', id: 'bob' }, action, resource } });
  assert.equal(c?.ok, false);
  if (c !== undefined && !c.ok) assert.equal(c.error.message, '`evaluations[2].resource.id` must be a non-empty string');
  assert.equal(d?.ok, false);
  if (d !== undefined && !d.ok) assert.equal(d.error.message, '`evaluations[3]` must be an object');
});

test('Evaluations: malformed top level and options are 400', () => {
  rejects400(() => parseEvaluationsRequest({ subject, action, resource, evaluations: {} }), '`evaluations` must be an array');
  rejects400(() => parseEvaluationsRequest({ subject: 3, evaluations: [{ action, resource }] }), '`subject` must be an object');
  rejects400(() => parseEvaluationsRequest({ subject, action, resource, options: { evaluations_semantic: 'first' } }), '`options.evaluations_semantic` must be one of execute_all, deny_on_first_deny, permit_on_first_permit');
  rejects400(() => parseEvaluationsRequest({ subject, action, options: 1 }), '`options` must be an object');
  // No items: behaves like an Evaluation, so the defaults must be complete.
  rejects400(() => parseEvaluationsRequest({ subject, action, evaluations: [] }), '`resource` is required');
});

test('mapping: types resolve against the schema, properties become caller attributes, action properties land in context.action', () => {
  const req = toDecisionRequest(info, {
    subject: { type: 'user', id: 'alice', properties: { role: 'admin' } },
    action: { name: 'write', properties: { soft: true } },
    resource: { type: 'doc', id: 'd1' },
    context: { ip: '10.0.0.1' },
  }, 'corr');
  assert.deepEqual(req, {
    principal: { type: 'User', id: 'alice' },
    action: 'write',
    resource: { type: 'Doc', id: 'd1' },
    context: { ip: '10.0.0.1', action: { soft: true } },
    entities: [
      { uid: { type: 'User', id: 'alice' }, attrs: { role: 'admin' } },
      { uid: { type: 'Doc', id: 'd1' }, attrs: {} },
    ],
    correlationId: 'corr',
  });
  assert.equal(toDecisionRequest(info, { subject: { type: 'robot', id: 'r' }, action, resource }).principal.type, 'robot');
});

function fakeDecision(decision: 'allow' | 'deny'): Decision {
  return { decision, reasons: [decision === 'allow' ? 'ok' : 'no-matching-permit'], determiningPolicies: [], policyVersion: 'pv-1', decisionId: 'd-1', cached: false, diagnostics: [] };
}

test('batch semantics truncate at the first deny or permit and keep request order', async () => {
  const items = ['ok-1', 'no-2', 'ok-3', 'no-4'].map((id) => ({ resource: doc(id) }));
  const run = async (semantic?: string) => {
    const before = audit.events.length;
    const body = { subject, action, evaluations: items, ...(semantic === undefined ? {} : { options: { evaluations_semantic: semantic } }) };
    const r = await evaluations(decide, info, body);
    return { out: 'evaluations' in r ? r.evaluations.map((d) => d.decision) : [], n: audit.events.length - before };
  };
  assert.deepEqual(await run(), { out: [true, false, true, false], n: 4 });
  assert.deepEqual(await run('execute_all'), { out: [true, false, true, false], n: 4 });
  assert.deepEqual(await run('deny_on_first_deny'), { out: [true, false], n: 2 });
  assert.deepEqual(await run('permit_on_first_permit'), { out: [true], n: 1 });
});

test('a bad batch item yields false with its error in context; the others still decide', async () => {
  const r = await evaluations(decide, info, { subject, action, evaluations: [{ resource: doc('ok-1') }, { resource: { id: 'x' } }, { resource: doc('ok-2') }] });
  assert.deepEqual(r, {
    evaluations: [
      { decision: true },
      { decision: false, context: { error: { status: 400, message: '`evaluations[1].resource.type` must be a non-empty string' } } },
      { decision: true },
    ],
  });
});

test('an Evaluations request without items answers like an Evaluation', async () => {
  assert.deepEqual(await evaluations(decide, info, { subject, action, resource: doc('ok') }), { decision: true });
});

test('only an explicit allow is true; explain adds the reasons', async () => {
  assert.deepEqual(await evaluate(decide, info, { subject, action, resource: doc('no') }), { decision: false });
  assert.deepEqual(toAuthzenDecision(fakeDecision('deny'), { explain: true }), {
    decision: false,
    context: { id: 'd-1', reason_admin: { en: 'no-matching-permit' }, policy_version: 'pv-1' },
  });
});

test('raw bodies: non-JSON content type, empty and malformed bodies are 400', () => {
  rejects400(() => parseAuthzenBody('text/plain', '{}'), 'content type must be `application/json`');
  rejects400(() => parseAuthzenBody(undefined, '{}'), 'content type must be `application/json`');
  rejects400(() => parseAuthzenBody('application/json', '  '), 'request body is empty');
  rejects400(() => parseAuthzenBody('application/json', '{"subject":'), 'request body is not valid JSON');
  assert.deepEqual(parseAuthzenBody('application/json; charset=utf-8', '{"a":1}'), { a: 1 });
});

test('metadata: policy_decision_point equals the identifier and endpoints derive from it', () => {
  assert.deepEqual(authzenMetadata('https://pdp.example.com'), {
    policy_decision_point: 'https://pdp.example.com',
    access_evaluation_endpoint: 'https://pdp.example.com/access/v1/evaluation',
    access_evaluations_endpoint: 'https://pdp.example.com/access/v1/evaluations',
    search_subject_endpoint: 'https://pdp.example.com/access/v1/search/subject',
    search_resource_endpoint: 'https://pdp.example.com/access/v1/search/resource',
    search_action_endpoint: 'https://pdp.example.com/access/v1/search/action',
    capabilities: [],
  });
  assert.throws(() => authzenMetadata('http://pdp.example.com'), { name: 'TypeError', message: 'policy_decision_point must be an https URL' });
});
