/**
 * The server side of workload identity: registration entries, node
 * attestation (join tokens, OIDC/JWT tokens), node SVIDs, and issuance of
 * workload SVIDs to the nodes entitled to serve them. Every change and every
 * issuance is audited; no key or token is ever in an event.
 */
import { createPublicKey, randomBytes } from 'node:crypto';
import { newCorrelationId } from '../kernel/index.ts';
import type { AuditActor, AuditSink, Clock } from '../kernel/index.ts';
import type { TrustBundle } from './bundle.ts';
import type { CaManager, CaKeyInfo, DueStep } from './ca.ts';
import type { CaKeyKind, IdentityStore, JoinTokenRecord, NodeRecord } from './ports.ts';
import { entryErrors } from './entry-errors.ts';
import { checkSelector, entryAppliesToNode, nodeIdOf, nodeSpiffeId, normalizeEntrySpec, patchEntrySpec, serverSpiffeId } from './entries.ts';
import type { EntryLimits, EntrySpec, RegistrationEntry } from './entries.ts';
import { attestationErrors } from './attestation/errors.ts';
import { newJoinToken, parseJoinToken } from './attestation/join-token.ts';
import type { OidcAttestor } from './attestation/oidc.ts';
import { verifyNodeRequest } from './attestation/node-request.ts';
import type { ValidatedX509Svid, X509Svid } from './x509-svid.ts';
import type { JwtSvid } from './jwt-svid.ts';
import type { Secret } from '../kernel/index.ts';
import { identityErrors } from './errors.ts';

/** Who asked, for the audit trail. */
export interface IssuerContext {
  readonly actor: AuditActor;
  readonly correlationId?: string;
  /** How a node authenticated the call (recorded with what it was issued). */
  readonly nodeAuth?: 'mtls' | 'signed-request';
}

/** Options of {@link IdentityIssuer}. */
export interface IdentityIssuerOptions {
  readonly ca: CaManager;
  readonly store: IdentityStore;
  readonly audit: AuditSink;
  readonly clock: Clock;
  readonly oidc?: OidcAttestor;
  readonly x509SvidTtlSeconds: number;
  readonly x509SvidMaxTtlSeconds: number;
  readonly jwtSvidTtlSeconds: number;
  readonly jwtSvidMaxTtlSeconds: number;
  readonly nodeSvidTtlSeconds: number;
  readonly joinTokenTtlSeconds: number;
}

/** A node attestation request, as the node API receives it. */
export interface AttestRequest {
  /** `join_token` or `oidc`. */
  readonly method: string;
  /** The join token or the OIDC/JWT token. */
  readonly token: string;
  /** The node's public key, SPKI PEM; its private half never leaves the node. */
  readonly publicKey: string;
}

/** An issued node SVID. */
export interface NodeSvidResult {
  readonly node: NodeRecord;
  readonly svid: X509Svid;
}

/** One workload X.509-SVID issued to a node. */
export interface WorkloadX509Result {
  readonly entryId: string;
  readonly svid: X509Svid;
}

/**
 * The policy question asked before a workload SVID is signed: may `spiffeId`
 * hold a credential of itself now? `forbidden`: a `forbid` policy matched
 * (issuance refused); `issue`: none did (a permit is NOT required, so a server
 * without policies keeps issuing: SVIDs are identity, not authorization);
 * `unavailable`: the PDP could not answer (issuance refused, fail closed).
 * The server implements it over the PDP (identity cannot reach the PDP).
 */
export type SvidIssuanceGate = (q: { readonly spiffeId: string; readonly kind: 'x509' | 'jwt'; readonly correlationId: string }) => Promise<{ readonly verdict: 'issue' | 'forbidden' | 'unavailable'; readonly reasons: readonly string[]; readonly policies: readonly string[] }>;

const NODE_ID = /^[a-z0-9-]{1,64}$/;
const ENTRY_ID = /^[0-9a-f]{16}$/;

