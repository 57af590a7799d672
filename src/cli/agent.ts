/**
 * `writ agent` — the node agent process — and `writ agent status`.
 *
 * The agent attests the node to the Writ server, serves the SPIFFE Workload
 * API on a Unix socket, and answers `writ agent status` on an admin socket in
 * its data folder (`agent-admin.sock`, mode 0600: only the agent's user and
 * root can read the status). Its node credential is kept in the data folder
 * (`node-credential.json`, mode 0600) so that a restart does not need a new
 * join token. Workload SVIDs and their keys live in memory only.
 */
import { chmodSync, mkdirSync, readFileSync, renameSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { createServer, request } from 'node:http';
import type { Server } from 'node:http';
import { join, resolve } from 'node:path';
import pino from 'pino';
import { systemClock } from '../kernel/index.ts';
import {
  SPIFFE_ENDPOINT_SOCKET,
  WorkloadAgent,
  WorkloadApiServer,
  agentErrors,
  assertCredentialConsistent,
  parseEndpointSocket,
} from '../identity/index.ts';
import type { AgentLog, AgentStateStore, AgentStatus, NodeApi, NodeAttestationEvidence, AgentNodeCredential } from '../identity/index.ts';
import { CliError } from './client.ts';
import { table } from './command.ts';
import type { Command, Io, Values } from './command.ts';
import { HttpNodeApi } from './node-api-client.ts';

const CREDENTIAL_FILE = 'node-credential.json';
const ADMIN_SOCKET = 'agent-admin.sock';
const DEFAULT_DATA_DIR = './.writ-agent';

// ---- the node credential on disk ---------------------------------------------------

/** The node credential in `<data-dir>/node-credential.json` (mode 0600), written atomically. */
export class FileAgentStateStore implements AgentStateStore {
  readonly #path: string;
  constructor(dataDir: string) {
    this.#path = join(dataDir, CREDENTIAL_FILE);
  }

  async load(): Promise<AgentNodeCredential | undefined> {
    let text: string;
    try {
      text = readFileSync(this.#path, 'utf8');
    } catch {
      return undefined;
    }
    let c: AgentNodeCredential;
    try {
      const raw = JSON.parse(text) as { spiffeId: string; certChain: string[]; privateKey: string; notBeforeMs: number; notAfterMs: number; token?: string };
      c = {
        spiffeId: String(raw.spiffeId),
        certChainDer: raw.certChain.map((b) => new Uint8Array(Buffer.from(b, 'base64'))),
        privateKeyPkcs8Der: new Uint8Array(Buffer.from(raw.privateKey, 'base64')),
        notBeforeMs: Number(raw.notBeforeMs),
        notAfterMs: Number(raw.notAfterMs),
        ...(typeof raw.token === 'string' ? { token: raw.token } : {}),
      };
    } catch {
      throw agentErrors.error('ERR_IDENTITY_AGENT_STATE_INVALID', `${this.#path} is not a saved node credential`);
    }
    assertCredentialConsistent(c);
    return c;
  }

  async save(c: AgentNodeCredential | undefined): Promise<void> {
    if (c === undefined) {
      rmSync(this.#path, { force: true });
      return;
    }
    const body = JSON.stringify({
      spiffeId: c.spiffeId,
      certChain: c.certChainDer.map((d) => Buffer.from(d).toString('base64')),
      privateKey: Buffer.from(c.privateKeyPkcs8Der).toString('base64'),
      notBeforeMs: c.notBeforeMs,
      notAfterMs: c.notAfterMs,
      ...(c.token === undefined ? {} : { token: c.token }),
    });
    const tmp = `${this.#path}.tmp`;
    writeFileSync(tmp, body, { mode: 0o600 });
    renameSync(tmp, this.#path);
  }
}

// ---- the running agent ---------------------------------------------------------------

/** Options of {@link startAgent}. */
export interface StartAgentOptions {
  readonly nodeApi: NodeApi;
  readonly evidence: () => Promise<NodeAttestationEvidence>;
  /** Absolute path of the Workload API socket. */
  readonly socketPath: string;
  readonly dataDir: string;
  readonly syncIntervalMs?: number;
  readonly retryIntervalMs?: number;
  readonly log: AgentLog;
}

/** A started agent. */
export interface RunningAgent {
  readonly agent: WorkloadAgent;
  readonly socketPath: string;
  readonly adminSocketPath: string;
  /** Close the Workload API socket (and remove it), the admin socket, and the timers. */
  stop(): Promise<void>;
}

/**
 * Attest, sync, then serve the Workload API and the admin socket.
 *
 * @example
 * const running = await startAgent({ nodeApi, evidence, socketPath: '/run/writ/agent.sock', dataDir: '/var/lib/writ-agent', log });
 * await running.stop();
 */
export async function startAgent(o: StartAgentOptions): Promise<RunningAgent> {
  mkdirSync(o.dataDir, { recursive: true, mode: 0o700 });
  const agent = new WorkloadAgent({
    nodeApi: o.nodeApi,
    evidence: o.evidence,
    clock: systemClock,
    stateStore: new FileAgentStateStore(o.dataDir),
    log: o.log,
    ...(o.syncIntervalMs === undefined ? {} : { syncIntervalMs: o.syncIntervalMs }),
    ...(o.retryIntervalMs === undefined ? {} : { retryIntervalMs: o.retryIntervalMs }),
  });
  await agent.start();
  const server = new WorkloadApiServer({ socketPath: o.socketPath, source: agent, log: o.log });
  try {
    await server.start();
  } catch (err) {
    await agent.stop();
    throw err;
  }
  const adminSocketPath = join(o.dataDir, ADMIN_SOCKET);
  let admin: Server;
  try {
    admin = await listenAdmin(adminSocketPath, agent);
  } catch (err) {
    await server.stop();
    await agent.stop();
    throw err;
  }
  return {
    agent,
    socketPath: o.socketPath,
    adminSocketPath,
    async stop() {
      await server.stop();
      await new Promise<void>((r) => admin.close(() => r()));
      rmSync(adminSocketPath, { force: true });
      await agent.stop();
    },
  };
}

async function listenAdmin(path: string, agent: WorkloadAgent): Promise<Server> {
  try {
    unlinkSync(path);
  } catch {
    // no stale socket
  }
  const admin = createServer((req, res) => {
    if (req.method === 'GET' && req.url === '/status') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(agent.status()));
      return;
    }
    res.writeHead(404, { 'content-type': 'application/json' });
    res.end('{"code":"ERR_CLI_NOT_FOUND","message":"only GET /status"}');
  });
  await new Promise<void>((r, reject) => {
    admin.once('error', reject);
    admin.listen(path, () => r());
  });
  chmodSync(path, 0o600);
  return admin;
}

function agentLog(level: string): AgentLog {
  const logger = pino({ level, base: { component: 'writ-agent' } }, pino.destination({ dest: 2, sync: true }));
  return { info: (f, m) => logger.info(f, m), warn: (f, m) => logger.warn(f, m) };
}

/** The Workload API socket path from --socket or SPIFFE_ENDPOINT_SOCKET. */
function socketPathOf(v: Values, io: Io): string {
  const raw = (v.socket as string | undefined) ?? io.env[SPIFFE_ENDPOINT_SOCKET];
  if (raw === undefined || raw === '') throw new CliError(`--socket is required (or set ${SPIFFE_ENDPOINT_SOCKET})`, 'ERR_CLI_USAGE', 2);
  if (raw.startsWith('/')) return raw;
  const address = parseEndpointSocket(raw);
  if (address.kind !== 'unix') throw new CliError('the agent serves the Workload API on a Unix socket only; use unix:///path', 'ERR_CLI_USAGE', 2);
  return address.path;
}

/** Where the attestation evidence comes from. */
function evidenceOf(v: Values, io: Io): () => Promise<NodeAttestationEvidence> {
  const joinToken = (v['join-token'] as string | undefined) ?? io.env.WRIT_JOIN_TOKEN;
  const oidcFile = v['oidc-token-file'] as string | undefined;
  if (joinToken !== undefined && oidcFile !== undefined) throw new CliError('pass either --join-token or --oidc-token-file, not both', 'ERR_CLI_USAGE', 2);
  if (joinToken !== undefined) {
    if (joinToken === '') throw new CliError('--join-token is empty', 'ERR_CLI_USAGE', 2);
    return async () => ({ kind: 'join_token', token: joinToken });
  }
  if (oidcFile !== undefined) {
    // Re-read at every attestation: projected tokens are rotated on disk.
    return async () => {
      let token: string;
      try {
        token = readFileSync(oidcFile, 'utf8').trim();
      } catch {
        throw new CliError(`cannot read the OIDC token file ${oidcFile}`, 'ERR_CLI_TOKEN_FILE');
      }
      if (token === '') throw new CliError(`the OIDC token file ${oidcFile} is empty`, 'ERR_CLI_TOKEN_FILE');
      return { kind: 'oidc', token };
    };
  }
  return async () => {
    throw new CliError('this node has no saved credential: pass --join-token or --oidc-token-file to attest it', 'ERR_CLI_USAGE', 2);
  };
}

/** How the agent reaches the server's node API; replaceable so tests can run the agent against a fake. */
export type NodeApiFactory = (serverUrl: string, io: Io, options: { readonly mtlsUrl?: string }) => NodeApi;

/**
 * The `writ agent` command with a given node API factory.
 *
 * @example
 * const cmd = agentCommand((url) => new HttpNodeApi(url));
 */
export function agentCommand(nodeApiFor: NodeApiFactory): Command {
  return {
    name: 'agent',
    summary: 'run the node agent: attest this node and serve the SPIFFE Workload API on a Unix socket',
    usage: 'writ agent --server URL [--server-mtls URL] (--join-token TOKEN | --oidc-token-file FILE) --socket PATH [--data-dir DIR]',
    options: {
      server: { type: 'string' },
      'server-mtls': { type: 'string' },
      'join-token': { type: 'string' },
      'oidc-token-file': { type: 'string' },
      socket: { type: 'string' },
      'data-dir': { type: 'string' },
      'log-level': { type: 'string' },
      'sync-interval': { type: 'string' },
    },
    help: {
      '--server URL': 'the Writ server (env WRIT_SERVER)',
      '--server-mtls URL': 'the server\'s mutual-TLS listener (https://host:port); by default the one the server advertises. Once attested, the agent calls it with its node SVID as client certificate and requires the server SVID spiffe://<trust domain>/writ/server',
      '--join-token TOKEN': 'single-use join token from `writ token create` (env WRIT_JOIN_TOKEN); needed only until the node has a saved credential',
      '--oidc-token-file FILE': 'attest with the OIDC/JWT token in FILE (for example a Kubernetes projected service-account token); re-read at each attestation',
      '--socket PATH': `Workload API socket path or unix:///path (env ${SPIFFE_ENDPOINT_SOCKET})`,
      '--data-dir DIR': `node credential (0600) and the admin socket for \`writ agent status\` (default ${DEFAULT_DATA_DIR})`,
      '--log-level LEVEL': 'fatal, error, warn, info, debug or silent (default info)',
      '--sync-interval SECONDS': 'how often entries are fetched from the server (default 5)',
    },
    async run(v, _p, io) {
      const serverUrl = (v.server as string | undefined) ?? io.env.WRIT_SERVER;
      if (serverUrl === undefined || serverUrl === '') throw new CliError('--server is required (or set WRIT_SERVER)', 'ERR_CLI_USAGE', 2);
      const socketPath = socketPathOf(v, io);
      const evidence = evidenceOf(v, io);
      const dataDir = resolve((v['data-dir'] as string | undefined) ?? io.env.WRIT_AGENT_DATA_DIR ?? DEFAULT_DATA_DIR);
      const sync = Number((v['sync-interval'] as string | undefined) ?? '5');
      if (!Number.isFinite(sync) || sync <= 0) throw new CliError('--sync-interval must be a positive number of seconds', 'ERR_CLI_USAGE', 2);
      const level = (v['log-level'] as string | undefined) ?? 'info';
      if (!['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].includes(level)) throw new CliError(`--log-level \`${level}\` is not a level`, 'ERR_CLI_USAGE', 2);
      const mtlsUrl = v['server-mtls'] as string | undefined;
      if (mtlsUrl !== undefined && !/^https:\/\/[^\s/?#]+\/?$/.test(mtlsUrl)) throw new CliError('--server-mtls must be https://host:port', 'ERR_CLI_USAGE', 2);
      const running = await startAgent({
        nodeApi: nodeApiFor(serverUrl, io, mtlsUrl === undefined ? {} : { mtlsUrl }),
        evidence,
        socketPath,
        dataDir,
        syncIntervalMs: sync * 1000,
        retryIntervalMs: Math.min(1000, sync * 1000),
        log: agentLog(level),
      });
      const st = running.agent.status();
      io.err(`writ agent: serving the Workload API on unix://${socketPath} as ${st.node?.spiffeId ?? 'an unattested node'} (${st.message}); status: writ agent status --data-dir ${dataDir}`);
      await new Promise<void>((done) => {
        const stop = (signal: string): void => {
          io.err(`writ agent: ${signal} received, closing the Workload API socket`);
          running.stop().then(done, (e: unknown) => {
            io.err(`writ agent: shutdown failed: ${(e as Error).message}`);
            done();
          });
        };
        process.once('SIGTERM', () => stop('SIGTERM'));
        process.once('SIGINT', () => stop('SIGINT'));
      });
      return 0;
    },
  };
}

// ---- writ agent status ------------------------------------------------------------

function fetchStatus(socketPath: string): Promise<AgentStatus> {
  return new Promise((resolvePromise, reject) => {
    const req = request({ socketPath, path: '/status', method: 'GET', timeout: 5000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        try {
          resolvePromise(JSON.parse(Buffer.concat(chunks).toString('utf8')) as AgentStatus);
        } catch {
          reject(new CliError('the agent answered with something that is not a status', 'ERR_CLI_RESPONSE'));
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e: NodeJS.ErrnoException) => reject(new CliError(`cannot reach the agent at ${socketPath} (${e.code ?? e.message}); is \`writ agent\` running?`, 'ERR_CLI_UNREACHABLE')));
    req.end();
  });
}

/** The human form of a status. */
export function renderStatus(s: AgentStatus): string {
  const rows: string[][] = [
    ['state', s.state],
    ['message', s.message],
    ['node', s.node === undefined ? '-' : `${s.node.spiffeId} (expires ${s.node.expiresAt}, renews ${s.node.renewAt})`],
    ['server', s.server.reachable ? 'reachable' : `unreachable since ${s.server.outageSince ?? '?'}`],
    ['last sync', s.server.lastSyncAt ?? '-'],
  ];
  if (s.refusal !== undefined) rows.push(['refused', `${s.refusal.message} (${s.refusal.code}) at ${s.refusal.at}`]);
  if (s.server.lastError !== undefined) rows.push(['last error', `${s.server.lastError.message} (${s.server.lastError.code})`]);
  rows.push(['bundle', s.bundle === undefined ? '-' : `${s.bundle.trustDomain}${s.bundle.sequence === undefined ? '' : ` sequence ${s.bundle.sequence}`}, refresh at ${s.bundle.refreshAt}`]);
  rows.push(['jwt-svids cached', String(s.jwtSvidsCached)]);
  const r = s.revocations;
  const revs = !r.following ? 'not followed' : r.connected ? `following (cursor ${r.cursor ?? '-'}, last heard ${r.lastHeardAt ?? '-'})` : `reconnecting${r.lastError === undefined ? '' : `: ${r.lastError.message} (${r.lastError.code})`}`;
  rows.push(['revocations', revs]);
  const out = [table(rows)];
  if (s.entries.length > 0) {
    const note = (e: AgentStatus['entries'][number]): string =>
      e.refusal !== undefined ? `refused: ${e.refusal.message} (${e.refusal.code})` : e.revoked !== undefined && e.x509 === undefined ? `revoked (${e.revoked.reason}) at ${e.revoked.at}` : '-';
    out.push('', table([['ENTRY', 'SPIFFE ID', 'X.509-SVID EXPIRES', 'ROTATES', 'NOTE'], ...s.entries.map((e) => [e.id, e.spiffeId, e.x509?.expiresAt ?? '(none)', e.x509?.renewAt ?? '-', note(e)])]));
  }
  return out.join('\n');
}

const agentStatus: Command = {
  name: 'agent status',
  summary: 'show the local agent\'s state: node credential, server reachability, entries and SVIDs',
  usage: 'writ agent status [--data-dir DIR | --admin-socket PATH] [--json]',
  options: { 'data-dir': { type: 'string' }, 'admin-socket': { type: 'string' }, json: { type: 'boolean' } },
  help: {
    '--data-dir DIR': `the agent's data folder (env WRIT_AGENT_DATA_DIR; default ${DEFAULT_DATA_DIR})`,
    '--admin-socket PATH': `the agent's admin socket (default <data-dir>/${ADMIN_SOCKET})`,
    '--json': 'machine-readable output',
  },
  async run(v, _p, io) {
    const dataDir = resolve((v['data-dir'] as string | undefined) ?? io.env.WRIT_AGENT_DATA_DIR ?? DEFAULT_DATA_DIR);
    const path = (v['admin-socket'] as string | undefined) ?? join(dataDir, ADMIN_SOCKET);
    const s = await fetchStatus(path);
    io.out(v.json === true ? JSON.stringify(s, null, 2) : renderStatus(s));
    // Exit 0 only when the agent is serving normally, so the command doubles as a health check.
    return s.state === 'ready' ? 0 : 1;
  },
};

/** The agent's commands. */
export const AGENT_COMMANDS: readonly Command[] = [agentCommand((url, _io, o) => new HttpNodeApi(url, o)), agentStatus];
