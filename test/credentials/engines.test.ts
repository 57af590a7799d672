/**
 * Dynamic secret engines against the real services, with the real clients:
 * `psql` logs in with a dynamic PostgreSQL role and `redis-cli` with a Redis
 * ACL user; revoking the lease, its expiry or completing its task ends the
 * open session and a new login fails.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { ManualClock } from '../../src/kernel/index.ts';
import { buildEngines, postgresPlugin, redisPlugin } from '../../src/credentials/index.ts';
import type { DynamicCredential } from '../../src/credentials/index.ts';
import { PG_URL, REDIS_URL, postgresProblem, redisProblem, skipWithoutPostgres, skipWithoutRedis, scratchSchema, dropSchema } from '../support/services.ts';
import { RespClient } from '../../src/credentials/engines/resp.ts';
import { credContext } from './support.ts';
import type { CredContext } from './support.ts';

const admin = { type: 'admin' as const, id: 'adm1' };

async function pgQuery<T extends pg.QueryResultRow>(text: string, values: unknown[] = []): Promise<T[]> {
  const c = new pg.Client({ connectionString: PG_URL });
  await c.connect();
  try {
    return (await c.query<T>(text, values)).rows;
  } finally {
    await c.end();
  }
}

/** A long-lived client process; resolves `exited` with its exit code. */
interface Session {
  readonly proc: ChildProcessWithoutNullStreams;
  readonly exited: Promise<number | null>;
  out(): string;
  waitFor(text: string, ms?: number): Promise<void>;
}

function session(cmd: string, args: string[], env: Record<string, string> = {}): Session {
  const proc = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: 'pipe' });
  let out = '';
  proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));
  return {
    proc,
    exited,
    out: () => out,
    async waitFor(text, ms = 10_000) {
      const until = Date.now() + ms;
      while (!out.includes(text)) {
        if (Date.now() > until) throw new Error(`timed out waiting for ${JSON.stringify(text)}; got ${JSON.stringify(out)}`);
        await new Promise((r) => setTimeout(r, 25));
      }
    },
  };
}

async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, rej) => (t = setTimeout(() => rej(new Error(`timed out: ${what}`)), ms)))]);
  } finally {
    if (t !== undefined) clearTimeout(t);
  }
}

function psqlArgs(cred: DynamicCredential): { args: string[]; env: Record<string, string> } {
  const c = cred.connection;
  return { args: ['-X', '-q', '-A', '-t', '-h', String(c.host), '-p', String(c.port), '-U', cred.username, '-d', String(c.database)], env: { PGPASSWORD: cred.password.reveal(), PGCONNECT_TIMEOUT: '5' } };
}

/** psql logs in and keeps its session open; returns it after proving it works. */
async function openPsql(cred: DynamicCredential, schema: string): Promise<Session> {
  const { args, env } = psqlArgs(cred);
  const s = session('psql', args, env);
  s.proc.stdin.write(`select current_user || ':' || count(*) from ${schema}.items;\n`);
  await s.waitFor(`${cred.username}:2`);
  return s;
}

async function sessionsOf(username: string, settleMs = 0): Promise<number> {
  // pg_terminate_backend signals the backend; it leaves pg_stat_activity a moment later.
  const until = Date.now() + settleMs;
  for (;;) {
    const r = await pgQuery<{ n: string }>('select count(*) as n from pg_stat_activity where usename = $1', [username]);
    const n = Number(r[0]?.n ?? -1);
    if (n === 0 || Date.now() >= until) return n;
    await new Promise((res) => setTimeout(res, 50));
  }
}

/** The open psql session ends, no backend of the role remains, and a new login fails. */
async function assertPgCutOff(s: Session, cred: DynamicCredential): Promise<void> {
  assert.equal(await sessionsOf(cred.username, 3000), 0, 'pg_stat_activity holds no session of the role');
  // The terminated session: its next statement finds the connection gone and psql exits non-zero.
  s.proc.stdin.write('select 1;\n');
  const code = await within(s.exited, 10_000, 'psql to exit');
  assert.notEqual(code, 0);
  assert.match(s.out(), /terminat|server closed the connection|connection to server was lost/i);
  const { args, env } = psqlArgs(cred);
  const again = spawnSync('psql', [...args, '-c', 'select 1'], { env: { ...process.env, ...env }, encoding: 'utf8' });
  assert.equal(again.status, 2, 'a new login fails');
  assert.match(again.stderr, new RegExp(`role "${cred.username}" does not exist`));
  assert.deepEqual(await pgQuery('select 1 from pg_roles where rolname = $1', [cred.username]), [], 'the role is dropped');
}

