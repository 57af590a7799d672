/**
 * Task-bound access tokens against a real server with the durable lease
 * manager: the `task` claim, TTL = min(requested, max, task deadline), scope
 * inside the task's, and completing the task makes the token inactive.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { TestServer } from '../support/server.ts';
import { API, TD, TOKEN_EXCHANGE, TT_JWT, decodePayload, form, startOAuthServer, svid } from './support.ts';

let ts: TestServer;

before(async () => {
  ts = await startOAuthServer();
});

after(async () => {
  await ts.stop();
});

async function task(ttlSeconds: number, scopes: string[]): Promise<{ id: string; deadline: string }> {
  const r = await ts.call('POST', '/admin/v1/tasks', { body: { owner: `spiffe://${TD}/agent/planner`, ttlSeconds, scopes, description: 'triage run' } });
  assert.equal(r.status, 201, r.text);
  return r.json;
}

async function introspect(token: string): Promise<any> {
  // A SPIFFE-authenticated resource server introspects.
  const r = await form(ts, '/oauth2/introspect', { token, client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-spiffe', client_assertion: await svid(ts, '/svc/api') });
  assert.equal(r.status, 200, JSON.stringify(r.json));
  return r.json;
}

test('a task-bound token carries the task, lives no longer than the task, and dies with it', async () => {
  const t = await task(120, ['read', 'write']);
  const r = await form(ts, '/oauth2/token', { grant_type: TOKEN_EXCHANGE, subject_token: await svid(ts, '/agent/planner'), subject_token_type: TT_JWT, audience: API, scope: 'read', task: t.id, requested_expires_in: '3000' });
  assert.equal(r.status, 200, JSON.stringify(r.json));
  const c = decodePayload(r.json.access_token);
  assert.equal(c.task, t.id);
  // The subject JWT-SVID lives 5 minutes, the task 2: the task deadline wins.
  assert.ok(c.exp <= Math.floor(Date.parse(t.deadline) / 1000), 'exp is not past the task deadline');
  assert.ok(r.json.expires_in <= 120 && r.json.expires_in >= 110, String(r.json.expires_in));
  const lease = await ts.server.oauth.leases.get(c.jti);
  assert.equal(lease?.taskId, t.id);
  assert.equal(lease?.state, 'active');
  assert.equal((await introspect(r.json.access_token)).task, t.id);

  const done = await ts.call('POST', `/admin/v1/tasks/${t.id}/complete`);
  assert.equal(done.status, 200, done.text);
  assert.deepEqual(await introspect(r.json.access_token), { active: false });
  // And the task can no longer be used for new tokens.
  const again = await form(ts, '/oauth2/token', { grant_type: TOKEN_EXCHANGE, subject_token: await svid(ts, '/agent/planner'), subject_token_type: TT_JWT, audience: API, scope: 'read', task: t.id });
  assert.deepEqual(again.json, { error: 'invalid_grant', error_description: `task \`${t.id}\` is not open` });
});

test('a scope outside the task is invalid_scope; without a task the default TTL is 5 minutes', async () => {
  const t = await task(600, ['read']);
  const wide = await form(ts, '/oauth2/token', { grant_type: TOKEN_EXCHANGE, subject_token: await svid(ts, '/agent/planner'), subject_token_type: TT_JWT, audience: API, scope: 'read write', task: t.id });
  assert.equal(wide.status, 400);
  assert.deepEqual(wide.json, { error: 'invalid_scope', error_description: 'scope `write` is not allowed by the task' });
  const plain = await form(ts, '/oauth2/token', { grant_type: TOKEN_EXCHANGE, subject_token: await svid(ts, '/agent/planner'), subject_token_type: TT_JWT, audience: API, scope: 'read' });
  assert.equal(plain.status, 200);
  assert.ok(plain.json.expires_in <= 300 && plain.json.expires_in >= 295, String(plain.json.expires_in));
});
