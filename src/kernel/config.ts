/**
 * Writ's configuration schema: every option with its type, default and doc.
 *
 * Sources, lowest precedence first: defaults, a JSON config file, `WRIT_*`
 * environment variables, command-line flags. Unknown keys are refused, values
 * are checked, and the result is deep-frozen. This module reads no file and no
 * environment itself: `server/` and `cli/` hand it what they read.
 */
import { kernelErrors } from './errors.ts';
import { printable } from './printable.ts';

type OptionKind =
  | { readonly kind: 'string'; readonly pattern?: RegExp; readonly patternHint?: string }
  | { readonly kind: 'integer'; readonly min: number; readonly max: number }
  | { readonly kind: 'boolean' }
  | { readonly kind: 'enum'; readonly values: readonly string[] }
  /** Structured JSON (arrays, objects); held as normalized JSON text. */
  | { readonly kind: 'json' };

/** One option of the schema. */
export type OptionSpec = OptionKind & {
  readonly default: string | number | boolean;
  readonly doc: string;
  /** Never echo the value (e.g. a store URL holding a password). */
  readonly sensitive?: boolean;
  /** A secret read only from the environment: refused in a config file or as a flag. */
  readonly envOnly?: boolean;
};

// Port 0–65535.
const LISTEN = /^(?:\[[0-9a-fA-F:.]+\]|[a-zA-Z0-9.-]+):(?:6553[0-5]|655[0-2]\d|65[0-4]\d\d|6[0-4]\d{3}|[1-5]\d{4}|\d{1,4})$/;

// The same, or empty (the listener is off).
const LISTEN_OR_OFF = new RegExp(`^(?:|${LISTEN.source.slice(1, -1)})$`);

/**
 * The schema. Keys are dotted paths; the file form nests them
 * (`{"audit": {"flushEvents": 100}}`), the environment form is
 * `WRIT_` + the path in upper snake case (`WRIT_AUDIT_FLUSH_EVENTS`).
 */
