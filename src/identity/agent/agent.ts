/**
 * The node agent's core: attests the node once, keeps and renews its node
 * credential, syncs the node's registration entries, keeps an SVID cache per
 * entry and serves it to the Workload API as a {@link WorkloadIdentitySource}.
 *
 * - Keys: every private key (node and workload) is generated here; the server
 *   only ever receives public keys (node-api.ts).
 * - X.509-SVIDs are issued eagerly for every entry and rotated at half-life
 *   with a new key each time; JWT-SVIDs are issued on demand and cached per
 *   (entry, audience) until half-life; the bundle is refreshed at its
 *   `spiffe_refresh_hint` (SPIFFE Trust Domain and Bundle §4.1.2).
 * - Outage: while the server is unreachable, cached SVIDs are served until
 *   they expire, and the status says so. A refused node credential (node
 *   evicted) stops every entry; an entry missing from a sync stops that entry.
 * - Revocation: the agent follows the server's node revocation stream; a
 *   `subject-revoked` event for a workload it serves drops that workload's
 *   cached X.509 and JWT SVIDs at once (open Workload API streams are told)
 *   and they are asked for again, so the server's policy check decides. An
 *   SVID refused by policy (`ERR_IDENTITY_SVID_FORBIDDEN`) drops the entry's
 *   cached SVIDs too; it is asked for again at each sync until policy allows.
 *
 * The agent is driven by {@link WorkloadAgent.tick}, which does whatever is
 * due by the injected clock; {@link WorkloadAgent.start} runs ticks on a timer.
 */
import { createPrivateKey, createPublicKey, generateKeyPair, X509Certificate as NodeX509Certificate, type KeyObject } from 'node:crypto';
import { promisify } from 'node:util';
import { SpiffeId, WritError } from '../../kernel/index.ts';
import type { Clock } from '../../kernel/index.ts';
import { TrustBundle } from '../bundle.ts';
import { validateJwtSvid } from '../jwt-svid.ts';
import { agentErrors } from './errors.ts';
import type { AgentEntry, AgentRevocation, IssuedNodeSvid, NodeApi, NodeAttestationEvidence, AgentNodeCredential } from './node-api.ts';
import { matchesSelectors } from './selectors.ts';
import type {
  JwtSvidMaterial,
  ValidatedJwtSvid,
  WorkloadCaller,
  WorkloadIdentitySource,
  X509BundlesState,
  X509SvidMaterial,
  X509SvidState,
} from './workload-identity-source.ts';

const generateKeyPairAsync = promisify(generateKeyPair);

/** Where the agent keeps its node credential across restarts (a join token is single-use). */
export interface AgentStateStore {
  load(): Promise<AgentNodeCredential | undefined>;
  /** Save the credential, or forget it (`undefined`) when the server refused it. */
  save(credential: AgentNodeCredential | undefined): Promise<void>;
}

/** Where the agent reports what it does (never key material or tokens). */
export interface AgentLog {
  info(fields: Record<string, unknown>, message: string): void;
  warn(fields: Record<string, unknown>, message: string): void;
}

/** Options of {@link WorkloadAgent}. */
export interface WorkloadAgentOptions {
  readonly nodeApi: NodeApi;
  /** The attestation evidence, asked for each time the node attests (an OIDC token file is re-read). */
  readonly evidence: () => Promise<NodeAttestationEvidence>;
  readonly clock: Clock;
  readonly stateStore?: AgentStateStore;
  /** How often entries are synced. Default 5000 ms. */
  readonly syncIntervalMs?: number;
  /** How soon a failed step is tried again. Default 1000 ms. */
  readonly retryIntervalMs?: number;
  /** Bundle refresh when the bundle has no refresh hint. Default 300 s. */
  readonly defaultRefreshHintSeconds?: number;
  readonly log?: AgentLog;
}

/** The agent's state, for `writ agent status`. Times are ISO 8601. */
export interface AgentStatus {
  /**
   * `starting` before the first sync; `ready`; `degraded` while the server is
   * unreachable (cached SVIDs are served until they expire); `refused` when
   * the server refused the node (nothing is served).
   */
  readonly state: 'starting' | 'ready' | 'degraded' | 'refused';
  readonly server: {
    readonly reachable: boolean;
    readonly lastSyncAt?: string;
    readonly outageSince?: string;
    readonly lastError?: { readonly code: string; readonly message: string };
  };
  /** Why the server refused this node (eviction, a used join token …), kept while re-attestation keeps failing. */
  readonly refusal?: { readonly code: string; readonly message: string; readonly at: string };
  readonly node?: { readonly spiffeId: string; readonly expiresAt: string; readonly renewAt: string };
  readonly bundle?: { readonly trustDomain: string; readonly sequence?: number; readonly refreshAt: string };
  readonly entries: readonly {
    readonly id: string;
    readonly spiffeId: string;
    readonly selectors: readonly string[];
    readonly x509?: { readonly serial: string; readonly expiresAt: string; readonly renewAt: string };
    /** Why the server refuses this workload's SVIDs now (policy), until an issuance succeeds. */
    readonly refusal?: { readonly code: string; readonly message: string; readonly at: string };
    /** The last revocation heard for this workload (its cached SVIDs were dropped then). */
    readonly revoked?: { readonly reason: string; readonly at: string };
  }[];
  /** The server's revocation stream for this node's workloads. */
  readonly revocations: {
    readonly following: boolean;
    readonly connected: boolean;
    readonly cursor?: number;
    readonly lastHeardAt?: string;
    readonly lastError?: { readonly code: string; readonly message: string };
  };
  /** JWT-SVIDs in the cache. */
  readonly jwtSvidsCached: number;
  /** One line for people. */
  readonly message: string;
}

