/**
 * Kernel-verified credentials of the process at the other end of an accepted
 * Unix-socket connection, on Linux, without native code.
 *
 * Node has no `SO_PEERCRED`. What the kernel does expose, and what is used:
 * 1. our end: `/proc/self/fd/<fd>` of the accepted socket reads `socket:[<inode>]`;
 * 2. the peer end: the kernel's sock_diag netlink interface reports, for every
 *    connected Unix socket, the inode of its peer (`UNIX_DIAG_PEER`). Node cannot
 *    open a netlink socket, so iproute2's `ss` asks on our behalf, filtered to
 *    rows whose local address is our own listening path (`/proc/net/unix` has
 *    no peer column: verified on Linux 6.18);
 * 3. the process: every `/proc/<pid>/fd/*` that links to `socket:[<peer inode>]`
 *    is a holder; for each, `/proc/<pid>/status` (effective uid and gid),
 *    `/proc/<pid>/exe` (path, and SHA-256 of the file the kernel executed),
 *    `/proc/<pid>/stat` (start time) and the socket inode's owner, which the
 *    kernel sets to the creating task's fsuid/fsgid when the socket is made.
 *
 * Fail closed: no holder, holders that disagree, a process that changed while
 * it was read, or a socket owner that differs from the process's effective
 * ids are all refused with a typed error. The threat model, the races and how
 * they are closed are in docs/agent-peer-attestation.md.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, readlinkSync } from 'node:fs';
import { readdir, readFile, readlink, stat } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { isAbsolute } from 'node:path';
import { agentErrors } from './errors.ts';

/** What the kernel says about the caller at the moment it was attested. */
export interface PeerCredentials {
  /** PID of the calling process (the lowest, when several processes share the socket). */
  readonly pid: number;
  /** Every PID holding the peer socket; all of them agreed on uid, gid and executable. */
  readonly pids: readonly number[];
  /** Effective uid (`/proc/<pid>/status` `Uid:` second field), equal to the socket's owner. */
  readonly uid: number;
  /** Effective gid (`/proc/<pid>/status` `Gid:` second field), equal to the socket's group. */
  readonly gid: number;
  /** Path of the executable (`/proc/<pid>/exe`). */
  readonly exePath: string;
  /** Lowercase hex SHA-256 of the executable the kernel is running. */
  readonly exeSha256: string;
  /** Start time of the process in clock ticks since boot (`/proc/<pid>/stat` field 22). */
  readonly startTime: string;
  /** Inode of the caller's end of the connection. */
  readonly peerSocketInode: number;
}

/** Where the attestor reads from; defaults suit a Linux host. */
export interface PeerAttestorOptions {
  /** procfs mount point. Default `/proc`. */
  readonly procRoot?: string;
  /** Absolute path of iproute2's `ss`. Default: the first of /usr/bin/ss, /bin/ss, /usr/sbin/ss, /sbin/ss. */
  readonly ssPath?: string;
  /** Milliseconds `ss` may take. Default 5000. */
  readonly ssTimeoutMs?: number;
}

const SS_CANDIDATES = ['/usr/bin/ss', '/bin/ss', '/usr/sbin/ss', '/sbin/ss'] as const;
const SOCKET_LINK = /^socket:\[(\d+)\]$/;
const DELETED_SUFFIX = ' (deleted)';
const HASH_CACHE_MAX = 256;

/**
 * Listening paths handed to `ss` as a filter must be plain: `ss` matches them
 * with fnmatch and prints them space-separated.
 */
const PLAIN_PATH = /^\/[A-Za-z0-9._\-/+@,=:~]+$/;

/**
 * Reads the kernel's view of a Unix-socket peer. One instance per agent; it
 * caches executable hashes by file identity.
 *
 * @example
 * const attestor = new PeerAttestor();
 * server.on('connection', async (socket) => {
 *   const serverInode = attestor.serverSocketInode(socket); // synchronously, at accept
 *   const peerInode = await attestor.peerSocketInode(serverInode, '/run/writ/agent.sock');
 *   const creds = await attestor.attestPeer(peerInode);
 *   creds.uid; creds.exeSha256;
 * });
 */
