/**
 * The one error base of Writ. Each bounded context declares its own closed
 * catalogue of codes with {@link defineErrorCatalog}; the server assembles the
 * catalogues into the complete list that `docs/errors.md` is checked against.
 *
 * `expose` is `status < 500`: exposed errors reach the client with their
 * message; unexposed ones reach it as a generic message while the detail goes
 * to logs and audit through `cause`.
 */

/** One entry of an error catalogue. */
export interface ErrorSpec {
  /** HTTP status the error maps to at the edge. */
  readonly status: number;
  /** One sentence for `docs/errors.md`: when the error is raised. */
  readonly description: string;
}

/** Codes are `ERR_<CONTEXT>_<WHAT>`: upper snake case, context first. */
export const ERROR_CODE_PATTERN = /^ERR_[A-Z0-9]+(?:_[A-Z0-9]+)+$/;

/**
 * Base error. Construct through a catalogue's `error()` so the code is always
 * one of the closed union.
 *
 * @example
 * const e = new WritError('ERR_KERNEL_CONFIG_INVALID', 400, 'unknown key `foo`');
 * e.expose; // true
 */
export class WritError extends Error {
  readonly code: string;
  readonly status: number;
  readonly expose: boolean;
  /** Kebab-case reasons, when the error explains a refusal. */
  readonly reasons: readonly string[];

  constructor(code: string, status: number, message: string, options?: { cause?: unknown; reasons?: readonly string[] }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'WritError';
    this.code = code;
    this.status = status;
    this.expose = status < 500;
    this.reasons = options?.reasons ?? [];
  }
}

/** A context's closed catalogue of error codes. */
export interface ErrorCatalog<C extends string> {
  readonly context: string;
  readonly specs: Readonly<Record<C, ErrorSpec>>;
  /** Build a typed error. */
  error(code: C, message: string, options?: { cause?: unknown; reasons?: readonly string[] }): WritError;
  /** True when `e` is a WritError with one of the given codes. */
  is(e: unknown, ...codes: C[]): e is WritError;
}

/**
 * Declare a context's error codes. Codes must match {@link ERROR_CODE_PATTERN}
 * and start with `ERR_<CONTEXT>_`.
 *
 * @example
 * const errors = defineErrorCatalog('AUDIT', {
 *   ERR_AUDIT_CHAIN_BROKEN: { status: 500, description: 'the chain failed verification' },
 * });
 * throw errors.error('ERR_AUDIT_CHAIN_BROKEN', 'bad hash at seq 4');
 */
export function defineErrorCatalog<C extends string>(context: string, specs: Record<C, ErrorSpec>): ErrorCatalog<C> {
  for (const code of Object.keys(specs)) {
    if (!ERROR_CODE_PATTERN.test(code) || !code.startsWith(`ERR_${context}_`)) {
      throw new TypeError(`error code ${code} must look like ERR_${context}_<WHAT>`);
    }
  }
  const frozen = Object.freeze({ ...specs });
  return Object.freeze({
    context,
    specs: frozen,
    error(code: C, message: string, options?: { cause?: unknown; reasons?: readonly string[] }): WritError {
      const spec = Object.hasOwn(frozen, code) ? (frozen as Record<string, ErrorSpec>)[code] : undefined;
      if (spec === undefined) throw new TypeError(`unknown error code ${code}`);
      return new WritError(code, spec.status, message, options);
    },
    is(e: unknown, ...codes: C[]): e is WritError {
      return e instanceof WritError && (codes.length === 0 ? Object.hasOwn(frozen, e.code) : (codes as string[]).includes(e.code));
    },
  });
}

/** Kernel's own codes. */
export const kernelErrors = defineErrorCatalog('KERNEL', {
  ERR_KERNEL_SPIFFE_ID_INVALID: { status: 400, description: 'a SPIFFE ID breaks a rule of the SPIFFE ID specification; the message names the rule' },
  ERR_KERNEL_TRUST_DOMAIN_INVALID: { status: 400, description: 'a trust domain name breaks a rule of the SPIFFE ID specification' },
  ERR_KERNEL_CONFIG_INVALID: { status: 400, description: 'configuration has an unknown key, a wrong type or an out-of-range value; the message names the key' },
});
