/**
 * `writ task|creds|lease` against a real server with a real PostgreSQL
 * engine; `psql` uses the URL `writ creds postgres` wrote (mode 0600).
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { main as cli } from '../../src/cli/main.ts';
import { startTestServer } from '../support/server.ts';
import type { TestServer } from '../support/server.ts';
import { PG_URL, postgresProblem, skipWithoutPostgres, scratchSchema, dropSchema } from '../support/services.ts';

async function pgQuery<T extends pg.QueryResultRow>(text: string, values: unknown[] = []): Promise<T[]> {
  const c = new pg.Client({ connectionString: PG_URL });
  await c.connect();
  try {
    return (await c.query<T>(text, values)).rows;
  } finally {
    await c.end();
  }
}

describe('writ task|creds|lease', () => {
  const schema = scratchSchema('writ_ccli');
  const prefix = `writ_l${randomBytes(4).toString('hex')}_`;
  let s: TestServer | undefined;

  before(async () => {
    if ((await postgresProblem()) !== undefined) return;
    await pgQuery(`create schema ${schema}; create table ${schema}.items (id int); insert into ${schema}.items values (7)`);
    const engines = [{ name: 'postgres', type: 'postgres', url: PG_URL, prefix, roles: { reader: { grants: [`grant usage on schema ${schema} to {{name}}`, `grant select on all tables in schema ${schema} to {{name}}`] } } }];
    s = await startTestServer({ flags: { 'credentials.engines': JSON.stringify(engines), 'credentials.reaperIntervalSeconds': 0 } });
  });
  after(async () => {
    if (s === undefined) return;
    await s.stop();
    for (const r of await pgQuery<{ rolname: string }>('select rolname from pg_roles where starts_with(rolname, $1)', [prefix])) await pgQuery(`drop owned by "${r.rolname}"; drop role "${r.rolname}"`);
    await dropSchema(schema);
  });

  const run = async (...args: string[]): Promise<{ code: number; out: string; err: string }> => {
    if (s === undefined) throw new Error('no server');
    const out: string[] = [];
    const err: string[] = [];
    const code = await cli([...args, '--server', s.url, '--token-file', join(s.dataDir, 'admin.token')], { out: (x) => out.push(x), err: (x) => err.push(x), env: {} });
    return { code, out: out.join('\n'), err: err.join('\n') };
  };

  it('starts a task, issues a credential into a 0600 file psql can use, lists, renews, shows and completes', async (t) => {
    if (await skipWithoutPostgres(t) || s === undefined) return;
    const started = await run('task', 'start', '--owner', 'spiffe://example.org/ci/job-1', '--ttl', '900', '--scope', 'db:read', '--json');
    assert.equal(started.code, 0, started.err);
    const task = JSON.parse(started.out) as { id: string; deadline: string };

    const file = join(s.dataDir, 'db.url');
    const issued = await run('creds', 'postgres', '--role', 'reader', '--task', task.id, '--ttl', '300', '--output', file);
    assert.equal(issued.code, 0, issued.err);
    assert.equal(issued.out, '', 'nothing on stdout when writing a file');
    assert.match(issued.err, new RegExp(`^lease ([0-9a-f]{24}): ${prefix}[0-9a-f]{24} expires \\S+ \\(renewable to \\S+\\); credential written to ${file.replace(/[.]/g, '\\.')}$`));
    assert.equal(statSync(file).mode & 0o777, 0o600);
    const url = readFileSync(file, 'utf8').trim();
    assert.match(url, new RegExp(`^postgres://${prefix}[0-9a-f]{24}:[A-Za-z0-9_-]{43}@127\\.0\\.0\\.1:5432/test$`));
    const psql = spawnSync('psql', ['-X', '-A', '-t', '-c', `select id from ${schema}.items`, url], { encoding: 'utf8' });
    assert.equal(psql.status, 0, psql.stderr);
    assert.equal(psql.stdout.trim(), '7');
    const leaseId = /^lease ([0-9a-f]{24})/.exec(issued.err)?.[1] ?? '';

    const again = await run('creds', 'postgres', '--role', 'reader', '--output', file);
    assert.equal(again.code, 2, 'an existing file is never overwritten');
    assert.equal(again.err, `writ creds postgres: ${file} exists; the credential file must be new (ERR_CLI_USAGE)`);
    assert.equal(JSON.parse((await run('lease', 'list', '--state', 'live', '--json')).out).length, 1, 'and nothing was issued');

    const listed = await run('lease', 'list', '--task', task.id, '--state', 'live', '--json');
    assert.deepEqual((JSON.parse(listed.out) as { id: string }[]).map((l) => l.id), [leaseId]);
    const renewed = await run('lease', 'renew', leaseId, '--ttl', '600');
    assert.equal(renewed.code, 0, renewed.err);
    assert.match(renewed.out, new RegExp(`^lease ${leaseId} renewed; expires \\S+ \\(maximum ${task.deadline.replace(/[.]/g, '\\.')}\\)$`));
    const shown = await run('task', 'show', task.id);
    assert.match(shown.out, new RegExp(`^task ${task.id}  active  owner spiffe://example.org/ci/job-1`));
    assert.match(shown.out, new RegExp(`${leaseId}  postgres  active`));

    const done = await run('task', 'complete', task.id);
    assert.equal(done.code, 0, done.err);
    assert.match(done.out, new RegExp(`^task ${task.id} completed at \\S+ by admin:\\S+; 1 lease\\(s\\) revoked`));
    const after = spawnSync('psql', ['-X', '-c', 'select 1', url], { encoding: 'utf8' });
    assert.equal(after.status, 2, 'the credential no longer logs in');
  });

  it('prints a credential once on stdout, revokes by id and in bulk, and refuses bad usage', async (t) => {
    if (await skipWithoutPostgres(t) || s === undefined) return;
    const printed = await run('creds', 'postgres', '--role', 'reader', '--subject', 'spiffe://example.org/cli/a');
    assert.equal(printed.code, 0, printed.err);
    assert.match(printed.out, /^postgres:\/\/writ_l[0-9a-f]{8}_[0-9a-f]{24}:[A-Za-z0-9_-]{43}@127\.0\.0\.1:5432\/test$/);
    assert.match(printed.err, /the password is not shown again$/);
    const id = /^lease ([0-9a-f]{24})/.exec(printed.err)?.[1] ?? '';
    assert.equal((await run('lease', 'revoke', id, '--reason', 'rotated')).out, `lease ${id} revoked`);
    assert.equal((await run('lease', 'revoke', id)).out, `lease ${id} was already revoked`);

    await run('creds', 'postgres', '--role', 'reader', '--subject', 'spiffe://example.org/cli/b');
    await run('creds', 'postgres', '--role', 'reader', '--subject', 'spiffe://example.org/cli/c');
    const bulk = await run('lease', 'revoke-all', '--prefix', 'spiffe://example.org/cli/');
    assert.match(bulk.out, /^2 lease\(s\) revoked\n/);

    const usage = await run('lease', 'revoke-all', '--task', 'x', '--subject', 'y');
    assert.equal(usage.code, 2);
    assert.match(usage.err, /name exactly one of --task, --subject or --prefix/);
    const noRole = await run('creds', 'redis');
    assert.equal(noRole.code, 2);
    assert.match(noRole.err, /--role is required/);
    const unknown = await run('creds', 'redis', '--role', 'app');
    assert.equal(unknown.code, 1);
    assert.match(unknown.err, /no secret engine `redis`/);
  });
});
