/**
 * A fake of the server's node API for tests, backed by real signing: a
 * {@link CaManager} in memory signs node SVIDs, X.509-SVIDs and JWT-SVIDs, and
 * the node credential is checked the way the server checks it (chain to the
 * bundle, key possession, eviction). Tests switch an outage on and off,
 * add and remove entries and evict nodes.
 */
import { createPrivateKey, randomBytes, X509Certificate as NodeX509Certificate } from 'node:crypto';
import { defineErrorCatalog } from '../../kernel/index.ts';
import type { Clock } from '../../kernel/index.ts';
import { CollectingAuditSink } from '../audit-sink.test-support.ts';
import { CaManager } from '../ca.ts';
import { MemoryCaKeyStore } from '../memory-ca-key-store.test-support.ts';
import { validateX509Svid } from '../x509-svid.ts';
import { agentErrors } from './errors.ts';
import { identityErrors } from '../errors.ts';
import type { AgentEntry, IssuedJwtSvid, IssuedNodeSvid, IssuedX509Svid, NodeApi, NodeAttestationEvidence, AgentNodeCredential } from './node-api.ts';

/** Error codes the fake server answers with (stand-ins for the server's own). */
export const fakeServerErrors = defineErrorCatalog('FAKE', {
  ERR_FAKE_TOKEN_INVALID: { status: 401, description: 'join token unknown or already used' },
  ERR_FAKE_NODE_UNKNOWN: { status: 401, description: 'node credential not accepted' },
  ERR_FAKE_NODE_EVICTED: { status: 403, description: 'node evicted' },
  ERR_FAKE_ENTRY_NOT_FOUND: { status: 404, description: 'no such entry for this node' },
});

/** An entry as the fake server keeps it. */
export interface FakeEntry extends AgentEntry {
  /** The node SPIFFE ID the entry is for; every node when absent. */
  readonly parentId?: string;
  readonly x509TtlMs?: number;
  readonly jwtTtlMs?: number;
}

/** Options of {@link FakeNodeServer.create}. */
export interface FakeNodeServerOptions {
  readonly clock: Clock;
  readonly trustDomain?: string;
  readonly x509SvidTtlMs?: number;
  readonly jwtSvidTtlMs?: number;
  readonly nodeTtlMs?: number;
  readonly refreshHintSeconds?: number;
}

/**
 * @example
 * const server = await FakeNodeServer.create({ clock });
 * server.addJoinToken('t1', 'node-a');
 * server.putEntry({ id: 'e1', spiffeId: 'spiffe://example.org/web', selectors: ['unix:uid:1000'] });
 */
export class FakeNodeServer implements NodeApi {
  readonly ca: CaManager;
  readonly clock: Clock;
  readonly audit: CollectingAuditSink;
  readonly #nodeTtlMs: number;
  readonly #x509TtlMs: number;
  readonly #jwtTtlMs: number;
  readonly #tokens = new Map<string, string>();
  readonly #entries = new Map<string, FakeEntry>();
  readonly #evicted = new Set<string>();
  /** While true every call fails as if the server were down. */
  outage = false;
  /** SPIFFE IDs whose SVIDs policy forbids now (`ERR_IDENTITY_SVID_FORBIDDEN`, as the real server's policy check). */
  readonly forbidden = new Set<string>();
  /** When set, X.509-SVID issuance waits for it after the checks (an issuance held in flight). */
  hold: Promise<void> | undefined;
  /** Every call, by method name, in order. */
  readonly calls: string[] = [];

  private constructor(ca: CaManager, audit: CollectingAuditSink, options: FakeNodeServerOptions) {
    this.ca = ca;
    this.audit = audit;
    this.clock = options.clock;
    this.#nodeTtlMs = options.nodeTtlMs ?? 60 * 60_000;
    this.#x509TtlMs = options.x509SvidTtlMs ?? 15 * 60_000;
    this.#jwtTtlMs = options.jwtSvidTtlMs ?? 5 * 60_000;
  }

  static async create(options: FakeNodeServerOptions): Promise<FakeNodeServer> {
    const audit = new CollectingAuditSink();
    const ca = await CaManager.open({
      trustDomain: options.trustDomain ?? 'example.org',
      clock: options.clock,
      audit,
      store: new MemoryCaKeyStore(),
      kek: randomBytes(32),
      refreshHintSeconds: options.refreshHintSeconds ?? 300,
      x509SvidMaxTtlMs: 24 * 60 * 60_000,
      jwtSvidMaxTtlMs: 24 * 60 * 60_000,
    });
    return new FakeNodeServer(ca, audit, options);
  }

  /** A single-use join token that attests a node as `spiffe://<td>/writ/node/<name>`. */
  addJoinToken(token: string, nodeName: string): void {
    this.#tokens.set(token, nodeName);
  }

  nodeId(nodeName: string): string {
    return `spiffe://${this.ca.trustDomain.name}/writ/node/${nodeName}`;
  }

  putEntry(entry: FakeEntry): void {
    this.#entries.set(entry.id, entry);
  }

  removeEntry(id: string): void {
    this.#entries.delete(id);
  }

