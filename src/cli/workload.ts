/**
 * Workload-side commands: clients of the SPIFFE Workload API socket served by
 * `writ agent` (or any SPIFFE Workload API), not of the Writ server.
 *
 * - `writ svid fetch` writes svid.pem, svid_key.pem (0600) and bundle.pem like
 *   spiffe-helper; `--watch` rewrites them on every rotation; `--exec` runs a
 *   command after each write.
 * - `writ svid jwt` prints a JWT-SVID for an audience.
 * - `writ bundle show` prints the trust bundle as PEM, JWKS or a SPIFFE bundle.
 */
import { spawn } from 'node:child_process';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import {
  SPIFFE_ENDPOINT_SOCKET,
  TrustBundle,
  WORKLOAD_API_HEADER,
  certificatesToPem,
  grpcTargetOf,
  loadWorkloadApiDefinition,
  parseEndpointSocket,
} from '../identity/index.ts';
import { CliError } from './client.ts';
import type { Command, Io, Options, Values } from './command.ts';

type Msg = Record<string, unknown>;

const SOCKET_OPTIONS: Options = { socket: { type: 'string' }, timeout: { type: 'string' } };
const SOCKET_HELP = {
  '--socket PATH|URI': `Workload API socket: a path, unix:///path or tcp://IP:PORT (env ${SPIFFE_ENDPOINT_SOCKET})`,
  '--timeout SECONDS': 'how long to wait for the agent (default 10)',
};

/** The Workload API client: the endpoint it talks to and its grpc-js client. */
interface WorkloadClient {
  readonly target: string;
  readonly client: grpc.Client;
  readonly timeoutMs: number;
}

let methods: Record<string, grpc.MethodDefinition<Msg, Msg>> | undefined;

function method(name: string): grpc.MethodDefinition<Msg, Msg> {
  methods ??= loadWorkloadApiDefinition().SpiffeWorkloadAPI as unknown as Record<string, grpc.MethodDefinition<Msg, Msg>>;
  const m = methods[name];
  if (m === undefined) throw new TypeError(`workloadapi.proto has no method ${name}`);
  return m;
}

function connect(v: Values, io: Io): WorkloadClient {
  const raw = (v.socket as string | undefined) ?? io.env[SPIFFE_ENDPOINT_SOCKET];
  if (raw === undefined || raw === '') throw new CliError(`no Workload API socket: pass --socket or set ${SPIFFE_ENDPOINT_SOCKET}`, 'ERR_CLI_USAGE', 2);
  const address = raw.startsWith('/') ? parseEndpointSocket(`unix://${raw}`) : parseEndpointSocket(raw);
  const seconds = Number((v.timeout as string | undefined) ?? '10');
  if (!Number.isFinite(seconds) || seconds <= 0) throw new CliError('--timeout must be a positive number of seconds', 'ERR_CLI_USAGE', 2);
  const target = grpcTargetOf(address);
  return { target, client: new grpc.Client(target, grpc.credentials.createInsecure()), timeoutMs: seconds * 1000 };
}

function header(): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set(WORKLOAD_API_HEADER, 'true');
  return md;
}

/** A gRPC failure as a one-line CLI error: the agent's detail and the status name. */
function grpcError(err: unknown, target: string): CliError {
  const e = err as Partial<grpc.ServiceError>;
  const code = typeof e.code === 'number' ? (grpc.status[e.code] ?? 'UNKNOWN') : 'UNKNOWN';
  if (e.code === grpc.status.UNAVAILABLE && /No connection established|ECONNREFUSED|ENOENT|connect/.test(e.details ?? '')) {
    return new CliError(`cannot reach the Workload API at ${target}; is \`writ agent\` running?`, code);
  }
  if (e.code === grpc.status.DEADLINE_EXCEEDED) return new CliError(`no answer from the Workload API at ${target} in time`, code);
  return new CliError(e.details ?? (err instanceof Error ? err.message : String(err)), code);
}

