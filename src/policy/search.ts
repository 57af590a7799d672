/**
 * AuthZEN Authorization API 1.0 search (§8): which subjects may do this
 * action on this resource, which resources this subject may act on, which
 * actions this subject may do on this resource. Candidates are the entities
 * the PDP knows (the policy set's entities file and every `EntityLoader` that
 * can list), and every candidate is decided with the real `decide()`, so a
 * search never disagrees with an evaluation of the same request.
 *
 * Paging (§8, "Pagination"): `page: {token?, limit?}` in the request;
 * `page: {next_token, count}` in the response, `next_token` `""` at the end.
 * The token is opaque to the caller: a position in the sorted candidate list
 * bound to a fingerprint of the request, because the other request fields
 * MUST stay the same across pages; a token used with another request is a 400.
 */
import { createHash } from 'node:crypto';
import { canonicalJson } from '../kernel/index.ts';
import type { WritError } from '../kernel/index.ts';
import { policyErrors } from './errors.ts';
import { toDecisionRequest } from './authzen.ts';
import type { AuthzenAction, AuthzenEntity, AuthzenEvaluation, DecideFn } from './authzen.ts';
import type { CompiledPolicySet } from './policy-set.ts';
import type { EntityLoader, EntityRef } from './ports.ts';
import { resolveEntityType } from './schema-info.ts';
import type { SchemaInfo } from './schema-info.ts';

/** What is searched for. */
export type SearchKind = 'subject' | 'resource' | 'action';

/** The search response (§8): `results` are `{type, id}` for subjects and resources, `{name}` for actions. */
export interface SearchResponse {
  readonly page: { readonly next_token: string; readonly count: number };
  readonly results: readonly ({ readonly type: string; readonly id: string } | { readonly name: string })[];
}

/** Where a search gets its candidates and decisions. */
export interface SearchDeps {
  readonly decide: DecideFn;
  /** The active policy set (its schema and entities file); no set, no results. */
  readonly set: CompiledPolicySet | undefined;
  /** Entity loaders that can list the entities they know. */
  readonly loaders?: readonly EntityLoader[];
}

/** Per-call options. */
export interface SearchOptions {
  readonly correlationId?: string;
  readonly requestedBy?: string;
  /** Page size when the request gives none (default 50). */
  readonly defaultLimit?: number;
  /**
   * Most candidates decided in one call (default 1,000): a page may come back
   * short, with a `next_token`, when most candidates are denied.
   */
  readonly maxScan?: number;
}

/** Largest `page.limit` accepted. */
export const MAX_SEARCH_LIMIT = 1000;

