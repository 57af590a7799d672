// `writ policy validate|test|explain|show|reload`: exact output and exit codes,
// locally on folders and against a real server.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { main } from '../../src/cli/main.ts';
import { compilePolicySet, readPolicyFolder } from '../../src/policy/index.ts';
import { startTestServer } from '../support/server.ts';
import type { TestServer } from '../support/server.ts';

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const EXAMPLE = here('../../examples/policies');
const CERT = here('../../examples/authzen-certification');

async function run(argv: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; out: string[]; err: string[] }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(argv, { out: (s) => out.push(s), err: (s) => err.push(s), env });
  return { code, out, err };
}

async function versionOf(dir: string): Promise<string> {
  const r = compilePolicySet(await readPolicyFolder(dir));
  assert.ok(r.ok);
  return r.set.version;
}

function copyOf(dir: string): string {
  const to = mkdtempSync(join(tmpdir(), 'writ-cli-policies-'));
  cpSync(dir, to, { recursive: true });
  return to;
}

describe('writ policy validate (local)', () => {
  it('a valid folder: exit 0 and one summary line', async () => {
    const r = await run(['policy', 'validate', EXAMPLE]);
    assert.equal(r.code, 0);
    assert.deepEqual(r.out, [`${EXAMPLE}: 11 policies, version ${await versionOf(EXAMPLE)}`]);
    assert.deepEqual(r.err, []);
  });

  it('an invalid folder: exit 1, one file:line:column line per problem', async () => {
    const dir = copyOf(CERT);
    try {
      writeFileSync(join(dir, 'bad.cedar'), '// a comment\npermit (principal, action, resource) when { resource.nope };\n');
      const r = await run(['policy', 'validate', dir]);
      assert.equal(r.code, 1);
      assert.equal(r.out.length, 1);
      assert.match(r.out[0] ?? '', /^bad\.cedar:2:\d+: .*nope/);
      assert.deepEqual(r.err, [`${dir}: 1 problem(s)`]);
      const j = await run(['policy', 'validate', dir, '--json']);
      assert.equal(j.code, 1);
      const body = JSON.parse(j.out.join('\n'));
      assert.equal(body.ok, false);
      assert.deepEqual(body.problems, r.out);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a missing folder is exit 1 with the code; no folder argument is a usage error (exit 2)', async () => {
    const missing = join(tmpdir(), `writ-cli-missing-${process.pid}`);
    const r = await run(['policy', 'validate', missing]);
    assert.equal(r.code, 1);
    assert.deepEqual(r.err, [`writ policy validate: cannot read policy folder \`${missing}\` (ERR_POLICY_FOLDER_UNREADABLE)`]);
    const u = await run(['policy', 'validate']);
    assert.equal(u.code, 2);
    assert.deepEqual(u.err, ['writ policy validate: expected 1 argument(s); usage: writ policy validate DIR [--json]']);
  });
});

describe('writ policy test (local)', () => {
  it('the example cases all pass: exit 0', async () => {
    const r = await run(['policy', 'test', EXAMPLE]);
    assert.equal(r.code, 0, r.out.join('\n'));
    assert.equal(r.out.length, 15);
    assert.ok(r.out.slice(0, 14).every((l) => l.startsWith('ok    ')));
    assert.equal(r.out[14], `14 passed, 0 failed (version ${await versionOf(EXAMPLE)})`);
  });

  it('a case whose expectation no longer holds: exit 1 and a FAIL line that says why', async () => {
    const dir = copyOf(EXAMPLE);
    try {
      const file = join(dir, 'tests', 'legacy-write.case.json');
      const c = JSON.parse(readFileSync(file, 'utf8'));
      c.want = { decision: 'allow' };
      writeFileSync(file, JSON.stringify(c));
      const r = await run(['policy', 'test', dir]);
      assert.equal(r.code, 1);
      assert.ok(r.out.includes('FAIL  a legacy workload may read but not write an internet-facing service: decision deny, want allow (reasons: legacy-internet-facing-write-denied)'), r.out.join('\n'));
      assert.equal(r.out.at(-1), `13 passed, 1 failed (version ${await versionOf(dir)})`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('an invalid policy folder fails before any case runs', async () => {
    const dir = copyOf(EXAMPLE);
    try {
      writeFileSync(join(dir, 'bad.cedar'), 'permit (principal, action, resource) when {\n');
      const r = await run(['policy', 'test', dir]);
      assert.equal(r.code, 1);
      assert.match(r.out[0] ?? '', /^bad\.cedar:\d+:\d+: /);
      assert.ok(!r.out.some((l) => l.startsWith('ok ')));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('writ policy explain|show|reload (against the server)', () => {
  let s: TestServer;
  let dir: string;
  let env: NodeJS.ProcessEnv;
  before(async () => {
    dir = copyOf(CERT);
    s = await startTestServer({ flags: { 'policy.dir': dir, 'policy.reloadDebounceMs': 60_000 } });
    env = { WRIT_SERVER: s.url, WRIT_TOKEN: s.token };
  });
  after(async () => {
    await s.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('explain: decision, reasons, determining policies and version', async () => {
    const v = await versionOf(dir);
    const r = await run(['policy', 'explain', '--subject', 'user:alice', '--action', 'read', '--resource', 'record:record-1'], env);
    assert.equal(r.code, 0, r.err.join('\n'));
    assert.equal(r.out.length, 1);
    const lines = (r.out[0] ?? '').split('\n');
    assert.deepEqual(lines.slice(0, 4), ['decision     allow', 'reasons      users-may-read-records', 'policies     read-records', `version      ${v}`]);
    assert.match(lines[4] ?? '', /^decision id  [0-9a-f-]{36}$/);

    const deny = await run(['policy', 'explain', '--subject', 'user:alice', '--action', 'delete', '--action-properties', '{"soft":false}', '--resource', 'record:record-1', '--json'], env);
    assert.equal(deny.code, 0);
    const d = JSON.parse(deny.out.join('\n'));
    assert.equal(d.decision, 'deny');
    assert.deepEqual(d.reasons, ['no-matching-permit']);
    assert.deepEqual(d.determiningPolicies, []);
    assert.equal(d.policyVersion, v);

    const admin = await run(['policy', 'explain', '--subject', 'user:bob', '--subject-properties', '{"role":"admin"}', '--action', 'write', '--resource', 'record:record-2', '--json'], env);
    assert.deepEqual(JSON.parse(admin.out.join('\n')).determiningPolicies, ['admins-write-archived-records']);
  });

  it('explain usage errors exit 2 with one line', async () => {
    const cases: [string[], string][] = [
      [['--action', 'read', '--resource', 'record:r'], 'writ policy explain: --subject is required (ERR_CLI_USAGE)'],
      [['--subject', 'alice', '--action', 'read', '--resource', 'record:r'], 'writ policy explain: --subject must look like TYPE:ID, not `alice` (ERR_CLI_USAGE)'],
      [['--subject', 'user:a', '--resource', 'record:r'], 'writ policy explain: --action is required (ERR_CLI_USAGE)'],
      [['--subject', 'user:a', '--action', 'read', '--resource', 'record:r', '--context', '[1]'], 'writ policy explain: --context must be a JSON object (ERR_CLI_USAGE)'],
    ];
    for (const [args, line] of cases) {
      const r = await run(['policy', 'explain', ...args], env);
      assert.equal(r.code, 2, line);
      assert.deepEqual(r.err, [line]);
    }
  });

  it('show: folder, version, count, last load, then the policies', async () => {
    const v = await versionOf(dir);
    const r = await run(['policy', 'show'], env);
    assert.equal(r.code, 0);
    assert.deepEqual((r.out[0] ?? '').split('\n').slice(0, 3), [`folder     ${dir}`, `version    ${v}`, 'policies   4']);
    assert.match((r.out[0] ?? '').split('\n')[3] ?? '', /^last load  ok at \d{4}-\d\d-\d\dT/);
    assert.deepEqual((r.out[2] ?? '').split('\n').slice(0, 2), [
      'ID                             EFFECT  WHERE                   REASON',
      'read-records                   permit  certification.cedar:4   users-may-read-records',
    ]);
  });

  it('reload: unchanged, then a new version, then a refused set (exit 1) that keeps the old one', async () => {
    const v0 = await versionOf(dir);
    const same = await run(['policy', 'reload'], env);
    assert.equal(same.code, 0);
    assert.deepEqual(same.out, [`unchanged: ${v0}`]);

    writeFileSync(join(dir, 'extra.cedar'), '@id("bob-deletes")\npermit (principal == User::"bob", action == Action::"delete", resource is Record);\n');
    const v1 = await versionOf(dir);
    const changed = await run(['policy', 'reload'], env);
    assert.equal(changed.code, 0);
    assert.deepEqual(changed.out, [`reloaded: ${v0} -> ${v1}`]);

    writeFileSync(join(dir, 'extra.cedar'), 'permit (principal, action, resource) when { resource.nope };\n');
    const bad = await run(['policy', 'reload'], env);
    assert.equal(bad.code, 1);
    assert.equal(bad.err.length, 1);
    assert.match(bad.err[0] ?? '', new RegExp(`^writ policy reload: policy set rejected, ${v1} keeps serving: 1 problem\\(s\\): extra\\.cedar:1:\\d+: .* \\(ERR_POLICY_SET_INVALID\\)$`));
    const shown = await run(['policy', 'show'], env);
    const head = (shown.out[0] ?? '').split('\n');
    assert.equal(head[1], `version    ${v1}`);
    assert.match(head[3] ?? '', /^last load  FAILED at /);
    assert.match(shown.out[1] ?? '', /^ {2}extra\.cedar:1:\d+: /);
    rmSync(join(dir, 'extra.cedar'));
    assert.deepEqual((await run(['policy', 'reload'], env)).out, [`reloaded: ${v1} -> ${v0}`]);
  });

  it('an unreadable token file or a wrong credential: exit 1 with one line', async () => {
    const file = join(tmpdir(), 'writ-no-token-here');
    const r = await run(['policy', 'show'], { WRIT_SERVER: s.url, WRIT_TOKEN_FILE: file });
    assert.equal(r.code, 1);
    assert.deepEqual(r.err, [`writ policy show: cannot read the admin token file ${file} (ERR_CLI_TOKEN_FILE)`]);
    const w = await run(['policy', 'reload'], { WRIT_SERVER: s.url, WRIT_TOKEN: 'nonsense' });
    assert.equal(w.code, 1);
    assert.deepEqual(w.err, ['writ policy reload: admin credential is missing, malformed, unknown or revoked (ERR_GOV_UNAUTHENTICATED)']);
  });

  it('`writ up --help` documents --policies', async () => {
    const r = await run(['up', '--help']);
    assert.equal(r.code, 0);
    assert.match(r.out.join('\n'), /--policies DIR +policy folder \(`\.cedar` files\), watched and reloaded on change \(env WRIT_POLICY_DIR\)/);
  });
});

describe('writ policy replay (recorded decisions, candidate folder)', () => {
  let s: TestServer;
  let candidate: string;
  let env: NodeJS.ProcessEnv;
  const alice = { type: 'user', id: 'alice' };
  const bob = { type: 'user', id: 'bob' };
  const record1 = { type: 'record', id: 'record-1' };
  const BODIES = [
    { subject: alice, action: { name: 'read' }, resource: record1 },
    { subject: alice, action: { name: 'write' }, resource: record1 },
    { subject: bob, action: { name: 'read' }, resource: record1 },
    { subject: bob, action: { name: 'write' }, resource: record1 },
    { subject: alice, action: { name: 'delete', properties: { soft: true } }, resource: record1 },
    { subject: alice, action: { name: 'delete', properties: { soft: false } }, resource: record1 },
  ];
  before(async () => {
    s = await startTestServer({ flags: { 'policy.dir': CERT } });
    env = { WRIT_SERVER: s.url, WRIT_TOKEN: s.token };
    const pep = (await s.call('POST', '/admin/v1/principals', { body: { name: 'replay-pep', role: 'pep' } })).json.token as string;
    // Every request twice, one batch, and an explain (which replay skips).
    for (const b of BODIES) assert.equal((await s.call('POST', '/access/v1/evaluation', { token: pep, body: b })).status, 200);
    assert.equal((await s.call('POST', '/access/v1/evaluations', { token: pep, body: { evaluations: BODIES } })).status, 200);
    assert.equal((await s.call('POST', '/admin/v1/policy/explain', { body: BODIES[0] })).status, 200);
    // The deliberate diff: no soft deletes, bob may not read, bob may write.
    candidate = copyOf(CERT);
    const file = join(candidate, 'certification.cedar');
    const text = readFileSync(file, 'utf8').replace(/@id\("soft-delete"\)[\s\S]*$/, '');
    writeFileSync(file, `${text}\n@id("no-bob-reads")\n@reason("bob-may-not-read")\nforbid (principal == User::"bob", action == Action::"read", resource);\n@id("bob-writes")\npermit (principal == User::"bob", action == Action::"write", resource is Record);\n`);
  });
  after(async () => {
    await s.stop();
    rmSync(candidate, { recursive: true, force: true });
  });

  it('lists exactly the decisions the change flips, and exits 1', async () => {
    const r = await run(['policy', 'replay', '--candidate', candidate, '--since', '1h'], env);
    assert.equal(r.code, 1, r.err.join('\n'));
    const flips = r.out.slice(0, -1).map((l) => l.replace(/^\S+ {2}[0-9a-f-]{36} {2}/, ''));
    assert.deepEqual(flips, [
      'User::"bob" read Record::"record-1": allow -> deny (bob-may-not-read)',
      'User::"bob" write Record::"record-1": deny -> allow (policy-permit)',
      'User::"alice" delete Record::"record-1": allow -> deny (no-matching-permit)',
      'User::"bob" read Record::"record-1": allow -> deny (bob-may-not-read)',
      'User::"bob" write Record::"record-1": deny -> allow (policy-permit)',
      'User::"alice" delete Record::"record-1": allow -> deny (no-matching-permit)',
    ]);
    assert.match(r.out.at(-1) ?? '', new RegExp(`^12 decisions replayed since \\S+, 6 would flip \\(4 allow -> deny, 2 deny -> allow\\), 1 skipped; candidate ${await versionOf(candidate)}$`));
  });

  it('the serving set itself flips nothing: exit 0', async () => {
    const r = await run(['policy', 'replay', '--candidate', CERT, '--since', '1h', '--json'], env);
    assert.equal(r.code, 0);
    const body = JSON.parse(r.out.join('\n'));
    assert.equal(body.replayed, 12);
    assert.equal(body.skipped, 1);
    assert.deepEqual(body.flips, []);
  });

  it('usage errors exit 2', async () => {
    assert.deepEqual((await run(['policy', 'replay', '--since', '1h'], env)).err, ['writ policy replay: --candidate is required (ERR_CLI_USAGE)']);
    const r = await run(['policy', 'replay', '--candidate', CERT, '--since', 'yesterday'], env);
    assert.equal(r.code, 2);
    assert.deepEqual(r.err, ['writ policy replay: --since must be a duration like 90s, 30m, 24h or 7d (ERR_CLI_USAGE)']);
  });
});

describe('writ policy analyze (blast radius)', () => {
  const GOOD = '{"posture":{"score":90,"compliant":true,"observedAt":0}}';
  const HTTP = ['http:DELETE', 'http:GET', 'http:HEAD', 'http:OPTIONS', 'http:PATCH', 'http:POST', 'http:PUT'];

  it('locally: what the legacy batch job can reach, as a table and a summary line', async () => {
    const r = await run(['policy', 'analyze', '--dir', EXAMPLE, '--principal', 'workload:old-batch', '--context', GOOD]);
    assert.equal(r.code, 0, r.err.join('\n'));
    const lines = (r.out[0] ?? '').split('\n');
    assert.deepEqual(lines.map((l) => l.split(/\s{2,}/).join(' | ')), [
      'ACTION | RESOURCE | ALLOWED BY',
      'http:GET | Writ::Service::"payments-api" | payments-team-calls-payments-api',
      'http:HEAD | Writ::Service::"payments-api" | payments-team-calls-payments-api',
      'http:OPTIONS | Writ::Service::"payments-api" | payments-team-calls-payments-api',
      'token/exchange | Writ::Service::"payments-api" | payments-team-token-exchange',
    ]);
    assert.equal(r.out[1], `4 allowed (workload:old-batch can reach) of 33 decided, 29 denied; version ${await versionOf(EXAMPLE)}`);
  });

  it('locally, JSON: who can reach the stage payments API', async () => {
    const r = await run(['policy', 'analyze', '--dir', EXAMPLE, '--resource', 'Writ::Service:payments-api-stage', '--context', GOOD, '--json']);
    assert.equal(r.code, 0, r.err.join('\n'));
    const body = JSON.parse(r.out.join('\n'));
    assert.deepEqual(body.findings.map((f: { principal: { id: string }; action: string; determiningPolicies: string[] }) => `${f.principal.id} ${f.action} ${f.determiningPolicies.join(',')}`),
      HTTP.map((a) => `ledger-stage ${a} payments-team-calls-payments-api-stage`));
    assert.equal(body.truncated, false);
  });

  it('against the server, with --max truncating', async () => {
    const s = await startTestServer({ flags: { 'policy.dir': CERT } });
    try {
      const env = { WRIT_SERVER: s.url, WRIT_TOKEN: s.token };
      // The certification set's entities file knows alice and bob and the two records.
      const r = await run(['policy', 'analyze', '--principal', 'user:alice', '--json'], env);
      assert.equal(r.code, 0, r.err.join('\n'));
      const body = JSON.parse(r.out.join('\n'));
      assert.deepEqual(body.findings.map((f: { action: string; resource: { id: string } }) => `${f.action} ${f.resource.id}`), ['read record-1', 'read record-2', 'write record-1']);
      const cut = await run(['policy', 'analyze', '--resource', 'record:record-1', '--max', '2'], env);
      assert.equal(cut.code, 0);
      assert.match(cut.out.at(-1) ?? '', /^\d+ allowed \(can reach record:record-1\) of 2 decided, \d+ denied, TRUNCATED at the decision limit; version pv-/);
    } finally {
      await s.stop();
    }
  });

  it('usage errors exit 2 with one line', async () => {
    const cases: [string[], string][] = [
      [['policy', 'analyze', '--dir', EXAMPLE], 'writ policy analyze: give exactly one of --principal and --resource (ERR_CLI_USAGE)'],
      [['policy', 'analyze', '--dir', EXAMPLE, '--principal', 'a:b', '--resource', 'c:d'], 'writ policy analyze: give exactly one of --principal and --resource (ERR_CLI_USAGE)'],
      [['policy', 'analyze', '--dir', EXAMPLE, '--principal', 'nocolon'], 'writ policy analyze: --principal must look like TYPE:ID, not `nocolon` (ERR_CLI_USAGE)'],
      [['policy', 'analyze', '--dir', EXAMPLE, '--principal', 'spaceship:x'], `writ policy analyze: type \`spaceship\` is not declared by the schema of ${EXAMPLE} (ERR_CLI_USAGE)`],
      [['policy', 'analyze', '--dir', EXAMPLE, '--principal', 'workload:x', '--max', '0'], 'writ policy analyze: --max must be an integer from 1 to 100000 (ERR_CLI_USAGE)'],
    ];
    for (const [argv, line] of cases) {
      const r = await run(argv);
      assert.equal(r.code, 2, argv.join(' '));
      assert.deepEqual(r.err, [line]);
    }
  });
});