export class PeerAttestor {
  readonly #procRoot: string;
  readonly #ssPath: string | undefined;
  readonly #ssTimeoutMs: number;
  readonly #hashCache = new Map<string, string>();

  constructor(options: PeerAttestorOptions = {}) {
    const procRoot = options.procRoot ?? '/proc';
    if (!isAbsolute(procRoot)) throw new TypeError('procRoot must be an absolute path');
    if (options.ssPath !== undefined && !isAbsolute(options.ssPath)) throw new TypeError('ssPath must be an absolute path');
    this.#procRoot = procRoot;
    this.#ssPath = options.ssPath ?? SS_CANDIDATES.find((p) => existsSync(p));
    this.#ssTimeoutMs = options.ssTimeoutMs ?? 5000;
  }

  /**
   * Inode of our own end of an accepted Unix-socket connection. Call it
   * synchronously in the `connection` handler, while the descriptor is
   * certainly still this socket's.
   */
  serverSocketInode(socket: Socket): number {
    if (process.platform !== 'linux') {
      throw agentErrors.error('ERR_IDENTITY_PEER_UNSUPPORTED', `peer attestation needs Linux, not \`${process.platform}\``);
    }
    const fd = descriptorOf(socket);
    if (fd === undefined) {
      throw agentErrors.error('ERR_IDENTITY_PEER_LOOKUP_FAILED', 'the accepted connection has no file descriptor');
    }
    let link: string;
    try {
      link = readlinkSync(`${this.#procRoot}/self/fd/${fd}`);
    } catch (cause) {
      throw agentErrors.error('ERR_IDENTITY_PEER_LOOKUP_FAILED', `cannot read our own descriptor \`${fd}\``, { cause });
    }
    const inode = socketInodeOf(link);
    if (inode === undefined) {
      throw agentErrors.error('ERR_IDENTITY_PEER_LOOKUP_FAILED', `descriptor \`${fd}\` is not a socket`);
    }
    return inode;
  }

