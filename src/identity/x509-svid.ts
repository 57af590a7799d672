/**
 * X.509-SVIDs: issuance and validation (spiffe/spiffe `standards/X509-SVID.md`;
 * STANDARDS.md §1.2).
 */
import { X509Certificate as NodeX509Certificate, createPublicKey } from 'node:crypto';
import * as x509 from './x509-lib.ts';
import { SpiffeId } from '../kernel/index.ts';
import type { Clock } from '../kernel/index.ts';
import type { BundleLookup, TrustBundle } from './bundle.ts';
import { identityErrors } from './errors.ts';
import { certSignatureParams, nodeWebCrypto } from './keys.ts';
import type { CryptoKey, JwtSvidAlg } from './keys.ts';
import { OID, authorityKeyId, randomSerial } from './x509-certs.ts';
import { readBasicConstraints, readCertificateFacts, readExtKeyUsage, readKeyUsage, readSubjectAltName } from './x509-der.ts';
import type { RawExtension } from './x509-der.ts';

/** Default X.509-SVID lifetime: 15 minutes. */
export const DEFAULT_X509_SVID_TTL_MS = 15 * 60_000;
/** Default server-wide maximum X.509-SVID lifetime: 1 hour. */
export const DEFAULT_X509_SVID_MAX_TTL_MS = 60 * 60_000;
/** notBefore is set this far back to absorb clock skew between peers. */
export const X509_BACKDATE_MS = 10_000;
/** Longest chain followed when validating (leaf included). */
const MAX_CHAIN_LENGTH = 8;

/** What signs X.509-SVIDs: the signing CA's key and the chain SVIDs carry. */
export interface X509Authority {
  /** The signing CA certificate (the leaf's issuer). */
  readonly certificate: x509.X509Certificate;
  readonly privateKey: CryptoKey;
  readonly alg: JwtSvidAlg;
  /** DER certificates sent after the leaf: the signing CA, then any intermediates; never the root. */
  readonly intermediates: readonly Uint8Array[];
}

/** Lifetime policy for issuance. */
export interface X509SvidLimits {
  readonly defaultTtlMs: number;
  readonly maxTtlMs: number;
}

/** A request for an X.509-SVID. */
export interface X509SvidRequest {
  readonly spiffeId: SpiffeId | string;
  /** The workload's public key: a CryptoKey, SPKI DER, or SPKI PEM. */
  readonly publicKey: CryptoKey | Uint8Array | string;
  readonly dnsNames?: readonly string[];
  /** Requested lifetime; default 15 minutes, capped by the server maximum and by the CA's expiry. */
  readonly ttlMs?: number;
}

