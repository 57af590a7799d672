/**
 * The port through which the agent talks to the Writ server: node
 * attestation, node credential renewal, the registration entries of this
 * node, workload SVID issuance and the trust bundle.
 *
 * The agent generates every private key itself and sends only public keys:
 * no private key ever crosses this port. The HTTP adapter of the server's
 * node API implements it; tests implement it with a CA in memory.
 *
 * Errors: an implementation throws a WritError whose `status` classifies the
 * failure, and the agent acts on that class only:
 * - status >= 500 (or `ERR_IDENTITY_AGENT_SERVER_UNAVAILABLE`): an outage;
 *   the agent keeps serving what it has cached and retries;
 * - 401 / 403: the server refuses this node (node evicted, credential
 *   unknown or expired); the agent stops serving every entry;
 * - 404 on an entry: the entry is gone; the agent stops serving it;
 * - `ERR_IDENTITY_SVID_FORBIDDEN` (403) on an SVID request: policy forbids
 *   this workload's SVIDs now; the agent drops that entry's cached SVIDs,
 *   reports the refusal in its status and asks again at the next sync;
 * - any other 4xx: the request itself was refused.
 */
import type { Selector } from './selectors.ts';

/** A `subject-revoked` event for a workload this node serves (no key material). */
export interface AgentRevocation {
  /** Position on the server's revocation bus; resume after it. */
  readonly cursor: number;
  /** The revoked SPIFFE ID. */
  readonly subject: string;
  readonly reason: string;
  readonly at: string;
}

/** What {@link NodeApi.followRevocations} reports while the stream is open. */
export interface RevocationListener {
  /** The stream is open (the server accepted the node). */
  opened(): void;
  revoked(event: AgentRevocation): void;
  /** The server is alive; `cursor` is where a resumed stream starts. */
  heartbeat(cursor: number): void;
}

/** What a node presents to be attested: a single-use join token or an OIDC/JWT token. */
export type NodeAttestationEvidence =
  | { readonly kind: 'join_token'; readonly token: string }
  | { readonly kind: 'oidc'; readonly token: string };

/**
 * The agent's node credential: its node X.509-SVID and the private key the
 * agent generated for it. The private key never leaves the agent; adapters
 * use it only to authenticate (mTLS or a proof of possession).
 */
export interface AgentNodeCredential {
  /** The node's SPIFFE ID. */
  readonly spiffeId: string;
  /** DER certificates, leaf first. */
  readonly certChainDer: readonly Uint8Array[];
  /** Unencrypted PKCS#8 DER of the node key (stays on the node). */
  readonly privateKeyPkcs8Der: Uint8Array;
  readonly notBeforeMs: number;
  readonly notAfterMs: number;
  /** An opaque bearer the server may hand out with the SVID (never logged). */
  readonly token?: string;
}

/** What the server returns for an attestation or a renewal (no private key). */
export interface IssuedNodeSvid {
  readonly spiffeId: string;
  readonly certChainDer: readonly Uint8Array[];
  readonly notBeforeMs: number;
  readonly notAfterMs: number;
  readonly token?: string;
}

/** A registration entry the server assigned to this node. */
export interface AgentEntry {
  readonly id: string;
  readonly spiffeId: string;
  /** Workload selectors; the entry matches a caller holding all of them. */
  readonly selectors: readonly Selector[];
  readonly dnsNames?: readonly string[];
  /** Changes whenever the entry changes, so the agent knows to re-issue. */
  readonly revision?: string;
}

/** An X.509-SVID the server signed for a public key the agent sent. */
export interface IssuedX509Svid {
  readonly spiffeId: string;
  /** DER certificates, leaf first, then intermediates (never the root). */
  readonly certChainDer: readonly Uint8Array[];
  readonly notBeforeMs: number;
  readonly notAfterMs: number;
}

/** A JWT-SVID the server signed. */
export interface IssuedJwtSvid {
  readonly spiffeId: string;
  readonly token: string;
  readonly issuedAtMs: number;
  readonly expiresAtMs: number;
}

/**
 * The server's node API.
 *
 * @example
 * const issued = await api.attest({ kind: 'join_token', token }, nodeSpkiDer);
 * const entries = await api.fetchEntries(credential);
 * const svid = await api.issueX509(credential, entries[0].id, workloadSpkiDer);
 */
export interface NodeApi {
  /** Attest this node once; `publicKey` is the SPKI DER of the key the agent generated. */
  attest(evidence: NodeAttestationEvidence, publicKey: Uint8Array): Promise<IssuedNodeSvid>;
  /** Renew the node SVID for a new key, authenticated by the current credential. */
  renew(credential: AgentNodeCredential, publicKey: Uint8Array): Promise<IssuedNodeSvid>;
  /** The registration entries of this node (workloads the agent may serve). */
  fetchEntries(credential: AgentNodeCredential): Promise<readonly AgentEntry[]>;
  /** Sign an X.509-SVID of `entryId` for the SPKI DER `publicKey`. */
  issueX509(credential: AgentNodeCredential, entryId: string, publicKey: Uint8Array): Promise<IssuedX509Svid>;
  /** Sign a JWT-SVID of `entryId` for `audience`. */
  issueJwt(credential: AgentNodeCredential, entryId: string, audience: readonly string[]): Promise<IssuedJwtSvid>;
  /** The trust bundle of the server's trust domain as a SPIFFE bundle document (JSON text or object). */
  fetchBundle(credential: AgentNodeCredential): Promise<string | object>;
  /**
   * Follow the revocations of this node's workloads (`GET
   * /node/v1/revocations/stream`) from after `fromCursor` (`undefined`: from
   * now) until `signal` aborts; rejects (classified as above) when the
   * stream cannot be opened or ends. Optional: without it the agent learns of
   * revocations only from refused issuance.
   */
  followRevocations?(credential: AgentNodeCredential, fromCursor: number | undefined, listener: RevocationListener, signal: AbortSignal): Promise<void>;
}
