/**
 * The port through which the Workload API server obtains what it serves. The
 * agent's SVID cache implements it; tests implement it with node:crypto.
 *
 * Every method receives the attested caller. A method returns `null` when the
 * caller is entitled to nothing (no registration entry matches its
 * selectors); the server answers PermissionDenied.
 */
import type { PeerCredentials } from './peer-credentials.ts';
import type { Selector } from './selectors.ts';

/** A caller the server attested from kernel-verified peer credentials. */
export interface WorkloadCaller {
  /** The caller's selectors (`unix:uid:…`, `unix:gid:…`, `unix:path:…`, `unix:sha256:…`). */
  readonly selectors: readonly Selector[];
  /** What the kernel reported about the calling process. */
  readonly credentials: PeerCredentials;
}

/** One X.509-SVID with its key and the bundle of its own trust domain. */
export interface X509SvidMaterial {
  /** The SPIFFE ID in the leaf's URI SAN. */
  readonly spiffeId: string;
  /** DER certificates, leaf first, then intermediates. */
  readonly certChainDer: readonly Uint8Array[];
  /** Unencrypted PKCS#8 DER private key of the leaf. */
  readonly privateKeyPkcs8Der: Uint8Array;
  /** DER CA certificates of the SVID's trust domain. */
  readonly bundleDer: readonly Uint8Array[];
  /** Label telling several SVIDs apart; unique within one response. */
  readonly hint?: string;
}

/** Trust domain ID (`spiffe://<td>`) → DER CA certificates. */
export type X509BundleMap = ReadonlyMap<string, readonly Uint8Array[]>;

/** Everything FetchX509SVID sends. */
export interface X509SvidState {
  /** The caller's SVIDs; the first is the default. */
  readonly svids: readonly X509SvidMaterial[];
  /** Bundles of federated trust domains. */
  readonly federatedBundles: X509BundleMap;
  /** DER certificate revocation lists. */
  readonly crl?: readonly Uint8Array[];
}

/** Everything FetchX509Bundles sends. */
export interface X509BundlesState {
  /** The caller's own trust domain and federated ones. */
  readonly bundles: X509BundleMap;
  /** DER certificate revocation lists. */
  readonly crl?: readonly Uint8Array[];
}

/** One JWT-SVID. */
export interface JwtSvidMaterial {
  readonly spiffeId: string;
  /** JWS compact serialization. */
  readonly token: string;
  readonly hint?: string;
}

/** A validated JWT-SVID. */
export interface ValidatedJwtSvid {
  readonly spiffeId: string;
  /** Every claim of the token. */
  readonly claims: Readonly<Record<string, unknown>>;
}

/**
 * What the Workload API serves.
 *
 * @example
 * const source: WorkloadIdentitySource = {
 *   async x509Svids(caller) { return cache.x509For(caller.selectors); },
 *   async x509Bundles(caller) { return cache.bundlesFor(caller.selectors); },
 *   async jwtSvids(caller, audience, spiffeId) { return cache.jwtFor(caller.selectors, audience, spiffeId); },
 *   async jwtBundles(caller) { return cache.jwksFor(caller.selectors); },
 *   async validateJwtSvid(caller, token, audience) { return cache.validate(token, audience); },
 *   subscribe(listener) { cache.on('rotated', listener); return () => cache.off('rotated', listener); },
 * };
 */
export interface WorkloadIdentitySource {
  /** The caller's X.509-SVIDs, or null when it is entitled to none. */
  x509Svids(caller: WorkloadCaller): Promise<X509SvidState | null>;
  /** X.509 bundles the caller may see, or null when it is entitled to none. */
  x509Bundles(caller: WorkloadCaller): Promise<X509BundlesState | null>;
  /**
   * JWT-SVIDs for `audience` (non-empty), only the one for `spiffeId` when
   * given; null when the caller is entitled to none.
   */
  jwtSvids(caller: WorkloadCaller, audience: readonly string[], spiffeId: string | undefined): Promise<readonly JwtSvidMaterial[] | null>;
  /** Trust domain ID → JWKS JSON bytes of its JWT keys, or null when the caller is entitled to none. */
  jwtBundles(caller: WorkloadCaller): Promise<ReadonlyMap<string, Uint8Array> | null>;
  /**
   * Validate `token` for `audience`. Throws a WritError (status < 500) when
   * the token is invalid; returns null when the caller may not validate.
   */
  validateJwtSvid(caller: WorkloadCaller, token: string, audience: string): Promise<ValidatedJwtSvid | null>;
  /**
   * Be told when anything served may have changed (SVID or bundle rotation,
   * entry change). Returns the unsubscribe function.
   */
  subscribe(listener: () => void): () => void;
}