/** Check a public key sent as SPKI PEM or base64 SPKI DER; returns it as PEM. */
function publicKeyPem(raw: unknown): string {
  if (typeof raw !== 'string' || raw.length > 16_384) throw attestationErrors.error('ERR_ATTEST_REQUEST_INVALID', '`publicKey` must be an SPKI public key (PEM, or base64 DER)');
  let key;
  try {
    key = raw.startsWith('-----BEGIN') ? createPublicKey({ key: raw, format: 'pem' }) : createPublicKey({ key: Buffer.from(raw, 'base64'), format: 'der', type: 'spki' });
  } catch {
    throw attestationErrors.error('ERR_ATTEST_REQUEST_INVALID', '`publicKey` is not an SPKI public key (PEM, or base64 DER)');
  }
  const pem = key.export({ format: 'pem', type: 'spki' }).toString();
  const type = key.asymmetricKeyType;
  const curve = key.asymmetricKeyDetails?.namedCurve;
  const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
  if (type === 'ec' && (curve === 'prime256v1' || curve === 'secp384r1')) return pem;
  if (type === 'rsa' && bits >= 2048) return pem;
  throw attestationErrors.error('ERR_ATTEST_REQUEST_INVALID', '`publicKey` must be an EC P-256 or P-384 key, or RSA of at least 2048 bits');
}

/**
 * @example
 * const issuer = new IdentityIssuer({ ca, store, audit, clock, ...limits });
 * const entry = await issuer.createEntry(body, { actor });
 * const { node, svid } = await issuer.attestNode({ method: 'join_token', token, publicKey }, { actor });
 */
/** How long a registration entry read for issuance is reused (ms). */
export const ENTRY_CACHE_MS = 1000;

export class IdentityIssuer {
  readonly ca: CaManager;
  readonly limits: EntryLimits;
  readonly #store: IdentityStore;
  readonly #entryCache = new Map<string, { entry: RegistrationEntry; until: number }>();
  readonly #audit: AuditSink;
  readonly #clock: Clock;
  readonly #oidc: OidcAttestor | undefined;
  readonly #o: IdentityIssuerOptions;
  #gate: SvidIssuanceGate | undefined;

  constructor(options: IdentityIssuerOptions) {
    this.ca = options.ca;
    this.#store = options.store;
    this.#audit = options.audit;
    this.#clock = options.clock;
    this.#oidc = options.oidc;
    this.#o = options;
    this.limits = Object.freeze({ trustDomain: options.ca.trustDomain, x509SvidMaxTtlSeconds: options.x509SvidMaxTtlSeconds, jwtSvidMaxTtlSeconds: options.jwtSvidMaxTtlSeconds });
  }

  /**
   * Ask `gate` before each workload SVID (X.509 and JWT) issued to a node.
   * Set once the PDP exists (it is built after the CA); without one, SVIDs
   * are issued on entitlement alone.
   */
  setIssuanceGate(gate: SvidIssuanceGate): void {
    this.#gate = gate;
  }