/** An issued X.509-SVID (no private key: the workload holds it). */
export interface X509Svid {
  readonly spiffeId: SpiffeId;
  /** DER leaf certificate. */
  readonly certificate: Uint8Array;
  /** DER chain, leaf first, then the intermediates (not the root). */
  readonly chain: readonly Uint8Array[];
  /** Hex serial number. */
  readonly serialNumber: string;
  /** Backdated from the signing instant by up to {@link X509_BACKDATE_MS} for clock skew. */
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** The signing instant (the CA's clock): the lifetime counts from here, not from `notBefore`. */
  readonly issuedAt: Date;
}

/** A DNS name allowed in a SAN: LDH labels, optional leading wildcard label, at most 253 bytes. */
const DNS_NAME = /^(?:\*\.)?(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/;

function requestError(message: string): Error {
  return identityErrors.error('ERR_IDENTITY_SVID_REQUEST_INVALID', message);
}

function printable(s: string): string {
  const cut = s.length > 128 ? `${s.slice(0, 128)}…` : s;
  return cut.replace(/[\u0000-\u001f\u007f`]/g, '?');
}

/** Resolve a requested TTL against the limits and the signer's expiry; throws when nothing is left. */
export function effectiveTtlMs(requested: number | undefined, limits: X509SvidLimits, nowMs: number, signerNotAfterMs: number): number {
  if (requested !== undefined && !(Number.isFinite(requested) && requested > 0)) throw requestError(`ttl \`${String(requested)}\` must be a positive number of milliseconds`);
  const ttl = Math.min(requested ?? limits.defaultTtlMs, limits.maxTtlMs, signerNotAfterMs - nowMs);
  if (ttl < 1000) throw identityErrors.error('ERR_IDENTITY_CA_EXPIRED', 'the signing key expires too soon to sign anything');
  return ttl;
}

async function toPublicKey(input: CryptoKey | Uint8Array | string): Promise<CryptoKey | Uint8Array> {
  if (typeof input !== 'string') return input;
  try {
    return new Uint8Array(createPublicKey(input).export({ format: 'der', type: 'spki' }));
  } catch (cause) {
    throw identityErrors.error('ERR_IDENTITY_SVID_REQUEST_INVALID', 'public key is not a valid PEM public key', { cause });
  }
}

/**
 * Sign an X.509-SVID for `request.spiffeId` with `authority`.
 *
 * The leaf carries exactly one URI SAN (X509-SVID §2), basicConstraints
 * cA=false (§4.1), critical keyUsage digitalSignature (+keyAgreement for EC
 * keys, +keyEncipherment for RSA keys; never keyCertSign or cRLSign, §4.3),
 * EKU serverAuth+clientAuth (§4.4) and a random 128-bit serial.
 *
 * @example
 * const svid = await signX509Svid(authority, { spiffeId: 'spiffe://example.org/api', publicKey }, clock, limits);
 * svid.chain.length; // 2: leaf, signing CA
 */
export async function signX509Svid(authority: X509Authority, request: X509SvidRequest, clock: Clock, limits: X509SvidLimits): Promise<X509Svid> {
  const id = typeof request.spiffeId === 'string' ? SpiffeId.parse(request.spiffeId) : request.spiffeId;
  // X509-SVID §2: the SPIFFE ID of a leaf has a path.
  if (id.isTrustDomainId()) throw requestError(`SPIFFE ID \`${id.toString()}\` has no path and cannot name a workload`);
  const dnsNames = request.dnsNames ?? [];
  for (const name of dnsNames) {
    if (typeof name !== 'string' || name.length > 253 || !DNS_NAME.test(name)) throw requestError(`DNS name \`${printable(String(name))}\` is not valid`);
  }
  const now = clock.nowMs();
  const caNotAfter = authority.certificate.notAfter.getTime();
  const ttl = effectiveTtlMs(request.ttlMs, limits, now, caNotAfter);
  const notBefore = new Date(Math.max(now - X509_BACKDATE_MS, authority.certificate.notBefore.getTime()));
  // Whole seconds: X.509 times carry no fractions, so round down rather than past the CA's expiry.
  const notAfter = new Date(Math.floor((now + ttl) / 1000) * 1000);
  const publicKey = await toPublicKey(request.publicKey);
  const isRsa = publicKeyIsRsa(publicKey);
  const usages = x509.KeyUsageFlags.digitalSignature | (isRsa ? x509.KeyUsageFlags.keyEncipherment : x509.KeyUsageFlags.keyAgreement);
  const subject = dnsNames.length > 0 ? `O=Writ, CN=${dnsNames[0] ?? ''}` : 'O=Writ';
  const serial = randomSerial();
  const cert = await x509.X509CertificateGenerator.create(
    {
      serialNumber: serial,
      subject,
      issuer: authority.certificate.subjectName,
      notBefore,
      notAfter,
      publicKey,
      signingKey: authority.privateKey,
      signingAlgorithm: certSignatureParams(authority.alg),
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(usages, true),
        new x509.ExtendedKeyUsageExtension([OID.serverAuth, OID.clientAuth], false),
        new x509.SubjectAlternativeNameExtension([{ type: 'url', value: id.toString() }, ...dnsNames.map((d) => ({ type: 'dns' as const, value: d }))], false),
        await x509.SubjectKeyIdentifierExtension.create(publicKey, false, nodeWebCrypto),
        await authorityKeyId(authority.certificate),
      ],
    },
    nodeWebCrypto,
  );
  const der = new Uint8Array(cert.rawData);
  return Object.freeze({
    spiffeId: id,
    certificate: der,
    chain: Object.freeze([der, ...authority.intermediates]),
    serialNumber: cert.serialNumber,
    notBefore: cert.notBefore,
    notAfter: cert.notAfter,
    issuedAt: new Date(now),
  });
}

function publicKeyIsRsa(key: CryptoKey | Uint8Array): boolean {
  if (key instanceof Uint8Array) return createPublicKey({ key: Buffer.from(key), format: 'der', type: 'spki' }).asymmetricKeyType === 'rsa';
  return key.algorithm.name.startsWith('RSA');
}

/** PEM text of DER certificates, in order. */
export function certificatesToPem(ders: readonly Uint8Array[]): string {
  return ders
    .map((der) => `-----BEGIN CERTIFICATE-----\n${(Buffer.from(der).toString('base64').match(/.{1,64}/g) ?? []).join('\n')}\n-----END CERTIFICATE-----\n`)
    .join('');
}

/** DER certificates of a PEM text, in order. */
export function pemToCertificates(pem: string): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const m of pem.matchAll(/-----BEGIN CERTIFICATE-----([\s\S]*?)-----END CERTIFICATE-----/g)) {
    out.push(new Uint8Array(Buffer.from((m[1] ?? '').replace(/\s+/g, ''), 'base64')));
  }
  return out;
}

