/**
 * The CA manager of one trust domain: a root (self-signed, or an upstream CA
 * given as key + chain), a signing CA for X.509-SVIDs, and JWT-SVID signing
 * keys. Every key moves through the slots of `key-slots.ts`
 * (prepare → prove → activate → retire), each step persisted through the
 * {@link CaKeyStore} port (private keys envelope-encrypted first) and audited
 * through the kernel's {@link AuditSink} without key material.
 *
 * Rotation happens on demand ({@link CaManager.rotate}) or on schedule:
 * {@link CaManager.due} names the steps whose time has come and
 * {@link CaManager.runDue} performs them. A new key is prepared (and so
 * published in the bundle) at `prepareAt` of the active key's life and
 * activated at `activateAt`; a retired key stays in the bundle until
 * everything it signed has expired (ARCHITECTURE.md invariant 8).
 */
import { X509Certificate as NodeX509Certificate, createPrivateKey, createPublicKey, randomBytes } from 'node:crypto';
import * as x509 from './x509-lib.ts';
import { Secret, SpiffeId, TrustDomain, newCorrelationId } from '../kernel/index.ts';
import type { AuditActor, AuditSink, Clock } from '../kernel/index.ts';
import { TrustBundle } from './bundle.ts';
import type { JwtAuthority } from './bundle.ts';
import { KeyEncryptionKey } from './envelope.ts';
import type { WrappedKey } from './envelope.ts';
import { identityErrors } from './errors.ts';
import { KEY_SLOT_ACTIONS, nextSlotState } from './key-slots.ts';
import type { KeySlotState } from './key-slots.ts';
import { JWT_SVID_ALGS, X509_CA_ALGS, fingerprint, generateSigningKeyPair, importAnySigningKey, importSigningKey } from './keys.ts';
import type { CryptoKey, JsonWebKey, JwtSvidAlg, X509CaAlg } from './keys.ts';
import type { CaKeyKind, CaKeyStore, StoredCaKey } from './ports.ts';
import { DEFAULT_JWT_SVID_MAX_TTL_MS, DEFAULT_JWT_SVID_TTL_MS, signJwtSvid, validateJwtSvid } from './jwt-svid.ts';
import type { JwtSigner, JwtSvid, JwtSvidLimits, JwtSvidRequest } from './jwt-svid.ts';
import { createRootCertificate, createSigningCaCertificate } from './x509-certs.ts';
import type { CertifiedKey } from './x509-certs.ts';
import {
  DEFAULT_X509_SVID_MAX_TTL_MS,
  DEFAULT_X509_SVID_TTL_MS,
  certificatesToPem,
  pemToCertificates,
  signX509Svid,
  validateX509Svid,
} from './x509-svid.ts';
import type { X509Authority, X509Svid, X509SvidLimits, X509SvidRequest } from './x509-svid.ts';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

/** An upstream CA that signs Writ's signing CAs instead of a Writ root. */
export interface UpstreamCa {
  /** PKCS#8 PEM private key of the first certificate of the chain. */
  readonly privateKeyPem: string | Secret<string>;
  /** PEM chain: the upstream CA certificate whose key is given first, the root (the bundle authority) last. */
  readonly certificateChainPem: string;
}

/** Options of {@link CaManager.open}. */
export interface CaManagerOptions {
  readonly trustDomain: TrustDomain | string;
  readonly clock: Clock;
  readonly audit: AuditSink;
  readonly store: CaKeyStore;
  /** 32-byte key-encryption key for private keys at rest. */
  readonly kek: Uint8Array | Secret<Uint8Array>;
  readonly upstream?: UpstreamCa;
  /** Algorithm of Writ's root and signing CA keys. Default ES256. */
  readonly x509Alg?: X509CaAlg;
  /** Algorithm of JWT-SVID signing keys. Default ES256. */
  readonly jwtAlg?: JwtSvidAlg;
  /** Lifetime of a self-signed root. Default 365 days. */
  readonly rootTtlMs?: number;
  /** Lifetime of a signing CA. Default 24 hours. */
  readonly x509CaTtlMs?: number;
  /** Lifetime of a JWT signing key. Default 24 hours. */
  readonly jwtKeyTtlMs?: number;
  readonly x509SvidDefaultTtlMs?: number;
  readonly x509SvidMaxTtlMs?: number;
  readonly jwtSvidDefaultTtlMs?: number;
  readonly jwtSvidMaxTtlMs?: number;
  /** `spiffe_refresh_hint` in seconds. Default 300. */
  readonly refreshHintSeconds?: number;
  /** Fraction of the active key's life at which its successor is prepared. Default 1/2. */
  readonly prepareAt?: number;
  /** Fraction of the active key's life at which its successor is activated. Default 5/6. */
  readonly activateAt?: number;
  /** Actor of scheduled steps. Default the system. */
  readonly actor?: AuditActor;
}

/** Who asked for a step, for the audit trail. */
export interface StepContext {
  readonly actor?: AuditActor;
  readonly correlationId?: string;
}

/** A step of scheduled rotation that is due. */
export interface DueStep {
  readonly kind: CaKeyKind;
  readonly step: 'prepare' | 'prove' | 'activate' | 'drop';
  /** The slot the step applies to (absent for prepare). */
  readonly slotId?: string;
}

