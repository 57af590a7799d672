/**
 * OCSF export of Writ's audit records (STANDARDS.md §6, OCSF 1.8.0).
 *
 * Each record maps, by its action, to one OCSF event class and activity; the
 * first matching row of {@link OCSF_MAPPINGS} wins and the last row catches
 * every other action, so no record is ever dropped. Writ-specific fields the
 * classes have no place for (chain hashes, reasons, details) travel in
 * `unmapped`. The mapping choices are explained in docs/ocsf.md.
 */
import { redact } from '../kernel/index.ts';
import type { AuditActor, AuditOutcome, AuditRecord, AuditTarget } from '../kernel/index.ts';

/**
 * The OCSF release the export conforms to (the newest released schema,
 * STANDARDS.md §6); it is every event's `metadata.version`.
 *
 * @example
 * toOcsf(record, product).metadata.version === OCSF_VERSION; // true
 */
export const OCSF_VERSION = '1.8.0';

/** `metadata.log_name` of every exported event. */
export const OCSF_LOG_NAME = 'writ-audit';

/** `metadata.product.vendor_name` of every exported event. */
export const OCSF_VENDOR_NAME = 'Writ';

/** The product that produced the events (`metadata.product`). */
export interface OcsfProduct {
  readonly name: string;
  readonly version: string;
}

/** An OCSF object: attribute names to values (nested objects, arrays, scalars). */
export type OcsfObject = { readonly [attribute: string]: unknown };

/** `metadata` of an exported event (OCSF `metadata` object). */
export interface OcsfMetadata {
  readonly product: { readonly name: string; readonly vendor_name: string; readonly version: string };
  readonly version: string;
  readonly uid: string;
  readonly correlation_uid: string;
  readonly log_name: string;
  readonly sequence: number;
  readonly original_time: string;
  readonly profiles?: readonly string[];
}

/** One OCSF event: the base attributes every class has, plus the class's own. */
export interface OcsfEvent {
  readonly category_uid: number;
  readonly category_name: string;
  readonly class_uid: number;
  readonly class_name: string;
  readonly activity_id: number;
  readonly activity_name: string;
  readonly type_uid: number;
  readonly type_name: string;
  readonly severity_id: number;
  readonly severity: string;
  readonly status_id: number;
  readonly status: string;
  readonly status_detail?: string;
  readonly status_code?: string;
  readonly time: number;
  readonly message: string;
  readonly metadata: OcsfMetadata;
  readonly unmapped: OcsfObject;
  readonly [attribute: string]: unknown;
}

/** An OCSF event class Writ emits: uid, caption, category and activity captions. */
export interface OcsfClass {
  readonly uid: number;
  readonly name: string;
  readonly categoryUid: number;
  readonly categoryName: string;
  readonly activities: Readonly<Record<number, string>>;
}

const IAM = { categoryUid: 3, categoryName: 'Identity & Access Management' } as const;
const APPLICATION = { categoryUid: 6, categoryName: 'Application Activity' } as const;

/**
 * The classes Writ emits, with the activity captions the schema's class files
 * define (0 Unknown and 99 Other are common to all). A test checks them
 * against the schema data.
 *
 * @example
 * ACCOUNT_CHANGE.uid * 100 + 1; // 300101, the type_uid of "Account Change: Create"
 */
