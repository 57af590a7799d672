/**
 * Ports of the signals context.
 *
 * - {@link RevocationBus}: every revocation (subject, lease, token, policy
 *   change, signal) fans out through it to server replicas and enforcement
 *   points. Adapters: in-process (`InProcessRevocationBus`, this context),
 *   PostgreSQL outbox + LISTEN/NOTIFY and NATS JetStream (`storage/bus/`).
 * - {@link SignalStore}: where accepted signals are kept, and the read side the
 *   PDP uses for "latest posture / risk of a subject" ({@link SignalContext}).
 * - {@link SecretSealer}: envelope encryption of the secrets streams keep.
 */
import type { Secret } from '../kernel/index.ts';
import type { SignalRecord, SignalType } from './signal.ts';

/** What a revocation takes away. */
export type RevocationKind = 'subject-revoked' | 'lease-revoked' | 'token-revoked' | 'policy-changed' | 'signal';

/** The revocation kinds, for validation and docs. */
export const REVOCATION_KINDS: readonly RevocationKind[] = ['subject-revoked', 'lease-revoked', 'token-revoked', 'policy-changed', 'signal'];

/** A revocation as a publisher hands it to the bus. */
export interface RevocationInput {
  /** Unique id; publishing the same id twice delivers it once (de-dup). Generated when absent. */
  readonly id?: string;
  readonly kind: RevocationKind;
  /** SPIFFE ID (or other subject id) whose access is cut. */
  readonly subject?: string;
  /** Lease id, for `lease-revoked`. */
  readonly leaseId?: string;
  /** Token id (`jti`), for `token-revoked`. */
  readonly tokenId?: string;
  /** Kebab-case reason (`posture-failed`, `task-completed`, `admin-revoked`). */
  readonly reason: string;
  /** ISO-8601 time it happened; the bus clock when absent. */
  readonly at?: string;
}

/** A revocation as delivered: the input with its id, time and place on the bus. */
export interface RevocationEvent {
  readonly id: string;
  /**
   * Position on the bus: strictly increasing per bus, starting at 1. A
   * subscriber that remembers the last cursor it handled resumes after it.
   */
  readonly cursor: number;
  readonly kind: RevocationKind;
  readonly subject?: string;
  readonly leaseId?: string;
  readonly tokenId?: string;
  readonly at: string;
  readonly reason: string;
}

/** Handles one event. A rejected promise is reported; delivery continues. */
export type RevocationHandler = (event: RevocationEvent) => void | Promise<void>;

/** Stop a subscription. Safe to call twice. */
export type Unsubscribe = () => Promise<void>;

/** Options of a subscription. */
export interface SubscribeOptions {
  /** Connection trouble and handler failures (the subscription keeps trying). */
  readonly onError?: (err: unknown) => void;
}

/**
 * Port: the revocation bus.
 *
 * Contract (checked by one conformance suite against every adapter):
 * - `publish` resolves once the event is durable for this adapter and returns
 *   it with its cursor; re-publishing an id returns the first event, and
 *   subscribers see it once.
 * - `subscribe(fromCursor, handler)` delivers, in cursor order, every event
 *   with a cursor greater than `fromCursor` (`0`: from the beginning;
 *   `undefined`: only events published from now on), then keeps delivering.
 *   Delivery is at-least-once across reconnects, de-duplicated by cursor/id
 *   within a subscription: after a connection loss the adapter reconnects and
 *   replays from the last delivered cursor, so none is lost.
 *
 * @example
 * const stop = await bus.subscribe(0, (e) => { if (e.kind === 'subject-revoked') cache.drop(e.subject); });
 * await bus.publish({ kind: 'subject-revoked', subject: 'spiffe://writ.local/ci', reason: 'posture-failed' });
 * await stop();
 */
export interface RevocationBus {
  /** `memory`, `postgres` or `nats`. */
  readonly kind: string;
  publish(input: RevocationInput): Promise<RevocationEvent>;
  subscribe(fromCursor: number | undefined, handler: RevocationHandler, options?: SubscribeOptions): Promise<Unsubscribe>;
  /** The cursor of the newest event (0 when empty). */
  head(): Promise<number>;
  /** Stop every subscription and release connections. */
  close(): Promise<void>;
}

