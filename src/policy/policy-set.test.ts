import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ManualClock } from '../kernel/index.ts';
import { compileOrThrow, compilePolicySet, PolicyEngine } from './policy-set.ts';
import type { PolicySource } from './policy-set.ts';
import { readPolicyFolder, readWritSchema } from './policy-source.ts';
import { recordingAuditSink } from './fakes.ts';
import { policyErrors } from './errors.ts';

const schema = await readWritSchema();
const GOOD = '@id("get")\npermit (principal, action == Writ::Action::"http:GET", resource);\n';
const src = (files: { path: string; text: string }[], entities?: string): PolicySource =>
  entities === undefined ? { schema, files } : { schema, files, entities: { path: 'entities.json', text: entities } };

test("Writ's schema parses and declares every entity type and action group", () => {
  const r = compilePolicySet(src([]));
  assert.equal(r.ok, true);
  if (!r.ok) return;
  const types = [...r.set.schemaInfo.entityTypes.keys()].sort();
  assert.deepEqual(types, ['Agent', 'Environment', 'Node', 'Owner', 'Prompt', 'Resource', 'Role', 'Service', 'Task', 'Team', 'Tool', 'Workload'].map((t) => `Writ::${t}`));
  const http = r.set.schemaInfo.actionDescendants.get('Writ::Action::"http"');
  assert.ok(http?.has('Writ::Action::"http:DELETE"'));
  assert.ok(r.set.schemaInfo.actionDescendants.get('Writ::Action::"admin"')?.has('Writ::Action::"admin:policy.write"'));
  for (const a of ['tools/call', 'resources/read', 'prompts/get', 'token/exchange', 'credential/issue']) assert.ok(r.set.schemaInfo.actionContexts.has(`Writ::Action::"${a}"`), a);
});

test('an action context named as a common type is indexed member by member, so undeclared members can be dropped', () => {
  const r = compilePolicySet(src([]));
  assert.equal(r.ok, true);
  if (!r.ok) return;
  const ctx = r.set.schemaInfo.actionContexts.get('Writ::Action::"tools/call"');
  assert.ok(ctx instanceof Map, 'RequestContext resolves to its declared members, not an open record');
  assert.deepEqual([...ctx.keys()].sort(), ['authn', 'delegation', 'http', 'mcp', 'nodePosture', 'oauth', 'posture', 'risk', 'task', 'time', 'token']);
  const mcp = ctx.get('mcp');
  assert.ok(mcp instanceof Map);
  assert.deepEqual([...mcp.keys()].sort(), ['prompt', 'server', 'task', 'tool', 'uri']);
});

test('a parse error names file, line and column', () => {
  const r = compilePolicySet(src([{ path: 'a.cedar', text: GOOD }, { path: 'b.cedar', text: '\n\npermit (principal, action, resource)\nwhen { x };' }]));
  assert.equal(r.ok, false);
  if (r.ok) return;
  assert.equal(r.problems.length, 1);
  const p = r.problems[0];
  assert.equal(p?.file, 'b.cedar');
  assert.equal(p?.line, 4);
  assert.equal(p?.column, 8);
  assert.match(p?.message ?? '', /invalid variable: x/);
});

test('a validation error against the schema names file and line', () => {
  const text = `${GOOD}\n@id("bad")\npermit (principal is Writ::Workload, action == Writ::Action::"http:GET", resource)\nwhen { principal.nope };\n`;
  const r = compilePolicySet(src([{ path: 'team/x.cedar', text }]));
  assert.equal(r.ok, false);
  if (r.ok) return;
  assert.equal(r.problems[0]?.file, 'team/x.cedar');
  assert.equal(r.problems[0]?.line, 6);
  assert.match(r.problems[0]?.message ?? '', /attribute `nope` on entity type `Writ::Workload` not found/);
});

test('policy ids are the @id annotation, else file:line, and must be unique', () => {
  const ok = compilePolicySet(src([{ path: 'a.cedar', text: `${GOOD}\npermit (principal, action == Writ::Action::"http:PUT", resource);\n` }]));
  assert.equal(ok.ok, true);
  if (ok.ok) assert.deepEqual(ok.set.policies.map((p) => [p.id, p.line]), [['get', 1], ['a.cedar:4', 4]]);
  const dup = compilePolicySet(src([{ path: 'a.cedar', text: GOOD }, { path: 'b.cedar', text: GOOD }]));
  assert.equal(dup.ok, false);
  if (!dup.ok) assert.deepEqual(dup.problems, [{ file: 'b.cedar', line: 1, column: 1, message: 'policy id `get` is already used at a.cedar:1' }]);
});