// ---------------------------------------------------------------- validation

/** The result of a successful validation. */
export interface ValidatedX509Svid {
  readonly spiffeId: SpiffeId;
  /** DER leaf. */
  readonly leaf: Uint8Array;
  /** Verified path, leaf first, ending with the bundle authority. */
  readonly verifiedChain: readonly Uint8Array[];
  readonly expiresAt: Date;
}

interface Parsed {
  readonly node: NodeX509Certificate;
  readonly subjectEmpty: boolean;
  readonly extensions: ReadonlyMap<string, RawExtension>;
}

const KNOWN_EXTENSIONS = new Set<string>([OID.basicConstraints, OID.keyUsage, OID.extKeyUsage, OID.subjectAltName, OID.subjectKeyId, OID.authorityKeyId]);

function invalid(rule: string): Error {
  return identityErrors.error('ERR_IDENTITY_X509_SVID_INVALID', `invalid X.509-SVID: ${rule}`);
}

/** Parsed bundle authorities, per bundle object (bundles are immutable). */
const rootCache = new WeakMap<TrustBundle, readonly Parsed[]>();

function parsedRoots(bundle: TrustBundle): readonly Parsed[] {
  let roots = rootCache.get(bundle);
  if (roots === undefined) {
    roots = bundle.x509Certificates().map((node, i) => parseUncached(new Uint8Array(node.raw), i));
    rootCache.set(bundle, roots);
  }
  return roots;
}

/** Recently parsed intermediates by DER, so a busy validator does not re-parse the same signing CA. */
const intermediateCache = new Map<string, Parsed>();
const INTERMEDIATE_CACHE_SIZE = 64;

function parse(input: Uint8Array | string, index: number): Parsed {
  if (index > 0 && typeof input !== 'string') {
    const key = Buffer.from(input).toString('base64');
    const hit = intermediateCache.get(key);
    if (hit !== undefined) return hit;
    const parsed = parseUncached(input, index);
    if (intermediateCache.size >= INTERMEDIATE_CACHE_SIZE) {
      const oldest = intermediateCache.keys().next();
      if (oldest.done !== true) intermediateCache.delete(oldest.value);
    }
    intermediateCache.set(key, parsed);
    return parsed;
  }
  return parseUncached(input, index);
}

function parseUncached(input: Uint8Array | string, index: number): Parsed {
  try {
    const node = new NodeX509Certificate(typeof input === 'string' ? input : Buffer.from(input));
    const facts = readCertificateFacts(new Uint8Array(node.raw));
    const extensions = new Map<string, RawExtension>();
    for (const e of facts.extensions) {
      // RFC 5280 §4.2: a certificate must not include more than one instance of an extension.
      if (extensions.has(e.oid)) throw new TypeError(`duplicate extension ${e.oid}`);
      extensions.set(e.oid, e);
    }
    const parsed: Parsed = { node, subjectEmpty: facts.subjectEmpty, extensions };
    // Decode the extensions the checks read, so a broken one is a malformed chain rather than a later crash.
    basicConstraints(parsed);
    keyUsage(parsed);
    extKeyUsage(parsed);
    subjectAltName(parsed);
    return parsed;
  } catch (cause) {
    throw identityErrors.error('ERR_IDENTITY_X509_SVID_MALFORMED', `certificate ${index} of the chain could not be parsed`, { cause });
  }
}

