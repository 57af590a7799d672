import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { DatabaseSync } from 'node:sqlite';
import { join } from 'node:path';
import { startTestServer } from '../support/server.ts';
import type { TestServer } from '../support/server.ts';
import { skipWithoutPostgres } from '../support/services.ts';

describe('admin API over HTTP (SQLite store)', () => {
  let s: TestServer;
  before(async () => {
    s = await startTestServer({ flags: { 'http.bodyLimitBytes': 2048 } });
  });
  after(async () => {
    await s.stop();
  });

  it('public routes: healthz, readyz, metrics, openapi', async () => {
    assert.deepEqual((await s.call('GET', '/healthz', { token: null })).json, { status: 'ok' });
    const ready = (await s.call('GET', '/readyz', { token: null })).json;
    assert.deepEqual({ status: ready.status, checks: ready.checks }, { status: 'ready', checks: { store: 'ok', audit: 'ok', policy: 'ok' } });
    assert.equal(ready.detail.policy.note, 'no policy folder configured (`policy.dir`): serving an empty set, every decision is a deny');
    const m = await s.call('GET', '/metrics', { token: null });
    assert.equal(m.status, 200);
    assert.match(m.text, /^writ_http_requests_total\{method="GET",route="\/healthz",status="200"\} 1$/m);
    assert.match(m.text, /^writ_audit_events_appended_total \d+$/m);
    const api = (await s.call('GET', '/openapi.json', { token: null })).json;
    assert.equal(api.openapi, '3.1.0');
    assert.ok(api.paths['/admin/v1/principals'].post.requestBody, 'request schema documented');
    assert.deepEqual(api.paths['/admin/v1/principals'].post.security, [{ adminToken: [] }]);
  });

  it('no credential, a malformed one or an unknown one is 401 with a code and a challenge', async () => {
    for (const token of [null, 'nonsense', `writ.0123456789abcdef.${'A'.repeat(43)}`, s.token.slice(0, -1) + (s.token.endsWith('A') ? 'B' : 'A')]) {
      const r = await s.call('GET', '/admin/v1/whoami', { token });
      assert.equal(r.status, 401, String(token));
      assert.equal(r.json.code, 'ERR_GOV_UNAUTHENTICATED');
      assert.equal(r.json.message, 'admin credential is missing, malformed, unknown or revoked');
      assert.equal(r.headers.get('www-authenticate'), 'Bearer realm="writ-admin"');
    }
  });

  it('the bootstrap admin can call everything; whoami names it', async () => {
    const r = await s.call('GET', '/admin/v1/whoami');
    assert.equal(r.status, 200);
    assert.equal(r.json.name, 'bootstrap');
    assert.equal(r.json.role, 'admin');
  });

  it('roles are enforced: an auditor reads the audit log but cannot manage principals (403)', async () => {
    const created = await s.call('POST', '/admin/v1/principals', { body: { name: 'audit-bot', role: 'auditor' } });
    assert.equal(created.status, 201);
    assert.equal(created.headers.get('cache-control'), 'no-store');
    const auditor = created.json.token as string;
    assert.match(auditor, /^writ\.[0-9a-f]{16}\.[A-Za-z0-9_-]{43}$/);
    assert.equal((await s.call('GET', '/admin/v1/audit/events?limit=1', { token: auditor })).status, 200);
    const denied = await s.call('POST', '/admin/v1/principals', { token: auditor, body: { name: 'x', role: 'admin' } });
    assert.equal(denied.status, 403);
    assert.equal(denied.json.code, 'ERR_GOV_FORBIDDEN');
    assert.equal(denied.json.message, 'role `auditor` lacks permission `principals.manage`');
    const op = await s.call('POST', '/admin/v1/principals', { body: { name: 'ops', role: 'operator' } });
    assert.equal((await s.call('GET', '/admin/v1/audit/verify', { token: op.json.token })).status, 403);
  });

  it('bad input: malformed JSON, wrong content type, unknown, missing and mistyped fields, oversize body', async () => {
    const cases: [string, Parameters<TestServer['call']>[2], number, string, string][] = [
      ['malformed json', { rawBody: '{"name":', headers: { 'content-type': 'application/json' } }, 400, 'ERR_SERVER_MALFORMED_JSON', 'body is not valid JSON'],
      ['empty json', { rawBody: '', headers: { 'content-type': 'application/json' } }, 400, 'ERR_SERVER_MALFORMED_JSON', 'body is empty but the content type says JSON'],
      ['text/plain', { rawBody: 'name=x', headers: { 'content-type': 'text/plain' } }, 415, 'ERR_SERVER_UNSUPPORTED_MEDIA_TYPE', 'content type is not supported here; send `application/json`'],
      ['form', { rawBody: 'name=x', headers: { 'content-type': 'application/x-www-form-urlencoded' } }, 415, 'ERR_SERVER_UNSUPPORTED_MEDIA_TYPE', 'content type is not supported here; send `application/json`'],
      ['unknown field', { body: { name: 'a', role: 'admin', extra: 1 } }, 400, 'ERR_SERVER_BAD_REQUEST', 'body has unknown field `extra`'],
      ['missing field', { body: { name: 'a' } }, 400, 'ERR_SERVER_BAD_REQUEST', 'body is missing required field `role`'],
      ['wrong type', { body: { name: 5, role: 'admin' } }, 400, 'ERR_SERVER_BAD_REQUEST', 'body field `name` must be string'],
      ['bad enum', { body: { name: 'a', role: 'root' } }, 400, 'ERR_SERVER_BAD_REQUEST', 'body field `role` must be equal to one of the allowed values'],
      ['array body', { body: [1] }, 400, 'ERR_SERVER_BAD_REQUEST', 'body must be object'],
      ['bad name', { body: { name: 'Has Spaces', role: 'admin' } }, 400, 'ERR_GOV_PRINCIPAL_NAME_INVALID', 'principal name `Has Spaces` must be 1-63 of a-z, 0-9, dot, dash, underscore, starting with a letter or digit'],
      ['oversize', { body: { name: 'a'.repeat(4096), role: 'admin' } }, 413, 'ERR_SERVER_BODY_TOO_LARGE', 'request body is larger than the limit'],
    ];
    for (const [name, opts, status, code, message] of cases) {
      const r = await s.call('POST', '/admin/v1/principals', opts);
      assert.equal(r.status, status, `${name}: ${r.text}`);
      assert.equal(r.json.code, code, name);
      assert.equal(r.json.message, message, name);
      assert.match(r.json.correlationId, /^[0-9a-f]{32}$/, name);
    }
    const q = await s.call('GET', '/admin/v1/audit/events?limit=0');
    assert.equal(q.status, 400);
    assert.equal(q.json.code, 'ERR_SERVER_BAD_REQUEST');
    const unknownQuery = await s.call('GET', '/admin/v1/audit/events?sort=desc');
    assert.equal(unknownQuery.json.message, 'querystring has unknown field `sort`');
    const badId = await s.call('DELETE', '/admin/v1/principals/not-hex');
    assert.equal(badId.status, 400);
    const nf = await s.call('GET', '/admin/v1/nope');
    assert.equal(nf.status, 404);
    assert.equal(nf.json.code, 'ERR_SERVER_NOT_FOUND');
  });

  it('the router\'s own refusals (overlong path segment, malformed `%` escape) have the one error shape', async () => {
    const long = await s.call('GET', `/admin/v1/principals/${'a'.repeat(257)}`);
    assert.equal(long.status, 414, long.text);
    assert.equal(long.json.code, 'ERR_SERVER_URI_TOO_LONG');
    assert.equal(long.json.message, 'a path segment is longer than 256 characters');
    assert.match(long.json.correlationId, /^[0-9a-f]{32}$/);
    assert.equal(long.headers.get('x-correlation-id'), long.json.correlationId);
    const bad = await s.call('GET', '/admin/v1/principals/%E0%A4%A', { token: null });
    assert.equal(bad.status, 400, bad.text);
    assert.equal(bad.json.code, 'ERR_SERVER_BAD_REQUEST');
    assert.equal(bad.json.message, 'path is not a valid URL: a `%` escape is malformed');
    assert.equal(Object.keys(bad.json).sort().join(','), 'code,correlationId,message');
  });

  it('principal lifecycle: duplicate name 409, rotate kills the old credential, revoke kills it, last admin stays', async () => {
    const c = await s.call('POST', '/admin/v1/principals', { body: { name: 'second-admin', role: 'admin' } });
    assert.equal(c.status, 201);
    const dup = await s.call('POST', '/admin/v1/principals', { body: { name: 'second-admin', role: 'auditor' } });
    assert.equal(dup.status, 409);
    assert.equal(dup.json.code, 'ERR_GOV_PRINCIPAL_EXISTS');
    assert.equal(dup.json.message, 'an admin principal named `second-admin` already exists');
    const id = c.json.principal.id as string;
    const rot = await s.call('POST', `/admin/v1/principals/${id}/rotate`);
    assert.equal(rot.status, 200);
    assert.equal((await s.call('GET', '/admin/v1/whoami', { token: c.json.token })).status, 401, 'old credential dead');
    assert.equal((await s.call('GET', '/admin/v1/whoami', { token: rot.json.token })).status, 200);
    assert.equal((await s.call('DELETE', `/admin/v1/principals/${id}`)).status, 204);
    assert.equal((await s.call('GET', '/admin/v1/whoami', { token: rot.json.token })).status, 401, 'revoked');
    const me = (await s.call('GET', '/admin/v1/whoami')).json.id as string;
    const last = await s.call('DELETE', `/admin/v1/principals/${me}`);
    assert.equal(last.status, 409);
    assert.equal(last.json.code, 'ERR_GOV_LAST_ADMIN');
    const gone = await s.call('DELETE', '/admin/v1/principals/0000000000000000');
    assert.equal(gone.status, 404);
    assert.equal(gone.json.code, 'ERR_GOV_PRINCIPAL_NOT_FOUND');
  });

  it('every admin call is audited, refusals too, under its correlation id; W3C traceparent and X-Request-ID are honoured', async () => {
    const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
    const r = await s.call('GET', '/admin/v1/whoami', { headers: { traceparent: `00-${traceId}-00f067aa0ba902b7-01`, 'x-request-id': 'req-123' } });
    assert.equal(r.headers.get('x-correlation-id'), traceId);
    assert.equal(r.headers.get('x-request-id'), 'req-123');
    const denied = await s.call('GET', '/admin/v1/whoami', { token: null });
    const corr = denied.headers.get('x-correlation-id') ?? '';
    const ev = await s.call('GET', `/admin/v1/audit/events?correlationId=${traceId}`);
    assert.equal(ev.json.events.length, 1);
    assert.equal(ev.json.events[0].action, 'api.called');
    assert.equal(ev.json.events[0].outcome, 'success');
    assert.deepEqual(ev.json.events[0].details, { method: 'GET', route: '/admin/v1/whoami', path: '/admin/v1/whoami', status: 200 });
    const ev2 = await s.call('GET', `/admin/v1/audit/events?correlationId=${corr}`);
    assert.equal(ev2.json.events[0].outcome, 'denied');
    assert.deepEqual(ev2.json.events[0].reasons, ['unauthenticated']);
    assert.equal(ev2.json.events[0].actor.type, 'anonymous');
  });

  it('no credential ever reaches the audit log or the server log', async () => {
    const c = await s.call('POST', '/admin/v1/principals', { body: { name: 'leak-check', role: 'auditor' } });
    const tok = c.json.token as string;
    await s.call('GET', '/admin/v1/whoami', { token: tok });
    await s.call('GET', '/admin/v1/whoami?token=' + encodeURIComponent(tok), { token: tok });
    await s.server.store.db.selectFrom('audit_events').selectAll().execute(); // store reachable
    const db = new DatabaseSync(join(s.dataDir, 'writ.db'), { readOnly: true });
    const rows = db.prepare('select event from audit_events').all() as { event: string }[];
    db.close();
    const secretParts = [tok, tok.split('.')[2] ?? 'x', s.token, s.token.split('.')[2] ?? 'x'];
    for (const secret of secretParts) {
      assert.ok(!rows.some((r) => r.event.includes(secret)), 'credential in audit table');
      assert.ok(!s.logs().includes(secret), 'credential in server log');
    }
    assert.ok(s.logs().includes('"path":"/admin/v1/whoami"'), 'the log does record the request path');
  });

  it('audit verify and export answer through the API', async () => {
    const v = await s.call('GET', '/admin/v1/audit/verify');
    assert.equal(v.json.ok, true);
    assert.ok(v.json.checked > 10);
    const ex = await s.call('GET', '/admin/v1/audit/export?format=ocsf');
    const lines = ex.text.trim().split('\n').map((l) => JSON.parse(l));
    assert.ok(lines.length >= v.json.checked);
    assert.equal(lines[0].metadata.version, '1.8.0');
    assert.equal(lines[0].type_uid, lines[0].class_uid * 100 + lines[0].activity_id);
  });
});

