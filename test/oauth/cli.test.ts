/**
 * `writ oauth exchange` against a real server: the bare token, --json, a
 * delegation hop from files, and a one-line OAuth error with exit code 1.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { main } from '../../src/cli/main.ts';
import type { TestServer } from '../support/server.ts';
import { API, FORBIDDEN, TD, decodePayload, startOAuthServer, svid } from './support.ts';

let ts: TestServer;
const dir = mkdtempSync(join(tmpdir(), 'writ-oauth-cli-'));

before(async () => {
  ts = await startOAuthServer();
});

after(async () => {
  await ts.stop();
});

async function run(args: string[]): Promise<{ code: number; out: string[]; err: string[] }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(args, { out: (s) => out.push(s), err: (s) => err.push(s), env: {} });
  return { code, out, err };
}

function file(name: string, content: string): string {
  const p = join(dir, name);
  writeFileSync(p, content, { mode: 0o600 });
  return p;
}

test('writ oauth exchange prints the token; --json the response; a delegation hop from files', async () => {
  const subject = file('subject.jwt', `${await svid(ts, '/svc/frontend')}\n`);
  const r = await run(['oauth', 'exchange', '--server', ts.url, '--subject-token-file', subject, '--audience', API, '--scope', 'read write']);
  assert.equal(r.code, 0, r.err.join('\n'));
  assert.equal(r.out.length, 1);
  const at = r.out[0] ?? '';
  assert.equal(decodePayload(at).scope, 'read write');

  const atFile = file('at.jwt', at);
  const actor = file('actor.jwt', await svid(ts, '/agent/a'));
  const j = await run(['oauth', 'exchange', '--server', ts.url, '--subject-token-file', atFile, '--subject-token-type', 'access_token', '--actor-token-file', actor, '-a', API, '--scope', 'read', '--json']);
  assert.equal(j.code, 0, j.err.join('\n'));
  const body = JSON.parse(j.out[0] ?? '{}');
  assert.equal(body.token_type, 'Bearer');
  assert.equal(body.issued_token_type, 'urn:ietf:params:oauth:token-type:access_token');
  assert.deepEqual(decodePayload(body.access_token).act, { sub: `spiffe://${TD}/agent/a` });
});

test('an OAuth refusal is one line and exit code 1; a usage error is exit code 2', async () => {
  const subject = file('s2.jwt', await svid(ts, '/svc/frontend'));
  const r = await run(['oauth', 'exchange', '--server', ts.url, '--subject-token-file', subject, '--audience', FORBIDDEN]);
  assert.equal(r.code, 1);
  assert.equal(r.out.length, 0);
  assert.equal(r.err.length, 1);
  assert.match(r.err[0] ?? '', /invalid_target: policy does not allow a token for audience `https:\/\/forbidden\.example\.com`/);
  const u = await run(['oauth', 'exchange', '--server', ts.url, '--audience', API]);
  assert.equal(u.code, 2);
  assert.match(u.err[0] ?? '', /--subject-token-file is required/);
});

test('writ token exchange is the same exchange under the token commands', async () => {
  const subject = file('subject-2.jwt', await svid(ts, '/svc/batch'));
  const r = await run(['token', 'exchange', '--server', ts.url, '--subject-token-file', subject, '--audience', API, '--scope', 'read']);
  assert.equal(r.code, 0, r.err.join('\n'));
  const c = decodePayload(r.out[0] ?? '');
  assert.equal(c.sub, `spiffe://${TD}/svc/batch`);
  assert.equal(c.aud, API);
  const denied = await run(['token', 'exchange', '--server', ts.url, '--subject-token-file', subject, '--audience', FORBIDDEN]);
  assert.equal(denied.code, 1);
  assert.deepEqual(denied.err, [`writ token exchange: invalid_target: policy does not allow a token for audience \`${FORBIDDEN}\` (ERR_CLI_OAUTH)`]);
});