function bad(message: string): WritError {
  return policyErrors.error('ERR_POLICY_AUTHZEN_INVALID', message);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function props(v: Record<string, unknown>, where: string): Readonly<Record<string, unknown>> | undefined {
  if (v.properties === undefined) return undefined;
  if (!isObject(v.properties)) throw bad(`\`${where}.properties\` must be an object`);
  return { ...v.properties };
}

/** An entity whose `id` is required (`full`) or ignored (the searched one, §8). */
function entityAt(v: unknown, where: string, full: boolean): { type: string; id?: string; properties?: Readonly<Record<string, unknown>> } {
  if (v === undefined) throw bad(`\`${where}\` is required`);
  if (!isObject(v)) throw bad(`\`${where}\` must be an object`);
  if (typeof v.type !== 'string' || v.type === '') throw bad(`\`${where}.type\` must be a non-empty string`);
  const properties = props(v, where);
  if (!full) return { type: v.type, ...(properties === undefined ? {} : { properties }) };
  if (typeof v.id !== 'string' || v.id === '') throw bad(`\`${where}.id\` must be a non-empty string`);
  return { type: v.type, id: v.id, ...(properties === undefined ? {} : { properties }) };
}

function actionAt(v: unknown): AuthzenAction {
  if (v === undefined) throw bad('`action` is required');
  if (!isObject(v)) throw bad('`action` must be an object');
  if (typeof v.name !== 'string' || v.name === '') throw bad('`action.name` must be a non-empty string');
  const properties = props(v, 'action');
  return properties === undefined ? { name: v.name } : { name: v.name, properties };
}

interface PageRequest {
  readonly token: string | undefined;
  readonly limit: number | undefined;
}

function pageAt(v: unknown): PageRequest {
  if (v === undefined) return { token: undefined, limit: undefined };
  if (!isObject(v)) throw bad('`page` must be an object');
  if (v.token !== undefined && typeof v.token !== 'string') throw bad('`page.token` must be a string');
  if (v.limit !== undefined && (typeof v.limit !== 'number' || !Number.isInteger(v.limit) || v.limit < 1 || v.limit > MAX_SEARCH_LIMIT)) {
    throw bad(`\`page.limit\` must be an integer from 1 to ${MAX_SEARCH_LIMIT}`);
  }
  if (v.properties !== undefined && !isObject(v.properties)) throw bad('`page.properties` must be an object');
  return { token: v.token === '' ? undefined : v.token, limit: v.limit };
}

/** A validated search request: the two fixed members, the searched type, the context. */
interface ParsedSearch {
  readonly kind: SearchKind;
  readonly subject: { type: string; id?: string; properties?: Readonly<Record<string, unknown>> };
  readonly action: AuthzenAction | undefined;
  readonly resource: { type: string; id?: string; properties?: Readonly<Record<string, unknown>> };
  readonly context: Readonly<Record<string, unknown>> | undefined;
  readonly page: PageRequest;
}

/**
 * Validate a search request body (§8.4–§8.6). Throws `ERR_POLICY_AUTHZEN_INVALID`
 * (HTTP 400) for a missing required member or a wrong type; the searched
 * entity's `id` (or, for action search, the `action`) is ignored when sent.
 *
 * @example
 * parseSearchRequest('subject', { subject: { type: 'user' }, action: { name: 'read' }, resource: { type: 'record', id: 'r1' } });
 */
export function parseSearchRequest(kind: SearchKind, body: unknown): ParsedSearch {
  if (!isObject(body)) throw bad('request body must be a JSON object');
  const subject = entityAt(body.subject, 'subject', kind !== 'subject');
  const action = kind === 'action' ? undefined : actionAt(body.action);
  const resource = entityAt(body.resource, 'resource', kind !== 'resource');
  if (body.context !== undefined && !isObject(body.context)) throw bad('`context` must be an object');
  const context = body.context === undefined ? undefined : { ...body.context };
  return { kind, subject, action, resource, context, page: pageAt(body.page) };
}

/** The request without its page and without the searched id: what must stay the same across pages. */
function fingerprint(p: ParsedSearch): string {
  const fixed = {
    kind: p.kind,
    subject: p.kind === 'subject' ? { type: p.subject.type, properties: p.subject.properties ?? null } : p.subject,
    action: p.action ?? null,
    resource: p.kind === 'resource' ? { type: p.resource.type, properties: p.resource.properties ?? null } : p.resource,
    context: p.context ?? null,
  };
  return createHash('sha256').update(canonicalJson(fixed)).digest('base64url').slice(0, 22);
}

function encodeToken(offset: number, fp: string): string {
  return Buffer.from(JSON.stringify({ o: offset, f: fp })).toString('base64url');
}

function decodeToken(token: string, fp: string): number {
  let o: unknown;
  try {
    o = JSON.parse(Buffer.from(token, 'base64url').toString('utf8'));
  } catch {
    throw bad('`page.token` is not a token this PDP issued');
  }
  if (!isObject(o) || typeof o.o !== 'number' || !Number.isSafeInteger(o.o) || o.o < 0 || typeof o.f !== 'string') throw bad('`page.token` is not a token this PDP issued');
  // §8: the other request fields MUST be the same on every page.
  if (o.f !== fp) throw bad('`page.token` belongs to another search: the other request members must not change between pages');
  return o.o;
}

/**
 * Every entity of `type` (fully qualified) the PDP knows: the policy set's
 * entities file and each loader that can list. Sorted by id, no duplicates.
 *
 * @example
 * await knownEntities(engine.active, [loader], 'Writ::Workload');
 */
export async function knownEntities(set: CompiledPolicySet | undefined, loaders: readonly EntityLoader[], type: string): Promise<EntityRef[]> {
  const ids = new Set<string>();
  for (const e of set?.entities.values() ?? []) {
    const u = '__entity' in e.uid ? e.uid.__entity : e.uid;
    if (u.type === type) ids.add(u.id);
  }
  for (const l of loaders) {
    if (l.list === undefined) continue;
    for (const r of await l.list(type)) if (r.type === type) ids.add(r.id);
  }
  return [...ids].sort().map((id) => ({ type, id }));
}

/**
 * Action ids of `info` that apply to this principal type and resource type
 * (either may be left open), sorted.
 *
 * @example
 * applicableActions(info, 'Writ::Agent', 'Writ::Tool'); // ['tools/call']
 */
export function applicableActions(info: SchemaInfo, principalType: string | undefined, resourceType: string | undefined): string[] {
  const out: string[] = [];
  for (const a of info.actionAppliesTo.values()) {
    if (principalType !== undefined && !a.principals.has(principalType)) continue;
    if (resourceType !== undefined && !a.resources.has(resourceType)) continue;
    out.push(a.id);
  }
  return out.sort();
}

/**
 * Run one AuthZEN search (§8) for a parsed JSON body: validate (throws 400),
 * enumerate candidates, decide each with `deps.decide`, page the allowed ones.
 *
 * @example
 * const r = await search('subject', { decide, set: engine.active, loaders: [loader] }, body);
 * r.results;        // [{ type: 'user', id: 'alice' }]
 * r.page.next_token; // '' at the end
 */
export async function search(kind: SearchKind, deps: SearchDeps, body: unknown, options: SearchOptions = {}): Promise<SearchResponse> {
  const p = parseSearchRequest(kind, body);
  const fp = fingerprint(p);
  const start = p.page.token === undefined ? 0 : decodeToken(p.page.token, fp);
  const limit = p.page.limit ?? options.defaultLimit ?? 50;
  const maxScan = options.maxScan ?? 1000;
  const set = deps.set;
  if (set === undefined) return { page: { next_token: '', count: 0 }, results: [] };
  const info = set.schemaInfo;
  const typeOf = (t: string) => resolveEntityType(info, t);

  // The candidate list, in a stable order (the token is an offset into it).
  // A type the schema does not declare can match nothing: no candidates (every decision would deny).
  const subjectType = typeOf(p.subject.type);
  const resourceType = typeOf(p.resource.type);
  let candidates: string[] = [];
  if (subjectType !== undefined && resourceType !== undefined) {
    candidates = kind === 'action'
      ? applicableActions(info, subjectType, resourceType)
      : (await knownEntities(set, deps.loaders ?? [], kind === 'subject' ? subjectType : resourceType)).map((r) => r.id);
  }

  const results: SearchResponse['results'][number][] = [];
  let i = start;
  let scanned = 0;
  for (; i < candidates.length && results.length < limit && scanned < maxScan; i++, scanned++) {
    const c = candidates[i];
    if (c === undefined) break;
    const e: AuthzenEvaluation = {
      subject: kind === 'subject' ? entityOf(p.subject, c) : entityOf(p.subject, p.subject.id ?? ''),
      action: kind === 'action' ? { name: c } : (p.action ?? { name: '' }),
      resource: kind === 'resource' ? entityOf(p.resource, c) : entityOf(p.resource, p.resource.id ?? ''),
      ...(p.context === undefined ? {} : { context: p.context }),
    };
    const d = await deps.decide({
      ...toDecisionRequest(info, e, options.correlationId),
      ...(options.requestedBy === undefined ? {} : { requestedBy: options.requestedBy }),
      purpose: 'search',
    });
    if (d.decision !== 'allow') continue;
    results.push(kind === 'action' ? { name: c } : { type: kind === 'subject' ? p.subject.type : p.resource.type, id: c });
  }
  return { page: { next_token: i < candidates.length ? encodeToken(i, fp) : '', count: results.length }, results };
}

function entityOf(e: { type: string; properties?: Readonly<Record<string, unknown>> }, id: string): AuthzenEntity {
  return e.properties === undefined ? { type: e.type, id } : { type: e.type, id, properties: e.properties };
}