describe('postgres engine (psql)', () => {
  const schema = scratchSchema('writ_cred');
  const prefix = `writ_t${randomBytes(4).toString('hex')}_`;
  let c: CredContext | undefined;
  let clock: ManualClock;

  before(async () => {
    if ((await postgresProblem()) !== undefined) return;
    await pgQuery(`create schema ${schema}; create table ${schema}.items (id int); insert into ${schema}.items values (1), (2)`);
    clock = new ManualClock(Date.now());
    const engines = buildEngines([{ name: 'main', type: 'postgres', url: PG_URL, prefix, roles: { reader: { grants: [`grant usage on schema ${schema} to {{name}}`, `grant select on all tables in schema ${schema} to {{name}}`] } } }]);
    c = await credContext({ engines, clock });
  });
  after(async () => {
    if (c === undefined) return;
    for (const r of await pgQuery<{ rolname: string }>('select rolname from pg_roles where starts_with(rolname, $1)', [prefix])) await pgQuery(`drop owned by "${r.rolname}"; drop role "${r.rolname}"`);
    await c.close();
    await dropSchema(schema);
  });

  const issue = async (taskId?: string): Promise<DynamicCredential> => {
    if (c === undefined) throw new Error('no context');
    return c.dynamic.issue({ engine: 'main', role: 'reader', subject: 'spiffe://example.org/ci', ...(taskId === undefined ? {} : { taskId }), ttlMs: 600_000, actor: admin, correlationId: 'c' });
  };

  it('a role is created with LOGIN PASSWORD … VALID UNTIL the lease expiry, named after its lease', async (t) => {
    if (await skipWithoutPostgres(t)) return;
    const cred = await issue();
    assert.equal(cred.username, `${prefix}${cred.lease.id}`);
    assert.equal(cred.lease.state, 'active');
    assert.deepEqual(cred.lease.handle, { engine: 'main', role: 'reader', username: cred.username });
    assert.match(cred.password.reveal(), /^[A-Za-z0-9_-]{43}$/);
    assert.equal(String(cred.password), '[redacted]');
    const [row] = await pgQuery<{ rolcanlogin: boolean; until: string; pw: boolean }>("select rolcanlogin, to_char(rolvaliduntil at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') as until, rolpassword is not null as pw from pg_authid where rolname = $1", [cred.username]);
    assert.equal(row?.rolcanlogin, true);
    assert.equal(row?.pw, true);
    assert.equal(row?.until, cred.lease.expiresAt.slice(0, 19));
    await c?.leases.revoke(cred.lease.id, 'test-cleanup', 'c');
  });

  it('revoking the lease terminates the open psql session and a new login fails', async (t) => {
    if (await skipWithoutPostgres(t)) return;
    const cred = await issue();
    const s = await openPsql(cred, schema);
    assert.equal(await sessionsOf(cred.username), 1);
    await c?.leases.revoke(cred.lease.id, 'compromised', 'c', admin);
    await assertPgCutOff(s, cred);
  });

  it('lease expiry: the reaper ends the session and drops the role', async (t) => {
    if (await skipWithoutPostgres(t) || c === undefined) return;
    const cred = await c.dynamic.issue({ engine: 'main', role: 'reader', subject: 'spiffe://example.org/ci', ttlMs: 30_000, actor: admin, correlationId: 'c' });
    const s = await openPsql(cred, schema);
    clock.advance(31_000);
    const pass = await c.reaper.pass();
    assert.equal(pass.leasesExpired, 1);
    assert.equal((await c.leases.get(cred.lease.id))?.state, 'expired');
    await assertPgCutOff(s, cred);
  });

  it('completing the task ends the session of every credential bound to it', async (t) => {
    if (await skipWithoutPostgres(t) || c === undefined) return;
    const task = await c.tasks.start({ owner: 'spiffe://example.org/ci', ttlMs: 3_600_000 }, admin, 'c');
    const a = await issue(task.id);
    const b = await issue(task.id);
    const sa = await openPsql(a, schema);
    const sb = await openPsql(b, schema);
    const receipt = await c.tasks.complete(task.id, admin, 'c-task');
    assert.deepEqual(receipt.revoked.map((r) => r.leaseId).sort(), [a.lease.id, b.lease.id].sort());
    await assertPgCutOff(sa, a);
    await assertPgCutOff(sb, b);
  });

  it('reconciliation drops a role whose lease is missing or ended, and keeps live ones', async (t) => {
    if (await skipWithoutPostgres(t) || c === undefined) return;
    const live = await issue();
    const stray = `${prefix}${'0'.repeat(24)}`;
    await pgQuery(`create role "${stray}" login`);
    const removed = await c.reaper.reconcile('c');
    assert.equal(removed, 1);
    const left = (await pgQuery<{ rolname: string }>('select rolname from pg_roles where starts_with(rolname, $1) order by 1', [prefix])).map((r) => r.rolname);
    assert.deepEqual(left, [live.username]);
    const ev = c.audit.events.find((e) => e.action === 'credential.orphan.removed');
    assert.deepEqual(ev?.reasons, ['no-lease']);
    await c.leases.revoke(live.lease.id, 'test-cleanup', 'c');
  });

  it('a role the engine refuses leaves no live lease behind', async (t) => {
    if (await skipWithoutPostgres(t) || c === undefined) return;
    const bad = buildEngines([{ name: 'bad', type: 'postgres', url: PG_URL, prefix, roles: { broken: { grants: ['grant select on no_such_table_xyz to {{name}}'] } } }]);
    const c2 = await credContext({ engines: bad });
    try {
      const err = await c2.dynamic.issue({ engine: 'bad', role: 'broken', subject: 's', ttlMs: 60_000, actor: admin, correlationId: 'c' }).catch((e: unknown) => e);
      assert.equal((err as { code?: string }).code, 'ERR_CRED_ENGINE_FAILED');
      assert.equal((err as Error).message, 'postgres engine `bad` could not create a role for `broken`');
      const [lease] = await c2.leases.list({ subject: 's' });
      assert.equal(lease?.state, 'revoked');
      assert.equal(lease?.revokeReason, 'engine-create-failed');
      assert.deepEqual(await pgQuery('select 1 from pg_roles where rolname = $1', [lease?.handle.username]), [], 'the transaction rolled the role back');
    } finally {
      await c2.close();
    }
  });
});

