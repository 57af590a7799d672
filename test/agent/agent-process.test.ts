/**
 * A real agent process (test/agent/fake-agent.ts: `writ agent` against a fake
 * node API backed by real signing) serving real workload processes
 * (`writ svid fetch|jwt`, `writ bundle show`, `writ agent status`), checked
 * with openssl and jose.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { createLocalJWKSet, jwtVerify } from 'jose';

const WRIT = fileURLToPath(new URL('../../bin/writ.js', import.meta.url));
const FAKE_AGENT = fileURLToPath(new URL('./fake-agent.ts', import.meta.url));
const TD = 'spiffe://example.org';
const WEB = `${TD}/web`;
const NOBODY = 65534;
const uid = process.getuid?.() ?? 0;
const isRoot = uid === 0;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function writ(args: string[], opts: { uid?: number; gid?: number; env?: NodeJS.ProcessEnv } = {}): Promise<Run> {
  return new Promise((resolve) => {
    const { env, ...ids } = opts;
    const cp = spawn(process.execPath, [WRIT, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: env ?? { PATH: process.env.PATH ?? '/usr/bin:/bin' }, ...ids });
    let stdout = '';
    let stderr = '';
    cp.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    cp.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    cp.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

async function waitFor<T>(what: string, probe: () => T | undefined | Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

interface AgentProcess {
  readonly child: ChildProcess;
  readonly socket: string;
  readonly dataDir: string;
  stderr(): string;
  send(msg: Record<string, unknown>): Promise<void>;
  exited: Promise<number | null>;
}

async function startAgent(dir: string, name: string, config: Record<string, unknown>): Promise<AgentProcess> {
  const socket = join(dir, `${name}.sock`);
  const dataDir = join(dir, `${name}-data`);
  const child = spawn(process.execPath, [FAKE_AGENT, JSON.stringify({ socket, dataDir, ...config })], { stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
  let err = '';
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  child.stdout?.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  await waitFor(`agent ${name} to serve`, () => (err.includes('writ agent: serving the Workload API') ? true : undefined));
  return {
    child,
    socket,
    dataDir,
    stderr: () => err,
    exited,
    send: (msg) =>
      new Promise((resolve) => {
        const onMsg = (m: unknown): void => {
          if ((m as { op?: string }).op === msg.op) {
            child.off('message', onMsg);
            resolve();
          }
        };
        child.on('message', onMsg);
        child.send(msg);
      }),
  };
}

function serialOf(pemFile: string): { serial: string; notAfter: number } {
  const cert = new X509Certificate(readFileSync(pemFile));
  return { serial: cert.serialNumber.toLowerCase(), notAfter: Date.parse(cert.validTo) };
}

describe('writ agent with a fake node API, and the workload CLI', { skip: process.platform !== 'linux' ? 'the agent attests callers on Linux only' : false }, () => {
  let dir: string;
  let agent: AgentProcess;
  const entries = [{ id: 'e-web', spiffeId: WEB, selectors: [`unix:uid:${uid}`] }];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'writ-agent-'));
    chmodSync(dir, 0o755); // the nobody caller must reach the socket
    agent = await startAgent(dir, 'main', { entries });
  });

  after(async () => {
    if (agent.child.exitCode === null) {
      agent.child.kill('SIGKILL');
      await agent.exited;
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it('writ svid fetch writes svid.pem, svid_key.pem (0600) and bundle.pem that openssl verifies', async () => {
    const out = join(dir, 'fetch');
    const r = await writ(['svid', 'fetch', '--socket', agent.socket, '--out', out]);
    assert.equal(r.stderr, '');
    assert.equal(r.code, 0);
    const { serial, notAfter } = serialOf(join(out, 'svid.pem'));
    assert.equal(r.stdout, `${WEB}: wrote svid.pem, svid_key.pem, bundle.pem to ${out} (serial ${serial}, expires ${new Date(notAfter).toISOString()})\n`);
    assert.equal(statSync(join(out, 'svid_key.pem')).mode & 0o777, 0o600);
    assert.equal(statSync(join(out, 'svid.pem')).mode & 0o777, 0o644);
    for (const purpose of ['sslclient', 'sslserver']) {
      const v = execFileSync('openssl', ['verify', '-purpose', purpose, '-CAfile', join(out, 'bundle.pem'), '-untrusted', join(out, 'svid.pem'), join(out, 'svid.pem')]).toString();
      assert.equal(v, `${join(out, 'svid.pem')}: OK\n`);
    }
    // The key is the certificate's key (openssl compares the public halves).
    const certPub = execFileSync('openssl', ['x509', '-in', join(out, 'svid.pem'), '-noout', '-pubkey']).toString();
    const keyPub = execFileSync('openssl', ['pkey', '-in', join(out, 'svid_key.pem'), '-pubout']).toString();
    assert.equal(keyPub, certPub);
    const san = execFileSync('openssl', ['x509', '-in', join(out, 'svid.pem'), '-noout', '-ext', 'subjectAltName']).toString();
    assert.match(san, new RegExp(`URI:${WEB}\\n`));
  });

  it('writ svid fetch --exec runs the command after writing', async () => {
    const out = join(dir, 'exec');
    const r = await writ(['svid', 'fetch', '--socket', `unix://${agent.socket}`, '--out', out, '--exec', `test -s ${out}/svid_key.pem && echo hook-ran`]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.split('\n')[1], 'hook-ran');
    const failing = await writ(['svid', 'fetch', '--socket', agent.socket, '--out', out, '--exec', 'exit 3']);
    assert.equal(failing.code, 1);
    assert.equal(failing.stderr, 'writ svid fetch: --exec command exited with 3 (ERR_CLI_EXEC)\n');
  });

  it('writ svid jwt prints a JWT-SVID that jose verifies against writ bundle show --format jwks', async () => {
    const r = await writ(['svid', 'jwt', '--audience', 'https://api.example.org', '--socket', agent.socket]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, '');
    const token = r.stdout.trimEnd();
    assert.equal(r.stdout, `${token}\n`);
    const jwks = await writ(['bundle', 'show', '--format', 'jwks', '--socket', agent.socket]);
    assert.equal(jwks.code, 0, jwks.stderr);
    const set = JSON.parse(jwks.stdout) as { keys: { use: string; alg: string; kid: string }[] };
    assert.ok(set.keys.length >= 1 && set.keys.every((k) => k.use === 'sig' && k.alg === 'ES256'));
    const { payload, protectedHeader } = await jwtVerify(token, createLocalJWKSet(set as Parameters<typeof createLocalJWKSet>[0]), { audience: 'https://api.example.org' });
    assert.equal(payload.sub, WEB);
    assert.deepEqual(Object.keys(protectedHeader).sort(), ['alg', 'kid', 'typ']);
    const json = await writ(['svid', 'jwt', '-a', 'x', '--json', '--socket', agent.socket]);
    assert.equal(JSON.parse(json.stdout).spiffeId, WEB);
    const usage = await writ(['svid', 'jwt', '--socket', agent.socket]);
    assert.equal(usage.code, 2);
    assert.equal(usage.stderr, 'writ svid jwt: --audience is required (ERR_CLI_USAGE)\n');
  });

  it('writ bundle show prints the bundle as PEM (as in bundle.pem) and as a SPIFFE bundle document', async () => {
    const out = join(dir, 'bundle');
    await writ(['svid', 'fetch', '--socket', agent.socket, '--out', out]);
    const pem = await writ(['bundle', 'show', '--socket', agent.socket]);
    assert.equal(pem.code, 0, pem.stderr);
    assert.equal(pem.stdout, readFileSync(join(out, 'bundle.pem'), 'utf8'));
    const doc = await writ(['bundle', 'show', '--format', 'spiffe'], { env: { SPIFFE_ENDPOINT_SOCKET: `unix://${agent.socket}` } });
    assert.equal(doc.code, 0, doc.stderr);
    const keys = (JSON.parse(doc.stdout) as { keys: { use: string }[] }).keys;
    assert.deepEqual([...new Set(keys.map((k) => k.use))].sort(), ['jwt-svid', 'x509-svid']);
    const bad = await writ(['bundle', 'show', '--format', 'der', '--socket', agent.socket]);
    assert.equal(bad.code, 2);
    assert.equal(bad.stderr, 'writ bundle show: --format must be pem, jwks or spiffe, not `der` (ERR_CLI_USAGE)\n');
  });

  it('answers PermissionDenied to a process whose uid matches no entry', { skip: isRoot ? false : 'needs root to run a workload as nobody' }, async () => {
    const r = await writ(['svid', 'fetch', '--socket', agent.socket, '--out', join(dir, 'nobody')], { uid: NOBODY, gid: NOBODY });
    assert.equal(r.stdout, '');
    assert.equal(r.stderr, 'writ svid fetch: no identity issued (PERMISSION_DENIED)\n');
    assert.equal(r.code, 1);
    assert.equal(existsSync(join(dir, 'nobody')), false);
    const j = await writ(['svid', 'jwt', '-a', 'x', '--socket', agent.socket], { uid: NOBODY, gid: NOBODY });
    assert.equal(j.stderr, 'writ svid jwt: no identity issued (PERMISSION_DENIED)\n');
    assert.equal(j.code, 1);
  });

  it('reports an unreachable socket in one line', async () => {
    const r = await writ(['svid', 'fetch', '--socket', join(dir, 'none.sock'), '--out', join(dir, 'none')]);
    assert.equal(r.code, 1);
    assert.equal(r.stderr, `writ svid fetch: cannot reach the Workload API at unix://${join(dir, 'none.sock')}; is \`writ agent\` running? (UNAVAILABLE)\n`);
  });

  it('keeps serving the cached SVID through a server outage, says so in writ agent status, and recovers', async () => {
    const before = join(dir, 'pre-outage');
    await writ(['svid', 'fetch', '--socket', agent.socket, '--out', before]);
    const cached = serialOf(join(before, 'svid.pem')).serial;
    const ready = await writ(['agent', 'status', '--data-dir', agent.dataDir, '--json']);
    assert.equal(ready.code, 0, ready.stderr);
    assert.equal(JSON.parse(ready.stdout).state, 'ready');

    await agent.send({ op: 'outage', on: true });
    const degraded = await waitFor('degraded status', async () => {
      const s = await writ(['agent', 'status', '--data-dir', agent.dataDir, '--json']);
      const st = JSON.parse(s.stdout) as { state: string; message: string; server: { reachable: boolean; outageSince: string; lastError: { code: string } } };
      return st.state === 'degraded' ? { s, st } : undefined;
    });
    assert.equal(degraded.s.code, 1);
    assert.equal(degraded.st.server.reachable, false);
    assert.equal(degraded.st.server.lastError.code, 'ERR_IDENTITY_AGENT_SERVER_UNAVAILABLE');
    assert.equal(degraded.st.message, `server unreachable since ${degraded.st.server.outageSince}; serving 1 cached X.509-SVID(s) until they expire`);
    const human = await writ(['agent', 'status', '--data-dir', agent.dataDir]);
    assert.equal(human.code, 1);
    assert.match(human.stdout, /^state +degraded$/m);
    assert.match(human.stdout, new RegExp(`^server +unreachable since ${degraded.st.server.outageSince}$`, 'm'));

    const during = join(dir, 'during-outage');
    const r = await writ(['svid', 'fetch', '--socket', agent.socket, '--out', during]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(serialOf(join(during, 'svid.pem')).serial, cached);
    // A JWT-SVID for a new audience needs the server: UNAVAILABLE, in one line.
    const jwt = await writ(['svid', 'jwt', '-a', 'only-during-outage', '--socket', agent.socket]);
    assert.equal(jwt.code, 1);
    assert.equal(jwt.stderr, 'writ svid jwt: the Writ server is unreachable and no cached JWT-SVID is valid (UNAVAILABLE)\n');

    await agent.send({ op: 'outage', on: false });
    await waitFor('ready status', async () => {
      const s = await writ(['agent', 'status', '--data-dir', agent.dataDir, '--json']);
      return s.code === 0 && JSON.parse(s.stdout).state === 'ready' ? true : undefined;
    });
  });

  it('stops serving an entry removed on the server at the next sync', async () => {
    const other = await startAgent(dir, 'removal', { entries });
    try {
      const ok = await writ(['svid', 'fetch', '--socket', other.socket, '--out', join(dir, 'removal-1')]);
      assert.equal(ok.code, 0, ok.stderr);
      await other.send({ op: 'removeEntry', id: 'e-web' });
      const denied = await waitFor('the entry to stop being served', async () => {
        const r = await writ(['svid', 'fetch', '--socket', other.socket, '--out', join(dir, 'removal-2')]);
        return r.code === 1 ? r : undefined;
      });
      assert.equal(denied.stderr, 'writ svid fetch: no identity issued (PERMISSION_DENIED)\n');
    } finally {
      other.child.kill('SIGTERM');
      await other.exited;
    }
  });

  it('sends a rotated SVID on the open stream before the old one expires; --watch rewrites the files and runs --exec each time', async () => {
    const rot = await startAgent(dir, 'rotation', { entries, x509TtlMs: 4_000 });
    const out = join(dir, 'watch');
    const watcher = spawn(process.execPath, [WRIT, 'svid', 'fetch', '--watch', '--socket', rot.socket, '--out', out, '--exec', `cat ${out}/svid.pem | openssl x509 -noout -serial >> ${out}/hook.log`], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    const arrivals: number[] = [];
    watcher.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      arrivals.push(Date.now());
    });
    watcher.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const closed = new Promise<number | null>((r) => watcher.on('close', (code) => r(code)));
    try {
      const lines = await waitFor('two SVIDs on the stream', () => {
        const l = stdout.split('\n').filter((x) => x !== '');
        return l.length >= 2 ? l : undefined;
      }, 15_000);
      const parse = (l: string): { serial: string; expires: number } => {
        const m = /\(serial ([0-9a-f]+), expires ([^)]+)\)$/.exec(l);
        assert.ok(m !== null, l);
        return { serial: m[1] ?? '', expires: Date.parse(m[2] ?? '') };
      };
      const [a, b] = [parse(lines[0] ?? ''), parse(lines[1] ?? '')];
      assert.notEqual(b.serial, a.serial);
      // The rotated SVID arrived while the first was still valid.
      assert.ok((arrivals[1] ?? Infinity) < a.expires, `rotation at ${arrivals[1]} after expiry ${a.expires}`);
      assert.ok(b.expires > a.expires);
      await waitFor('hook to run twice', () => (existsSync(join(out, 'hook.log')) && readFileSync(join(out, 'hook.log'), 'utf8').split('\n').length > 2 ? true : undefined));
      const hook = readFileSync(join(out, 'hook.log'), 'utf8').split('\n');
      assert.equal(hook[0]?.toLowerCase(), `serial=${a.serial}`);
      assert.equal(hook[1]?.toLowerCase(), `serial=${b.serial}`);
    } finally {
      watcher.kill('SIGTERM');
      assert.equal(await closed, 0, stderr);
      rot.child.kill('SIGTERM');
      await rot.exited;
    }
  });

  it('closes and removes its socket on SIGTERM and exits 0', async () => {
    const a = await startAgent(dir, 'sigterm', { entries });
    assert.ok(existsSync(a.socket));
    a.child.kill('SIGTERM');
    assert.equal(await a.exited, 0);
    assert.equal(existsSync(a.socket), false);
    assert.equal(existsSync(join(a.dataDir, 'agent-admin.sock')), false);
    assert.match(a.stderr(), /writ agent: SIGTERM received, closing the Workload API socket\n/);
    // The node credential survives for the next start (mode 0600).
    assert.equal(statSync(join(a.dataDir, 'node-credential.json')).mode & 0o777, 0o600);
  });
});
