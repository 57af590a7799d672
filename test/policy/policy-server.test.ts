// The served PDP: hot reload under load over HTTP (every decision made with a
// set that loaded whole, zero failed requests), a failed load keeps the
// previous set serving and is reported in /readyz and the audit log, the
// admin policy routes, and fail-closed answers when no set can serve.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startTestServer } from '../support/server.ts';
import type { TestServer } from '../support/server.ts';
import { compilePolicySet, readPolicyFolder } from '../../src/policy/index.ts';

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const CERT = here('../../examples/authzen-certification');

const alice = { type: 'user', id: 'alice' };
const bob = { type: 'user', id: 'bob' };
const record1 = { type: 'record', id: 'record-1' };
const archived = { type: 'record', id: 'record-2' };
const REQUESTS: { body: unknown; want: boolean }[] = [
  { body: { subject: alice, action: { name: 'read' }, resource: record1 }, want: true },
  { body: { subject: alice, action: { name: 'write' }, resource: record1 }, want: true },
  { body: { subject: bob, action: { name: 'write' }, resource: record1 }, want: false },
  { body: { subject: alice, action: { name: 'write' }, resource: archived }, want: false },
  { body: { subject: bob, action: { name: 'write' }, resource: archived }, want: true },
  { body: { subject: alice, action: { name: 'delete', properties: { soft: false } }, resource: record1 }, want: false },
];

/** A copy of the certification fixture whose policies can be rewritten. */
function policyFolder(): string {
  const dir = mkdtempSync(join(tmpdir(), 'writ-policies-'));
  cpSync(CERT, dir, { recursive: true });
  return dir;
}

/** Replace a file in one step (write beside it, then rename), as a deploy tool does. */
function replaceFile(path: string, text: string): void {
  writeFileSync(`${path}.tmp`, text);
  renameSync(`${path}.tmp`, path);
}

