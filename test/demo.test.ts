/**
 * `npm run demo` end to end: examples/demo/run.ts as a child process, with
 * its own `writ up`, agent, proxy, MCP gateway and services. Asserts the exit
 * code and the key lines of the story, and that an interrupted run leaves no
 * process and no folder behind. No timing bound beyond "was cut": the
 * milliseconds are printed, not judged (they belong in the benchmarks).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const RUN = fileURLToPath(new URL('../examples/demo/run.ts', import.meta.url));
const WRIT = fileURLToPath(new URL('../bin/writ.js', import.meta.url));
const POLICIES = fileURLToPath(new URL('../examples/demo/policies', import.meta.url));
const linux = process.platform === 'linux';

interface Demo {
  code: number | null;
  signal: NodeJS.Signals | null;
  out: string;
}

/** Run the demo; `interruptWhen` sends SIGINT once the output matches it. */
function demo(args: string[], interruptWhen?: RegExp): Promise<Demo> {
  return new Promise((resolve) => {
    const cp = spawn(process.execPath, [RUN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } });
    let out = '';
    let sent = false;
    const onData = (d: Buffer): void => {
      out += d.toString();
      if (interruptWhen !== undefined && !sent && interruptWhen.test(out)) {
        sent = true;
        cp.kill('SIGINT');
      }
    };
    cp.stdout.on('data', onData);
    cp.stderr.on('data', onData);
    cp.on('close', (code, signal) => resolve({ code, signal, out }));
  });
}

/** Processes whose command line names `dir` (every Writ child of the demo does). */
function processesUsing(dir: string): string[] {
  const found: string[] = [];
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ');
      if (cmd.includes(dir)) found.push(`${pid}: ${cmd.slice(0, 200)}`);
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.once('error', fail);
    srv.listen(0, '127.0.0.1', () => {
      const a = srv.address();
      srv.close(() => ok(typeof a === 'object' && a !== null ? a.port : 0));
    });
  });
}

function workDir(out: string): string {
  const m = /working folder (\S+)\)/.exec(out);
  assert.ok(m?.[1], out);
  return m[1];
}