interface CachedX509 {
  readonly spiffeId: string;
  readonly chain: readonly Uint8Array[];
  readonly keyPkcs8: Uint8Array;
  readonly serial: string;
  readonly expiresAtMs: number;
  readonly renewAtMs: number;
  readonly revision: string;
}

interface CachedJwt {
  readonly entryId: string;
  readonly spiffeId: string;
  readonly token: string;
  readonly expiresAtMs: number;
  readonly renewAtMs: number;
}

interface Node {
  readonly credential: AgentNodeCredential;
  readonly renewAtMs: number;
}

const DEFAULT_SYNC_MS = 5_000;
const DEFAULT_RETRY_MS = 1_000;
const MIN_WAKE_MS = 10;
const MAX_ATTEST_BACKOFF_MS = 5 * 60_000;

/**
 * Half of the life left when the SVID arrived: the server backdates
 * `notBefore`, so half of the nominal validity could already be gone.
 */
function halfLife(receivedAtMs: number, notBeforeMs: number, notAfterMs: number): number {
  const start = Math.max(receivedAtMs, notBeforeMs);
  return start + Math.max(0, notAfterMs - start) / 2;
}

function revisionOf(e: AgentEntry): string {
  return JSON.stringify([e.revision ?? '', e.spiffeId, [...e.selectors].sort(), [...(e.dnsNames ?? [])].sort()]);
}

