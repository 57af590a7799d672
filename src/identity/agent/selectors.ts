/**
 * Workload selectors: the facts a registration entry names and an attested
 * caller has, written `<type>:<key>:<value>` (for example `unix:uid:1000`).
 *
 * The Unix workload attestor turns kernel-verified peer credentials into
 * `unix:uid:<n>`, `unix:gid:<n>`, `unix:path:<executable>` and
 * `unix:sha256:<hex>`. An entry matches a caller when every one of the
 * entry's selectors is among the caller's; an entry without selectors
 * matches nobody.
 */
import { agentErrors } from './errors.ts';
import type { PeerCredentials } from './peer-credentials.ts';

/** A selector in its canonical string form `<type>:<key>:<value>`. */
export type Selector = string;

/** The parts of a selector. */
export interface SelectorParts {
  readonly type: string;
  readonly key: string;
  readonly value: string;
}

const TYPE = /^[a-z][a-z0-9_-]*$/;
const KEY = /^[a-z][a-z0-9_-]*$/;
const UNIX_CHECKS: Readonly<Record<string, RegExp>> = {
  uid: /^(0|[1-9][0-9]{0,9})$/,
  gid: /^(0|[1-9][0-9]{0,9})$/,
  path: /^\/[^\u0000-\u001f\u007f]*$/,
  sha256: /^[0-9a-f]{64}$/,
};
const MAX_SELECTOR_BYTES = 4096;

/**
 * Split and check one selector. Unix selectors are checked strictly; other
 * types only for shape.
 *
 * @example
 * parseSelector('unix:path:/usr/bin/app'); // { type: 'unix', key: 'path', value: '/usr/bin/app' }
 */
export function parseSelector(s: string): SelectorParts {
  const bad = (why: string): Error =>
    agentErrors.error('ERR_IDENTITY_SELECTOR_INVALID', `invalid selector \`${printable(s)}\`: ${why}`);
  if (Buffer.byteLength(s, 'utf8') > MAX_SELECTOR_BYTES) throw bad(`longer than ${MAX_SELECTOR_BYTES} bytes`);
  const first = s.indexOf(':');
  const second = first < 0 ? -1 : s.indexOf(':', first + 1);
  if (first < 0 || second < 0) throw bad('expected `<type>:<key>:<value>`');
  const type = s.slice(0, first);
  const key = s.slice(first + 1, second);
  const value = s.slice(second + 1);
  if (!TYPE.test(type)) throw bad('type must be lowercase letters, digits, `_` or `-`');
  if (!KEY.test(key)) throw bad('key must be lowercase letters, digits, `_` or `-`');
  if (value === '') throw bad('value is empty');
  if (type === 'unix') {
    const check = UNIX_CHECKS[key];
    if (check === undefined) throw bad('unix keys are uid, gid, path and sha256');
    if (!check.test(value)) throw bad(`malformed unix ${key}`);
  }
  return Object.freeze({ type, key, value });
}

/**
 * The selectors of a caller attested by its kernel-verified peer credentials.
 *
 * @example
 * selectorsFromPeer(creds); // ['unix:uid:1000', 'unix:gid:1000', 'unix:path:/usr/bin/app', 'unix:sha256:…']
 */
export function selectorsFromPeer(creds: Pick<PeerCredentials, 'uid' | 'gid' | 'exePath' | 'exeSha256'>): readonly Selector[] {
  const out = [`unix:uid:${creds.uid}`, `unix:gid:${creds.gid}`, `unix:path:${creds.exePath}`, `unix:sha256:${creds.exeSha256}`];
  for (const s of out) parseSelector(s);
  return Object.freeze(out);
}

/**
 * True when every selector of `entry` is among `caller`'s. Allow is the only
 * explicit branch: an entry with no selectors matches no caller.
 *
 * @example
 * matchesSelectors(['unix:uid:1000'], ['unix:uid:1000', 'unix:gid:1000']); // true
 * matchesSelectors([], ['unix:uid:1000']); // false
 */
export function matchesSelectors(entry: readonly Selector[], caller: Iterable<Selector>): boolean {
  if (entry.length === 0) return false;
  const have = new Set(caller);
  let all = true;
  for (const s of entry) {
    if (!have.has(s)) all = false;
  }
  if (all) return true;
  return false;
}

function printable(s: string): string {
  const cut = s.length > 128 ? `${s.slice(0, 128)}…` : s;
  return cut.replace(/[\u0000-\u001f\u007f`]/g, '?');
}