/** Port: where accepted signals are stored. */
export interface SignalStore {
  insertSignal(record: SignalRecord): Promise<void>;
  /** Newest first. */
  listSignals(q: { readonly subject?: string; readonly type?: SignalType; readonly limit: number }): Promise<readonly SignalRecord[]>;
  /** The newest signal of `type` about `subject`, if any. */
  latestSignal(subject: string, type: SignalType): Promise<SignalRecord | undefined>;
}

/**
 * Port the PDP reads: the current posture and risk of a subject, as the latest
 * signals say. `undefined` means no signal was ever received.
 *
 * @example
 * const p = await context.posture('spiffe://writ.local/ci');
 * if (p !== undefined && p.score < 70) deny('posture-below-threshold');
 */
export interface SignalContext {
  posture(subject: string): Promise<{ readonly score: number; readonly failingChecks: readonly string[]; readonly at: string } | undefined>;
  risk(subject: string): Promise<{ readonly level: string; readonly at: string } | undefined>;
}

/** A Shared Signals stream as stored; `config` is its SSF stream configuration (SSF §8.1.1) plus Writ's state. */
export interface SsfStreamRecord {
  readonly streamId: string;
  /** The admin principal that created it; only it (or an admin) manages it. */
  readonly owner: string;
  /** Stored without `delivery.authorization_header`: that credential is in {@link sealedAuthorization}. */
  readonly config: SsfStreamState;
  /**
   * A push stream's `delivery.authorization_header`, sealed by the
   * {@link SecretSealer} under the context {@link ssfStreamSecretContext} of
   * this stream; absent when the receiver gave none.
   */
  readonly sealedAuthorization?: string;
  /** Bumped by every update (compare-and-set). */
  readonly revision: number;
  readonly createdAt: string;
  readonly updatedAt: string;
}

/** An RFC 9493 / SSF subject identifier, as received (validated elsewhere). */
export type SsfSubject = Readonly<Record<string, unknown>> & { readonly format: string };

/** The stored state of a stream: the configuration a receiver reads, its status and subjects. */
export interface SsfStreamState {
  readonly stream_id: string;
  readonly iss: string;
  readonly aud: string | readonly string[];
  readonly events_supported: readonly string[];
  readonly events_requested: readonly string[];
  readonly events_delivered: readonly string[];
  /**
   * `authorization_header` is here only on its way in (a receiver's request)
   * and in rows an older version stored in plain text, which `SsfStreams`
   * seals on start; stored rows keep it in
   * {@link SsfStreamRecord.sealedAuthorization}.
   */
  readonly delivery: { readonly method: string; readonly endpoint_url?: string; readonly authorization_header?: string };
  readonly min_verification_interval: number;
  readonly description?: string;
  readonly status: 'enabled' | 'paused' | 'disabled';
  readonly reason?: string;
  /** Subjects removed from this stream (default subjects are ALL): SETs about them are not delivered. */
  readonly excluded_subjects: readonly SsfSubject[];
  /** ISO time of the last verification request, for `min_verification_interval`. */
  readonly last_verification_at?: string;
}

/** A SET waiting for delivery on a stream (poll: until acknowledged; push: until accepted or given up). */
export interface QueuedSet {
  readonly streamId: string;
  readonly jti: string;
  /** The signed SET (compact JWS). */
  readonly set: string;
  readonly createdAt: string;
  readonly attempts: number;
  /** Not before this ISO time (push backoff). */
  readonly nextAt: string;
}

/** Port: stream configurations, their delivery queues and the receiver's replay cache. */
export interface SsfStore {
  insertStream(r: SsfStreamRecord): Promise<void>;
  getStream(streamId: string): Promise<SsfStreamRecord | undefined>;
  /** Every stream, or the streams of one owner. */
  listStreams(owner?: string): Promise<readonly SsfStreamRecord[]>;
  /** Replace when the stored revision is `expectedRevision`; false otherwise. */
  updateStream(r: SsfStreamRecord, expectedRevision: number): Promise<boolean>;
  /** Delete the stream and its queue; false when unknown. */
  deleteStream(streamId: string): Promise<boolean>;
  /** False when this (stream, jti) is already queued (another replica queued it). */
  enqueueSet(q: QueuedSet): Promise<boolean>;
  /** Up to `limit` queued SETs due at `nowIso`, oldest first. */
  dueSets(streamId: string, nowIso: string, limit: number): Promise<readonly QueuedSet[]>;
  deleteSets(streamId: string, jtis: readonly string[]): Promise<number>;
  /** Compare-and-set the retry schedule; false when another worker moved it first. */
  rescheduleSet(streamId: string, jti: string, expectedNextAt: string, attempts: number, nextAt: string): Promise<boolean>;
  /** Receiver replay cache: true the first time `key` is seen. */
  rememberReceivedSet(key: string, at: string): Promise<boolean>;
  /** Undo {@link rememberReceivedSet} when acting on the SET failed, so a redelivery is acted on. */
  forgetReceivedSet(key: string): Promise<void>;
}