export const CONFIG_SCHEMA = {
  mode: { kind: 'enum', values: ['development', 'production'], default: 'development', doc: 'development generates missing secrets with a warning; production refuses to start without them' },
  listen: { kind: 'string', pattern: LISTEN, patternHint: 'host:port', default: '127.0.0.1:7400', doc: 'address the HTTP API listens on (`host:port`; port 0 picks a free port)' },
  dataDir: { kind: 'string', default: './.writ', doc: 'folder for the embedded store, the bootstrap admin token and other local state' },
  store: { kind: 'string', default: '', sensitive: true, doc: 'store URL: empty for SQLite at `<dataDir>/writ.db`, `sqlite:<path>`, `sqlite::memory:`, or `postgres://user@host:port/db`' },
  logLevel: { kind: 'enum', values: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], default: 'info', doc: 'structured log level (pino)' },
  'http.bodyLimitBytes': { kind: 'integer', min: 1024, max: 64 * 1024 * 1024, default: 1024 * 1024, doc: 'largest request body accepted; larger bodies get 413' },
  'http.requestTimeoutMs': { kind: 'integer', min: 1000, max: 600_000, default: 30_000, doc: 'time a client has to send a whole request' },
  'http.trustProxy': { kind: 'boolean', default: false, doc: 'take the client address from `X-Forwarded-For` (only behind a proxy you run)' },
  'shutdown.drainTimeoutMs': { kind: 'integer', min: 0, max: 600_000, default: 10_000, doc: 'on SIGTERM/SIGINT, how long in-flight requests may take before the server stops anyway' },
  'audit.flushEvents': { kind: 'integer', min: 1, max: 100_000, default: 100, doc: 'group commit: a batch is written as soon as this many events wait' },
  'audit.flushDelayMs': { kind: 'integer', min: 0, max: 1000, default: 2, doc: 'group commit: or this long after the first event of a batch arrived, when the writer was idle (right after a write, waiting events are written at the next turn of the event loop)' },
  'audit.maxBatchEvents': { kind: 'integer', min: 1, max: 100_000, default: 2000, doc: 'most events written in one commit when the writer is behind' },
  'audit.anonymousRefusalBurst': { kind: 'integer', min: 1, max: 1_000_000, default: 100, doc: 'refusals of callers without a valid credential (admin API 401s, anonymous token requests) audited one by one per source address before the rate below applies; beyond it they are counted into one `api.refusals.suppressed` event per source per minute' },
  'audit.anonymousRefusalsPerMinute': { kind: 'integer', min: 0, max: 1_000_000, default: 60, doc: 'refill rate of each source address\'s budget of individually audited anonymous refusals' },
  'audit.queueLimit': { kind: 'integer', min: 100, max: 10_000_000, default: 200_000, doc: 'events waiting beyond this are refused with 503 instead of growing memory' },
  'admin.tokenFile': { kind: 'string', default: '', doc: 'where the bootstrap admin credential is written on first start (empty: `<dataDir>/admin.token`)' },
  'metrics.enabled': { kind: 'boolean', default: true, doc: 'serve Prometheus metrics at `/metrics`' },
  publicUrl: { kind: 'string', pattern: /^(?:|https?:\/\/[^\s/?#]+(?:\/[^\s?#]*)?)$/, patternHint: 'http(s)://host[:port][/path] or empty', default: '', doc: 'base URL clients reach this server at, used in discovery documents (AuthZEN `policy_decision_point`); empty: `http://<listen>`' },
  'tls.listen': { kind: 'string', pattern: LISTEN_OR_OFF, patternHint: 'host:port, or empty for off', default: '', doc: 'address of the mutual-TLS listener (`host:port`; port 0 picks a free port; empty: off). It serves the same API as `listen` with an X.509-SVID of `spiffe://<trustDomain>/writ/server`, rotated at half its life, and asks for an optional client X.509-SVID: the node API and the OAuth token endpoint (`tls_client_auth`, certificate-bound tokens) use it; a client certificate that is not a valid SVID of the trust domain is refused' },
  'tls.dnsNames': { kind: 'string', pattern: /^[a-zA-Z0-9.*-]+(?:,[a-zA-Z0-9.*-]+)*$/, patternHint: 'comma-separated DNS names', default: 'localhost', doc: 'DNS names in the TLS listener\'s server SVID, for clients that check host names (curl, browsers); SPIFFE clients check the SPIFFE ID instead' },
  'tls.publicUrl': { kind: 'string', pattern: /^(?:|https:\/\/[^\s/?#]+)$/, patternHint: 'https://host[:port] or empty', default: '', doc: 'base URL clients reach the TLS listener at, advertised to agents and in the OAuth metadata (`mtls_endpoint_aliases`); empty: `https://<tls.listen>` (a wildcard or loopback address is named by the first of `tls.dnsNames`)' },
  'policy.dir': { kind: 'string', default: '', doc: 'folder of `.cedar` policies (plus optional `.cedarschema` and `entities.json`), loaded at start and reloaded on change; empty: the PDP serves an empty set and denies everything' },
  'policy.reloadDebounceMs': { kind: 'integer', min: 0, max: 60_000, default: 250, doc: 'after a change in the policy folder, wait this long for more changes before reloading' },
  'policy.shadowDir': { kind: 'string', default: '', doc: 'shadow mode: a candidate policy folder decided beside the active set on live traffic; disagreements are audited (`policy.shadow.disagreed`) and counted, never enforced. Empty: no shadow. Also set and cleared with `writ policy shadow`' },
  'policy.timeoutMs': { kind: 'integer', min: 1, max: 60_000, default: 200, doc: 'budget for one policy decision, data gathering included; an overrun is a deny with reason `decision-timeout`' },
  'identity.trustDomain': { kind: 'string', pattern: /^[a-z0-9._-]{1,255}$/, patternHint: 'a SPIFFE trust domain name (lowercase letters, digits, `.`, `_`, `-`)', default: 'writ.local', doc: 'the SPIFFE trust domain this server is the CA of' },
  kek: { kind: 'string', default: '', sensitive: true, envOnly: true, doc: 'key-encryption key for CA private keys at rest: base64 of 32 random bytes; environment only, never in a config file (or use `identity.kekFile`)' },
  'identity.kekFile': { kind: 'string', default: '', doc: 'file holding the key-encryption key (base64 of 32 bytes, or the 32 raw bytes); must be mode 0600. Without `WRIT_KEK` or this, production mode refuses to start and development mode generates `<dataDir>/kek`' },
  'identity.x509SvidTtlSeconds': { kind: 'integer', min: 60, max: 86_400, default: 900, doc: 'default X.509-SVID lifetime (an entry may ask for another, up to the maximum)' },
  'identity.x509SvidMaxTtlSeconds': { kind: 'integer', min: 60, max: 604_800, default: 3600, doc: 'longest X.509-SVID lifetime any entry may have; also the node SVID lifetime cap' },
  'identity.jwtSvidTtlSeconds': { kind: 'integer', min: 30, max: 86_400, default: 300, doc: 'default JWT-SVID lifetime' },
  'identity.jwtSvidMaxTtlSeconds': { kind: 'integer', min: 30, max: 86_400, default: 3600, doc: 'longest JWT-SVID lifetime any entry may have' },
  'identity.nodeSvidTtlSeconds': { kind: 'integer', min: 60, max: 604_800, default: 3600, doc: 'lifetime of a node SVID (capped by `identity.x509SvidMaxTtlSeconds`); the agent renews at half-life' },
  'identity.x509CaTtlSeconds': { kind: 'integer', min: 600, max: 31_536_000, default: 86_400, doc: 'lifetime of an X.509 signing CA; a successor is prepared at 1/2 and activated at 5/6 of it' },
  'identity.jwtKeyTtlSeconds': { kind: 'integer', min: 600, max: 31_536_000, default: 86_400, doc: 'lifetime of a JWT-SVID signing key; rotated like the signing CA' },
  'identity.rootTtlSeconds': { kind: 'integer', min: 3600, max: 315_360_000, default: 31_536_000, doc: 'lifetime of the self-signed root; a new root is made once the current one is past half its life' },
  'identity.bundleRefreshHintSeconds': { kind: 'integer', min: 1, max: 86_400, default: 300, doc: '`spiffe_refresh_hint` of the served trust bundle' },
  'identity.rotationCheckSeconds': { kind: 'integer', min: 0, max: 86_400, default: 60, doc: 'how often the server performs scheduled CA rotation steps that are due (0: never; rotate on demand only)' },
  'identity.joinTokenTtlSeconds': { kind: 'integer', min: 10, max: 604_800, default: 600, doc: 'default lifetime of a join token' },
  'bus.kind': { kind: 'enum', values: ['memory', 'postgres', 'nats'], default: 'memory', doc: 'revocation bus: `memory` (in-process, one server), `postgres` (outbox table + LISTEN/NOTIFY in the store; needs a PostgreSQL store) or `nats` (NATS JetStream at `bus.natsUrl`)' },
  'bus.natsUrl': { kind: 'string', pattern: /^nats:\/\/[^\s@/]+(?:,nats:\/\/[^\s@/]+)*$/, patternHint: 'nats://host:port[,nats://host:port…] without credentials', default: 'nats://127.0.0.1:4222', doc: 'NATS server(s) for `bus.kind` `nats` (`nats://host:port`, comma-separated for a cluster; no credentials in the URL: it is shown in status output)' },
  'bus.natsStream': { kind: 'string', pattern: /^[A-Z][A-Z0-9_]{0,63}$/, patternHint: 'upper-case letters, digits and `_`', default: 'WRIT_REVOCATIONS', doc: 'JetStream stream holding revocations (subject `writ.revocations`, or `writ.revocations.<stream>` for another name)' },
  'ssf.receivers': { kind: 'json', default: '[]', doc: 'Shared Signals push receivers (RFC 8935): a JSON array of `{"endpointUrl", "audience", "authorizationHeaderEnv"?}`; each revocation is pushed to each as a CAEP SET. `authorizationHeaderEnv` names an environment variable (not `WRIT_*`) holding the `Authorization` value the receiver gave; empty: no transmitter' },
  'ssf.transmitters': { kind: 'json', default: '[]', doc: 'Shared Signals transmitters Writ receives CAEP/RISC SETs from: a JSON array of `{"issuer", "jwksUri", "audience", "pushAuthorizationEnv"?, "push"?, "pollUrl"?, "pollAuthorizationEnv"?, "pollIntervalMs"?}`. Pushed SETs arrive at `POST /ssf/receiver` (with the `Authorization` value in `pushAuthorizationEnv`, when set; `push` false refuses pushes); with `pollUrl` Writ polls it (RFC 8936) every `pollIntervalMs` (default 5000). `*Env` name environment variables outside `WRIT_*`' },
  'revocations.heartbeatMs': { kind: 'integer', min: 100, max: 60_000, default: 5000, doc: 'the revocation stream (`GET /v1/revocations/stream`) sends a heartbeat this often, so an enforcement point can tell a quiet stream from a dead one' },
  'identity.oidcIssuers': { kind: 'json', default: '[]', doc: 'node attestation by OIDC/JWT: a JSON array of `{"issuer", "jwksUrl", "audience", "nodeIdClaim"?, "claimSelectors"?: {"<claim>": "<selector key>"}, "maxTokenTtlSeconds"?}`' },
  'oauth.accessTokenTtlSeconds': { kind: 'integer', min: 10, max: 86_400, default: 300, doc: 'lifetime of an access token when the request names none (`requested_expires_in`); always capped by the maximum, the subject token and the task deadline' },
  'oauth.accessTokenMaxTtlSeconds': { kind: 'integer', min: 10, max: 86_400, default: 3600, doc: 'longest access token lifetime the token endpoint issues' },
  'oauth.maxDelegationDepth': { kind: 'integer', min: 0, max: 16, default: 3, doc: 'most actors an RFC 8693 `act` chain may hold; a longer chain is refused' },
  'oauth.dpopNonce': { kind: 'boolean', default: false, doc: 'require a server nonce in DPoP proofs at the token endpoint (RFC 9449 §8): a proof without it gets `use_dpop_nonce` and a `DPoP-Nonce` header' },
  'oauth.dpopNonceWindowSeconds': { kind: 'integer', min: 10, max: 86_400, default: 300, doc: 'a DPoP nonce is valid for this window and the next' },
  'oauth.dpopIatWindowSeconds': { kind: 'integer', min: 5, max: 3600, default: 60, doc: 'how old a DPoP proof `iat` may be (future skew allowed: a tenth of it, at least 5 s)' },
  'credentials.engines': { kind: 'json', default: '[]', sensitive: true, doc: 'dynamic secret engines: a JSON array of `{"name", "type": "postgres", "url", "prefix"?, "rotateEverySeconds"?, "roles": {"<role>": {"grants": ["GRANT … TO {{name}}"], "maxTtlSeconds"?}}}` or `{"name", "type": "redis", "url", "prefix"?, "rotateEverySeconds"?, "roles": {"<role>": {"keys": ["app:*"], "commands": ["+@read"], "channels"?, "maxTtlSeconds"?}}}`; accounts are named `<prefix><lease id>` (prefix default `writ_`); `rotateEverySeconds` rotates the admin secret of `url` on that schedule (see docs/credentials.md)' },
  'credentials.dynamicTtlSeconds': { kind: 'integer', min: 1, max: 604_800, default: 3600, doc: 'lifetime of a dynamic database credential when the request names none' },
  'credentials.maxLeaseTtlSeconds': { kind: 'integer', min: 1, max: 2_592_000, default: 86_400, doc: 'longest any lease may live from its creation, renewals included' },
  'credentials.maxLeasesPerIdentity': { kind: 'integer', min: 1, max: 10_000_000, default: 100, doc: 'live leases one identity may hold; one more is refused with `ERR_CRED_QUOTA_EXCEEDED` (429)' },
  'credentials.maxLeasesPerTask': { kind: 'integer', min: 1, max: 10_000_000, default: 1000, doc: 'live leases one task may hold; one more is refused with `ERR_CRED_QUOTA_EXCEEDED` (429)' },
  'credentials.maxTaskTtlSeconds': { kind: 'integer', min: 60, max: 2_592_000, default: 604_800, doc: 'furthest deadline a task may be given' },
  'credentials.reaperIntervalSeconds': { kind: 'integer', min: 0, max: 3600, default: 15, doc: 'how often the reaper expires leases and tasks, revokes stale pending leases and removes engine accounts without a live lease (0: only once at start)' },
  'credentials.pendingGraceSeconds': { kind: 'integer', min: 0, max: 3600, default: 60, doc: 'a lease still `pending` this long after it was opened is an issuance a crash interrupted: the reaper revokes it and removes its account' },
} as const satisfies Record<string, OptionSpec>;

export type ConfigKey = keyof typeof CONFIG_SCHEMA;

type ValueOf<S> = S extends { kind: 'json' } ? string : S extends { kind: 'integer' } ? number : S extends { kind: 'boolean' } ? boolean : S extends { kind: 'enum'; values: readonly (infer V)[] } ? V : string;

/** The flat, typed, frozen configuration. */
export type WritConfig = { readonly [K in ConfigKey]: ValueOf<(typeof CONFIG_SCHEMA)[K]> };

/** Inputs to {@link loadConfig}. */
export interface ConfigSources {
  /** Parsed JSON config file (nested objects). */
  readonly file?: unknown;
  /** Environment variables; only `WRIT_*` names that match an option are read, other `WRIT_*` names are refused. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Flags, by dotted key. */
  readonly flags?: Readonly<Partial<Record<ConfigKey, string | number | boolean>>>;
}

/** `audit.flushEvents` → `WRIT_AUDIT_FLUSH_EVENTS`. */
export function envName(key: string): string {
  return `WRIT_${key.replace(/\./g, '_').replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase()}`;
}

/** Environment names that are not options but are read by the CLI as a client. */
export const CLIENT_ENV = new Set(['WRIT_SERVER', 'WRIT_TOKEN', 'WRIT_TOKEN_FILE', 'WRIT_CONFIG']);

function invalid(message: string): Error {
  return kernelErrors.error('ERR_KERNEL_CONFIG_INVALID', message);
}

function coerce(key: ConfigKey, raw: unknown, from: string): string | number | boolean {
  const spec: OptionSpec = CONFIG_SCHEMA[key];
  const shown = spec.sensitive === true ? '(value hidden)' : `\`${printable(String(raw))}\``;
  switch (spec.kind) {
    case 'integer': {
      const n = typeof raw === 'number' ? raw : typeof raw === 'string' && /^-?\d+$/.test(raw.trim()) ? Number(raw.trim()) : NaN;
      if (!Number.isSafeInteger(n)) throw invalid(`${from} \`${key}\` must be an integer, got ${shown}`);
      if (n < spec.min || n > spec.max) throw invalid(`${from} \`${key}\` must be between ${spec.min} and ${spec.max}, got ${n}`);
      return n;
    }
    case 'boolean': {
      if (typeof raw === 'boolean') return raw;
      if (raw === 'true' || raw === '1') return true;
      if (raw === 'false' || raw === '0') return false;
      throw invalid(`${from} \`${key}\` must be true or false, got ${shown}`);
    }
    case 'enum': {
      if (typeof raw !== 'string' || !spec.values.includes(raw)) throw invalid(`${from} \`${key}\` must be one of ${spec.values.join(', ')}, got ${shown}`);
      return raw;
    }
    case 'json': {
      let value: unknown = raw;
      if (typeof raw === 'string') {
        try {
          value = JSON.parse(raw);
        } catch {
          throw invalid(`${from} \`${key}\` must be JSON`);
        }
      }
      if (value === null || typeof value !== 'object') throw invalid(`${from} \`${key}\` must be a JSON array or object`);
      return JSON.stringify(value);
    }
    case 'string': {
      if (typeof raw !== 'string') throw invalid(`${from} \`${key}\` must be a string`);
      if (spec.pattern !== undefined && !spec.pattern.test(raw)) throw invalid(`${from} \`${key}\` must look like ${spec.patternHint ?? spec.pattern.source}, got ${shown}`);
      return raw;
    }
  }
}

function flattenFile(file: unknown, prefix: string, out: Map<string, unknown>): void {
  if (file === null || typeof file !== 'object' || Array.isArray(file)) throw invalid(`config file${prefix === '' ? '' : ` \`${prefix}\``} must be a JSON object`);
  for (const [k, v] of Object.entries(file)) {
    const key = prefix === '' ? k : `${prefix}.${k}`;
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) flattenFile(v, key, out);
    else out.set(key, v);
  }
}

function isKey(k: string): k is ConfigKey {
  return Object.hasOwn(CONFIG_SCHEMA, k);
}

function isEnvOnly(k: ConfigKey): boolean {
  const spec: OptionSpec = CONFIG_SCHEMA[k];
  return spec.envOnly === true;
}

/**
 * Build the frozen configuration from its sources.
 *
 * @example
 * const config = loadConfig({ env: { WRIT_LISTEN: '127.0.0.1:0' } });
 * config.listen; // '127.0.0.1:0'
 */
export function loadConfig(sources: ConfigSources = {}): WritConfig {
  const values = new Map<ConfigKey, string | number | boolean>();
  for (const [k, spec] of Object.entries(CONFIG_SCHEMA) as [ConfigKey, OptionSpec][]) values.set(k, spec.default);

  if (sources.file !== undefined) {
    const flat = new Map<string, unknown>();
    flattenFile(sources.file, '', flat);
    for (const [k, v] of flat) {
      if (!isKey(k)) throw invalid(`config file has unknown key \`${k}\``);
      if (isEnvOnly(k)) throw invalid(`\`${k}\` is a secret and is read only from the environment (${envName(k)}), never from a config file`);
      values.set(k, coerce(k, v, 'config file'));
    }
  }

  if (sources.env !== undefined) {
    const byEnv = new Map<string, ConfigKey>();
    for (const k of Object.keys(CONFIG_SCHEMA) as ConfigKey[]) byEnv.set(envName(k), k);
    for (const [name, v] of Object.entries(sources.env)) {
      if (!name.startsWith('WRIT_') || v === undefined || CLIENT_ENV.has(name)) continue;
      const k = byEnv.get(name);
      if (k === undefined) throw invalid(`environment has unknown variable \`${name}\``);
      values.set(k, coerce(k, v, `environment ${name} for`));
    }
  }

  if (sources.flags !== undefined) {
    for (const [k, v] of Object.entries(sources.flags)) {
      if (v === undefined) continue;
      if (!isKey(k)) throw invalid(`unknown option \`${k}\``);
      if (isEnvOnly(k)) throw invalid(`\`${k}\` is a secret and is read only from the environment (${envName(k)}), never from a flag`);
      values.set(k, coerce(k, v, 'option'));
    }
  }

  return Object.freeze(Object.fromEntries(values)) as WritConfig;
}

/** The configuration with sensitive values hidden, for `writ status` and logs. */
export function describeConfig(config: WritConfig): Record<string, string | number | boolean> {
  const out: Record<string, string | number | boolean> = {};
  for (const [k, spec] of Object.entries(CONFIG_SCHEMA) as [ConfigKey, OptionSpec][]) {
    const v = config[k];
    out[k] = spec.sensitive === true && v !== '' ? '[redacted]' : v;
  }
  return out;
}