function basicConstraints(p: Parsed): { ca: boolean; pathLength: number | undefined } | undefined {
  const e = p.extensions.get(OID.basicConstraints);
  return e === undefined ? undefined : readBasicConstraints(e.value);
}

function keyUsage(p: Parsed): { critical: boolean; usages: number } | undefined {
  const e = p.extensions.get(OID.keyUsage);
  return e === undefined ? undefined : { critical: e.critical, usages: readKeyUsage(e.value) };
}

function extKeyUsage(p: Parsed): string[] | undefined {
  const e = p.extensions.get(OID.extKeyUsage);
  return e === undefined ? undefined : readExtKeyUsage(e.value);
}

function subjectAltName(p: Parsed): { critical: boolean; uris: string[] } | undefined {
  const e = p.extensions.get(OID.subjectAltName);
  return e === undefined ? undefined : { critical: e.critical, uris: readSubjectAltName(e.value).uris };
}

function checkTime(p: Parsed, nowMs: number, what: string): void {
  if (nowMs < p.node.validFromDate.getTime()) throw identityErrors.error('ERR_IDENTITY_X509_SVID_EXPIRED', `${what} is not yet valid`);
  if (nowMs > p.node.validToDate.getTime()) throw identityErrors.error('ERR_IDENTITY_X509_SVID_EXPIRED', `${what} has expired`);
}

function checkCriticalExtensions(p: Parsed, what: string): void {
  // RFC 5280 §4.2: a certificate with an unrecognised critical extension is rejected.
  for (const e of p.extensions.values()) {
    if (e.critical && !KNOWN_EXTENSIONS.has(e.oid)) throw invalid(`${what} has an unsupported critical extension \`${e.oid}\``);
  }
}

/** The SPIFFE ID of a leaf, applying X509-SVID §2 (exactly one URI SAN) and §3 (non-root path). */
function leafSpiffeId(leaf: Parsed): SpiffeId {
  const san = subjectAltName(leaf);
  const uris = san?.uris ?? [];
  if (uris.length === 0) throw invalid('leaf certificate contains no URI SAN');
  if (uris.length > 1) throw invalid('leaf certificate contains more than one URI SAN');
  const uri = uris[0] ?? '';
  const id = SpiffeId.tryParse(uri);
  if (id === undefined) throw invalid(`URI SAN \`${printable(uri)}\` is not a valid SPIFFE ID`);
  if (id.isTrustDomainId()) throw invalid('leaf SPIFFE ID has no path');
  // X509-SVID §2: with an empty subject the SAN extension must be critical (RFC 5280 §4.2.1.6).
  if (leaf.subjectEmpty && san !== undefined && !san.critical) throw invalid('subject alternative name must be critical when the subject is empty');
  return id;
}

/** X509-SVID §4.1, §4.3, §4.4: the leaf's basic constraints, key usage and extended key usage. */
function checkLeafUsage(leaf: Parsed): void {
  const bc = basicConstraints(leaf);
  if (bc !== undefined && bc.ca) throw invalid('leaf certificate must not have CA flag set to true');
  const ku = keyUsage(leaf);
  if (ku === undefined) throw invalid('leaf certificate must have a key usage extension');
  if (!ku.critical) throw invalid('leaf certificate key usage must be critical');
  if ((ku.usages & x509.KeyUsageFlags.digitalSignature) === 0) throw invalid("leaf certificate must have 'digitalSignature' set as key usage");
  if ((ku.usages & x509.KeyUsageFlags.keyCertSign) !== 0) throw invalid("leaf certificate must not have 'keyCertSign' set as key usage");
  if ((ku.usages & x509.KeyUsageFlags.cRLSign) !== 0) throw invalid("leaf certificate must not have 'cRLSign' set as key usage");
  const usages = extKeyUsage(leaf);
  if (usages !== undefined) {
    if (!usages.includes(OID.serverAuth) || !usages.includes(OID.clientAuth)) {
      throw invalid('leaf certificate extended key usage must include serverAuth and clientAuth');
    }
  }
}