/** Public facts about a slot, for status output. */
export interface CaKeyInfo {
  readonly id: string;
  readonly kind: CaKeyKind;
  readonly state: KeySlotState;
  readonly alg: JwtSvidAlg;
  readonly createdAt: Date;
  readonly notAfter: Date;
  readonly dropAfter?: Date;
  /** Hex SHA-256: of the signing CA certificate (x509) or the public key (jwt). */
  readonly fingerprint: string;
}

interface X509Slot {
  readonly kind: 'x509';
  record: StoredCaKey;
  readonly authority: X509Authority;
  readonly issuer: CertifiedKey;
  /** DER: the issuer certificate first, the root last. */
  readonly issuerChain: readonly Uint8Array[];
  readonly root: Uint8Array;
  readonly wrappedIssuerKey: WrappedKey;
  readonly upstream: boolean;
  readonly fingerprint: string;
}

interface JwtSlot {
  readonly kind: 'jwt';
  record: StoredCaKey;
  readonly signer: JwtSigner;
  readonly authority: JwtAuthority;
  readonly fingerprint: string;
}

type Slot = X509Slot | JwtSlot;

interface IssuerSource {
  readonly issuer: CertifiedKey;
  readonly issuerChain: readonly Uint8Array[];
  readonly wrappedIssuerKey: WrappedKey;
  readonly upstream: boolean;
}

const SYSTEM_ACTOR: AuditActor = Object.freeze({ type: 'system', id: 'writ' });
const PROOF_PATH = '/writ/ca-key-proof';
const PROOF_AUDIENCE = 'writ-ca-key-proof';
const PROOF_TTL_MS = 60_000;

function slotContext(td: string, kind: CaKeyKind, id: string): string {
  return `writ-ca-key/${td}/${kind}/${id}`;
}

function issuerContext(td: string, issuerCertDer: Uint8Array): string {
  return `writ-ca-issuer/${td}/${fingerprint(issuerCertDer)}`;
}

function newSlotId(): string {
  return randomBytes(16).toString('base64url');
}

function positive(name: string, v: number | undefined, fallback: number): number {
  if (v === undefined) return fallback;
  if (!(Number.isFinite(v) && v > 0)) throw new TypeError(`${name} must be a positive number`);
  return v;
}

function fraction(name: string, v: number | undefined, fallback: number): number {
  if (v === undefined) return fallback;
  if (!(Number.isFinite(v) && v > 0 && v < 1)) throw new TypeError(`${name} must be between 0 and 1`);
  return v;
}

function upstreamError(message: string, cause?: unknown): Error {
  return identityErrors.error('ERR_IDENTITY_UPSTREAM_INVALID', message, cause === undefined ? undefined : { cause });
}

/** Load and check an upstream CA: a CA certificate that may sign, its key, and a chain ending in a self-issued root. */
async function loadUpstream(td: string, kek: KeyEncryptionKey, upstream: UpstreamCa): Promise<IssuerSource> {
  const chain = pemToCertificates(upstream.certificateChainPem);
  if (chain.length === 0) throw upstreamError('upstream chain holds no certificate');
  let nodes: NodeX509Certificate[];
  try {
    nodes = chain.map((der) => new NodeX509Certificate(der));
  } catch (cause) {
    throw upstreamError('upstream chain holds an unparseable certificate', cause);
  }
  const [first] = nodes;
  const last = nodes[nodes.length - 1];
  if (first === undefined || last === undefined) throw upstreamError('upstream chain holds no certificate');
  if (!first.ca) throw upstreamError('upstream certificate is not a CA');
  const firstCert = new x509.X509Certificate(new Uint8Array(first.raw));
  const ku = firstCert.getExtension(x509.KeyUsagesExtension);
  if (ku !== null && (ku.usages & x509.KeyUsageFlags.keyCertSign) === 0) throw upstreamError('upstream certificate may not sign certificates');
  for (let i = 0; i + 1 < nodes.length; i++) {
    const child = nodes[i];
    const parent = nodes[i + 1];
    if (child === undefined || parent === undefined || !child.checkIssued(parent) || !child.verify(parent.publicKey)) {
      throw upstreamError(`upstream certificate ${i} is not issued by certificate ${i + 1}`);
    }
  }
  if (!last.checkIssued(last) || !last.verify(last.publicKey)) throw upstreamError('upstream chain does not end with a self-signed root');
  const pem = upstream.privateKeyPem instanceof Secret ? upstream.privateKeyPem.reveal() : upstream.privateKeyPem;
  let key: ReturnType<typeof importAnySigningKey>;
  try {
    key = importAnySigningKey(pem);
  } catch (cause) {
    throw upstreamError('upstream private key is not a PKCS#8 PEM key', cause);
  }
  if (key === undefined) throw upstreamError('upstream private key is of an unsupported type');
  if (!first.checkPrivateKey(createPrivateKey(pem))) throw upstreamError('upstream private key does not match the upstream certificate');
  return {
    issuer: { certificate: firstCert, privateKey: key.privateKey, alg: key.alg },
    issuerChain: chain,
    wrappedIssuerKey: kek.wrap(key.pkcs8, issuerContext(td, chain[0] ?? new Uint8Array())),
    upstream: true,
  };
}

