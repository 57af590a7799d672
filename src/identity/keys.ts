/**
 * Key generation and import on node:crypto's WebCrypto, for CA keys, JWT
 * signing keys and workload keys. One table maps each JOSE algorithm to its
 * WebCrypto parameters so every other file speaks JOSE names only.
 */
import { createHash, createPrivateKey, createPublicKey, webcrypto } from 'node:crypto';
import type { JsonWebKey as NodeJsonWebKey, KeyObject, webcrypto as WebCryptoTypes } from 'node:crypto';

/** WebCrypto types from node:crypto (the project compiles without the DOM library). */
export type CryptoKey = WebCryptoTypes.CryptoKey;
export type JsonWebKey = NodeJsonWebKey;
type CryptoKeyPair = WebCryptoTypes.CryptoKeyPair;
type EcdsaParams = WebCryptoTypes.EcdsaParams;
type Algorithm = WebCryptoTypes.Algorithm;
type RsaHashedKeyGenParams = WebCryptoTypes.RsaHashedKeyGenParams;
type EcKeyGenParams = WebCryptoTypes.EcKeyGenParams;
type RsaHashedImportParams = WebCryptoTypes.RsaHashedImportParams;
type EcKeyImportParams = WebCryptoTypes.EcKeyImportParams;

/** WebCrypto as node:crypto provides it; passed explicitly to @peculiar/x509. */
export const nodeWebCrypto = webcrypto;

/**
 * Signature algorithms a JWT-SVID may use (JWT-SVID §3: RS, ES and PS families).
 * The order is the allow-list validators check against.
 */
export const JWT_SVID_ALGS = ['ES256', 'ES384', 'ES512', 'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512'] as const;
export type JwtSvidAlg = (typeof JWT_SVID_ALGS)[number];

/** Algorithms a CA signing key (X.509) may use. */
export const X509_CA_ALGS = ['ES256', 'ES384', 'RS256'] as const;
export type X509CaAlg = (typeof X509_CA_ALGS)[number];

interface AlgParams {
  readonly generate: RsaHashedKeyGenParams | EcKeyGenParams;
  readonly import: RsaHashedImportParams | EcKeyImportParams;
  /** Parameters for a certificate signature made with this key. */
  readonly certSignature: EcdsaParams | Algorithm;
}

const RSA_EXPONENT = new Uint8Array([1, 0, 1]);

function ec(curve: string, hash: string): AlgParams {
  return {
    generate: { name: 'ECDSA', namedCurve: curve },
    import: { name: 'ECDSA', namedCurve: curve },
    certSignature: { name: 'ECDSA', hash } as EcdsaParams,
  };
}

function rsa(name: string, hash: string): AlgParams {
  return {
    generate: { name, modulusLength: 2048, publicExponent: RSA_EXPONENT, hash },
    import: { name, hash },
    certSignature: { name },
  };
}

const ALG_PARAMS: Readonly<Record<JwtSvidAlg, AlgParams>> = {
  ES256: ec('P-256', 'SHA-256'),
  ES384: ec('P-384', 'SHA-384'),
  ES512: ec('P-521', 'SHA-512'),
  RS256: rsa('RSASSA-PKCS1-v1_5', 'SHA-256'),
  RS384: rsa('RSASSA-PKCS1-v1_5', 'SHA-384'),
  RS512: rsa('RSASSA-PKCS1-v1_5', 'SHA-512'),
  PS256: rsa('RSA-PSS', 'SHA-256'),
  PS384: rsa('RSA-PSS', 'SHA-384'),
  PS512: rsa('RSA-PSS', 'SHA-512'),
};

/** True when `alg` is one of {@link JWT_SVID_ALGS}. */
export function isJwtSvidAlg(alg: unknown): alg is JwtSvidAlg {
  return typeof alg === 'string' && (JWT_SVID_ALGS as readonly string[]).includes(alg);
}

function paramsOf(alg: JwtSvidAlg): AlgParams {
  const p = ALG_PARAMS[alg];
  if (p === undefined) throw new TypeError(`unsupported algorithm ${String(alg)}`);
  return p;
}