  /**
   * Inode of the peer end of our accepted socket `serverInode`, as reported
   * by the kernel's sock_diag interface (through `ss`), among the connections
   * accepted on `listenPath`.
   */
  async peerSocketInode(serverInode: number, listenPath: string): Promise<number> {
    if (!Number.isSafeInteger(serverInode) || serverInode <= 0) throw new TypeError('serverInode must be a positive integer');
    if (!PLAIN_PATH.test(listenPath)) {
      throw new TypeError('listenPath must be an absolute path of letters, digits and . _ - / + @ , = : ~');
    }
    const ss = this.#ssPath;
    if (ss === undefined) {
      throw agentErrors.error('ERR_IDENTITY_PEER_UNSUPPORTED', 'iproute2 `ss` was not found; peer attestation needs it');
    }
    const out = await run(ss, ['-x', '-H', '-n', 'src', listenPath], this.#ssTimeoutMs);
    return parsePeerInode(out, serverInode, listenPath);
  }

  /**
   * Attest the process(es) holding the peer socket `peerInode`. Fails closed
   * with a typed error on anything ambiguous.
   */
  async attestPeer(peerInode: number): Promise<PeerCredentials> {
    if (!Number.isSafeInteger(peerInode) || peerInode <= 0) throw new TypeError('peerInode must be a positive integer');
    const holders = await this.#findHolders(peerInode);
    if (holders.length === 0) {
      throw agentErrors.error('ERR_IDENTITY_PEER_NOT_FOUND', `no visible process holds peer socket \`${peerInode}\``);
    }
    const seen: ProcessFacts[] = [];
    for (const h of holders) seen.push(await this.#inspect(h, peerInode));
    const first = seen[0];
    if (first === undefined) {
      throw agentErrors.error('ERR_IDENTITY_PEER_NOT_FOUND', `no visible process holds peer socket \`${peerInode}\``);
    }
    for (const other of seen) {
      if (other.uid !== first.uid || other.gid !== first.gid || other.exePath !== first.exePath || other.exeSha256 !== first.exeSha256) {
        throw agentErrors.error(
          'ERR_IDENTITY_PEER_AMBIGUOUS',
          `processes \`${first.pid}\` and \`${other.pid}\` share peer socket \`${peerInode}\` but differ in uid, gid or executable`,
        );
      }
    }
    const pids = [...new Set(seen.map((f) => f.pid))].sort((a, b) => a - b);
    return Object.freeze({
      pid: first.pid,
      pids: Object.freeze(pids),
      uid: first.uid,
      gid: first.gid,
      exePath: first.exePath,
      exeSha256: first.exeSha256,
      startTime: first.startTime,
      peerSocketInode: peerInode,
    });
  }

  /** Every (pid, fd) whose descriptor links to `socket:[peerInode]`. */
  async #findHolders(peerInode: number): Promise<Holder[]> {
    const want = `socket:[${peerInode}]`;
    const holders: Holder[] = [];
    let entries: string[];
    try {
      entries = await readdir(this.#procRoot);
    } catch (cause) {
      throw agentErrors.error('ERR_IDENTITY_PEER_UNSUPPORTED', `cannot list \`${this.#procRoot}\``, { cause });
    }
    for (const name of entries) {
      if (!/^\d+$/.test(name)) continue;
      const pid = Number(name);
      let fds: string[];
      try {
        fds = await readdir(`${this.#procRoot}/${pid}/fd`);
      } catch {
        continue; // exited meanwhile, or a kernel thread without a table
      }
      for (const fd of fds) {
        let link: string;
        try {
          link = await readlink(`${this.#procRoot}/${pid}/fd/${fd}`);
        } catch {
          continue;
        }
        if (link === want) holders.push({ pid, fd: Number(fd) });
      }
    }
    holders.sort((a, b) => a.pid - b.pid || a.fd - b.fd);
    return holders;
  }

  /**
   * Read one holder's facts, then read the volatile ones again: a PID that was
   * reused, a process that exec'd or a descriptor that was closed or replaced
   * between the two reads is refused.
   */
  async #inspect(h: Holder, peerInode: number): Promise<ProcessFacts> {
    const base = `${this.#procRoot}/${h.pid}`;
    const changed = (what: string): Error =>
      agentErrors.error('ERR_IDENTITY_PEER_CHANGED', `process \`${h.pid}\` changed while being attested: ${what}`);

    const before = await this.#snapshot(h, peerInode);
    if (before === undefined) throw changed('it exited or dropped the socket');

    let exeStatBefore;
    try {
      exeStatBefore = await stat(`${base}/exe`);
    } catch (cause) {
      throw agentErrors.error('ERR_IDENTITY_PEER_EXE_UNAVAILABLE', `cannot read the executable of process \`${h.pid}\``, { cause });
    }
    const fileKey = `${exeStatBefore.dev}:${exeStatBefore.ino}:${exeStatBefore.size}:${exeStatBefore.mtimeMs}:${exeStatBefore.ctimeMs}`;
    let exeSha256 = this.#hashCache.get(fileKey);
    if (exeSha256 === undefined) {
      try {
        // Hash through /proc/<pid>/exe, the file the kernel executed, not the path:
        // a path swapped after exec does not change what is measured.
        exeSha256 = await sha256File(`${base}/exe`);
      } catch (cause) {
        throw agentErrors.error('ERR_IDENTITY_PEER_EXE_UNAVAILABLE', `cannot read the executable of process \`${h.pid}\``, { cause });
      }
      let exeStatAfter;
      try {
        exeStatAfter = await stat(`${base}/exe`);
      } catch {
        throw changed('it exited while its executable was hashed');
      }
      const afterKey = `${exeStatAfter.dev}:${exeStatAfter.ino}:${exeStatAfter.size}:${exeStatAfter.mtimeMs}:${exeStatAfter.ctimeMs}`;
      if (afterKey !== fileKey) throw changed('its executable changed while it was hashed');
      if (this.#hashCache.size >= HASH_CACHE_MAX) {
        const oldest = this.#hashCache.keys().next();
        if (oldest.done !== true) this.#hashCache.delete(oldest.value);
      }
      this.#hashCache.set(fileKey, exeSha256);
    }

    const after = await this.#snapshot(h, peerInode);
    if (after === undefined) throw changed('it exited or dropped the socket');
    if (after.startTime !== before.startTime) throw changed('its PID was reused');
    if (after.exePath !== before.exePath) throw changed('it executed another program');
    if (after.uid !== before.uid || after.gid !== before.gid) throw changed('its uid or gid changed');
    if (after.ownerUid !== before.ownerUid || after.ownerGid !== before.ownerGid) throw changed('its socket changed owner');

    // The socket's owner is set by the kernel from the creating task's fsuid/fsgid
    // and can be changed only by a privileged chown. A socket handed to a process
    // running as someone else (an exec of a set-uid program, SCM_RIGHTS) does not
    // inherit that someone's identity.
    if (before.ownerUid !== before.uid || before.ownerGid !== before.gid) {
      throw agentErrors.error(
        'ERR_IDENTITY_PEER_OWNER_MISMATCH',
        `peer socket \`${peerInode}\` is owned by uid \`${before.ownerUid}\` gid \`${before.ownerGid}\` but process \`${h.pid}\` runs as uid \`${before.uid}\` gid \`${before.gid}\``,
      );
    }
    return { pid: h.pid, uid: before.uid, gid: before.gid, exePath: before.exePath, exeSha256, startTime: before.startTime };
  }

  /** One consistent-looking read of a holder, or undefined when it is gone. */
  async #snapshot(h: Holder, peerInode: number): Promise<Snapshot | undefined> {
    const base = `${this.#procRoot}/${h.pid}`;
    let statText: string;
    let statusText: string;
    let exeLink: string;
    let fdLink: string;
    let sock;
    try {
      statText = await readFile(`${base}/stat`, 'utf8');
      statusText = await readFile(`${base}/status`, 'utf8');
      fdLink = await readlink(`${base}/fd/${h.fd}`);
      sock = await stat(`${base}/fd/${h.fd}`);
    } catch {
      return undefined;
    }
    try {
      exeLink = await readlink(`${base}/exe`);
    } catch (cause) {
      throw agentErrors.error('ERR_IDENTITY_PEER_EXE_UNAVAILABLE', `cannot read the executable of process \`${h.pid}\``, { cause });
    }
    if (fdLink !== `socket:[${peerInode}]` || !sock.isSocket() || sock.ino !== peerInode) return undefined;
    if (exeLink.endsWith(DELETED_SUFFIX)) {
      throw agentErrors.error('ERR_IDENTITY_PEER_EXE_UNAVAILABLE', `the executable of process \`${h.pid}\` was deleted`);
    }
    const startTime = startTimeOf(statText);
    const uid = effectiveId(statusText, 'Uid');
    const gid = effectiveId(statusText, 'Gid');
    if (startTime === undefined || uid === undefined || gid === undefined) {
      throw agentErrors.error('ERR_IDENTITY_PEER_LOOKUP_FAILED', `cannot parse the status of process \`${h.pid}\``);
    }
    return { startTime, uid, gid, exePath: exeLink, ownerUid: sock.uid, ownerGid: sock.gid };
  }
}

