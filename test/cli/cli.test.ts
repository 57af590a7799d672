/**
 * The CLI against a real server: output, --json, exit codes, one-line errors.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { join, resolve } from 'node:path';
import { statSync, readFileSync } from 'node:fs';
import { main } from '../../src/cli/main.ts';
import { startTestServer } from '../support/server.ts';
import type { TestServer } from '../support/server.ts';
import { loadOcsfSchema } from '../support/ocsf-schema.ts';

const BIN = resolve(import.meta.dirname, '../../bin/writ.js');

async function run(args: string[], env: Record<string, string> = {}): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(args, { out: (s) => out.push(s), err: (s) => err.push(s), env });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

describe('writ CLI', () => {
  let s: TestServer;
  let base: string[];
  before(async () => {
    s = await startTestServer();
    base = ['--server', s.url, '--token-file', join(s.dataDir, 'admin.token')];
  });
  after(async () => {
    await s.stop();
  });

  it('--help at the top and on every command; --version', async () => {
    const top = await run(['--help']);
    assert.equal(top.code, 0);
    for (const c of ['up', 'status', 'audit verify', 'audit tail', 'audit export', 'principal create', 'config']) assert.match(top.out, new RegExp(`^  ${c} `, 'm'));
    // Every command the top-level help lists, so a new command without its own help fails here.
    const listed = [...top.out.matchAll(/^ {2}([a-z][a-z-]*(?: [a-z][a-z-]*)*) {2,}\S/gm)].map((m) => (m[1] as string).split(' '));
    assert.ok(listed.length >= 60, `only ${listed.length} commands listed`);
    for (const c of listed) {
      const h = await run([...c, '--help']);
      assert.equal(h.code, 0, c.join(' '));
      assert.match(h.out, /^usage: writ /m, c.join(' '));
      assert.match(h.out, /-h, --help +show this help/, c.join(' '));
    }
    const v = await run(['--version']);
    assert.match(v.out, /^\d+\.\d+\.\d+$/);
  });

  it('usage errors exit 2 with one line on stderr', async () => {
    assert.deepEqual(await run([]), { code: 2, out: (await run(['--help'])).out, err: '' });
    assert.deepEqual(await run(['nope']), { code: 2, out: '', err: 'writ: unknown command `nope`; see `writ --help`' });
    assert.deepEqual(await run(['audit']), { code: 2, out: '', err: 'writ audit: needs a subcommand: verify, tail, export' });
    const bad = await run(['status', '--bogus']);
    assert.equal(bad.code, 2);
    assert.match(bad.err, /^writ status: Unknown option '--bogus'.*; see `writ status --help`$/);
    assert.deepEqual(await run(['principal', 'create', ...base]), { code: 2, out: '', err: 'writ principal create: --name and --role are required (ERR_CLI_USAGE)' });
    assert.deepEqual(await run(['audit', 'export', '--format', 'xml', ...base]), { code: 2, out: '', err: 'writ audit export: --format must be ocsf or jsonl, not `xml` (ERR_CLI_USAGE)' });
  });

  it('operational errors exit 1 with the server code', async () => {
    const unreachable = await run(['status', '--server', 'http://127.0.0.1:59999']);
    assert.equal(unreachable.code, 1);
    assert.equal(unreachable.err, 'writ status: cannot reach writ at http://127.0.0.1:59999 (ECONNREFUSED); is `writ up` running? (ERR_CLI_UNREACHABLE)');
    const noToken = await run(['status', '--server', s.url], {});
    assert.equal(noToken.code, 1);
    assert.equal(noToken.err, 'writ status: admin credential is missing, malformed, unknown or revoked (no admin token: pass --token-file, or set WRIT_TOKEN_FILE or WRIT_TOKEN) (ERR_GOV_UNAUTHENTICATED)');
    const dup = await run(['principal', 'create', '--name', 'bootstrap', '--role', 'admin', ...base]);
    assert.equal(dup.code, 1);
    assert.equal(dup.err, 'writ principal create: an admin principal named `bootstrap` already exists (ERR_GOV_PRINCIPAL_EXISTS)');
  });

  it('status, principal create/list/rotate/revoke, with --json and WRIT_TOKEN', async () => {
    const st = await run(['status', '--json', ...base]);
    assert.equal(st.code, 0);
    assert.equal(JSON.parse(st.out).store.kind, 'sqlite');
    const human = await run(['status', ...base]);
    assert.match(human.out, /^store +sqlite sqlite:.*writ\.db$/m);

    const file = join(s.dataDir, 'ops.token');
    const c = await run(['principal', 'create', '--name', 'ops', '--role', 'operator', '--output', file, ...base]);
    assert.equal(c.code, 0, c.err);
    assert.equal(c.out, '', 'the credential is not printed when written to a file');
    assert.equal(statSync(file).mode & 0o777, 0o600);
    const token = readFileSync(file, 'utf8').trim();
    const who = await run(['status', '--server', s.url], { WRIT_TOKEN: token });
    assert.equal(who.code, 0, who.err);

    const list = await run(['principal', 'list', '--json', ...base]);
    const ops = (JSON.parse(list.out) as { id: string; name: string; role: string }[]).find((p) => p.name === 'ops');
    assert.equal(ops?.role, 'operator');
    const table = await run(['principal', 'list', ...base]);
    assert.match(table.out, /^ID +NAME +ROLE +CREATED +STATE$/m);
    assert.match(table.out, new RegExp(`^${ops?.id} +ops +operator +\\S+ +active$`, 'm'));

    const rot = await run(['principal', 'rotate', ops?.id ?? '', ...base]);
    assert.equal(rot.code, 0);
    assert.match(rot.out, /^writ\.[0-9a-f]{16}\.[A-Za-z0-9_-]{43}$/);
    assert.equal((await run(['status', '--server', s.url], { WRIT_TOKEN: token })).code, 1, 'old credential no longer works');
    const rev = await run(['principal', 'revoke', ops?.id ?? '', ...base]);
    assert.deepEqual(rev, { code: 0, out: '', err: `revoked ${ops?.id}` });
  });

  it('audit tail, export (jsonl and OCSF valid against the schema) and verify', async () => {
    const tail = await run(['audit', 'tail', '-n', '3', ...base]);
    assert.equal(tail.code, 0);
    const lines = tail.out.split('\n');
    assert.equal(lines.length, 3);
    assert.match(lines[0] ?? '', /^ +\d+  \d{4}-\d\d-\d\dT\S+Z  [a-z.]+ +(success|denied|failure) +\S+:\S+  [0-9a-f]{32}$/);
    const tailJson = await run(['audit', 'tail', '-n', '2', '--json', ...base]);
    assert.equal(tailJson.out.split('\n').map((l) => JSON.parse(l)).length, 2);

    const jsonl = await run(['audit', 'export', ...base]);
    const records = jsonl.out.split('\n').map((l) => JSON.parse(l) as { seq: number; hash: string });
    assert.deepEqual(records.map((r) => r.seq), records.map((_, i) => i + 1));

    const ocsf = await run(['audit', 'export', '--format', 'ocsf', ...base]);
    const schema = loadOcsfSchema();
    const events = ocsf.out.split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.ok(events.length >= records.length);
    for (const e of events) assert.deepEqual(schema.validate(e), [], JSON.stringify(e));

    const v = await run(['audit', 'verify', ...base]);
    assert.equal(v.code, 0);
    assert.match(v.out, /^audit chain ok: \d+ events, head \d+ [0-9a-f]{64}$/);
    const vj = await run(['audit', 'verify', '--json', ...base]);
    assert.equal(JSON.parse(vj.out).ok, true);
  });

  it('audit tail --follow prints events as they are written', async () => {
    const child = spawn(process.execPath, [BIN, 'audit', 'tail', '-n', '0', '--follow', '--interval', '100', ...base], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString();
    });
    try {
      // Make calls until one shows up in the followed output (the child needs a moment to start).
      const seen: string[] = [];
      for (let i = 0; i < 60; i++) {
        const marker = await s.call('GET', '/admin/v1/whoami');
        seen.push(marker.headers.get('x-correlation-id') ?? '');
        await new Promise((r) => setTimeout(r, 250));
        if (seen.some((c) => out.includes(c))) break;
      }
      const shown = seen.filter((c) => out.includes(c));
      assert.ok(shown.length > 0, `followed output shows none of the calls: ${out}`);
      assert.equal(out.trim().split('\n').length, out.trim() === '' ? 0 : out.trim().split('\n').length);
      assert.ok(!/audit\/events/.test(out), 'the tail does not show its own polling');
      const lines = out.trim().split('\n');
      assert.ok(lines.every((l) => seen.some((c) => l.endsWith(c))), `only the test's calls are shown: ${out}`);
    } finally {
      child.kill('SIGINT');
    }
  });

  it('the bin runs on the pinned Node and refuses an older one with a clear message', () => {
    const r = spawnSync(process.execPath, [BIN, '--version'], { encoding: 'utf8' });
    assert.equal(r.status, 0);
    assert.match(r.stdout, /^\d+\.\d+\.\d+\n$/);
    // The machine's own node, outside node_modules/.bin (Node 20 here).
    const sys = spawnSync('/usr/bin/env', ['PATH=/usr/local/bin:/usr/bin:/bin', 'node', '-p', 'process.versions.node'], { encoding: 'utf8' });
    if (sys.status !== 0) return;
    const [major = 0, minor = 0] = sys.stdout.trim().split('.').map(Number);
    const old = major < 22 || (major === 22 && minor < 13);
    const viaSys = spawnSync('/usr/bin/env', ['PATH=/usr/local/bin:/usr/bin:/bin', 'node', BIN, '--version'], { encoding: 'utf8' });
    if (old) {
      assert.equal(viaSys.status, 1);
      assert.equal(viaSys.stderr, `writ: needs Node >= 22.13 (this is v${sys.stdout.trim()}); run it through \`npx writ\` or an npm script, which use the pinned Node 24\n`);
    } else {
      assert.equal(viaSys.status, 0);
    }
  });
});
