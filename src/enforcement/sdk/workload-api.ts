/**
 * A SPIFFE Workload API client for Node apps (SPIFFE Workload API:
 * `FetchX509SVID` stream, `FetchJWTSVID`; every call carries the
 * `workload.spiffe.io: true` metadata), over the agent's socket
 * (`SPIFFE_ENDPOINT_SOCKET`), and an mTLS `https.Agent` built from the
 * current SVID. `X509SvidWatcher` keeps the SVID current as the agent
 * rotates it.
 */
import { X509Certificate, createPrivateKey } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { Agent as HttpsAgent } from 'node:https';
import type { AgentOptions } from 'node:https';
import type { PeerCertificate } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { SPIFFE_ENDPOINT_SOCKET, WORKLOAD_API_HEADER, certificatesToPem, grpcTargetOf, loadWorkloadApiDefinition, parseEndpointSocket } from '../../identity/index.ts';
import { enforcementErrors } from '../errors.ts';

type Msg = Record<string, unknown>;

/** An X.509-SVID as the app holds it. */
export interface X509SvidHandle {
  readonly spiffeId: string;
  /** DER, leaf first. */
  readonly chain: readonly Uint8Array[];
  readonly privateKey: KeyObject;
  /** DER CA certificates of the trust domain. */
  readonly bundle: readonly Uint8Array[];
  readonly expiresAt: Date;
}

/** A JWT-SVID as fetched. */
export interface JwtSvidHandle {
  readonly spiffeId: string;
  readonly token: string;
}

/** Split a field of concatenated DER structures (Workload API X.509 fields). */
export function splitDerSequence(buf: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  let i = 0;
  const bad = () => enforcementErrors.error('ERR_ENFORCE_WORKLOAD_API', 'the Workload API sent a malformed certificate list');
  while (i < buf.length) {
    if (buf[i] !== 0x30 || i + 2 > buf.length) throw bad();
    const first = buf[i + 1] ?? 0;
    let len = first;
    let head = 2;
    if ((first & 0x80) !== 0) {
      const n = first & 0x7f;
      if (n === 0 || n > 4 || i + 2 + n > buf.length) throw bad();
      len = 0;
      for (let k = 0; k < n; k++) len = len * 256 + (buf[i + 2 + k] ?? 0);
      head = 2 + n;
    }
    const end = i + head + len;
    if (end > buf.length) throw bad();
    out.push(buf.subarray(i, end));
    i = end;
  }
  return out;
}

function bytes(v: unknown): Uint8Array {
  return v instanceof Uint8Array ? v : new Uint8Array();
}

function svidOf(m: Msg): X509SvidHandle {
  const chain = splitDerSequence(bytes(m.x509_svid));
  const leaf = chain[0];
  if (leaf === undefined) throw enforcementErrors.error('ERR_ENFORCE_WORKLOAD_API', 'the Workload API sent an empty certificate chain');
  const privateKey = createPrivateKey({ key: Buffer.from(bytes(m.x509_svid_key)), format: 'der', type: 'pkcs8' });
  const cert = new X509Certificate(leaf);
  if (!cert.checkPrivateKey(privateKey)) throw enforcementErrors.error('ERR_ENFORCE_WORKLOAD_API', 'the Workload API sent a key that does not match the certificate');
  return { spiffeId: String(m.spiffe_id), chain, privateKey, bundle: splitDerSequence(bytes(m.bundle)), expiresAt: new Date(cert.validTo) };
}

function pickSvid(m: Msg, spiffeId: string | undefined): X509SvidHandle {
  const svids = Array.isArray(m.svids) ? (m.svids as Msg[]) : [];
  const chosen = spiffeId === undefined ? svids[0] : svids.find((s) => s.spiffe_id === spiffeId);
  if (chosen === undefined) throw enforcementErrors.error('ERR_ENFORCE_WORKLOAD_API', spiffeId === undefined ? 'the Workload API sent no X.509-SVID' : `the Workload API sent no X.509-SVID for \`${spiffeId}\``);
  return svidOf(chosen);
}

/** Options of {@link WorkloadApiClient}. */
export interface WorkloadApiClientOptions {
  /** Socket: a path, `unix:///path` or `tcp://IP:PORT`; default `SPIFFE_ENDPOINT_SOCKET` from the environment. */
  readonly socket?: string;
  /** Deadline of unary calls and of the first stream message (default 10 s). */
  readonly timeoutMs?: number;
}

/**
 * The Workload API over the agent's socket.
 *
 * @example
 * const wl = new WorkloadApiClient({ socket: '/run/writ/agent.sock' });
 * const svid = await wl.fetchX509Svid();
 * const { token } = await wl.fetchJwtSvid(['orders']);
 * wl.close();
 */
