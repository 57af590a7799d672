/**
 * The SPIFFE Workload API served over a Unix socket (SPIFFE Workload Endpoint
 * and SPIFFE Workload API specifications; schema in proto/workloadapi.proto).
 *
 * - Every request must carry the metadata `workload.spiffe.io: true`, else
 *   InvalidArgument (Workload Endpoint, "Transport": security header).
 * - The caller is attested from kernel-verified peer credentials of the
 *   connection (peer-credentials.ts), never from anything it sends; a caller
 *   entitled to nothing gets PermissionDenied (clients retry with backoff).
 * - Streams send the full state at once and again after every change the
 *   source reports (Workload API, "Stream responses").
 *
 * The agent owns the listening socket and hands each accepted connection to
 * grpc-js, so that each call can be tied to the connection it arrived on.
 */
import { chmod, lstat, unlink } from 'node:fs/promises';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { SpiffeId, WritError } from '../../kernel/index.ts';
import { PeerAttestor } from './peer-credentials.ts';
import { selectorsFromPeer } from './selectors.ts';
import type { WorkloadCaller, WorkloadIdentitySource, X509BundleMap } from './workload-identity-source.ts';

/** Path of the Workload API schema kept in the repository. */
export const WORKLOAD_API_PROTO_PATH = fileURLToPath(new URL('../../../proto/workloadapi.proto', import.meta.url));

/** The security header every Workload API request carries (value `true`, case-sensitive). */
export const WORKLOAD_API_HEADER = 'workload.spiffe.io';

/** Options of {@link WorkloadApiServer}. */
export interface WorkloadApiServerOptions {
  /** Absolute path of the Unix socket to listen on. */
  readonly socketPath: string;
  /** Where SVIDs and bundles come from. */
  readonly source: WorkloadIdentitySource;
  /** Peer attestor; one is made with default options when omitted. */
  readonly attestor?: PeerAttestor;
  /** File mode of the socket. Default 0o777: any local process may ask, attestation decides what it gets. */
  readonly socketMode?: number;
  /** Where unexpected failures are reported (never key material). */
  readonly log?: { warn(fields: Record<string, unknown>, message: string): void };
}

/** A listening socket path `ss` can filter on and print unambiguously. */
const PLAIN_PATH = /^\/[A-Za-z0-9._\-/+@,=:~]+$/;
const CONNECTION_LABEL = 'writ-agent-connection-';

interface Connection {
  readonly peerInode: Promise<number>;
}

/**
 * Load the Workload API schema with options that keep field names as written.
 *
 * @example
 * const def = loadWorkloadApiDefinition();
 * const Client = grpc.makeGenericClientConstructor(def.SpiffeWorkloadAPI as grpc.ServiceDefinition, 'SpiffeWorkloadAPI');
 */
export function loadWorkloadApiDefinition(): protoLoader.PackageDefinition {
  return protoLoader.loadSync(WORKLOAD_API_PROTO_PATH, { keepCase: true, longs: String, enums: String, defaults: false, oneofs: true });
}

/**
 * The agent's Workload API server.
 *
 * @example
 * const server = new WorkloadApiServer({ socketPath: '/run/writ/agent.sock', source });
 * await server.start();
 * // … SPIFFE_ENDPOINT_SOCKET=unix:///run/writ/agent.sock for workloads …
 * await server.stop();
 */
export class WorkloadApiServer {
  readonly #socketPath: string;
  readonly #source: WorkloadIdentitySource;
  readonly #attestor: PeerAttestor;
  readonly #socketMode: number;
  readonly #log: WorkloadApiServerOptions['log'];
  readonly #grpc = new grpc.Server();
  readonly #connections = new Map<string, Connection>();
  readonly #sockets = new Set<net.Socket>();
  #listener: net.Server | undefined;
  #injector: ReturnType<grpc.Server['createConnectionInjector']> | undefined;
  #nextId = 1;

