/**
 * Shared Signals Framework transmitter (STANDARDS.md §3): revocations on the
 * bus become CAEP Security Event Tokens (RFC 8417, SSF profile) pushed to
 * configured receivers (RFC 8935).
 *
 * SET rules applied here: header `typ` `secevent+jwt`, RS256 with a 2048-bit
 * key; claims `iss`, `iat`, `jti`, `aud`, `txn`, top-level `sub_id`, and
 * `events` with exactly one CAEP event; never `sub` or `exp`.
 */
import { randomUUID } from 'node:crypto';
import { SignJWT, exportJWK, generateKeyPair, importJWK } from 'jose';
import type { JWK } from 'jose';
import { Secret } from '../kernel/index.ts';
import type { Clock } from '../kernel/index.ts';
import { setKeySecretContext } from './ports.ts';
import type { RevocationBus, RevocationEvent, SecretSealer, SetKeyStore, Unsubscribe } from './ports.ts';

type SigningKey = Awaited<ReturnType<typeof generateKeyPair>>['privateKey'];

/** CAEP event type URIs. */
export const CAEP_SESSION_REVOKED = 'https://schemas.openid.net/secevent/caep/event-type/session-revoked';
export const CAEP_CREDENTIAL_CHANGE = 'https://schemas.openid.net/secevent/caep/event-type/credential-change';
/** RFC 8935 push delivery. */
export const SSF_PUSH = 'urn:ietf:rfc:8935';

/** An RFC 9493 / SSF subject identifier (the formats Writ emits). */
export type SubjectId = { readonly format: 'uri'; readonly uri: string } | { readonly format: 'opaque'; readonly id: string } | { readonly format: 'jwt_id'; readonly iss: string; readonly jti: string };

/** The claims of one SET, before signing. */
export interface SetClaims {
  readonly iss: string;
  readonly aud: string;
  readonly iat: number;
  readonly jti: string;
  readonly txn: string;
  readonly sub_id: SubjectId;
  readonly events: Readonly<Record<string, Readonly<Record<string, unknown>>>>;
}

/**
 * The CAEP SET for a revocation, or `undefined` for kinds with no CAEP
 * counterpart (`policy-changed`, `signal`). `subject-revoked` is
 * `session-revoked` about the workload's SPIFFE ID; `lease-revoked` and
 * `token-revoked` are `credential-change` with `change_type` `revoke`
 * (`token-revoked` names the token by `jwt_id`).
 *
 * @example
 * const claims = setForRevocation(event, 'https://writ.example', 'https://receiver.example', 1_700_000_000);
 */
export function setForRevocation(e: RevocationEvent, issuer: string, audience: string, iat: number): SetClaims | undefined {
  const base = {
    iss: issuer,
    aud: audience,
    iat,
    jti: randomUUID(),
    // Groups the SETs of one revocation across receivers (RFC 8417 §2.2 `txn`).
    txn: e.id,
  };
  const common = { event_timestamp: Math.floor(Date.parse(e.at) / 1000), initiating_entity: e.reason === 'admin-revoked' ? 'admin' : 'policy', reason_admin: { en: e.reason } };
  switch (e.kind) {
    case 'subject-revoked':
      if (e.subject === undefined) return undefined;
      return { ...base, sub_id: { format: 'uri', uri: e.subject }, events: { [CAEP_SESSION_REVOKED]: common } };
    case 'lease-revoked':
      if (e.leaseId === undefined) return undefined;
      return { ...base, sub_id: e.subject === undefined ? { format: 'opaque', id: e.leaseId } : { format: 'uri', uri: e.subject }, events: { [CAEP_CREDENTIAL_CHANGE]: { ...common, credential_type: 'app', change_type: 'revoke', friendly_name: `lease ${e.leaseId}` } } };
    case 'token-revoked':
      if (e.tokenId === undefined) return undefined;
      return { ...base, sub_id: { format: 'jwt_id', iss: issuer, jti: e.tokenId }, events: { [CAEP_CREDENTIAL_CHANGE]: { ...common, credential_type: 'app', change_type: 'revoke' } } };
    case 'policy-changed':
    case 'signal':
      return undefined;
  }
}

/**
 * Signs SETs with an RS256 key (2048 bits, as the SSF interop profile asks).
 *
 * @example
 * const signer = await SetSigner.generate();
 * const jwt = await signer.sign(claims);
 */