export class WorkloadApiClient {
  readonly #client: grpc.Client;
  readonly #timeoutMs: number;
  readonly #methods: Record<string, grpc.MethodDefinition<Msg, Msg>>;

  constructor(options: WorkloadApiClientOptions = {}) {
    const raw = options.socket ?? process.env[SPIFFE_ENDPOINT_SOCKET];
    if (raw === undefined || raw === '') throw new TypeError(`no Workload API socket: pass \`socket\` or set ${SPIFFE_ENDPOINT_SOCKET}`);
    const address = parseEndpointSocket(raw.startsWith('/') ? `unix://${raw}` : raw);
    this.#client = new grpc.Client(grpcTargetOf(address), grpc.credentials.createInsecure());
    this.#timeoutMs = options.timeoutMs ?? 10_000;
    this.#methods = loadWorkloadApiDefinition().SpiffeWorkloadAPI as unknown as Record<string, grpc.MethodDefinition<Msg, Msg>>;
  }

  #method(name: string): grpc.MethodDefinition<Msg, Msg> {
    const m = this.#methods[name];
    if (m === undefined) throw new TypeError(`workloadapi.proto has no method ${name}`);
    return m;
  }

  #md(): grpc.Metadata {
    const md = new grpc.Metadata();
    md.set(WORKLOAD_API_HEADER, 'true');
    return md;
  }

  /** The current X.509-SVID (the first, or the one for `spiffeId`). */
  fetchX509Svid(spiffeId?: string): Promise<X509SvidHandle> {
    const m = this.#method('FetchX509SVID');
    return new Promise((ok, fail) => {
      const s = this.#client.makeServerStreamRequest(m.path, m.requestSerialize, m.responseDeserialize, {}, this.#md(), { deadline: Date.now() + this.#timeoutMs });
      s.once('data', (d: Msg) => {
        s.removeAllListeners('error');
        s.on('error', () => undefined);
        s.cancel();
        try {
          ok(pickSvid(d, spiffeId));
        } catch (e) {
          fail(e);
        }
      });
      s.once('error', (err: Error) => fail(enforcementErrors.error('ERR_ENFORCE_WORKLOAD_API', `Workload API call failed: ${(err as Partial<grpc.ServiceError>).details ?? err.message}`, { cause: err })));
    });
  }

  /** A JWT-SVID for `audience`. */
  fetchJwtSvid(audience: readonly string[], spiffeId?: string): Promise<JwtSvidHandle> {
    if (audience.length === 0) throw new TypeError('audience must not be empty');
    const m = this.#method('FetchJWTSVID');
    return new Promise((ok, fail) => {
      this.#client.makeUnaryRequest(m.path, m.requestSerialize, m.responseDeserialize, { audience: [...audience], ...(spiffeId === undefined ? {} : { spiffe_id: spiffeId }) }, this.#md(), { deadline: Date.now() + this.#timeoutMs }, (err, res) => {
        if (err !== null) {
          fail(enforcementErrors.error('ERR_ENFORCE_WORKLOAD_API', `Workload API call failed: ${err.details}`, { cause: err }));
          return;
        }
        const svids = Array.isArray(res?.svids) ? (res.svids as Msg[]) : [];
        const first = svids[0];
        if (first === undefined || typeof first.svid !== 'string') {
          fail(enforcementErrors.error('ERR_ENFORCE_WORKLOAD_API', 'the Workload API sent no JWT-SVID'));
          return;
        }
        ok({ spiffeId: String(first.spiffe_id), token: first.svid });
      });
    });
  }

  /**
   * Watch the X.509-SVID: `onUpdate` runs with the first SVID and again on
   * every rotation; `onError` when the stream fails (call `watchX509Svid`
   * again to resume). Returns the function that stops watching.
   */
  watchX509Svid(onUpdate: (svid: X509SvidHandle) => void, onError: (err: Error) => void, spiffeId?: string): () => void {
    const m = this.#method('FetchX509SVID');
    const s = this.#client.makeServerStreamRequest(m.path, m.requestSerialize, m.responseDeserialize, {}, this.#md());
    let stopped = false;
    s.on('data', (d: Msg) => {
      try {
        onUpdate(pickSvid(d, spiffeId));
      } catch (e) {
        onError(e as Error);
      }
    });
    s.on('error', (err: Error) => {
      if (!stopped) onError(enforcementErrors.error('ERR_ENFORCE_WORKLOAD_API', `Workload API stream failed: ${(err as Partial<grpc.ServiceError>).details ?? err.message}`, { cause: err }));
    });
    return () => {
      stopped = true;
      s.cancel();
    };
  }

  close(): void {
    this.#client.close();
  }
}

