import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { WritError } from '../../kernel/index.ts';
import { PeerAttestor, parsePeerInode } from './peer-credentials.ts';

const NOBODY = 65534;
const isRoot = process.getuid?.() === 0;
const skipLinux = process.platform !== 'linux' ? 'peer attestation is Linux-only' : false;

let dir: string;
let sockPath: string;
let server: net.Server;
const accepted: net.Socket[] = [];
let onAccept: ((s: net.Socket) => void) | undefined;
// One attestor for the suite: it caches executable hashes, as the agent's does.
const attestor = new PeerAttestor();

function sha256(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

/** Start a child running `code` (an ES module) and wait until it prints `ready`. */
function child(code: string, opts: { uid?: number; gid?: number } = {}): Promise<ChildProcess> {
  const file = join(dir, `child-${Math.random().toString(36).slice(2)}.mjs`);
  writeFileSync(file, code);
  chmodSync(file, 0o644);
  const cp = spawn(process.execPath, [file, sockPath], { stdio: ['ignore', 'pipe', 'inherit'], ...opts });
  return new Promise((resolve, reject) => {
    let out = '';
    cp.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('ready')) resolve(cp);
    });
    cp.on('exit', (c) => reject(new Error(`child exited with ${c} before ready`)));
  });
}

/** Wait for the next accepted connection and return our socket's inode. */
function nextAccept(): Promise<number> {
  return new Promise((resolve) => {
    onAccept = (s) => resolve(attestor.serverSocketInode(s));
  });
}

const CONNECT_AND_WAIT = `
import net from 'node:net';
const s = net.connect(process.argv[2], () => { process.stdout.write('ready\\n'); });
setInterval(() => {}, 1000);
`;

describe('PeerAttestor (kernel-verified Unix peer credentials)', { skip: skipLinux }, () => {
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'writ-peer-'));
    chmodSync(dir, 0o755);
    sockPath = join(dir, 'agent.sock');
    server = net.createServer((s) => {
      accepted.push(s);
      s.on('error', () => {});
      onAccept?.(s);
    });
    await new Promise<void>((r) => server.listen(sockPath, r));
    chmodSync(sockPath, 0o777);
  });
  after(() => {
    for (const s of accepted) s.destroy();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('attests a caller in this very process: pid, uid, gid, executable and its hash', async () => {
    const got = nextAccept();
    const client = net.connect(sockPath);
    const serverInode = await got;
    const peerInode = await attestor.peerSocketInode(serverInode, sockPath);
    const creds = await attestor.attestPeer(peerInode);
    client.destroy();
    assert.equal(creds.pid, process.pid);
    assert.deepEqual(creds.pids, [process.pid]);
    assert.equal(creds.uid, process.geteuid?.());
    assert.equal(creds.gid, process.getegid?.());
    assert.equal(creds.exePath, realpathSync(process.execPath));
    assert.equal(creds.exeSha256, sha256(process.execPath));
    assert.equal(creds.peerSocketInode, peerInode);
    assert.notEqual(peerInode, serverInode);
    assert.match(creds.startTime, /^\d+$/);
  });

  it('attests a caller running as another uid (nobody) in another process', { skip: isRoot ? false : 'needs root to spawn as nobody' }, async () => {
    const got = nextAccept();
    const cp = await child(CONNECT_AND_WAIT, { uid: NOBODY, gid: NOBODY });
    try {
      const peerInode = await attestor.peerSocketInode(await got, sockPath);
      const creds = await attestor.attestPeer(peerInode);
      assert.equal(creds.pid, cp.pid);
      assert.equal(creds.uid, NOBODY);
      assert.equal(creds.gid, NOBODY);
      assert.equal(creds.exePath, realpathSync(process.execPath));
      assert.equal(creds.exeSha256, sha256(process.execPath));
    } finally {
      cp.kill();
    }
  });

  it('refuses a socket created as root and then used after dropping to nobody (owner mismatch)', { skip: isRoot ? false : 'needs root' }, async () => {
    const got = nextAccept();
    const cp = await child(`
import net from 'node:net';
const s = net.connect(process.argv[2], () => { process.setgid(${NOBODY}); process.setuid(${NOBODY}); process.stdout.write('ready\\n'); });
setInterval(() => {}, 1000);
`);
    try {
      const peerInode = await attestor.peerSocketInode(await got, sockPath);
      await assert.rejects(attestor.attestPeer(peerInode), (e: unknown) => {
        assert.ok(e instanceof WritError);
        assert.equal(e.code, 'ERR_IDENTITY_PEER_OWNER_MISMATCH');
        assert.equal(e.message, `peer socket \`${peerInode}\` is owned by uid \`0\` gid \`0\` but process \`${cp.pid}\` runs as uid \`${NOBODY}\` gid \`${NOBODY}\``);
        return true;
      });
    } finally {
      cp.kill();
    }
  });

  it('refuses when two processes with different executables hold the peer socket', async () => {
    const got = nextAccept();
    // The caller hands its connected socket to `sleep` as stdin, then both hold it.
    const cp = await child(`
import net from 'node:net';
import { spawn } from 'node:child_process';
const s = net.connect(process.argv[2], () => {
  const sl = spawn('sleep', ['30'], { stdio: [s, 'ignore', 'ignore'] });
  process.on('SIGTERM', () => { sl.kill(); process.exit(0); });
  setTimeout(() => process.stdout.write('ready ' + sl.pid + '\\n'), 100);
});
setInterval(() => {}, 1000);
`);
    try {
      const peerInode = await attestor.peerSocketInode(await got, sockPath);
      await assert.rejects(attestor.attestPeer(peerInode), (e: unknown) => {
        assert.ok(e instanceof WritError);
        assert.equal(e.code, 'ERR_IDENTITY_PEER_AMBIGUOUS');
        assert.match(e.message, new RegExp(`^processes \`\\d+\` and \`\\d+\` share peer socket \`${peerInode}\` but differ in uid, gid or executable$`));
        return true;
      });
    } finally {
      cp.kill();
    }
  });

  it('refuses a caller that has gone away', async () => {
    const got = nextAccept();
    const cp = await child(CONNECT_AND_WAIT);
    const peerInode = await attestor.peerSocketInode(await got, sockPath);
    await new Promise<void>((r) => {
      cp.on('exit', () => r());
      cp.kill('SIGKILL');
    });
    await assert.rejects(attestor.attestPeer(peerInode), (e: unknown) => {
      assert.ok(e instanceof WritError);
      assert.equal(e.code, 'ERR_IDENTITY_PEER_NOT_FOUND');
      assert.equal(e.message, `no visible process holds peer socket \`${peerInode}\``);
      return true;
    });
  });

  it('refuses a descriptor that is not a connection on the agent socket', async () => {
    await assert.rejects(attestor.peerSocketInode(1, sockPath), (e: unknown) => {
      assert.ok(e instanceof WritError);
      assert.equal(e.code, 'ERR_IDENTITY_PEER_NOT_FOUND');
      assert.equal(e.message, 'socket `1` is not a connection accepted on the agent socket');
      return true;
    });
  });

  it('rejects programmer misuse with TypeError', async () => {
    await assert.rejects(attestor.peerSocketInode(5, 'relative/path'), TypeError);
    await assert.rejects(attestor.peerSocketInode(5, '/tmp/a b'), TypeError);
    await assert.rejects(attestor.attestPeer(0), TypeError);
    assert.throws(() => new PeerAttestor({ procRoot: 'proc' }), TypeError);
  });
});

