/**
 * Where the key-encryption key comes from, decided without touching files or
 * the environment (the server reads them and hands the facts here):
 * `WRIT_KEK` (base64 of 32 bytes) wins, then `identity.kekFile`; production
 * mode refuses to start without one, development mode generates one.
 */
import { defineErrorCatalog } from '../kernel/index.ts';

export const kekErrors = defineErrorCatalog('KEK', {
  ERR_KEK_MISSING: { status: 400, description: 'production mode needs a key-encryption key: set `WRIT_KEK` (base64 of 32 bytes) or `identity.kekFile`' },
  ERR_KEK_INVALID: { status: 400, description: 'the key-encryption key is not 32 bytes (base64 of 32 bytes in `WRIT_KEK` or the key file, or 32 raw bytes in the file)' },
  ERR_KEK_FILE_INSECURE: { status: 400, description: 'the key-encryption key file is readable or writable by users other than its owner; it must be mode 0600' },
  ERR_KEK_FILE_UNREADABLE: { status: 400, description: 'the key-encryption key file named by `identity.kekFile` cannot be read' },
});

/** Every KEK error code. */
export type KekErrorCode = keyof typeof kekErrors.specs;

/**
 * Decode a KEK: base64 (standard or url-safe, surrounding whitespace
 * ignored) of exactly 32 bytes, or exactly 32 raw bytes. `from` names the
 * source in the message; the key itself never appears.
 *
 * @example
 * decodeKek(process.env.WRIT_KEK ?? '', 'WRIT_KEK'); // Uint8Array(32)
 */
export function decodeKek(input: string | Uint8Array, from: string): Uint8Array {
  if (input instanceof Uint8Array && input.length === 32) return Uint8Array.from(input);
  const text = (typeof input === 'string' ? input : Buffer.from(input).toString('utf8')).trim();
  if (/^[A-Za-z0-9+/_-]+={0,2}$/.test(text)) {
    const bytes = Buffer.from(text.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
    if (bytes.length === 32) return new Uint8Array(bytes);
  }
  throw kekErrors.error('ERR_KEK_INVALID', `the key-encryption key from ${from} is not base64 of 32 bytes`);
}

/**
 * True when a file mode lets anyone but the owner read or write it.
 *
 * @example
 * kekModeIsInsecure(0o100644); // true
 */
export function kekModeIsInsecure(mode: number): boolean {
  return (mode & 0o077) !== 0;
}