  constructor(options: WorkloadApiServerOptions) {
    if (!PLAIN_PATH.test(options.socketPath)) {
      throw new TypeError('socketPath must be an absolute path of letters, digits and . _ - / + @ , = : ~');
    }
    this.#socketPath = options.socketPath;
    this.#source = options.source;
    this.#attestor = options.attestor ?? new PeerAttestor();
    this.#socketMode = options.socketMode ?? 0o777;
    this.#log = options.log;
    const def = loadWorkloadApiDefinition();
    const service = def.SpiffeWorkloadAPI;
    if (service === undefined || !isServiceDefinition(service)) throw new TypeError('workloadapi.proto has no SpiffeWorkloadAPI service');
    this.#grpc.addService(service, {
      FetchX509SVID: (call: grpc.ServerWritableStream<unknown, unknown>) => this.#stream(call, (c) => this.#x509SvidResponse(c)),
      FetchX509Bundles: (call: grpc.ServerWritableStream<unknown, unknown>) => this.#stream(call, (c) => this.#x509BundlesResponse(c)),
      FetchJWTBundles: (call: grpc.ServerWritableStream<unknown, unknown>) => this.#stream(call, (c) => this.#jwtBundlesResponse(c)),
      FetchJWTSVID: (call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) => {
        this.#unary(call, cb, (c) => this.#jwtSvidResponse(c, call.request));
      },
      ValidateJWTSVID: (call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) => {
        this.#unary(call, cb, (c) => this.#validateResponse(c, call.request));
      },
    });
  }

  /** Listen on the socket (a stale socket file at the path is replaced). */
  async start(): Promise<void> {
    if (this.#listener !== undefined) throw new TypeError('the server is already started');
    await removeStaleSocket(this.#socketPath);
    this.#injector = this.#grpc.createConnectionInjector(grpc.ServerCredentials.createInsecure());
    const listener = net.createServer((socket) => this.#accept(socket));
    this.#listener = listener;
    await new Promise<void>((resolve, reject) => {
      listener.once('error', reject);
      listener.listen(this.#socketPath, () => {
        listener.off('error', reject);
        resolve();
      });
    });
    await chmod(this.#socketPath, this.#socketMode);
  }

  /** Stop accepting, end open calls and remove the socket file. */
  async stop(): Promise<void> {
    const listener = this.#listener;
    if (listener === undefined) return;
    this.#listener = undefined;
    const closed = new Promise<void>((resolve) => listener.close(() => resolve()));
    this.#injector?.destroy();
    this.#grpc.forceShutdown();
    for (const s of this.#sockets) s.destroy();
    await closed;
    await unlink(this.#socketPath).catch(() => undefined);
  }

  /** Number of open connections (for status reporting). */
  get connectionCount(): number {
    return this.#connections.size;
  }

  #accept(socket: net.Socket): void {
    socket.on('error', () => undefined);
    // Our end's inode is read now, synchronously, while the descriptor is surely this socket.
    let serverInode: number;
    try {
      serverInode = this.#attestor.serverSocketInode(socket);
    } catch (err) {
      this.#log?.warn({ err }, 'workload api connection refused: our socket could not be identified');
      socket.destroy();
      return;
    }
    const id = `${CONNECTION_LABEL}${this.#nextId++}`;
    const peerInode = this.#attestor.peerSocketInode(serverInode, this.#socketPath);
    peerInode.catch(() => undefined); // reported when a call awaits it
    this.#connections.set(id, { peerInode });
    this.#sockets.add(socket);
    socket.once('close', () => {
      this.#connections.delete(id);
      this.#sockets.delete(socket);
    });
    // NOTE: grpc-js reports a call's peer as its socket's remoteAddress, which a
    // Unix socket does not have. The agent labels the connection itself; the
    // label never comes from the caller.
    Object.defineProperty(socket, 'remoteAddress', { value: id, enumerable: true });
    const injector = this.#injector;
    if (injector === undefined) {
      socket.destroy();
      return;
    }
    injector.injectConnection(socket);
  }

  /** Header rule first, then kernel-verified attestation of the call's connection. */
  async #attest(call: { metadata: grpc.Metadata; getPeer(): string }): Promise<WorkloadCaller> {
    const header = call.metadata.get(WORKLOAD_API_HEADER);
    if (header.length !== 1 || header[0] !== 'true') {
      throw status(grpc.status.INVALID_ARGUMENT, 'security header missing from request');
    }
    const conn = this.#connections.get(call.getPeer());
    if (conn === undefined) throw status(grpc.status.PERMISSION_DENIED, 'caller could not be attested: unknown connection');
    try {
      const credentials = await this.#attestor.attestPeer(await conn.peerInode);
      return { credentials, selectors: selectorsFromPeer(credentials) };
    } catch (err) {
      if (err instanceof WritError && err.expose) {
        throw status(grpc.status.PERMISSION_DENIED, `caller could not be attested: ${err.message}`, err);
      }
      throw status(grpc.status.UNAVAILABLE, 'caller attestation is unavailable', err);
    }
  }

  #unary(call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>, build: (c: WorkloadCaller) => Promise<unknown>): void {
    this.#attest(call)
      .then(build)
      .then(
        (response) => cb(null, response),
        (err: unknown) => cb(this.#toStatus(err)),
      );
  }

  /** Full state at once, then again on every change the source reports. */
  #stream(call: grpc.ServerWritableStream<unknown, unknown>, build: (c: WorkloadCaller) => Promise<unknown>): void {
    let done = false;
    let running = false;
    let again = false;
    let last: string | undefined;
    let unsubscribe: () => void = () => undefined;
    const finish = (): void => {
      done = true;
      unsubscribe();
    };
    const push = async (): Promise<void> => {
      if (running) {
        again = true;
        return;
      }
      running = true;
      try {
        do {
          again = false;
          // Re-attest on every push: the process behind the connection may have changed.
          const response = await this.#attest(call).then(build);
          if (done) return;
          // A change reported while the previous answer was being built may already be in it:
          // never send the same state twice in a row.
          const fingerprint = JSON.stringify(response);
          if (fingerprint === last) continue;
          last = fingerprint;
          call.write(response);
        } while (again && !done);
      } catch (err) {
        if (!done) {
          finish();
          call.emit('error', this.#toStatus(err));
        }
      } finally {
        running = false;
      }
    };
    call.on('cancelled', finish);
    call.on('close', finish);
    call.on('finish', finish);
    unsubscribe = this.#source.subscribe(() => {
      if (!done) void push();
    });
    void push();
  }

  async #x509SvidResponse(caller: WorkloadCaller): Promise<unknown> {
    const state = await this.#source.x509Svids(caller);
    if (state === null || state.svids.length === 0) throw noIdentity();
    return {
      svids: state.svids.map((s) => ({
        spiffe_id: s.spiffeId,
        x509_svid: concat(s.certChainDer),
        x509_svid_key: Buffer.from(s.privateKeyPkcs8Der),
        bundle: concat(s.bundleDer),
        hint: s.hint ?? '',
      })),
      crl: (state.crl ?? []).map((c) => Buffer.from(c)),
      federated_bundles: bundleMap(state.federatedBundles),
    };
  }

  async #x509BundlesResponse(caller: WorkloadCaller): Promise<unknown> {
    const state = await this.#source.x509Bundles(caller);
    if (state === null || state.bundles.size === 0) throw noIdentity();
    return { crl: (state.crl ?? []).map((c) => Buffer.from(c)), bundles: bundleMap(state.bundles) };
  }

  async #jwtBundlesResponse(caller: WorkloadCaller): Promise<unknown> {
    const bundles = await this.#source.jwtBundles(caller);
    if (bundles === null || bundles.size === 0) throw noIdentity();
    const out: Record<string, Buffer> = {};
    for (const [td, jwks] of bundles) out[td] = Buffer.from(jwks);
    return { bundles: out };
  }

  async #jwtSvidResponse(caller: WorkloadCaller, request: unknown): Promise<unknown> {
    const audience = stringList(field(request, 'audience'));
    // JWT-SVID: `aud` is required, so the request must name at least one audience.
    if (audience === undefined || audience.length === 0 || audience.some((a) => a === '')) {
      throw status(grpc.status.INVALID_ARGUMENT, 'audience must be specified');
    }
    const requested = field(request, 'spiffe_id');
    let spiffeId: string | undefined;
    if (typeof requested === 'string' && requested !== '') {
      try {
        spiffeId = SpiffeId.parse(requested).toString();
      } catch (err) {
        throw status(grpc.status.INVALID_ARGUMENT, err instanceof WritError ? err.message : 'invalid spiffe_id', err);
      }
    }
    const svids = await this.#source.jwtSvids(caller, audience, spiffeId);
    if (svids === null || svids.length === 0) throw noIdentity();
    return { svids: svids.map((s) => ({ spiffe_id: s.spiffeId, svid: s.token, hint: s.hint ?? '' })) };
  }

  async #validateResponse(caller: WorkloadCaller, request: unknown): Promise<unknown> {
    const audience = field(request, 'audience');
    const svid = field(request, 'svid');
    if (typeof audience !== 'string' || audience === '') throw status(grpc.status.INVALID_ARGUMENT, 'audience must be specified');
    if (typeof svid !== 'string' || svid === '') throw status(grpc.status.INVALID_ARGUMENT, 'svid must be specified');
    let validated;
    try {
      validated = await this.#source.validateJwtSvid(caller, svid, audience);
    } catch (err) {
      if (err instanceof WritError && err.expose) throw status(grpc.status.INVALID_ARGUMENT, err.message, err);
      throw err;
    }
    if (validated === null) throw noIdentity();
    return { spiffe_id: validated.spiffeId, claims: toStruct(validated.claims) };
  }

  #toStatus(err: unknown): Partial<grpc.StatusObject> {
    if (err instanceof GrpcStatusError) return { code: err.code, details: err.details };
    // An outage behind the source: clients retry UNAVAILABLE with backoff.
    if (err instanceof WritError && err.status === 503) return { code: grpc.status.UNAVAILABLE, details: err.message };
    if (err instanceof WritError && err.status === 400) return { code: grpc.status.INVALID_ARGUMENT, details: err.message };
    this.#log?.warn({ err }, 'workload api call failed');
    return { code: grpc.status.INTERNAL, details: 'internal error' };
  }
}

