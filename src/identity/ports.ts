/**
 * Ports of the identity context: what it needs from outside. The storage
 * context supplies the adapters; tests use the in-memory implementations in
 * `*.test-support.ts` files.
 */
import type { WrappedKey } from './envelope.ts';
import type { KeySlotState } from './key-slots.ts';
import type { JsonWebKey, JwtSvidAlg } from './keys.ts';
import type { RegistrationEntry } from './entries.ts';

/** The two kinds of CA key: the X.509 signing CA, and a JWT-SVID signing key. */
export type CaKeyKind = 'x509' | 'jwt';

/**
 * One CA key slot as stored. Private keys are only ever present wrapped
 * (envelope-encrypted with the key-encryption key); everything else is public.
 */
export interface StoredCaKey {
  readonly trustDomain: string;
  /** Slot id, unique within the trust domain; for JWT keys also the `kid`. */
  readonly id: string;
  readonly kind: CaKeyKind;
  readonly state: KeySlotState;
  readonly alg: JwtSvidAlg;
  /** ISO-8601 instants. */
  readonly createdAt: string;
  readonly notAfter: string;
  readonly activatedAt?: string;
  readonly retiredAt?: string;
  /** After this instant nothing the key signed is valid any more: it leaves the bundle and the record may be deleted. */
  readonly dropAfter?: string;
  /** x509: PEM certificates, the signing CA first, the root (bundle authority) last. */
  readonly certificateChainPem?: string;
  /** x509: true when the root belongs to an upstream CA rather than to Writ. */
  readonly upstream?: boolean;
  /** jwt: the public key. */
  readonly publicJwk?: JsonWebKey;
  /** The private key of this slot, wrapped. */
  readonly wrappedPrivateKey: WrappedKey;
  /** x509: the private key of the certificate that signed the signing CA (Writ's root, or the upstream CA), wrapped. */
  readonly wrappedIssuerKey?: WrappedKey;
  readonly issuerAlg?: JwtSvidAlg;
}

/**
 * Port: persistence of CA keys and of the bundle sequence number. Writes
 * resolve once durable.
 *
 * @example
 * await store.put(record);
 * const all = await store.list('example.org');
 */
export interface CaKeyStore {
  /** Every stored slot of a trust domain, in any order. */
  list(trustDomain: string): Promise<readonly StoredCaKey[]>;
  /** Insert or replace the slot with the same trust domain and id. */
  put(key: StoredCaKey): Promise<void>;
  /** Remove a slot; removing a missing one is not an error. */
  delete(trustDomain: string, id: string): Promise<void>;
  /** The last `spiffe_sequence` published for a trust domain, 0 when none. */
  readSequence(trustDomain: string): Promise<number>;
  writeSequence(trustDomain: string, sequence: number): Promise<void>;
}

// ---------------------------------------------------------------- registration entries

/**
 * Port: persistence of registration entries.
 *
 * @example
 * await store.insertEntry(entry);
 * const mine = await store.listEntries();
 */
export interface EntryStore {
  insertEntry(entry: RegistrationEntry): Promise<void>;
  getEntry(id: string): Promise<RegistrationEntry | undefined>;
  /** Every entry, ordered by creation time then id. */
  listEntries(): Promise<readonly RegistrationEntry[]>;
  /** Replace an entry when its stored revision is `expectedRevision`; false when it is not (or the entry is gone). */
  updateEntry(entry: RegistrationEntry, expectedRevision: number): Promise<boolean>;
  /** False when there was no such entry. */
  deleteEntry(id: string): Promise<boolean>;
}

// ---------------------------------------------------------------- node attestation

/** A join token as stored: only the hash of its secret. */
export interface JoinTokenRecord {
  /** Public id (16 hex), named in audit events and node selectors. */
  readonly id: string;
  /** Hex SHA-256 of the whole token. */
  readonly tokenHash: string;
  readonly createdAt: string;
  readonly expiresAt: string;
  /** Admin principal id. */
  readonly createdBy: string;
  /** Extra node selectors a node attested with this token receives. */
  readonly selectors: readonly string[];
  readonly usedAt: string | null;
  /** The node that used it. */
  readonly nodeId: string | null;
}

/** Result of consuming a join token. */
export type ConsumeJoinTokenResult =
  | { readonly status: 'consumed'; readonly token: JoinTokenRecord }
  | { readonly status: 'unknown' }
  | { readonly status: 'used'; readonly token: JoinTokenRecord }
  | { readonly status: 'expired'; readonly token: JoinTokenRecord };

/**
 * Port: join tokens. Consumption is atomic across server replicas: of two
 * concurrent consumers of one token exactly one gets `consumed`.
 *
 * @example
 * const r = await store.consumeJoinToken(hash, now, nodeId);
 * if (r.status === 'consumed') …
 */
export interface JoinTokenStore {
  insertJoinToken(token: JoinTokenRecord): Promise<void>;
  /** Mark the token with this hash used by `nodeId` at `at`, unless it is unknown, used or expired at `at`. */
  consumeJoinToken(tokenHash: string, at: string, nodeId: string): Promise<ConsumeJoinTokenResult>;
  listJoinTokens(): Promise<readonly JoinTokenRecord[]>;
}

/** An attested node. */
export interface NodeRecord {
  /** Node id: the last path segment of its SPIFFE ID. */
  readonly id: string;
  readonly spiffeId: string;
  /** `join_token` or `oidc`. */
  readonly attestationType: string;
  /** Selectors attestation produced (`join_token:id:…`, `oidc:iss:…`, `oidc:<key>:…`). */
  readonly selectors: readonly string[];
  readonly attestedAt: string;
  /** Serial number (hex) and expiry of the latest node SVID. */
  readonly svidSerial: string;
  readonly svidNotAfter: string;
  readonly lastSeenAt: string | null;
  readonly evictedAt: string | null;
}

/**
 * Port: attested nodes.
 *
 * @example
 * await store.insertNode(node);
 * await store.evictNode(node.id, now); // true
 */
export interface NodeStore {
  insertNode(node: NodeRecord): Promise<void>;
  getNode(id: string): Promise<NodeRecord | undefined>;
  listNodes(): Promise<readonly NodeRecord[]>;
  /** Record a renewed node SVID; false when the node is unknown or evicted. */
  renewNodeSvid(id: string, serial: string, notAfter: string, at: string): Promise<boolean>;
  /** False when the node is unknown or already evicted. */
  evictNode(id: string, at: string): Promise<boolean>;
}

/**
 * Port: one-time values (attestation token ids, signed-request ids) seen
 * recently, shared by every server replica.
 *
 * @example
 * if (!(await cache.remember('oidc:<iss>:<jti>', exp, now))) throw replayed;
 */
export interface ReplayCache {
  /** Record `key` until `expiresAt`; false when it is already recorded and not expired at `now`. Forgets expired keys. */
  remember(key: string, expiresAt: string, now: string): Promise<boolean>;
}

/** Every port of the identity context's server side, as one store implements them. */
export interface IdentityStore extends CaKeyStore, EntryStore, JoinTokenStore, NodeStore, ReplayCache {}