/**
 * The CA of one trust domain.
 *
 * @example
 * const ca = await CaManager.open({ trustDomain: 'example.org', clock, audit, store, kek });
 * const svid = await ca.issueX509Svid({ spiffeId: 'spiffe://example.org/api', publicKey });
 * const jwt = await ca.signJwtSvid({ spiffeId: 'spiffe://example.org/api', audience: 'billing' });
 * ca.bundle().toJson(); // the SPIFFE bundle document
 */
export class CaManager {
  readonly trustDomain: TrustDomain;
  readonly x509Limits: X509SvidLimits;
  readonly jwtLimits: JwtSvidLimits;
  readonly #clock: Clock;
  readonly #audit: AuditSink;
  readonly #store: CaKeyStore;
  readonly #kek: KeyEncryptionKey;
  readonly #upstream: IssuerSource | undefined;
  readonly #x509Alg: X509CaAlg;
  readonly #jwtAlg: JwtSvidAlg;
  readonly #rootTtlMs: number;
  readonly #x509CaTtlMs: number;
  readonly #jwtKeyTtlMs: number;
  readonly #refreshHint: number;
  readonly #prepareAt: number;
  readonly #activateAt: number;
  readonly #actor: AuditActor;
  readonly #slots = new Map<string, Slot>();
  #bundle: TrustBundle;
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(options: CaManagerOptions, td: TrustDomain, kek: KeyEncryptionKey, upstream: IssuerSource | undefined) {
    this.trustDomain = td;
    this.#clock = options.clock;
    this.#audit = options.audit;
    this.#store = options.store;
    this.#kek = kek;
    this.#upstream = upstream;
    this.#x509Alg = options.x509Alg ?? 'ES256';
    if (!(X509_CA_ALGS as readonly string[]).includes(this.#x509Alg)) throw new TypeError(`x509Alg must be one of ${X509_CA_ALGS.join(', ')}`);
    this.#jwtAlg = options.jwtAlg ?? 'ES256';
    if (!(JWT_SVID_ALGS as readonly string[]).includes(this.#jwtAlg)) throw new TypeError(`jwtAlg must be one of ${JWT_SVID_ALGS.join(', ')}`);
    this.#rootTtlMs = positive('rootTtlMs', options.rootTtlMs, 365 * DAY);
    this.#x509CaTtlMs = positive('x509CaTtlMs', options.x509CaTtlMs, DAY);
    this.#jwtKeyTtlMs = positive('jwtKeyTtlMs', options.jwtKeyTtlMs, DAY);
    this.x509Limits = Object.freeze({
      defaultTtlMs: positive('x509SvidDefaultTtlMs', options.x509SvidDefaultTtlMs, DEFAULT_X509_SVID_TTL_MS),
      maxTtlMs: positive('x509SvidMaxTtlMs', options.x509SvidMaxTtlMs, DEFAULT_X509_SVID_MAX_TTL_MS),
    });
    this.jwtLimits = Object.freeze({
      defaultTtlMs: positive('jwtSvidDefaultTtlMs', options.jwtSvidDefaultTtlMs, DEFAULT_JWT_SVID_TTL_MS),
      maxTtlMs: positive('jwtSvidMaxTtlMs', options.jwtSvidMaxTtlMs, DEFAULT_JWT_SVID_MAX_TTL_MS),
    });
    this.#refreshHint = positive('refreshHintSeconds', options.refreshHintSeconds, 300);
    this.#prepareAt = fraction('prepareAt', options.prepareAt, 1 / 2);
    this.#activateAt = fraction('activateAt', options.activateAt, 5 / 6);
    if (this.#activateAt <= this.#prepareAt) throw new TypeError('activateAt must come after prepareAt');
    this.#actor = options.actor ?? SYSTEM_ACTOR;
    this.#bundle = new TrustBundle({ trustDomain: td, sequence: 0, refreshHintSeconds: this.#refreshHint });
  }

  /**
   * Load the trust domain's keys from the store (decrypting them with the
   * KEK), finish any rotation a crash interrupted, and create and activate
   * the first keys when there are none.
   */
  static async open(options: CaManagerOptions): Promise<CaManager> {
    const td = typeof options.trustDomain === 'string' ? TrustDomain.parse(options.trustDomain) : options.trustDomain;
    const kek = new KeyEncryptionKey(options.kek);
    const upstream = options.upstream === undefined ? undefined : await loadUpstream(td.name, kek, options.upstream);
    const ca = new CaManager(options, td, kek, upstream);
    await ca.#load();
    return ca;
  }

  // ------------------------------------------------------------ reading

  /** The current trust bundle (immutable; a new object after every change). */
  bundle(): TrustBundle {
    return this.#bundle;
  }

  /**
   * The DER certificates between this CA's X.509-SVIDs and the bundle roots
   * (signing CAs and upstream intermediates of every kept X.509 slot), for a
   * verifier that got a leaf without its chain.
   */
  x509Intermediates(): readonly Uint8Array[] {
    const out: Uint8Array[] = [];
    for (const s of this.#slots.values()) if (s.kind === 'x509') out.push(...s.authority.intermediates);
    return out;
  }

  /** Public facts about every slot. */
  keys(): readonly CaKeyInfo[] {
    return [...this.#slots.values()].map((s) => Object.freeze({
      id: s.record.id,
      kind: s.kind,
      state: s.record.state,
      alg: s.record.alg,
      createdAt: new Date(s.record.createdAt),
      notAfter: new Date(s.record.notAfter),
      ...(s.record.dropAfter === undefined ? {} : { dropAfter: new Date(s.record.dropAfter) }),
      fingerprint: s.fingerprint,
    }));
  }

  /** The id of the active slot of `kind`, if any. */
  activeKeyId(kind: CaKeyKind): string | undefined {
    return this.#active(kind)?.record.id;
  }

  // ------------------------------------------------------------ issuing

  /**
   * Issue an X.509-SVID with the active signing CA.
   *
   * @example
   * const svid = await ca.issueX509Svid({ spiffeId: 'spiffe://example.org/api', publicKey, dnsNames: ['api.internal'] });
   */
  async issueX509Svid(request: X509SvidRequest): Promise<X509Svid> {
    this.#checkMember(request.spiffeId);
    const slot = this.#active('x509');
    if (slot === undefined || slot.kind !== 'x509') throw identityErrors.error('ERR_IDENTITY_CA_NOT_READY', `no active X.509 signing CA for trust domain \`${this.trustDomain.name}\``);
    return signX509Svid(slot.authority, request, this.#clock, this.x509Limits);
  }

  /**
   * Sign a JWT-SVID with the active JWT key.
   *
   * @example
   * const { token } = await ca.signJwtSvid({ spiffeId: 'spiffe://example.org/api', audience: 'billing' });
   */
  async signJwtSvid(request: JwtSvidRequest): Promise<JwtSvid> {
    // Parsed once here: the signer takes the validated ID instead of parsing the string again.
    const spiffeId = typeof request.spiffeId === 'string' ? SpiffeId.parse(request.spiffeId) : request.spiffeId;
    this.#checkMember(spiffeId);
    const slot = this.#active('jwt');
    if (slot === undefined || slot.kind !== 'jwt') throw identityErrors.error('ERR_IDENTITY_CA_NOT_READY', `no active JWT signing key for trust domain \`${this.trustDomain.name}\``);
    return signJwtSvid(slot.signer, { ...request, spiffeId }, this.#clock, this.jwtLimits);
  }

  #checkMember(spiffeId: unknown): void {
    const raw = typeof spiffeId === 'string' ? spiffeId : String(spiffeId);
    const td = spiffeId instanceof SpiffeId ? spiffeId.trustDomain : TrustDomain.parse(raw);
    if (!td.equals(this.trustDomain)) {
      throw identityErrors.error('ERR_IDENTITY_SVID_REQUEST_INVALID', `SPIFFE ID \`${raw.slice(0, 256)}\` is not in trust domain \`${this.trustDomain.name}\``);
    }
  }

  // ------------------------------------------------------------ key slot steps

  /**
   * Create a key of `kind` and publish it in the bundle (slot `prepared`).
   * For X.509, a new self-signed root is made when `newRoot` is set or the
   * current root is past half its life; otherwise the current root (or the
   * upstream CA) signs the new signing CA.
   */
  prepare(kind: CaKeyKind, options: StepContext & { newRoot?: boolean } = {}): Promise<string> {
    return this.#serial(() => this.#prepare(kind, options));
  }

  /** Sign a trial SVID with a prepared key and verify it against the bundle (slot `proved`). */
  prove(slotId: string, options: StepContext = {}): Promise<void> {
    return this.#serial(() => this.#prove(slotId, options));
  }

  /** Make a proved key the signing key; the key it replaces is retired (slot `active`). */
  activate(slotId: string, options: StepContext = {}): Promise<void> {
    return this.#serial(() => this.#activate(slotId, options));
  }

  /** Abandon a prepared or proved key (slot `retired`); it leaves the bundle at once. */
  retire(slotId: string, options: StepContext = {}): Promise<void> {
    return this.#serial(async () => {
      const slot = this.#slot(slotId);
      const now = this.#clock.now();
      const state = nextSlotState(slot.record.state, 'retire', slotId);
      await this.#transition(slot, { ...slot.record, state, retiredAt: now.toISOString(), dropAfter: now.toISOString() }, 'retire', options, ['abandoned']);
      await this.#dropExpired(options);
    });
  }

  /**
   * Rotate `kind` now: prepare, prove and activate a new key; the old one is
   * retired and stays in the bundle until what it signed has expired.
   *
   * @example
   * await ca.rotate('x509', { actor: admin, correlationId });
   */
  rotate(kind: CaKeyKind, options: StepContext & { newRoot?: boolean } = {}): Promise<string> {
    return this.#serial(async () => {
      const ctx = { ...options, correlationId: options.correlationId ?? newCorrelationId() };
      for (const pending of this.#pending(kind)) {
        // A rotation on demand supersedes any scheduled one in flight.
        const now = this.#clock.now().toISOString();
        await this.#transition(pending, { ...pending.record, state: nextSlotState(pending.record.state, 'retire', pending.record.id), retiredAt: now, dropAfter: now }, 'retire', ctx, ['superseded']);
      }
      const id = await this.#prepare(kind, ctx);
      await this.#prove(id, ctx);
      await this.#activate(id, ctx);
      await this.#dropExpired(ctx);
      return id;
    });
  }

  /**
   * The scheduled steps whose time has come at `clock`'s now.
   *
   * @example
   * if (ca.due(clock).length > 0) await ca.runDue();
   */
  due(clock: Clock = this.#clock): readonly DueStep[] {
    const now = clock.nowMs();
    const steps: DueStep[] = [];
    for (const kind of ['x509', 'jwt'] as const) {
      const active = this.#active(kind);
      const pending = this.#pending(kind).at(-1);
      if (pending?.record.state === 'prepared') {
        steps.push({ kind, step: 'prove', slotId: pending.record.id });
        continue;
      }
      if (active === undefined) {
        steps.push(pending === undefined ? { kind, step: 'prepare' } : { kind, step: 'activate', slotId: pending.record.id });
        continue;
      }
      const start = Date.parse(active.record.activatedAt ?? active.record.createdAt);
      const life = Date.parse(active.record.notAfter) - start;
      const age = now - start;
      if (pending === undefined && age >= this.#prepareAt * life) steps.push({ kind, step: 'prepare' });
      if (pending !== undefined && age >= this.#activateAt * life) steps.push({ kind, step: 'activate', slotId: pending.record.id });
    }
    for (const s of this.#slots.values()) {
      if (s.record.state === 'retired' && s.record.dropAfter !== undefined && Date.parse(s.record.dropAfter) <= now) {
        steps.push({ kind: s.kind, step: 'drop', slotId: s.record.id });
      }
    }
    return steps;
  }

  /** Perform every due step, in order, until none is due. Returns what was done. */
  runDue(options: StepContext = {}): Promise<readonly DueStep[]> {
    return this.#serial(async () => {
      const ctx = { ...options, correlationId: options.correlationId ?? newCorrelationId() };
      const done: DueStep[] = [];
      for (let round = 0; round < 8; round++) {
        const steps = this.due();
        if (steps.length === 0) break;
        for (const step of steps) {
          if (step.step === 'prepare') {
            const id = await this.#prepare(step.kind, ctx);
            done.push(step);
            await this.#prove(id, ctx);
            done.push({ kind: step.kind, step: 'prove', slotId: id });
          } else if (step.step === 'prove' && step.slotId !== undefined) {
            await this.#prove(step.slotId, ctx);
            done.push(step);
          } else if (step.step === 'activate' && step.slotId !== undefined) {
            await this.#activate(step.slotId, ctx);
            done.push(step);
          }
        }
        if (steps.some((s) => s.step === 'drop')) {
          for (const s of await this.#dropExpired(ctx)) done.push(s);
        }
      }
      return done;
    });
  }

  // ------------------------------------------------------------ internals

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn, fn);
    this.#queue = run.catch(() => undefined);
    return run;
  }