describe('redis engine (redis-cli)', () => {
  const prefix = `writ_t${randomBytes(4).toString('hex')}_`;
  let c: CredContext | undefined;
  let clock: ManualClock;

  before(async () => {
    if ((await redisProblem()) !== undefined) return;
    clock = new ManualClock(Date.now());
    const engines = buildEngines([{ name: 'cache', type: 'redis', url: REDIS_URL, prefix, roles: { app: { keys: ['app:*'], commands: ['+@read', '+@write', '+@connection', '-@dangerous'] } } }]);
    c = await credContext({ engines, clock });
  });
  after(async () => {
    if (c === undefined) return;
    const r = await RespClient.connect(REDIS_URL);
    for (const u of (await r.command(['ACL', 'USERS'])) as string[]) if (u.startsWith(prefix)) await r.command(['ACL', 'DELUSER', u]);
    await r.command(['DEL', 'app:k', 'other:k']);
    r.close();
    await c.close();
  });

  const cliArgs = (cred: DynamicCredential) => ['-h', String(cred.connection.host), '-p', String(cred.connection.port), '--user', cred.username, '--no-auth-warning'];
  const cli = (cred: DynamicCredential, ...cmd: string[]) => spawnSync('redis-cli', [...cliArgs(cred), ...cmd], { env: { ...process.env, REDISCLI_AUTH: cred.password.reveal() }, encoding: 'utf8' });
  const openCli = async (cred: DynamicCredential): Promise<Session> => {
    // One connection that pings every 0.2 s until the server drops it.
    const s = session('redis-cli', [...cliArgs(cred), '-r', '-1', '-i', '0.2', 'PING'], { REDISCLI_AUTH: cred.password.reveal() });
    await s.waitFor('PONG');
    return s;
  };
  const assertRedisCutOff = async (s: Session, cred: DynamicCredential): Promise<void> => {
    const code = await within(s.exited, 10_000, 'redis-cli to exit');
    assert.notEqual(code, 0);
    assert.match(s.out(), /Server closed the connection/);
    const again = cli(cred, 'GET', 'app:k');
    assert.match(again.stdout + again.stderr, /WRONGPASS|invalid username-password/i, 'a new login fails');
    const r = await RespClient.connect(REDIS_URL);
    try {
      assert.equal(((await r.command(['ACL', 'USERS'])) as string[]).includes(cred.username), false, 'the ACL user is deleted');
    } finally {
      r.close();
    }
  };
  const issue = (taskId?: string, ttlMs = 600_000) => {
    if (c === undefined) throw new Error('no context');
    return c.dynamic.issue({ engine: 'cache', role: 'app', subject: 'spiffe://example.org/worker', ...(taskId === undefined ? {} : { taskId }), ttlMs, actor: admin, correlationId: 'c' });
  };

  it('the ACL user reaches its key pattern and nothing else', async (t) => {
    if (await skipWithoutRedis(t)) return;
    const cred = await issue();
    assert.equal(cli(cred, 'SET', 'app:k', 'v').stdout.trim(), 'OK');
    assert.equal(cli(cred, 'GET', 'app:k').stdout.trim(), 'v');
    assert.match(cli(cred, 'GET', 'other:k').stdout, /NOPERM/);
    assert.match(cli(cred, 'FLUSHALL').stdout, /NOPERM/);
    await c?.leases.revoke(cred.lease.id, 'test-cleanup', 'c');
  });

  it('revoking the lease kills the open redis-cli connection and a new login fails', async (t) => {
    if (await skipWithoutRedis(t)) return;
    const cred = await issue();
    const s = await openCli(cred);
    await c?.leases.revoke(cred.lease.id, 'compromised', 'c', admin);
    await assertRedisCutOff(s, cred);
  });

  it('lease expiry: the reaper kills the connection and deletes the user', async (t) => {
    if (await skipWithoutRedis(t) || c === undefined) return;
    const cred = await issue(undefined, 20_000);
    const s = await openCli(cred);
    clock.advance(21_000);
    assert.equal((await c.reaper.pass()).leasesExpired, 1);
    await assertRedisCutOff(s, cred);
  });

  it('completing the task kills the connection', async (t) => {
    if (await skipWithoutRedis(t) || c === undefined) return;
    const task = await c.tasks.start({ owner: 'spiffe://example.org/worker', ttlMs: 3_600_000 }, admin, 'c');
    const cred = await issue(task.id);
    const s = await openCli(cred);
    await c.tasks.complete(task.id, admin, 'c');
    await assertRedisCutOff(s, cred);
  });
});

