/**
 * Legacy exceptions: validation (owner, OWASP NHI ids, expiry …), renewal,
 * findings for expired exceptions, and rotation of a PostgreSQL account's
 * password through an engine whose admin is a dedicated CREATEROLE role —
 * against a PostgreSQL that checks passwords, with `psql` as the client:
 * after a rotation the old password is refused and the new one logs in.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import fc from 'fast-check';
import { ManualClock, Secret } from '../../src/kernel/index.ts';
import { KeyEncryptionKey } from '../../src/identity/index.ts';
import { ExceptionService, buildEngines, exceptionSecretContext, openSecret, sealSecret } from '../../src/credentials/index.ts';
import type { ExceptionInput, SecretEngine } from '../../src/credentials/index.ts';
import { openStore } from '../../src/storage/index.ts';
import type { Store } from '../../src/storage/index.ts';
import { REDIS_URL } from '../support/services.ts';
import { startPasswordPostgres, skipWithoutPasswordPostgres } from '../support/password-postgres.ts';
import type { PasswordPostgres } from '../support/password-postgres.ts';
import { KeepingAuditSink } from './support.ts';

const admin = { type: 'admin' as const, id: 'adm1', name: 'ops' };
const T0 = Date.parse('2026-03-01T12:00:00.000Z');
const DAY = 86_400_000;

interface Rig {
  store: Store;
  clock: ManualClock;
  audit: KeepingAuditSink;
  kek: KeyEncryptionKey;
  exceptions: ExceptionService;
  engines: SecretEngine[];
  close(): Promise<void>;
}

async function rig(pgAdminUrl = 'postgres://writ_exadm:x@127.0.0.1:1/postgres', clock = new ManualClock(T0)): Promise<Rig> {
  const store = await openStore({ url: 'sqlite::memory:', dataDir: '' });
  await store.migrate();
  const audit = new KeepingAuditSink();
  const kek = new KeyEncryptionKey(randomBytes(32));
  // Building engines opens no connection; the validation cases never reach a server.
  const engines = buildEngines([
    { name: 'legacy', type: 'postgres', url: pgAdminUrl, prefix: 'writ_', roles: {} },
    { name: 'cache', type: 'redis', url: REDIS_URL, roles: {} },
  ]);
  const exceptions = new ExceptionService({ store: store.credentials, engine: (n) => engines.find((e) => e.name === n), kek, audit, clock });
  return {
    store, clock, audit, kek, exceptions, engines,
    async close() {
      await Promise.all(engines.map((e) => e.close()));
      await store.close();
    },
  };
}

function input(o: Partial<ExceptionInput> = {}): ExceptionInput {
  return {
    name: 'billing-legacy',
    account: 'billing_app',
    engine: 'legacy',
    owner: { team: 'payments', contact: 'ana.silva@example.org' },
    justification: 'the vendor billing app reads one static password from its config file',
    compensatingControls: ['connections only from 10.0.3.0/24 (pg_hba)', 'role has SELECT on billing.* only'],
    risks: ['NHI2', 'NHI7'],
    expiresAt: new Date(T0 + 90 * DAY).toISOString(),
    ...o,
  };
}

function refused(code: string, message: string, status?: number) {
  return (e: { code?: string; message?: string; status?: number }) => {
    assert.equal(e.code, code);
    assert.equal(e.message, message);
    if (status !== undefined) assert.equal(e.status, status);
    return true;
  };
}

describe('legacy exceptions: registration, renewal, findings', () => {
  const cases: { o: Partial<ExceptionInput> | Record<string, unknown>; code: string; message: string }[] = [
    { o: { name: 'Billing Legacy' }, code: 'ERR_CRED_EXCEPTION_INVALID', message: '`name` must be lowercase letters, digits, `.`, `_` or `-` (at most 63)' },
    { o: { owner: { team: 'payments', contact: 'the payments team' } }, code: 'ERR_CRED_EXCEPTION_INVALID', message: '`owner.contact` must be the email address of a person who answers for the exception' },
    { o: { owner: { team: ' ', contact: 'ana@example.org' } }, code: 'ERR_CRED_EXCEPTION_INVALID', message: '`owner.team` must be non-empty text of at most 128 characters' },
    { o: { justification: '' }, code: 'ERR_CRED_EXCEPTION_INVALID', message: '`justification` must be non-empty text of at most 4096 characters' },
    { o: { compensatingControls: [] }, code: 'ERR_CRED_EXCEPTION_INVALID', message: '`compensatingControls` must list 1 to 32 controls' },
    { o: { risks: [] }, code: 'ERR_CRED_EXCEPTION_INVALID', message: '`risks` must list at least one OWASP NHI Top 10 risk id (NHI1 … NHI10)' },
    { o: { risks: ['NHI2', 'NHI11'] }, code: 'ERR_CRED_EXCEPTION_INVALID', message: '`risks`: `NHI11` is not an OWASP NHI Top 10 (2025) risk id (NHI1 … NHI10)' },
    { o: { risks: ['A07:2021'] }, code: 'ERR_CRED_EXCEPTION_INVALID', message: '`risks`: `A07:2021` is not an OWASP NHI Top 10 (2025) risk id (NHI1 … NHI10)' },
    { o: { risks: ['NHI0'] }, code: 'ERR_CRED_EXCEPTION_INVALID', message: '`risks`: `NHI0` is not an OWASP NHI Top 10 (2025) risk id (NHI1 … NHI10)' },
    { o: { expiresAt: 'next quarter' }, code: 'ERR_CRED_EXCEPTION_INVALID', message: '`expiresAt` must be an ISO 8601 date or time' },
    { o: { expiresAt: new Date(T0 - 1000).toISOString() }, code: 'ERR_CRED_EXCEPTION_INVALID', message: '`expiresAt` must be in the future' },
    { o: { expiresAt: new Date(T0 + 400 * DAY).toISOString() }, code: 'ERR_CRED_EXCEPTION_INVALID', message: '`expiresAt` must be at most 366 days away; renew the exception when it ends' },
    { o: { rotateEverySeconds: 30 }, code: 'ERR_CRED_EXCEPTION_INVALID', message: '`rotateEverySeconds` must be a whole number of seconds from 60 to 366 days' },
    { o: { engine: undefined, system: 'vendor SFTP', rotateEverySeconds: 3600 }, code: 'ERR_CRED_EXCEPTION_INVALID', message: '`rotateEverySeconds` needs an `engine` to rotate through' },
    { o: { engine: undefined }, code: 'ERR_CRED_EXCEPTION_INVALID', message: '`system` must be non-empty text of at most 256 characters' },
    { o: { engine: 'cache' }, code: 'ERR_CRED_EXCEPTION_INVALID', message: 'engine `cache` is a redis engine; writ rotates exception passwords through PostgreSQL engines only' },
    { o: { engine: 'nope' }, code: 'ERR_CRED_ENGINE_NOT_FOUND', message: 'no secret engine `nope`' },
    { o: { account: 'writ_0123456789abcdef01234567' }, code: 'ERR_CRED_ACCOUNT_NOT_ROTATABLE', message: '`writ_0123456789abcdef01234567` is a dynamic account of engine `legacy`; it cannot be a legacy exception' },
    { o: { account: 'writ_exadm' }, code: 'ERR_CRED_ACCOUNT_NOT_ROTATABLE', message: '`writ_exadm` is the admin role of engine `legacy`; it cannot be a legacy exception' },
  ];
  for (const { o, code, message } of cases) {
    it(`refuses: ${message}`, async () => {
      const r = await rig();
      try {
        await assert.rejects(r.exceptions.create({ ...input(), ...o } as ExceptionInput, admin, 'c'), refused(code, message));
        assert.deepEqual(await r.exceptions.list(), [], 'nothing stored');
        assert.deepEqual(r.audit.actions(), []);
      } finally {
        await r.close();
      }
    });
  }

  it('any input is either registered or refused with a 4xx credentials error, never a crash', async () => {
    const r = await rig();
    try {
      const text = fc.oneof(fc.string({ maxLength: 80 }), fc.constantFrom('', ' ', 'ok', 'ana@example.org', 'NHI7', 'nhi2:2025', '2026-05-01', '2026-05-01T00:00:00Z', '2026-13-45T99:00:00+99:99'));
      const arb = fc.record({
        name: text,
        account: text,
        system: fc.option(text, { nil: undefined }),
        engine: fc.option(fc.constantFrom('legacy', 'cache', 'nope'), { nil: undefined }),
        rotateEverySeconds: fc.option(fc.oneof(fc.integer(), fc.double()), { nil: undefined }),
        owner: fc.record({ team: text, contact: text }),
        justification: text,
        compensatingControls: fc.array(text, { maxLength: 40 }),
        risks: fc.array(text, { maxLength: 12 }),
        expiresAt: text,
      });
      let i = 0;
      await fc.assert(fc.asyncProperty(arb, async (raw) => {
        const given = { ...raw, name: `${raw.name}${i++}` } as ExceptionInput;
        try {
          await r.exceptions.create(given, admin, 'fuzz');
        } catch (e) {
          const err = e as { code?: string; status?: number };
          assert.match(err.code ?? '', /^ERR_CRED_/, String(e));
          assert.ok(err.status !== undefined && err.status >= 400 && err.status < 500, String(e));
        }
      }), { numRuns: 300 });
    } finally {
      await r.close();
    }
  });

  it('stores the owner, controls and normalized NHI ids, audits it, and refuses a second one for the same name or account', async () => {
    const r = await rig();
    try {
      const exc = await r.exceptions.create(input({ risks: ['nhi7', 'NHI2:2025', 'NHI7'] }), admin, 'c-create');
      assert.match(exc.id, /^exc_[0-9a-f]{24}$/);
      assert.deepEqual(exc.risks, ['NHI2', 'NHI7']);
      assert.equal(exc.system, 'postgres:legacy');
      assert.equal(exc.rotateEverySeconds, 30 * 86_400, 'rotated every 30 days unless told');
      assert.equal(exc.nextRotationAt, new Date(T0 + 30 * DAY).toISOString());
      assert.deepEqual(await r.exceptions.get(exc.id), exc);
      const [ev] = r.audit.events;
      assert.equal(ev?.action, 'exception.created');
      assert.equal(ev?.correlationId, 'c-create');
      assert.deepEqual(ev?.actor, admin);
      assert.deepEqual(ev?.details?.risks, [{ id: 'NHI2', name: 'Secret Leakage' }, { id: 'NHI7', name: 'Long-Lived Secrets' }]);
      assert.deepEqual(ev?.details?.owner, { team: 'payments', contact: 'ana.silva@example.org' });
      await assert.rejects(r.exceptions.create(input({ account: 'other_app' }), admin, 'c'), refused('ERR_CRED_EXCEPTION_CONFLICT', 'an exception named `billing-legacy`, or one for `other_app` on engine `legacy`, exists', 409));
      await assert.rejects(r.exceptions.create(input({ name: 'billing-2' }), admin, 'c'), refused('ERR_CRED_EXCEPTION_CONFLICT', 'an exception named `billing-2`, or one for `billing_app` on engine `legacy`, exists', 409));
      const sftp = await r.exceptions.create(input({ name: 'vendor-sftp', account: 'acme', engine: undefined, system: 'Acme SFTP', risks: ['NHI3'] }), admin, 'c');
      assert.equal(sftp.engine, null);
      assert.equal(sftp.nextRotationAt, null);
      await assert.rejects(r.exceptions.rotate(sftp.id, 'admin', admin, 'c'), refused('ERR_CRED_EXCEPTION_NOT_ROTATABLE', `exception \`${sftp.id}\` names no PostgreSQL engine; writ cannot rotate \`acme\``, 409));
      await assert.rejects(r.exceptions.reveal(sftp.id, admin, 'c'), refused('ERR_CRED_EXCEPTION_NO_SECRET', `writ has not rotated the secret of exception \`${sftp.id}\` yet`, 404));
      await assert.rejects(r.exceptions.get('exc_000000000000000000000000'), refused('ERR_CRED_EXCEPTION_NOT_FOUND', 'no exception `exc_000000000000000000000000`', 404));
    } finally {
      await r.close();
    }
  });

  it('an expired exception is a finding, audited once; renewing it clears the finding', async () => {
    const r = await rig();
    try {
      const exc = await r.exceptions.create(input({ engine: undefined, system: 'Acme SFTP', expiresAt: new Date(T0 + 10 * DAY).toISOString() }), admin, 'c');
      assert.deepEqual(await r.exceptions.findings(), []);
      assert.deepEqual(await r.exceptions.sweep('sweep-0'), { findingsRaised: 0, rotated: 0, failed: 0 });
      r.clock.advance(10 * DAY);
      const [finding, ...rest] = await r.exceptions.findings();
      assert.deepEqual(rest, []);
      assert.deepEqual(finding, {
        id: `${exc.id}:expired`, type: 'exception-expired', severity: 'high', exceptionId: exc.id, name: 'billing-legacy', account: 'billing_app',
        owner: { team: 'payments', contact: 'ana.silva@example.org' }, risks: ['NHI2', 'NHI7'], since: exc.expiresAt,
        detail: `the accepted risk of \`billing_app\` (NHI2, NHI7) lapsed at ${exc.expiresAt}; renew it with a fresh justification or retire the secret`,
      });
      assert.deepEqual(await r.exceptions.sweep('sweep-1'), { findingsRaised: 1, rotated: 0, failed: 0 });
      assert.deepEqual(await r.exceptions.sweep('sweep-2'), { findingsRaised: 0, rotated: 0, failed: 0 }, 'raised once per expiry');
      const raised = r.audit.events.filter((e) => e.action === 'exception.expired');
      assert.equal(raised.length, 1);
      assert.equal(raised[0]?.outcome, 'failure');
      assert.deepEqual(raised[0]?.reasons, ['exception-expired']);
      assert.equal(raised[0]?.correlationId, 'sweep-1');
      assert.equal((await r.exceptions.get(exc.id)).expiredFindingAt, new Date(T0 + 10 * DAY).toISOString());
      await assert.rejects(r.exceptions.renew(exc.id, { expiresAt: new Date(T0 + 5 * DAY).toISOString() }, admin, 'c'), refused('ERR_CRED_EXCEPTION_INVALID', '`expiresAt` must be in the future'));
      const renewed = await r.exceptions.renew(exc.id, { expiresAt: new Date(T0 + 100 * DAY).toISOString(), justification: 'vendor migration slipped to Q3' }, admin, 'c-renew');
      assert.equal(renewed.expiredFindingAt, null);
      assert.equal(renewed.justification, 'vendor migration slipped to Q3');
      assert.deepEqual(await r.exceptions.findings(), []);
      const ev = r.audit.events.find((e) => e.action === 'exception.renewed');
      assert.equal(ev?.details?.previousExpiresAt, exc.expiresAt);
      await r.exceptions.delete(exc.id, admin, 'c-del');
      await assert.rejects(r.exceptions.get(exc.id), refused('ERR_CRED_EXCEPTION_NOT_FOUND', `no exception \`${exc.id}\``));
      assert.deepEqual(r.audit.actions(), ['exception.created', 'exception.expired', 'exception.renewed', 'exception.deleted']);
    } finally {
      await r.close();
    }
  });
});

describe('legacy exception rotation on a password-checking PostgreSQL (psql)', () => {
  let pp: PasswordPostgres | string | undefined;
  let adminUrl = '';
  const suffix = randomBytes(3).toString('hex');
  const engineAdmin = `writ_exadm_${suffix}`;
  const legacy = `legacy_app_${suffix}`;
  const initial = 'legacy-initial-Pw1';

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

  /** `psql` logs in as `user` with `password`: the exit status and what it printed. */
  function psql(user: string, password: string): { status: number | null; out: string } {
    if (typeof pp !== 'object') throw new Error('no server');
    const r = spawnSync('psql', ['-X', '-A', '-t', '-h', pp.host, '-p', String(pp.port), '-U', user, '-d', 'postgres', '-c', 'select current_user'], { env: { ...process.env, PGPASSWORD: password, PGCONNECT_TIMEOUT: '5' }, encoding: 'utf8' });
    return { status: r.status, out: `${r.stdout}${r.stderr}`.trim() };
  }

  function assertLogsIn(user: string, password: string): void {
    assert.deepEqual(psql(user, password), { status: 0, out: user });
  }

  function assertRefused(user: string, password: string): void {
    const r = psql(user, password);
    assert.equal(r.status, 2);
    assert.match(r.out, new RegExp(`password authentication failed for user "${user}"`));
  }

  before(async () => {
    pp = await startPasswordPostgres();
    if (typeof pp !== 'object') return;
    // The engine's admin is a dedicated CREATEROLE role, never the superuser.
    await superQuery(`create role ${engineAdmin} login createrole password 'adm-initial-Pw1'`);
    await superQuery(`create role ${legacy} login password '${initial}'`);
    const u = new URL(pp.url);
    adminUrl = `postgres://${engineAdmin}:adm-initial-Pw1@${u.host}/postgres`;
  });
  after(async () => {
    if (typeof pp === 'object') await pp.stop();
  });

  it('on demand: the new password is sealed, revealed once to the owner, and psql refuses the old one', async (t) => {
    if (skipWithoutPasswordPostgres(t, pp)) return;
    const r = await rig(adminUrl, new ManualClock(Date.now()));
    try {
      assertLogsIn(legacy, initial);
      const exc = await r.exceptions.create(input({ name: 'on-demand', account: legacy, expiresAt: new Date(r.clock.nowMs() + 30 * DAY).toISOString() }), admin, 'c');
      const rotated = await r.exceptions.rotate(exc.id, 'admin', admin, 'c-rot');
      assert.equal(rotated.lastRotatedAt, new Date(r.clock.nowMs()).toISOString());
      assert.equal(rotated.nextRotationAt, new Date(r.clock.nowMs() + 30 * DAY).toISOString());
      assert.equal(rotated.pendingSecret, null);
      const { password } = await r.exceptions.reveal(exc.id, admin, 'c-reveal');
      assert.match(password.reveal(), /^[A-Za-z0-9_-]{43}$/);
      assertRefused(legacy, initial);
      assertLogsIn(legacy, password.reveal());
      // At rest: sealed under the KEK, bound to this exception, no plaintext anywhere in the row.
      const raw = await r.store.db.selectFrom('legacy_exceptions').selectAll().where('id', '=', exc.id).executeTakeFirstOrThrow();
      assert.equal(JSON.stringify(raw).includes(password.reveal()), false);
      assert.equal(JSON.parse(raw.secret ?? '{}').kekId, r.kek.id);
      assert.throws(() => openSecret(r.kek, rotated.secret ?? assert.fail('no secret'), exceptionSecretContext('exc_other')), { code: 'ERR_IDENTITY_KEY_UNWRAP_FAILED' });
      // Only a SCRAM verifier reached the server.
      const [role] = (await superQuery('select rolpassword from pg_authid where rolname = $1', [legacy])).rows as { rolpassword: string }[];
      assert.match(role?.rolpassword ?? '', /^SCRAM-SHA-256\$4096:/);
      assert.deepEqual(r.audit.actions(), ['exception.created', 'exception.secret.rotated', 'exception.secret.revealed']);
      const rotEv = r.audit.events.find((e) => e.action === 'exception.secret.rotated');
      assert.equal(rotEv?.details?.trigger, 'admin');
      assert.equal(rotEv?.correlationId, 'c-rot');
      assert.equal(JSON.stringify(r.audit.events).includes(password.reveal()), false, 'no secret in the audit events');
    } finally {
      await r.close();
    }
  });

  it('on schedule: the sweep rotates what is due, again and again, and only then', async (t) => {
    if (skipWithoutPasswordPostgres(t, pp)) return;
    const r = await rig(adminUrl, new ManualClock(Date.now()));
    try {
      await superQuery(`alter role ${legacy} password '${initial}'`);
      const exc = await r.exceptions.create(input({ name: 'scheduled', account: legacy, rotateEverySeconds: 3600, expiresAt: new Date(r.clock.nowMs() + 30 * DAY).toISOString() }), admin, 'c');
      assert.deepEqual(await r.exceptions.sweep('s0'), { findingsRaised: 0, rotated: 0, failed: 0 }, 'not due yet');
      assertLogsIn(legacy, initial);
      r.clock.advance(3600_000);
      assert.deepEqual(await r.exceptions.sweep('s1'), { findingsRaised: 0, rotated: 1, failed: 0 });
      const first = (await r.exceptions.reveal(exc.id, admin, 'c')).password.reveal();
      assertRefused(legacy, initial);
      assertLogsIn(legacy, first);
      assert.deepEqual(await r.exceptions.sweep('s2'), { findingsRaised: 0, rotated: 0, failed: 0 });
      r.clock.advance(3600_000);
      assert.deepEqual(await r.exceptions.sweep('s3'), { findingsRaised: 0, rotated: 1, failed: 0 });
      const second = (await r.exceptions.reveal(exc.id, admin, 'c')).password.reveal();
      assert.notEqual(second, first);
      assertRefused(legacy, first);
      assertLogsIn(legacy, second);
      assert.equal(r.audit.events.filter((e) => e.action === 'exception.secret.rotated' && e.details?.trigger === 'schedule').length, 2);
    } finally {
      await r.close();
    }
  });

  it('an interrupted rotation (password sealed, ALTER ROLE not confirmed) is finished with that same password', async (t) => {
    if (skipWithoutPasswordPostgres(t, pp)) return;
    const r = await rig(adminUrl, new ManualClock(Date.now()));
    try {
      await superQuery(`alter role ${legacy} password '${initial}'`);
      const exc = await r.exceptions.create(input({ name: 'interrupted', account: legacy, expiresAt: new Date(r.clock.nowMs() + 30 * DAY).toISOString() }), admin, 'c');
      // A crash after the write-ahead step: the pending password is in the row only.
      const pending = new Secret(`pending-${randomBytes(16).toString('hex')}`);
      const planted = await r.store.credentials.updateException(exc.id, exc.revision, { pendingSecret: sealSecret(r.kek, pending, exceptionSecretContext(exc.id)) });
      assert.ok(planted);
      assert.deepEqual(await r.exceptions.sweep('s'), { findingsRaised: 0, rotated: 1, failed: 0 });
      assertRefused(legacy, initial);
      assertLogsIn(legacy, pending.reveal());
      assert.equal((await r.exceptions.reveal(exc.id, admin, 'c')).password.reveal(), pending.reveal());
      assert.equal((await r.exceptions.get(exc.id)).pendingSecret, null);
    } finally {
      await r.close();
    }
  });

  it('a role that does not exist: the rotation fails, is audited and becomes a finding', async (t) => {
    if (skipWithoutPasswordPostgres(t, pp)) return;
    const r = await rig(adminUrl, new ManualClock(Date.now()));
    try {
      const exc = await r.exceptions.create(input({ name: 'ghost', account: 'ghost_role_xyz', expiresAt: new Date(r.clock.nowMs() + 30 * DAY).toISOString() }), admin, 'c');
      await assert.rejects(r.exceptions.rotate(exc.id, 'admin', admin, 'c'), refused('ERR_CRED_ACCOUNT_NOT_FOUND', 'postgres engine `legacy` has no role `ghost_role_xyz`', 404));
      const after = await r.exceptions.get(exc.id);
      assert.equal(after.lastRotationError, 'ERR_CRED_ACCOUNT_NOT_FOUND');
      assert.equal(after.pendingSecret, null, 'the unapplied password is forgotten');
      assert.deepEqual((await r.exceptions.findings()).map((f) => [f.type, f.severity]), [['exception-rotation-failing', 'medium']]);
      const ev = r.audit.events.find((e) => e.action === 'exception.secret.rotation-failed');
      assert.equal(ev?.outcome, 'failure');
      assert.equal(ev?.details?.error, 'ERR_CRED_ACCOUNT_NOT_FOUND');
    } finally {
      await r.close();
    }
  });
});