/** RFC 5280 §4.2.1.9 / §6.1.4: an issuer in the path is a CA allowed to sign certificates at this depth. */
function checkIssuer(issuer: Parsed, caBelow: number, what: string): void {
  const bc = basicConstraints(issuer);
  if (bc === undefined || !bc.ca) throw invalid(`${what} is not a CA`);
  if (bc.pathLength !== undefined && caBelow > bc.pathLength) throw invalid(`${what} path length constraint is exceeded`);
  const ku = keyUsage(issuer);
  if (ku !== undefined && (ku.usages & x509.KeyUsageFlags.keyCertSign) === 0) throw invalid(`${what} may not sign certificates`);
}

function issued(child: Parsed, issuer: Parsed): boolean {
  return child.node.checkIssued(issuer.node) && child.node.verify(issuer.node.publicKey);
}

/**
 * Validate an X.509-SVID chain (leaf first, then intermediates) against the
 * bundle of the leaf's trust domain (X509-SVID §5): the leaf rules of §2–§4,
 * then RFC 5280 path validation (signatures, validity at `clock`, CA flags,
 * path lengths, critical extensions) up to one of the bundle's authorities.
 *
 * @example
 * const { spiffeId } = validateX509Svid(svid.chain, bundle, clock);
 * spiffeId.toString(); // 'spiffe://example.org/api'
 */
export function validateX509Svid(chain: readonly (Uint8Array | string)[], bundles: BundleLookup, clock: Clock): ValidatedX509Svid {
  if (!Array.isArray(chain) || chain.length === 0) throw identityErrors.error('ERR_IDENTITY_X509_SVID_MALFORMED', 'certificate chain is empty');
  if (chain.length > MAX_CHAIN_LENGTH) throw identityErrors.error('ERR_IDENTITY_X509_SVID_MALFORMED', `certificate chain is longer than ${MAX_CHAIN_LENGTH}`);
  const parsed = chain.map((c, i) => parse(c, i));
  const [leaf, ...intermediates] = parsed;
  if (leaf === undefined) throw identityErrors.error('ERR_IDENTITY_X509_SVID_MALFORMED', 'certificate chain is empty');
  const id = leafSpiffeId(leaf);
  checkLeafUsage(leaf);
  checkCriticalExtensions(leaf, 'leaf certificate');
  const bundle = bundles.get(id.trustDomain.name);
  if (bundle === undefined) throw identityErrors.error('ERR_IDENTITY_BUNDLE_NOT_FOUND', `no bundle for trust domain \`${id.trustDomain.name}\``);
  const roots = parsedRoots(bundle);
  const now = clock.nowMs();
  checkTime(leaf, now, 'leaf certificate');
  const path: Parsed[] = [leaf];
  let current = leaf;
  const unused = [...intermediates];
  for (let caBelow = 0; caBelow < MAX_CHAIN_LENGTH; caBelow++) {
    const root = roots.find((r) => issued(current, r));
    if (root !== undefined) {
      checkIssuer(root, caBelow, 'bundle authority');
      checkTime(root, now, 'bundle authority');
      path.push(root);
      let expires = Infinity;
      for (const p of path) expires = Math.min(expires, p.node.validToDate.getTime());
      return Object.freeze({ spiffeId: id, leaf: new Uint8Array(leaf.node.raw), verifiedChain: Object.freeze(path.map((p) => new Uint8Array(p.node.raw))), expiresAt: new Date(expires) });
    }
    const i = unused.findIndex((c) => issued(current, c));
    const next = unused[i];
    if (next === undefined) break;
    unused.splice(i, 1);
    checkIssuer(next, caBelow, 'intermediate certificate');
    checkCriticalExtensions(next, 'intermediate certificate');
    checkTime(next, now, 'intermediate certificate');
    path.push(next);
    current = next;
  }
  throw identityErrors.error('ERR_IDENTITY_X509_SVID_UNTRUSTED', `X.509-SVID does not chain to an authority of trust domain \`${id.trustDomain.name}\``);
}