/**
 * Check that a TLS server presented an X.509-SVID with the expected SPIFFE ID
 * (SVIDs name workloads by URI SAN, so hostname checks do not apply).
 *
 * @example
 * new https.Agent({ ...tls, checkServerIdentity: spiffeIdVerifier('spiffe://writ.local/orders') });
 */
export function spiffeIdVerifier(expected: string | ((spiffeId: string) => boolean)): (host: string, cert: PeerCertificate) => Error | undefined {
  return (_host, cert) => {
    const uris = (cert.subjectaltname ?? '').split(', ').filter((s) => s.startsWith('URI:')).map((s) => s.slice(4));
    if (uris.length !== 1) return new Error('server certificate is not an X.509-SVID (it must have exactly one URI SAN)');
    const id = uris[0] ?? '';
    const ok = typeof expected === 'string' ? id === expected : expected(id);
    return ok ? undefined : new Error(`server SPIFFE ID \`${id}\` is not the expected one`);
  };
}

/**
 * An mTLS `https.Agent` presenting `svid` and trusting its bundle; with
 * `serverId`, only a server with that SPIFFE ID (or accepted by the function)
 * is trusted. Build a new agent after each rotation (see {@link X509SvidWatcher}).
 *
 * @example
 * const agent = mtlsAgent(await wl.fetchX509Svid(), { serverId: 'spiffe://writ.local/orders' });
 * https.get('https://orders.internal/', { agent });
 */
export function mtlsAgent(svid: X509SvidHandle, options: { serverId?: string | ((spiffeId: string) => boolean); agent?: AgentOptions } = {}): HttpsAgent {
  return new HttpsAgent({
    ...(options.agent ?? {}),
    cert: certificatesToPem(svid.chain),
    key: svid.privateKey.export({ format: 'pem', type: 'pkcs8' }),
    ca: certificatesToPem(svid.bundle),
    ...(options.serverId === undefined ? {} : { checkServerIdentity: spiffeIdVerifier(options.serverId) }),
  });
}

/**
 * Keeps the current X.509-SVID from a watch and hands out mTLS agents built
 * from it; the agent is rebuilt when the SVID rotates.
 *
 * @example
 * const w = await X509SvidWatcher.start(new WorkloadApiClient());
 * https.get(url, { agent: w.agent({ serverId: 'spiffe://writ.local/orders' }) });
 * w.stop();
 */
export class X509SvidWatcher {
  #svid: X509SvidHandle;
  #agents = new Map<string, HttpsAgent>();
  #stop: () => void = () => undefined;
  #lastError: Error | undefined;
  readonly #listeners = new Set<(svid: X509SvidHandle) => void>();

  private constructor(first: X509SvidHandle) {
    this.#svid = first;
  }

  /** Start watching; resolves with the first SVID in place. */
  static start(client: WorkloadApiClient, spiffeId?: string): Promise<X509SvidWatcher> {
    return new Promise((ok, fail) => {
      let w: X509SvidWatcher | undefined;
      const stop = client.watchX509Svid(
        (svid) => {
          if (w === undefined) {
            w = new X509SvidWatcher(svid);
            w.#stop = stop;
            ok(w);
            return;
          }
          w.#rotate(svid);
        },
        (err) => {
          if (w === undefined) fail(err);
          else w.#lastError = err;
        },
        spiffeId,
      );
    });
  }

  /** The current SVID. */
  get current(): X509SvidHandle {
    return this.#svid;
  }

  /** The last stream error since the watch started, if any. */
  get lastError(): Error | undefined {
    return this.#lastError;
  }

  /** Be told on each rotation; returns the unsubscribe function. */
  onRotate(listener: (svid: X509SvidHandle) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** An mTLS agent from the current SVID (one per `serverId`, rebuilt on rotation). */
  agent(options: { serverId?: string } = {}): HttpsAgent {
    const key = options.serverId ?? '';
    let a = this.#agents.get(key);
    if (a === undefined) {
      a = mtlsAgent(this.#svid, options);
      this.#agents.set(key, a);
    }
    return a;
  }

  #rotate(svid: X509SvidHandle): void {
    this.#svid = svid;
    for (const a of this.#agents.values()) a.destroy();
    this.#agents = new Map();
    for (const l of this.#listeners) l(svid);
  }

  stop(): void {
    this.#stop();
    for (const a of this.#agents.values()) a.destroy();
    this.#agents.clear();
  }
}
