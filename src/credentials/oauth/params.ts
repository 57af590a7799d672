/**
 * Form parameters of an OAuth request (`application/x-www-form-urlencoded`,
 * RFC 6749 §3.2): copied into plain data, each read through one guard.
 */
import { oauthErrors } from './errors.ts';

/** Parameters RFC 8693 §2.1 / RFC 8707 §2 allow more than once. */
const REPEATABLE = new Set(['audience', 'resource']);
const MAX_PARAM_BYTES = 16 * 1024;
const MAX_PARAMS = 64;

/** Parsed form parameters. */
export class FormParams {
  readonly #values: ReadonlyMap<string, readonly string[]>;

  constructor(values: ReadonlyMap<string, readonly string[]>) {
    this.#values = values;
  }

  /**
   * Parse a form body. RFC 6749 §3.2: a parameter other than `audience` and
   * `resource` sent twice is `invalid_request`.
   *
   * @example
   * const p = FormParams.parse('grant_type=client_credentials&scope=read');
   * p.one('grant_type'); // 'client_credentials'
   */
  static parse(body: string): FormParams {
    const map = new Map<string, string[]>();
    let count = 0;
    for (const [k, v] of new URLSearchParams(body)) {
      count += 1;
      if (count > MAX_PARAMS) throw oauthErrors.error('ERR_OAUTH_INVALID_REQUEST', `more than ${MAX_PARAMS} parameters`);
      if (v.length > MAX_PARAM_BYTES) throw oauthErrors.error('ERR_OAUTH_INVALID_REQUEST', `parameter \`${k.slice(0, 64)}\` is too long`);
      const list = map.get(k);
      if (list === undefined) map.set(k, [v]);
      else {
        if (!REPEATABLE.has(k)) throw oauthErrors.error('ERR_OAUTH_INVALID_REQUEST', `parameter \`${k.slice(0, 64)}\` is repeated`);
        list.push(v);
      }
    }
    return new FormParams(map);
  }

  /** The single value, or undefined; an empty value counts as absent (RFC 6749 §3.1). */
  one(name: string): string | undefined {
    const v = this.#values.get(name)?.[0];
    return v === undefined || v === '' ? undefined : v;
  }

  /** The single value; absent is `invalid_request`. */
  required(name: string): string {
    const v = this.one(name);
    if (v === undefined) throw oauthErrors.error('ERR_OAUTH_INVALID_REQUEST', `parameter \`${name}\` is required`);
    return v;
  }

  /** Every non-empty value. */
  all(name: string): readonly string[] {
    return (this.#values.get(name) ?? []).filter((v) => v !== '');
  }

  has(name: string): boolean {
    return this.one(name) !== undefined;
  }
}

const SCOPE_TOKEN = /^[\x21\x23-\x5b\x5d-\x7e]+$/;

/**
 * Split a `scope` value (RFC 6749 §3.3: space-delimited, `NQCHAR` tokens).
 *
 * @example
 * parseScope('read write'); // ['read', 'write']
 */
export function parseScope(raw: string | undefined): readonly string[] {
  if (raw === undefined) return [];
  const parts = raw.split(' ').filter((s) => s !== '');
  for (const s of parts) {
    if (!SCOPE_TOKEN.test(s)) throw oauthErrors.error('ERR_OAUTH_INVALID_SCOPE', 'scope has a character RFC 6749 §3.3 does not allow');
  }
  return [...new Set(parts)];
}
