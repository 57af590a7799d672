/**
 * Writ rotates the secret engines' own admin credentials: a dedicated
 * PostgreSQL CREATEROLE role (on a server that checks passwords) and a
 * dedicated Redis ACL user, both created by the test — never the superuser.
 * Issuance running during the rotation never fails; afterwards the old
 * admin secret is refused (psql, redis-cli), the new one works, and a second
 * engine instance (another replica) picks the new secret up from the store.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { ManualClock, Secret } from '../../src/kernel/index.ts';
import { KeyEncryptionKey } from '../../src/identity/index.ts';
import { EngineRotator, STALE_ROTATION_MS, buildEngines, engineSecretContext, openSecret, sealSecret } from '../../src/credentials/index.ts';
import type { AdminSecretSource, SecretEngine } from '../../src/credentials/index.ts';
import { REDIS_URL, redisProblem, skipWithoutRedis } from '../support/services.ts';
import { startPasswordPostgres, skipWithoutPasswordPostgres } from '../support/password-postgres.ts';
import type { PasswordPostgres } from '../support/password-postgres.ts';
import { RespClient } from '../../src/credentials/engines/resp.ts';
import { credContext } from './support.ts';
import type { CredContext } from './support.ts';

const admin = { type: 'admin' as const, id: 'adm1' };

/** A credentials context whose engines take their admin secret from a rotator over the same store. */
async function rotatingContext(defs: unknown[], kek: KeyEncryptionKey, clock: ManualClock): Promise<{ c: CredContext; rotator: EngineRotator }> {
  let rotator: EngineRotator | undefined;
  const engines = buildEngines(defs, (name): AdminSecretSource => (preferNext) => rotator === undefined ? Promise.resolve(undefined) : rotator.source(name)(preferNext));
  const c = await credContext({ engines, clock });
  rotator = new EngineRotator({ store: c.store.credentials, kek, audit: c.audit, clock });
  rotator.attach(engines);
  return { c, rotator };
}

/** A second replica: its own engines and rotator over the first one's store. */
function replica(c: CredContext, defs: unknown[], kek: KeyEncryptionKey, clock: ManualClock): { engines: SecretEngine[]; rotator: EngineRotator } {
  const rotator = new EngineRotator({ store: c.store.credentials, kek, audit: c.audit, clock });
  const engines = buildEngines(defs, (name) => rotator.source(name));
  rotator.attach(engines);
  return { engines, rotator };
}

/** How far a churn got: issuances started and finished. */
interface Progress {
  started: number;
  done: number;
}

/** Resolves once `p.done` reaches `n` (polled; no fixed sleep decides anything). */
async function reached(p: Progress, n: number): Promise<void> {
  const until = Date.now() + 60_000;
  while (p.done < n) {
    if (Date.now() > until) throw new Error(`churn stalled at ${p.done}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Rotate once the churn is under way, and report what was in flight when the rotation began. */
async function rotateMidway(p: Progress, rotate: () => Promise<unknown>): Promise<{ inFlight: number; doneBefore: number }> {
  await reached(p, 5);
  const seen = { inFlight: p.started - p.done, doneBefore: p.done };
  await rotate();
  return seen;
}

/** Issue and revoke `n` credentials, `width` at a time; every failure is kept. */
async function churn(c: CredContext, engine: string, role: string, n: number, width: number, failures: unknown[], p: Progress = { started: 0, done: 0 }): Promise<number> {
  let next = 0;
  let done = 0;
  // A revocation the engine could not carry out counts as a failure too.
  c.leases.onRevokerError = (_lease, err) => failures.push(err);
  await Promise.all(Array.from({ length: width }, async () => {
    while (next < n) {
      next++;
      p.started++;
      try {
        const cred = await c.dynamic.issue({ engine, role, subject: `spiffe://example.org/churn/${next % 3}`, ttlMs: 600_000, actor: admin, correlationId: 'churn' });
        await c.leases.revoke(cred.lease.id, 'churn', 'churn');
        done++;
      } catch (e) {
        failures.push(e);
      } finally {
        p.done++;
      }
    }
  }));
  return done;
}

