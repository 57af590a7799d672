/**
 * Revocation drills with two enforcement points running as separate
 * processes: both register through the revocation stream, acknowledge the
 * drill's revocation and deny; a point that dies is reported missing and
 * fails the drill. Through the API and `writ drill revoke`.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { main } from '../../src/cli/main.ts';
import { startTestServer } from '../support/server.ts';
import type { TestServer } from '../support/server.ts';

const W = 'spiffe://writ.local/svc/drilled';
const FIXTURE = fileURLToPath(new URL('./pep-process.ts', import.meta.url));
let s: TestServer;
let pepToken: string;
let pepId: string;
const peps = new Map<string, { proc: ChildProcess; out: () => string }>();

async function until(pred: () => boolean | Promise<boolean>, what: string, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await pred())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

function startPep(name: string): void {
  const proc = spawn(process.execPath, [FIXTURE, s.url, name], { env: { ...process.env, WRIT_PEP_TOKEN: pepToken }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  peps.set(name, { proc, out: () => out });
}

before(async () => {
  s = await startTestServer({ flags: { 'revocations.heartbeatMs': 200 } });
  const p = await s.call('POST', '/admin/v1/principals', { body: { name: 'edge', role: 'pep' } });
  assert.equal(p.status, 201, p.text);
  pepToken = p.json.token;
  pepId = p.json.principal?.id ?? p.json.id;
  startPep('edge-1');
  startPep('edge-2');
  for (const [name, x] of peps) await until(() => x.out().includes('ready'), `${name} to follow the stream`);
  await until(async () => (await s.call('GET', '/admin/v1/enforcement-points')).json.enforcementPoints.length === 2, 'both points registered');
});

after(async () => {
  for (const x of peps.values()) x.proc.kill('SIGKILL');
  await s.stop();
});

test('the registry lists both points by principal and name', async () => {
  const r = await s.call('GET', '/admin/v1/enforcement-points');
  assert.deepEqual(r.json.enforcementPoints.map((e: { id: string; name: string; principalId: string }) => [e.id, e.name, e.principalId]), [[`${pepId}/edge-1`, 'edge-1', pepId], [`${pepId}/edge-2`, 'edge-2', pepId]]);
});

test('canary drill through the CLI: both points deny, the report is printed and audited', async () => {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(['drill', 'revoke', '--subject', W, '--canary'], { out: (x) => out.push(x), err: (x) => err.push(x), env: { WRIT_SERVER: s.url, WRIT_TOKEN: s.token } });
  assert.equal(code, 0, `${out.join('\n')}\n${err.join('\n')}`);
  const text = out.join('\n');
  assert.match(text, new RegExp(`^drill drill_[0-9a-z]+: canary for spiffe-id ${W.replaceAll('/', '\\/')} at `));
  assert.match(text, /events: token-revoked \(cursor \d+\); credentials cut: 1/);
  assert.match(text, new RegExp(`${pepId}/edge-1\\s+denied\\s+\\d+ ms`));
  assert.match(text, new RegExp(`${pepId}/edge-2\\s+denied\\s+\\d+ ms`));
  assert.match(text, /passed: 2 enforcement point\(s\) deny, slowest \d+ ms/);
  const drillId = /drill (drill_[0-9a-z]+)/.exec(text)?.[1] ?? '';
  for (const x of peps.values()) await until(() => x.out().includes(`event ${drillId}:0 token-revoked`), 'the point printed the event');
  const audit = await s.call('GET', '/admin/v1/audit/events?action=drill.completed&limit=100');
  const rec = (audit.json.events as any[]).find((e) => e.target?.id === drillId);
  assert.equal(rec.outcome, 'success');
  assert.deepEqual(rec.reasons, ['canary', 'every-point-denied']);
  assert.deepEqual(rec.details.peps.map((p: { status: string }) => p.status), ['denied', 'denied']);
  // The canary was minted for the drill and is revoked; the subject itself was not revoked.
  const lease = await s.call('GET', `/admin/v1/leases/${rec.details.revoked[0].id}`);
  assert.deepEqual([lease.json.state, lease.json.subject, lease.json.revokeReason], ['revoked', W, 'drill-canary']);
});

test('a live drill of a SPIFFE ID publishes subject-revoked; both points acknowledge that they deny it', async () => {
  const r = await s.call('POST', '/admin/v1/drills/revoke', { body: { subject: W, timeoutMs: 10_000 } });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.subjectKind, 'spiffe-id');
  assert.equal(r.json.canary, false);
  assert.deepEqual(r.json.events.map((e: { kind: string }) => e.kind), ['subject-revoked']);
  assert.deepEqual(r.json.peps.map((p: { name: string; status: string }) => [p.name, p.status]), [['edge-1', 'denied'], ['edge-2', 'denied']]);
  assert.equal(r.json.passed, true);
  assert.equal(typeof r.json.maxTimeToDenyMs, 'number');
});

test('a live drill of a token id publishes token-revoked for it; the command has --help', async () => {
  const r = await s.call('POST', '/admin/v1/drills/revoke', { body: { subject: 'jti-held-by-edge' } });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.subjectKind, 'token');
  assert.deepEqual(r.json.events.map((e: { kind: string }) => e.kind), ['token-revoked']);
  assert.deepEqual(r.json.revoked, [], 'no lease of that id here; the token is still revoked at every point');
  assert.equal(r.json.passed, true);
  const help: string[] = [];
  assert.equal(await main(['drill', 'revoke', '--help'], { out: (x) => help.push(x), err: () => undefined, env: {} }), 0);
  assert.match(help.join('\n'), /usage: writ drill revoke --subject SPIFFE_ID\|TASK_ID\|TOKEN_ID \[--canary\] \[--timeout-ms N\] \[--json\]/);
});

test('bad subjects are refused; a point that died is listed missing and the drill fails', async () => {
  const bad = await s.call('POST', '/admin/v1/drills/revoke', { body: { subject: 'not a subject!' } });
  assert.deepEqual([bad.status, bad.json.code, bad.json.message], [400, 'ERR_SIGNALS_DRILL_INVALID', 'a drill subject is a SPIFFE ID, a task id (`task_…`) or a token id (`jti`)']);
  const none = await s.call('POST', '/admin/v1/drills/revoke', { body: { subject: 'task_000000000000000000000000' } });
  assert.deepEqual([none.status, none.json.code], [409, 'ERR_SIGNALS_DRILL_NOTHING_LIVE']);

  const dead = peps.get('edge-2');
  dead?.proc.kill('SIGKILL');
  await new Promise<void>((r) => (dead?.proc.exitCode !== null ? r() : dead.proc.once('exit', () => r())));
  const out: string[] = [];
  const code = await main(['drill', 'revoke', '--subject', W, '--canary', '--timeout-ms', '4000', '--json'], { out: (x) => out.push(x), err: () => undefined, env: { WRIT_SERVER: s.url, WRIT_TOKEN: s.token } });
  assert.equal(code, 1, 'a failed drill exits 1');
  const report = JSON.parse(out.join('\n'));
  assert.equal(report.passed, false);
  assert.equal(report.failures, 1);
  assert.deepEqual(report.peps.map((p: { name: string; status: string }) => [p.name, p.status]), [['edge-1', 'denied'], ['edge-2', 'missing']]);
  assert.equal(report.peps[1].timeToDenyMs, undefined);
  const audit = await s.call('GET', '/admin/v1/audit/events?action=drill.completed&limit=100');
  const rec = (audit.json.events as any[]).find((e) => e.target?.id === report.drillId);
  assert.deepEqual([rec.outcome, rec.reasons], ['failure', ['canary', 'points-missing']]);
});