/**
 * The key Writ signs SETs with, as stored: the public JWK in clear (it is
 * published at `/ssf/jwks`), the private JWK sealed under the KEK with
 * {@link setKeySecretContext} of its `kid`. One key serves every replica and
 * survives restarts, so a SET queued or pushed by one replica verifies against
 * the JWKS any replica serves, before and after a restart.
 */
export interface SetKeyRecord {
  readonly kid: string;
  readonly publicJwk: string;
  readonly privateSealed: string;
  readonly createdAt: string;
}

/** Port: the stored SET signing key. */
export interface SetKeyStore {
  /** The stored keys, oldest first (empty before the first one was made). */
  listSetKeys(): Promise<readonly SetKeyRecord[]>;
  /** Store `r` as the current key unless one is already stored (another replica made it first): then false. */
  insertSetKey(r: SetKeyRecord): Promise<boolean>;
}

/** An enforcement point that follows the revocation stream. */
export interface EnforcementPointRecord {
  /** `<principal id>/<name>`. */
  readonly id: string;
  readonly principalId: string;
  /** The instance name it gave (`?pep=`). */
  readonly name: string;
  readonly registeredAt: string;
  /** Last time its stream was open (refreshed on every heartbeat) or it acknowledged. */
  readonly lastSeenAt: string;
}

/** An enforcement point's acknowledgement that it applied a revocation. */
export interface RevocationAck {
  readonly eventId: string;
  readonly pepId: string;
  readonly ackedAt: string;
  /** The point's own check of the revoked credential/subject answered `revoked`. */
  readonly denied: boolean;
}

/** Port: the registry of enforcement points and the acknowledgements drills measure. */
export interface EnforcementPointStore {
  /** Register (first time) or refresh `lastSeenAt`. */
  touchEnforcementPoint(p: { readonly id: string; readonly principalId: string; readonly name: string; readonly at: string }): Promise<void>;
  /** Points seen at or after `seenSince` (every point when absent), by id. */
  listEnforcementPoints(seenSince?: string): Promise<readonly EnforcementPointRecord[]>;
  /** Keep the first acknowledgement of an event by a point. */
  recordAck(ack: RevocationAck): Promise<void>;
  listAcks(eventIds: readonly string[]): Promise<readonly RevocationAck[]>;
}

/**
 * Port: seals a secret the signals context must keep (a push stream's
 * `authorization_header`) under the server's key-encryption key, binding
 * `context` (the record's identity) as additional authenticated data, so a
 * sealed value cannot be moved to another record. The server adapts the KEK.
 *
 * @example
 * const sealed = sealer.seal(new Secret('Bearer rx-given'), ssfStreamSecretContext('st_1'));
 * sealer.open(sealed, ssfStreamSecretContext('st_1')).reveal(); // 'Bearer rx-given'
 */
export interface SecretSealer {
  /** An opaque, printable string that holds nothing usable without the key. */
  seal(plain: Secret, context: string): string;
  /** Throws for a wrong key, a wrong `context` or a tampered value; the error names no secret. */
  open(sealed: string, context: string): Secret;
}

/**
 * AAD of a stream's sealed `authorization_header`.
 *
 * @example
 * ssfStreamSecretContext('st_0123'); // 'writ/signals/ssf-stream/st_0123'
 */
export function ssfStreamSecretContext(streamId: string): string {
  return `writ/signals/ssf-stream/${streamId}`;
}

/**
 * AAD of a SET signing key's sealed private JWK.
 *
 * @example
 * setKeySecretContext('k1'); // 'writ/signals/set-key/k1'
 */
export function setKeySecretContext(kid: string): string {
  return `writ/signals/set-key/${kid}`;
}
