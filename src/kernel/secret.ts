import { timingSafeEqual, createHash } from 'node:crypto';

const REDACTED = '[redacted]';

/**
 * A value that must never be printed, logged, serialized or audited. Its
 * `toString`, `toJSON` and `util.inspect` forms are `[redacted]`; only
 * `reveal()` gives the value.
 *
 * @example
 * const s = new Secret('hunter2');
 * JSON.stringify({ s }); // '{"s":"[redacted]"}'
 * s.reveal();            // 'hunter2'
 */
export class Secret<T = string> {
  readonly #value: T;
  constructor(value: T) {
    this.#value = value;
    Object.freeze(this);
  }
  reveal(): T {
    return this.#value;
  }
  toString(): string {
    return REDACTED;
  }
  toJSON(): string {
    return REDACTED;
  }
  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return REDACTED;
  }
}

/** The placeholder every redacted value becomes. */
export const REDACTED_VALUE = REDACTED;

/**
 * Field names whose values are secrets wherever they appear. Matched
 * case-insensitively against the whole key, ignoring `-` and `_`.
 */
const SECRET_KEYS = new Set([
  'password', 'passwd', 'secret', 'clientsecret', 'token', 'accesstoken', 'refreshtoken', 'idtoken',
  'subjecttoken', 'actortoken', 'assertion', 'clientassertion', 'authorization', 'cookie', 'setcookie',
  'privatekey', 'key', 'apikey', 'kek', 'credential', 'credentials', 'svidkey', 'x509svidkey', 'dsn', 'connectionstring',
]);

/** True when a field named `key` holds a secret by its name alone. */
export function isSecretKey(key: string): boolean {
  return SECRET_KEYS.has(key.toLowerCase().replace(/[-_]/g, ''));
}

/**
 * Deep copy of plain data with every {@link Secret} and every secret-named
 * field replaced by `[redacted]`. Used before anything reaches the audit log.
 *
 * @example
 * redact({ user: 'a', password: 'x' }); // { user: 'a', password: '[redacted]' }
 */
export function redact(value: unknown, depth = 0): unknown {
  if (depth > 32) return REDACTED;
  if (value instanceof Secret) return REDACTED;
  if (Array.isArray(value)) return value.map((v) => redact(v, depth + 1));
  if (value !== null && typeof value === 'object') {
    if (typeof (value as { toJSON?: unknown }).toJSON === 'function' && !(value instanceof Date)) {
      return redact((value as { toJSON: () => unknown }).toJSON(), depth + 1);
    }
    if (value instanceof Date) return value.toISOString();
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) {
      out[k] = isSecretKey(k) && v !== undefined && v !== null ? REDACTED : redact(v, depth + 1);
    }
    return out;
  }
  return value;
}

/**
 * Compare two secrets in time independent of where they differ. Both sides are
 * hashed first so their lengths do not leak either.
 *
 * @example
 * constantTimeEqual('a', 'a'); // true
 */
export function constantTimeEqual(a: string | Uint8Array, b: string | Uint8Array): boolean {
  const ha = createHash('sha256').update(a).digest();
  const hb = createHash('sha256').update(b).digest();
  return timingSafeEqual(ha, hb);
}
