/**
 * `writ exception …` and `writ engine …` against a real server whose
 * PostgreSQL engine runs as a dedicated CREATEROLE role on a server that
 * checks passwords: register an exception, rotate its password, fetch it
 * into a 0600 file psql logs in with (the old password refused), findings,
 * renewal, deletion, engine rotation; every call audited, roles enforced,
 * and no password in the server log or the audit table.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { main as cli } from '../../src/cli/main.ts';
import { startTestServer } from '../support/server.ts';
import type { TestServer } from '../support/server.ts';
import { startPasswordPostgres, skipWithoutPasswordPostgres } from '../support/password-postgres.ts';
import type { PasswordPostgres } from '../support/password-postgres.ts';

describe('writ exception|engine (real server, password-checking PostgreSQL, psql)', () => {
  let pp: PasswordPostgres | string | undefined;
  let s: TestServer | undefined;
  let engines: unknown[] = [];
  const dataDir = mkdtempSync(join(tmpdir(), 'writ-exc-cli-'));
  const suffix = randomBytes(3).toString('hex');
  const engineAdmin = `writ_cliadm_${suffix}`;
  const legacy = `vendor_app_${suffix}`;
  const initial = 'vendor-initial-Pw1';

  async function superQuery(text: string): Promise<void> {
    if (typeof pp !== 'object') throw new Error('no server');
    const c = new pg.Client({ connectionString: pp.url });
    await c.connect();
    try {
      await c.query(text);
    } finally {
      await c.end();
    }
  }

  function psql(user: string, password: string): number | null {
    if (typeof pp !== 'object') throw new Error('no server');
    return spawnSync('psql', ['-X', '-A', '-t', '-h', pp.host, '-p', String(pp.port), '-U', user, '-d', 'postgres', '-c', 'select 1'], { env: { ...process.env, PGPASSWORD: password, PGCONNECT_TIMEOUT: '5' }, encoding: 'utf8' }).status;
  }

  before(async () => {
    pp = await startPasswordPostgres();
    if (typeof pp !== 'object') return;
    await superQuery(`create role ${engineAdmin} login createrole password 'adm-initial-Pw1'`);
    await superQuery(`create role ${legacy} login password '${initial}'`);
    const u = new URL(pp.url);
    engines = [{ name: 'legacy', type: 'postgres', url: `postgres://${engineAdmin}:adm-initial-Pw1@${u.host}/postgres`, prefix: 'writ_', roles: {} }];
    s = await startTestServer({ dataDir, flags: { logLevel: 'debug', 'credentials.engines': JSON.stringify(engines), 'credentials.reaperIntervalSeconds': 0 } });
  });
  after(async () => {
    await s?.stop();
    rmSync(dataDir, { recursive: true, force: true });
    if (typeof pp === 'object') await pp.stop();
  });

  const run = async (...args: string[]): Promise<{ code: number; out: string; err: string }> => {
    if (s === undefined) throw new Error('no server');
    const out: string[] = [];
    const err: string[] = [];
    const code = await cli([...args, '--server', s.url, '--token-file', join(s.dataDir, 'admin.token')], { out: (x) => out.push(x), err: (x) => err.push(x), env: {} });
    return { code, out: out.join('\n'), err: err.join('\n') };
  };

  it('registers, rotates, hands the password over in a 0600 file, and finds, renews and deletes', async (t) => {
    if (skipWithoutPasswordPostgres(t, pp) || s === undefined) return;
    const help = await run('exception', 'create', '--help');
    assert.equal(help.code, 0);
    assert.match(help.out, /--risk NHIn\s+an OWASP NHI Top 10 \(2025\) risk it accepts/);

    const bad = await run('exception', 'create', '--name', 'vendor', '--account', legacy, '--engine', 'legacy', '--owner-team', 'billing', '--owner-contact', 'kim@example.org', '--justification', 'vendor binary', '--control', 'ip allow-list', '--risk', 'NHI2,NHI12', '--expires', '+90');
    assert.equal(bad.code, 1);
    assert.equal(bad.err, 'writ exception create: `risks`: `NHI12` is not an OWASP NHI Top 10 (2025) risk id (NHI1 … NHI10) (ERR_CRED_EXCEPTION_INVALID)');

    const created = await run('exception', 'create', '--name', 'vendor', '--account', legacy, '--engine', 'legacy', '--rotate-every', '86400', '--owner-team', 'billing', '--owner-contact', 'kim@example.org', '--justification', 'the vendor binary reads a static password', '--control', 'ip allow-list', '--control', 'read-only grants', '--risk', 'NHI2,nhi7', '--expires', '+90', '--json');
    assert.equal(created.code, 0, created.err);
    const exc = JSON.parse(created.out) as { id: string; risks: { id: string }[]; hasSecret: boolean };
    assert.deepEqual(exc.risks.map((r) => r.id), ['NHI2', 'NHI7']);
    assert.equal(exc.hasSecret, false);

    const noSecret = await run('exception', 'secret', exc.id);
    assert.equal(noSecret.code, 1);
    assert.match(noSecret.err, /writ has not rotated the secret of exception `exc_[0-9a-f]{24}` yet \(ERR_CRED_EXCEPTION_NO_SECRET\)/);

    const rotated = await run('exception', 'rotate', exc.id);
    assert.equal(rotated.code, 0, rotated.err);
    assert.match(rotated.out, new RegExp(`^exception ${exc.id}: password of ${legacy} rotated at \\S+; next rotation \\S+$`));
    const file = join(s.dataDir, 'vendor.pw');
    const fetched = await run('exception', 'secret', exc.id, '-o', file);
    assert.equal(fetched.code, 0, fetched.err);
    assert.equal(fetched.out, '');
    assert.equal(statSync(file).mode & 0o777, 0o600);
    const password = readFileSync(file, 'utf8').trim();
    assert.equal(psql(legacy, password), 0, 'the new password logs in');
    assert.equal(psql(legacy, initial), 2, 'the old one is refused');

    const listed = await run('exception', 'list');
    assert.match(listed.out, new RegExp(`${exc.id}\\s+vendor\\s+${legacy}\\s+legacy\\s+billing <kim@example.org>\\s+NHI2,NHI7\\s+\\S+\\s+active\\s+\\d{4}-`));
    const shown = await run('exception', 'show', exc.id);
    assert.match(shown.out, /risks\s+NHI2 Secret Leakage, NHI7 Long-Lived Secrets/);
    assert.match(shown.out, /controls\s+ip allow-list; read-only grants/);
    assert.equal((await run('exception', 'findings')).out, 'no findings');

    // Expire it at the store (a clock cannot be moved in a running server), then sweep.
    await s.server.store.db.updateTable('legacy_exceptions').set({ expires_at: '2020-01-01T00:00:00.000Z' }).where('id', '=', exc.id).execute();
    await s.server.credentials.maintain();
    const findings = await run('exception', 'findings', '--json');
    assert.deepEqual((JSON.parse(findings.out) as { type: string; exceptionId: string }[]).map((f) => [f.type, f.exceptionId]), [['exception-expired', exc.id]]);
    const renewed = await run('exception', 'renew', exc.id, '--expires', '+30', '--justification', 'vendor upgrade due next quarter');
    assert.equal(renewed.code, 0, renewed.err);
    assert.equal((await run('exception', 'findings')).out, 'no findings');

    const deleted = await run('exception', 'delete', exc.id);
    assert.equal(deleted.out, `exception ${exc.id} (vendor) deleted`);
    assert.equal((await run('exception', 'show', exc.id)).code, 1);

    // Audited: every change, and every admin call; the password nowhere in the log or the audit table.
    const actions = (await s.server.store.query({ limit: 10_000 })).map((r) => r.action);
    for (const a of ['exception.created', 'exception.secret.rotated', 'exception.secret.revealed', 'exception.expired', 'exception.renewed', 'exception.deleted']) assert.ok(actions.includes(a), a);
    const table = JSON.stringify(await s.server.store.readRange(0, 100_000));
    assert.equal(table.includes(password), false, 'no password in the audit table');
    assert.equal(s.logs().includes(password), false, 'no password in the server log');
  });

  it('rotates the engine admin secret on demand; roles are enforced', async (t) => {
    if (skipWithoutPasswordPostgres(t, pp) || s === undefined) return;
    const before = await run('engine', 'list', '--json');
    assert.deepEqual(JSON.parse(before.out), [{ engine: 'legacy', type: 'postgres', account: engineAdmin, rotatedAt: null, rotateEverySeconds: null, nextRotationAt: null, rotationPending: false }]);
    const r = await run('engine', 'rotate', 'legacy');
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, new RegExp(`^engine legacy: admin secret of ${engineAdmin} rotated at \\S+$`));
    assert.equal(psql(engineAdmin, 'adm-initial-Pw1'), 2, 'the URL password no longer logs in');
    // The engine still works with the rotated secret: registering and rotating an exception goes through it.
    const created = await run('exception', 'create', '--name', 'after-rotation', '--account', legacy, '--engine', 'legacy', '--owner-team', 'billing', '--owner-contact', 'kim@example.org', '--justification', 'j', '--control', 'c', '--risk', 'NHI7', '--expires', '+10', '--json');
    const id = (JSON.parse(created.out) as { id: string }).id;
    assert.equal((await run('exception', 'rotate', id)).code, 0);
    assert.equal((await run('engine', 'rotate', 'nope')).err, 'writ engine rotate: no secret engine `nope` (ERR_CRED_ENGINE_NOT_FOUND)');

    const aud = await s.call('POST', '/admin/v1/principals', { body: { name: 'aud-exc', role: 'auditor' } });
    const op = await s.call('POST', '/admin/v1/principals', { body: { name: 'op-exc', role: 'operator' } });
    assert.equal((await s.call('GET', '/admin/v1/exceptions', { token: aud.json.token })).status, 200);
    assert.equal((await s.call('GET', '/admin/v1/engines', { token: aud.json.token })).status, 200);
    const denied = await s.call('POST', `/admin/v1/exceptions/${id}/rotate`, { token: aud.json.token });
    assert.equal(denied.status, 403);
    assert.equal(denied.json.message, 'role `auditor` lacks permission `exceptions.manage`');
    const reveal = await s.call('POST', `/admin/v1/exceptions/${id}/secret`, { token: op.json.token });
    assert.equal(reveal.status, 403, 'only an admin may read an exception password');
    assert.equal(reveal.json.message, 'role `operator` lacks permission `exceptions.reveal`');
    assert.equal((await s.call('POST', '/admin/v1/engines/legacy/rotate', { token: op.json.token })).status, 200);
    const revealed = await s.call('POST', `/admin/v1/exceptions/${id}/secret`);
    assert.equal(revealed.headers.get('cache-control'), 'no-store');
    const unknown = await s.call('POST', '/admin/v1/exceptions', { body: { name: 'x', extra: 1 } });
    assert.equal(unknown.status, 400);
    const calls = (await s.server.store.query({ action: 'api.called', limit: 10_000 })).map((row) => JSON.parse(row.event) as { target?: { id?: string }; outcome?: string });
    assert.ok(calls.some((c) => c.target?.id === 'POST /admin/v1/exceptions/:id/secret' && c.outcome === 'denied'), 'the refused reveal is audited');
    assert.equal(s.logs().includes(revealed.json.password), false);

    // A restart: the configured URL still names the first password, which no longer works;
    // the engine reads the rotated one from the store (sealed under the same KEK).
    await s.stop();
    s = await startTestServer({ dataDir, flags: { logLevel: 'debug', 'credentials.engines': JSON.stringify(engines), 'credentials.reaperIntervalSeconds': 0 } });
    const listed = JSON.parse((await run('engine', 'list', '--json')).out) as { rotatedAt: string | null }[];
    assert.notEqual(listed[0]?.rotatedAt, null);
    const again = await run('exception', 'rotate', id);
    assert.equal(again.code, 0, again.err);
    assert.equal((await run('engine', 'rotate', 'legacy')).code, 0);
  });
});