  evict(nodeSpiffeId: string): void {
    this.#evicted.add(nodeSpiffeId);
  }

  #call(name: string): void {
    this.calls.push(name);
    if (this.outage) throw agentErrors.error('ERR_IDENTITY_AGENT_SERVER_UNAVAILABLE', 'cannot reach the writ server (fake outage)');
  }

  /** The node a credential proves, as the server would check it over mTLS. */
  #authenticate(credential: AgentNodeCredential): string {
    let id: string;
    try {
      id = validateX509Svid(credential.certChainDer, this.ca.bundle(), this.clock).spiffeId.toString();
      const leaf = credential.certChainDer[0];
      if (leaf === undefined) throw new Error('no leaf');
      const key = createPrivateKey({ key: Buffer.from(credential.privateKeyPkcs8Der), format: 'der', type: 'pkcs8' });
      if (!new NodeX509Certificate(leaf).checkPrivateKey(key)) throw new Error('key mismatch');
    } catch (cause) {
      throw fakeServerErrors.error('ERR_FAKE_NODE_UNKNOWN', 'node credential not accepted', { cause });
    }
    if (this.#evicted.has(id)) throw fakeServerErrors.error('ERR_FAKE_NODE_EVICTED', `node \`${id}\` is evicted`);
    return id;
  }

  #entryFor(nodeId: string, entryId: string): FakeEntry {
    const e = this.#entries.get(entryId);
    if (e === undefined || (e.parentId !== undefined && e.parentId !== nodeId)) {
      throw fakeServerErrors.error('ERR_FAKE_ENTRY_NOT_FOUND', `no entry \`${entryId}\` for this node`);
    }
    return e;
  }

  #policy(spiffeId: string): void {
    if (this.forbidden.has(spiffeId)) throw identityErrors.error('ERR_IDENTITY_SVID_FORBIDDEN', `policy forbids issuing an SVID of \`${spiffeId}\` now (posture-floor)`);
  }

  async #nodeSvid(nodeId: string, publicKey: Uint8Array): Promise<IssuedNodeSvid> {
    const svid = await this.ca.issueX509Svid({ spiffeId: nodeId, publicKey, ttlMs: this.#nodeTtlMs });
    return { spiffeId: nodeId, certChainDer: svid.chain, notBeforeMs: svid.notBefore.getTime(), notAfterMs: svid.notAfter.getTime() };
  }

  async attest(evidence: NodeAttestationEvidence, publicKey: Uint8Array): Promise<IssuedNodeSvid> {
    this.#call('attest');
    const name = evidence.kind === 'join_token' ? this.#tokens.get(evidence.token) : undefined;
    if (name === undefined) throw fakeServerErrors.error('ERR_FAKE_TOKEN_INVALID', 'join token unknown or already used');
    this.#tokens.delete(evidence.token);
    return this.#nodeSvid(this.nodeId(name), publicKey);
  }

  async renew(credential: AgentNodeCredential, publicKey: Uint8Array): Promise<IssuedNodeSvid> {
    this.#call('renew');
    return this.#nodeSvid(this.#authenticate(credential), publicKey);
  }

  async fetchEntries(credential: AgentNodeCredential): Promise<readonly AgentEntry[]> {
    this.#call('fetchEntries');
    const node = this.#authenticate(credential);
    return [...this.#entries.values()]
      .filter((e) => e.parentId === undefined || e.parentId === node)
      .map((e) => ({ id: e.id, spiffeId: e.spiffeId, selectors: [...e.selectors], ...(e.revision === undefined ? {} : { revision: e.revision }) }));
  }

  async issueX509(credential: AgentNodeCredential, entryId: string, publicKey: Uint8Array): Promise<IssuedX509Svid> {
    this.#call('issueX509');
    const e = this.#entryFor(this.#authenticate(credential), entryId);
    this.#policy(e.spiffeId);
    await this.hold;
    const svid = await this.ca.issueX509Svid({ spiffeId: e.spiffeId, publicKey, ttlMs: e.x509TtlMs ?? this.#x509TtlMs });
    return { spiffeId: e.spiffeId, certChainDer: svid.chain, notBeforeMs: svid.notBefore.getTime(), notAfterMs: svid.notAfter.getTime() };
  }

  async issueJwt(credential: AgentNodeCredential, entryId: string, audience: readonly string[]): Promise<IssuedJwtSvid> {
    this.#call('issueJwt');
    const e = this.#entryFor(this.#authenticate(credential), entryId);
    this.#policy(e.spiffeId);
    const svid = await this.ca.signJwtSvid({ spiffeId: e.spiffeId, audience, ttlMs: e.jwtTtlMs ?? this.#jwtTtlMs });
    return { spiffeId: e.spiffeId, token: svid.token, issuedAtMs: svid.issuedAt.getTime(), expiresAtMs: svid.expiresAt.getTime() };
  }

  async fetchBundle(credential: AgentNodeCredential): Promise<string> {
    this.#call('fetchBundle');
    this.#authenticate(credential);
    return this.ca.bundle().toJson();
  }
}
