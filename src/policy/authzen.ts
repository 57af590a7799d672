/**
 * OpenID AuthZEN Authorization API 1.0, minus the transport: parsing and
 * validating Evaluation and Evaluations requests, mapping them to
 * {@link DecisionRequest}s, running them with their batch semantics and
 * building the responses and the metadata document. An HTTP route only has to
 * read the body, call these functions, echo `X-Request-ID` and write the result.
 *
 * Section numbers refer to Authorization API 1.0: §5 information model,
 * §6 Access Evaluation, §7 Access Evaluations (§7.1.1 default values, §7.1.2
 * options, §7.2.1 errors), §9 metadata, §10.1 HTTPS binding.
 */
import { policyErrors } from './errors.ts';
import type { WritError } from '../kernel/index.ts';
import type { Decision, DecisionRequest, EntityData } from './decide.ts';
import type { SchemaInfo } from './schema-info.ts';
import { resolveEntityType } from './schema-info.ts';

/** Subject or Resource (§5.1, §5.2). */
export interface AuthzenEntity {
  readonly type: string;
  readonly id: string;
  readonly properties?: Readonly<Record<string, unknown>>;
}

/** Action (§5.3). */
export interface AuthzenAction {
  readonly name: string;
  readonly properties?: Readonly<Record<string, unknown>>;
}

/** A complete, validated evaluation (§6.1). */
export interface AuthzenEvaluation {
  readonly subject: AuthzenEntity;
  readonly action: AuthzenAction;
  readonly resource: AuthzenEntity;
  readonly context?: Readonly<Record<string, unknown>>;
}

/** Batch semantics (§7.1.2). */
export type EvaluationsSemantic = 'execute_all' | 'deny_on_first_deny' | 'permit_on_first_permit';

/** One item of a batch: a valid evaluation or the error that made it invalid. */
export type BatchItem = { readonly ok: true; readonly evaluation: AuthzenEvaluation } | { readonly ok: false; readonly error: WritError };

/** A validated Evaluations request (§7.1). */
export interface AuthzenEvaluationsRequest {
  readonly semantic: EvaluationsSemantic;
  readonly items: readonly BatchItem[];
  /** True when `evaluations` was absent or empty: the request behaves like an Evaluation (§7.1). */
  readonly single: boolean;
}

/** Decision object (§5.5). `context` only when asked for, or for a failed batch item. */
export interface AuthzenDecision {
  readonly decision: boolean;
  readonly context?: Readonly<Record<string, unknown>>;
}

/** Response shaping options. */
export interface AuthzenResponseOptions {
  /** Add `context: {id, reason_admin, policy_version}` to each decision (default false). */
  readonly explain?: boolean;
}

const SEMANTICS: readonly EvaluationsSemantic[] = ['execute_all', 'deny_on_first_deny', 'permit_on_first_permit'];