function jwtKey(entryId: string, audience: readonly string[]): string {
  return JSON.stringify([entryId, [...new Set(audience)].sort()]);
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

/** The failure class the agent acts on (see node-api.ts). */
function classify(err: unknown): 'outage' | 'refused' | 'gone' | 'rejected' | 'forbidden' {
  if (err instanceof WritError) {
    // Policy refuses this workload's SVIDs (not the node); the PDP being down is not an outage of the server.
    if (err.code === 'ERR_IDENTITY_SVID_FORBIDDEN') return 'forbidden';
    if (err.code === 'ERR_IDENTITY_SVID_POLICY_UNAVAILABLE') return 'rejected';
    if (err.code === 'ERR_IDENTITY_AGENT_NODE_REFUSED' || err.status === 401 || err.status === 403) return 'refused';
    if (err.status === 404) return 'gone';
    if (err.status >= 500) return 'outage';
    return 'rejected';
  }
  return 'outage';
}

function describe(err: unknown): { code: string; message: string } {
  if (err instanceof WritError) return { code: err.code, message: err.expose ? err.message : 'internal error' };
  return { code: 'ERR_IDENTITY_AGENT_SERVER_UNAVAILABLE', message: err instanceof Error ? err.message : String(err) };
}

async function newKey(): Promise<{ privateKey: KeyObject; spki: Uint8Array; pkcs8: Uint8Array }> {
  const { privateKey, publicKey } = await generateKeyPairAsync('ec', { namedCurve: 'P-256' });
  return {
    privateKey,
    spki: new Uint8Array(publicKey.export({ format: 'der', type: 'spki' })),
    pkcs8: new Uint8Array(privateKey.export({ format: 'der', type: 'pkcs8' })),
  };
}

function invalidResponse(message: string): WritError {
  return agentErrors.error('ERR_IDENTITY_AGENT_RESPONSE_INVALID', message);
}

/** The leaf of `chain` must certify `spki` and name `spiffeId`; returns its serial. */
function checkLeaf(chain: readonly Uint8Array[], spki: Uint8Array, spiffeId: string, nowMs: number): string {
  const first = chain[0];
  if (first === undefined) throw invalidResponse('the server returned an empty certificate chain');
  let leaf: NodeX509Certificate;
  try {
    leaf = new NodeX509Certificate(first);
  } catch {
    throw invalidResponse('the server returned an unparseable certificate');
  }
  if (!leaf.publicKey.equals(createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' }))) {
    throw invalidResponse('the server returned a certificate for another key');
  }
  if (leaf.subjectAltName?.split(', ').includes(`URI:${spiffeId}`) !== true) {
    throw invalidResponse(`the server returned a certificate that does not name \`${spiffeId}\``);
  }
  if (Date.parse(leaf.validTo) <= nowMs) throw invalidResponse('the server returned an expired certificate');
  return leaf.serialNumber;
}

/**
 * The node agent.
 *
 * @example
 * const agent = new WorkloadAgent({ nodeApi, evidence: async () => ({ kind: 'join_token', token }), clock: systemClock });
 * await agent.start();
 * const server = new WorkloadApiServer({ socketPath: '/run/writ/agent.sock', source: agent });
 * await server.start();
 */
export class WorkloadAgent implements WorkloadIdentitySource {
  readonly #api: NodeApi;
  readonly #evidence: () => Promise<NodeAttestationEvidence>;
  readonly #clock: Clock;
  readonly #store: AgentStateStore | undefined;
  readonly #syncMs: number;
  readonly #retryMs: number;
  readonly #defaultRefreshS: number;
  readonly #log: AgentLog | undefined;
  readonly #listeners = new Set<() => void>();

  #node: Node | undefined;
  #loaded = false;
  #entries = new Map<string, AgentEntry>();
  #synced = false;
  #nextSyncMs = 0;
  #nextAttestMs = 0;
  #bundle: TrustBundle | undefined;
  #bundleRefreshMs = 0;
  readonly #x509 = new Map<string, CachedX509>();
  readonly #x509RetryMs = new Map<string, number>();
  readonly #x509InFlight = new Map<string, Promise<void>>();
  readonly #jwt = new Map<string, CachedJwt>();
  readonly #jwtInFlight = new Map<string, Promise<CachedJwt>>();
  #reachable = true;
  #outageSinceMs: number | undefined;
  #lastSyncMs: number | undefined;
  #lastError: { code: string; message: string } | undefined;
  #refused = false;
  #refusal: { code: string; message: string; at: string } | undefined;
  #attestFailures = 0;
  #ticking: Promise<void> | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #running = false;
  /** Per entry: bumped when its SVIDs are dropped, so an issuance in flight then is not cached. */
  readonly #generation = new Map<string, number>();
  readonly #forbidden = new Map<string, { code: string; message: string; at: string }>();
  readonly #revoked = new Map<string, { reason: string; at: string }>();
  #revFollowing: Promise<void> | undefined;
  #revAbort: AbortController | undefined;
  #revConnected = false;
  #revCursor: number | undefined;
  #revLastHeardMs: number | undefined;
  #revLastError: { code: string; message: string } | undefined;
  #revWake: (() => void) | undefined;

  constructor(options: WorkloadAgentOptions) {
    this.#api = options.nodeApi;
    this.#evidence = options.evidence;
    this.#clock = options.clock;
    this.#store = options.stateStore;
    this.#syncMs = positive('syncIntervalMs', options.syncIntervalMs, DEFAULT_SYNC_MS);
    this.#retryMs = positive('retryIntervalMs', options.retryIntervalMs, DEFAULT_RETRY_MS);
    this.#defaultRefreshS = positive('defaultRefreshHintSeconds', options.defaultRefreshHintSeconds, 300);
    this.#log = options.log;
  }

  // ------------------------------------------------------------ lifecycle

  /**
   * Run the first tick, then keep ticking on a timer. Throws when the node
   * cannot attest because the server refused it (an outage is retried).
   */
  async start(): Promise<void> {
    if (this.#running) throw new TypeError('the agent is already started');
    this.#running = true;
    await this.tick();
    if (this.#node === undefined && this.#refused) {
      this.#running = false;
      const e = this.#lastError;
      throw agentErrors.error('ERR_IDENTITY_AGENT_NODE_REFUSED', `node attestation refused: ${e === undefined ? 'unknown reason' : `${e.message} (${e.code})`}`);
    }
    this.#schedule();
    if (this.#api.followRevocations !== undefined) this.#revFollowing = this.#followRevocations();
  }

  /** Stop the timer (cached SVIDs stay readable). */
  async stop(): Promise<void> {
    this.#running = false;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#revAbort?.abort();
    this.#revWake?.();
    await this.#ticking;
    await this.#revFollowing;
  }

  // ------------------------------------------------------------ revocations

  /** Keep the node revocation stream open while running; reconnect with backoff, resuming after the last cursor. */
  async #followRevocations(): Promise<void> {
    const follow = this.#api.followRevocations?.bind(this.#api);
    if (follow === undefined) return;
    let backoffMs = 0;
    while (this.#running) {
      const node = this.#node;
      if (node !== undefined) {
        const abort = new AbortController();
        this.#revAbort = abort;
        try {
          await follow(node.credential, this.#revCursor, {
            opened: () => {
              this.#revConnected = true;
              this.#revLastError = undefined;
              this.#revLastHeardMs = this.#clock.nowMs();
              backoffMs = 0;
            },
            revoked: (e) => this.revoke(e),
            heartbeat: (cursor) => {
              this.#revLastHeardMs = this.#clock.nowMs();
              if (this.#revCursor === undefined || cursor > this.#revCursor) this.#revCursor = cursor;
            },
          }, abort.signal);
        } catch (err) {
          if (this.#running) {
            if (this.#revConnected || this.#revLastError === undefined) this.#log?.warn({ err: describe(err) }, 'revocation stream interrupted; reconnecting');
            this.#revLastError = describe(err);
          }
        }
        this.#revConnected = false;
      }
      if (!this.#running) break;
      backoffMs = node === undefined ? this.#retryMs : Math.min(30_000, backoffMs === 0 ? 250 : backoffMs * 2);
      await new Promise<void>((r) => {
        const t = setTimeout(r, backoffMs);
        this.#revWake = () => {
          clearTimeout(t);
          r();
        };
      });
      this.#revWake = undefined;
    }
  }

  /**
   * A `subject-revoked` for a SPIFFE ID: drop the cached X.509 and JWT SVIDs
   * of every entry naming it, tell the Workload API streams at once, and ask
   * the server again (its policy check decides whether a new one is issued).
   */
  revoke(e: AgentRevocation): void {
    if (this.#revCursor === undefined || e.cursor > this.#revCursor) this.#revCursor = e.cursor;
    this.#revLastHeardMs = this.#clock.nowMs();
    const ids = [...this.#entries.values()].filter((x) => x.spiffeId === e.subject).map((x) => x.id);
    if (ids.length === 0) return;
    for (const id of ids) {
      this.#dropEntry(id, false);
      this.#revoked.set(id, { reason: e.reason, at: e.at });
    }
    this.#log?.warn({ spiffeId: e.subject, reason: e.reason, entries: ids }, 'workload revoked; its cached SVIDs are no longer served');
    this.#notify();
    if (this.#running) void this.tick();
  }

  /** Policy refuses this entry's SVIDs now: drop what is cached and keep asking at each sync. */
  #policyRefused(id: string, err: unknown): void {
    const d = describe(err);
    const first = !this.#forbidden.has(id);
    this.#forbidden.set(id, { ...d, at: iso(this.#clock.nowMs()) });
    const had = this.#x509.has(id) || [...this.#jwt.values()].some((j) => j.entryId === id);
    this.#dropEntry(id, false);
    this.#x509RetryMs.set(id, this.#clock.nowMs() + this.#syncMs);
    if (first) this.#log?.warn({ entryId: id, err: d }, 'the server refuses this workload\'s SVIDs by policy; not served');
    if (had) this.#notify();
  }

  /** Do everything that is due now. Ticks never overlap; a tick never throws. */
  tick(): Promise<void> {
    if (this.#ticking !== undefined) return this.#ticking;
    const run = this.#tick().finally(() => {
      this.#ticking = undefined;
    });
    this.#ticking = run;
    return run;
  }

  /** Milliseconds (by the clock) until something is due. */
  nextDueInMs(): number {
    const now = this.#clock.nowMs();
    const times: number[] = [this.#nextSyncMs];
    if (this.#node === undefined) times.push(this.#nextAttestMs);
    else times.push(this.#node.renewAtMs);
    if (this.#bundle !== undefined) times.push(this.#bundleRefreshMs);
    for (const [id, svid] of this.#x509) times.push(Math.min(svid.renewAtMs, this.#x509RetryMs.get(id) ?? Infinity), svid.expiresAtMs);
    for (const id of this.#entries.keys()) if (!this.#x509.has(id)) times.push(this.#x509RetryMs.get(id) ?? now);
    for (const j of this.#jwt.values()) times.push(j.expiresAtMs);
    return Math.max(0, Math.min(...times) - now);
  }

  #schedule(): void {
    if (!this.#running) return;
    const wait = Math.max(MIN_WAKE_MS, Math.min(this.nextDueInMs(), this.#syncMs));
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.tick().then(() => this.#schedule());
    }, wait);
  }

  async #tick(): Promise<void> {
    let changed = false;
    try {
      if (!this.#loaded) {
        this.#loaded = true;
        await this.#loadNode();
      }
      const now = this.#clock.nowMs();
      if (this.#node !== undefined && now >= this.#node.credential.notAfterMs) {
        this.#log?.warn({ spiffeId: this.#node.credential.spiffeId }, 'node credential expired; attesting again');
        this.#node = undefined;
      }
      if (this.#node === undefined) {
        if (now < this.#nextAttestMs) return;
        if (!(await this.#attest())) return;
      } else if (now >= this.#node.renewAtMs) {
        await this.#renewNode();
      }
      if (this.#clock.nowMs() >= this.#nextSyncMs) changed = (await this.#sync()) || changed;
      if (this.#node === undefined) return;
      if (this.#bundle === undefined || this.#clock.nowMs() >= this.#bundleRefreshMs) changed = (await this.#refreshBundle()) || changed;
      changed = (await this.#rotateX509()) || changed;
    } finally {
      changed = this.#pruneExpired() || changed;
      if (changed) this.#notify();
    }
  }

  // ------------------------------------------------------------ node credential

  async #loadNode(): Promise<void> {
    if (this.#store === undefined) return;
    let saved: AgentNodeCredential | undefined;
    try {
      saved = await this.#store.load();
    } catch (err) {
      this.#log?.warn({ err: describe(err) }, 'saved node credential ignored');
      return;
    }
    if (saved === undefined) return;
    const now = this.#clock.nowMs();
    if (saved.notAfterMs <= now) {
      this.#log?.info({ spiffeId: saved.spiffeId }, 'saved node credential has expired');
      return;
    }
    this.#node = { credential: saved, renewAtMs: halfLife(saved.notBeforeMs, saved.notBeforeMs, saved.notAfterMs) };
    this.#log?.info({ spiffeId: saved.spiffeId, expiresAt: iso(saved.notAfterMs) }, 'loaded saved node credential');
  }

  /** Attest; true when the node now holds a credential. */
  async #attest(): Promise<boolean> {
    try {
      const key = await newKey();
      const evidence = await this.#evidence();
      const issued = await this.#api.attest(evidence, key.spki);
      await this.#adoptNode(issued, key);
      this.#refused = false;
      this.#refusal = undefined;
      this.#attestFailures = 0;
      this.#serverOk();
      this.#nextSyncMs = 0;
      this.#log?.info({ spiffeId: issued.spiffeId, expiresAt: iso(issued.notAfterMs) }, 'node attested');
      return true;
    } catch (err) {
      const kind = classify(err);
      // A refused attestation (a used join token, an evicted node) is retried ever more slowly, up to 5 minutes.
      this.#attestFailures++;
      const backoff = kind === 'outage' ? this.#retryMs : Math.min(this.#syncMs * 2 ** Math.min(this.#attestFailures - 1, 16), MAX_ATTEST_BACKOFF_MS);
      this.#nextAttestMs = this.#clock.nowMs() + backoff;
      if (kind === 'outage') this.#serverDown(err);
      else {
        this.#refused = true;
        this.#lastError = describe(err);
        this.#refusal ??= { ...describe(err), at: iso(this.#clock.nowMs()) };
        this.#serverOkButError();
      }
      this.#log?.warn({ err: describe(err) }, 'node attestation failed');
      return false;
    }
  }

  async #renewNode(): Promise<void> {
    const node = this.#node;
    if (node === undefined) return;
    try {
      const key = await newKey();
      const issued = await this.#api.renew(node.credential, key.spki);
      await this.#adoptNode(issued, key);
      this.#serverOk();
      this.#log?.info({ spiffeId: issued.spiffeId, expiresAt: iso(issued.notAfterMs) }, 'node credential renewed');
    } catch (err) {
      if (classify(err) === 'refused') {
        await this.#nodeRefused(err);
        return;
      }
      if (classify(err) === 'outage') this.#serverDown(err);
      else this.#lastError = describe(err);
      // Keep the current credential; try again soon.
      this.#node = { credential: node.credential, renewAtMs: this.#clock.nowMs() + this.#retryMs };
      this.#log?.warn({ err: describe(err) }, 'node credential renewal failed');
    }
  }

  async #adoptNode(issued: IssuedNodeSvid, key: { spki: Uint8Array; pkcs8: Uint8Array }): Promise<void> {
    const now = this.#clock.nowMs();
    if (SpiffeId.tryParse(issued.spiffeId) === undefined) throw invalidResponse('the server returned a node SVID without a valid SPIFFE ID');
    checkLeaf(issued.certChainDer, key.spki, issued.spiffeId, now);
    const credential: AgentNodeCredential = {
      spiffeId: issued.spiffeId,
      certChainDer: issued.certChainDer,
      privateKeyPkcs8Der: key.pkcs8,
      notBeforeMs: issued.notBeforeMs,
      notAfterMs: issued.notAfterMs,
      ...(issued.token === undefined ? {} : { token: issued.token }),
    };
    this.#node = { credential, renewAtMs: halfLife(now, issued.notBeforeMs, issued.notAfterMs) };
    try {
      await this.#store?.save(credential);
    } catch (err) {
      this.#log?.warn({ err: describe(err) }, 'node credential could not be saved; a restart will need to attest again');
    }
  }

  /** The server refused our node credential: serve nothing, forget it, attest again later. */
  async #nodeRefused(err: unknown): Promise<void> {
    this.#log?.warn({ err: describe(err) }, 'the server refused this node; serving nothing');
    this.#node = undefined;
    this.#refused = true;
    this.#lastError = describe(err);
    this.#refusal = { ...describe(err), at: iso(this.#clock.nowMs()) };
    this.#attestFailures = 0;
    this.#serverOkButError();
    this.#entries = new Map();
    this.#x509.clear();
    this.#jwt.clear();
    this.#bundle = undefined;
    this.#nextAttestMs = this.#clock.nowMs() + this.#syncMs;
    try {
      await this.#store?.save(undefined);
    } catch (e) {
      this.#log?.warn({ err: describe(e) }, 'refused node credential could not be removed');
    }
    this.#notify();
  }

  #credential(): AgentNodeCredential {
    const node = this.#node;
    if (node === undefined) throw agentErrors.error('ERR_IDENTITY_AGENT_NOT_ATTESTED', 'the agent has no node credential');
    return node.credential;
  }

  // ------------------------------------------------------------ server state

  #serverOk(): void {
    if (!this.#reachable) this.#log?.info({ since: this.#outageSinceMs === undefined ? undefined : iso(this.#outageSinceMs) }, 'server reachable again');
    this.#reachable = true;
    this.#outageSinceMs = undefined;
    this.#lastError = undefined;
  }

  #serverOkButError(): void {
    this.#reachable = true;
    this.#outageSinceMs = undefined;
  }

  #serverDown(err: unknown): void {
    if (this.#reachable) this.#log?.warn({ err: describe(err) }, 'server unreachable; serving cached SVIDs until they expire');
    this.#reachable = false;
    this.#outageSinceMs ??= this.#clock.nowMs();
    this.#lastError = describe(err);
  }

  /** Handle a failed call; returns its class. */
  async #failed(err: unknown, what: string): Promise<ReturnType<typeof classify>> {
    const kind = classify(err);
    if (kind === 'refused') await this.#nodeRefused(err);
    else if (kind === 'outage') this.#serverDown(err);
    else if (kind === 'forbidden') this.#serverOk();
    else {
      this.#lastError = describe(err);
      this.#log?.warn({ err: describe(err) }, `${what} failed`);
    }
    return kind;
  }

  // ------------------------------------------------------------ entries and bundle

  /** Fetch this node's entries; entries gone from the server stop being served. */
  async #sync(): Promise<boolean> {
    let entries: readonly AgentEntry[];
    try {
      entries = await this.#api.fetchEntries(this.#credential());
    } catch (err) {
      this.#nextSyncMs = this.#clock.nowMs() + (classify(err) === 'outage' ? this.#retryMs : this.#syncMs);
      await this.#failed(err, 'entry sync');
      return false;
    }
    this.#serverOk();
    const now = this.#clock.nowMs();
    this.#nextSyncMs = now + this.#syncMs;
    this.#lastSyncMs = now;
    this.#synced = true;
    const next = new Map<string, AgentEntry>();
    for (const e of entries) {
      if (SpiffeId.tryParse(e.spiffeId) === undefined) {
        this.#log?.warn({ entryId: e.id }, 'entry with an invalid SPIFFE ID ignored');
        continue;
      }
      next.set(e.id, e);
    }
    let changed = false;
    for (const [id, old] of this.#entries) {
      const now2 = next.get(id);
      if (now2 === undefined || revisionOf(now2) !== revisionOf(old)) {
        changed = true;
        if (now2 === undefined) this.#log?.info({ entryId: id, spiffeId: old.spiffeId }, 'entry removed; no longer served');
        this.#dropEntry(id, now2 === undefined);
      }
    }
    for (const id of next.keys()) if (!this.#entries.has(id)) changed = true;
    this.#entries = next;
    return changed;
  }

  /** Forget an entry's SVIDs (`gone`: the entry itself too). */
  #dropEntry(id: string, gone: boolean): void {
    this.#x509.delete(id);
    this.#x509RetryMs.delete(id);
    for (const [k, j] of this.#jwt) if (j.entryId === id) this.#jwt.delete(k);
    this.#generation.set(id, (this.#generation.get(id) ?? 0) + 1);
    if (gone) {
      this.#entries.delete(id);
      this.#forbidden.delete(id);
      this.#revoked.delete(id);
    }
  }

  async #refreshBundle(): Promise<boolean> {
    const node = this.#node;
    if (node === undefined) return false;
    let bundle: TrustBundle;
    try {
      const doc = await this.#api.fetchBundle(node.credential);
      const td = SpiffeId.parse(node.credential.spiffeId).trustDomain;
      bundle = TrustBundle.parse(typeof doc === 'string' ? doc : JSON.stringify(doc), td);
    } catch (err) {
      this.#bundleRefreshMs = this.#clock.nowMs() + this.#retryMs;
      await this.#failed(err, 'bundle refresh');
      return false;
    }
    this.#serverOk();
    const old = this.#bundle;
    this.#bundle = bundle;
    this.#bundleRefreshMs = this.#clock.nowMs() + (bundle.refreshHintSeconds ?? this.#defaultRefreshS) * 1000;
    return old === undefined || !old.sameKeysAs(bundle);
  }

  // ------------------------------------------------------------ X.509-SVIDs

  /** Issue missing X.509-SVIDs and rotate those past half-life. True when any changed. */
  async #rotateX509(): Promise<boolean> {
    const now = this.#clock.nowMs();
    const due: string[] = [];
    for (const id of this.#entries.keys()) {
      const have = this.#x509.get(id);
      const retryAt = this.#x509RetryMs.get(id) ?? 0;
      if (now < retryAt) continue;
      if (have === undefined || now >= have.renewAtMs) due.push(id);
    }
    const results = await Promise.all(due.map((id) => this.#issueX509(id)));
    return results.some((r) => r);
  }

  /** Issue one entry's X.509-SVID with a new key; deduplicated while in flight. */
  #issueX509(id: string): Promise<boolean> {
    const running = this.#x509InFlight.get(id);
    if (running !== undefined) return running.then(() => false);
    let ok = false;
    const p = (async () => {
      const entry = this.#entries.get(id);
      if (entry === undefined || this.#node === undefined) return;
      const generation = this.#generation.get(id) ?? 0;
      try {
        const key = await newKey();
        const issued = await this.#api.issueX509(this.#credential(), id, key.spki);
        const now = this.#clock.nowMs();
        if (issued.spiffeId !== entry.spiffeId) throw invalidResponse(`the server returned an SVID for \`${issued.spiffeId}\`, not \`${entry.spiffeId}\``);
        const serial = checkLeaf(issued.certChainDer, key.spki, entry.spiffeId, now);
        // The entry changed or went away meanwhile, or its SVIDs were revoked while this was in flight.
        if (this.#entries.get(id) !== entry || (this.#generation.get(id) ?? 0) !== generation) return;
        this.#x509.set(id, {
          spiffeId: entry.spiffeId,
          chain: issued.certChainDer,
          keyPkcs8: key.pkcs8,
          serial,
          expiresAtMs: issued.notAfterMs,
          renewAtMs: halfLife(now, issued.notBeforeMs, issued.notAfterMs),
          revision: revisionOf(entry),
        });
        this.#x509RetryMs.delete(id);
        this.#forbidden.delete(id);
        this.#serverOk();
        ok = true;
        this.#log?.info({ entryId: id, spiffeId: entry.spiffeId, serial, expiresAt: iso(issued.notAfterMs) }, 'x509-svid issued');
      } catch (err) {
        this.#x509RetryMs.set(id, this.#clock.nowMs() + this.#retryMs);
        const kind = await this.#failed(err, 'x509-svid issuance');
        if (kind === 'forbidden') this.#policyRefused(id, err);
        if (kind === 'gone') {
          this.#log?.info({ entryId: id }, 'entry removed on the server; no longer served');
          this.#dropEntry(id, true);
          ok = true;
        }
      }
    })().finally(() => this.#x509InFlight.delete(id));
    this.#x509InFlight.set(id, p);
    return p.then(() => ok);
  }

  /** Drop SVIDs past expiry: an expired SVID is never served. True when any went. */
  #pruneExpired(): boolean {
    const now = this.#clock.nowMs();
    let changed = false;
    for (const [id, s] of this.#x509) {
      if (now >= s.expiresAtMs) {
        this.#x509.delete(id);
        changed = true;
        this.#log?.warn({ entryId: id, spiffeId: s.spiffeId }, 'x509-svid expired before it could be renewed; no longer served');
      }
    }
    for (const [k, j] of this.#jwt) if (now >= j.expiresAtMs) this.#jwt.delete(k);
    return changed;
  }

  // ------------------------------------------------------------ WorkloadIdentitySource

  /** Entries whose selectors are all among the caller's (selectors.ts). */
  #matching(caller: WorkloadCaller): AgentEntry[] {
    if (this.#node === undefined && this.#refused) return [];
    return [...this.#entries.values()].filter((e) => matchesSelectors(e.selectors, caller.selectors));
  }

  async x509Svids(caller: WorkloadCaller): Promise<X509SvidState | null> {
    const mine = this.#matching(caller);
    if (mine.length === 0 || this.#bundle === undefined) return null;
    // An entry still being issued for the first time is waited for.
    await Promise.all(mine.filter((e) => !this.#x509.has(e.id)).map((e) => this.#x509InFlight.get(e.id)));
    const bundle = this.#bundle;
    const now = this.#clock.nowMs();
    const svids: X509SvidMaterial[] = [];
    for (const e of mine) {
      const s = this.#x509.get(e.id);
      if (s === undefined || now >= s.expiresAtMs) continue;
      svids.push({ spiffeId: s.spiffeId, certChainDer: s.chain, privateKeyPkcs8Der: s.keyPkcs8, bundleDer: bundle.x509Authorities });
    }
    if (svids.length === 0) return null;
    return { svids, federatedBundles: new Map() };
  }

  async x509Bundles(caller: WorkloadCaller): Promise<X509BundlesState | null> {
    const bundle = this.#bundle;
    if (this.#matching(caller).length === 0 || bundle === undefined) return null;
    return { bundles: new Map([[`spiffe://${bundle.trustDomain.name}`, bundle.x509Authorities]]) };
  }

  async jwtSvids(caller: WorkloadCaller, audience: readonly string[], spiffeId: string | undefined): Promise<readonly JwtSvidMaterial[] | null> {
    const mine = this.#matching(caller).filter((e) => spiffeId === undefined || e.spiffeId === spiffeId);
    if (mine.length === 0) return null;
    const out: JwtSvidMaterial[] = [];
    for (const e of mine) {
      try {
        const j = await this.#jwtFor(e, audience);
        out.push({ spiffeId: j.spiffeId, token: j.token });
      } catch (err) {
        const kind = classify(err);
        if (kind === 'gone' || kind === 'refused' || kind === 'forbidden') continue;
        if (kind === 'outage') {
          throw agentErrors.error('ERR_IDENTITY_AGENT_SERVER_UNAVAILABLE', 'the Writ server is unreachable and no cached JWT-SVID is valid', { cause: err });
        }
        throw err;
      }
    }
    return out.length === 0 ? null : out;
  }

  /** A cached JWT-SVID before half-life; a new one after; the cached one through an outage until it expires. */
  async #jwtFor(entry: AgentEntry, audience: readonly string[]): Promise<CachedJwt> {
    const key = jwtKey(entry.id, audience);
    const now = this.#clock.nowMs();
    const cached = this.#jwt.get(key);
    if (cached !== undefined && now < cached.renewAtMs) return cached;
    let p = this.#jwtInFlight.get(key);
    if (p === undefined) {
      const generation = this.#generation.get(entry.id) ?? 0;
      p = (async () => {
        const issued = await this.#api.issueJwt(this.#credential(), entry.id, audience);
        if (issued.spiffeId !== entry.spiffeId) throw invalidResponse(`the server returned a JWT-SVID for \`${issued.spiffeId}\`, not \`${entry.spiffeId}\``);
        const at = this.#clock.nowMs();
        const j = { entryId: entry.id, spiffeId: entry.spiffeId, token: issued.token, expiresAtMs: issued.expiresAtMs, renewAtMs: halfLife(at, issued.issuedAtMs, issued.expiresAtMs) };
        if (this.#entries.get(entry.id) === entry && (this.#generation.get(entry.id) ?? 0) === generation) this.#jwt.set(key, j);
        this.#forbidden.delete(entry.id);
        this.#serverOk();
        return j;
      })().finally(() => this.#jwtInFlight.delete(key));
      this.#jwtInFlight.set(key, p);
    }
    try {
      return await p;
    } catch (err) {
      const kind = await this.#failed(err, 'jwt-svid issuance');
      if (kind === 'outage' && cached !== undefined && this.#jwt.get(key) === cached && this.#clock.nowMs() < cached.expiresAtMs) return cached;
      if (kind === 'forbidden') this.#policyRefused(entry.id, err);
      if (kind === 'gone') {
        this.#dropEntry(entry.id, true);
        this.#notify();
      }
      throw err;
    }
  }

  async jwtBundles(caller: WorkloadCaller): Promise<ReadonlyMap<string, Uint8Array> | null> {
    const bundle = this.#bundle;
    if (this.#matching(caller).length === 0 || bundle === undefined) return null;
    // Workload API: a JWT bundle is a JWK Set of the trust domain's JWT authorities.
    const keys = bundle.toDocument().keys.filter((k) => k.use === 'jwt-svid');
    return new Map([[`spiffe://${bundle.trustDomain.name}`, new Uint8Array(Buffer.from(JSON.stringify({ keys })))]]);
  }

  async validateJwtSvid(caller: WorkloadCaller, token: string, audience: string): Promise<ValidatedJwtSvid | null> {
    const bundle = this.#bundle;
    if (this.#matching(caller).length === 0 || bundle === undefined) return null;
    const v = await validateJwtSvid(token, audience, bundle, this.#clock);
    return { spiffeId: v.spiffeId.toString(), claims: v.claims };
  }

  subscribe(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => {
      this.#listeners.delete(listener);
    };
  }

  #notify(): void {
    for (const l of [...this.#listeners]) {
      try {
        l();
      } catch (err) {
        this.#log?.warn({ err: describe(err) }, 'a rotation listener failed');
      }
    }
  }

  // ------------------------------------------------------------ status

  /** The agent's state for `writ agent status` (no key material, no tokens). */
  status(): AgentStatus {
    const now = this.#clock.nowMs();
    const node = this.#node;
    const bundle = this.#bundle;
    const entries = [...this.#entries.values()].map((e) => {
      const s = this.#x509.get(e.id);
      return {
        id: e.id,
        spiffeId: e.spiffeId,
        selectors: [...e.selectors],
        ...(s === undefined || now >= s.expiresAtMs ? {} : { x509: { serial: s.serial, expiresAt: iso(s.expiresAtMs), renewAt: iso(s.renewAtMs) } }),
        ...(this.#forbidden.has(e.id) ? { refusal: { ...(this.#forbidden.get(e.id) as { code: string; message: string; at: string }) } } : {}),
        ...(this.#revoked.has(e.id) ? { revoked: { ...(this.#revoked.get(e.id) as { reason: string; at: string }) } } : {}),
      };
    });
    const served = entries.filter((e) => e.x509 !== undefined).length;
    const refused = entries.filter((e) => e.refusal !== undefined).length;
    let state: AgentStatus['state'];
    let message: string;
    if (node === undefined && this.#refused) {
      state = 'refused';
      message = `the server refused this node: ${this.#refusal?.message ?? this.#lastError?.message ?? 'unknown reason'}; serving nothing`;
    } else if (!this.#reachable) {
      state = 'degraded';
      const since = this.#outageSinceMs === undefined ? '' : ` since ${iso(this.#outageSinceMs)}`;
      message = `server unreachable${since}; serving ${served} cached X.509-SVID(s) until they expire`;
    } else if (!this.#synced || node === undefined) {
      state = 'starting';
      message = 'attesting and fetching entries';
    } else {
      state = 'ready';
      message = `serving ${served} of ${entries.length} entries${refused === 0 ? '' : `; ${refused} refused by policy`}`;
    }
    return {
      state,
      server: {
        reachable: this.#reachable,
        ...(this.#lastSyncMs === undefined ? {} : { lastSyncAt: iso(this.#lastSyncMs) }),
        ...(this.#outageSinceMs === undefined ? {} : { outageSince: iso(this.#outageSinceMs) }),
        ...(this.#lastError === undefined ? {} : { lastError: { ...this.#lastError } }),
      },
      ...(this.#refusal === undefined || state !== 'refused' ? {} : { refusal: { ...this.#refusal } }),
      ...(node === undefined ? {} : { node: { spiffeId: node.credential.spiffeId, expiresAt: iso(node.credential.notAfterMs), renewAt: iso(node.renewAtMs) } }),
      ...(bundle === undefined
        ? {}
        : { bundle: { trustDomain: `spiffe://${bundle.trustDomain.name}`, ...(bundle.sequence === undefined ? {} : { sequence: bundle.sequence }), refreshAt: iso(this.#bundleRefreshMs) } }),
      entries,
      jwtSvidsCached: this.#jwt.size,
      revocations: {
        following: this.#revFollowing !== undefined && this.#running,
        connected: this.#revConnected,
        ...(this.#revCursor === undefined ? {} : { cursor: this.#revCursor }),
        ...(this.#revLastHeardMs === undefined ? {} : { lastHeardAt: iso(this.#revLastHeardMs) }),
        ...(this.#revLastError === undefined ? {} : { lastError: { ...this.#revLastError } }),
      },
      message,
    };
  }
}

function positive(name: string, v: number | undefined, fallback: number): number {
  if (v === undefined) return fallback;
  if (!(Number.isFinite(v) && v > 0)) throw new TypeError(`${name} must be a positive number`);
  return v;
}

/**
 * Check that a saved node credential's key is the key of its certificate.
 *
 * @example
 * assertCredentialConsistent(await store.load());
 */
export function assertCredentialConsistent(c: AgentNodeCredential): void {
  const first = c.certChainDer[0];
  if (first === undefined) throw agentErrors.error('ERR_IDENTITY_AGENT_STATE_INVALID', 'saved node credential has no certificate');
  let ok = false;
  try {
    const cert = new NodeX509Certificate(first);
    ok = cert.checkPrivateKey(createPrivateKey({ key: Buffer.from(c.privateKeyPkcs8Der), format: 'der', type: 'pkcs8' }));
  } catch {
    ok = false;
  }
  if (!ok) throw agentErrors.error('ERR_IDENTITY_AGENT_STATE_INVALID', 'saved node credential does not match its key');
}