interface Holder {
  readonly pid: number;
  readonly fd: number;
}

interface Snapshot {
  readonly startTime: string;
  readonly uid: number;
  readonly gid: number;
  readonly exePath: string;
  readonly ownerUid: number;
  readonly ownerGid: number;
}

interface ProcessFacts {
  readonly pid: number;
  readonly uid: number;
  readonly gid: number;
  readonly exePath: string;
  readonly exeSha256: string;
  readonly startTime: string;
}

/** The descriptor of a net.Socket; Node exposes it only on the libuv handle. */
function descriptorOf(socket: Socket): number | undefined {
  const handle: unknown = (socket as unknown as { _handle?: unknown })._handle;
  if (typeof handle !== 'object' || handle === null || !('fd' in handle)) return undefined;
  const fd: unknown = handle.fd;
  return typeof fd === 'number' && Number.isSafeInteger(fd) && fd >= 0 ? fd : undefined;
}

function socketInodeOf(link: string): number | undefined {
  const m = SOCKET_LINK.exec(link);
  const digits = m?.[1];
  if (digits === undefined) return undefined;
  const n = Number(digits);
  return Number.isSafeInteger(n) && n > 0 ? n : undefined;
}

/**
 * Find our row in `ss -x -H -n src <listenPath>` output:
 * `u_str <state> <recv-q> <send-q> <listenPath> <our inode> * <peer inode>`.
 * Exactly one row may name our inode, and it must have exactly that shape.
 *
 * @internal exported for tests
 */