describe('npm run demo', { skip: linux ? false : 'the agent attests callers on Linux only' }, () => {
  it('runs the whole story and exits 0', { timeout: 400_000 }, async () => {
    // A generous deadline: on a loaded 2-CPU machine each CLI start takes seconds.
    const r = await demo(['--deadline-s', '360']);
    assert.equal(r.code, 0, r.out);
    const lines = r.out.split('\n');
    const line = (n: number): string => lines.find((l) => l.startsWith(`[${String(n).padStart(2)}/14] ok `)) ?? assert.fail(`no ok line for step ${n}:\n${r.out}`);
    assert.match(line(1), /writ up --policies .*examples\/demo\/policies: http:\/\/127\.0\.0\.1:\d+ \(trust domain writ\.local, policy pv-[0-9a-f]+, 7 policies\)/);
    assert.match(line(3), /spiffe:\/\/writ\.local\/demo\/triage\/[0-9a-f]{8} for unix:uid:\d+, owner support/);
    assert.match(line(4), /node spiffe:\/\/writ\.local\/writ\/node\/[0-9a-f]+ attested \(join token [0-9a-f]+\), Workload API on unix:\/\//);
    assert.match(line(5), /svid\.pem, svid_key\.pem, bundle\.pem for spiffe:\/\/writ\.local\/demo\/triage\//);
    assert.match(line(7), /task task_[0-9a-f]+ .*access tokens for demo-proxy and the MCP gateway bound to it/);
    assert.match(line(9), /GET \/orders\/1001 through writ proxy: 200 allowed \(order 1001 shipped\), x-writ-decision-id [0-9a-f]{32}$/);
    assert.match(line(10), /403 denied, reason code ERR_ENFORCE_DENIED \(policy: prod-write-outside-task-scope\), x-writ-decision-id [0-9a-f]{32}/);
    assert.match(line(11), /tools\/list shows \[lookup_order\]; lookup_order → "order 1001: shipped/);
    assert.match(line(12), /JSON-RPC error -32001 ERR_ENFORCE_DENIED/);
    assert.match(line(13), /re-evaluation revoked \d+ \(.*token.*\); caller cut at writ proxy \d+ ms and at writ mcp-gateway \d+ ms after the server accepted the signal \(proxy: (401 ERR_ENFORCE_CREDENTIAL_REVOKED|403 ERR_ENFORCE_DENIED); gateway: (-32001 ERR_ENFORCE_[A-Z_]+|HTTP 401 access token was revoked|HTTP 404 session closed)\)$/);
    assert.match(line(14), /writ audit verify: audit chain ok: \d+ events, head \d+ [0-9a-f]{64}/);
    assert.match(r.out, /demo ok: all 14 steps had the expected outcome \(\d+ s\)\n$/);
    assert.ok(!/eyJ[A-Za-z0-9_-]{20,}\./.test(r.out), 'no token in the demo output');
    const dir = workDir(r.out);
    assert.equal(existsSync(dir), false, 'the working folder is removed');
    assert.deepEqual(processesUsing(dir), []);
  });

  it('runs against a running Writ with --server and --token-file, and leaves that server running', { timeout: 400_000 }, async () => {
    const data = mkdtempSync(join(tmpdir(), 'writ-demo-server-'));
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const up = spawn(process.execPath, [WRIT, 'up', '--listen', `127.0.0.1:${port}`, '--data-dir', data, '--policies', POLICIES, '--log-level', 'warn'], { stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } });
    let log = '';
    up.stdout.on('data', (d: Buffer) => (log += d.toString()));
    up.stderr.on('data', (d: Buffer) => (log += d.toString()));
    const exited = new Promise((r) => up.once('exit', r));
    try {
      const end = Date.now() + 120_000;
      while (!log.includes('listening on')) {
        assert.equal(up.exitCode, null, log);
        assert.ok(Date.now() < end, `writ up did not start: ${log}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      const r = await demo(['--server', url, '--token-file', join(data, 'admin.token'), '--deadline-s', '360']);
      assert.equal(r.code, 0, r.out);
      assert.match(r.out, new RegExp(`\\[ 1/14\\] ok  use the running Writ at ${url}: ${url} \\(trust domain writ\\.local, policy pv-[0-9a-f]+, 7 policies\\)\n`));
      assert.match(r.out, /\[13\/14\] ok .*caller cut at writ proxy \d+ ms and at writ mcp-gateway \d+ ms/);
      assert.match(r.out, /demo ok: all 14 steps had the expected outcome/);
      // The demo stops what it started, never the server it was pointed at.
      assert.equal(up.exitCode, null);
      assert.equal((await fetch(`${url}/healthz`)).status, 200);
    } finally {
      up.kill('SIGTERM');
      await exited;
      rmSync(data, { recursive: true, force: true });
    }
  });

  it('stops every child process and removes its folder on SIGINT', { timeout: 400_000 }, async () => {
    // Interrupted once the agent serves: the server and the agent are running then.
    const r = await demo(['--deadline-s', '360'], /\[ 4\/14\] ok /);
    assert.equal(r.code, 130, r.out);
    assert.match(r.out, /demo interrupted \(SIGINT\) during step \d+/);
    const dir = workDir(r.out);
    assert.equal(existsSync(dir), false, 'the working folder is removed');
    assert.deepEqual(processesUsing(dir), []);
  });

  it('gives up at its deadline, names the step it was in and leaves nothing behind', { timeout: 120_000 }, async () => {
    // One second is never enough to start `writ up`: the deadline passes during step 1.
    const r = await demo(['--deadline-s', '1']);
    assert.equal(r.code, 1, r.out);
    assert.match(r.out, /\[ 1\/14\] FAIL  writ up --policies .*: the whole run passed its deadline of 1 s\n/);
    assert.match(r.out, /demo failed at step 1 \(writ up --policies [^)]*\)\n$/);
    assert.ok(!/\] ok /.test(r.out), r.out);
    const dir = workDir(r.out);
    assert.equal(existsSync(dir), false, 'the working folder is removed');
    assert.deepEqual(processesUsing(dir), []);
  });

  it('exits 1 naming the failing step when a step goes wrong', { timeout: 120_000 }, async () => {
    const r = await demo(['--server', 'http://127.0.0.1:1', '--token-file', '/nonexistent/admin.token']);
    assert.equal(r.code, 1, r.out);
    assert.match(r.out, /\[ 1\/14\] FAIL  use the running Writ at http:\/\/127\.0\.0\.1:1: `writ status` exited 1: writ status: cannot read the admin token file \/nonexistent\/admin\.token \(ERR_CLI_TOKEN_FILE\)\n/);
    assert.match(r.out, /demo failed at step 1 \(use the running Writ at http:\/\/127\.0\.0\.1:1\)\n$/);
    assert.equal(existsSync(workDir(r.out)), false);
  });

  it('ships a policy folder whose cases pass (writ policy test)', { timeout: 120_000 }, async () => {
    const r = await new Promise<{ code: number | null; out: string }>((resolve) => {
      const cp = spawn(process.execPath, [WRIT, 'policy', 'test', POLICIES], { stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } });
      let out = '';
      cp.stdout.on('data', (d: Buffer) => (out += d.toString()));
      cp.stderr.on('data', (d: Buffer) => (out += d.toString()));
      cp.on('close', (code) => resolve({ code, out }));
    });
    assert.equal(r.code, 0, r.out);
    for (const name of ['the support agent reads an order through the proxy', 'a prod write is outside the support agent\'s task', 'the agent calls a tool its task does not declare', 'a failing posture takes the read away']) assert.ok(r.out.includes(`ok    ${name}\n`), name);
    assert.match(r.out, /^7 passed, 0 failed \(version pv-[0-9a-f]+\)$/m);
  });

  it('--help lists its options; bad options are a usage error', async () => {
    const help = await demo(['--help']);
    assert.equal(help.code, 0);
    for (const o of ['--server URL', '--token-file FILE', '--deadline-s N', '--keep']) assert.ok(help.out.includes(o), o);
    const r = await demo(['--server', 'http://127.0.0.1:1']);
    assert.equal(r.code, 2);
    assert.match(r.out, /^demo: --server and --token-file go together\n/);
    const d = await demo(['--deadline-s', '0']);
    assert.equal(d.code, 2);
    assert.match(d.out, /^demo: --deadline-s must be a whole number from 1 to 3600\n/);
  });
});
