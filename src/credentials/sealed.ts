/**
 * Secrets Writ must keep (a legacy account's rotated password, an engine's
 * admin password) are stored envelope-encrypted under the KEK, like CA keys:
 * a fresh data key per secret, the record's identity bound as AAD, so a
 * sealed secret cannot be moved to another record.
 */
import { Secret } from '../kernel/index.ts';
import type { KeyEncryptionKey } from '../identity/index.ts';
import type { SealedSecret } from './ports.ts';

/**
 * AAD of an engine's admin secret.
 *
 * @example
 * engineSecretContext('main'); // 'writ/credentials/engine/main'
 */
export function engineSecretContext(engine: string): string {
  return `writ/credentials/engine/${engine}`;
}

/**
 * AAD of a legacy exception's secret.
 *
 * @example
 * exceptionSecretContext('exc_0123…'); // 'writ/credentials/exception/exc_0123…'
 */
export function exceptionSecretContext(id: string): string {
  return `writ/credentials/exception/${id}`;
}

/**
 * @example
 * const sealed = sealSecret(kek, generatePassword(), engineSecretContext('main'));
 */
export function sealSecret(kek: KeyEncryptionKey, secret: Secret, context: string): SealedSecret {
  const plain = Buffer.from(secret.reveal(), 'utf8');
  try {
    return kek.wrap(plain, context);
  } finally {
    plain.fill(0);
  }
}

/**
 * Open a sealed secret; a wrong KEK, context or a tampered record throws `ERR_IDENTITY_KEY_UNWRAP_FAILED`.
 *
 * @example
 * const password = openSecret(kek, row.current, engineSecretContext('main'));
 */
export function openSecret(kek: KeyEncryptionKey, sealed: SealedSecret, context: string): Secret {
  const plain = kek.unwrap(sealed, context);
  try {
    return new Secret(Buffer.from(plain).toString('utf8'));
  } finally {
    plain.fill(0);
  }
}
