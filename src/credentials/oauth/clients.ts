/**
 * OAuth clients registered by admins: a client authenticates with
 * `private_key_jwt` (RFC 7523 §2.2) against its JWKS or `jwks_uri`, or with
 * its SPIFFE ID (draft-ietf-oauth-spiffe-client-auth): a JWT-SVID assertion,
 * or its X.509-SVID over mutual TLS (RFC 8705 `tls_client_auth`, URI SAN).
 */
import { createPublicKey, randomUUID } from 'node:crypto';
import type { JsonWebKey } from 'node:crypto';
import { SpiffeId } from '../../kernel/index.ts';
import type { Clock } from '../../kernel/index.ts';
import { oauthErrors } from './errors.ts';
import { parseScope } from './params.ts';

/** Grant types a client may be registered for. */
export const GRANT_TYPES = {
  clientCredentials: 'client_credentials',
  tokenExchange: 'urn:ietf:params:oauth:grant-type:token-exchange',
  jwtBearer: 'urn:ietf:params:oauth:grant-type:jwt-bearer',
} as const;
const ALL_GRANTS: readonly string[] = Object.values(GRANT_TYPES);

/** A registered client. */
export interface OAuthClient {
  readonly clientId: string;
  /** Public keys of `private_key_jwt` assertions (JWK objects, public members only). */
  readonly jwks?: { readonly keys: readonly Readonly<Record<string, unknown>>[] };
  readonly jwksUri?: string;
  /** SPIFFE client authentication: the SPIFFE ID that maps to this client. */
  readonly spiffeId?: string;
  /** Scopes the client may ask for; empty means none. */
  readonly scope: readonly string[];
  readonly grantTypes: readonly string[];
  readonly createdAt: string;
}

/** Port: where clients live. */
export interface OAuthClientStore {
  get(clientId: string): Promise<OAuthClient | undefined>;
  bySpiffeId(spiffeId: string): Promise<OAuthClient | undefined>;
  /** False when the id is taken. */
  insert(client: OAuthClient): Promise<boolean>;
  list(): Promise<readonly OAuthClient[]>;
  delete(clientId: string): Promise<boolean>;
}

/**
 * In-memory {@link OAuthClientStore}.
 *
 * @example
 * const clients = memoryClientStore();
 */
export function memoryClientStore(): OAuthClientStore {
  const byId = new Map<string, OAuthClient>();
  return {
    get: async (id) => byId.get(id),
    bySpiffeId: async (s) => [...byId.values()].find((c) => c.spiffeId === s),
    insert: async (c) => {
      if (byId.has(c.clientId)) return false;
      if (c.spiffeId !== undefined && [...byId.values()].some((o) => o.spiffeId === c.spiffeId)) return false;
      byId.set(c.clientId, c);
      return true;
    },
    list: async () => [...byId.values()],
    delete: async (id) => byId.delete(id),
  };
}

const CLIENT_ID = /^[A-Za-z0-9._~:/@+-]{1,256}$/;
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'];

function invalid(message: string): Error {
  return oauthErrors.error('ERR_OAUTH_CLIENT_INVALID', message);
}

/**
 * Check a registration request and build the client. Exactly one way to
 * authenticate: `jwks`, `jwks_uri` or `spiffe_id`.
 *
 * @example
 * const c = normalizeClient({ client_id: 'ci', jwks: { keys: [jwk] }, scope: 'deploy' }, clock);
 */
