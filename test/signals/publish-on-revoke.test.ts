/**
 * What the server revokes by itself reaches enforcement points: a lease
 * revoked through the admin API, the tokens of a completed task and a token
 * revoked at /oauth2/revoke are published on the revocation bus before the
 * call returns, and each policy set that becomes active is announced as
 * `policy-changed`.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RevocationEvent } from '../../src/signals/index.ts';
import { startTestServer } from '../support/server.ts';
import type { TestServer } from '../support/server.ts';
import { API, TD, TOKEN_EXCHANGE, TT_JWT, decodePayload, form, svid } from '../oauth/support.ts';

const POLICY = `@id("exchange-api")\npermit(principal, action == Writ::Action::"token/exchange", resource == Writ::Service::"${API}");\n`;

let ts: TestServer;
let dir: string;
let pep: string;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'writ-publish-'));
  writeFileSync(join(dir, 'p.cedar'), POLICY);
  ts = await startTestServer({ flags: { 'policy.dir': dir, 'policy.reloadDebounceMs': 20, 'revocations.heartbeatMs': 200 } });
  const r = await ts.call('POST', '/admin/v1/principals', { body: { name: 'pep-publish', role: 'pep' } });
  assert.equal(r.status, 201, r.text);
  pep = r.json.token as string;
});

after(async () => {
  await ts.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** Follow the stream from now on; `seen` fills as events arrive. */
async function follow(): Promise<{ seen: RevocationEvent[]; stop: () => void }> {
  const ac = new AbortController();
  const res = await fetch(`${ts.url}/v1/revocations/stream`, { headers: { authorization: `Bearer ${pep}` }, signal: ac.signal });
  assert.equal(res.status, 200);
  const seen: RevocationEvent[] = [];
  let heartbeat = false;
  void (async () => {
    let buf = '';
    const dec = new TextDecoder();
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        buf += dec.decode(chunk, { stream: true });
        for (let i = buf.indexOf('\n\n'); i !== -1; i = buf.indexOf('\n\n')) {
          const f = buf.slice(0, i);
          buf = buf.slice(i + 2);
          if (f.includes('event: revocation')) seen.push(JSON.parse(/^data: (.*)$/m.exec(f)?.[1] ?? 'null') as RevocationEvent);
          else heartbeat = true;
        }
      }
    } catch {
      // aborted
    }
  })();
  // The stream is live once its first frame arrived.
  for (const end = Date.now() + 10_000; !heartbeat; ) {
    if (Date.now() > end) throw new Error('no heartbeat on the revocation stream');
    await new Promise((r) => setTimeout(r, 10));
  }
  return { seen, stop: () => ac.abort() };
}

async function until(what: string, pred: () => boolean): Promise<void> {
  for (const end = Date.now() + 10_000; !pred(); ) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function token(taskId?: string): Promise<string> {
  const r = await form(ts, '/oauth2/token', { grant_type: TOKEN_EXCHANGE, subject_token: await svid(ts, '/svc/frontend'), subject_token_type: TT_JWT, audience: API, ...(taskId === undefined ? {} : { task: taskId }) });
  assert.equal(r.status, 200, JSON.stringify(r.json));
  return r.json.access_token as string;
}

test('an admin lease revoke, a completed task and /oauth2/revoke each put a token-revoked event on the stream', async () => {
  const f = await follow();
  try {
    const byAdmin = decodePayload(await token()).jti as string;
    const r = await ts.call('POST', `/admin/v1/leases/${byAdmin}/revoke`, { body: { reason: 'admin-revoked' } });
    assert.equal(r.status, 200, r.text);
    await until('the admin revocation', () => f.seen.some((e) => e.tokenId === byAdmin));
    const e = f.seen.find((x) => x.tokenId === byAdmin);
    assert.equal(e?.kind, 'token-revoked');
    assert.equal(e?.subject, `spiffe://${TD}/svc/frontend`);

    const t = await ts.call('POST', '/admin/v1/tasks', { body: { owner: `spiffe://${TD}/svc/frontend`, ttlSeconds: 600, scopes: [], description: 'nightly export' } });
    assert.equal(t.status, 201, t.text);
    const inTask = decodePayload(await token(t.json.id as string)).jti as string;
    assert.equal((await ts.call('POST', `/admin/v1/tasks/${t.json.id as string}/complete`)).status, 200);
    await until('the task revocation', () => f.seen.some((x) => x.tokenId === inTask));
    assert.equal(f.seen.find((x) => x.tokenId === inTask)?.reason, 'task-completed');

    const at = await token();
    const jti = decodePayload(at).jti as string;
    const rv = await form(ts, '/oauth2/revoke', { token: at, client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-spiffe', client_assertion: await svid(ts, '/svc/frontend') });
    assert.equal(rv.status, 200, JSON.stringify(rv.json));
    await until('the /oauth2/revoke revocation', () => f.seen.some((x) => x.tokenId === jti));
  } finally {
    f.stop();
  }
});

test('a policy set that becomes active is announced as policy-changed', async () => {
  const f = await follow();
  try {
    const before = (await ts.call('GET', '/admin/v1/policy')).json.activeVersion as string;
    appendFileSync(join(dir, 'p.cedar'), '\n// a change\n');
    assert.equal((await ts.call('POST', '/admin/v1/policy/reload', { body: {} })).status, 200);
    const after = (await ts.call('GET', '/admin/v1/policy')).json.activeVersion as string;
    assert.notEqual(after, before);
    await until('policy-changed', () => f.seen.some((e) => e.kind === 'policy-changed' && e.reason === after));
  } finally {
    f.stop();
  }
});
