// AuthZEN 1.0 search (§8) over real HTTP against a running Writ server loaded
// with the todo interop scenario: subject, resource and action search with
// paging across several pages, agreement with every single evaluation of the
// interop decisions file, and the protocol rules (400s, X-Request-ID, auth).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { startTestServer } from '../support/server.ts';
import type { TestServer } from '../support/server.ts';

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const DECISIONS = here('../../../shared/conformance/authzen/todo-decisions-1_0-02.json');

// The scenario's users (the PDP's entities.json), by role.
const RICK = 'CiRmZDA2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs'; // admin, evil_genius
const MORTY = 'CiRmZDE2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs'; // editor
const SUMMER = 'CiRmZDI2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs'; // editor
const BETH = 'CiRmZDM2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs'; // viewer
const JERRY = 'CiRmZDQ2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs'; // viewer

interface Req { subject: { type: string; id: string; properties?: object }; action: { name: string }; resource: { type: string; id: string; properties?: object } }

describe('AuthZEN search over HTTP (todo scenario)', () => {
  let s: TestServer;
  let pep: string;
  const post = (path: string, body: unknown, headers: Record<string, string> = {}, token: string | null = pep) =>
    s.call('POST', path, { token, body, headers });

  /** Follow `next_token` to the end; returns every result and the number of pages. */
  async function allPages(kind: 'subject' | 'resource' | 'action', body: Record<string, unknown>, limit?: number): Promise<{ results: unknown[]; pages: number }> {
    const results: unknown[] = [];
    let token: string | undefined;
    let pages = 0;
    do {
      const page = { ...(limit === undefined ? {} : { limit }), ...(token === undefined ? {} : { token }) };
      const r = await post(`/access/v1/search/${kind}`, { ...body, ...(Object.keys(page).length === 0 ? {} : { page }) });
      assert.equal(r.status, 200, r.text);
      assert.equal(typeof r.json.page.next_token, 'string');
      assert.equal(r.json.page.count, r.json.results.length);
      if (limit !== undefined) assert.ok(r.json.results.length <= limit);
      results.push(...r.json.results);
      token = r.json.page.next_token === '' ? undefined : r.json.page.next_token;
      pages += 1;
      assert.ok(pages < 50, 'paging does not end');
    } while (token !== undefined);
    return { results, pages };
  }

  before(async () => {
    s = await startTestServer({ flags: { 'policy.dir': here('../../examples/authzen-todo') } });
    const r = await s.call('POST', '/admin/v1/principals', { body: { name: 'search-pep', role: 'pep' } });
    assert.equal(r.status, 201, r.text);
    pep = r.json.token as string;
  });
  after(async () => {
    await s.stop();
  });

  it('subject search: admins and editors may create todos, paged one per page across several pages', async () => {
    const body = { subject: { type: 'user' }, action: { name: 'can_create_todo' }, resource: { type: 'todo', id: 'todo-1' } };
    const one = await allPages('subject', body, 1);
    assert.deepEqual(one.results, [RICK, MORTY, SUMMER].map((id) => ({ type: 'user', id })));
    assert.ok(one.pages >= 3, `${one.pages} pages`);
    // The same answer in one page.
    const whole = await allPages('subject', body);
    assert.deepEqual(whole.results, one.results);
    assert.equal(whole.pages, 1);
  });

  it('subject search: only the evil genius and the owner may update a todo owned by an editor', async () => {
    const body = { subject: { type: 'user' }, action: { name: 'can_update_todo' }, resource: { type: 'todo', id: 't', properties: { ownerID: 'summer@the-smiths.com' } } };
    assert.deepEqual((await allPages('subject', body, 2)).results, [RICK, SUMMER].map((id) => ({ type: 'user', id })));
  });

  it('resource search: every user may read every user the PDP knows', async () => {
    const r = await allPages('resource', { subject: { type: 'user', id: BETH }, action: { name: 'can_read_user' }, resource: { type: 'user' } }, 2);
    assert.deepEqual(r.results, [RICK, MORTY, SUMMER, BETH, JERRY].map((id) => ({ type: 'user', id })));
    assert.equal(r.pages, 3);
  });

  it('action search: what each role may do on a todo it does not own', async () => {
    const todo = { type: 'todo', id: 't', properties: { ownerID: 'someone@else.com' } };
    const actionsOf = async (id: string) => (await allPages('action', { subject: { type: 'user', id }, resource: todo }, 1)).results;
    assert.deepEqual(await actionsOf(RICK), ['can_create_todo', 'can_delete_todo', 'can_read_todos', 'can_update_todo'].map((name) => ({ name })));
    assert.deepEqual(await actionsOf(MORTY), ['can_create_todo', 'can_read_todos'].map((name) => ({ name })));
    assert.deepEqual(await actionsOf(JERRY), [{ name: 'can_read_todos' }]);
    // On a user, only can_read_user applies (the schema's appliesTo).
    assert.deepEqual((await allPages('action', { subject: { type: 'user', id: JERRY }, resource: { type: 'user', id: RICK } })).results, [{ name: 'can_read_user' }]);
  });

  it('never disagrees with evaluation: each of the 40 interop cases matches a subject search and an action search', async () => {
    const data = JSON.parse(await readFile(DECISIONS, 'utf8')) as { evaluation: { request: Req; expected: boolean }[] };
    assert.equal(data.evaluation.length, 40);
    const memo = new Map<string, Set<string>>();
    for (const c of data.evaluation) {
      const { subject, action, resource } = c.request;
      // Subject search with the same action and resource.
      const key = JSON.stringify([action, resource]);
      let subjects = memo.get(key);
      if (subjects === undefined) {
        const found = (await allPages('subject', { subject: { type: subject.type }, action, resource }, 2)).results as { id: string }[];
        subjects = new Set(found.map((x) => x.id));
        memo.set(key, subjects);
      }
      assert.equal(subjects.has(subject.id), c.expected, `subject search vs ${JSON.stringify(c.request)}`);
      // Action search with the same subject and resource.
      const actions = (await allPages('action', { subject, resource })).results as { name: string }[];
      assert.equal(actions.some((a) => a.name === action.name), c.expected, `action search vs ${JSON.stringify(c.request)}`);
      // And evaluation itself, for the record.
      assert.deepEqual((await post('/access/v1/evaluation', c.request)).json, { decision: c.expected });
    }
  });

  it('ignores the searched id and unknown fields, accepts page.properties, echoes X-Request-ID', async () => {
    const r = await post(
      '/access/v1/search/subject',
      { subject: { type: 'user', id: 'ignored' }, action: { name: 'can_create_todo' }, resource: { type: 'todo', id: 'x' }, page: { limit: 10, properties: { sort: 'id' } }, extra: 1 },
      { 'x-request-id': 'search-rid-1' },
    );
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('x-request-id'), 'search-rid-1');
    assert.deepEqual(r.json, { page: { next_token: '', count: 3 }, results: [RICK, MORTY, SUMMER].map((id) => ({ type: 'user', id })) });
  });

  it('answers 400 ERR_POLICY_AUTHZEN_INVALID for missing members, wrong types, bad bodies, bad or foreign page tokens', async () => {
    const subjectBody = { subject: { type: 'user' }, action: { name: 'can_create_todo' }, resource: { type: 'todo', id: 'x' } };
    const first = await post('/access/v1/search/subject', { ...subjectBody, page: { limit: 1 } });
    const token = first.json.page.next_token as string;
    assert.notEqual(token, '');
    const cases: { path: string; body?: unknown; raw?: string; type?: string; message: string }[] = [
      { path: 'subject', body: { action: { name: 'a' }, resource: { type: 'todo', id: 'x' } }, message: '`subject` is required' },
      { path: 'subject', body: { subject: { id: 'x' }, action: { name: 'a' }, resource: { type: 'todo', id: 'x' } }, message: '`subject.type` must be a non-empty string' },
      { path: 'subject', body: { subject: { type: 'user' }, resource: { type: 'todo', id: 'x' } }, message: '`action` is required' },
      { path: 'subject', body: { subject: { type: 'user' }, action: { name: 'a' }, resource: { type: 'todo' } }, message: '`resource.id` must be a non-empty string' },
      { path: 'resource', body: { subject: { type: 'user' }, action: { name: 'a' }, resource: { type: 'todo' } }, message: '`subject.id` must be a non-empty string' },
      { path: 'action', body: { subject: { type: 'user', id: RICK }, resource: { id: 'x' } }, message: '`resource.type` must be a non-empty string' },
      { path: 'subject', body: { ...subjectBody, context: [] }, message: '`context` must be an object' },
      { path: 'subject', body: { ...subjectBody, page: 3 }, message: '`page` must be an object' },
      { path: 'subject', body: { ...subjectBody, page: { limit: 0 } }, message: '`page.limit` must be an integer from 1 to 1000' },
      { path: 'subject', body: { ...subjectBody, page: { limit: '5' } }, message: '`page.limit` must be an integer from 1 to 1000' },
      { path: 'subject', body: { ...subjectBody, page: { token: 7 } }, message: '`page.token` must be a string' },
      { path: 'subject', body: { ...subjectBody, page: { token: 'not-a-token' } }, message: '`page.token` is not a token this PDP issued' },
      // §8: the other members must stay the same across pages.
      { path: 'subject', body: { ...subjectBody, action: { name: 'can_delete_todo' }, page: { token } }, message: '`page.token` belongs to another search: the other request members must not change between pages' },
      { path: 'subject', raw: '', message: 'request body is empty' },
      { path: 'subject', raw: '{"subject":', message: 'request body is not valid JSON' },
      { path: 'subject', raw: '{}', type: 'text/plain', message: 'content type must be `application/json`' },
    ];
    for (const c of cases) {
      const r = c.raw === undefined
        ? await post(`/access/v1/search/${c.path}`, c.body)
        : await s.call('POST', `/access/v1/search/${c.path}`, { token: pep, rawBody: c.raw, headers: { 'content-type': c.type ?? 'application/json' } });
      assert.equal(r.status, 400, `${c.message}: ${r.text}`);
      assert.equal(r.json.code, 'ERR_POLICY_AUTHZEN_INVALID');
      assert.equal(r.json.message, c.message);
    }
    // The token still works with the request it belongs to.
    const second = await post('/access/v1/search/subject', { ...subjectBody, page: { limit: 1, token } });
    assert.equal(second.status, 200);
    assert.deepEqual(second.json.results, [{ type: 'user', id: MORTY }]);
  });

  it('needs a credential with decisions.evaluate, and each candidate decision is audited as a search', async () => {
    const body = { subject: { type: 'user' }, action: { name: 'can_create_todo' }, resource: { type: 'todo', id: 'audited' } };
    assert.equal((await post('/access/v1/search/subject', body, {}, null)).status, 401);
    const r = await post('/access/v1/search/subject', body);
    const correlationId = r.headers.get('x-correlation-id') ?? '';
    const events = (await s.call('GET', `/admin/v1/audit/events?correlationId=${encodeURIComponent(correlationId)}&limit=100`)).json.events as { action: string; details: Record<string, unknown> }[];
    const decisions = events.filter((e) => e.action === 'decision.made');
    assert.equal(decisions.length, 5);
    assert.ok(decisions.every((e) => e.details.purpose === 'search'));
    assert.equal(decisions.filter((e) => e.details.decision === 'allow').length, 3);
  });

  it('metadata lists the three search endpoints, and they answer', async () => {
    const m = (await s.call('GET', '/.well-known/authzen-configuration', { token: null })).json;
    for (const kind of ['subject', 'resource', 'action']) {
      assert.equal(m[`search_${kind}_endpoint`], `${s.url}/access/v1/search/${kind}`);
    }
    const res = await fetch(m.search_action_endpoint, { method: 'POST', headers: { 'content-type': 'application/json', authorization: pep }, body: JSON.stringify({ subject: { type: 'user', id: JERRY }, resource: { type: 'todo', id: 't' } }) });
    assert.deepEqual(await res.json(), { page: { next_token: '', count: 1 }, results: [{ name: 'can_read_todos' }] });
  });
});