export function parsePeerInode(out: string, serverInode: number, listenPath: string): number {
  const ours = String(serverInode);
  let found: number | undefined;
  let rows = 0;
  for (const line of out.split('\n')) {
    if (line.trim() === '') continue;
    const t = line.trim().split(/\s+/);
    if (t.length !== 8) {
      // Every row of our own listening path has eight columns; anything else could hide ours.
      throw agentErrors.error('ERR_IDENTITY_PEER_LOOKUP_FAILED', `unexpected sock_diag row for socket \`${serverInode}\``);
    }
    if (t[5] !== ours) continue;
    rows++;
    const [netid, , , , local, localIno, peerAddr, peerIno] = t;
    if (t.length !== 8 || netid !== 'u_str' || local !== listenPath || localIno !== ours || peerAddr !== '*' || peerIno === undefined || !/^\d+$/.test(peerIno)) {
      throw agentErrors.error('ERR_IDENTITY_PEER_LOOKUP_FAILED', `unexpected sock_diag row for socket \`${serverInode}\``);
    }
    const n = Number(peerIno);
    if (!Number.isSafeInteger(n) || n <= 0) {
      throw agentErrors.error('ERR_IDENTITY_PEER_NOT_FOUND', `socket \`${serverInode}\` has no connected peer`);
    }
    found = n;
  }
  if (rows > 1) throw agentErrors.error('ERR_IDENTITY_PEER_LOOKUP_FAILED', `several sock_diag rows name socket \`${serverInode}\``);
  if (found === undefined) {
    throw agentErrors.error('ERR_IDENTITY_PEER_NOT_FOUND', `socket \`${serverInode}\` is not a connection accepted on the agent socket`);
  }
  return found;
}

/** Field 22 of /proc/<pid>/stat; the name in field 2 may hold spaces and parentheses. */
function startTimeOf(statText: string): string | undefined {
  const close = statText.lastIndexOf(')');
  if (close < 0) return undefined;
  const rest = statText.slice(close + 1).trim().split(/\s+/);
  const v = rest[19]; // rest[0] is field 3
  return v !== undefined && /^\d+$/.test(v) ? v : undefined;
}

/** Second number of the `Uid:`/`Gid:` line (real, effective, saved, filesystem). */
function effectiveId(statusText: string, key: 'Uid' | 'Gid'): number | undefined {
  for (const line of statusText.split('\n')) {
    if (!line.startsWith(`${key}:`)) continue;
    const v = line.slice(key.length + 1).trim().split(/\s+/)[1];
    if (v === undefined || !/^\d+$/.test(v)) return undefined;
    return Number(v);
  }
  return undefined;
}

function sha256File(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    const s = createReadStream(path);
    s.on('data', (chunk) => h.update(chunk));
    s.on('error', reject);
    s.on('end', () => resolve(h.digest('hex')));
  });
}

function run(file: string, args: readonly string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024, env: { LC_ALL: 'C' } }, (err, stdout) => {
      if (err !== null) {
        reject(agentErrors.error('ERR_IDENTITY_PEER_LOOKUP_FAILED', 'the kernel socket table could not be read', { cause: err }));
        return;
      }
      resolve(stdout);
    });
  });
}
