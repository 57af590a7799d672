/**
 * The credentials admin API on a real server (PostgreSQL store, real
 * PostgreSQL and Redis engines): tasks, dynamic credentials, leases, quotas,
 * permissions, and no secret in the server log or the audit table.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { startTestServer } from '../support/server.ts';
import type { TestServer } from '../support/server.ts';
import { PG_URL, REDIS_URL, postgresProblem, redisProblem, skipWithoutPostgres, skipWithoutRedis, scratchSchema, dropSchema } from '../support/services.ts';
import { RespClient } from '../../src/credentials/engines/resp.ts';

async function pgQuery<T extends pg.QueryResultRow>(text: string, values: unknown[] = []): Promise<T[]> {
  const c = new pg.Client({ connectionString: PG_URL });
  await c.connect();
  try {
    return (await c.query<T>(text, values)).rows;
  } finally {
    await c.end();
  }
}

describe('credentials admin API', () => {
  const schema = scratchSchema('writ_capi');
  const prefix = `writ_a${randomBytes(4).toString('hex')}_`;
  let s: TestServer | undefined;
  let problem: string | undefined;

  before(async () => {
    problem = (await postgresProblem()) ?? (await redisProblem());
    if (problem !== undefined) return;
    await pgQuery(`create schema ${schema}; create table ${schema}.items (id int)`);
    const engines = [
      { name: 'main', type: 'postgres', url: PG_URL, prefix, roles: { reader: { grants: [`grant usage on schema ${schema} to {{name}}`, `grant select on all tables in schema ${schema} to {{name}}`], maxTtlSeconds: 600 } } },
      { name: 'cache', type: 'redis', url: REDIS_URL, prefix, roles: { app: { keys: ['app:*'], commands: ['+@read'] } } },
    ];
    s = await startTestServer({ postgres: true, flags: { logLevel: 'debug', 'credentials.engines': JSON.stringify(engines), 'credentials.maxLeasesPerIdentity': 4, 'credentials.reaperIntervalSeconds': 0 } });
  });
  after(async () => {
    if (s === undefined) return;
    await s.stop();
    for (const r of await pgQuery<{ rolname: string }>('select rolname from pg_roles where starts_with(rolname, $1)', [prefix])) await pgQuery(`drop owned by "${r.rolname}"; drop role "${r.rolname}"`);
    const r = await RespClient.connect(REDIS_URL);
    for (const u of (await r.command(['ACL', 'USERS'])) as string[]) if (u.startsWith(prefix)) await r.command(['ACL', 'DELUSER', u]);
    r.close();
    await dropSchema(schema);
  });

  const need = async (t: { skip(m: string): void }): Promise<TestServer | undefined> => {
    if (await skipWithoutPostgres(t as never)) return undefined;
    if (await skipWithoutRedis(t as never)) return undefined;
    return s;
  };

  it('issues every kind of credential, bound to a task; completing it returns the receipt; no secret reaches the log or the audit table', async (t) => {
    const srv = await need(t);
    if (srv === undefined) return;
    const task = await srv.call('POST', '/admin/v1/tasks', { body: { owner: 'spiffe://example.org/ci/run-7', ttlSeconds: 600, scopes: ['db:read'], description: 'nightly' } });
    assert.equal(task.status, 201, task.text);
    assert.match(task.json.id, /^task_[0-9a-f]{24}$/);
    assert.equal(task.json.state, 'active');

    const secrets: string[] = [];
    const pgCred = await srv.call('POST', '/admin/v1/creds/main', { body: { role: 'reader', subject: 'spiffe://example.org/ci/run-7', taskId: task.json.id, ttlSeconds: 3600 } });
    assert.equal(pgCred.status, 201, pgCred.text);
    assert.equal(pgCred.headers.get('cache-control'), 'no-store');
    assert.equal(pgCred.json.username, `${prefix}${pgCred.json.lease.id}`);
    assert.deepEqual(pgCred.json.connection, { host: '127.0.0.1', port: 5432, database: 'test' });
    assert.equal(pgCred.json.lease.expiresAt, task.json.deadline, 'capped by the task deadline (the role maximum is the same 600 s, from later)');
    secrets.push(pgCred.json.password);
    const redisCred = await srv.call('POST', '/admin/v1/creds/cache', { body: { role: 'app', subject: 'spiffe://example.org/ci/run-7', taskId: task.json.id } });
    assert.equal(redisCred.status, 201, redisCred.text);
    secrets.push(redisCred.json.password);
    const adminCred = await srv.call('POST', '/admin/v1/creds/main', { body: { role: 'reader', ttlSeconds: 60 } });
    assert.equal(adminCred.status, 201);
    assert.match(adminCred.json.lease.subject, /^admin:/);
    secrets.push(adminCred.json.password);
    for (const x of secrets) assert.match(x, /^[A-Za-z0-9_-]{43}$/);

    const shown = await srv.call('GET', `/admin/v1/tasks/${task.json.id}`);
    assert.deepEqual(shown.json.leases.map((l: { id: string }) => l.id).sort(), [pgCred.json.lease.id, redisCred.json.lease.id].sort());

    const renewed = await srv.call('POST', `/admin/v1/leases/${adminCred.json.lease.id}/renew`, { body: { ttlSeconds: 120 } });
    assert.equal(renewed.status, 200, renewed.text);
    const [row] = await pgQuery<{ until: string }>("select to_char(rolvaliduntil at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') as until from pg_roles where rolname = $1", [adminCred.json.username]);
    assert.equal(row?.until, renewed.json.expiresAt.slice(0, 19), 'renewal moves VALID UNTIL');

    const done = await srv.call('POST', `/admin/v1/tasks/${task.json.id}/complete`);
    assert.equal(done.status, 200, done.text);
    assert.equal(done.json.task.state, 'completed');
    assert.deepEqual(done.json.revoked.map((r: { leaseId: string }) => r.leaseId).sort(), [pgCred.json.lease.id, redisCred.json.lease.id].sort());
    assert.deepEqual(await pgQuery('select 1 from pg_roles where rolname = $1', [pgCred.json.username]), []);
    const again = await srv.call('POST', `/admin/v1/tasks/${task.json.id}/complete`);
    assert.equal(again.status, 409);
    assert.equal(again.json.code, 'ERR_CRED_TASK_NOT_ACTIVE');

    const revoked = await srv.call('POST', `/admin/v1/leases/${adminCred.json.lease.id}/revoke`, { body: { reason: 'done' } });
    assert.equal(revoked.json.revoked, true);
    assert.equal(revoked.json.lease.state, 'revoked');

    // The receipt and every lease change are in the audit log, with the task's correlation id.
    const store = srv.server.store;
    const rows = await store.query({ afterSeq: 0, limit: 100_000 });
    const completed = rows.find((r) => r.action === 'task.completed');
    assert.ok(completed);
    const body = JSON.parse(completed.event) as { details: { revokedCount: number; endedBy: string } };
    assert.equal(body.details.revokedCount, 2);
    assert.match(body.details.endedBy, /^admin:/);
    for (const a of ['lease.opened', 'lease.activated', 'lease.renewed', 'lease.revoked', 'task.started']) assert.ok(rows.some((r) => r.action === a), a);

    await new Promise((r) => setTimeout(r, 200));
    const logs = srv.logs();
    assert.ok(logs.length > 1000, 'the server logged');
    const audit = rows.map((r) => r.event).join('\n');
    for (const secret of secrets) {
      assert.equal(logs.includes(secret), false, 'a password is in the server log');
      assert.equal(audit.includes(secret), false, 'a password is in the audit table');
    }
    const leaseRows = JSON.stringify(await store.credentials.listLeases({}));
    for (const secret of secrets) assert.equal(leaseRows.includes(secret), false, 'a password is in the lease table');
  });

  it('quota, validation and permission errors are explicit', async (t) => {
    const srv = await need(t);
    if (srv === undefined) return;
    const subject = `spiffe://example.org/q/${randomBytes(3).toString('hex')}`;
    for (let i = 0; i < 4; i++) assert.equal((await srv.call('POST', '/admin/v1/creds/cache', { body: { role: 'app', subject } })).status, 201);
    const over = await srv.call('POST', '/admin/v1/creds/cache', { body: { role: 'app', subject } });
    assert.equal(over.status, 429);
    assert.equal(over.json.code, 'ERR_CRED_QUOTA_EXCEEDED');
    assert.equal(over.json.message, `\`${subject}\` holds 4 live leases; the quota is 4`);

    const listed = await srv.call('GET', `/admin/v1/leases?subject=${encodeURIComponent(subject)}&state=live`);
    assert.equal(listed.json.leases.length, 4);
    const bulk = await srv.call('POST', '/admin/v1/leases/revoke', { body: { prefix: 'spiffe://example.org/q/', reason: 'test' } });
    assert.equal(bulk.json.revoked.length, 4);
    assert.equal((await srv.call('POST', '/admin/v1/creds/cache', { body: { role: 'app', subject } })).status, 201, 'revoking freed the quota');

    const cases: [string, string, unknown, number, string, string][] = [
      ['POST', '/admin/v1/creds/nope', { role: 'reader' }, 404, 'ERR_CRED_ENGINE_NOT_FOUND', 'no secret engine `nope`'],
      ['POST', '/admin/v1/creds/main', { role: 'writer' }, 404, 'ERR_CRED_ROLE_NOT_FOUND', 'engine `main` has no role `writer`'],
      ['POST', '/admin/v1/creds/main', { role: 'reader', taskId: 'task_none' }, 404, 'ERR_CRED_TASK_NOT_FOUND', 'no task `task_none`'],
      ['POST', '/admin/v1/leases/revoke', { taskId: 'a', subject: 'b' }, 400, 'ERR_CRED_REVOKE_SELECTOR_INVALID', 'name exactly one of `taskId`, `subject` or `prefix`'],
      ['POST', '/admin/v1/leases/ffffffffffffffffffffffff/renew', { ttlSeconds: 10 }, 404, 'ERR_CRED_LEASE_NOT_FOUND', 'no lease `ffffffffffffffffffffffff`'],
      ['GET', '/admin/v1/tasks/task_missing', undefined, 404, 'ERR_CRED_TASK_NOT_FOUND', 'no task `task_missing`'],
    ];
    for (const [method, path, body, status, code, message] of cases) {
      const r = await srv.call(method, path, body === undefined ? {} : { body });
      assert.equal(r.status, status, `${path}: ${r.text}`);
      assert.equal(r.json.code, code);
      assert.equal(r.json.message, message);
    }

    const auditor = await srv.call('POST', '/admin/v1/principals', { body: { name: 'aud', role: 'auditor' } });
    assert.equal(auditor.status, 201, auditor.text);
    const denied = await srv.call('POST', '/admin/v1/creds/main', { token: auditor.json.token, body: { role: 'reader' } });
    assert.equal(denied.status, 403);
    assert.equal(denied.json.message, 'role `auditor` lacks permission `creds.issue`');
    assert.equal((await srv.call('GET', '/admin/v1/leases?state=revoked', { token: auditor.json.token })).status, 200);
  });
});
