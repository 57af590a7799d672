/**
 * SCRAM-SHA-256 password verifiers (RFC 5802 §3, RFC 7677), computed here so
 * PostgreSQL receives `ALTER ROLE … PASSWORD 'SCRAM-SHA-256$…'` — a verifier,
 * never the plaintext, even in the server's statement log.
 */
import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';
import type { Secret } from '../../kernel/index.ts';

/** PostgreSQL's default `scram_iterations`. */
const ITERATIONS = 4096;

/**
 * The verifier PostgreSQL stores in `pg_authid.rolpassword` for `password`.
 * Passwords Writ generates are ASCII, so SASLprep leaves them unchanged.
 *
 * @example
 * scramSha256Verifier(generatePassword()); // 'SCRAM-SHA-256$4096:<salt>$<StoredKey>:<ServerKey>'
 */
export function scramSha256Verifier(password: Secret, salt: Buffer = randomBytes(16)): string {
  const salted = pbkdf2Sync(password.reveal(), salt, ITERATIONS, 32, 'sha256');
  const clientKey = createHmac('sha256', salted).update('Client Key').digest();
  const storedKey = createHash('sha256').update(clientKey).digest();
  const serverKey = createHmac('sha256', salted).update('Server Key').digest();
  salted.fill(0);
  return `SCRAM-SHA-256$${ITERATIONS}:${salt.toString('base64')}$${storedKey.toString('base64')}:${serverKey.toString('base64')}`;
}