/** A gRPC status to end a call with; `cause` stays on the server. */
class GrpcStatusError extends Error {
  readonly code: grpc.status;
  readonly details: string;
  constructor(code: grpc.status, details: string, cause?: unknown) {
    super(details, cause === undefined ? undefined : { cause });
    this.code = code;
    this.details = details;
  }
}

function status(code: grpc.status, details: string, cause?: unknown): GrpcStatusError {
  return new GrpcStatusError(code, details, cause);
}

function noIdentity(): GrpcStatusError {
  return status(grpc.status.PERMISSION_DENIED, 'no identity issued');
}

function isServiceDefinition(v: unknown): v is grpc.ServiceDefinition {
  return typeof v === 'object' && v !== null && 'FetchX509SVID' in v && 'ValidateJWTSVID' in v;
}

function field(request: unknown, name: string): unknown {
  if (typeof request !== 'object' || request === null) return undefined;
  return (request as Record<string, unknown>)[name];
}

function stringList(v: unknown): string[] | undefined {
  if (v === undefined) return [];
  if (!Array.isArray(v)) return undefined;
  const out: string[] = [];
  for (const x of v) {
    if (typeof x !== 'string') return undefined;
    out.push(x);
  }
  return out;
}

function concat(parts: readonly Uint8Array[]): Buffer {
  return Buffer.concat(parts.map((p) => Buffer.from(p.buffer, p.byteOffset, p.byteLength)));
}