export class SetSigner {
  readonly kid: string;
  readonly #key: SigningKey;
  readonly #publicJwk: JWK;
  /** Every key a receiver may need (every stored one; just this one for a generated signer). */
  #published: JWK[] | undefined;

  private constructor(kid: string, key: SigningKey, publicJwk: JWK) {
    this.kid = kid;
    this.#key = key;
    this.#publicJwk = publicJwk;
  }

  /** A fresh key held in memory only (tests, and tools that sign once). */
  static async generate(): Promise<SetSigner> {
    const { privateKey, publicKey } = await generateKeyPair('RS256', { modulusLength: 2048, extractable: true });
    const kid = randomUUID();
    const jwk = await exportJWK(publicKey);
    return new SetSigner(kid, privateKey, { ...jwk, kid, alg: 'RS256', use: 'sig' });
  }

  /**
   * The deployment's stored key: made, sealed and stored by the first
   * replica that needs one (a replica that loses the race to store it uses
   * the winner's), opened from the store afterwards. Fails closed: a key that
   * does not open (another KEK, a tampered row) is an error, never a silent
   * new key that receivers would not know.
   */
  static async load(keys: SetKeyStore, sealer: SecretSealer, clock: Clock): Promise<SetSigner> {
    let stored = await keys.listSetKeys();
    if (stored.length === 0) {
      const made = await SetSigner.generate();
      const privateJwk = new Secret(JSON.stringify(await exportJWK(made.#key)));
      await keys.insertSetKey({ kid: made.kid, publicJwk: JSON.stringify(made.#publicJwk), privateSealed: sealer.seal(privateJwk, setKeySecretContext(made.kid)), createdAt: clock.now().toISOString() });
      stored = await keys.listSetKeys();
    }
    const current = stored[stored.length - 1];
    if (current === undefined) throw new Error('no SET signing key could be stored');
    let privateJwk: JWK;
    try {
      privateJwk = JSON.parse(sealer.open(current.privateSealed, setKeySecretContext(current.kid)).reveal()) as JWK;
    } catch (e) {
      // The unwrap error says why (another KEK, a tampered row); a parse error could quote key material, so it is not passed on.
      if (e instanceof SyntaxError) throw new Error(`the stored SET signing key \`${current.kid}\` is not a JWK`);
      throw e;
    }
    const key = await importJWK(privateJwk, 'RS256');
    if (key instanceof Uint8Array || privateJwk.kty !== 'RSA') throw new Error(`the stored SET signing key \`${current.kid}\` is not an RSA key`);
    // The published key is derived from the sealed private one, not read from the clear column,
    // so a changed row cannot make receivers trust a key Writ does not sign with.
    const publicJwk: JWK = { kty: 'RSA', n: privateJwk.n, e: privateJwk.e, kid: current.kid, alg: 'RS256', use: 'sig' };
    const signer = new SetSigner(current.kid, key, publicJwk);
    signer.#published = [...stored.slice(0, -1).map((r) => JSON.parse(r.publicJwk) as JWK), publicJwk];
    return signer;
  }

  /** The public keys as a JWKS, for `jwks_uri`. */
  jwks(): { keys: JWK[] } {
    return { keys: this.#published ?? [this.#publicJwk] };
  }

  async sign(claims: SetClaims): Promise<string> {
    return new SignJWT({ ...claims }).setProtectedHeader({ alg: 'RS256', typ: 'secevent+jwt', kid: this.kid }).sign(this.#key);
  }
}

/** A push receiver (RFC 8935). */
export interface PushReceiver {
  readonly endpointUrl: string;
  /** The receiver's `aud`. */
  readonly audience: string;
  /** Sent as `Authorization` (RFC 8935 / SSF: the receiver-supplied header MUST be sent). */
  readonly authorizationHeader?: string;
}

/** What happened to one SET at one receiver. */
export interface DeliveryReport {
  readonly receiver: string;
  readonly jti: string;
  readonly revocationId: string;
  readonly outcome: 'delivered' | 'rejected' | 'gave-up';
  readonly attempts: number;
  readonly status?: number;
  /** RFC 8935 §2.4 error code on a 400. */
  readonly err?: string;
}

/** Options of {@link SsfPushTransmitter}. */
export interface SsfPushOptions {
  readonly bus: RevocationBus;
  readonly signer: SetSigner;
  readonly receivers: readonly PushReceiver[];
  readonly clock: Clock;
  /** Tries per SET before giving up; default 8. */
  readonly maxAttempts?: number;
  /** First retry delay, doubling up to 30 s; default 200 ms. */
  readonly retryBaseMs?: number;
  readonly onDelivery?: (r: DeliveryReport) => void;
}

/**
 * Follows the bus from now and pushes each revocation's SET to every
 * receiver: 202 is delivered; 400 is a rejection (not retried, its `err`
 * reported); anything else, or no answer, is retried with exponential backoff.
 *
 * @example
 * const tx = new SsfPushTransmitter({ bus, signer, receivers, clock: systemClock });
 * tx.setIssuer('https://writ.example');
 * await tx.start();
 */
export class SsfPushTransmitter {
  readonly #o: SsfPushOptions;
  #issuer = '';
  #stop: Unsubscribe | undefined;
  #closed = false;
  readonly #timers = new Set<ReturnType<typeof setTimeout>>();

  constructor(options: SsfPushOptions) {
    this.#o = options;
  }

  /** The issuer: the URL the metadata is served under, and every SET's `iss`. */
  setIssuer(issuer: string): void {
    this.#issuer = issuer.replace(/\/+$/, '');
  }

  get issuer(): string {
    return this.#issuer;
  }

  /** Transmitter metadata (SSF §7.1), served at `/.well-known/ssf-configuration`. */
  metadata(): Record<string, unknown> {
    return {
      spec_version: '1_0',
      issuer: this.#issuer,
      jwks_uri: `${this.#issuer}/ssf/jwks`,
      delivery_methods_supported: [SSF_PUSH],
      authorization_schemes: [{ spec_urn: 'urn:ietf:rfc:6749' }],
      default_subjects: 'ALL',
      critical_subject_members: ['uri', 'jwt_id', 'opaque'],
    };
  }

  async start(): Promise<void> {
    if (this.#o.receivers.length === 0 || this.#stop !== undefined) return;
    this.#stop = await this.#o.bus.subscribe(undefined, (e) => this.#fanOut(e));
  }

  async close(): Promise<void> {
    this.#closed = true;
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
    await this.#stop?.();
  }

  async #fanOut(e: RevocationEvent): Promise<void> {
    const iat = Math.floor(this.#o.clock.nowMs() / 1000);
    for (const r of this.#o.receivers) {
      const claims = setForRevocation(e, this.#issuer, r.audience, iat);
      if (claims === undefined) return;
      const jwt = await this.#o.signer.sign(claims);
      void this.#deliver(r, jwt, claims.jti, e.id, 1);
    }
  }

  async #deliver(r: PushReceiver, jwt: string, jti: string, revocationId: string, attempt: number): Promise<void> {
    if (this.#closed) return;
    const report = (x: Omit<DeliveryReport, 'receiver' | 'jti' | 'revocationId' | 'attempts'>): void => this.#o.onDelivery?.({ receiver: r.endpointUrl, jti, revocationId, attempts: attempt, ...x });
    let status: number | undefined;
    try {
      const res = await fetch(r.endpointUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/secevent+jwt', accept: 'application/json', ...(r.authorizationHeader === undefined ? {} : { authorization: r.authorizationHeader }) },
        body: jwt,
        signal: AbortSignal.timeout(10_000),
      });
      status = res.status;
      if (status === 202) {
        await res.body?.cancel().catch(() => undefined);
        report({ outcome: 'delivered', status });
        return;
      }
      if (status === 400) {
        const body = (await res.json().catch(() => ({}))) as { err?: unknown };
        report({ outcome: 'rejected', status, ...(typeof body.err === 'string' ? { err: body.err } : {}) });
        return;
      }
      await res.body?.cancel().catch(() => undefined);
    } catch {
      // No answer: retried below.
    }
    if (attempt >= (this.#o.maxAttempts ?? 8)) {
      report({ outcome: 'gave-up', ...(status === undefined ? {} : { status }) });
      return;
    }
    const delay = Math.min(30_000, (this.#o.retryBaseMs ?? 200) * 2 ** (attempt - 1));
    const t = setTimeout(() => {
      this.#timers.delete(t);
      void this.#deliver(r, jwt, jti, revocationId, attempt + 1);
    }, delay);
    this.#timers.add(t);
  }
}
