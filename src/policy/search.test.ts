// AuthZEN search without the transport: candidates from the entities file and
// listing loaders, the scan cap, and types the schema does not declare.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { ManualClock } from '../kernel/index.ts';
import { Decider } from './decide.ts';
import { recordingAuditSink } from './fakes.ts';
import { PolicyEngine } from './policy-set.ts';
import { memoryEntityLoader } from './ports.ts';
import { knownEntities, search } from './search.ts';

const CERT = fileURLToPath(new URL('../../examples/authzen-certification/', import.meta.url));
const clock = new ManualClock(Date.parse('2026-01-01T00:00:00Z'));
const engine = new PolicyEngine({ clock });
const loaded = await engine.load({
  schema: { path: 's.cedarschema', text: await readFile(`${CERT}certification.cedarschema`, 'utf8') },
  entities: { path: 'entities.json', text: await readFile(`${CERT}entities.json`, 'utf8') },
  files: [{ path: 'p.cedar', text: await readFile(`${CERT}certification.cedar`, 'utf8') }],
});
assert.equal(loaded.ok, true);
// More users from a store: carol (listed twice with alice to check de-duplication).
const loader = memoryEntityLoader([
  { uid: { type: 'User', id: 'carol' }, attrs: {}, parents: [{ type: 'Directory', id: 'fixture' }] },
  { uid: { type: 'User', id: 'alice' }, attrs: {}, parents: [{ type: 'Directory', id: 'fixture' }] },
]);
const pdp = new Decider({ engine, audit: recordingAuditSink(clock, false), clock, timeoutMs: Infinity, entityLoader: loader });
const deps = { decide: (r: Parameters<Decider['decide']>[0]) => pdp.decide(r), set: engine.active, loaders: [loader] };
const readRecord1 = { subject: { type: 'user' }, action: { name: 'read' }, resource: { type: 'record', id: 'record-1' } };

test('candidates are the entities file and listing loaders, sorted and de-duplicated', async () => {
  assert.deepEqual(await knownEntities(engine.active, [loader], 'User'), ['alice', 'bob', 'carol'].map((id) => ({ type: 'User', id })));
  const r = await search('subject', deps, readRecord1);
  assert.deepEqual(r, { page: { next_token: '', count: 3 }, results: ['alice', 'bob', 'carol'].map((id) => ({ type: 'user', id })) });
});

test('the scan cap ends a page early with a token that resumes where it stopped', async () => {
  // Only bob (admin) may write the archived record: alice is scanned, the cap stops before bob.
  const body = { subject: { type: 'user' }, action: { name: 'write' }, resource: { type: 'record', id: 'record-2' } };
  const first = await search('subject', deps, body, { maxScan: 1 });
  assert.deepEqual(first.results, []);
  assert.notEqual(first.page.next_token, '');
  const second = await search('subject', deps, { ...body, page: { token: first.page.next_token } }, { maxScan: 1 });
  assert.deepEqual(second.results, [{ type: 'user', id: 'bob' }]);
  const third = await search('subject', deps, { ...body, page: { token: second.page.next_token } }, { maxScan: 1 });
  assert.deepEqual(third, { page: { next_token: '', count: 0 }, results: [] });
});

test('a type the schema does not declare, or no policy set, finds nothing', async () => {
  assert.deepEqual((await search('subject', deps, { ...readRecord1, subject: { type: 'robot' } })).results, []);
  assert.deepEqual((await search('action', deps, { subject: { type: 'robot', id: 'r' }, resource: { type: 'record', id: 'record-1' } })).results, []);
  assert.deepEqual((await search('resource', deps, { subject: { type: 'user', id: 'alice' }, action: { name: 'read' }, resource: { type: 'robot' } })).results, []);
  assert.deepEqual(await search('subject', { ...deps, set: undefined }, readRecord1), { page: { next_token: '', count: 0 }, results: [] });
});

test('action search lists the actions the schema applies and the policies allow', async () => {
  const r = await search('action', deps, { subject: { type: 'user', id: 'alice' }, resource: { type: 'record', id: 'record-1' } });
  assert.deepEqual(r.results, [{ name: 'read' }, { name: 'write' }]);
  const soft = await search('action', deps, { subject: { type: 'user', id: 'alice' }, resource: { type: 'record', id: 'record-1' }, context: { action: { soft: true } } });
  assert.deepEqual(soft.results, [{ name: 'delete' }, { name: 'read' }, { name: 'write' }]);
});
