/**
 * SPIFFE ID and trust domain value types.
 *
 * Implements the SPIFFE ID specification (spiffe/spiffe `standards/SPIFFE-ID.md`):
 * - §2   form `spiffe://<trust domain><path>`; scheme `spiffe`; no query, no fragment
 * - §2.1 trust domain: `[a-z0-9._-]` only, no userinfo, port or percent-encoding, at most 255 bytes
 * - §2.2 path segments: `[a-zA-Z0-9._-]`, none empty, `.` or `..`, no trailing `/`
 * - §2.3 MUST accept IDs up to 2048 bytes; longer ones are refused here
 *
 * Parsing is strict: an ID is accepted only in its normal form (lowercase
 * scheme and trust domain), the form Writ generates, so that two equal IDs are
 * always equal strings.
 */
import { kernelErrors } from './errors.ts';
import { printable } from './printable.ts';

/** Longest SPIFFE ID accepted (SPIFFE-ID §2.3). */
export const MAX_SPIFFE_ID_BYTES = 2048;
/** Longest trust domain name accepted (SPIFFE-ID §2.1, DNS limit). */
export const MAX_TRUST_DOMAIN_BYTES = 255;

const SCHEME = 'spiffe://';
const TD_CHAR = /^[a-z0-9._-]$/;
const SEGMENT_CHAR = /^[a-zA-Z0-9._-]$/;

/** Every reason a SPIFFE ID or trust domain can be refused (messages are stable). */
export const SPIFFE_ID_RULES = {
  empty: 'cannot be empty',
  scheme: 'scheme is missing or invalid',
  missingTrustDomain: 'trust domain is missing',
  trustDomainChars: 'trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores',
  trustDomainTooLong: `trust domain is longer than ${MAX_TRUST_DOMAIN_BYTES} bytes`,
  pathChars: 'path segment characters are limited to letters, numbers, dots, dashes, and underscores',
  emptySegment: 'path cannot contain empty segments',
  dotSegment: 'path cannot contain dot segments',
  trailingSlash: 'path cannot have a trailing slash',
  pathNoLeadingSlash: 'path must have a leading slash',
  tooLong: `is longer than ${MAX_SPIFFE_ID_BYTES} bytes`,
} as const;

function idError(input: string, rule: string): Error {
  return kernelErrors.error('ERR_KERNEL_SPIFFE_ID_INVALID', `invalid SPIFFE ID \`${printable(input)}\`: ${rule}`);
}

function tdError(input: string, rule: string): Error {
  return kernelErrors.error('ERR_KERNEL_TRUST_DOMAIN_INVALID', `invalid trust domain \`${printable(input)}\`: ${rule}`);
}

function checkTrustDomainName(name: string, fail: (rule: string) => Error): void {
  if (name.length === 0) throw fail(SPIFFE_ID_RULES.missingTrustDomain);
  if (Buffer.byteLength(name, 'utf8') > MAX_TRUST_DOMAIN_BYTES) throw fail(SPIFFE_ID_RULES.trustDomainTooLong);
  for (const ch of name) {
    if (!TD_CHAR.test(ch)) throw fail(SPIFFE_ID_RULES.trustDomainChars);
  }
}

function checkPath(path: string, fail: (rule: string) => Error): void {
  if (path === '') return;
  if (!path.startsWith('/')) throw fail(SPIFFE_ID_RULES.pathNoLeadingSlash);
  const segments = path.slice(1).split('/');
  for (let i = 0; i < segments.length; i++) {
    const seg = segments[i] ?? '';
    if (seg === '') throw fail(i === segments.length - 1 ? SPIFFE_ID_RULES.trailingSlash : SPIFFE_ID_RULES.emptySegment);
    if (seg === '.' || seg === '..') throw fail(SPIFFE_ID_RULES.dotSegment);
    for (const ch of seg) {
      if (!SEGMENT_CHAR.test(ch)) throw fail(SPIFFE_ID_RULES.pathChars);
    }
  }
}

/**
 * A trust domain name, e.g. `example.org`.
 *
 * @example
 * const td = TrustDomain.parse('example.org');
 * td.idString(); // 'spiffe://example.org'
 */