/** A freshly generated key pair whose private half is also exported once as PKCS#8 DER. */
export interface GeneratedKeyPair {
  readonly alg: JwtSvidAlg;
  /** Non-extractable private key for signing. */
  readonly privateKey: CryptoKey;
  readonly publicKey: CryptoKey;
  /** PKCS#8 DER of the private key, to be wrapped before it goes anywhere. */
  readonly pkcs8: Uint8Array;
  /** SubjectPublicKeyInfo DER of the public key. */
  readonly spki: Uint8Array;
}

/**
 * Generate a signing key pair for a JOSE algorithm. The returned private
 * CryptoKey is not extractable; the PKCS#8 copy is for envelope encryption.
 *
 * @example
 * const kp = await generateSigningKeyPair('ES256');
 * kp.privateKey.extractable; // false
 */
export async function generateSigningKeyPair(alg: JwtSvidAlg): Promise<GeneratedKeyPair> {
  const p = paramsOf(alg);
  const pair = (await webcrypto.subtle.generateKey(p.generate, true, ['sign', 'verify'])) as CryptoKeyPair;
  const pkcs8 = new Uint8Array(await webcrypto.subtle.exportKey('pkcs8', pair.privateKey));
  const spki = new Uint8Array(await webcrypto.subtle.exportKey('spki', pair.publicKey));
  const privateKey = await webcrypto.subtle.importKey('pkcs8', pkcs8, p.import, false, ['sign']);
  return { alg, privateKey, publicKey: pair.publicKey, pkcs8, spki };
}

/**
 * Import a PKCS#8 DER private key for signing with `alg` (not extractable).
 *
 * @example
 * const key = await importSigningKey(kp.pkcs8, 'ES256');
 */
export async function importSigningKey(pkcs8: Uint8Array, alg: JwtSvidAlg): Promise<CryptoKey> {
  return webcrypto.subtle.importKey('pkcs8', pkcs8, paramsOf(alg).import, false, ['sign']);
}

/** Parameters to sign a certificate with a key of `alg`. */
export function certSignatureParams(alg: JwtSvidAlg): EcdsaParams | Algorithm {
  return paramsOf(alg).certSignature;
}

/**
 * The JOSE algorithm that fits a key: ES256/384/512 by curve, RS256 for RSA.
 * Returns undefined for other key types.
 *
 * @example
 * algOfKeyObject(createPublicKey(pem)); // 'ES256'
 */
export function algOfKeyObject(key: KeyObject): JwtSvidAlg | undefined {
  if (key.asymmetricKeyType === 'rsa') return 'RS256';
  if (key.asymmetricKeyType !== 'ec') return undefined;
  switch (key.asymmetricKeyDetails?.namedCurve) {
    case 'prime256v1':
      return 'ES256';
    case 'secp384r1':
      return 'ES384';
    case 'secp521r1':
      return 'ES512';
    default:
      return undefined;
  }
}

/**
 * Import a PEM or DER PKCS#8 private key of unknown type, working out its
 * algorithm. Returns undefined when the key is of no supported type.
 *
 * @example
 * const k = importAnySigningKey(upstreamKeyPem);
 * k?.alg; // 'ES256'
 */
export function importAnySigningKey(input: string | Uint8Array): { alg: JwtSvidAlg; pkcs8: Uint8Array; privateKey: CryptoKey; spki: Uint8Array } | undefined {
  const ko = typeof input === 'string' ? createPrivateKey(input) : createPrivateKey({ key: Buffer.from(input), format: 'der', type: 'pkcs8' });
  const alg = algOfKeyObject(ko);
  if (alg === undefined) return undefined;
  const pkcs8 = new Uint8Array(ko.export({ format: 'der', type: 'pkcs8' }));
  const spki = new Uint8Array(createPublicKey(ko).export({ format: 'der', type: 'spki' }));
  const privateKey = ko.toCryptoKey(paramsOf(alg).import, false, ['sign']);
  return { alg, pkcs8, privateKey, spki };
}

/**
 * Lowercase hex SHA-256 of public key bytes (SPKI DER) or a certificate:
 * a fingerprint safe to log and audit.
 *
 * @example
 * fingerprint(kp.spki); // '3f1c…'
 */
export function fingerprint(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}