function unary(c: WorkloadClient, name: string, request: Msg): Promise<Msg> {
  const m = method(name);
  return new Promise((resolvePromise, reject) => {
    c.client.makeUnaryRequest(m.path, m.requestSerialize, m.responseDeserialize, request, header(), { deadline: Date.now() + c.timeoutMs }, (err, res) => {
      if (err !== null) reject(grpcError(err, c.target));
      else if (res === undefined) reject(new CliError('empty answer from the Workload API', 'UNKNOWN'));
      else resolvePromise(res);
    });
  });
}

/** The first message of a stream, then the stream is cancelled. */
function first(c: WorkloadClient, name: string): Promise<Msg> {
  const m = method(name);
  return new Promise((resolvePromise, reject) => {
    const s = c.client.makeServerStreamRequest(m.path, m.requestSerialize, m.responseDeserialize, {}, header(), { deadline: Date.now() + c.timeoutMs });
    s.once('data', (d: Msg) => {
      s.removeAllListeners('error');
      s.on('error', () => undefined);
      s.cancel();
      resolvePromise(d);
    });
    s.once('error', (err) => reject(grpcError(err, c.target)));
  });
}

/** Split concatenated DER structures (Workload API fields hold ASN.1 DER concatenated). */
export function splitDer(buf: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  let i = 0;
  while (i < buf.length) {
    if (buf[i] !== 0x30 || i + 2 > buf.length) throw new CliError('the Workload API sent a malformed certificate list', 'ERR_CLI_RESPONSE');
    const first = buf[i + 1] ?? 0;
    let len = first;
    let head = 2;
    if (first & 0x80) {
      const n = first & 0x7f;
      if (n === 0 || n > 4 || i + 2 + n > buf.length) throw new CliError('the Workload API sent a malformed certificate list', 'ERR_CLI_RESPONSE');
      len = 0;
      for (let k = 0; k < n; k++) len = len * 256 + (buf[i + 2 + k] ?? 0);
      head = 2 + n;
    }
    const end = i + head + len;
    if (end > buf.length) throw new CliError('the Workload API sent a malformed certificate list', 'ERR_CLI_RESPONSE');
    out.push(buf.subarray(i, end));
    i = end;
  }
  return out;
}

function bytes(v: unknown): Uint8Array {
  if (v instanceof Uint8Array) return v;
  return new Uint8Array();
}

/** Pick the SVID to write: the one named by --spiffe-id, else the first (the default). */
function pickSvid(msg: Msg, spiffeId: string | undefined): Msg {
  const svids = Array.isArray(msg.svids) ? (msg.svids as Msg[]) : [];
  const chosen = spiffeId === undefined ? svids[0] : svids.find((s) => s.spiffe_id === spiffeId);
  if (chosen === undefined) {
    throw new CliError(spiffeId === undefined ? 'the Workload API sent no SVID' : `the Workload API sent no SVID for \`${spiffeId}\``, 'ERR_CLI_NO_SVID');
  }
  return chosen;
}

/** Replace `path` atomically: readers see the old file or the new one, never half of one. */
function writeAtomic(path: string, data: string, mode: number): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, data, { mode });
  renameSync(tmp, path);
}

/** Write svid.pem, svid_key.pem, bundle.pem; returns the one-line report. */
function writeSvidFiles(dir: string, svid: Msg): string {
  const chain = splitDer(bytes(svid.x509_svid));
  const leafDer = chain[0];
  if (leafDer === undefined) throw new CliError('the Workload API sent an empty certificate chain', 'ERR_CLI_RESPONSE');
  const key = createPrivateKey({ key: Buffer.from(bytes(svid.x509_svid_key)), format: 'der', type: 'pkcs8' });
  const leaf = new X509Certificate(leafDer);
  if (!leaf.checkPrivateKey(key)) throw new CliError('the Workload API sent a key that does not match the certificate', 'ERR_CLI_RESPONSE');
  const bundle = splitDer(bytes(svid.bundle));
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  // Key first: a reader that sees the new certificate finds the new key already there.
  writeAtomic(join(dir, 'svid_key.pem'), key.export({ format: 'pem', type: 'pkcs8' }).toString(), 0o600);
  writeAtomic(join(dir, 'svid.pem'), certificatesToPem(chain), 0o644);
  writeAtomic(join(dir, 'bundle.pem'), certificatesToPem(bundle), 0o644);
  return `${String(svid.spiffe_id)}: wrote svid.pem, svid_key.pem, bundle.pem to ${dir} (serial ${leaf.serialNumber.toLowerCase()}, expires ${new Date(leaf.validTo).toISOString()})`;
}

