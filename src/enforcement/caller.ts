/**
 * Caller authentication for enforcement points: the trust bundle as a
 * refreshed source, and the two SPIFFE credentials a caller presents — a
 * JWT-SVID bearer (JWT-SVID §7 validation) and an X.509-SVID (X509-SVID §5),
 * from the TLS peer or from a header a trusted proxy set.
 *
 * Fail closed: without a current bundle no caller authenticates
 * (`ERR_ENFORCE_BUNDLE_UNAVAILABLE`).
 */
import { TrustBundle, pemToCertificates, validateJwtSvid, validateX509Svid } from '../identity/index.ts';
import { X509Certificate } from 'node:crypto';
import { SpiffeId } from '../kernel/index.ts';
import type { Clock } from '../kernel/index.ts';
import { enforcementErrors } from './errors.ts';

/** Where the current trust bundle comes from. */
export interface BundleSource {
  /** The bundle to validate with now; throws `ERR_ENFORCE_BUNDLE_UNAVAILABLE` when there is none. */
  current(): Promise<TrustBundle>;
}

/**
 * A fixed bundle (tests, or a bundle the Workload API delivered).
 *
 * @example
 * const source = new StaticBundleSource(bundle);
 */
export class StaticBundleSource implements BundleSource {
  readonly #bundle: TrustBundle | undefined;
  constructor(bundle: TrustBundle | undefined) {
    this.#bundle = bundle;
  }
  async current(): Promise<TrustBundle> {
    if (this.#bundle === undefined) throw enforcementErrors.error('ERR_ENFORCE_BUNDLE_UNAVAILABLE', 'no trust bundle is configured');
    return this.#bundle;
  }
}

/** Options of {@link ServerBundleSource}. */
export interface ServerBundleSourceOptions {
  /** Base URL of the Writ server; the bundle is read from `<url>/bundle`. */
  readonly url: string;
  /** The trust domain the served bundle belongs to. */
  readonly trustDomain: string;
  readonly clock: Clock;
  /** Refresh interval when the bundle carries no `spiffe_refresh_hint` (default 300 s). */
  readonly defaultRefreshSeconds?: number;
  /**
   * How long past its refresh time a bundle may still be used while the server
   * cannot be reached (default 3 refresh intervals). Past that it is expired
   * and every caller is refused.
   */
  readonly maxStaleSeconds?: number;
  /** Deadline of one fetch (default 2000 ms). */
  readonly timeoutMs?: number;
  readonly fetch?: typeof fetch;
}

/**
 * The server's SPIFFE bundle endpoint (`GET /bundle`), fetched on first use
 * and again at its refresh hint (SPIFFE Trust Domain and Bundle §4.1.2,
 * `spiffe_refresh_hint`). A failed refresh keeps the previous bundle until it
 * is `maxStaleSeconds` past its refresh time; a bundle never fetched, or one
 * that old, is unavailable.
 *
 * @example
 * const bundles = new ServerBundleSource({ url: 'http://127.0.0.1:7400', trustDomain: 'writ.local', clock: systemClock });
 * const b = await bundles.current();
 */
export class ServerBundleSource implements BundleSource {
  readonly #o: ServerBundleSourceOptions;
  readonly #fetch: typeof fetch;
  #bundle: TrustBundle | undefined;
  #refreshAt = 0;
  #expiresAt = 0;
  #inflight: Promise<void> | undefined;

  constructor(options: ServerBundleSourceOptions) {
    this.#o = options;
    this.#fetch = options.fetch ?? fetch;
  }

  async current(): Promise<TrustBundle> {
    const now = this.#o.clock.nowMs();
    if (this.#bundle === undefined || now >= this.#refreshAt) {
      this.#inflight ??= this.#refresh().finally(() => {
        this.#inflight = undefined;
      });
      await this.#inflight;
    }
    const b = this.#bundle;
    if (b === undefined) throw enforcementErrors.error('ERR_ENFORCE_BUNDLE_UNAVAILABLE', 'the trust bundle could not be fetched from the server');
    if (this.#o.clock.nowMs() >= this.#expiresAt) throw enforcementErrors.error('ERR_ENFORCE_BUNDLE_UNAVAILABLE', 'the trust bundle expired and could not be refreshed from the server');
    return b;
  }