  /** The PDP check before signing: refused (and audited as a denied `svid.issued`) unless no `forbid` matched. */
  async #checkGate(kind: 'x509' | 'jwt', entry: RegistrationEntry, node: NodeRecord, ctx: IssuerContext): Promise<void> {
    if (this.#gate === undefined) return;
    const correlationId = ctx.correlationId ?? newCorrelationId();
    let v: Awaited<ReturnType<SvidIssuanceGate>>;
    try {
      v = await this.#gate({ spiffeId: entry.spiffeId, kind, correlationId });
    } catch {
      v = { verdict: 'unavailable', reasons: [], policies: [] };
    }
    if (v.verdict === 'issue') return;
    const forbidden = v.verdict === 'forbidden';
    await this.#event('svid.issued', { ...ctx, correlationId }, { type: 'svid', id: entry.spiffeId, name: entry.spiffeId }, {
      kind, spiffeId: entry.spiffeId, entryId: entry.id, nodeId: node.id, policies: v.policies,
    }, forbidden ? 'denied' : 'failure', [forbidden ? 'policy-forbid' : 'pdp-unavailable', ...v.reasons]);
    if (forbidden) throw identityErrors.error('ERR_IDENTITY_SVID_FORBIDDEN', `policy forbids issuing an SVID of \`${entry.spiffeId}\` now (${v.policies.join(', ') || 'forbid'})`);
    throw identityErrors.error('ERR_IDENTITY_SVID_POLICY_UNAVAILABLE', `the policy decision point could not decide on an SVID of \`${entry.spiffeId}\`; none issued`);
  }

  /** The current trust bundle. */
  bundle(): TrustBundle {
    return this.ca.bundle();
  }

  async #event(action: string, ctx: IssuerContext, target: { type: string; id: string; name?: string }, details: Record<string, unknown>, outcome: 'success' | 'failure' | 'denied' = 'success', reasons: readonly string[] = []): Promise<void> {
    await this.#audit.append({ action, actor: ctx.actor, target, outcome, reasons, correlationId: ctx.correlationId ?? newCorrelationId(), time: this.#clock.now().toISOString(), details });
  }

  // ------------------------------------------------------------ entries

  /** Register an entry; refused without an owner. */
  async createEntry(raw: unknown, ctx: IssuerContext): Promise<RegistrationEntry> {
    const spec = normalizeEntrySpec(raw, this.limits);
    const now = this.#clock.now().toISOString();
    const entry: RegistrationEntry = { ...spec, id: randomBytes(8).toString('hex'), createdAt: now, updatedAt: now, createdBy: ctx.actor.id, revision: 1 };
    await this.#rejectDuplicate(entry);
    await this.#store.insertEntry(entry);
    await this.#event('entry.created', ctx, { type: 'registration-entry', id: entry.id, name: entry.spiffeId }, entryDetails(entry));
    return entry;
  }

  async #rejectDuplicate(entry: RegistrationEntry): Promise<void> {
    const key = duplicateKey(entry);
    for (const other of await this.#store.listEntries()) {
      if (other.id !== entry.id && duplicateKey(other) === key) {
        throw entryErrors.error('ERR_ENTRY_CONFLICT', `entry \`${other.id}\` already registers \`${entry.spiffeId}\` with the same parent and selectors`);
      }
    }
  }

  async getEntry(id: string): Promise<RegistrationEntry> {
    const entry = ENTRY_ID.test(id) ? await this.#store.getEntry(id) : undefined;
    if (entry === undefined) throw entryErrors.error('ERR_ENTRY_NOT_FOUND', `no entry \`${id.slice(0, 64)}\``);
    return entry;
  }

  listEntries(): Promise<readonly RegistrationEntry[]> {
    return this.#store.listEntries();
  }

  /** Apply a merge patch; with `expectedRevision`, refuse when the entry changed since it was read. */
  async updateEntry(id: string, patch: unknown, ctx: IssuerContext, expectedRevision?: number): Promise<RegistrationEntry> {
    const current = await this.getEntry(id);
    if (expectedRevision !== undefined && expectedRevision !== current.revision) {
      throw entryErrors.error('ERR_ENTRY_CONFLICT', `entry \`${id}\` is at revision ${current.revision}, not ${expectedRevision}`);
    }
    const spec: EntrySpec = patchEntrySpec(specOf(current), patch, this.limits);
    const next: RegistrationEntry = { ...spec, id, createdAt: current.createdAt, createdBy: current.createdBy, updatedAt: this.#clock.now().toISOString(), revision: current.revision + 1 };
    await this.#rejectDuplicate(next);
    this.#entryCache.delete(id);
    if (!(await this.#store.updateEntry(next, current.revision))) throw entryErrors.error('ERR_ENTRY_CONFLICT', `entry \`${id}\` changed while it was updated; read it again`);
    await this.#event('entry.updated', ctx, { type: 'registration-entry', id, name: next.spiffeId }, { ...entryDetails(next), previousRevision: current.revision });
    return next;
  }

  async deleteEntry(id: string, ctx: IssuerContext): Promise<void> {
    const current = await this.getEntry(id);
    this.#entryCache.delete(id);
    if (!(await this.#store.deleteEntry(id))) throw entryErrors.error('ERR_ENTRY_NOT_FOUND', `no entry \`${id}\``);
    await this.#event('entry.deleted', ctx, { type: 'registration-entry', id, name: current.spiffeId }, entryDetails(current));
  }

  // ------------------------------------------------------------ join tokens

  /** A new single-use join token; the token is in the result and nowhere else. */
  async createJoinToken(options: { ttlSeconds?: number; selectors?: readonly string[] }, ctx: IssuerContext): Promise<{ record: JoinTokenRecord; token: Secret<string> }> {
    const ttl = options.ttlSeconds ?? this.#o.joinTokenTtlSeconds;
    if (!(Number.isSafeInteger(ttl) && ttl > 0 && ttl <= 7 * 86_400)) throw attestationErrors.error('ERR_ATTEST_REQUEST_INVALID', 'join token `ttlSeconds` must be 1 to 604800');
    const selectors = [...new Set((options.selectors ?? []).map((s) => checkSelector(s, 'node selector')))].sort();
    const { token, record } = newJoinToken(this.#clock, ttl, ctx.actor.id, selectors);
    await this.#store.insertJoinToken(record);
    await this.#event('join_token.created', ctx, { type: 'join-token', id: record.id }, { expiresAt: record.expiresAt, ttlSeconds: ttl, selectors });
    return { record, token };
  }

  listJoinTokens(): Promise<readonly JoinTokenRecord[]> {
    return this.#store.listJoinTokens();
  }

  // ------------------------------------------------------------ nodes

  /**
   * Attest a node and issue its node SVID (`spiffe://<td>/writ/node/<id>`).
   * Failures are audited with their code and rethrown.
   */
  async attestNode(request: AttestRequest, ctx: IssuerContext): Promise<NodeSvidResult> {
    const correlationId = ctx.correlationId ?? newCorrelationId();
    const c = { ...ctx, correlationId };
    try {
      return await this.#attest(request, c);
    } catch (e) {
      const code = (e as { code?: unknown }).code;
      await this.#event('node.attested', c, { type: 'node', id: 'unknown' }, { method: typeof request.method === 'string' ? request.method.slice(0, 32) : 'unknown', code: typeof code === 'string' ? code : 'ERR_UNKNOWN' }, 'failure', [typeof code === 'string' ? code.toLowerCase().replace(/^err_/, '').replace(/_/g, '-') : 'attestation-failed']);
      throw e;
    }
  }

  async #attest(request: AttestRequest, ctx: IssuerContext): Promise<NodeSvidResult> {
    // The key is checked before the token is consumed, so a bad request does not burn a join token.
    const publicKey = publicKeyPem(request.publicKey);
    const now = this.#clock.now().toISOString();
    let nodeId: string;
    let selectors: string[];
    let details: Record<string, unknown>;
    let existing: NodeRecord | undefined;
    if (request.method === 'join_token') {
      const { hash, id } = parseJoinToken(request.token);
      nodeId = randomBytes(8).toString('hex');
      const r = await this.#store.consumeJoinToken(hash, now, nodeId);
      if (r.status === 'unknown') throw attestationErrors.error('ERR_ATTEST_JOIN_TOKEN_INVALID', `join token \`${id}\` is not known`);
      if (r.status === 'used') throw attestationErrors.error('ERR_ATTEST_JOIN_TOKEN_USED', `join token \`${id}\` was already used`);
      if (r.status === 'expired') throw attestationErrors.error('ERR_ATTEST_JOIN_TOKEN_EXPIRED', `join token \`${id}\` expired at ${r.token.expiresAt}`);
      selectors = [...new Set([`join_token:id:${id}`, ...r.token.selectors])].sort();
      details = { method: 'join_token', joinTokenId: id };
    } else if (request.method === 'oidc') {
      if (this.#oidc === undefined) throw attestationErrors.error('ERR_ATTEST_OIDC_ISSUER_UNKNOWN', 'no OIDC issuer is configured for node attestation');
      const a = await this.#oidc.attest(request.token);
      nodeId = a.nodeId;
      selectors = [...a.selectors];
      details = { method: 'oidc', issuer: a.issuer };
      existing = await this.#store.getNode(nodeId);
      if (existing !== undefined && existing.evictedAt !== null) throw attestationErrors.error('ERR_ATTEST_NODE_EVICTED', `node \`${nodeId}\` was evicted`);
    } else {
      throw attestationErrors.error('ERR_ATTEST_REQUEST_INVALID', '`method` must be `join_token` or `oidc`');
    }
    if (!NODE_ID.test(nodeId)) throw new TypeError('node id out of shape');
    const spiffeId = nodeSpiffeId(this.ca.trustDomain, nodeId);
    const svid = await this.ca.issueX509Svid({ spiffeId, publicKey, ttlMs: this.#o.nodeSvidTtlSeconds * 1000 });
    const serial = svid.serialNumber.toLowerCase();
    let node: NodeRecord;
    if (existing === undefined) {
      node = { id: nodeId, spiffeId, attestationType: request.method, selectors, attestedAt: now, svidSerial: serial, svidNotAfter: svid.notAfter.toISOString(), lastSeenAt: now, evictedAt: null };
      await this.#store.insertNode(node);
    } else {
      if (!(await this.#store.renewNodeSvid(nodeId, serial, svid.notAfter.toISOString(), now))) throw attestationErrors.error('ERR_ATTEST_NODE_EVICTED', `node \`${nodeId}\` was evicted`);
      node = { ...existing, selectors, svidSerial: serial, svidNotAfter: svid.notAfter.toISOString(), lastSeenAt: now };
    }
    const nodeCtx = { ...ctx, actor: { ...ctx.actor, type: 'node' as const, id: spiffeId } };
    await this.#event('node.attested', nodeCtx, { type: 'node', id: nodeId, name: spiffeId }, { ...details, selectors, reattested: existing !== undefined });
    await this.#svidIssued(nodeCtx, 'x509', svid.serialNumber, spiffeId, undefined, node, svid.issuedAt, svid.notAfter);
    return { node, svid };
  }

  /**
   * Authenticate a node API request by its signature (see
   * attestation/node-request.ts) and check the node is known and not evicted.
   */
  async authenticateNode(authorization: unknown, request: { method: string; path: string; body: string | Uint8Array | undefined }): Promise<NodeRecord> {
    const who = await verifyNodeRequest(authorization, request, { trustDomain: this.ca.trustDomain, bundle: this.ca.bundle(), clock: this.#clock, replay: this.#store });
    const node = await this.#store.getNode(who.nodeId);
    if (node === undefined) throw attestationErrors.error('ERR_ATTEST_NODE_UNKNOWN', `node \`${who.nodeId}\` is not known`);
    // Allow is the only explicit branch: an evicted node gets nothing more.
    if (node.evictedAt === null) return node;
    throw attestationErrors.error('ERR_ATTEST_NODE_EVICTED', `node \`${node.id}\` was evicted`);
  }

  /**
   * Authenticate a node by the X.509-SVID it presented as its TLS client
   * certificate (already validated against this trust domain's bundle by the
   * TLS layer, X509-SVID §5): it must be a node SVID of a known node that was
   * not evicted. The TLS handshake proved possession of the key.
   */
  async authenticateNodeSvid(svid: ValidatedX509Svid): Promise<NodeRecord> {
    const nodeId = nodeIdOf(this.ca.trustDomain, svid.spiffeId.toString());
    if (nodeId === undefined) throw attestationErrors.error('ERR_ATTEST_NODE_UNAUTHENTICATED', 'the TLS client certificate is not a node SVID of this trust domain');
    const node = await this.#store.getNode(nodeId);
    if (node === undefined) throw attestationErrors.error('ERR_ATTEST_NODE_UNKNOWN', `node \`${nodeId}\` is not known`);
    // Allow is the only explicit branch: an evicted node gets nothing more.
    if (node.evictedAt === null) return node;
    throw attestationErrors.error('ERR_ATTEST_NODE_EVICTED', `node \`${node.id}\` was evicted`);
  }

  /** The server's own SPIFFE ID (`spiffe://<td>/writ/server`). */
  serverSpiffeId(): string {
    return serverSpiffeId(this.ca.trustDomain);
  }

  /**
   * Issue the X.509-SVID the server's TLS listener presents: its own SPIFFE
   * ID, the DNS names clients connect to, and the key the listener generated
   * (it never leaves the process). Audited as `svid.issued` (reason `server-tls`).
   */
  async issueServerSvid(publicKey: string, dnsNames: readonly string[], ctx: IssuerContext): Promise<X509Svid> {
    const pem = publicKeyPem(publicKey);
    const spiffeId = this.serverSpiffeId();
    const svid = await this.ca.issueX509Svid({ spiffeId, publicKey: pem, dnsNames, ttlMs: this.#o.x509SvidTtlSeconds * 1000 });
    await this.#event('svid.issued', ctx, { type: 'svid', id: svid.serialNumber.toLowerCase(), name: spiffeId }, {
      kind: 'x509',
      serialNumber: svid.serialNumber.toLowerCase(),
      spiffeId,
      entryId: null,
      nodeId: null,
      dnsNames,
      ttlSeconds: Math.ceil((svid.notAfter.getTime() - svid.issuedAt.getTime()) / 1000),
      expiresAt: svid.notAfter.toISOString(),
    }, 'success', ['server-tls']);
    return svid;
  }

  /** A fresh node SVID for an authenticated node (renewal, with a new key if the node rotated it). */
  async renewNode(node: NodeRecord, publicKey: unknown, ctx: IssuerContext): Promise<NodeSvidResult> {
    const pem = publicKeyPem(publicKey);
    const svid = await this.ca.issueX509Svid({ spiffeId: node.spiffeId, publicKey: pem, ttlMs: this.#o.nodeSvidTtlSeconds * 1000 });
    const now = this.#clock.now().toISOString();
    if (!(await this.#store.renewNodeSvid(node.id, svid.serialNumber.toLowerCase(), svid.notAfter.toISOString(), now))) throw attestationErrors.error('ERR_ATTEST_NODE_EVICTED', `node \`${node.id}\` was evicted`);
    await this.#svidIssued(ctx, 'x509', svid.serialNumber, node.spiffeId, undefined, node, svid.issuedAt, svid.notAfter, ['node-renewal']);
    return { node: { ...node, svidSerial: svid.serialNumber.toLowerCase(), svidNotAfter: svid.notAfter.toISOString(), lastSeenAt: now }, svid };
  }

  /** The entries `node` may serve. */
  async entriesForNode(node: NodeRecord): Promise<readonly RegistrationEntry[]> {
    return (await this.#store.listEntries()).filter((e) => entryAppliesToNode(e, node));
  }

  async #entitledEntry(node: NodeRecord, entryId: unknown): Promise<RegistrationEntry> {
    const entry = typeof entryId === 'string' && ENTRY_ID.test(entryId) ? await this.#cachedEntry(entryId) : undefined;
    // Allow is the only explicit branch; an unknown entry and a foreign one read the same.
    if (entry !== undefined && entryAppliesToNode(entry, node)) return entry;
    throw attestationErrors.error('ERR_ATTEST_NOT_ENTITLED', `node \`${node.id}\` may not serve entry \`${String(entryId).slice(0, 64)}\``);
  }

  /**
   * Entries are read on every issuance, so they are cached for
   * ENTRY_CACHE_MS. This replica's own updates and deletions drop the cached
   * copy at once.
   * NOTE: a change made on another replica reaches this one within
   * ENTRY_CACHE_MS (SPIRE's entry cache refreshes every 5 s for the same reason).
   */
  async #cachedEntry(id: string): Promise<RegistrationEntry | undefined> {
    const now = this.#clock.nowMs();
    const hit = this.#entryCache.get(id);
    if (hit !== undefined && hit.until > now) return hit.entry;
    const entry = await this.#store.getEntry(id);
    if (entry === undefined) {
      this.#entryCache.delete(id);
      return undefined;
    }
    if (this.#entryCache.size >= 10_000) this.#entryCache.clear();
    this.#entryCache.set(id, { entry, until: now + ENTRY_CACHE_MS });
    return entry;
  }

  /** Issue workload X.509-SVIDs for entries `node` may serve, for public keys the node sends. */
  async issueX509ForNode(node: NodeRecord, requests: readonly { entryId: string; publicKey: string }[], ctx: IssuerContext): Promise<readonly WorkloadX509Result[]> {
    const out: WorkloadX509Result[] = [];
    for (const r of requests) {
      const entry = await this.#entitledEntry(node, r.entryId);
      const pem = publicKeyPem(r.publicKey);
      await this.#checkGate('x509', entry, node, ctx);
      const svid = await this.ca.issueX509Svid({
        spiffeId: entry.spiffeId,
        publicKey: pem,
        dnsNames: entry.dnsNames,
        ttlMs: (entry.x509SvidTtlSeconds ?? this.#o.x509SvidTtlSeconds) * 1000,
      });
      await this.#svidIssued(ctx, 'x509', svid.serialNumber, entry.spiffeId, entry.id, node, svid.issuedAt, svid.notAfter);
      out.push({ entryId: entry.id, svid });
    }
    return out;
  }

  /** Sign a workload JWT-SVID for an entry `node` may serve. */
  async issueJwtForNode(node: NodeRecord, request: { entryId: string; audience: readonly string[] }, ctx: IssuerContext): Promise<JwtSvid> {
    const entry = await this.#entitledEntry(node, request.entryId);
    await this.#checkGate('jwt', entry, node, ctx);
    const svid = await this.ca.signJwtSvid({ spiffeId: entry.spiffeId, audience: request.audience, ttlMs: (entry.jwtSvidTtlSeconds ?? this.#o.jwtSvidTtlSeconds) * 1000 });
    await this.#svidIssued(ctx, 'jwt', undefined, entry.spiffeId, entry.id, node, svid.issuedAt, svid.expiresAt, [], { kid: svid.kid, audience: svid.audience });
    return svid;
  }

  async #svidIssued(ctx: IssuerContext, kind: 'x509' | 'jwt', serial: string | undefined, spiffeId: string, entryId: string | undefined, node: NodeRecord, from: Date, to: Date, reasons: readonly string[] = [], extra: Record<string, unknown> = {}): Promise<void> {
    // Public facts only: never a private key, never the JWT itself.
    await this.#event('svid.issued', ctx, { type: 'svid', id: serial ?? spiffeId, name: spiffeId }, {
      kind,
      ...(serial === undefined ? {} : { serialNumber: serial.toLowerCase() }),
      spiffeId,
      entryId: entryId ?? null,
      nodeId: node.id,
      // Lifetime from the signing instant, not from a later reading of the clock (which drifts
      // with the time the issuance took) nor from an X.509 notBefore (backdated for clock skew).
      ttlSeconds: Math.ceil((to.getTime() - from.getTime()) / 1000),
      expiresAt: to.toISOString(),
      ...(ctx.nodeAuth === undefined ? {} : { nodeAuth: ctx.nodeAuth }),
      ...extra,
    }, 'success', reasons);
  }

  listNodes(): Promise<readonly NodeRecord[]> {
    return this.#store.listNodes();
  }

  async getNode(id: string): Promise<NodeRecord> {
    const node = NODE_ID.test(id) ? await this.#store.getNode(id) : undefined;
    if (node === undefined) throw attestationErrors.error('ERR_ATTEST_NODE_NOT_FOUND', `no node \`${id.slice(0, 64)}\``);
    return node;
  }

  /** Evict a node: from now on it gets nothing more (no renewal, no entries, no SVIDs). */
  async evictNode(id: string, ctx: IssuerContext): Promise<NodeRecord> {
    const node = await this.getNode(id);
    const at = this.#clock.now().toISOString();
    if (!(await this.#store.evictNode(id, at))) throw attestationErrors.error('ERR_ATTEST_NODE_EVICTED', `node \`${id}\` is already evicted`);
    await this.#event('node.evicted', ctx, { type: 'node', id, name: node.spiffeId }, { spiffeId: node.spiffeId, svidSerial: node.svidSerial, svidNotAfter: node.svidNotAfter });
    return { ...node, evictedAt: at };
  }

  // ------------------------------------------------------------ CA

  /** Rotate the X.509 signing CA, the JWT key, or both, now (prepare → prove → activate). */
  async rotate(kinds: readonly CaKeyKind[], ctx: IssuerContext): Promise<readonly CaKeyInfo[]> {
    const correlationId = ctx.correlationId ?? newCorrelationId();
    for (const kind of kinds) await this.ca.rotate(kind, { actor: ctx.actor, correlationId });
    return this.ca.keys();
  }

  /** Perform the scheduled rotation steps that are due. */
  runDue(ctx: Partial<IssuerContext> = {}): Promise<readonly DueStep[]> {
    return this.ca.runDue({ ...(ctx.actor === undefined ? {} : { actor: ctx.actor }), ...(ctx.correlationId === undefined ? {} : { correlationId: ctx.correlationId }) });
  }
}

function specOf(e: RegistrationEntry): EntrySpec {
  const { id: _id, createdAt: _c, updatedAt: _u, createdBy: _b, revision: _r, ...spec } = e;
  return spec;
}

function duplicateKey(e: EntrySpec): string {
  return JSON.stringify([e.spiffeId, e.parentId ?? null, e.nodeSelectors ?? null, e.selectors]);
}

function entryDetails(e: RegistrationEntry): Record<string, unknown> {
  return {
    spiffeId: e.spiffeId,
    parentId: e.parentId ?? null,
    nodeSelectors: e.nodeSelectors ?? null,
    selectors: e.selectors,
    owner: e.owner,
    revision: e.revision,
    x509SvidTtlSeconds: e.x509SvidTtlSeconds ?? null,
    jwtSvidTtlSeconds: e.jwtSvidTtlSeconds ?? null,
    dnsNames: e.dnsNames,
    environment: e.environment ?? null,
  };
}