/** Run `cmd` with /bin/sh; resolves with its exit code. */
function runHook(cmd: string, io: Io): Promise<number> {
  return new Promise((resolvePromise) => {
    const child = spawn('/bin/sh', ['-c', cmd], { stdio: ['ignore', 'inherit', 'inherit'], env: io.env });
    child.on('error', () => resolvePromise(127));
    child.on('close', (code, signal) => resolvePromise(code ?? (signal === null ? 1 : 128)));
  });
}

const svidFetch: Command = {
  name: 'svid fetch',
  summary: 'fetch this workload\'s X.509-SVID from the Workload API and write svid.pem, svid_key.pem, bundle.pem',
  usage: 'writ svid fetch --out DIR [--socket PATH] [--spiffe-id ID] [--exec CMD] [--watch]',
  options: { ...SOCKET_OPTIONS, out: { type: 'string', short: 'o' }, 'spiffe-id': { type: 'string' }, exec: { type: 'string' }, watch: { type: 'boolean', short: 'w' } },
  help: {
    '-o, --out DIR': 'folder for svid.pem (leaf then intermediates), svid_key.pem (PKCS#8, mode 0600) and bundle.pem',
    '--spiffe-id ID': 'write this SVID when the workload has several (default: the first)',
    '--exec CMD': 'run CMD with /bin/sh after the files are written (each time, with --watch)',
    '-w, --watch': 'keep the stream open and rewrite the files on every rotation until SIGTERM or SIGINT',
    ...SOCKET_HELP,
  },
  async run(v, _p, io) {
    if (v.out === undefined) throw new CliError('--out is required', 'ERR_CLI_USAGE', 2);
    const dir = resolve(v.out as string);
    const spiffeId = v['spiffe-id'] as string | undefined;
    const exec = v.exec as string | undefined;
    const c = connect(v, io);
    try {
      if (v.watch !== true) {
        io.out(writeSvidFiles(dir, pickSvid(await first(c, 'FetchX509SVID'), spiffeId)));
        if (exec !== undefined) {
          const code = await runHook(exec, io);
          if (code !== 0) throw new CliError(`--exec command exited with ${code}`, 'ERR_CLI_EXEC');
        }
        return 0;
      }
      return await watch(c, dir, spiffeId, exec, io);
    } finally {
      c.client.close();
    }
  },
};