describe('parsePeerInode (sock_diag rows from ss)', () => {
  const path = '/run/writ/agent.sock';
  const listen = `u_str LISTEN 0      511    ${path} 100 * 0    `;

  it('returns the peer inode of our row', () => {
    const out = `${listen}\nu_str ESTAB  0      0      ${path} 102 * 101\nu_str ESTAB 0 0 ${path} 104 * 103\n`;
    assert.equal(parsePeerInode(out, 102, path), 101);
    assert.equal(parsePeerInode(out, 104, path), 103);
  });

  const refusals: Array<[string, string, string, string]> = [
    ['no row', `${listen}\n`, 'ERR_IDENTITY_PEER_NOT_FOUND', 'socket `102` is not a connection accepted on the agent socket'],
    ['unconnected', `u_str ESTAB 0 0 ${path} 102 * 0\n`, 'ERR_IDENTITY_PEER_NOT_FOUND', 'socket `102` has no connected peer'],
    ['two rows', `u_str ESTAB 0 0 ${path} 102 * 101\nu_str ESTAB 0 0 ${path} 102 * 99\n`, 'ERR_IDENTITY_PEER_LOOKUP_FAILED', 'several sock_diag rows name socket `102`'],
    ['peer address not *', `u_str ESTAB 0 0 ${path} 102 /x 101\n`, 'ERR_IDENTITY_PEER_LOOKUP_FAILED', 'unexpected sock_diag row for socket `102`'],
    ['another local path', `u_str ESTAB 0 0 /other 102 * 101\n`, 'ERR_IDENTITY_PEER_LOOKUP_FAILED', 'unexpected sock_diag row for socket `102`'],
    ['extra column', `u_str ESTAB 0 0 ${path} 102 * 101 x\n`, 'ERR_IDENTITY_PEER_LOOKUP_FAILED', 'unexpected sock_diag row for socket `102`'],
    ['short row elsewhere', `u_str ESTAB 0 0 ${path} 102 * 101\n* 5\n`, 'ERR_IDENTITY_PEER_LOOKUP_FAILED', 'unexpected sock_diag row for socket `102`'],
  ];
  for (const [name, out, code, message] of refusals) {
    it(`refuses: ${name}`, () => {
      assert.throws(() => parsePeerInode(out, 102, path), (e: unknown) => {
        assert.ok(e instanceof WritError);
        assert.equal(e.code, code);
        assert.equal(e.message, message);
        return true;
      });
    });
  }
});