export function normalizeClient(raw: unknown, clock: Clock): OAuthClient {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw invalid('registration must be a JSON object');
  const r = raw as Record<string, unknown>;
  const clientId = r.client_id === undefined ? `writ-${randomUUID()}` : r.client_id;
  if (typeof clientId !== 'string' || !CLIENT_ID.test(clientId)) throw invalid('`client_id` must be 1–256 URL-safe characters');
  const ways = ['jwks', 'jwks_uri', 'spiffe_id'].filter((k) => r[k] !== undefined);
  if (ways.length !== 1) throw invalid('give exactly one of `jwks`, `jwks_uri` or `spiffe_id`');
  let jwks: OAuthClient['jwks'];
  let jwksUri: string | undefined;
  let spiffeId: string | undefined;
  if (r.jwks !== undefined) {
    const keys = (r.jwks as { keys?: unknown } | null)?.keys;
    if (!Array.isArray(keys) || keys.length === 0 || keys.length > 16) throw invalid('`jwks.keys` must hold 1–16 keys');
    const out: Record<string, unknown>[] = [];
    for (const k of keys) {
      if (k === null || typeof k !== 'object' || Array.isArray(k)) throw invalid('each key of `jwks` must be a JWK object');
      const jwk = k as Record<string, unknown>;
      if (typeof jwk.kty !== 'string' || !['EC', 'RSA', 'OKP'].includes(jwk.kty)) throw invalid('keys of `jwks` must be EC, RSA or OKP');
      if (PRIVATE_MEMBERS.some((m) => m in jwk)) throw invalid('`jwks` must hold public keys only');
      // A key that cannot be used is refused now, not at the client's first token request.
      try {
        createPublicKey({ key: jwk as JsonWebKey, format: 'jwk' });
      } catch {
        throw invalid(`key ${out.length + 1} of \`jwks\` is not a usable ${jwk.kty} public key (missing or malformed members)`);
      }
      out.push({ ...jwk });
    }
    jwks = { keys: out };
  } else if (r.jwks_uri !== undefined) {
    if (typeof r.jwks_uri !== 'string') throw invalid('`jwks_uri` must be an URL');
    let u: URL;
    try {
      u = new URL(r.jwks_uri);
    } catch {
      throw invalid('`jwks_uri` must be an URL');
    }
    if (u.protocol !== 'https:' && u.protocol !== 'http:') throw invalid('`jwks_uri` must be http(s)');
    jwksUri = u.href;
  } else {
    const id = typeof r.spiffe_id === 'string' ? SpiffeId.tryParse(r.spiffe_id) : undefined;
    if (id === undefined || id.isTrustDomainId()) throw invalid('`spiffe_id` must be a workload SPIFFE ID');
    spiffeId = id.toString();
  }
  if (r.scope !== undefined && typeof r.scope !== 'string') throw invalid('`scope` must be a space-separated string');
  let scope: readonly string[];
  try {
    scope = parseScope(r.scope as string | undefined);
  } catch {
    throw invalid('`scope` has a character RFC 6749 §3.3 does not allow');
  }
  const grants = r.grant_types === undefined ? [GRANT_TYPES.clientCredentials, GRANT_TYPES.tokenExchange, GRANT_TYPES.jwtBearer] : r.grant_types;
  if (!Array.isArray(grants) || grants.length === 0 || !grants.every((g) => typeof g === 'string' && ALL_GRANTS.includes(g))) {
    throw invalid(`\`grant_types\` must list some of ${ALL_GRANTS.join(', ')}`);
  }
  return Object.freeze({
    clientId,
    ...(jwks === undefined ? {} : { jwks }),
    ...(jwksUri === undefined ? {} : { jwksUri }),
    ...(spiffeId === undefined ? {} : { spiffeId }),
    scope: Object.freeze([...scope]),
    grantTypes: Object.freeze([...new Set(grants as string[])]),
    createdAt: clock.now().toISOString(),
  });
}

/** The client as the admin API shows it (RFC 7591 member names). */
export function clientJson(c: OAuthClient): Record<string, unknown> {
  return {
    client_id: c.clientId,
    ...(c.jwks === undefined ? {} : { jwks: c.jwks }),
    ...(c.jwksUri === undefined ? {} : { jwks_uri: c.jwksUri }),
    ...(c.spiffeId === undefined ? {} : { spiffe_id: c.spiffeId }),
    token_endpoint_auth_method: c.spiffeId === undefined ? 'private_key_jwt' : 'spiffe_jwt',
    // RFC 8705 §2.1.2: a SPIFFE client may also authenticate with its X.509-SVID over mutual TLS.
    ...(c.spiffeId === undefined ? {} : { tls_client_auth_san_uri: c.spiffeId }),
    scope: c.scope.join(' '),
    grant_types: c.grantTypes,
    created_at: c.createdAt,
  };
}