test('more than ten policies in one file keep file order (cedar sorts its generated ids)', () => {
  const text = Array.from({ length: 12 }, (_, i) => `@id("p${i}")\npermit (principal, action == Writ::Action::"http:GET", resource);`).join('\n');
  const r = compilePolicySet(src([{ path: 'many.cedar', text }]));
  assert.equal(r.ok, true);
  if (r.ok) assert.deepEqual(r.set.policies.map((p) => `${p.id}@${p.line}`), Array.from({ length: 12 }, (_, i) => `p${i}@${2 * i + 1}`));
});

test('a @reason annotation must be kebab-case', () => {
  const r = compilePolicySet(src([{ path: 'a.cedar', text: '@reason("Not OK")\npermit (principal, action, resource);' }]));
  assert.equal(r.ok, false);
  if (!r.ok) assert.equal(r.problems[0]?.message, '@reason `Not OK` is not kebab-case');
});

test('the policy version is a content hash: stable for the same content, new for any change', () => {
  const a = compileOrThrow(src([{ path: 'a.cedar', text: GOOD }]));
  const b = compileOrThrow(src([{ path: 'a.cedar', text: GOOD }]));
  const c = compileOrThrow(src([{ path: 'a.cedar', text: `${GOOD} ` }]));
  const d = compileOrThrow(src([{ path: 'a.cedar', text: GOOD }], '[]'));
  assert.match(a.version, /^pv-[0-9a-f]{24}$/);
  assert.equal(a.version, b.version);
  assert.notEqual(a.version, c.version);
  assert.notEqual(a.version, d.version);
});

test('an entities file is checked against the schema', () => {
  const bad = JSON.stringify([{ uid: { type: 'Writ::Environment', id: 'prod' }, attrs: { production: 'yes' }, parents: [] }]);
  const r = compilePolicySet(src([{ path: 'a.cedar', text: GOOD }], bad));
  assert.equal(r.ok, false);
  if (!r.ok) {
    assert.equal(r.problems[0]?.file, 'entities.json');
    assert.match(r.problems[0]?.message ?? '', /production/);
  }
  const notArray = compilePolicySet(src([], '{}'));
  assert.equal(notArray.ok, false);
  if (!notArray.ok) assert.equal(notArray.problems[0]?.message, 'entities file must hold a JSON array of Cedar entities');
});

test('compileOrThrow throws ERR_POLICY_SET_INVALID listing the problems', () => {
  assert.throws(() => compileOrThrow(src([{ path: 'x.cedar', text: 'permit (' }])), (e: unknown) => {
    assert.ok(policyErrors.is(e, 'ERR_POLICY_SET_INVALID'));
    assert.equal(e.status, 400);
    assert.match(e.message, /^policy set has 1 problem\(s\): x\.cedar:1:\d+: /);
    return true;
  });
});

test('reload keeps the previous set serving when the candidate is invalid, and reports it', async () => {
  const clock = new ManualClock(Date.parse('2026-03-01T00:00:00Z'));
  const audit = recordingAuditSink(clock);
  const engine = new PolicyEngine({ clock, audit });
  const first = await engine.load(src([{ path: 'a.cedar', text: GOOD }]));
  assert.equal(first.ok, true);
  const v1 = engine.active?.version;
  const swaps: string[] = [];
  engine.onSwap((s) => swaps.push(s.version));

  const failed = await engine.load(src([{ path: 'a.cedar', text: 'permit (principal, action, resource) when { resource.nope };' }]));
  assert.equal(failed.ok, false);
  assert.equal(failed.activeVersion, v1);
  assert.equal(engine.active?.version, v1);
  assert.deepEqual(swaps, []);
  const status = engine.status();
  assert.equal(status.ready, true);
  assert.equal(status.activeVersion, v1);
  assert.equal(status.lastLoad?.ok, false);
  assert.equal(audit.events.map((e) => e.action).join(','), 'policy-set.activated,policy-set.rejected');
  assert.equal(audit.events[1]?.outcome, 'failure');
  assert.deepEqual(audit.events[1]?.reasons, ['policy-set-invalid']);

  const second = await engine.load(src([{ path: 'a.cedar', text: `${GOOD}\n` }]));
  assert.equal(second.ok, true);
  assert.notEqual(engine.active?.version, v1);
  assert.deepEqual(swaps, [engine.active?.version]);
});

test('readPolicyFolder reads .cedar files recursively, an own schema and entities.json', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'writ-policy-'));
  await mkdir(join(dir, 'team'));
  await writeFile(join(dir, 'team', 'a.cedar'), 'permit (principal, action == Action::"go", resource);');
  await writeFile(join(dir, 'x.cedarschema'), 'entity U; action go appliesTo { principal: U, resource: U };');
  await writeFile(join(dir, 'entities.json'), '[{"uid":{"type":"U","id":"u"},"attrs":{},"parents":[]}]');
  await writeFile(join(dir, 'README.md'), 'ignored');
  const s = await readPolicyFolder(dir);
  assert.deepEqual(s.files.map((f) => f.path), ['team/a.cedar']);
  assert.equal(s.schema.path, 'x.cedarschema');
  assert.equal(s.entities?.path, 'entities.json');
  const set = compileOrThrow(s);
  assert.equal(set.entities.size, 1);
  assert.equal(set.policies[0]?.id, 'team/a.cedar:1');
});

