/**
 * Building X.509 certificates with @peculiar/x509 on node:crypto's WebCrypto:
 * the shared pieces (random serials, key identifiers, names) and the CA
 * certificates of a trust domain (self-signed root, signing CA).
 */
import { randomBytes } from 'node:crypto';
import * as x509 from './x509-lib.ts';
import type { TrustDomain } from '../kernel/index.ts';
import { certSignatureParams, nodeWebCrypto } from './keys.ts';
import type { CryptoKey, JwtSvidAlg } from './keys.ts';

/** OIDs of the extensions Writ reads. */
export const OID = {
  basicConstraints: '2.5.29.19',
  keyUsage: '2.5.29.15',
  extKeyUsage: '2.5.29.37',
  subjectAltName: '2.5.29.17',
  subjectKeyId: '2.5.29.14',
  authorityKeyId: '2.5.29.35',
  nameConstraints: '2.5.29.30',
  serverAuth: '1.3.6.1.5.5.7.3.1',
  clientAuth: '1.3.6.1.5.5.7.3.2',
} as const;

/**
 * A random positive serial number of 128 bits, as hex (RFC 5280 §4.1.2.2:
 * positive, at most 20 octets; CA/B BR 7.1: at least 64 bits of entropy).
 *
 * @example
 * randomSerial(); // '5f0c…' (32 hex digits, first digit < 8)
 */
export function randomSerial(): string {
  const b = randomBytes(16);
  b[0] = ((b[0] ?? 0) & 0x7f) | 0x01;
  return b.toString('hex');
}

/** A signing key with the certificate that names it. */
export interface CertifiedKey {
  readonly certificate: x509.X509Certificate;
  readonly privateKey: CryptoKey;
  readonly alg: JwtSvidAlg;
}

/** The key identifier an issued certificate's AKI must carry: the issuer's SKI when it has one. */
export async function authorityKeyId(issuer: x509.X509Certificate): Promise<x509.AuthorityKeyIdentifierExtension> {
  const ski = issuer.getExtension(x509.SubjectKeyIdentifierExtension);
  if (ski !== null) return new x509.AuthorityKeyIdentifierExtension(ski.keyId);
  return x509.AuthorityKeyIdentifierExtension.create(issuer.publicKey, false, nodeWebCrypto);
}

/** Parameters of a CA certificate. */
export interface CaCertificateParams {
  readonly trustDomain: TrustDomain;
  /** Short id making the subject unique across rotations. */
  readonly id: string;
  readonly publicKey: CryptoKey | Uint8Array;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** Maximum number of CA certificates below this one (RFC 5280 §4.2.1.9). */
  readonly pathLength: number;
}

function caExtensions(trustDomain: TrustDomain, pathLength: number): x509.Extension[] {
  return [
    // X509-SVID §4.1: a signing certificate sets cA=true.
    new x509.BasicConstraintsExtension(true, pathLength, true),
    // X509-SVID §4.3: critical keyUsage with keyCertSign; cRLSign allowed.
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
    // X509-SVID §3 / §4.1: a CA's SPIFFE ID is the trust domain's, with no path.
    new x509.SubjectAlternativeNameExtension([{ type: 'url', value: trustDomain.idString() }], false),
  ];
}

/**
 * A self-signed root CA for a trust domain.
 *
 * @example
 * const root = await createRootCertificate({ trustDomain, id: 'r1', publicKey, notBefore, notAfter, pathLength: 1 }, rootKey, 'ES256');
 */
export async function createRootCertificate(params: CaCertificateParams, signingKey: CryptoKey, alg: JwtSvidAlg): Promise<x509.X509Certificate> {
  const name = `O=Writ, OU=${params.trustDomain.name}, CN=writ root ${params.id}`;
  const ski = await x509.SubjectKeyIdentifierExtension.create(params.publicKey, false, nodeWebCrypto);
  return x509.X509CertificateGenerator.create(
    {
      serialNumber: randomSerial(),
      subject: name,
      issuer: name,
      notBefore: params.notBefore,
      notAfter: params.notAfter,
      publicKey: params.publicKey,
      signingKey,
      signingAlgorithm: certSignatureParams(alg),
      extensions: [...caExtensions(params.trustDomain, params.pathLength), ski, new x509.AuthorityKeyIdentifierExtension(ski.keyId)],
    },
    nodeWebCrypto,
  );
}

/**
 * A signing CA (intermediate) for X.509-SVIDs, issued by `issuer`.
 *
 * @example
 * const ca = await createSigningCaCertificate({ trustDomain, id: 'i1', publicKey, notBefore, notAfter, pathLength: 0 }, root);
 */
export async function createSigningCaCertificate(params: CaCertificateParams, issuer: CertifiedKey): Promise<x509.X509Certificate> {
  const ski = await x509.SubjectKeyIdentifierExtension.create(params.publicKey, false, nodeWebCrypto);
  return x509.X509CertificateGenerator.create(
    {
      serialNumber: randomSerial(),
      subject: `O=Writ, OU=${params.trustDomain.name}, CN=writ signing ${params.id}`,
      issuer: issuer.certificate.subjectName,
      notBefore: params.notBefore,
      notAfter: params.notAfter,
      publicKey: params.publicKey,
      signingKey: issuer.privateKey,
      signingAlgorithm: certSignatureParams(issuer.alg),
      extensions: [...caExtensions(params.trustDomain, params.pathLength), ski, await authorityKeyId(issuer.certificate)],
    },
    nodeWebCrypto,
  );
}