  #slot(id: string): Slot {
    const slot = this.#slots.get(id);
    if (slot === undefined) throw identityErrors.error('ERR_IDENTITY_KEY_STATE_INVALID', `no CA key \`${id.slice(0, 64)}\` in trust domain \`${this.trustDomain.name}\``);
    return slot;
  }

  #active(kind: CaKeyKind): Slot | undefined {
    for (const s of this.#slots.values()) if (s.kind === kind && s.record.state === 'active') return s;
    return undefined;
  }

  /** Prepared or proved slots of `kind`, oldest first. */
  #pending(kind: CaKeyKind): Slot[] {
    return [...this.#slots.values()]
      .filter((s) => s.kind === kind && (s.record.state === 'prepared' || s.record.state === 'proved'))
      .sort((a, b) => a.record.createdAt.localeCompare(b.record.createdAt));
  }

  async #emit(action: string, slot: Slot, ctx: StepContext, outcome: 'success' | 'failure' = 'success', reasons: readonly string[] = [], extra: Record<string, unknown> = {}): Promise<void> {
    const r = slot.record;
    await this.#audit.append({
      action,
      actor: ctx.actor ?? this.#actor,
      target: { type: 'ca-key', id: r.id, name: `${r.trustDomain} ${r.kind}` },
      outcome,
      reasons,
      correlationId: ctx.correlationId ?? newCorrelationId(),
      time: this.#clock.now().toISOString(),
      // Public facts only: never a private key, never a wrapped key.
      details: {
        trustDomain: r.trustDomain,
        kind: r.kind,
        state: r.state,
        alg: r.alg,
        notAfter: r.notAfter,
        fingerprint: slot.fingerprint,
        ...(slot.kind === 'jwt' ? { kid: r.id } : { rootFingerprint: fingerprint(slot.root), upstream: slot.upstream, serialNumber: slot.authority.certificate.serialNumber }),
        ...(r.dropAfter === undefined ? {} : { dropAfter: r.dropAfter }),
        ...extra,
      },
    });
  }

  async #transition(slot: Slot, record: StoredCaKey, step: 'prove' | 'activate' | 'retire', ctx: StepContext, reasons: readonly string[] = [], extra: Record<string, unknown> = {}): Promise<void> {
    await this.#store.put(record);
    slot.record = record;
    await this.#emit(KEY_SLOT_ACTIONS[step], slot, ctx, 'success', reasons, extra);
  }

  async #prepare(kind: CaKeyKind, ctx: StepContext & { newRoot?: boolean }): Promise<string> {
    const slot = kind === 'x509' ? await this.#newX509Slot(ctx.newRoot === true) : await this.#newJwtSlot();
    await this.#store.put(slot.record);
    this.#slots.set(slot.record.id, slot);
    await this.#refreshBundle();
    await this.#emit(KEY_SLOT_ACTIONS.prepare, slot, ctx, 'success', [], { bundleSequence: this.#bundle.sequence });
    return slot.record.id;
  }

  async #prove(slotId: string, ctx: StepContext): Promise<void> {
    const slot = this.#slot(slotId);
    const state = nextSlotState(slot.record.state, 'prove', slotId);
    const id = this.trustDomain.newId(PROOF_PATH);
    try {
      // The trial is verified exactly as relying parties will: against the published bundle.
      if (slot.kind === 'x509') {
        const trialKey = await generateSigningKeyPair('ES256');
        const svid = await signX509Svid(slot.authority, { spiffeId: id, publicKey: trialKey.publicKey }, this.#clock, { defaultTtlMs: PROOF_TTL_MS, maxTtlMs: PROOF_TTL_MS });
        validateX509Svid(svid.chain, this.#bundle, this.#clock);
      } else {
        const svid = await signJwtSvid(slot.signer, { spiffeId: id, audience: PROOF_AUDIENCE }, this.#clock, { defaultTtlMs: PROOF_TTL_MS, maxTtlMs: PROOF_TTL_MS });
        await validateJwtSvid(svid.token, PROOF_AUDIENCE, this.#bundle, this.#clock);
      }
    } catch (cause) {
      const now = this.#clock.now().toISOString();
      await this.#emit(KEY_SLOT_ACTIONS.prove, slot, ctx, 'failure', ['trial-signature-failed']);
      await this.#transition(slot, { ...slot.record, state: 'retired', retiredAt: now, dropAfter: now }, 'retire', ctx, ['proof-failed']);
      await this.#dropExpired(ctx);
      throw identityErrors.error('ERR_IDENTITY_KEY_PROOF_FAILED', `the trial signature of key \`${slotId}\` did not verify against the bundle`, { cause });
    }
    await this.#transition(slot, { ...slot.record, state }, 'prove', ctx);
  }

  async #activate(slotId: string, ctx: StepContext): Promise<void> {
    const slot = this.#slot(slotId);
    const state = nextSlotState(slot.record.state, 'activate', slotId);
    const now = this.#clock.nowMs();
    const old = this.#active(slot.kind);
    let retired: StoredCaKey | undefined;
    if (old !== undefined) {
      // Everything the old key signed expires by min(its own expiry, now + the longest SVID lifetime).
      const maxTtl = old.kind === 'x509' ? this.x509Limits.maxTtlMs : this.jwtLimits.maxTtlMs;
      const dropAfter = Math.min(Date.parse(old.record.notAfter), now + maxTtl);
      retired = { ...old.record, state: 'retired', retiredAt: new Date(now).toISOString(), dropAfter: new Date(dropAfter).toISOString() };
      // INVARIANT: the old record is written retired before the new one is written active, so a crash
      // leaves at most one active key; open() activates a proved successor when none is active.
      await this.#store.put(retired);
    }
    const record: StoredCaKey = { ...slot.record, state, activatedAt: new Date(now).toISOString() };
    await this.#store.put(record);
    // INVARIANT: the in-memory swap is synchronous, so issuers never see zero or two active keys.
    if (old !== undefined && retired !== undefined) old.record = retired;
    slot.record = record;
    await this.#emit(KEY_SLOT_ACTIONS.activate, slot, ctx, 'success', [], old === undefined ? {} : { replaces: old.record.id });
    if (old !== undefined) await this.#emit(KEY_SLOT_ACTIONS.retire, old, ctx, 'success', ['rotated'], { replacedBy: slot.record.id });
  }

  async #dropExpired(ctx: StepContext): Promise<DueStep[]> {
    const now = this.#clock.nowMs();
    const dropped: DueStep[] = [];
    for (const s of [...this.#slots.values()]) {
      if (s.record.state !== 'retired' || s.record.dropAfter === undefined || Date.parse(s.record.dropAfter) > now) continue;
      await this.#store.delete(this.trustDomain.name, s.record.id);
      this.#slots.delete(s.record.id);
      dropped.push({ kind: s.kind, step: 'drop', slotId: s.record.id });
      await this.#emit('ca.key.dropped', s, ctx, 'success', ['signed-credentials-expired']);
    }
    if (dropped.length > 0) await this.#refreshBundle();
    return dropped;
  }

  /** Rebuild the bundle from the published slots; bump `spiffe_sequence` when its keys changed. */
  async #refreshBundle(): Promise<void> {
    const roots: Uint8Array[] = [];
    const jwt: JwtAuthority[] = [];
    const slots = [...this.#slots.values()].sort((a, b) => a.record.createdAt.localeCompare(b.record.createdAt) || a.record.id.localeCompare(b.record.id));
    for (const s of slots) {
      if (s.kind === 'x509') roots.push(s.root);
      else jwt.push(s.authority);
    }
    const next = new TrustBundle({ trustDomain: this.trustDomain, x509Authorities: roots, jwtAuthorities: jwt, refreshHintSeconds: this.#refreshHint, sequence: this.#bundle.sequence ?? 0 });
    if (next.sameKeysAs(this.#bundle)) return;
    const sequence = (this.#bundle.sequence ?? 0) + 1;
    await this.#store.writeSequence(this.trustDomain.name, sequence);
    this.#bundle = next.withSequence(sequence);
  }

  /** Where a new signing CA's certificate comes from. */
  async #issuerFor(newRoot: boolean): Promise<IssuerSource> {
    if (this.#upstream !== undefined) {
      if (newRoot) throw upstreamError('the root of an upstream CA is rotated upstream, not by Writ');
      return this.#upstream;
    }
    const active = this.#active('x509') ?? this.#pending('x509').at(-1);
    if (!newRoot && active !== undefined && active.kind === 'x509') {
      if (active.upstream) return active;
      const rootNotAfter = active.issuer.certificate.notAfter.getTime();
      const rootNotBefore = active.issuer.certificate.notBefore.getTime();
      // A Writ root is replaced once past half its life, so a new one is published long before the old expires.
      if (this.#clock.nowMs() < rootNotBefore + (rootNotAfter - rootNotBefore) / 2) return active;
    }
    const now = this.#clock.nowMs();
    const kp = await generateSigningKeyPair(this.#x509Alg);
    const id = newSlotId().slice(0, 8);
    const cert = await createRootCertificate(
      { trustDomain: this.trustDomain, id, publicKey: kp.publicKey, notBefore: new Date(now - 60_000), notAfter: new Date(now + this.#rootTtlMs), pathLength: 1 },
      kp.privateKey,
      kp.alg,
    );
    const der = new Uint8Array(cert.rawData);
    return {
      issuer: { certificate: cert, privateKey: kp.privateKey, alg: kp.alg },
      issuerChain: [der],
      wrappedIssuerKey: this.#kek.wrap(kp.pkcs8, issuerContext(this.trustDomain.name, der)),
      upstream: false,
    };
  }

  async #newX509Slot(newRoot: boolean): Promise<X509Slot> {
    const source = await this.#issuerFor(newRoot);
    const now = this.#clock.nowMs();
    const id = newSlotId();
    const kp = await generateSigningKeyPair(this.#x509Alg);
    const notAfter = Math.min(now + this.#x509CaTtlMs, source.issuer.certificate.notAfter.getTime());
    const notBefore = Math.max(now - 60_000, source.issuer.certificate.notBefore.getTime());
    const cert = await createSigningCaCertificate(
      { trustDomain: this.trustDomain, id: id.slice(0, 8), publicKey: kp.publicKey, notBefore: new Date(notBefore), notAfter: new Date(notAfter), pathLength: 0 },
      source.issuer,
    );
    const der = new Uint8Array(cert.rawData);
    const chain = [der, ...source.issuerChain];
    const record: StoredCaKey = {
      trustDomain: this.trustDomain.name,
      id,
      kind: 'x509',
      state: 'prepared',
      alg: kp.alg,
      createdAt: new Date(now).toISOString(),
      notAfter: cert.notAfter.toISOString(),
      certificateChainPem: certificatesToPem(chain),
      upstream: source.upstream,
      wrappedPrivateKey: this.#kek.wrap(kp.pkcs8, slotContext(this.trustDomain.name, 'x509', id)),
      wrappedIssuerKey: source.wrappedIssuerKey,
      issuerAlg: source.issuer.alg,
    };
    return this.#x509Runtime(record, cert, kp.privateKey, source);
  }

  #x509Runtime(record: StoredCaKey, cert: x509.X509Certificate, privateKey: CryptoKey, source: IssuerSource): X509Slot {
    const der = new Uint8Array(cert.rawData);
    const root = source.issuerChain.at(-1);
    if (root === undefined) throw identityErrors.error('ERR_IDENTITY_STORE_INCONSISTENT', `X.509 key \`${record.id}\` has no root`);
    return {
      kind: 'x509',
      record,
      authority: { certificate: cert, privateKey, alg: record.alg, intermediates: [der, ...source.issuerChain.slice(0, -1)] },
      issuer: source.issuer,
      issuerChain: source.issuerChain,
      root,
      wrappedIssuerKey: source.wrappedIssuerKey,
      upstream: source.upstream,
      fingerprint: fingerprint(der),
    };
  }

  async #newJwtSlot(): Promise<JwtSlot> {
    const now = this.#clock.nowMs();
    const kid = newSlotId();
    const kp = await generateSigningKeyPair(this.#jwtAlg);
    const publicJwk = publicJwkOf(kp.spki);
    const record: StoredCaKey = {
      trustDomain: this.trustDomain.name,
      id: kid,
      kind: 'jwt',
      state: 'prepared',
      alg: kp.alg,
      createdAt: new Date(now).toISOString(),
      notAfter: new Date(now + this.#jwtKeyTtlMs).toISOString(),
      publicJwk,
      wrappedPrivateKey: this.#kek.wrap(kp.pkcs8, slotContext(this.trustDomain.name, 'jwt', kid)),
    };
    return this.#jwtRuntime(record, kp.privateKey, kp.spki, kp.pkcs8);
  }

  #jwtRuntime(record: StoredCaKey, privateKey: CryptoKey, spki: Uint8Array, pkcs8: Uint8Array): JwtSlot {
    const publicJwk = record.publicJwk;
    if (publicJwk === undefined) throw identityErrors.error('ERR_IDENTITY_STORE_INCONSISTENT', `JWT key \`${record.id}\` has no public key`);
    return {
      kind: 'jwt',
      record,
      // The node:crypto view signs JWT-SVIDs without WebCrypto's per-call cost.
      signer: { kid: record.id, alg: record.alg, privateKey, keyObject: createPrivateKey({ key: Buffer.from(pkcs8), format: 'der', type: 'pkcs8' }), notAfter: new Date(record.notAfter) },
      authority: Object.freeze({ kid: record.id, publicJwk, alg: record.alg }),
      fingerprint: fingerprint(spki),
    };
  }

  async #load(): Promise<void> {
    const td = this.trustDomain.name;
    const records = await this.#store.list(td);
    const issuers = new Map<string, IssuerSource>();
    for (const r of records) {
      if (r.trustDomain !== td) throw identityErrors.error('ERR_IDENTITY_STORE_INCONSISTENT', `store returned a key of trust domain \`${r.trustDomain}\``);
      const pkcs8 = this.#kek.unwrap(r.wrappedPrivateKey, slotContext(td, r.kind, r.id));
      const privateKey = await importSigningKey(pkcs8, r.alg);
      if (r.kind === 'jwt') {
        const spki = new Uint8Array(createPublicFromJwk(r.publicJwk));
        this.#slots.set(r.id, this.#jwtRuntime(r, privateKey, spki, pkcs8));
        continue;
      }
      const chain = pemToCertificates(r.certificateChainPem ?? '');
      const [own, issuerDer] = chain;
      if (own === undefined || issuerDer === undefined || r.wrappedIssuerKey === undefined || r.issuerAlg === undefined) {
        throw identityErrors.error('ERR_IDENTITY_STORE_INCONSISTENT', `X.509 key \`${r.id}\` has no issuer`);
      }
      const issuerKeyId = fingerprint(issuerDer);
      let source = issuers.get(issuerKeyId);
      if (source === undefined) {
        const issuerPkcs8 = this.#kek.unwrap(r.wrappedIssuerKey, issuerContext(td, issuerDer));
        source = {
          issuer: { certificate: new x509.X509Certificate(issuerDer), privateKey: await importSigningKey(issuerPkcs8, r.issuerAlg), alg: r.issuerAlg },
          issuerChain: chain.slice(1),
          wrappedIssuerKey: r.wrappedIssuerKey,
          upstream: r.upstream === true,
        };
        issuers.set(issuerKeyId, source);
      }
      this.#slots.set(r.id, this.#x509Runtime(r, new x509.X509Certificate(own), privateKey, source));
    }
    for (const kind of ['x509', 'jwt'] as const) {
      const active = [...this.#slots.values()].filter((s) => s.kind === kind && s.record.state === 'active');
      if (active.length > 1) throw identityErrors.error('ERR_IDENTITY_STORE_INCONSISTENT', `trust domain \`${td}\` has ${active.length} active ${kind} keys`);
    }
    // A restart may have changed what is published: the sequence moves on.
    const stored = await this.#store.readSequence(td);
    this.#bundle = new TrustBundle({ trustDomain: this.trustDomain, refreshHintSeconds: this.#refreshHint, sequence: stored });
    await this.#refreshBundle();
    const ctx = { correlationId: newCorrelationId() };
    for (const kind of ['x509', 'jwt'] as const) {
      if (this.#active(kind) !== undefined) continue;
      const pending = this.#pending(kind).at(-1);
      const id = pending?.record.id ?? (await this.#prepare(kind, ctx));
      if (this.#slot(id).record.state === 'prepared') await this.#prove(id, ctx);
      await this.#activate(id, ctx);
    }
    await this.#dropExpired(ctx);
  }
}

function createPublicFromJwk(jwk: JsonWebKey | undefined): Buffer {
  if (jwk === undefined) throw identityErrors.error('ERR_IDENTITY_STORE_INCONSISTENT', 'a stored JWT key has no public key');
  return createPublicKey({ key: jwk, format: 'jwk' }).export({ format: 'der', type: 'spki' });
}

/** The public JWK of an SPKI DER key. */
function publicJwkOf(spki: Uint8Array): JsonWebKey {
  return createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' }).export({ format: 'jwk' });
}
