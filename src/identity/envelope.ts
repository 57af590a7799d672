/**
 * Envelope encryption of CA private keys at rest. Each key gets its own random
 * data-encryption key (DEK); the DEK is wrapped with the caller's
 * key-encryption key (KEK). Both layers are AES-256-GCM (NIST SP 800-38D) with
 * 96-bit random nonces, and the record's identity is bound as additional
 * authenticated data so a wrapped key cannot be moved to another record.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { Secret } from '../kernel/index.ts';
import { identityErrors } from './errors.ts';

const KEY_BYTES = 32;
const IV_BYTES = 12;
const TAG_BYTES = 16;

/** A private key as it is stored: nothing in it is usable without the KEK. */
export interface WrappedKey {
  /** Format version. */
  readonly v: 1;
  /** Fingerprint of the KEK that wrapped the DEK (not secret; tells which KEK to use). */
  readonly kekId: string;
  /** base64url of iv || ciphertext || tag: the DEK under the KEK. */
  readonly wrappedDek: string;
  /** base64url of iv || ciphertext || tag: the PKCS#8 key under the DEK. */
  readonly ciphertext: string;
}

function seal(key: Uint8Array, plaintext: Uint8Array, aad: Uint8Array): string {
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  cipher.setAAD(aad);
  const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return Buffer.concat([iv, body, cipher.getAuthTag()]).toString('base64url');
}

function open(key: Uint8Array, sealed: string, aad: Uint8Array): Buffer {
  const raw = Buffer.from(sealed, 'base64url');
  if (raw.length < IV_BYTES + TAG_BYTES) throw new Error('sealed value too short');
  const iv = raw.subarray(0, IV_BYTES);
  const tag = raw.subarray(raw.length - TAG_BYTES);
  const body = raw.subarray(IV_BYTES, raw.length - TAG_BYTES);
  const decipher = createDecipheriv('aes-256-gcm', key, iv);
  decipher.setAAD(aad);
  decipher.setAuthTag(tag);
  return Buffer.concat([decipher.update(body), decipher.final()]);
}

/**
 * The key-encryption key. Built from 32 bytes the caller loads (from
 * `WRIT_KEK`, a key file or a KMS); the bytes are held in a {@link Secret}.
 *
 * @example
 * const kek = new KeyEncryptionKey(randomBytes(32));
 * const w = kek.wrap(pkcs8, 'example.org/x509/k1');
 * kek.unwrap(w, 'example.org/x509/k1'); // the PKCS#8 bytes again
 */
export class KeyEncryptionKey {
  readonly #bytes: Secret<Uint8Array>;
  /** Non-secret fingerprint naming this KEK in stored records. */
  readonly id: string;

  constructor(bytes: Uint8Array | Secret<Uint8Array>) {
    const raw = bytes instanceof Secret ? bytes.reveal() : bytes;
    if (!(raw instanceof Uint8Array)) throw new TypeError('the key-encryption key must be bytes');
    if (raw.length !== KEY_BYTES) {
      throw identityErrors.error('ERR_IDENTITY_KEK_INVALID', `the key-encryption key must be ${KEY_BYTES} bytes, got ${raw.length}`);
    }
    this.#bytes = new Secret(Uint8Array.from(raw));
    this.id = createHash('sha256').update('writ-kek-id\0').update(raw).digest('hex').slice(0, 16);
    Object.freeze(this);
  }

  /** Encrypt `plaintext` under a fresh DEK, binding `context` (the record identity). */
  wrap(plaintext: Uint8Array, context: string): WrappedKey {
    const aad = Buffer.from(context, 'utf8');
    const dek = randomBytes(KEY_BYTES);
    try {
      return {
        v: 1,
        kekId: this.id,
        wrappedDek: seal(this.#bytes.reveal(), dek, aad),
        ciphertext: seal(dek, plaintext, aad),
      };
    } finally {
      dek.fill(0);
    }
  }

  /** Decrypt a wrapped key; throws `ERR_IDENTITY_KEY_UNWRAP_FAILED` for a wrong KEK, context or a tampered record. */
  unwrap(wrapped: WrappedKey, context: string): Uint8Array {
    if (wrapped.v !== 1) throw identityErrors.error('ERR_IDENTITY_KEY_UNWRAP_FAILED', `unknown wrapped key version \`${String(wrapped.v)}\``);
    if (wrapped.kekId !== this.id) {
      throw identityErrors.error('ERR_IDENTITY_KEY_UNWRAP_FAILED', `key \`${context}\` was wrapped by another key-encryption key (\`${wrapped.kekId}\`)`);
    }
    const aad = Buffer.from(context, 'utf8');
    let dek: Buffer | undefined;
    try {
      dek = open(this.#bytes.reveal(), wrapped.wrappedDek, aad);
      return new Uint8Array(open(dek, wrapped.ciphertext, aad));
    } catch (cause) {
      throw identityErrors.error('ERR_IDENTITY_KEY_UNWRAP_FAILED', `key \`${context}\` could not be decrypted`, { cause });
    } finally {
      dek?.fill(0);
    }
  }
}