describe('rotation of a PostgreSQL engine\'s admin role (psql, password-checking server)', () => {
  let pp: PasswordPostgres | string | undefined;
  const suffix = randomBytes(3).toString('hex');
  const engineAdmin = `writ_engadm_${suffix}`;
  const prefix = `writ_r${suffix}_`;
  let defs: unknown[] = [];

  async function superQuery(text: string, values: unknown[] = []): Promise<pg.QueryResult> {
    if (typeof pp !== 'object') throw new Error('no server');
    const c = new pg.Client({ connectionString: pp.url });
    await c.connect();
    try {
      return await c.query(text, values);
    } finally {
      await c.end();
    }
  }

  function psql(password: string): { status: number | null; out: string } {
    if (typeof pp !== 'object') throw new Error('no server');
    const r = spawnSync('psql', ['-X', '-A', '-t', '-h', pp.host, '-p', String(pp.port), '-U', engineAdmin, '-d', 'postgres', '-c', 'select current_user'], { env: { ...process.env, PGPASSWORD: password, PGCONNECT_TIMEOUT: '5' }, encoding: 'utf8' });
    return { status: r.status, out: `${r.stdout}${r.stderr}`.trim() };
  }

  before(async () => {
    pp = await startPasswordPostgres();
    if (typeof pp !== 'object') return;
    await superQuery(`create role ${engineAdmin} login createrole password 'adm-initial-Pw1'`);
    await superQuery(`create schema app_${suffix}; create table app_${suffix}.items (id int); grant usage on schema app_${suffix} to ${engineAdmin} with grant option; grant select on app_${suffix}.items to ${engineAdmin} with grant option`);
    const u = new URL(pp.url);
    defs = [{ name: 'main', type: 'postgres', url: `postgres://${engineAdmin}:adm-initial-Pw1@${u.host}/postgres`, prefix, poolSize: 4, rotateEverySeconds: 3600, roles: { reader: { grants: [`grant usage on schema app_${suffix} to {{name}}`, `grant select on app_${suffix}.items to {{name}}`] } } }];
  });
  after(async () => {
    if (typeof pp === 'object') await pp.stop();
  });

  it('on demand, during issuance: nothing in flight fails, the old password is refused, a second replica follows', async (t) => {
    if (skipWithoutPasswordPostgres(t, pp)) return;
    const kek = new KeyEncryptionKey(randomBytes(32));
    const clock = new ManualClock(Date.now());
    const { c, rotator } = await rotatingContext(defs, kek, clock);
    const other = replica(c, defs, kek, clock);
    try {
      assert.equal(psql('adm-initial-Pw1').status, 0);
      const failures: unknown[] = [];
      const progress = { started: 0, done: 0 };
      const load = churn(c, 'main', 'reader', 40, 4, failures, progress);
      // Rotate while the churn holds pooled connections and opens new ones.
      let rotation: Awaited<ReturnType<EngineRotator['rotate']>> | undefined;
      const seen = await rotateMidway(progress, async () => (rotation = await rotator.rotate('main', 'admin', admin, 'c-rot')));
      const done = await load;
      assert.ok(seen.inFlight > 0 && seen.doneBefore < 40, `issuance was in flight when the rotation began (${JSON.stringify(seen)})`);
      if (rotation === undefined) throw new Error('no rotation');
      assert.deepEqual(failures, [], 'no issuance or revocation failed');
      assert.equal(done, 40);
      assert.deepEqual((await superQuery('select rolname from pg_roles where starts_with(rolname, $1)', [prefix])).rows, [], 'every churned role is dropped');
      assert.equal(rotation.account, engineAdmin);
      assert.equal(rotation.type, 'postgres');
      const row = await c.store.credentials.getEngineSecret('main');
      assert.equal(row?.next, null);
      const current = openSecret(kek, row?.current ?? assert.fail('no current secret'), engineSecretContext('main'));
      const refused = psql('adm-initial-Pw1');
      assert.equal(refused.status, 2);
      assert.match(refused.out, new RegExp(`password authentication failed for user "${engineAdmin}"`));
      assert.deepEqual(psql(current.reveal()), { status: 0, out: engineAdmin });
      // The other replica's engine has only the stale URL password: it reads the store.
      const cred = await other.engines[0]?.create('reader', `${prefix}${'a'.repeat(24)}`, new Date(clock.nowMs() + 600_000));
      assert.equal(cred?.username, `${prefix}${'a'.repeat(24)}`);
      await other.engines[0]?.revoke(`${prefix}${'a'.repeat(24)}`);
      // A fresh connection authenticates with the current secret, not the old one.
      assert.equal(await c.dynamic.engine('main').checkAdminSecret(current), true);
      assert.equal(await c.dynamic.engine('main').checkAdminSecret(new Secret('adm-initial-Pw1')), false);
      const ev = c.audit.events.find((e) => e.action === 'engine.secret.rotated');
      assert.equal(ev?.details?.trigger, 'admin');
      assert.equal(ev?.correlationId, 'c-rot');
      const dump = JSON.stringify(c.audit.events);
      assert.equal(dump.includes(current.reveal()), false, 'no secret in the audit events');
      const status = await rotator.status();
      assert.equal(status[0]?.rotatedAt, row?.rotatedAt);
      assert.equal(status[0]?.rotationPending, false);
    } finally {
      await Promise.all(other.engines.map((e) => e.close()));
      await c.close();
    }
  });

  it('on schedule, and an interrupted rotation whose password the server already took is finished', async (t) => {
    if (skipWithoutPasswordPostgres(t, pp)) return;
    const kek = new KeyEncryptionKey(randomBytes(32));
    const clock = new ManualClock(Date.now());
    await superQuery(`alter role ${engineAdmin} password 'adm-initial-Pw1'`);
    const { c, rotator } = await rotatingContext(defs, kek, clock);
    try {
      assert.deepEqual(await rotator.rotateDue('s0', (_e, err) => assert.fail(String(err))), [], 'first sight starts the schedule');
      clock.advance(3600_000);
      const [due] = await rotator.rotateDue('s1', (_e, err) => assert.fail(String(err)));
      assert.equal(due?.trigger, 'schedule');
      assert.equal(psql('adm-initial-Pw1').status, 2);
      // A crash between ALTER ROLE and the promotion: the server has `next`, the store still calls it next.
      const row = await c.store.credentials.getEngineSecret('main');
      if (row === undefined) throw new Error('no row');
      const next = new Secret(`next-${randomBytes(16).toString('hex')}`);
      await superQuery(`alter role ${engineAdmin} password '${next.reveal()}'`);
      const planted = await c.store.credentials.updateEngineSecret('main', row.revision, { next: sealSecret(kek, next, engineSecretContext('main')), nextAt: new Date(clock.nowMs()).toISOString() });
      assert.ok(planted);
      await assert.rejects(rotator.rotate('main', 'admin', admin, 'c'), (e: { code?: string; message?: string }) => e.code === 'ERR_CRED_ROTATION_IN_PROGRESS' && e.message === 'a rotation of engine `main` is under way', 'a fresh `next` is a rotation under way');
      clock.advance(STALE_ROTATION_MS);
      assert.deepEqual(await rotator.rotateDue('s2', (_e, err) => assert.fail(String(err))), [], 'not due: only recovered');
      const after = await c.store.credentials.getEngineSecret('main');
      assert.equal(after?.next, null);
      assert.equal(openSecret(kek, after?.current ?? assert.fail('no current'), engineSecretContext('main')).reveal(), next.reveal());
      const ev = c.audit.events.find((e) => e.action === 'engine.secret.recovered');
      assert.deepEqual(ev?.reasons, ['next-secret-in-force']);
      // Issuance works on the recovered secret (new connections use it).
      const cred = await c.dynamic.issue({ engine: 'main', role: 'reader', subject: 'spiffe://example.org/after', ttlMs: 600_000, actor: admin, correlationId: 'c' });
      await c.leases.revoke(cred.lease.id, 'test', 'c');
    } finally {
      await c.close();
    }
  });
});