export const ACCOUNT_CHANGE: OcsfClass = {
  uid: 3001, name: 'Account Change', ...IAM,
  activities: { 1: 'Create', 2: 'Enable', 3: 'Password Change', 4: 'Password Reset', 5: 'Disable', 6: 'Delete', 7: 'Attach Policy', 8: 'Detach Policy', 9: 'Lock', 10: 'MFA Factor Enable', 11: 'MFA Factor Disable', 12: 'Unlock' },
};
/** See {@link ACCOUNT_CHANGE}. */
export const AUTHENTICATION: OcsfClass = {
  uid: 3002, name: 'Authentication', ...IAM,
  activities: { 1: 'Logon', 2: 'Logoff', 3: 'Authentication Ticket', 4: 'Service Ticket Request', 5: 'Service Ticket Renew', 6: 'Preauth', 7: 'Account Switch' },
};
/** See {@link ACCOUNT_CHANGE}. */
export const AUTHORIZE_SESSION: OcsfClass = {
  uid: 3003, name: 'Authorize Session', ...IAM,
  // 3 Assign Roles and `iam_roles` are 1.9.0-dev only; 1.8.0 has privileges or a group (just one).
  activities: { 1: 'Assign Privileges', 2: 'Assign Groups' },
};
/** See {@link ACCOUNT_CHANGE}. */
export const ENTITY_MANAGEMENT: OcsfClass = {
  uid: 3004, name: 'Entity Management', ...IAM,
  activities: { 1: 'Create', 2: 'Read', 3: 'Update', 4: 'Delete', 5: 'Move', 6: 'Enroll', 7: 'Unenroll', 8: 'Enable', 9: 'Disable', 10: 'Activate', 11: 'Deactivate', 12: 'Suspend', 13: 'Resume' },
};
/** See {@link ACCOUNT_CHANGE}. */
export const API_ACTIVITY: OcsfClass = {
  uid: 6003, name: 'API Activity', ...APPLICATION,
  activities: { 1: 'Create', 2: 'Read', 3: 'Update', 4: 'Delete' },
};
/** See {@link ACCOUNT_CHANGE}. */
export const WEB_RESOURCE_ACCESS: OcsfClass = {
  uid: 6004, name: 'Web Resource Access Activity', ...APPLICATION,
  activities: { 1: 'Access Grant', 2: 'Access Deny', 3: 'Access Revoke', 4: 'Access Error' },
};

const OTHER = 99;

/** What a mapping row sees: the record, its details already redacted, the product. */
export interface OcsfMappingInput {
  readonly record: AuditRecord;
  /** INVARIANT: `redact(record.details)` with queries scrubbed; mappers read details only from here. */
  readonly details: Readonly<Record<string, unknown>>;
  readonly product: OcsfProduct;
}

/** What a row adds to the base event: class attributes and any profiles it applies. */
export interface OcsfClassAttributes {
  readonly attributes: OcsfObject;
  readonly profiles?: readonly string[];
}

/** One row of the mapping table. */
export interface OcsfMapping {
  /** An exact action, `<prefix>.*` for every action under a prefix, or `*`. */
  readonly action: string;
  readonly class: OcsfClass;
  /** The activity_id for a record (99 Other when the schema has none that fits). */
  readonly activity: (input: OcsfMappingInput) => number;
  readonly attributes: (input: OcsfMappingInput) => OcsfClassAttributes;
}

// ---------------------------------------------------------------- helpers

function str(details: Readonly<Record<string, unknown>>, ...keys: string[]): string | undefined {
  for (const k of keys) {
    const v = details[k];
    if (typeof v === 'string' && v !== '') return v;
  }
  return undefined;
}

function int(details: Readonly<Record<string, unknown>>, ...keys: string[]): number | undefined {
  for (const k of keys) {
    const v = details[k];
    if (typeof v === 'number' && Number.isInteger(v)) return v;
    if (typeof v === 'string' && /^\d{1,15}$/.test(v)) return Number(v);
  }
  return undefined;
}

/** A list of strings from an array, or from a space-separated string (OAuth `scope`, RFC 6749 §3.3). */
function strList(details: Readonly<Record<string, unknown>>, ...keys: string[]): string[] {
  for (const k of keys) {
    const v = details[k];
    if (Array.isArray(v)) {
      const items = v.filter((x): x is string => typeof x === 'string' && x !== '');
      if (items.length > 0) return items;
    }
    if (typeof v === 'string' && v.trim() !== '') return v.trim().split(/\s+/);
  }
  return [];
}

/** Epoch milliseconds of an ISO-8601 or epoch value, or undefined. */
function epochMs(value: unknown): number | undefined {
  if (typeof value === 'number' && Number.isInteger(value)) return value;
  if (typeof value !== 'string') return undefined;
  const ms = Date.parse(value);
  return Number.isNaN(ms) ? undefined : ms;
}

/** Drop undefined members so the event carries only what is known. */
function compact(obj: Record<string, unknown>): OcsfObject {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(obj)) if (v !== undefined) out[k] = v;
  return out;
}

/** The last segment of an action: `admin.principal.created` → `created`. */
function verbOf(action: string): string {
  const i = action.lastIndexOf('.');
  return i < 0 ? action : action.slice(i + 1);
}