async function credential(s: TestServer, name: string, role: string): Promise<string> {
  const r = await s.call('POST', '/admin/v1/principals', { body: { name, role } });
  assert.equal(r.status, 201, r.text);
  return r.json.token as string;
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, ms = 15_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('hot reload under load over HTTP', () => {
  let s: TestServer;
  let dir: string;
  let pep: string;
  before(async () => {
    dir = policyFolder();
    s = await startTestServer({ flags: { 'policy.dir': dir, 'policy.reloadDebounceMs': 20 } });
    pep = await credential(s, 'load-pep', 'pep');
  });
  after(async () => {
    await s.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('keeps deciding through 20 policy changes, 5 of them invalid: zero failed requests, every decision from a set that loaded whole', async () => {
    const original = readFileSync(join(dir, 'certification.cedar'), 'utf8');
    const startVersion = (await s.call('GET', '/admin/v1/policy')).json.activeVersion as string;
    const wholeVersions = new Set<string>([startVersion]);
    const pepId = ((await s.call('GET', '/admin/v1/principals')).json.principals as { id: string; name: string }[]).find((p) => p.name === 'load-pep')?.id;

    let stop = false;
    let sent = 0;
    const failures: string[] = [];
    const worker = async (w: number) => {
      for (let i = w; !stop; i++) {
        const c = REQUESTS[i % REQUESTS.length];
        if (c === undefined) continue;
        try {
          const res = await fetch(`${s.url}/access/v1/evaluation`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: pep }, body: JSON.stringify(c.body) });
          const body = (await res.json()) as { decision?: boolean };
          sent++;
          if (res.status !== 200 || body.decision !== c.want) failures.push(`${res.status} ${JSON.stringify(body)} for ${JSON.stringify(c.body)}`);
        } catch (e) {
          failures.push(`request failed: ${(e as Error).message}`);
        }
      }
    };
    const workers = [0, 1, 2, 3].map((w) => worker(w));

    let invalid = 0;
    try {
    for (let change = 1; change <= 20; change++) {
      const before = (await s.call('GET', '/admin/v1/policy')).json as { activeVersion: string; lastLoad: { at: string } };
      if (change % 4 === 0) {
        // An invalid set: a policy naming an attribute the schema does not declare.
        invalid++;
        replaceFile(join(dir, 'certification.cedar'), `${original}\n@id("broken-${change}")\npermit (principal is User, action == Action::"read", resource is Record) when { resource.color == "red" };\n`);
        const st = await until('the rejection', async () => {
          const r = (await s.call('GET', '/admin/v1/policy')).json as { activeVersion: string; lastLoad: { ok: boolean; at: string; problems: string[] } };
          return r.lastLoad.ok === false && r.lastLoad.problems.some((p) => p.includes('color')) ? r : undefined;
        });
        assert.equal(st.activeVersion, before.activeVersion, 'the previous set keeps serving');
        assert.match(st.lastLoad.problems[0] ?? '', /^certification\.cedar:\d+:\d+: /);
        const ready = (await s.call('GET', '/readyz', { token: null })).json;
        assert.equal(ready.status, 'ready');
        assert.equal(ready.detail.policy.activeVersion, before.activeVersion);
        assert.equal(ready.detail.policy.lastLoad.ok, false);
      } else {
        // A valid set with the same meaning and a different version.
        replaceFile(join(dir, 'certification.cedar'), `${original}\n// change ${change}\n`);
        const version = await (async () => {
          const r = compilePolicySet(await readPolicyFolder(dir));
          assert.ok(r.ok);
          return r.set.version;
        })();
        wholeVersions.add(version);
        await until(`the swap to ${version} (change ${change})`, async () => {
          const r = (await s.call('GET', '/admin/v1/policy')).json as { activeVersion: string };
          return r.activeVersion === version ? r : undefined;
        });
      }
      await new Promise((r) => setTimeout(r, 30));
    }
    } finally {
      stop = true;
      await Promise.all(workers);
    }

    assert.deepEqual(failures, []);
    assert.ok(sent > 100, `only ${sent} decisions were made`);
    assert.equal(invalid, 5);
    assert.equal(wholeVersions.size, 16);

    // Every decision made in the run is in the audit log with the version it was made with.
    const decisions: { details: { policyVersion: string; requestedBy?: string } }[] = [];
    let after = 0;
    for (;;) {
      const page = (await s.call('GET', `/admin/v1/audit/events?action=decision.made&after=${after}&limit=10000`)).json as { events: { seq: number; details: { policyVersion: string; requestedBy?: string } }[]; next: number | null };
      decisions.push(...page.events);
      if (page.next === null) break;
      after = page.next;
    }
    const mine = decisions.filter((d) => d.details.requestedBy === pepId);
    assert.equal(mine.length, sent);
    const strays = mine.filter((d) => !wholeVersions.has(d.details.policyVersion));
    assert.deepEqual(strays, []);
    // More than one version actually served during the run.
    assert.ok(new Set(mine.map((d) => d.details.policyVersion)).size > 1);

    const loads = (await s.call('GET', '/admin/v1/audit/events?action=policy-set.rejected&limit=100')).json.events as { outcome: string; details: { problems: string[] } }[];
    assert.ok(loads.length >= 5, `${loads.length} rejections recorded`);
    assert.ok(loads.every((e) => e.outcome === 'failure' && e.details.problems.length > 0));
  });
});

describe('admin policy routes', () => {
  let s: TestServer;
  let dir: string;
  before(async () => {
    dir = policyFolder();
    // No watching in this suite: a long debounce leaves reloads to the API.
    s = await startTestServer({ flags: { 'policy.dir': dir, 'policy.reloadDebounceMs': 60_000 } });
  });
  after(async () => {
    await s.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('GET /admin/v1/policy shows the version, the policies and the last load', async () => {
    const r = await s.call('GET', '/admin/v1/policy');
    assert.equal(r.status, 200);
    assert.equal(r.json.dir, dir);
    assert.match(r.json.activeVersion, /^pv-[0-9a-f]{24}$/);
    assert.equal(r.json.policyCount, 4);
    assert.deepEqual(r.json.policies.map((p: { id: string }) => p.id), ['read-records', 'write-active-records', 'admins-write-archived-records', 'soft-delete']);
    assert.deepEqual(r.json.policies[0], { id: 'read-records', effect: 'permit', file: 'certification.cedar', line: 4, reason: 'users-may-read-records' });
    assert.equal(r.json.lastLoad.ok, true);
    assert.deepEqual(r.json.lastLoad.problems, []);
  });

  it('POST /admin/v1/policy/reload swaps a valid set and refuses an invalid one, keeping the old set', async () => {
    const v0 = (await s.call('GET', '/admin/v1/policy')).json.activeVersion as string;
    const same = await s.call('POST', '/admin/v1/policy/reload');
    assert.equal(same.status, 200);
    assert.deepEqual(same.json, { activeVersion: v0, previousVersion: v0, changed: false });

    writeFileSync(join(dir, 'extra.cedar'), '@id("bob-deletes")\npermit (principal == User::"bob", action == Action::"delete", resource is Record);\n');
    const ok = await s.call('POST', '/admin/v1/policy/reload');
    assert.equal(ok.status, 200);
    assert.equal(ok.json.previousVersion, v0);
    assert.equal(ok.json.changed, true);
    const v1 = ok.json.activeVersion as string;

    writeFileSync(join(dir, 'extra.cedar'), 'permit (principal, action, resource) when { nonsense ;\n');
    const bad = await s.call('POST', '/admin/v1/policy/reload');
    assert.equal(bad.status, 400);
    assert.equal(bad.json.code, 'ERR_POLICY_SET_INVALID');
    assert.match(bad.json.message, new RegExp(`^policy set rejected, ${v1} keeps serving: 1 problem\\(s\\): extra\\.cedar:1:\\d+: `));
    const st = (await s.call('GET', '/admin/v1/policy')).json;
    assert.equal(st.activeVersion, v1);
    assert.equal(st.lastLoad.ok, false);
    assert.match(st.lastLoad.problems[0], /^extra\.cedar:1:\d+: /);
    const events = (await s.call('GET', '/admin/v1/audit/events?action=policy-set.rejected')).json.events as { outcome: string; details: { activeVersion: string; problems: string[] } }[];
    assert.equal(events.at(-1)?.details.activeVersion, v1);
    rmSync(join(dir, 'extra.cedar'));
    assert.equal((await s.call('POST', '/admin/v1/policy/reload')).json.activeVersion, v0);
  });

  it('POST /admin/v1/policy/explain gives the decision, reasons, determining policies and version', async () => {
    const v = (await s.call('GET', '/admin/v1/policy')).json.activeVersion as string;
    const allow = await s.call('POST', '/admin/v1/policy/explain', { body: { subject: alice, action: { name: 'read' }, resource: record1 } });
    assert.equal(allow.status, 200);
    assert.equal(allow.json.decision, 'allow');
    assert.deepEqual(allow.json.reasons, ['users-may-read-records']);
    assert.deepEqual(allow.json.determiningPolicies, ['read-records']);
    assert.equal(allow.json.policyVersion, v);
    const deny = await s.call('POST', '/admin/v1/policy/explain', { body: { subject: bob, action: { name: 'write' }, resource: record1 } });
    assert.equal(deny.json.decision, 'deny');
    assert.deepEqual(deny.json.reasons, ['no-matching-permit']);
    const unknown = await s.call('POST', '/admin/v1/policy/explain', { body: { subject: alice, action: { name: 'read' }, resource: record1, extra: 1 } });
    assert.equal(unknown.status, 400);
    assert.equal(unknown.json.code, 'ERR_SERVER_BAD_REQUEST');
    // An explain is recorded with its purpose, so replay can skip it.
    const events = (await s.call('GET', `/admin/v1/audit/events?correlationId=${encodeURIComponent(allow.headers.get('x-correlation-id') ?? '')}`)).json.events as { action: string; details: Record<string, unknown> }[];
    assert.deepEqual(events.map((e) => e.action), ['decision.made', 'api.called']);
    assert.equal(events[0]?.details.purpose, 'explain');
  });

  it('roles: an auditor reads the policy but cannot reload it; a pep can do neither', async () => {
    const auditor = await credential(s, 'pol-auditor', 'auditor');
    assert.equal((await s.call('GET', '/admin/v1/policy', { token: auditor })).status, 200);
    const r = await s.call('POST', '/admin/v1/policy/reload', { token: auditor });
    assert.equal(r.status, 403);
    assert.equal(r.json.message, 'role `auditor` lacks permission `policy.manage`');
    const pep = await credential(s, 'pol-pep', 'pep');
    assert.equal((await s.call('GET', '/admin/v1/policy', { token: pep })).status, 403);
    assert.equal((await s.call('POST', '/admin/v1/policy/explain', { token: pep, body: { subject: alice, action: { name: 'read' }, resource: record1 } })).status, 403);
  });
});

describe('fail-closed over HTTP', () => {
  const body = { subject: alice, action: { name: 'read' }, resource: record1 };

  it('no policy folder: an empty set serves, every decision is a deny, /readyz says so, reload is 409', async () => {
    const s = await startTestServer();
    try {
      const pep = await credential(s, 'p', 'pep');
      const r = await s.call('POST', '/access/v1/evaluation', { token: pep, body });
      assert.equal(r.status, 200);
      assert.deepEqual(r.json, { decision: false });
      const writ = await s.call('POST', '/admin/v1/policy/explain', { body: { subject: { type: 'workload', id: 'w' }, action: { name: 'http:GET' }, resource: { type: 'service', id: 'api' } } });
      assert.equal(writ.json.decision, 'deny');
      assert.match(writ.json.policyVersion, /^pv-/);
      const unknown = await s.call('POST', '/admin/v1/policy/explain', { body });
      assert.deepEqual(unknown.json.reasons, ['unknown-action']);
      const ready = (await s.call('GET', '/readyz', { token: null })).json;
      assert.equal(ready.status, 'ready');
      assert.equal(ready.checks.policy, 'ok');
      assert.equal(ready.detail.policy.dir, null);
      assert.equal(ready.detail.policy.policyCount, 0);
      assert.equal(ready.detail.policy.note, 'no policy folder configured (`policy.dir`): serving an empty set, every decision is a deny');
      const reload = await s.call('POST', '/admin/v1/policy/reload');
      assert.equal(reload.status, 409);
      assert.equal(reload.json.code, 'ERR_POLICY_NO_FOLDER');
      assert.equal(reload.json.message, 'no policy folder is configured; start with `--policies <dir>` or set `policy.dir`');
    } finally {
      await s.stop();
    }
  });

  it('an invalid set at start: the server runs, every decision is a deny with reason policy-set-unavailable, /readyz is 503 with the problems', async () => {
    const dir = policyFolder();
    writeFileSync(join(dir, 'bad.cedar'), 'permit (principal, action, resource) when { resource.nope };\n');
    const s = await startTestServer({ flags: { 'policy.dir': dir, 'policy.reloadDebounceMs': 20 } });
    try {
      const pep = await credential(s, 'p', 'pep');
      const r = await s.call('POST', '/access/v1/evaluation', { token: pep, body });
      assert.equal(r.status, 200);
      assert.deepEqual(r.json, { decision: false });
      const batch = await s.call('POST', '/access/v1/evaluations', { token: pep, body: { evaluations: [body, body] } });
      assert.deepEqual(batch.json, { evaluations: [{ decision: false }, { decision: false }] });
      const why = await s.call('POST', '/admin/v1/policy/explain', { body });
      assert.equal(why.json.decision, 'deny');
      assert.deepEqual(why.json.reasons, ['policy-set-unavailable']);
      assert.equal(why.json.policyVersion, null);
      const ready = await s.call('GET', '/readyz', { token: null });
      assert.equal(ready.status, 503);
      assert.equal(ready.json.checks.policy, 'no-valid-set');
      assert.equal(ready.json.detail.policy.lastLoad.ok, false);
      assert.match(ready.json.detail.policy.lastLoad.problems[0], /^bad\.cedar:1:\d+: /);
      const rejected = (await s.call('GET', '/admin/v1/audit/events?action=policy-set.rejected')).json.events;
      assert.equal(rejected.length, 1);
      // Fixing the folder brings the PDP up without a restart.
      rmSync(join(dir, 'bad.cedar'));
      await until('the fixed set', async () => ((await s.call('GET', '/readyz', { token: null })).status === 200 ? true : undefined));
      assert.deepEqual((await s.call('POST', '/access/v1/evaluation', { token: pep, body })).json, { decision: true });
    } finally {
      await s.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('an unreadable policy folder at start is a failed load, not a crash', async () => {
    const missing = join(tmpdir(), `writ-no-such-folder-${process.pid}`);
    const s = await startTestServer({ flags: { 'policy.dir': missing } });
    try {
      const ready = await s.call('GET', '/readyz', { token: null });
      assert.equal(ready.status, 503);
      assert.deepEqual(ready.json.detail.policy.lastLoad.problems, [`(folder):0:0: cannot read policy folder \`${missing}\``]);
      const why = await s.call('POST', '/admin/v1/policy/explain', { body });
      assert.deepEqual(why.json.reasons, ['policy-set-unavailable']);
    } finally {
      await s.stop();
    }
  });
});