// The AuthZEN 1.0 certification scenario's search section (openid/authzen
// `certification/authorization-api-1_0-scenario.md`, §4), against the fixture
// in examples/authzen-certification.
describe('AuthZEN search: certification scenario', () => {
  let s: TestServer;
  let pep: string;
  const post = (path: string, body: unknown) => s.call('POST', path, { token: pep, body });
  const ids = (r: { json: { results: { id?: string; name?: string }[] } }) => r.json.results.map((x) => x.id ?? x.name);

  before(async () => {
    s = await startTestServer({ flags: { 'policy.dir': here('../../examples/authzen-certification') } });
    pep = (await s.call('POST', '/admin/v1/principals', { body: { name: 'cert-search-pep', role: 'pep' } })).json.token as string;
  });
  after(async () => {
    await s.stop();
  });

  it('subject, resource and action search (core and properties) find the fixture entities', async () => {
    const record1 = { type: 'record', id: 'record-1' };
    const archived = { type: 'record', id: 'record-2', properties: { status: 'archived' } };
    const cases: { path: string; body: unknown; want: string[] }[] = [
      { path: 'subject', body: { subject: { type: 'user' }, action: { name: 'read' }, resource: record1 }, want: ['alice', 'bob'] },
      { path: 'subject', body: { subject: { type: 'user' }, action: { name: 'read' }, resource: record1, context: { time: '2025-06-27T18:03-07:00' } }, want: ['alice', 'bob'] },
      { path: 'subject', body: { subject: { type: 'user' }, action: { name: 'write' }, resource: archived }, want: ['bob'] },
      { path: 'resource', body: { subject: { type: 'user', id: 'alice' }, action: { name: 'read' }, resource: { type: 'record' } }, want: ['record-1', 'record-2'] },
      { path: 'resource', body: { subject: { type: 'user', id: 'bob', properties: { role: 'admin' } }, action: { name: 'write' }, resource: { type: 'record' } }, want: ['record-2'] },
      { path: 'action', body: { subject: { type: 'user', id: 'alice' }, resource: record1 }, want: ['read', 'write'] },
      { path: 'action', body: { subject: { type: 'user', id: 'alice' }, resource: record1, context: { ip: '192.168.1.1' } }, want: ['read', 'write'] },
      { path: 'action', body: { subject: { type: 'user', id: 'bob', properties: { role: 'admin' } }, resource: archived }, want: ['read', 'write'] },
      // Empty results, not errors: an unknown subject, an unknown type.
      { path: 'action', body: { subject: { type: 'user', id: 'nonexistent-user' }, resource: record1 }, want: [] },
      { path: 'subject', body: { subject: { type: 'spaceship' }, action: { name: 'read' }, resource: record1 }, want: [] },
    ];
    for (const c of cases) {
      const r = await post(`/access/v1/search/${c.path}`, c.body);
      assert.equal(r.status, 200, r.text);
      assert.match(r.headers.get('content-type') ?? '', /^application\/json/);
      assert.deepEqual(ids(r), c.want, JSON.stringify(c.body));
      assert.equal(r.json.page.next_token, '');
    }
  });

  it('paging: limit 1 then the token, next_token a string and empty at the end', async () => {
    const body = { subject: { type: 'user' }, action: { name: 'read' }, resource: { type: 'record', id: 'record-1' } };
    const first = await post('/access/v1/search/subject', { ...body, page: { limit: 1 } });
    assert.deepEqual(ids(first), ['alice']);
    assert.notEqual(first.json.page.next_token, '');
    const second = await post('/access/v1/search/subject', { ...body, page: { token: first.json.page.next_token } });
    assert.deepEqual(ids(second), ['bob']);
    assert.equal(second.json.page.next_token, '');
  });

  it('400 for missing members and sub-members', async () => {
    const bad: unknown[][] = [
      ['subject', { subject: { type: 'user' }, resource: { type: 'record', id: 'record-1' } }],
      ['resource', { action: { name: 'read' }, resource: { type: 'record' } }],
      ['action', { subject: { type: 'user', id: 'alice' } }],
      ['subject', { subject: { type: 'user' }, action: { name: 'read' }, resource: { type: 'record' } }],
      ['resource', { subject: { type: 'user' }, action: { name: 'read' }, resource: { type: 'record' } }],
    ];
    for (const [path, body] of bad) assert.equal((await post(`/access/v1/search/${String(path)}`, body)).status, 400, JSON.stringify(body));
  });
});
