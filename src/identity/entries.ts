/**
 * Registration entries: which SPIFFE ID a workload gets, on which nodes, by
 * which selectors, for how long, and who answers for it.
 *
 * An entry names exactly one parent: a node SPIFFE ID
 * (`spiffe://<td>/writ/node/<id>`), or a set of node selectors that every
 * node it applies to must have (for example `oidc:sub:repo:org/app`). Its
 * workload selectors (`unix:uid:1000`, `k8s:ns:payments` …) are matched by the
 * node's agent against what it attested about the calling process. An entry
 * without an owner (a team and a human contact) is refused.
 */
import { SpiffeId, TrustDomain, WritError } from '../kernel/index.ts';
import { parseSelector } from './agent/index.ts';
import { entryErrors } from './entry-errors.ts';

/** Path prefix reserved for Writ's own identities (nodes, the server). */
export const RESERVED_PATH_PREFIX = '/writ/';
/** Path prefix of node SPIFFE IDs: `spiffe://<td>/writ/node/<node id>`. */
export const NODE_PATH_PREFIX = '/writ/node/';
/** Path of the Writ server's own SPIFFE ID (its TLS listener's X.509-SVID): `spiffe://<td>/writ/server`. */
export const SERVER_PATH = '/writ/server';

/** Who answers for an identity. */
export interface EntryOwner {
  /** The owning team. */
  readonly team: string;
  /** A human to contact (e-mail address, chat handle or URL). */
  readonly contact: string;
}

/** What an admin registers. */
export interface EntrySpec {
  readonly spiffeId: string;
  /** Parent as one node's SPIFFE ID. Exactly one of parentId and nodeSelectors. */
  readonly parentId?: string;
  /** Parent as a node selector set: the entry applies to every node that has all of them. */
  readonly nodeSelectors?: readonly string[];
  /** Workload selectors, sorted, no duplicates, at least one. */
  readonly selectors: readonly string[];
  /** X.509-SVID lifetime; the server default when absent. */
  readonly x509SvidTtlSeconds?: number;
  /** JWT-SVID lifetime; the server default when absent. */
  readonly jwtSvidTtlSeconds?: number;
  /** DNS SANs for the X.509-SVID. */
  readonly dnsNames: readonly string[];
  /** Environment label (`prod`, `staging` …). */
  readonly environment?: string;
  readonly owner: EntryOwner;
}

/** A stored entry. */
export interface RegistrationEntry extends EntrySpec {
  /** 16 lowercase hex characters. */
  readonly id: string;
  readonly createdAt: string;
  readonly updatedAt: string;
  /** Who created it (admin principal id). */
  readonly createdBy: string;
  /** Starts at 1; every update adds one. */
  readonly revision: number;
}

/** Server-wide limits an entry must stay within. */
export interface EntryLimits {
  readonly trustDomain: TrustDomain;
  readonly x509SvidMaxTtlSeconds: number;
  readonly jwtSvidMaxTtlSeconds: number;
}

/** The fields an admin may set, for schemas and patches. */
export const ENTRY_FIELDS = ['spiffeId', 'parentId', 'nodeSelectors', 'selectors', 'x509SvidTtlSeconds', 'jwtSvidTtlSeconds', 'dnsNames', 'environment', 'owner'] as const;