export class TrustDomain {
  readonly name: string;
  private constructor(name: string) {
    this.name = name;
    Object.freeze(this);
  }

  /** Parse a bare name (`example.org`) or a SPIFFE ID and keep its trust domain. */
  static parse(input: string): TrustDomain {
    if (typeof input !== 'string') throw new TypeError('trust domain must be a string');
    if (input === '') throw tdError(input, SPIFFE_ID_RULES.missingTrustDomain);
    if (input.includes(':/')) return SpiffeId.parse(input).trustDomain;
    checkTrustDomainName(input, (rule) => tdError(input, rule));
    return new TrustDomain(input);
  }

  /** The trust domain's own SPIFFE ID, `spiffe://<name>` (no path). */
  idString(): string {
    return `${SCHEME}${this.name}`;
  }

  /** Build a member ID of this trust domain from a path (`/ns/prod/sa/api`). */
  newId(path: string): SpiffeId {
    // SPIFFE-ID §2.2: a non-empty path starts with `/`; without this check the
    // path would extend the trust domain name instead.
    if (path !== '' && !path.startsWith('/')) throw idError(path, SPIFFE_ID_RULES.pathNoLeadingSlash);
    return SpiffeId.parse(`${SCHEME}${this.name}${path}`);
  }

  equals(other: TrustDomain): boolean {
    return this.name === other.name;
  }

  toString(): string {
    return this.name;
  }

  toJSON(): string {
    return this.name;
  }

  /** @internal used by SpiffeId after validation */
  static fromValidated(name: string): TrustDomain {
    return new TrustDomain(name);
  }
}

/**
 * A SPIFFE ID, e.g. `spiffe://example.org/ns/prod/sa/api`.
 *
 * @example
 * const id = SpiffeId.parse('spiffe://example.org/ns/prod/sa/api');
 * id.trustDomain.name; // 'example.org'
 * id.path;             // '/ns/prod/sa/api'
 */
export class SpiffeId {
  readonly trustDomain: TrustDomain;
  /** The path, `''` or starting with `/`. */
  readonly path: string;

  private constructor(td: TrustDomain, path: string) {
    this.trustDomain = td;
    this.path = path;
    Object.freeze(this);
  }

  /** Parse and validate; throws `ERR_KERNEL_SPIFFE_ID_INVALID` naming the broken rule. */
  static parse(input: string): SpiffeId {
    if (typeof input !== 'string') throw new TypeError('SPIFFE ID must be a string');
    const fail = (rule: string): Error => idError(input, rule);
    if (input === '') throw fail(SPIFFE_ID_RULES.empty);
    if (Buffer.byteLength(input, 'utf8') > MAX_SPIFFE_ID_BYTES) throw fail(SPIFFE_ID_RULES.tooLong);
    if (!input.startsWith(SCHEME)) throw fail(SPIFFE_ID_RULES.scheme);
    const rest = input.slice(SCHEME.length);
    const slash = rest.indexOf('/');
    const td = slash === -1 ? rest : rest.slice(0, slash);
    const path = slash === -1 ? '' : rest.slice(slash);
    // Query (`?`) and fragment (`#`), userinfo (`@`), port (`:`), percent-encoding (`%`)
    // and IPv6 literals (`[`) all fall outside the allowed character sets.
    checkTrustDomainName(td, fail);
    checkPath(path, fail);
    return new SpiffeId(TrustDomain.fromValidated(td), path);
  }

  /** Parse, returning `undefined` instead of throwing. */
  static tryParse(input: string): SpiffeId | undefined {
    try {
      return SpiffeId.parse(input);
    } catch {
      return undefined;
    }
  }

  /** True when this ID belongs to `td`. */
  memberOf(td: TrustDomain): boolean {
    return this.trustDomain.equals(td);
  }

  /** True for the trust domain's own ID (empty path); such an ID may not name a leaf SVID. */
  isTrustDomainId(): boolean {
    return this.path === '';
  }

  equals(other: SpiffeId): boolean {
    return this.trustDomain.equals(other.trustDomain) && this.path === other.path;
  }

  toString(): string {
    return `${SCHEME}${this.trustDomain.name}${this.path}`;
  }

  toJSON(): string {
    return this.toString();
  }
}