function bad(message: string): WritError {
  return policyErrors.error('ERR_POLICY_AUTHZEN_INVALID', message);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

// Each check copies only the known members (unknown fields are ignored, §6).
function entityAt(v: unknown, where: string): AuthzenEntity {
  if (v === undefined) throw bad(`\`${where}\` is required`);
  if (!isObject(v)) throw bad(`\`${where}\` must be an object`);
  if (typeof v.type !== 'string' || v.type === '') throw bad(`\`${where}.type\` must be a non-empty string`);
  if (typeof v.id !== 'string' || v.id === '') throw bad(`\`${where}.id\` must be a non-empty string`);
  if (v.properties !== undefined && !isObject(v.properties)) throw bad(`\`${where}.properties\` must be an object`);
  return v.properties === undefined ? { type: v.type, id: v.id } : { type: v.type, id: v.id, properties: { ...v.properties } };
}

function actionAt(v: unknown, where: string): AuthzenAction {
  if (v === undefined) throw bad(`\`${where}\` is required`);
  if (!isObject(v)) throw bad(`\`${where}\` must be an object`);
  if (typeof v.name !== 'string' || v.name === '') throw bad(`\`${where}.name\` must be a non-empty string`);
  if (v.properties !== undefined && !isObject(v.properties)) throw bad(`\`${where}.properties\` must be an object`);
  return v.properties === undefined ? { name: v.name } : { name: v.name, properties: { ...v.properties } };
}

function contextAt(v: unknown, where: string): Readonly<Record<string, unknown>> | undefined {
  if (v === undefined) return undefined;
  if (!isObject(v)) throw bad(`\`${where}\` must be an object`);
  return { ...v };
}

function evaluationOf(subject: unknown, action: unknown, resource: unknown, context: unknown, at: string): AuthzenEvaluation {
  const s = entityAt(subject, `${at}subject`);
  const a = actionAt(action, `${at}action`);
  const r = entityAt(resource, `${at}resource`);
  const c = contextAt(context, `${at}context`);
  return c === undefined ? { subject: s, action: a, resource: r } : { subject: s, action: a, resource: r, context: c };
}

/**
 * Validate an Evaluation request body (§6.1). Throws `ERR_POLICY_AUTHZEN_INVALID`
 * (HTTP 400) for a missing required member or a wrong type.
 *
 * @example
 * parseEvaluationRequest({ subject: { type: 'user', id: 'alice' }, action: { name: 'read' }, resource: { type: 'record', id: 'record-1' } });
 */
export function parseEvaluationRequest(body: unknown): AuthzenEvaluation {
  if (!isObject(body)) throw bad('request body must be a JSON object');
  return evaluationOf(body.subject, body.action, body.resource, body.context, '');
}

/**
 * Validate an Evaluations request body (§7.1). Top-level `subject`, `action`,
 * `resource` and `context` are defaults that an item's own member replaces
 * whole (§7.1.1). Malformed top-level members are a 400; a malformed item is
 * kept as an error so it alone yields `decision: false` (§7.2.1).
 *
 * @example
 * const req = parseEvaluationsRequest({ subject, action, evaluations: [{ resource: r1 }, { resource: r2 }] });
 */
export function parseEvaluationsRequest(body: unknown): AuthzenEvaluationsRequest {
  if (!isObject(body)) throw bad('request body must be a JSON object');
  // Shape-check the defaults that are present.
  if (body.subject !== undefined) entityAt(body.subject, 'subject');
  if (body.action !== undefined) actionAt(body.action, 'action');
  if (body.resource !== undefined) entityAt(body.resource, 'resource');
  contextAt(body.context, 'context');
  let semantic: EvaluationsSemantic = 'execute_all';
  if (body.options !== undefined) {
    if (!isObject(body.options)) throw bad('`options` must be an object');
    const s = body.options.evaluations_semantic;
    if (s !== undefined) {
      const known = SEMANTICS.find((x) => x === s);
      if (known === undefined) throw bad(`\`options.evaluations_semantic\` must be one of ${SEMANTICS.join(', ')}`);
      semantic = known;
    }
  }
  const list = body.evaluations;
  if (list !== undefined && !Array.isArray(list)) throw bad('`evaluations` must be an array');
  if (list === undefined || list.length === 0) {
    // §7.1: no items behaves like a single Evaluation, so the defaults must be complete.
    return { semantic, single: true, items: [{ ok: true, evaluation: evaluationOf(body.subject, body.action, body.resource, body.context, '') }] };
  }
  const items = list.map((raw: unknown, i: number): BatchItem => {
    try {
      if (!isObject(raw)) throw bad(`\`evaluations[${i}]\` must be an object`);
      const pick = (k: string) => (raw[k] !== undefined ? raw[k] : body[k]);
      return { ok: true, evaluation: evaluationOf(pick('subject'), pick('action'), pick('resource'), pick('context'), `evaluations[${i}].`) };
    } catch (e) {
      if (policyErrors.is(e, 'ERR_POLICY_AUTHZEN_INVALID')) return { ok: false, error: e };
      throw e;
    }
  });
  return { semantic, single: false, items };
}

/**
 * Map an AuthZEN evaluation to a decision request: entity types resolve
 * against the schema (`user` → `User`, `workload` → `Writ::Workload`; an
 * unknown type is left as sent and denied by `decide`), `properties` become
 * caller-supplied attributes, and action properties land in `context.action`.
 *
 * @example
 * const req = toDecisionRequest(info, evaluation, correlationId);
 */
export function toDecisionRequest(info: SchemaInfo | undefined, e: AuthzenEvaluation, correlationId?: string): DecisionRequest {
  const typeOf = (t: string) => (info === undefined ? t : (resolveEntityType(info, t) ?? t));
  const principal = { type: typeOf(e.subject.type), id: e.subject.id };
  const resource = { type: typeOf(e.resource.type), id: e.resource.id };
  const entities: EntityData[] = [
    { uid: principal, attrs: e.subject.properties ?? {} },
    { uid: resource, attrs: e.resource.properties ?? {} },
  ];
  const context: Record<string, unknown> = { ...(e.context ?? {}) };
  if (e.action.properties !== undefined) context.action = { ...e.action.properties };
  return {
    principal,
    action: e.action.name,
    resource,
    context,
    entities,
    ...(correlationId === undefined ? {} : { correlationId }),
  };
}

/**
 * Build the Decision object for a decision (§5.5). Only an explicit allow is
 * `true`.
 *
 * @example
 * toAuthzenDecision(d); // { decision: false }
 */
export function toAuthzenDecision(d: Decision, options: AuthzenResponseOptions = {}): AuthzenDecision {
  const decision = d.decision === 'allow';
  if (options.explain !== true) return { decision };
  return {
    decision,
    context: { id: d.decisionId, reason_admin: { en: d.reasons.join(', ') }, policy_version: d.policyVersion },
  };
}

/** The decision for a batch item that failed validation: closed, with the error in `context` (§7.2.1). */
export function failedItemDecision(error: WritError): AuthzenDecision {
  return { decision: false, context: { error: { status: error.status, message: error.message } } };
}

/** The function the protocol calls to decide; `Decider.decide` bound to a PDP. */
export type DecideFn = (request: DecisionRequest) => Promise<Decision>;

/**
 * The whole Access Evaluation API (§6) for a parsed JSON body: validate
 * (throws 400), decide, answer.
 *
 * @example
 * const body = await evaluate(pdp.decide.bind(pdp), info, json, { correlationId });
 */
export async function evaluate(
  decide: DecideFn,
  info: SchemaInfo | undefined,
  body: unknown,
  options: AuthzenResponseOptions & { correlationId?: string } = {},
): Promise<AuthzenDecision> {
  const e = parseEvaluationRequest(body);
  return toAuthzenDecision(await decide(toDecisionRequest(info, e, options.correlationId)), options);
}

/**
 * The whole Access Evaluations API (§7) for a parsed JSON body. Items run in
 * request order; `deny_on_first_deny` stops after the first `false` and
 * `permit_on_first_permit` after the first `true`, so the response array is
 * truncated there (§7.1.2). A request without items answers like §6.
 *
 * @example
 * const body = await evaluations(decide, info, { subject, action, evaluations: [{ resource }] });
 * body.evaluations; // [{ decision: true }]
 */
export async function evaluations(
  decide: DecideFn,
  info: SchemaInfo | undefined,
  body: unknown,
  options: AuthzenResponseOptions & { correlationId?: string } = {},
): Promise<AuthzenDecision | { evaluations: AuthzenDecision[] }> {
  const req = parseEvaluationsRequest(body);
  const out: AuthzenDecision[] = [];
  for (const item of req.items) {
    const d = item.ok ? toAuthzenDecision(await decide(toDecisionRequest(info, item.evaluation, options.correlationId)), options) : failedItemDecision(item.error);
    if (req.single) return d;
    out.push(d);
    if (req.semantic === 'deny_on_first_deny' && !d.decision) break;
    if (req.semantic === 'permit_on_first_permit' && d.decision) break;
  }
  return { evaluations: out };
}

/**
 * Parse a raw HTTP body for the AuthZEN endpoints: 400 for a non-JSON content
 * type, an empty body or malformed JSON (§10.1.2; certification scenario, error handling).
 *
 * @example
 * const json = parseAuthzenBody('application/json', '{"subject":…}');
 */
export function parseAuthzenBody(contentType: string | undefined, raw: string): unknown {
  const mediaType = (contentType ?? '').split(';')[0]?.trim().toLowerCase() ?? '';
  if (mediaType !== 'application/json') throw bad('content type must be `application/json`');
  if (raw.trim() === '') throw bad('request body is empty');
  try {
    return JSON.parse(raw) as unknown;
  } catch {
    throw bad('request body is not valid JSON');
  }
}

/** The PDP metadata document (§9). */
export interface AuthzenMetadata {
  readonly policy_decision_point: string;
  readonly access_evaluation_endpoint: string;
  readonly access_evaluations_endpoint: string;
  readonly search_subject_endpoint: string;
  readonly search_resource_endpoint: string;
  readonly search_action_endpoint: string;
  readonly capabilities: readonly string[];
}

/**
 * Build the metadata served at `/.well-known/authzen-configuration`;
 * `policy_decision_point` MUST equal the identifier the URL was built from (§9.2.3).
 *
 * @example
 * authzenMetadata('https://pdp.example.com');
 * // { policy_decision_point: 'https://pdp.example.com', access_evaluation_endpoint: 'https://pdp.example.com/access/v1/evaluation', … }
 */
export function authzenMetadata(pdp: string): AuthzenMetadata {
  const u = new URL(pdp);
  if (u.protocol !== 'https:' && u.hostname !== 'localhost' && u.hostname !== '127.0.0.1') {
    throw new TypeError('policy_decision_point must be an https URL');
  }
  const base = pdp.replace(/\/+$/, '');
  return {
    policy_decision_point: pdp,
    access_evaluation_endpoint: `${base}/access/v1/evaluation`,
    access_evaluations_endpoint: `${base}/access/v1/evaluations`,
    search_subject_endpoint: `${base}/access/v1/search/subject`,
    search_resource_endpoint: `${base}/access/v1/search/resource`,
    search_action_endpoint: `${base}/access/v1/search/action`,
    capabilities: [],
  };
}