/** k8s selector keys a workload attestor can produce (`k8s:<key>:<value>`). */
const K8S_KEYS = new Set(['ns', 'sa', 'pod-label', 'pod-name', 'pod-uid', 'container-name', 'container-image', 'node-name']);
const DNS_NAME = /^(?:\*\.)?(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/;
const ENVIRONMENT = /^[a-z0-9][a-z0-9._-]{0,62}$/;
const MAX_SELECTORS = 64;
const MAX_DNS_NAMES = 32;

function printable(s: string, max = 128): string {
  const cut = s.length > max ? `${s.slice(0, max)}…` : s;
  return cut.replace(/[\u0000-\u001f\u007f-\u009f`]/g, '?');
}

function field(message: string): WritError {
  return entryErrors.error('ERR_ENTRY_FIELD_INVALID', message);
}

/** The SPIFFE ID of node `nodeId` in `td`. */
export function nodeSpiffeId(td: TrustDomain, nodeId: string): string {
  return td.newId(`${NODE_PATH_PREFIX}${nodeId}`).toString();
}

/** The Writ server's own SPIFFE ID in `td`. */
export function serverSpiffeId(td: TrustDomain): string {
  return td.newId(SERVER_PATH).toString();
}

/** The node id in a node SPIFFE ID of `td`, or undefined when it is not one. */
export function nodeIdOf(td: TrustDomain, spiffeId: string): string | undefined {
  const id = SpiffeId.tryParse(spiffeId);
  if (id === undefined || !id.memberOf(td) || !id.path.startsWith(NODE_PATH_PREFIX)) return undefined;
  const rest = id.path.slice(NODE_PATH_PREFIX.length);
  return rest !== '' && !rest.includes('/') ? rest : undefined;
}

/** Check one selector; `kind` names the list in messages. */
export function checkSelector(raw: unknown, kind: 'selector' | 'node selector'): string {
  if (typeof raw !== 'string') throw entryErrors.error('ERR_ENTRY_SELECTOR_INVALID', `each ${kind} must be a string`);
  let parts;
  try {
    parts = parseSelector(raw);
  } catch (e) {
    throw entryErrors.error('ERR_ENTRY_SELECTOR_INVALID', e instanceof WritError ? e.message : `invalid ${kind} \`${printable(raw)}\``);
  }
  if (parts.type === 'k8s') {
    if (!K8S_KEYS.has(parts.key)) throw entryErrors.error('ERR_ENTRY_SELECTOR_INVALID', `invalid ${kind} \`${printable(raw)}\`: k8s keys are ${[...K8S_KEYS].join(', ')}`);
    // k8s:pod-label:<label key>:<label value>
    if (parts.key === 'pod-label' && !/^[^:]+:.*$/.test(parts.value)) {
      throw entryErrors.error('ERR_ENTRY_SELECTOR_INVALID', `invalid ${kind} \`${printable(raw)}\`: k8s:pod-label needs \`<label>:<value>\``);
    }
  }
  return raw;
}

function selectorList(raw: unknown, kind: 'selector' | 'node selector', name: string): string[] {
  if (!Array.isArray(raw)) throw entryErrors.error('ERR_ENTRY_SELECTOR_INVALID', `\`${name}\` must be an array of selectors`);
  if (raw.length === 0) throw entryErrors.error('ERR_ENTRY_SELECTOR_INVALID', `\`${name}\` needs at least one ${kind}: an entry without selectors would match nothing`);
  if (raw.length > MAX_SELECTORS) throw entryErrors.error('ERR_ENTRY_SELECTOR_INVALID', `\`${name}\` holds more than ${MAX_SELECTORS} selectors`);
  return [...new Set(raw.map((s) => checkSelector(s, kind)))].sort();
}

function ttl(raw: unknown, name: string, max: number): number | undefined {
  if (raw === undefined || raw === null) return undefined;
  if (typeof raw !== 'number' || !Number.isSafeInteger(raw) || raw <= 0) throw entryErrors.error('ERR_ENTRY_TTL_INVALID', `\`${name}\` must be a positive whole number of seconds`);
  if (raw > max) throw entryErrors.error('ERR_ENTRY_TTL_INVALID', `\`${name}\` ${raw} is above the server maximum of ${max} seconds`);
  return raw;
}

function ownerOf(raw: unknown): EntryOwner {
  if (raw === undefined || raw === null) throw entryErrors.error('ERR_ENTRY_OWNER_REQUIRED', 'an entry needs an owner `{team, contact}`: an identity without an owner cannot be registered');
  if (typeof raw !== 'object' || Array.isArray(raw)) throw entryErrors.error('ERR_ENTRY_OWNER_REQUIRED', '`owner` must be an object `{team, contact}`');
  const o = raw as Record<string, unknown>;
  const team = typeof o.team === 'string' ? o.team.trim() : '';
  const contact = typeof o.contact === 'string' ? o.contact.trim() : '';
  if (team === '') throw entryErrors.error('ERR_ENTRY_OWNER_REQUIRED', 'an entry needs an owning team (`owner.team`)');
  if (contact === '') throw entryErrors.error('ERR_ENTRY_OWNER_REQUIRED', 'an entry needs a human contact (`owner.contact`)');
  for (const [name, v, max] of [['owner.team', team, 128], ['owner.contact', contact, 256]] as const) {
    if (v.length > max) throw field(`\`${name}\` is longer than ${max} characters`);
    if (/[\u0000-\u001f\u007f-\u009f]/.test(v)) throw field(`\`${name}\` holds control characters`);
  }
  for (const k of Object.keys(o)) if (k !== 'team' && k !== 'contact') throw field(`\`owner\` has unknown field \`${printable(k, 64)}\``);
  return Object.freeze({ team, contact });
}

function spiffeIdOf(raw: unknown, td: TrustDomain): string {
  if (typeof raw !== 'string') throw entryErrors.error('ERR_ENTRY_SPIFFE_ID_INVALID', '`spiffeId` must be a string');
  let id: SpiffeId;
  try {
    id = SpiffeId.parse(raw); // SPIFFE-ID §2: the kernel's rules
  } catch (e) {
    throw entryErrors.error('ERR_ENTRY_SPIFFE_ID_INVALID', e instanceof WritError ? e.message : `\`${printable(raw)}\` is not a SPIFFE ID`);
  }
  if (!id.memberOf(td)) throw entryErrors.error('ERR_ENTRY_SPIFFE_ID_INVALID', `SPIFFE ID \`${printable(raw)}\` is not in trust domain \`${td.name}\``);
  // X509-SVID §2: a workload's SVID names a path; the trust domain ID alone is the CA's.
  if (id.isTrustDomainId()) throw entryErrors.error('ERR_ENTRY_SPIFFE_ID_INVALID', `SPIFFE ID \`${printable(raw)}\` has no path and cannot name a workload`);
  if (`${id.path}/`.startsWith(RESERVED_PATH_PREFIX)) throw entryErrors.error('ERR_ENTRY_SPIFFE_ID_INVALID', `SPIFFE ID \`${printable(raw)}\` uses the path \`/writ/\`, reserved for nodes and the server`);
  return id.toString();
}

/**
 * Copy untrusted input into an {@link EntrySpec}: allow-listed fields, each
 * checked with its own code. Throws the first problem found.
 *
 * @example
 * const spec = normalizeEntrySpec({ spiffeId: 'spiffe://writ.local/billing', parentId: 'spiffe://writ.local/writ/node/n1',
 *   selectors: ['unix:uid:1000'], owner: { team: 'payments', contact: 'ana@example.com' } }, limits);
 */
export function normalizeEntrySpec(raw: unknown, limits: EntryLimits): EntrySpec {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw field('an entry must be a JSON object');
  const r = raw as Record<string, unknown>;
  for (const k of Object.keys(r)) if (!(ENTRY_FIELDS as readonly string[]).includes(k)) throw field(`entry has unknown field \`${printable(k, 64)}\``);
  const owner = ownerOf(r.owner);
  const spiffeId = spiffeIdOf(r.spiffeId, limits.trustDomain);
  const hasParent = r.parentId !== undefined && r.parentId !== null;
  const hasNodeSelectors = r.nodeSelectors !== undefined && r.nodeSelectors !== null;
  if (hasParent === hasNodeSelectors) throw entryErrors.error('ERR_ENTRY_PARENT_INVALID', 'an entry needs exactly one parent: `parentId` (a node SPIFFE ID) or `nodeSelectors`');
  let parentId: string | undefined;
  if (hasParent) {
    if (typeof r.parentId !== 'string' || nodeIdOf(limits.trustDomain, r.parentId) === undefined) {
      throw entryErrors.error('ERR_ENTRY_PARENT_INVALID', `\`parentId\` must be a node SPIFFE ID \`spiffe://${limits.trustDomain.name}${NODE_PATH_PREFIX}<id>\``);
    }
    parentId = SpiffeId.parse(r.parentId).toString();
  }
  const nodeSelectors = hasNodeSelectors ? selectorList(r.nodeSelectors, 'node selector', 'nodeSelectors') : undefined;
  const selectors = selectorList(r.selectors ?? [], 'selector', 'selectors');
  const x509 = ttl(r.x509SvidTtlSeconds, 'x509SvidTtlSeconds', limits.x509SvidMaxTtlSeconds);
  const jwt = ttl(r.jwtSvidTtlSeconds, 'jwtSvidTtlSeconds', limits.jwtSvidMaxTtlSeconds);
  const dnsRaw = r.dnsNames ?? [];
  if (!Array.isArray(dnsRaw)) throw field('`dnsNames` must be an array');
  if (dnsRaw.length > MAX_DNS_NAMES) throw field(`\`dnsNames\` holds more than ${MAX_DNS_NAMES} names`);
  const dnsNames = [...new Set(dnsRaw.map((d) => {
    if (typeof d !== 'string' || d.length > 253 || !DNS_NAME.test(d)) throw field(`DNS name \`${printable(String(d))}\` is not a valid host name`);
    return d.toLowerCase();
  }))];
  let environment: string | undefined;
  if (r.environment !== undefined && r.environment !== null) {
    if (typeof r.environment !== 'string' || !ENVIRONMENT.test(r.environment)) throw field('`environment` must be 1 to 63 of a-z, 0-9, `.`, `_`, `-`');
    environment = r.environment;
  }
  return Object.freeze({
    spiffeId,
    ...(parentId === undefined ? {} : { parentId }),
    ...(nodeSelectors === undefined ? {} : { nodeSelectors: Object.freeze(nodeSelectors) }),
    selectors: Object.freeze(selectors),
    ...(x509 === undefined ? {} : { x509SvidTtlSeconds: x509 }),
    ...(jwt === undefined ? {} : { jwtSvidTtlSeconds: jwt }),
    dnsNames: Object.freeze(dnsNames),
    ...(environment === undefined ? {} : { environment }),
    owner,
  });
}

/**
 * Apply a merge patch to an entry's spec (a field set to null is cleared),
 * then check the result as a whole.
 *
 * @example
 * const next = patchEntrySpec(entry, { x509SvidTtlSeconds: 600 }, limits);
 */
export function patchEntrySpec(current: EntrySpec, patch: unknown, limits: EntryLimits): EntrySpec {
  if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) throw field('a patch must be a JSON object');
  const merged: Record<string, unknown> = { ...current };
  for (const [k, v] of Object.entries(patch as Record<string, unknown>)) {
    if (v === null) delete merged[k];
    else merged[k] = v;
  }
  // Switching the parent kind: setting one clears the other.
  const p = patch as Record<string, unknown>;
  if (p.parentId !== undefined && p.parentId !== null && p.nodeSelectors === undefined) delete merged.nodeSelectors;
  if (p.nodeSelectors !== undefined && p.nodeSelectors !== null && p.parentId === undefined) delete merged.parentId;
  return normalizeEntrySpec(merged, limits);
}

/** What a node is: its SPIFFE ID and the selectors its attestation produced. */
export interface NodeIdentity {
  readonly spiffeId: string;
  readonly selectors: readonly string[];
}

/**
 * True when `entry` may be served by `node`: the node is the entry's parent,
 * or the node has every one of the entry's node selectors. Allow is the only
 * explicit branch.
 *
 * @example
 * entryAppliesToNode(entry, { spiffeId: 'spiffe://writ.local/writ/node/n1', selectors: [] });
 */
export function entryAppliesToNode(entry: EntrySpec, node: NodeIdentity): boolean {
  if (entry.parentId !== undefined && entry.parentId === node.spiffeId) return true;
  const wanted = entry.nodeSelectors;
  if (wanted !== undefined && wanted.length > 0) {
    const have = new Set(node.selectors);
    if (wanted.every((s) => have.has(s))) return true;
  }
  return false;
}