test('readPolicyFolder on a missing folder throws ERR_POLICY_FOLDER_UNREADABLE', async () => {
  await assert.rejects(readPolicyFolder('/nonexistent/writ-policies'), (e: unknown) => {
    assert.ok(policyErrors.is(e, 'ERR_POLICY_FOLDER_UNREADABLE'));
    assert.equal(e.message, 'cannot read policy folder `/nonexistent/writ-policies`');
    return true;
  });
});

test('a slice holds only the policies whose scope can match', () => {
  const text = [
    '@id("w1-get") permit (principal == Writ::Workload::"w1", action == Writ::Action::"http:GET", resource);',
    '@id("w2-get") permit (principal == Writ::Workload::"w2", action == Writ::Action::"http:GET", resource);',
    '@id("agents-tools") permit (principal is Writ::Agent, action == Writ::Action::"tools/call", resource);',
    '@id("any-write") forbid (principal, action in Writ::Action::"http:write", resource);',
    '@id("team") permit (principal in Writ::Team::"t", action in Writ::Action::"http", resource is Writ::Service);',
  ].join('\n');
  const set = compileOrThrow(src([{ path: 'a.cedar', text }]));
  const req = (p: string, pt: string, a: string, rt = 'Writ::Service') => ({
    principalType: pt, principalKey: `${pt}::"${p}"`, actionKey: `Writ::Action::"${a}"`, resourceType: rt, resourceKey: `${rt}::"r"`,
  });
  assert.deepEqual(set.slice(req('w1', 'Writ::Workload', 'http:GET'))?.policyIds, ['w1-get', 'team']);
  assert.deepEqual(set.slice(req('w2', 'Writ::Workload', 'http:POST'))?.policyIds, ['any-write', 'team']);
  assert.deepEqual(set.slice(req('a', 'Writ::Agent', 'tools/call', 'Writ::Tool'))?.policyIds, ['agents-tools']);
  assert.equal(set.slice(req('w1', 'Writ::Workload', 'token/exchange')), undefined);
});

test('policy lines stay right in a long file, and recompiling an unchanged file gives the same policies', () => {
  const n = 300;
  const text = Array.from({ length: n }, (_, i) => `// policy ${i}\n@id("p${i}")\npermit (principal == Writ::Workload::"w${i}", action == Writ::Action::"http:GET", resource);`).join('\n');
  const a = compilePolicySet(src([{ path: 'long.cedar', text }, { path: 'one.cedar', text: GOOD }]));
  assert.equal(a.ok, true);
  if (!a.ok) return;
  assert.equal(a.set.policies.length, n + 1);
  a.set.policies.slice(0, n).forEach((p, i) => {
    assert.equal(p.id, `p${i}`);
    assert.equal(p.line, 3 * i + 2);
  });
  const b = compilePolicySet(src([{ path: 'long.cedar', text }, { path: 'one.cedar', text: GOOD.replace('http:GET', 'http:HEAD') }]));
  assert.equal(b.ok, true);
  if (!b.ok) return;
  assert.notEqual(b.set.version, a.set.version);
  assert.deepEqual(b.set.policies.slice(0, n), a.set.policies.slice(0, n));
  assert.deepEqual(b.set.policies[n]?.scope.action, { kind: 'set', keys: new Set(['Writ::Action::"http:HEAD"']) });
});

test('mayForbid: true only when a forbid scope can match the action and the principal and resource types', () => {
  const q = { principalType: 'Writ::Workload', actionKey: 'Writ::Action::"credential/issue"', resourceType: 'Writ::Workload' };
  const set = (text: string) => {
    const r = compilePolicySet(src([{ path: 'a.cedar', text }]));
    assert.equal(r.ok, true, JSON.stringify(r));
    if (!r.ok) throw new Error('unreachable');
    return r.set;
  };
  assert.equal(set(GOOD).mayForbid(q), false, 'permits only');
  assert.equal(set('@id("f")\nforbid (principal, action == Writ::Action::"http:GET", resource);\n').mayForbid(q), false, 'another action');
  assert.equal(set('@id("f")\nforbid (principal is Writ::Agent, action, resource);\n').mayForbid(q), false, 'another principal type');
  assert.equal(set('@id("f")\nforbid (principal, action, resource is Writ::Service);\n').mayForbid(q), false, 'another resource type');
  assert.equal(set('@id("f")\nforbid (principal, action, resource) when { context has posture && context.posture.score < 50 };\n').mayForbid(q), true, 'unscoped forbid');
  assert.equal(set('@id("f")\nforbid (principal == Writ::Workload::"spiffe://x/y", action in [Writ::Action::"credential/issue"], resource);\n').mayForbid(q), true, 'an == scope of the type');
});
