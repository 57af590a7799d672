// Shadow mode on a running server: set and clear a candidate over the admin API
// and the CLI, compare it on live AuthZEN traffic, audit disagreements as valid
// OCSF, count them in /metrics, and never let the candidate change an answer.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { main } from '../../src/cli/main.ts';
import { startTestServer } from '../support/server.ts';
import type { TestServer } from '../support/server.ts';
import { loadOcsfSchema } from '../support/ocsf-schema.ts';

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const CERT = here('../../examples/authzen-certification');

function copyOf(dir: string, extra?: string): string {
  const to = mkdtempSync(join(tmpdir(), 'writ-shadow-'));
  cpSync(dir, to, { recursive: true });
  if (extra !== undefined) appendFileSync(join(to, 'certification.cedar'), extra);
  return to;
}

async function run(argv: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; out: string[]; err: string[] }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(argv, { out: (s) => out.push(s), err: (s) => err.push(s), env });
  return { code, out, err };
}

const FREEZE = '\n@id("write-freeze")\n@reason("change-freeze")\nforbid (principal, action == Action::"write", resource);\n';
const alice = { type: 'user', id: 'alice' };
const bob = { type: 'user', id: 'bob' };
const record1 = { type: 'record', id: 'record-1' };

describe('shadow mode on the server', () => {
  let s: TestServer;
  let pep: string;
  let candidate: string;
  let broken: string;
  let env: NodeJS.ProcessEnv;
  const evaluate = (body: unknown) => s.call('POST', '/access/v1/evaluation', { token: pep, body });
  const status = async () => (await s.call('GET', '/admin/v1/policy/shadow')).json;
  async function waitCompared(n: number): Promise<{ compared: number; disagreements: number; errors: number }> {
    for (let i = 0; i < 200; i++) {
      const st = await status();
      if ((st.stats?.compared ?? 0) >= n) return st.stats;
      await new Promise((r) => setTimeout(r, 25));
    }
    assert.fail(`fewer than ${n} comparisons: ${JSON.stringify(await status())}`);
  }

  before(async () => {
    candidate = copyOf(CERT, FREEZE);
    broken = copyOf(CERT, '\nforbid (principal, action, resource) when { ;\n');
    s = await startTestServer({ flags: { 'policy.dir': CERT } });
    env = { WRIT_SERVER: s.url, WRIT_TOKEN: s.token };
    const r = await s.call('POST', '/admin/v1/principals', { body: { name: 'shadow-pep', role: 'pep' } });
    pep = r.json.token as string;
  });
  after(async () => {
    await s.stop();
    rmSync(candidate, { recursive: true, force: true });
    rmSync(broken, { recursive: true, force: true });
  });

  it('starts without a shadow; a candidate that does not compile is a 400 and changes nothing', async () => {
    assert.deepEqual(await status(), { active: false, dir: null, version: null, since: null, stats: null });
    const r = await s.call('PUT', '/admin/v1/policy/shadow', { body: { dir: broken } });
    assert.equal(r.status, 400);
    assert.equal(r.json.code, 'ERR_POLICY_SET_INVALID');
    assert.match(r.json.message, /^shadow candidate `.+` rejected, no shadow stays: 1 problem\(s\): certification\.cedar:\d+:\d+: /);
    assert.equal((await status()).active, false);
    // Only a policy.manage role may set it.
    const auditor = (await s.call('POST', '/admin/v1/principals', { body: { name: 'shadow-auditor', role: 'auditor' } })).json.token as string;
    assert.equal((await s.call('PUT', '/admin/v1/policy/shadow', { token: auditor, body: { dir: candidate } })).status, 403);
  });

  it('compares live traffic, records the one disagreement as valid OCSF, counts it in /metrics, and answers with the live set', async () => {
    const set = await run(['policy', 'shadow', '--set', candidate], env);
    assert.equal(set.code, 0, set.err.join('\n'));
    const shown = (set.out[0] ?? '').split('\n');
    assert.deepEqual(shown.slice(0, 2), ['shadow     on', `folder     ${candidate}`]);
    const st = await status();
    assert.equal(st.active, true);
    assert.match(st.version, /^pv-/);

    // Live answers: alice writes (the candidate would refuse), alice reads, bob may not write.
    assert.deepEqual((await evaluate({ subject: alice, action: { name: 'write' }, resource: record1 })).json, { decision: true });
    assert.deepEqual((await evaluate({ subject: alice, action: { name: 'read' }, resource: record1 })).json, { decision: true });
    assert.deepEqual((await evaluate({ subject: bob, action: { name: 'write' }, resource: record1 })).json, { decision: false });
    // An explain is not live traffic.
    await s.call('POST', '/admin/v1/policy/explain', { body: { subject: alice, action: { name: 'write' }, resource: record1 } });
    assert.deepEqual(await waitCompared(3), { compared: 3, disagreements: 1, errors: 0 });
    assert.equal((await status()).stats.compared, 3);

    const events = (await s.call('GET', '/admin/v1/audit/events?action=policy.shadow.disagreed&limit=10')).json.events as { action: string; reasons: string[]; details: Record<string, any> }[];
    assert.equal(events.length, 1);
    assert.deepEqual(events[0]?.details.live.decision, 'allow');
    assert.deepEqual(events[0]?.details.shadow, { decision: 'deny', reasons: ['change-freeze'], policyIds: ['write-freeze'], policyVersion: st.version });
    assert.deepEqual(events[0]?.details.principal, { type: 'User', id: 'alice' });
    assert.equal((await s.call('GET', '/admin/v1/audit/events?action=policy.shadow.enabled&limit=10')).json.events.length, 1);

    const ocsf = (await s.call('GET', '/admin/v1/audit/export?format=ocsf')).text.trim().split('\n').map((l) => JSON.parse(l) as Record<string, any>);
    const schema = loadOcsfSchema();
    const shadowEvents = ocsf.filter((e) => typeof e.message === 'string' && e.message.startsWith('policy.shadow.'));
    assert.equal(shadowEvents.length, 2);
    for (const e of shadowEvents) assert.deepEqual(schema.validate(e), [], JSON.stringify(e));
    assert.ok(shadowEvents.every((e) => e.class_uid === 3004), 'Entity Management');

    const metrics = (await s.call('GET', '/metrics', { token: null })).text;
    assert.match(metrics, /^writ_policy_shadow_comparisons_total\{result="agree"\} 2$/m);
    assert.match(metrics, /^writ_policy_shadow_comparisons_total\{result="disagree"\} 1$/m);
    assert.match(metrics, /^writ_policy_shadow_comparisons_total\{result="error"\} 0$/m);
    assert.match(metrics, /^writ_policy_shadow_active 1$/m);
  });

  it('clearing stops the comparison and is audited; clearing twice says so', async () => {
    const cleared = await run(['policy', 'shadow', '--clear'], env);
    assert.equal(cleared.code, 0, cleared.err.join('\n'));
    assert.deepEqual(cleared.out, ['shadow cleared (1 disagreements in 3 decisions)']);
    assert.deepEqual((await run(['policy', 'shadow'], env)).out, ['shadow     off']);
    assert.deepEqual((await run(['policy', 'shadow', '--clear'], env)).out, ['no shadow was set']);
    assert.deepEqual((await evaluate({ subject: alice, action: { name: 'write' }, resource: record1 })).json, { decision: true });
    const disabled = (await s.call('GET', '/admin/v1/audit/events?action=policy.shadow.disabled&limit=10')).json.events;
    assert.equal(disabled.length, 1);
    const metrics = (await s.call('GET', '/metrics', { token: null })).text;
    assert.match(metrics, /^writ_policy_shadow_active 0$/m);
    assert.match(metrics, /^writ_policy_shadow_comparisons_total\{result="disagree"\} 1$/m);
    // A refused candidate through the CLI is exit 1.
    const bad = await run(['policy', 'shadow', '--set', broken], env);
    assert.equal(bad.code, 1);
    assert.equal((await run(['policy', 'shadow', '--set', broken, '--clear'], env)).code, 2);
  });
});

describe('shadow mode from configuration', () => {
  it('`policy.shadowDir` sets the shadow at start; a bad one leaves the server serving without it', async () => {
    const candidate = copyOf(CERT, FREEZE);
    const broken = copyOf(CERT, '\nforbid (principal, action, resource) when { ;\n');
    try {
      const s = await startTestServer({ flags: { 'policy.dir': CERT, 'policy.shadowDir': candidate } });
      try {
        const st = (await s.call('GET', '/admin/v1/policy/shadow')).json;
        assert.equal(st.active, true);
        assert.equal(st.dir, candidate);
      } finally {
        await s.stop();
      }
      const b = await startTestServer({ flags: { 'policy.dir': CERT, 'policy.shadowDir': broken } });
      try {
        assert.equal((await b.call('GET', '/admin/v1/policy/shadow')).json.active, false);
        assert.match(b.logs(), /shadow policy candidate \(`policy.shadowDir`\) rejected; running without shadow/);
        assert.equal((await b.call('GET', '/readyz', { token: null })).status, 200);
      } finally {
        await b.stop();
      }
    } finally {
      rmSync(candidate, { recursive: true, force: true });
      rmSync(broken, { recursive: true, force: true });
    }
  });
});
