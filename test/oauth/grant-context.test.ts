/**
 * Every grant is a PDP decision on what is asked for: the scope, the grant
 * type and client (`context.oauth`) and the task the token is bound to
 * (`context.task`: its declared intent, the tools its scopes name, its deadline).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startTestServer } from '../support/server.ts';
import type { TestServer } from '../support/server.ts';
import { API, TD, TOKEN_EXCHANGE, TT_JWT, form, svid } from './support.ts';

const DEPLOY = 'https://deploy.example.com';
const POLICIES = `
@id("api-read-only")
permit(principal, action == Writ::Action::"token/exchange", resource == Writ::Service::"${API}")
  when { context has oauth && context.oauth.grantType == "urn:ietf:params:oauth:grant-type:token-exchange" && ["read"].containsAll(context.oauth.scope) };

@id("deploy-for-its-task")
permit(principal, action == Writ::Action::"token/exchange", resource == Writ::Service::"${DEPLOY}")
  when { context has task && context.task.intent == "deploy payments" && context.task.tools.contains(Writ::Tool::"kubectl") };
`;

let ts: TestServer;
let dir: string;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'writ-grant-context-'));
  writeFileSync(join(dir, 'grants.cedar'), POLICIES);
  ts = await startTestServer({ flags: { 'policy.dir': dir } });
});

after(async () => {
  await ts.stop();
  rmSync(dir, { recursive: true, force: true });
});

async function task(description: string, scopes: string[]): Promise<string> {
  const r = await ts.call('POST', '/admin/v1/tasks', { body: { owner: `spiffe://${TD}/ci/deployer`, ttlSeconds: 600, scopes, description } });
  assert.equal(r.status, 201, r.text);
  return r.json.id as string;
}

async function exchange(audience: string, scope: string, taskId?: string) {
  return form(ts, '/oauth2/token', {
    grant_type: TOKEN_EXCHANGE,
    subject_token: await svid(ts, '/ci/deployer'),
    subject_token_type: TT_JWT,
    audience,
    scope,
    ...(taskId === undefined ? {} : { task: taskId }),
  });
}

test('the requested scope is policy input: within it a grant passes, beyond it the PDP refuses', async () => {
  const ok = await exchange(API, 'read');
  assert.equal(ok.status, 200, JSON.stringify(ok.json));
  const wide = await exchange(API, 'read write');
  assert.equal(wide.status, 400);
  assert.deepEqual(wide.json, { error: 'invalid_target', error_description: `policy does not allow a token for audience \`${API}\`` });
});

test("the task's declared intent and tools are policy input; no task, no grant for a task-only audience", async () => {
  const deploy = await task('deploy payments', ['deploy', 'tools:kubectl']);
  const ok = await exchange(DEPLOY, 'deploy', deploy);
  assert.equal(ok.status, 200, JSON.stringify(ok.json));

  const noTask = await exchange(DEPLOY, 'deploy');
  assert.equal(noTask.status, 400);
  assert.equal(noTask.json.error, 'invalid_target');

  const otherIntent = await task('rotate certificates', ['deploy', 'tools:kubectl']);
  assert.equal((await exchange(DEPLOY, 'deploy', otherIntent)).json.error, 'invalid_target');

  const noTool = await task('deploy payments', ['deploy']);
  assert.equal((await exchange(DEPLOY, 'deploy', noTool)).json.error, 'invalid_target');
});

test('the decision for a refused grant is audited with the grant it judged', async () => {
  await exchange(API, 'admin');
  type Ev = { outcome: string; reasons?: string[]; details: { policyIds?: string[]; request?: { context?: { oauth?: { scope?: string[]; grantType?: string } } } } };
  const events = (await ts.call('GET', '/admin/v1/audit/events?action=decision.made&limit=1000')).json.events as Ev[];
  const refused = events.filter((e) => e.outcome === 'denied' && e.details.request?.context?.oauth?.scope?.[0] === 'admin');
  assert.equal(refused.length, 1);
  assert.deepEqual(refused[0]?.reasons, ['no-matching-permit']);
  assert.equal(refused[0]?.details.request?.context?.oauth?.grantType, TOKEN_EXCHANGE);
  assert.ok(events.some((e) => e.outcome === 'success' && (e.details.policyIds ?? []).includes('deploy-for-its-task')));
});
