/**
 * Re-evaluation on a real server: a signal finds what is live for its
 * subjects (access tokens, dynamic PostgreSQL credentials, SVIDs), the PDP
 * re-decides each under current policy with the signal as context, what no
 * longer passes is revoked and published on the bus, and ONE receipt
 * (`signal.reevaluated`) lists each item with the time it was cut. The
 * PostgreSQL credential is checked with `psql`: its open session drops.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { systemClock } from '../../src/kernel/index.ts';
import { RevocationStreamClient } from '../../src/signals/index.ts';
import type { RevocationEvent } from '../../src/signals/index.ts';
import { PG_URL, postgresProblem, skipWithoutPostgres, scratchSchema, dropSchema } from '../support/services.ts';
import { startTestServer } from '../support/server.ts';
import type { TestServer } from '../support/server.ts';

const TD = 'writ.local';
const API = 'https://api.example.com';
const REPORTS = 'https://reports.example.com';
const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const TT_JWT = 'urn:ietf:params:oauth:token-type:jwt';

// Credentials may be held while posture is at least 50; SVIDs too (the forbid names any resource).
const POLICIES = `
@id("exchange-api")
permit(principal, action == Writ::Action::"token/exchange", resource == Writ::Service::"${API}");
@id("exchange-reports")
permit(principal, action == Writ::Action::"token/exchange", resource == Writ::Service::"${REPORTS}");
@id("issue-api")
permit(principal, action == Writ::Action::"credential/issue", resource == Writ::Service::"${API}");
@id("posture-floor")
forbid(principal, action == Writ::Action::"credential/issue", resource) when { context has posture && context.posture.score < 50 };
@id("owner-active")
forbid(principal, action == Writ::Action::"credential/issue", resource) when { principal has owner && !principal.owner.active };
`;

async function pgQuery<T extends pg.QueryResultRow>(text: string, values: unknown[] = []): Promise<T[]> {
  const c = new pg.Client({ connectionString: PG_URL });
  await c.connect();
  try {
    return (await c.query<T>(text, values)).rows;
  } finally {
    await c.end();
  }
}

async function until(pred: () => boolean | Promise<boolean>, what: string, timeoutMs = 15_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await pred())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

interface Psql {
  write(s: string): void;
  out(): string;
  exited: Promise<number | null>;
}

function psql(cred: { username: string; password: string; connection: { host: string; port: number; database: string } }): Psql {
  const c = cred.connection;
  const proc = spawn('psql', ['-X', '-q', '-A', '-t', '-h', c.host, '-p', String(c.port), '-U', cred.username, '-d', c.database], { env: { ...process.env, PGPASSWORD: cred.password, PGCONNECT_TIMEOUT: '5' }, stdio: 'pipe' });
  let out = '';
  proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));
  return { write: (s) => proc.stdin.write(s), out: () => out, exited };
}

describe('re-evaluation on signals', () => {
  const schema = scratchSchema('writ_reeval');
  const prefix = `writ_r${randomBytes(4).toString('hex')}_`;
  let s: TestServer | undefined;
  let pep: RevocationStreamClient | undefined;
  const heard: RevocationEvent[] = [];

  before(async () => {
    if ((await postgresProblem()) !== undefined) return;
    await pgQuery(`create schema ${schema}; create table ${schema}.items (id int); insert into ${schema}.items values (1)`);
    const dir = mkdtempSync(join(tmpdir(), 'writ-reeval-policy-'));
    writeFileSync(join(dir, 'reeval.cedar'), POLICIES);
    const engines = [{ name: 'main', type: 'postgres', url: PG_URL, prefix, roles: { reader: { grants: [`grant usage on schema ${schema} to {{name}}`, `grant select on all tables in schema ${schema} to {{name}}`] } } }];
    s = await startTestServer({ flags: { 'policy.dir': dir, 'credentials.engines': JSON.stringify(engines), 'credentials.reaperIntervalSeconds': 0, 'revocations.heartbeatMs': 200 } });
    const p = await s.call('POST', '/admin/v1/principals', { body: { name: 'pep-1', role: 'pep' } });
    assert.equal(p.status, 201, p.text);
    pep = new RevocationStreamClient({ url: s.url, token: p.json.token, clock: systemClock, stalenessMs: 10_000, onEvent: (e) => void heard.push(e) });
    pep.start();
    const client = pep;
    await until(() => client.check({}) === 'clear', 'the PEP stream to connect');
  });

  after(async () => {
    pep?.stop();
    if (s === undefined) return;
    await s.stop();
    for (const r of await pgQuery<{ rolname: string }>('select rolname from pg_roles where starts_with(rolname, $1)', [prefix])) await pgQuery(`drop owned by "${r.rolname}"; drop role "${r.rolname}"`);
    await dropSchema(schema);
  });

  const server = async (t: { skip(m: string): void }): Promise<TestServer | undefined> => ((await skipWithoutPostgres(t as never)) ? undefined : s);

  async function accessToken(srv: TestServer, path: string, audience = API): Promise<{ jti: string; token: string }> {
    const svid = await srv.server.identity.ca.signJwtSvid({ spiffeId: `spiffe://${TD}${path}`, audience: srv.url });
    const res = await fetch(`${srv.url}/oauth2/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ grant_type: TOKEN_EXCHANGE, subject_token: svid.token, subject_token_type: TT_JWT, audience }) });
    const body = (await res.json()) as { access_token: string };
    assert.equal(res.status, 200, JSON.stringify(body));
    const claims = JSON.parse(Buffer.from(body.access_token.split('.')[1] ?? '', 'base64url').toString('utf8')) as { jti: string };
    return { jti: claims.jti, token: body.access_token };
  }

  async function leaseState(srv: TestServer, id: string): Promise<string> {
    const r = await srv.call('GET', `/admin/v1/leases/${id}`);
    assert.equal(r.status, 200, r.text);
    return r.json.state as string;
  }

  async function receiptOf(srv: TestServer, signalId: string): Promise<any> {
    const r = await srv.call('GET', '/admin/v1/audit/events?action=signal.reevaluated&limit=1000');
    assert.equal(r.status, 200, r.text);
    const mine = (r.json.events as any[]).filter((e) => e.target?.id === signalId);
    assert.equal(mine.length, 1, 'exactly one receipt per signal');
    return mine[0];
  }

  it('a posture signal for a workload with a live lease and a live token revokes both; the receipt lists both with times', async (t) => {
    const srv = await server(t);
    if (srv === undefined) return;
    const subject = `spiffe://${TD}/svc/ci`;
    const tok = await accessToken(srv, '/svc/ci');
    const cred = await srv.call('POST', '/admin/v1/creds/main', { body: { role: 'reader', subject, ttlSeconds: 600 } });
    assert.equal(cred.status, 201, cred.text);
    const session = psql(cred.json);
    session.write(`select 'ok:' || count(*) from ${schema}.items;\n`);
    await until(() => session.out().includes('ok:1'), 'psql to log in');
    assert.equal(await leaseState(srv, tok.jti), 'active');

    const sig = await srv.call('POST', '/admin/v1/signals', { body: { type: 'posture-changed', subject, score: 30, failingChecks: ['disk-encryption'], reason: 'scan-failed' } });
    assert.equal(sig.status, 201, sig.text);
    const rx = sig.json.reevaluation;
    assert.equal(rx.signalId, sig.json.signal.id);
    assert.equal(rx.revoked, 3, JSON.stringify(rx.items));
    const byId = new Map((rx.items as any[]).map((i) => [i.id, i]));
    const token = byId.get(tok.jti);
    assert.equal(token.type, 'token');
    assert.equal(token.outcome, 'revoked');
    assert.deepEqual(token.reasons, ['policy-forbid']);
    assert.equal(token.decision, 'deny');
    assert.match(token.cutAt, /^\d{4}-\d{2}-\d{2}T/);
    const lease = byId.get(cred.json.lease.id);
    assert.equal(lease.type, 'lease');
    assert.equal(lease.kind, 'postgres');
    assert.equal(lease.outcome, 'revoked');
    assert.match(lease.cutAt, /^\d{4}-\d{2}-\d{2}T/);
    assert.equal(byId.get(subject)?.outcome, 'revoked', 'the SVIDs of the workload are cut by an explicit forbid');
    assert.equal(byId.get('pdp')?.outcome, 'invalidated');

    // The credentials are dead where it matters.
    assert.equal(await leaseState(srv, tok.jti), 'revoked');
    assert.equal(await leaseState(srv, cred.json.lease.id), 'revoked');
    session.write('select 1;\n');
    const code = await Promise.race([session.exited, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 15_000))]);
    assert.notEqual(code, 'timeout', 'psql session dropped');
    assert.notEqual(code, 0);

    // ONE receipt in the audit log, with the same items and times.
    const receipt = await receiptOf(srv, sig.json.signal.id);
    assert.equal(receipt.outcome, 'success');
    assert.deepEqual(receipt.reasons, ['posture-changed', 'access-revoked']);
    const audited = new Map((receipt.details.items as any[]).map((i) => [i.id, i]));
    assert.equal(audited.get(tok.jti)?.cutAt, token.cutAt);
    assert.equal(audited.get(cred.json.lease.id)?.cutAt, lease.cutAt);
    assert.ok(!JSON.stringify(receipt).includes(cred.json.password), 'no secret in the receipt');
    assert.ok(!JSON.stringify(receipt).includes(tok.token), 'no token in the receipt');

    // Published on the bus: the PEP heard the token, the lease and the subject.
    await until(() => heard.some((e) => e.kind === 'token-revoked' && e.tokenId === tok.jti) && heard.some((e) => e.kind === 'lease-revoked' && e.leaseId === cred.json.lease.id) && heard.some((e) => e.kind === 'subject-revoked' && e.subject === subject), 'the revocations on the stream');
    assert.equal(pep?.check({ tokenId: tok.jti }), 'revoked');
    assert.equal(pep?.check({ subject }), 'revoked');
  });

  it('a signal that does not change the decision revokes nothing', async (t) => {
    const srv = await server(t);
    if (srv === undefined) return;
    const subject = `spiffe://${TD}/svc/healthy`;
    const tok = await accessToken(srv, '/svc/healthy');
    // Only a token exchange is permitted for this audience: the token is kept on that permit.
    const exchanged = await accessToken(srv, '/svc/healthy', REPORTS);
    const cred = await srv.call('POST', '/admin/v1/creds/main', { body: { role: 'reader', subject, ttlSeconds: 600 } });
    assert.equal(cred.status, 201, cred.text);
    const before = heard.length;
    const sig = await srv.call('POST', '/admin/v1/signals', { body: { type: 'posture-changed', subject, score: 90 } });
    assert.equal(sig.status, 201, sig.text);
    const rx = sig.json.reevaluation;
    assert.equal(rx.revoked, 0);
    assert.deepEqual((rx.items as any[]).filter((i) => i.type !== 'decision-cache').map((i) => [i.id, i.outcome]).sort(), [[cred.json.lease.id, 'kept'], [subject, 'kept'], [tok.jti, 'kept'], [exchanged.jti, 'kept']].sort());
    assert.equal((rx.items as any[]).find((i) => i.id === exchanged.jti)?.decision, 'allow');
    assert.equal((rx.items as any[]).find((i) => i.id === tok.jti)?.decision, 'allow');
    assert.equal(await leaseState(srv, tok.jti), 'active');
    assert.equal(await leaseState(srv, cred.json.lease.id), 'active');
    const receipt = await receiptOf(srv, sig.json.signal.id);
    assert.deepEqual(receipt.reasons, ['posture-changed', 'nothing-revoked']);
    // Only the signal itself went on the bus.
    await until(() => heard.some((e) => e.id === sig.json.signal.id), 'the signal event');
    assert.deepEqual(heard.slice(before).map((e) => e.kind), ['signal']);
    await srv.call('POST', `/admin/v1/leases/${cred.json.lease.id}/revoke`, { body: { reason: 'test-cleanup' } });
  });

  it('a task-completed signal revokes its dynamic PostgreSQL credential and the psql session drops', async (t) => {
    const srv = await server(t);
    if (srv === undefined) return;
    const subject = `spiffe://${TD}/ci/run-9`;
    const task = await srv.call('POST', '/admin/v1/tasks', { body: { owner: subject, ttlSeconds: 600, scopes: ['db:read'] } });
    assert.equal(task.status, 201, task.text);
    const cred = await srv.call('POST', '/admin/v1/creds/main', { body: { role: 'reader', subject, taskId: task.json.id, ttlSeconds: 600 } });
    assert.equal(cred.status, 201, cred.text);
    const other = await srv.call('POST', '/admin/v1/creds/main', { body: { role: 'reader', subject, ttlSeconds: 600 } });
    assert.equal(other.status, 201, other.text);
    const session = psql(cred.json);
    session.write(`select current_user || ':' || count(*) from ${schema}.items;\n`);
    await until(() => session.out().includes(`${cred.json.username}:1`), 'psql to log in');

    const sig = await srv.call('POST', '/admin/v1/signals', { body: { type: 'task-completed', subject: task.json.id, workload: subject } });
    assert.equal(sig.status, 201, sig.text);
    const rx = sig.json.reevaluation;
    const items = (rx.items as any[]).filter((i) => i.type !== 'decision-cache');
    assert.deepEqual(items.map((i) => [i.id, i.outcome, i.reasons]), [[cred.json.lease.id, 'revoked', ['task-completed']]], 'only the task-bound credential');
    assert.match(items[0].cutAt, /^\d{4}-\d{2}-\d{2}T/);

    // The open session drops and the role is gone.
    await until(async () => Number((await pgQuery<{ n: string }>('select count(*) as n from pg_stat_activity where usename = $1', [cred.json.username]))[0]?.n) === 0, 'no backend of the role');
    session.write('select 1;\n');
    const code = await Promise.race([session.exited, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 15_000))]);
    assert.notEqual(code, 'timeout');
    assert.notEqual(code, 0);
    assert.match(session.out(), /terminat|server closed the connection|connection to server was lost/i);
    const again = spawnSync('psql', ['-X', '-h', '127.0.0.1', '-U', cred.json.username, '-d', 'test', '-c', 'select 1'], { env: { ...process.env, PGPASSWORD: cred.json.password, PGCONNECT_TIMEOUT: '5' }, encoding: 'utf8' });
    assert.equal(again.status, 2);
    assert.match(again.stderr, new RegExp(`role "${cred.json.username}" does not exist`));
    // The task is over: nothing new binds to it; the other credential lives on.
    assert.equal((await srv.call('GET', `/admin/v1/tasks/${task.json.id}`)).json.state, 'completed');
    assert.equal(await leaseState(srv, other.json.lease.id), 'active');
    const receipt = await receiptOf(srv, sig.json.signal.id);
    assert.equal((receipt.details.items as any[]).find((i) => i.id === cred.json.lease.id)?.cutAt, items[0].cutAt);
    await srv.call('POST', `/admin/v1/leases/${other.json.lease.id}/revoke`, { body: { reason: 'test-cleanup' } });
  });

  it('an owner-offboarded signal re-decides what the owner\'s workloads hold, with the owner inactive', async (t) => {
    const srv = await server(t);
    if (srv === undefined) return;
    const owned = `spiffe://${TD}/svc/owned-by-bob`;
    const entry = await srv.call('POST', '/admin/v1/entries', { body: { spiffeId: owned, parentId: `spiffe://${TD}/writ/node/n1`, selectors: ['unix:uid:1001'], owner: { team: 'payments', contact: 'Bob@Example.com' } } });
    assert.equal(entry.status, 201, entry.text);
    const tok = await accessToken(srv, '/svc/owned-by-bob');
    const bystander = await accessToken(srv, '/svc/owned-by-someone-else');
    const sig = await srv.call('POST', '/admin/v1/signals', { body: { type: 'owner-offboarded', subject: 'bob@example.com' } });
    assert.equal(sig.status, 201, sig.text);
    const items = new Map((sig.json.reevaluation.items as any[]).map((i) => [i.id, i]));
    assert.deepEqual([items.get(tok.jti)?.outcome, items.get(tok.jti)?.reasons], ['revoked', ['policy-forbid']]);
    assert.equal(items.get(owned)?.outcome, 'revoked', 'the owned workload\'s SVIDs are cut');
    assert.equal(items.has(bystander.jti), false, 'another workload is not looked at');
    assert.equal(await leaseState(srv, tok.jti), 'revoked');
    assert.equal(await leaseState(srv, bystander.jti), 'active');
  });
});