describe('engine definitions', () => {
  const cases: { def: unknown; message: string }[] = [
    { def: { name: 'x', type: 'mysql', url: 'x' }, message: 'engine `x`: `type` must be one of postgres, redis' },
    { def: { name: 'Bad Name', type: 'postgres', url: PG_URL, roles: {} }, message: 'engine `?`: `name` must be lowercase letters, digits, `-` or `_`' },
    { def: { name: 'p', type: 'postgres', url: 'http://x', roles: {} }, message: 'engine `p`: `url` must be a postgres:// URL' },
    { def: { name: 'p', type: 'postgres', url: PG_URL, prefix: 'Writ-', roles: {} }, message: 'engine `p`: `prefix` must be lowercase letters, digits or `_`, at most 30 characters' },
    { def: { name: 'p', type: 'postgres', url: PG_URL, roles: { r: { grants: [1] } } }, message: 'engine `p`: `roles.r.grants` must be a list of non-empty strings' },
    { def: { name: 'p', type: 'postgres', url: PG_URL, roles: {}, extra: 1 }, message: 'engine `p`: unknown field `extra`' },
    { def: { name: 'r', type: 'redis', url: REDIS_URL, roles: { a: { commands: ['allcommands'] } } }, message: 'engine `r`: `roles.a.commands` must be a list of non-empty strings of the allowed form' },
    { def: { name: 'r', type: 'redis', url: REDIS_URL, roles: { a: { keys: ['a b'] } } }, message: 'engine `r`: `roles.a.keys` must be a list of non-empty strings of the allowed form' },
  ];
  for (const { def, message } of cases) {
    it(`refuses: ${message}`, () => {
      assert.throws(() => buildEngines([def]), (e: { code?: string; message?: string; status?: number }) => e.code === 'ERR_CRED_ENGINE_CONFIG_INVALID' && e.message === message && e.status === 400);
    });
  }
  it('refuses two engines of one name, and accepts valid ones without connecting', async () => {
    assert.throws(() => buildEngines([{ name: 'a', type: 'redis', url: REDIS_URL, roles: {} }, { name: 'a', type: 'redis', url: REDIS_URL, roles: {} }]), (e: Error) => e.message === 'engine `a`: two engines have this name');
    assert.equal(postgresPlugin.validate({ name: 'p', type: 'postgres', url: 'postgres://u@db:5433/app', roles: { r: { grants: [], maxTtlSeconds: 60 } } }).prefix, 'writ_');
    assert.deepEqual(redisPlugin.validate({ name: 'r', type: 'redis', url: 'redis://h:6380', prefix: 'w_', roles: { a: { keys: ['a:*'], commands: ['+@read'] } } }).roles, { a: { keys: ['a:*'], commands: ['+@read'], channels: [] } });
  });
});