/** Stream FetchX509SVID; write on every message; reconnect with backoff; stop on SIGTERM/SIGINT. */
async function watch(c: WorkloadClient, dir: string, spiffeId: string | undefined, exec: string | undefined, io: Io): Promise<number> {
  const m = method('FetchX509SVID');
  let stopped = false;
  let current: grpc.ClientReadableStream<Msg> | undefined;
  let wake: (() => void) | undefined;
  const stop = (): void => {
    stopped = true;
    current?.cancel();
    wake?.();
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  let backoffMs = 500;
  let hooks = Promise.resolve();
  try {
    while (!stopped) {
      const ended = await new Promise<CliError | undefined>((done) => {
        const s = c.client.makeServerStreamRequest(m.path, m.requestSerialize, m.responseDeserialize, {}, header());
        current = s;
        s.on('data', (msg: Msg) => {
          backoffMs = 500;
          try {
            io.out(writeSvidFiles(dir, pickSvid(msg, spiffeId)));
          } catch (err) {
            io.err(`writ svid fetch: ${err instanceof Error ? err.message : String(err)}`);
            return;
          }
          if (exec !== undefined) {
            hooks = hooks.then(async () => {
              const code = await runHook(exec, io);
              if (code !== 0) io.err(`writ svid fetch: --exec command exited with ${code}`);
            });
          }
        });
        s.on('error', (err: grpc.ServiceError) => done(err.code === grpc.status.CANCELLED ? undefined : grpcError(err, c.target)));
        s.on('end', () => done(undefined));
      });
      current = undefined;
      if (stopped) break;
      io.err(`writ svid fetch: stream ended${ended === undefined ? '' : `: ${ended.message} (${ended.code})`}; retrying in ${backoffMs / 1000}s`);
      await new Promise<void>((r) => {
        // Not unref'd: between two streams this timer is all that keeps the process alive; a stop clears it.
        const t = setTimeout(r, backoffMs);
        wake = () => {
          clearTimeout(t);
          r();
        };
      });
      wake = undefined;
      backoffMs = Math.min(backoffMs * 2, 30_000);
    }
    await hooks;
    return 0;
  } finally {
    process.off('SIGTERM', stop);
    process.off('SIGINT', stop);
  }
}

const svidJwt: Command = {
  name: 'svid jwt',
  summary: 'print a JWT-SVID for an audience from the Workload API',
  usage: 'writ svid jwt --audience AUD [--audience AUD2 …] [--spiffe-id ID] [--socket PATH] [--json]',
  options: { ...SOCKET_OPTIONS, audience: { type: 'string', multiple: true, short: 'a' }, 'spiffe-id': { type: 'string' }, json: { type: 'boolean' } },
  help: {
    '-a, --audience AUD': 'audience of the token (repeat for several; at least one)',
    '--spiffe-id ID': 'the SPIFFE ID to sign for when the workload has several (default: the first)',
    '--json': 'print {"spiffeId", "token"} instead of the bare token',
    ...SOCKET_HELP,
  },
  async run(v, _p, io) {
    const audience = (v.audience as unknown as string[] | undefined) ?? [];
    if (audience.length === 0) throw new CliError('--audience is required', 'ERR_CLI_USAGE', 2);
    const spiffeId = v['spiffe-id'] as string | undefined;
    const c = connect(v, io);
    try {
      const res = await unary(c, 'FetchJWTSVID', { audience, ...(spiffeId === undefined ? {} : { spiffe_id: spiffeId }) });
      const svid = pickSvid(res, spiffeId);
      if (v.json === true) io.out(JSON.stringify({ spiffeId: svid.spiffe_id, token: svid.svid }));
      else io.out(String(svid.svid));
      return 0;
    } finally {
      c.client.close();
    }
  },
};

const bundleShow: Command = {
  name: 'bundle show',
  summary: 'print the trust bundle served by the Workload API',
  usage: 'writ bundle show [--format pem|jwks|spiffe] [--trust-domain TD] [--socket PATH | --server URL]',
  options: { ...SOCKET_OPTIONS, format: { type: 'string' }, 'trust-domain': { type: 'string' }, server: { type: 'string' } },
  help: {
    '--format FORMAT': 'pem (X.509 authorities, default), jwks (JWT authorities with use "sig", for ordinary JWT libraries) or spiffe (SPIFFE bundle document)',
    '--trust-domain TD': 'which trust domain when the Workload API serves several (default: the only one)',
    '--server URL': 'read the bundle from a Writ server\'s public bundle endpoints (GET /bundle.pem, /keys, /bundle) instead of the Workload API',
    ...SOCKET_HELP,
  },
  async run(v, _p, io) {
    const format = (v.format as string | undefined) ?? 'pem';
    if (!['pem', 'jwks', 'spiffe'].includes(format)) throw new CliError(`--format must be pem, jwks or spiffe, not \`${format}\``, 'ERR_CLI_USAGE', 2);
    if (v.server !== undefined) {
      if (v.socket !== undefined) throw new CliError('pass either --socket or --server, not both', 'ERR_CLI_USAGE', 2);
      io.out(await fromServer(v.server as string, format));
      return 0;
    }
    const c = connect(v, io);
    let x509: Record<string, unknown>;
    let jwt: Record<string, unknown>;
    try {
      x509 = ((await first(c, 'FetchX509Bundles')).bundles ?? {}) as Record<string, unknown>;
      jwt = format === 'pem' ? {} : (((await first(c, 'FetchJWTBundles')).bundles ?? {}) as Record<string, unknown>);
    } finally {
      c.client.close();
    }
    const domains = [...new Set([...Object.keys(x509), ...Object.keys(jwt)])].sort();
    const wanted = v['trust-domain'] as string | undefined;
    const id = wanted === undefined ? undefined : wanted.startsWith('spiffe://') ? wanted : `spiffe://${wanted}`;
    let td: string;
    if (id !== undefined) {
      if (!domains.includes(id)) throw new CliError(`the Workload API serves no bundle for \`${id}\``, 'ERR_CLI_NO_BUNDLE');
      td = id;
    } else if (domains.length === 1 && domains[0] !== undefined) {
      td = domains[0];
    } else {
      throw new CliError(`the Workload API serves ${domains.length} trust domains (${domains.join(', ')}); pick one with --trust-domain`, 'ERR_CLI_USAGE', 2);
    }
    const certs = splitDer(bytes(x509[td]));
    const jwks = jwt[td] === undefined ? { keys: [] } : (JSON.parse(Buffer.from(bytes(jwt[td])).toString('utf8')) as unknown);
    const bundle = TrustBundle.parse({ keys: [...certs.map((der) => x509Key(der)), ...jwtKeys(jwks)] }, td.slice('spiffe://'.length));
    if (format === 'pem') io.out(bundle.toPem().replace(/\n$/, ''));
    else if (format === 'jwks') io.out(JSON.stringify(bundle.toJwks(), null, 2));
    else io.out(JSON.stringify(bundle.toDocument(), null, 2));
    return 0;
  },
};

/** The bundle from a server's public endpoints (no credential: SPIFFE Trust Domain and Bundle §5.2). */
async function fromServer(server: string, format: string): Promise<string> {
  const base = server.replace(/\/+$/, '');
  const path = format === 'pem' ? '/bundle.pem' : format === 'jwks' ? '/keys' : '/bundle';
  let res: Response;
  let text: string;
  try {
    res = await fetch(`${base}${path}`, { signal: AbortSignal.timeout(10_000) });
    text = await res.text();
  } catch (e) {
    throw new CliError(`cannot reach writ at ${base} (${(e as { cause?: { code?: string } }).cause?.code ?? (e as Error).message}); is \`writ up\` running?`, 'ERR_CLI_UNREACHABLE');
  }
  if (res.status !== 200) throw new CliError(`the server answered ${res.status} for ${path}`, `HTTP_${res.status}`);
  if (format === 'pem') return text.replace(/\n$/, '');
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    throw new CliError(`the server's ${path} is not JSON`, 'ERR_CLI_RESPONSE');
  }
}

/** A SPIFFE bundle key for one X.509 authority (SPIFFE Trust Domain and Bundle §4.2.1). */
function x509Key(der: Uint8Array): Record<string, unknown> {
  const cert = new X509Certificate(der);
  return { ...cert.publicKey.export({ format: 'jwk' }), use: 'x509-svid', x5c: [Buffer.from(der).toString('base64')] };
}

function jwtKeys(jwks: unknown): Record<string, unknown>[] {
  const keys = (jwks as { keys?: unknown }).keys;
  if (!Array.isArray(keys)) throw new CliError('the Workload API sent a JWT bundle that is not a JWK Set', 'ERR_CLI_RESPONSE');
  return keys.map((k) => ({ ...(k as Record<string, unknown>), use: 'jwt-svid' }));
}

/** The workload-side commands. */
export const WORKLOAD_COMMANDS: readonly Command[] = [svidFetch, svidJwt, bundleShow];