describe('admin API over HTTP (PostgreSQL store)', () => {
  it('bootstraps, authenticates, audits and verifies on PostgreSQL', async (t) => {
    if (await skipWithoutPostgres(t)) return;
    const s = await startTestServer({ postgres: true });
    try {
      assert.equal((await s.call('GET', '/admin/v1/whoami')).json.name, 'bootstrap');
      assert.equal((await s.call('GET', '/admin/v1/whoami', { token: null })).status, 401);
      const st = (await s.call('GET', '/admin/v1/status')).json;
      assert.equal(st.store.kind, 'postgres');
      assert.ok(!JSON.stringify(st).includes('postgres@'), 'store credentials hidden');
      const v = (await s.call('GET', '/admin/v1/audit/verify')).json;
      assert.equal(v.ok, true);
      assert.ok(v.checked >= 4);
    } finally {
      await s.stop();
    }
  });
});

describe('bootstrap of two replicas at once (PostgreSQL)', () => {
  it('exactly one replica creates the bootstrap admin; its credential works on both', async (t) => {
    if (await skipWithoutPostgres(t)) return;
    const { startServer } = await import('../../src/server/index.ts');
    const { mkdtempSync, existsSync, readFileSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { PG_URL, scratchSchema, dropSchema } = await import('../support/services.ts');
    const schema = scratchSchema('writ_boot');
    const dirs = [mkdtempSync(join(tmpdir(), 'writ-a-')), mkdtempSync(join(tmpdir(), 'writ-b-'))];
    // Replicas share the key-encryption key, as they must in production.
    const { randomBytes } = await import('node:crypto');
    const env = { WRIT_KEK: randomBytes(32).toString('base64') };
    const started = await Promise.allSettled(dirs.map((d) => startServer({ env, flags: { listen: '127.0.0.1:0', dataDir: d, store: PG_URL, logLevel: 'silent' }, pgSchema: schema })));
    const servers = started.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    try {
      assert.deepEqual(started.map((r) => r.status), ['fulfilled', 'fulfilled'], String(started.map((r) => (r.status === 'rejected' ? r.reason : '')).join(' ')));
      const withToken = dirs.filter((d) => existsSync(join(d, 'admin.token')));
      assert.equal(withToken.length, 1, 'one token file');
      assert.equal(servers.filter((s) => s.bootstrapTokenFile !== undefined).length, 1);
      const token = readFileSync(join(withToken[0] ?? '', 'admin.token'), 'utf8').trim();
      for (const s of servers) {
        const r = await fetch(`${s.url}/admin/v1/whoami`, { headers: { authorization: `Bearer ${token}` } });
        assert.equal(r.status, 200);
      }
    } finally {
      await Promise.all(servers.map((s) => s.close()));
      for (const d of dirs) rmSync(d, { recursive: true, force: true });
      await dropSchema(schema);
    }
  });
});