  async #refresh(): Promise<void> {
    try {
      const res = await this.#fetch(`${this.#o.url.replace(/\/+$/, '')}/bundle`, { signal: AbortSignal.timeout(this.#o.timeoutMs ?? 2000) });
      if (res.status !== 200) return;
      const bundle = TrustBundle.parse(await res.text(), this.#o.trustDomain);
      const now = this.#o.clock.nowMs();
      const every = (bundle.refreshHintSeconds ?? this.#o.defaultRefreshSeconds ?? 300) * 1000;
      this.#bundle = bundle;
      this.#refreshAt = now + every;
      this.#expiresAt = this.#refreshAt + (this.#o.maxStaleSeconds === undefined ? 3 * every : this.#o.maxStaleSeconds * 1000);
    } catch {
      // Unreachable server or an unparsable bundle: keep the previous one until it expires.
    }
  }
}

/** Who is calling, once authenticated. */
export interface CallerIdentity {
  readonly spiffeId: string;
  readonly method: 'jwt-svid' | 'x509-svid';
  readonly expiresAt: Date;
}

/**
 * The token of an `Authorization: Bearer <token>` header (RFC 6750 §2.1), or
 * undefined when the header is absent or of another scheme.
 *
 * @example
 * bearerToken('Bearer eyJ…'); // 'eyJ…'
 */
export function bearerToken(authorization: string | undefined): string | undefined {
  if (authorization === undefined) return undefined;
  const m = /^Bearer +([A-Za-z0-9\-._~+/]+=*)\s*$/i.exec(authorization);
  return m?.[1];
}

/**
 * Validate a JWT-SVID bearer for `audience` against the current bundle.
 * Throws `ERR_ENFORCE_BUNDLE_UNAVAILABLE` or `ERR_ENFORCE_CREDENTIAL_INVALID`
 * (the identity error is the cause).
 *
 * @example
 * const caller = await authenticateJwtSvid(token, 'hello-service', bundles, systemClock);
 * caller.spiffeId; // 'spiffe://writ.local/hello-client'
 */
export async function authenticateJwtSvid(token: string, audience: string, bundles: BundleSource, clock: Clock): Promise<CallerIdentity> {
  const bundle = await bundles.current();
  try {
    const v = await validateJwtSvid(token, audience, bundle, clock);
    return { spiffeId: v.spiffeId.toString(), method: 'jwt-svid', expiresAt: v.expiresAt };
  } catch (cause) {
    throw enforcementErrors.error('ERR_ENFORCE_CREDENTIAL_INVALID', `JWT-SVID rejected: ${cause instanceof Error ? cause.message : 'invalid'}`, { cause });
  }
}

/**
 * Validate an X.509-SVID chain (leaf first, DER or PEM) against the current
 * bundle.
 *
 * @example
 * const caller = await authenticateX509Svid([leafDer, signingCaDer], bundles, systemClock);
 */
export async function authenticateX509Svid(chain: readonly (Uint8Array | string)[], bundles: BundleSource, clock: Clock): Promise<CallerIdentity> {
  const bundle = await bundles.current();
  try {
    const v = validateX509Svid(chain, bundle, clock);
    return { spiffeId: v.spiffeId.toString(), method: 'x509-svid', expiresAt: v.expiresAt };
  } catch (cause) {
    throw enforcementErrors.error('ERR_ENFORCE_CREDENTIAL_INVALID', `X.509-SVID rejected: ${cause instanceof Error ? cause.message : 'invalid'}`, { cause });
  }
}

/**
 * Authenticate the leaf of a TLS connection that the TLS stack already
 * verified (`socket.authorized`) against CAs the application configured from
 * the Writ bundle. Node's TLS server exposes only the peer leaf, not the
 * intermediates it verified, so the path check is the TLS stack's; here the
 * leaf must still be an SVID (one `spiffe://` URI SAN naming a workload, not a
 * CA, valid at `clock`) of the trust domain of the current bundle (X509-SVID
 * §2, §4.1, §5).
 *
 * @example
 * const caller = await authenticateTlsVerifiedLeaf(leafDer, bundles, systemClock);
 */
export async function authenticateTlsVerifiedLeaf(leaf: Uint8Array, bundles: BundleSource, clock: Clock): Promise<CallerIdentity> {
  const bundle = await bundles.current();
  const bad = (why: string) => enforcementErrors.error('ERR_ENFORCE_CREDENTIAL_INVALID', `X.509-SVID rejected: ${why}`);
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(leaf);
  } catch {
    throw bad('peer certificate does not parse');
  }
  if (cert.ca) throw bad('peer certificate is a CA certificate');
  const uris = (cert.subjectAltName ?? '').split(', ').filter((n) => n.startsWith('URI:'));
  if (uris.length !== 1) throw bad('peer certificate must have exactly one URI SAN');
  const id = SpiffeId.tryParse((uris[0] ?? '').slice(4));
  if (id === undefined || id.isTrustDomainId()) throw bad('URI SAN is not a workload SPIFFE ID');
  if (id.trustDomain.name !== bundle.trustDomain.name) throw bad(`trust domain \`${id.trustDomain.name}\` is not \`${bundle.trustDomain.name}\``);
  const now = clock.nowMs();
  if (now < Date.parse(cert.validFrom) || now >= Date.parse(cert.validTo)) throw bad('peer certificate is not valid now');
  return { spiffeId: id.toString(), method: 'x509-svid', expiresAt: new Date(cert.validTo) };
}

/**
 * Decode a forwarded client certificate: URL-encoded PEM, as Envoy puts in
 * `source.certificate` and nginx in `$ssl_client_escaped_cert`, or plain PEM.
 * One or more certificates, leaf first. Only a header set by a trusted proxy
 * that terminated the mTLS connection may be read this way (docs/enforcement.md).
 *
 * @example
 * const chain = decodeForwardedCertificate(req.headers['x-writ-client-cert']);
 */
export function decodeForwardedCertificate(value: string): Uint8Array[] {
  let pem = value.trim();
  // PEM never holds `%`, so any `%` means URL encoding.
  if (pem.includes('%')) {
    try {
      pem = decodeURIComponent(pem);
    } catch {
      throw enforcementErrors.error('ERR_ENFORCE_CREDENTIAL_INVALID', 'forwarded client certificate is not URL-encoded PEM');
    }
  }
  let certs: Uint8Array[];
  try {
    certs = pemToCertificates(pem);
  } catch {
    certs = [];
  }
  if (certs.length === 0) throw enforcementErrors.error('ERR_ENFORCE_CREDENTIAL_INVALID', 'forwarded client certificate holds no PEM certificate');
  return certs;
}