describe('rotation of a Redis engine\'s admin ACL user (redis-cli)', () => {
  const suffix = randomBytes(3).toString('hex');
  const engineAdmin = `writ_engadm_${suffix}`;
  const prefix = `writ_r${suffix}_`;
  const initial = `adm-initial-${suffix}`;
  const defs = [{ name: 'cache', type: 'redis', url: `redis://${engineAdmin}:${initial}@${new URL(REDIS_URL).host}`, prefix, roles: { app: { keys: ['app:*'], commands: ['+@read'] } } }];
  let up = false;

  function cli(password: string): string {
    const u = new URL(REDIS_URL);
    const r = spawnSync('redis-cli', ['-h', u.hostname, '-p', u.port === '' ? '6379' : u.port, '--user', engineAdmin, '--no-auth-warning', 'PING'], { env: { ...process.env, REDISCLI_AUTH: password }, encoding: 'utf8' });
    return `${r.stdout}${r.stderr}`.trim();
  }

  before(async () => {
    if ((await redisProblem()) !== undefined) return;
    const r = await RespClient.connect(REDIS_URL);
    try {
      // A dedicated admin user: ACL and CLIENT (to remove and disconnect users), nothing else.
      await r.command(['ACL', 'SETUSER', engineAdmin, 'reset', 'on', `>${initial}`, '+acl', '+client', '+ping']);
      // One that may look but not change users.
      await r.command(['ACL', 'SETUSER', `${engineAdmin}_ro`, 'reset', 'on', `>${initial}`, '+acl|users', '+ping']);
    } finally {
      r.close();
    }
    up = true;
  });
  after(async () => {
    if (!up) return;
    const r = await RespClient.connect(REDIS_URL);
    for (const u of (await r.command(['ACL', 'USERS'])) as string[]) if (u.startsWith(engineAdmin) || u.startsWith(prefix)) await r.command(['ACL', 'DELUSER', u]);
    r.close();
  });

  it('on demand, during issuance: nothing in flight fails, the old password is refused, a second replica follows', async (t) => {
    if (await skipWithoutRedis(t)) return;
    const kek = new KeyEncryptionKey(randomBytes(32));
    const clock = new ManualClock(Date.now());
    const { c, rotator } = await rotatingContext(defs, kek, clock);
    const other = replica(c, defs, kek, clock);
    try {
      assert.equal(cli(initial), 'PONG');
      const failures: unknown[] = [];
      const progress = { started: 0, done: 0 };
      const load = churn(c, 'cache', 'app', 60, 4, failures, progress);
      let rotation: Awaited<ReturnType<EngineRotator['rotate']>> | undefined;
      const seen = await rotateMidway(progress, async () => (rotation = await rotator.rotate('cache', 'admin', admin, 'c-rot')));
      assert.equal(await load, 60);
      assert.ok(seen.inFlight > 0 && seen.doneBefore < 60, `issuance was in flight when the rotation began (${JSON.stringify(seen)})`);
      if (rotation === undefined) throw new Error('no rotation');
      assert.deepEqual(failures, []);
      assert.equal(rotation.account, engineAdmin);
      const row = await c.store.credentials.getEngineSecret('cache');
      const current = openSecret(kek, row?.current ?? assert.fail('no current'), engineSecretContext('cache'));
      assert.match(cli(initial), /WRONGPASS/);
      assert.equal(cli(current.reveal()), 'PONG');
      // The engine's own connection, opened before the rotation, still works.
      const cred = await c.dynamic.issue({ engine: 'cache', role: 'app', subject: 'spiffe://example.org/after', ttlMs: 60_000, actor: admin, correlationId: 'c' });
      await c.leases.revoke(cred.lease.id, 'test', 'c');
      // Another replica, whose URL still names the old password, connects with the stored one.
      assert.deepEqual(await other.engines[0]?.listAccounts(), []);
      assert.equal(c.audit.events.find((e) => e.action === 'engine.secret.rotated')?.details?.previousRetired, true);
      assert.equal(JSON.stringify(c.audit.events).includes(current.reveal()), false);
      // A second rotation retires the first rotated password.
      await rotator.rotate('cache', 'admin', admin, 'c-rot2');
      assert.match(cli(current.reveal()), /WRONGPASS/);
    } finally {
      await Promise.all(other.engines.map((e) => e.close()));
      await c.close();
    }
  });

  it('a server that refuses the change: the rotation fails, is audited, and the old secret stays in force', async (t) => {
    if (await skipWithoutRedis(t)) return;
    const kek = new KeyEncryptionKey(randomBytes(32));
    const clock = new ManualClock(Date.now());
    const roDefs = [{ ...defs[0], url: `redis://${engineAdmin}_ro:${initial}@${new URL(REDIS_URL).host}` }];
    const { c, rotator } = await rotatingContext(roDefs, kek, clock);
    try {
      await assert.rejects(rotator.rotate('cache', 'admin', admin, 'c-fail'), (e: { code?: string; message?: string; cause?: { message?: string } }) => {
        assert.equal(e.code, 'ERR_CRED_ENGINE_FAILED');
        assert.equal(e.message, `redis engine \`cache\` could not add a password to its admin user \`${engineAdmin}_ro\``);
        assert.match(e.cause?.message ?? '', /NOPERM/);
        return true;
      });
      const row = await c.store.credentials.getEngineSecret('cache');
      assert.deepEqual([row?.current, row?.next], [null, null], 'nothing promoted, the claim released');
      const ev = c.audit.events.find((e) => e.action === 'engine.secret.rotation-failed');
      assert.equal(ev?.outcome, 'failure');
      assert.equal(ev?.details?.error, 'ERR_CRED_ENGINE_FAILED');
      const u = new URL(REDIS_URL);
      const still = spawnSync('redis-cli', ['-h', u.hostname, '-p', u.port === '' ? '6379' : u.port, '--user', `${engineAdmin}_ro`, '--no-auth-warning', 'PING'], { env: { ...process.env, REDISCLI_AUTH: initial }, encoding: 'utf8' });
      assert.equal(still.stdout.trim(), 'PONG');
    } finally {
      await c.close();
    }
  });
});