/** A path or URL: starts with `/` or a scheme. */
const PATH_OR_URL = /^(\/|[a-z][a-z0-9+.-]*:\/\/)/i;

/**
 * Deep copy with the query string and fragment cut from every string that is
 * a path or URL. NOTE: query parameters may carry tokens (RFC 6750 §2.3) and
 * redaction by key name cannot see inside them, so none leaves Writ.
 */
function scrubQueries(value: unknown): unknown {
  if (typeof value === 'string') return PATH_OR_URL.test(value) ? pathOnly(value) : value;
  if (Array.isArray(value)) return value.map(scrubQueries);
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, scrubQueries(v)]));
  }
  return value;
}

/** A path without its query string: query parameters may carry tokens and never leave Writ. */
function pathOnly(path: string): string;
function pathOnly(path: string | undefined): string | undefined;
function pathOnly(path: string | undefined): string | undefined {
  if (path === undefined) return undefined;
  const cut = path.search(/[?#]/);
  return cut < 0 ? path : path.slice(0, cut);
}

// OCSF `user.type_id`: 1 User, 2 Admin, 3 System, 4 Service, 99 Other (objects/user.json).
type UserType = readonly [typeId: number, caption: string];
const ADMIN: UserType = [2, 'Admin'];
const SYSTEM: UserType = [3, 'System'];
const SERVICE: UserType = [4, 'Service'];
const USER_TYPES: Readonly<Record<string, UserType>> = {
  admin: ADMIN,
  principal: ADMIN,
  workload: SERVICE,
  agent: SERVICE,
  service: SERVICE,
  node: SYSTEM,
  system: SYSTEM,
  anonymous: [0, 'Unknown'],
};

/** An OCSF `user` for a Writ actor or target. */
function userOf(party: AuditActor | AuditTarget, typeOverride?: UserType): OcsfObject {
  const [typeId, type] = typeOverride ?? USER_TYPES[party.type] ?? [OTHER, party.type];
  return compact({ uid: party.id, name: party.name ?? party.id, type_id: typeId, type });
}

/** As {@link userOf}, but a party of a type the table does not know is a Service (a short-lived account or holder). */
function serviceUserOf(party: AuditActor | AuditTarget): OcsfObject {
  return userOf(party, USER_TYPES[party.type] ?? SERVICE);
}

/** The identity an issuance or grant is about: the target when there is one, else the actor. */
function subjectOf(record: AuditRecord): AuditActor | AuditTarget {
  return record.target ?? record.actor;
}

/** The trust domain of a SPIFFE ID (`spiffe://td/path` → `spiffe://td`), or undefined. */
function trustDomainOf(id: string): string | undefined {
  const m = /^spiffe:\/\/([^/]+)/.exec(id);
  return m?.[1] === undefined ? undefined : `spiffe://${m[1]}`;
}

/** `src_endpoint` when the record names a network source. */
function srcEndpoint(record: AuditRecord): OcsfObject | undefined {
  return record.actor.ip !== undefined ? { ip: record.actor.ip } : undefined;
}

/**
 * `src_endpoint` where the class requires one (API Activity): the network
 * source when recorded, Writ itself for the system actor, else an endpoint
 * marked unknown (the constraint wants a name, uid or address).
 */
function requiredSrcEndpoint(record: AuditRecord, product: OcsfProduct): OcsfObject {
  return srcEndpoint(record) ?? (record.actor.type === 'system' ? { name: product.name, svc_name: product.name } : { name: 'unknown' });
}

/** `authorizations` of the policy decision behind an action, when details carry one. */
function authorizations(details: Readonly<Record<string, unknown>>): OcsfObject[] | undefined {
  const decision = str(details, 'decision');
  if (decision === undefined) return undefined;
  const version = str(details, 'policyVersion');
  const ids = strList(details, 'policyIds', 'policyId');
  if (ids.length === 0) return [{ decision }];
  return ids.map((uid) => ({ decision, policy: compact({ uid, name: uid, version }) }));
}

// RFC 9110 §9 and RFC 5789 methods; any other stays in `unmapped.details` (http_method is an enum).
const HTTP_METHODS = new Set(['CONNECT', 'DELETE', 'GET', 'HEAD', 'OPTIONS', 'PATCH', 'POST', 'PUT', 'TRACE']);

/** `http_request` from details, when method or path are known. */
function httpRequest(details: Readonly<Record<string, unknown>>, correlationId: string): OcsfObject | undefined {
  const given = str(details, 'method')?.toUpperCase();
  const method = given !== undefined && HTTP_METHODS.has(given) ? given : undefined;
  const path = pathOnly(str(details, 'path', 'route'));
  if (method === undefined && path === undefined) return undefined;
  return compact({
    http_method: method,
    url: path !== undefined ? { path } : undefined,
    uid: correlationId,
  });
}

// ---------------------------------------------------------------- activities

/** An activity that does not depend on the record. */
const always = (id: number) => (): number => id;

/** Activity by the action's last segment; 99 Other when the table has no row for it. */
const byVerb = (table: Readonly<Record<string, number>>) => (input: OcsfMappingInput): number =>
  table[verbOf(input.record.action)] ?? OTHER;

// API Activity 6003: by HTTP method (RFC 9110 §9.3 semantics: POST creates, GET reads, PUT/PATCH update).
const METHOD_ACTIVITY: Readonly<Record<string, number>> = { POST: 1, GET: 2, HEAD: 2, PUT: 3, PATCH: 3, DELETE: 4 };
function byMethod(input: OcsfMappingInput): number {
  return METHOD_ACTIVITY[str(input.details, 'method')?.toUpperCase() ?? ''] ?? OTHER;
}

// Account Change 3001.
const ACCOUNT_VERBS: Readonly<Record<string, number>> = {
  created: 1, issued: 1, enabled: 2, disabled: 5, suspended: 5, deleted: 6, revoked: 6, expired: 6,
  locked: 9, unlocked: 12, 'policy-attached': 7, 'policy-detached': 8,
};
/** Rotation of a principal's credential: Password Change when the principal rotates its own, Password Reset when another does. */
function accountActivity(input: OcsfMappingInput): number {
  const { record } = input;
  if (verbOf(record.action) === 'rotated') {
    return record.target === undefined || record.target.id === record.actor.id ? 3 : 4;
  }
  return byVerb(ACCOUNT_VERBS)(input);
}

// Entity Management 3004.
const ENTITY_VERBS: Readonly<Record<string, number>> = {
  created: 1, prepared: 1, read: 2, viewed: 2, listed: 2, updated: 3, changed: 3, loaded: 3, reloaded: 3,
  deleted: 4, removed: 4, moved: 5, enrolled: 6, unenrolled: 7, enabled: 8, disabled: 9,
  activated: 10, deactivated: 11, retired: 11, suspended: 12, resumed: 13,
};

// Web Resource Access Activity 6004: 1 Access Grant, 2 Access Deny, 4 Access Error.
function decisionActivity(input: OcsfMappingInput): number {
  if (input.record.outcome === 'failure') return 4;
  const decision = str(input.details, 'decision')?.toLowerCase();
  if (decision === 'allow' || decision === 'permit') return 1;
  if (decision === 'deny' || decision === 'forbid') return 2;
  return input.record.outcome === 'success' ? 1 : 2;
}

// ---------------------------------------------------------------- class attributes

/** API Activity 6003: actor, api, src_endpoint (required), http_request/response when known. */
function apiAttributes({ record, details, product }: OcsfMappingInput): OcsfClassAttributes {
  const method = str(details, 'method')?.toUpperCase();
  const route = str(details, 'route');
  const status = int(details, 'status');
  const operation = str(details, 'operation') ?? (method !== undefined && route !== undefined ? `${method} ${route}` : record.action);
  return {
    attributes: compact({
      actor: compact({ user: userOf(record.actor), authorizations: authorizations(details) }),
      api: compact({
        operation,
        request: { uid: record.correlationId },
        response: status !== undefined ? { code: status } : undefined,
      }),
      src_endpoint: requiredSrcEndpoint(record, product),
      http_request: httpRequest(details, record.correlationId),
      http_response: status !== undefined ? { code: status } : undefined,
    }),
  };
}

/** Account Change 3001 for an admin principal: `user` is the principal (Admin), `actor` who changed it. */
function principalAttributes({ record, details }: OcsfMappingInput): OcsfClassAttributes {
  const principal = subjectOf(record);
  const kind = str(details, 'kind', 'principalType');
  const keyId = str(details, 'keyId', 'credentialId');
  return {
    attributes: compact({
      user: compact({
        ...userOf(principal, kind === 'service' ? SERVICE : ADMIN),
        programmatic_credentials: keyId !== undefined ? [{ uid: keyId, type: 'API Key' }] : undefined,
      }),
      actor: { user: userOf(record.actor) },
      src_endpoint: srcEndpoint(record),
    }),
  };
}

/** The programmatic credential type an action's family always has, if any. */
function credentialTypeOf(action: string): string | undefined {
  if (action.startsWith('lease.')) return 'Lease';
  if (action.startsWith('token.')) return 'OAuth 2.0 Access Token';
  // A legacy exception's rotated password, an engine's own admin password.
  if (action.startsWith('exception.') || action.startsWith('engine.secret.')) return 'Password';
  return undefined;
}

/** Account Change 3001 for a short-lived account or credential: `user` is it, its id a programmatic credential. */
function credentialAccountAttributes({ record, details }: OcsfMappingInput): OcsfClassAttributes {
  const subject = subjectOf(record);
  const isToken = record.action.startsWith('token.');
  // A revoked access token is about the workload it was issued to.
  const account = str(details, 'username', 'account') ?? (isToken ? str(details, 'subject') : undefined);
  const credentialId = str(details, 'leaseId', 'credentialId') ?? record.target?.id;
  const type = credentialTypeOf(record.action) ?? str(details, 'credentialType') ?? 'Credential';
  return {
    attributes: compact({
      user: compact({
        ...(account !== undefined ? { uid: account, name: account, type_id: 4, type: 'Service' } : serviceUserOf(subject)),
        programmatic_credentials: credentialId !== undefined ? [{ uid: credentialId, type }] : undefined,
      }),
      actor: { user: userOf(record.actor) },
      src_endpoint: srcEndpoint(record),
    }),
  };
}

/**
 * Authorize Session 3003 (1 Assign Privileges): the holder, the privileges
 * granted (scopes, and roles such as a database role: OCSF 1.8.0 has no
 * `iam_roles` here) and the session (the lease or credential).
 */
function grantAttributes({ record, details }: OcsfMappingInput): OcsfClassAttributes {
  const holder = str(details, 'holder');
  const granted = [...strList(details, 'scopes', 'scope', 'privileges'), ...strList(details, 'roles', 'role')];
  const sessionId = str(details, 'leaseId', 'credentialId', 'sessionId') ?? record.target?.id;
  // The class wants its privileges (1.8.0: just one of privileges, group); a grant naming none grants its target.
  const privileges = granted.length > 0 ? granted : [record.target !== undefined ? `${record.target.type}:${record.target.id}` : 'unspecified'];
  return {
    attributes: compact({
      user: holder !== undefined ? { uid: holder, name: holder, type_id: 4, type: 'Service' } : serviceUserOf(record.actor.type === 'system' ? subjectOf(record) : record.actor),
      privileges,
      session: sessionId !== undefined
        ? compact({ uid: sessionId, created_time: epochMs(record.time), expiration_time: epochMs(details.expiresAt) })
        : undefined,
      src_endpoint: srcEndpoint(record),
    }),
  };
}

/** Authentication 3002: the workload as `user` (Service), Writ as `service`, protocol and credential. */
function authenticationAttributes(kind: 'x509-svid' | 'jwt-svid' | 'access-token' | 'node') {
  return ({ record, details, product }: OcsfMappingInput): OcsfClassAttributes => {
    const subject = subjectOf(record);
    const base = {
      user: userOf(subject, subject.type === 'node' ? SYSTEM : SERVICE),
      service: { name: product.name },
      src_endpoint: srcEndpoint(record),
      is_remote: record.actor.ip !== undefined ? true : undefined,
    };
    const expires = epochMs(details.expiresAt ?? details.notAfter);
    const created = epochMs(details.issuedAt ?? details.notBefore);
    if (kind === 'x509-svid') {
      const serial = str(details, 'serial', 'serialNumber');
      const issuer = str(details, 'issuer') ?? trustDomainOf(subject.id);
      const spiffeId = str(details, 'spiffeId') ?? (subject.id.startsWith('spiffe://') ? subject.id : undefined);
      return {
        attributes: compact({
          ...base,
          auth_protocol_id: OTHER,
          auth_protocol: 'SPIFFE X509-SVID',
          // The certificate object requires serial and issuer; without a serial there is nothing to name.
          certificate: serial !== undefined && issuer !== undefined
            ? compact({
                serial_number: serial,
                issuer,
                subject: str(details, 'subject'),
                expiration_time: expires,
                created_time: created,
                sans: spiffeId !== undefined ? [{ name: spiffeId, type: 'URI' }] : undefined,
              })
            : undefined,
        }),
      };
    }
    if (kind === 'jwt-svid' || kind === 'access-token') {
      const jti = str(details, 'jti', 'tokenId');
      const token = kind === 'jwt-svid' ? { type_id: 3, type: 'Identity Token' } : { type_id: OTHER, type: 'OAuth 2.0 Access Token' };
      return {
        attributes: compact({
          ...base,
          auth_protocol_id: kind === 'access-token' ? 6 : OTHER,
          auth_protocol: kind === 'access-token' ? 'OAUTH 2.0' : 'SPIFFE JWT-SVID',
          authentication_token: compact({ ...token, created_time: created, expiration_time: expires }),
          session: jti !== undefined ? compact({ uid: jti, created_time: created, expiration_time: expires, issuer: str(details, 'issuer') }) : undefined,
        }),
      };
    }
    const attestor = str(details, 'attestor', 'method');
    return {
      attributes: compact({
        ...base,
        auth_protocol_id: OTHER,
        auth_protocol: attestor !== undefined ? `SPIFFE node attestation (${attestor})` : 'SPIFFE node attestation',
      }),
    };
  };
}

/** Entity Management 3004: the registration entry, policy or CA key slot as `entity`. */
function entityAttributes(kind: string, typeId: number) {
  return ({ record, details }: OcsfMappingInput): OcsfClassAttributes => {
    const uid = record.target?.id ?? str(details, 'id', 'entryId', 'policyId', 'slot');
    const name = record.target?.name ?? str(details, 'name');
    const version = str(details, 'version', 'policyVersion');
    return {
      attributes: compact({
        entity: compact({
          uid,
          name: name ?? (uid === undefined ? kind : undefined),
          type_id: typeId,
          type: typeId === OTHER ? kind : ENTITY_TYPES[typeId],
          version,
          policy: typeId === 5 && uid !== undefined ? compact({ uid, name: name ?? uid, version }) : undefined,
        }),
        actor: { user: userOf(record.actor) },
        src_endpoint: srcEndpoint(record),
      }),
    };
  };
}
const ENTITY_TYPES: Readonly<Record<number, string>> = { 5: 'Policy' };

/**
 * Web Resource Access Activity 6004 for a policy decision: the request and
 * the resource it asked for; the subject as `actor` (host profile) and the
 * verdict as `action_id`/`disposition_id`/`authorizations` (security_control profile).
 */
function decisionAttributes(input: OcsfMappingInput): OcsfClassAttributes {
  const { record, details } = input;
  const allowed = decisionActivity(input) === 1;
  const resourceId = record.target?.id ?? str(details, 'resource', 'resourceId');
  const path = pathOnly(str(details, 'path'));
  const resource = compact({
    uid: resourceId,
    name: record.target?.name ?? resourceId ?? path ?? 'unknown',
    type: record.target?.type ?? str(details, 'resourceType'),
  });
  const decision = str(details, 'decision') ?? (allowed ? 'allow' : 'deny');
  return {
    attributes: compact({
      http_request: httpRequest(details, record.correlationId) ?? { uid: record.correlationId },
      web_resources: [resource],
      src_endpoint: srcEndpoint(record),
      actor: { user: userOf(record.actor) },
      action_id: allowed ? 1 : 2,
      action: allowed ? 'Allowed' : 'Denied',
      disposition_id: allowed ? 1 : 2,
      disposition: allowed ? 'Allowed' : 'Blocked',
      authorizations: authorizations({ ...details, decision }),
    }),
    profiles: ['host', 'security_control'],
  };
}

// ---------------------------------------------------------------- the table

/**
 * The mapping table: first matching row wins; the last row catches every
 * other action (API Activity, 99 Other), so no record is dropped.
 * docs/ocsf.md explains each row.
 *
 * @example
 * OCSF_MAPPINGS.find((m) => m.action === 'svid.issued')?.class.uid; // 3002
 */
export const OCSF_MAPPINGS: readonly OcsfMapping[] = [
  // action                  class                 activity                      attributes
  { action: 'api.*',             class: API_ACTIVITY,        activity: byMethod,                 attributes: apiAttributes },
  { action: 'admin.principal.*', class: ACCOUNT_CHANGE,      activity: accountActivity,          attributes: principalAttributes },
  { action: 'svid.issued',       class: AUTHENTICATION,      activity: always(3),                attributes: authenticationAttributes('x509-svid') },
  { action: 'svid.renewed',      class: AUTHENTICATION,      activity: always(5),                attributes: authenticationAttributes('x509-svid') },
  { action: 'jwt.issued',        class: AUTHENTICATION,      activity: always(4),                attributes: authenticationAttributes('jwt-svid') },
  { action: 'token.issued',      class: AUTHENTICATION,      activity: always(4),                attributes: authenticationAttributes('access-token') },
  { action: 'node.attested',     class: AUTHENTICATION,      activity: always(1),                attributes: authenticationAttributes('node') },
  { action: 'entry.*',           class: ENTITY_MANAGEMENT,   activity: byVerb(ENTITY_VERBS),     attributes: entityAttributes('Registration Entry', OTHER) },
  { action: 'policy.*',          class: ENTITY_MANAGEMENT,   activity: byVerb(ENTITY_VERBS),     attributes: entityAttributes('Policy', 5) },
  { action: 'ca.*',              class: ENTITY_MANAGEMENT,   activity: byVerb(ENTITY_VERBS),     attributes: entityAttributes('CA Key', OTHER) },
  { action: 'decision.made',     class: WEB_RESOURCE_ACCESS, activity: decisionActivity,         attributes: decisionAttributes },
  { action: 'lease.issued',      class: AUTHORIZE_SESSION,   activity: always(1),                attributes: grantAttributes },
  { action: 'lease.created',     class: AUTHORIZE_SESSION,   activity: always(1),                attributes: grantAttributes },
  { action: 'lease.renewed',     class: AUTHORIZE_SESSION,   activity: always(1),                attributes: grantAttributes },
  { action: 'credential.issued', class: AUTHORIZE_SESSION,   activity: always(1),                attributes: grantAttributes },
  { action: 'lease.*',           class: ACCOUNT_CHANGE,      activity: byVerb(ACCOUNT_VERBS),    attributes: credentialAccountAttributes },
  { action: 'credential.*',      class: ACCOUNT_CHANGE,      activity: accountActivity,          attributes: credentialAccountAttributes },
  { action: 'mcp.call.decided',  class: WEB_RESOURCE_ACCESS, activity: decisionActivity,         attributes: decisionAttributes },
  { action: 'request.*',         class: WEB_RESOURCE_ACCESS, activity: decisionActivity,         attributes: decisionAttributes },
  { action: 'policy-set.*',      class: ENTITY_MANAGEMENT,   activity: byVerb(ENTITY_VERBS),     attributes: entityAttributes('Policy', 5) },
  { action: 'token.refused',     class: AUTHENTICATION,      activity: always(4),                attributes: authenticationAttributes('access-token') },
  { action: 'token.revoked',     class: ACCOUNT_CHANGE,      activity: byVerb(ACCOUNT_VERBS),    attributes: credentialAccountAttributes },
  { action: 'exception.*',       class: ACCOUNT_CHANGE,      activity: accountActivity,          attributes: credentialAccountAttributes },
  { action: 'engine.secret.*',   class: ACCOUNT_CHANGE,      activity: accountActivity,          attributes: credentialAccountAttributes },
  { action: 'node.evicted',      class: ENTITY_MANAGEMENT,   activity: always(7),                attributes: entityAttributes('Node', OTHER) },
  { action: 'join_token.*',      class: ENTITY_MANAGEMENT,   activity: byVerb(ENTITY_VERBS),     attributes: entityAttributes('Join Token', OTHER) },
  { action: '*',                 class: API_ACTIVITY,        activity: always(OTHER),            attributes: apiAttributes },
];

function matches(pattern: string, action: string): boolean {
  if (pattern === '*') return true;
  if (pattern.endsWith('.*')) return action.startsWith(pattern.slice(0, -1));
  return pattern === action;
}

/**
 * The mapping row for an action (always one: the table ends with `*`).
 *
 * @example
 * ocsfMappingFor('admin.principal.created').class.name; // 'Account Change'
 * ocsfMappingFor('signal.received').action;             // '*'
 */
export function ocsfMappingFor(action: string): OcsfMapping {
  const row = OCSF_MAPPINGS.find((m) => matches(m.action, action));
  if (row === undefined) throw new TypeError('the ocsf mapping table has no catch-all row');
  return row;
}

// ---------------------------------------------------------------- outcome

// severity_id: 1 Informational, 3 Medium, 4 High (see docs/ocsf.md for why).
const SEVERITY: Readonly<Record<AuditOutcome, readonly [number, string]>> = {
  success: [1, 'Informational'],
  denied: [3, 'Medium'],
  failure: [4, 'High'],
};

function statusDetail(record: AuditRecord): string | undefined {
  if (record.outcome === 'success') return record.reasons.length > 0 ? record.reasons.join(', ') : undefined;
  const reasons = record.reasons.length > 0 ? `: ${record.reasons.join(', ')}` : '';
  return `${record.outcome}${reasons}`;
}

function messageOf(record: AuditRecord): string {
  const target = record.target !== undefined ? ` on ${record.target.type} ${record.target.id}` : '';
  const reasons = record.outcome !== 'success' && record.reasons.length > 0 ? ` (${record.reasons.join(', ')})` : '';
  return `${record.action} by ${record.actor.type} ${record.actor.id}${target}: ${record.outcome}${reasons}`;
}

/**
 * Map one audit record to an OCSF 1.8.0 event.
 *
 * Details are redacted first (kernel `redact`), so no secret-named field or
 * `Secret` value can reach the event. Throws `TypeError` when the record's
 * time is not a date (records come from Writ's own chain; that is a bug).
 *
 * @example
 * const event = toOcsf(record, { name: 'writ', version: '0.1.0' });
 * event.class_uid; // 3002 for `svid.issued`
 * event.type_uid;  // 300203
 */
export function toOcsf(record: AuditRecord, product: OcsfProduct): OcsfEvent {
  const time = Date.parse(record.time);
  if (Number.isNaN(time)) throw new TypeError(`audit record ${record.seq} has an invalid time \`${record.time}\``);

  const details = scrubQueries(redact(record.details ?? {})) as Readonly<Record<string, unknown>>;
  const input: OcsfMappingInput = { record, details, product };
  const row = ocsfMappingFor(record.action);
  const cls = row.class;
  const activityId = row.activity(input);
  const activityCaption = activityId === OTHER ? 'Other' : cls.activities[activityId] ?? 'Other';
  const { attributes, profiles } = row.attributes(input);
  const [severityId, severity] = SEVERITY[record.outcome];
  const success = record.outcome === 'success';
  const detail = statusDetail(record);
  const statusCode = int(details, 'status');

  return {
    category_uid: cls.categoryUid,
    category_name: cls.categoryName,
    class_uid: cls.uid,
    class_name: cls.name,
    activity_id: activityId,
    // With 99 Other, activity_name carries the source's own label (dictionary: activity_id).
    activity_name: activityId === OTHER ? record.action : activityCaption,
    type_uid: cls.uid * 100 + activityId,
    type_name: `${cls.name}: ${activityCaption}`,
    severity_id: severityId,
    severity,
    status_id: success ? 1 : 2,
    status: success ? 'Success' : 'Failure',
    ...(detail !== undefined ? { status_detail: detail } : {}),
    ...(statusCode !== undefined && record.action.startsWith('api.') ? { status_code: String(statusCode) } : {}),
    time,
    message: messageOf(record),
    metadata: {
      product: { name: product.name, vendor_name: OCSF_VENDOR_NAME, version: product.version },
      version: OCSF_VERSION,
      uid: String(record.seq),
      correlation_uid: record.correlationId,
      log_name: OCSF_LOG_NAME,
      sequence: record.seq,
      original_time: record.time,
      ...(profiles !== undefined ? { profiles } : {}),
    },
    ...attributes,
    unmapped: compact({
      action: record.action,
      outcome: record.outcome,
      reasons: [...record.reasons],
      actor_type: record.actor.type,
      actor_role: record.actor.role,
      target_type: record.target?.type,
      prev_hash: record.prevHash,
      hash: record.hash,
      details,
    }),
  };
}