function bundleMap(bundles: X509BundleMap): Record<string, Buffer> {
  const out: Record<string, Buffer> = {};
  for (const [td, certs] of bundles) out[td] = concat(certs);
  return out;
}

type StructValue =
  | { nullValue: 'NULL_VALUE' }
  | { numberValue: number }
  | { stringValue: string }
  | { boolValue: boolean }
  | { listValue: { values: StructValue[] } }
  | { structValue: { fields: Record<string, StructValue> } };

/**
 * JSON claims as a google.protobuf.Struct message object.
 *
 * @internal exported for tests
 */
export function toStruct(obj: Readonly<Record<string, unknown>>): { fields: Record<string, StructValue> } {
  const fields: Record<string, StructValue> = {};
  for (const [k, v] of Object.entries(obj)) fields[k] = toValue(v);
  return { fields };
}

function toValue(v: unknown): StructValue {
  if (v === null || v === undefined) return { nullValue: 'NULL_VALUE' };
  if (typeof v === 'number') return { numberValue: v };
  if (typeof v === 'string') return { stringValue: v };
  if (typeof v === 'boolean') return { boolValue: v };
  if (Array.isArray(v)) return { listValue: { values: v.map(toValue) } };
  if (typeof v === 'object') return { structValue: toStruct(v as Record<string, unknown>) };
  return { stringValue: String(v) };
}

async function removeStaleSocket(path: string): Promise<void> {
  let st;
  try {
    st = await lstat(path);
  } catch {
    return;
  }
  if (!st.isSocket()) throw new TypeError(`socketPath \`${path}\` exists and is not a socket`);
  await unlink(path);
}
