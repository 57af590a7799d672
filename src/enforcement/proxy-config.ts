/**
 * The `writ proxy` configuration: one JSON document with the listener, how
 * the proxy gets its own identity, the PDP and cache bounds, the upstreams
 * and the routes (method + path template → action, resource, upstream, the
 * credential kinds accepted, allow-audit sampling, credential injection).
 *
 * Parsed once at start: unknown keys are rejected, every error names the
 * field (`routes[2].inject.header`), the result is deep-frozen. Reading the
 * file and any secret it names is the CLI's job.
 */
import { TrustDomain } from '../kernel/index.ts';
import { enforcementErrors } from './errors.ts';

/** Credential kinds a route accepts. */
export const AUTH_MODES = ['mtls', 'jwt-svid', 'access-token'] as const;
export type AuthMode = (typeof AUTH_MODES)[number];

/**
 * Where decisions are made: `remote` asks the server's AuthZEN PDP per
 * request (with the live context sources); `local` decides in the proxy with
 * the server's policy bundle, synced.
 */
export const PDP_MODES = ['remote', 'local'] as const;
export type PdpMode = (typeof PDP_MODES)[number];

/** Where the proxy's serving X.509-SVID comes from. */
export type ServingSvidSource =
  | { readonly source: 'workload-api' }
  | { readonly source: 'files'; readonly certFile: string; readonly keyFile: string };

/** TLS termination (absent: plain HTTP, bearer credentials only). */
export interface ProxyTlsConfig {
  readonly svid: ServingSvidSource;
  /** `request`: a client certificate is asked for but optional (bearer routes still work); `require`: no certificate, no request. */
  readonly clientCert: 'request' | 'require';
}

/** How an injected credential is put on the upstream request. */
export interface InjectPlacement {
  /** Lower-case header name (default `authorization`). */
  readonly header: string;
  /** `bearer`: `Bearer <v>`; `basic`: `Basic b64(username:v)`; `raw`: the value as is. */
  readonly format: 'bearer' | 'basic' | 'raw';
  /** For `basic`. */
  readonly username?: string;
}

/** Credential injection for a legacy upstream. */
export type InjectConfig =
  | (InjectPlacement & {
      readonly source: 'exchange';
      /** RFC 8693 `audience` of the token the upstream receives. */
      readonly audience: string;
      readonly scope?: string;
    })
  | (InjectPlacement & {
      readonly source: 'static';
      /** The file holding the secret of a documented exception; the CLI reads it, never the config. */
      readonly secretFile: string;
    });

/** One upstream. */
export interface UpstreamConfig {
  readonly name: string;
  /** `http://host:port` (no path). */
  readonly url: string;
  readonly timeoutMs: number;
  readonly maxSockets: number;
}

/** One route. */
export interface RouteConfig {
  readonly name: string;
  /** Upper-case methods, or `*` for any. */
  readonly methods: readonly string[] | '*';
  /** `/orders/{id}`, `/files/{rest*}`. */
  readonly path: string;
  /** The AuthZEN action (default `http:<METHOD>`). */
  readonly action?: string;
  /** The resource id template: `{host}`, `{path}` and the path's parameters (default `{host}{path}`). */
  readonly resource: string;
  readonly upstream: string;
  readonly auth: readonly AuthMode[];
  /** Share of allowed requests audited, 0..1 (denies are always audited). */
  readonly auditAllowSampleRate: number;
  readonly inject?: InjectConfig;
  /** Cookies removed before the upstream (case-sensitive names). */
  readonly stripCookies: readonly string[];
}

/** The whole configuration. */
export interface ProxyConfig {
  /** HOST:PORT. */
  readonly listen: string;
  /** HOST:PORT of the Prometheus `/metrics` listener (plain HTTP). */
  readonly metricsListen?: string;
  readonly trustDomain: string;
  /** The audience JWT-SVIDs and access tokens must name. */
  readonly audience: string;
  /** Public base URL the clients use (`https://api.example.com`), for DPoP `htu`; default: scheme + Host header. */
  readonly publicUrl?: string;
  /** Workload API socket of the proxy's own identity (serving SVID, JWT-SVID for token exchange); default `SPIFFE_ENDPOINT_SOCKET`. */
  readonly workloadApiSocket?: string;
  readonly tls?: ProxyTlsConfig;
  readonly pdp: {
    /** `remote` (default) or `local`. */
    readonly mode: PdpMode;
    /** Remote: deadline of one PDP call. Local: budget of one local decision. */
    readonly timeoutMs: number;
    readonly cacheTtlMs: number;
    readonly cacheMaxEntries: number;
    /** Local mode: period of the policy bundle's ETag poll (besides `policy-changed` events). */
    readonly pollIntervalMs: number;
  };
  readonly tokenCacheMaxEntries: number;
  /** Past this long without hearing from the revocation stream, every request is denied. */
  readonly revocationMaxStalenessMs: number;
  readonly dpopIatWindowSeconds: number;
  readonly upstreams: ReadonlyMap<string, UpstreamConfig>;
  readonly routes: readonly RouteConfig[];
}

const METHOD = /^[A-Z]{1,16}$/;
const NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;
const HEADER = /^[a-z0-9!#$%&'*+.^_`|~-]{1,64}$/;
const SEGMENT = /^[A-Za-z0-9._~!$&'()*+,;=:@%-]+$/;
const PARAM = /^\{([A-Za-z_][A-Za-z0-9_]{0,31})(\*?)\}$/;
const COOKIE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$/;
/** Headers an injected credential must not overwrite: they carry identity or framing. */
const RESERVED_HEADERS = new Set(['host', 'content-length', 'transfer-encoding', 'connection', 'x-writ-spiffe-id', 'x-writ-decision-id', 'x-forwarded-for', 'x-forwarded-host', 'x-forwarded-proto']);

function fail(field: string, message: string): never {
  throw enforcementErrors.error('ERR_ENFORCE_PROXY_CONFIG', `proxy config \`${field}\`: ${message}`);
}

type Obj = Record<string, unknown>;

function obj(v: unknown, field: string): Obj {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) fail(field, 'must be an object');
  return v as Obj;
}

function only(o: Obj, field: string, keys: readonly string[]): void {
  for (const k of Object.keys(o)) if (!keys.includes(k)) fail(field === '' ? k : `${field}.${k}`, `unknown key (allowed: ${keys.join(', ')})`);
}

function str(o: Obj, key: string, field: string, dflt?: string): string {
  const v = o[key];
  if (v === undefined && dflt !== undefined) return dflt;
  if (typeof v !== 'string' || v === '') fail(field, v === undefined ? 'is required' : 'must be a non-empty string');
  if (v.length > 2048) fail(field, 'is longer than 2048 characters');
  return v;
}

function optStr(o: Obj, key: string, field: string): string | undefined {
  return o[key] === undefined ? undefined : str(o, key, field);
}

function int(o: Obj, key: string, field: string, dflt: number, min: number, max: number): number {
  const v = o[key];
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) fail(field, `must be a whole number from ${min} to ${max}`);
  return v;
}

function hostPort(v: string, field: string): string {
  const i = v.lastIndexOf(':');
  const port = Number(v.slice(i + 1));
  if (i <= 0 || !Number.isInteger(port) || port < 0 || port > 65535) fail(field, `must be HOST:PORT, not \`${v.slice(0, 64)}\``);
  return v;
}

/** A compiled path template. */
export interface PathTemplate {
  /** Literal segments and parameters; a trailing `{x*}` takes the rest. */
  readonly segments: readonly ({ readonly literal: string } | { readonly param: string; readonly rest: boolean })[];
}

/**
 * Compile `/orders/{id}` or `/files/{rest*}`; throws naming `field`.
 *
 * @example
 * compilePathTemplate('/orders/{id}', 'routes[0].path');
 */
export function compilePathTemplate(t: string, field: string): PathTemplate {
  if (!t.startsWith('/')) fail(field, 'must start with `/`');
  if (t === '/') return { segments: [] };
  const parts = t.slice(1).split('/');
  const seen = new Set<string>();
  const segments: PathTemplate['segments'][number][] = [];
  parts.forEach((p, i) => {
    const m = PARAM.exec(p);
    if (m !== null) {
      const name = m[1] ?? '';
      const rest = m[2] === '*';
      if (seen.has(name)) fail(field, `parameter \`{${name}}\` appears twice`);
      if (rest && i !== parts.length - 1) fail(field, `\`{${name}*}\` must be the last segment`);
      if (name === 'host' || name === 'path') fail(field, `parameter name \`${name}\` is reserved`);
      seen.add(name);
      segments.push({ param: name, rest });
      return;
    }
    if (p === '' || p === '.' || p === '..' || !SEGMENT.test(p) || p.includes('{') || p.includes('}')) fail(field, `segment \`${p.slice(0, 64)}\` is not a literal path segment or a \`{name}\` parameter`);
    segments.push({ literal: p });
  });
  return { segments };
}

/**
 * Match a normalized path (no query, dot segments resolved) against a
 * template; the parameters (still percent-encoded) or undefined.
 *
 * @example
 * matchPath(compilePathTemplate('/orders/{id}', 'p'), '/orders/42'); // { id: '42' }
 */
export function matchPath(t: PathTemplate, path: string): Record<string, string> | undefined {
  const parts = path === '/' ? [] : path.slice(1).split('/');
  const params: Record<string, string> = {};
  for (let i = 0; i < t.segments.length; i++) {
    const s = t.segments[i];
    if (s === undefined) return undefined;
    if ('literal' in s) {
      if (parts[i] !== s.literal) return undefined;
      continue;
    }
    if (s.rest) {
      params[s.param] = parts.slice(i).join('/');
      return params;
    }
    const v = parts[i];
    if (v === undefined || v === '') return undefined;
    params[s.param] = v;
  }
  return parts.length === t.segments.length ? params : undefined;
}

function placement(o: Obj, field: string): InjectPlacement {
  const header = str(o, 'header', `${field}.header`, 'authorization').toLowerCase();
  if (!HEADER.test(header)) fail(`${field}.header`, 'is not a header name');
  if (RESERVED_HEADERS.has(header)) fail(`${field}.header`, `\`${header}\` carries identity or framing and cannot hold an injected credential`);
  const format = str(o, 'format', `${field}.format`, 'bearer');
  if (format !== 'bearer' && format !== 'basic' && format !== 'raw') fail(`${field}.format`, 'must be `bearer`, `basic` or `raw`');
  const username = optStr(o, 'username', `${field}.username`);
  if (format === 'basic' && username === undefined) fail(`${field}.username`, 'is required with format `basic`');
  if (format !== 'basic' && username !== undefined) fail(`${field}.username`, 'is only allowed with format `basic`');
  if (username !== undefined && username.includes(':')) fail(`${field}.username`, 'must not contain `:` (RFC 7617 §2)');
  return { header, format, ...(username === undefined ? {} : { username }) };
}

function injectOf(raw: unknown, field: string): InjectConfig {
  const o = obj(raw, field);
  const source = str(o, 'source', `${field}.source`);
  if (source === 'exchange') {
    only(o, field, ['source', 'audience', 'scope', 'header', 'format', 'username']);
    const scope = optStr(o, 'scope', `${field}.scope`);
    return { source, audience: str(o, 'audience', `${field}.audience`), ...(scope === undefined ? {} : { scope }), ...placement(o, field) };
  }
  if (source === 'static') {
    only(o, field, ['source', 'secretFile', 'header', 'format', 'username']);
    return { source, secretFile: str(o, 'secretFile', `${field}.secretFile`), ...placement(o, field) };
  }
  return fail(`${field}.source`, 'must be `exchange` (a short-lived token from the Writ broker) or `static` (an exception\'s secret)');
}

function routeOf(raw: unknown, i: number, upstreams: ReadonlyMap<string, UpstreamConfig>, hasTls: boolean): RouteConfig {
  const field = `routes[${i}]`;
  const o = obj(raw, field);
  only(o, field, ['name', 'methods', 'path', 'action', 'resource', 'upstream', 'auth', 'auditAllowSampleRate', 'inject', 'stripCookies']);
  const name = str(o, 'name', `${field}.name`);
  if (!NAME.test(name)) fail(`${field}.name`, 'must be 1-64 of a-z 0-9 . _ - (a metric label)');
  let methods: readonly string[] | '*';
  if (o.methods === '*' || o.methods === undefined) methods = '*';
  else {
    if (!Array.isArray(o.methods) || o.methods.length === 0) fail(`${field}.methods`, 'must be `*` or a non-empty array of methods');
    methods = o.methods.map((m, j) => {
      if (typeof m !== 'string' || !METHOD.test(m)) fail(`${field}.methods[${j}]`, 'must be an upper-case HTTP method');
      return m;
    });
  }
  const path = str(o, 'path', `${field}.path`);
  compilePathTemplate(path, `${field}.path`);
  const action = optStr(o, 'action', `${field}.action`);
  const resource = str(o, 'resource', `${field}.resource`, '{host}{path}');
  const params = new Set(compilePathTemplate(path, `${field}.path`).segments.flatMap((s) => ('param' in s ? [s.param] : [])));
  for (const m of resource.matchAll(/\{([^}]*)\}/g)) {
    const p = m[1] ?? '';
    if (p !== 'host' && p !== 'path' && !params.has(p)) fail(`${field}.resource`, `\`{${p.slice(0, 32)}}\` is neither \`{host}\`, \`{path}\` nor a parameter of the path`);
  }
  const upstream = str(o, 'upstream', `${field}.upstream`);
  if (!upstreams.has(upstream)) fail(`${field}.upstream`, `names no upstream (have: ${[...upstreams.keys()].join(', ') || 'none'})`);
  if (!Array.isArray(o.auth) || o.auth.length === 0) fail(`${field}.auth`, o.auth === undefined ? 'is required: a non-empty array of `mtls`, `jwt-svid`, `access-token`' : 'must be a non-empty array of `mtls`, `jwt-svid`, `access-token`');
  const auth = o.auth.map((a, j) => {
    if (typeof a !== 'string' || !(AUTH_MODES as readonly string[]).includes(a)) fail(`${field}.auth[${j}]`, 'must be `mtls`, `jwt-svid` or `access-token`');
    return a as AuthMode;
  });
  if (auth.includes('mtls') && !hasTls) fail(`${field}.auth`, '`mtls` needs the top-level `tls` section');
  const rate = o.auditAllowSampleRate;
  if (rate !== undefined && (typeof rate !== 'number' || !(rate >= 0 && rate <= 1))) fail(`${field}.auditAllowSampleRate`, 'must be a number from 0 to 1');
  const inject = o.inject === undefined ? undefined : injectOf(o.inject, `${field}.inject`);
  let stripCookies: string[] = [];
  if (o.stripCookies !== undefined) {
    if (!Array.isArray(o.stripCookies)) fail(`${field}.stripCookies`, 'must be an array of cookie names');
    stripCookies = o.stripCookies.map((c, j) => {
      if (typeof c !== 'string' || !COOKIE.test(c)) fail(`${field}.stripCookies[${j}]`, 'is not a cookie name');
      return c;
    });
  }
  return { name, methods, path, ...(action === undefined ? {} : { action }), resource, upstream, auth: [...new Set(auth)], auditAllowSampleRate: (rate as number | undefined) ?? 1, ...(inject === undefined ? {} : { inject }), stripCookies };
}

function deepFreeze<T>(v: T): T {
  if (v !== null && typeof v === 'object' && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const x of Object.values(v as object)) deepFreeze(x);
  }
  return v;
}

/**
 * Validate a parsed JSON configuration. Throws `ERR_ENFORCE_PROXY_CONFIG`
 * naming the first bad field.
 *
 * @example
 * const cfg = parseProxyConfig(JSON.parse(readFileSync('proxy.json', 'utf8')));
 * cfg.routes[0].upstream; // 'orders'
 */
export function parseProxyConfig(raw: unknown): ProxyConfig {
  const o = obj(raw, '(root)');
  only(o, '', ['listen', 'metricsListen', 'trustDomain', 'audience', 'publicUrl', 'workloadApiSocket', 'tls', 'pdp', 'tokenCache', 'revocations', 'dpop', 'upstreams', 'routes']);
  const listen = hostPort(str(o, 'listen', 'listen'), 'listen');
  const metricsRaw = optStr(o, 'metricsListen', 'metricsListen');
  const metricsListen = metricsRaw === undefined ? undefined : hostPort(metricsRaw, 'metricsListen');
  const trustDomain = str(o, 'trustDomain', 'trustDomain', 'writ.local');
  try {
    TrustDomain.parse(trustDomain);
  } catch {
    fail('trustDomain', `\`${trustDomain.slice(0, 64)}\` is not a SPIFFE trust domain name`);
  }
  const audience = str(o, 'audience', 'audience', 'writ-proxy');
  const publicUrl = optStr(o, 'publicUrl', 'publicUrl');
  if (publicUrl !== undefined) {
    let u: URL | undefined;
    try {
      u = new URL(publicUrl);
    } catch {
      u = undefined;
    }
    if (u === undefined || (u.protocol !== 'https:' && u.protocol !== 'http:') || u.search !== '' || u.hash !== '') fail('publicUrl', 'must be an http(s) URL without query or fragment');
  }
  const workloadApiSocket = optStr(o, 'workloadApiSocket', 'workloadApiSocket');

  let tls: ProxyTlsConfig | undefined;
  if (o.tls !== undefined) {
    const t = obj(o.tls, 'tls');
    only(t, 'tls', ['svid', 'clientCert']);
    const s = obj(t.svid, 'tls.svid');
    const source = str(s, 'source', 'tls.svid.source');
    let svid: ServingSvidSource;
    if (source === 'workload-api') {
      only(s, 'tls.svid', ['source']);
      svid = { source };
    } else if (source === 'files') {
      only(s, 'tls.svid', ['source', 'certFile', 'keyFile']);
      svid = { source, certFile: str(s, 'certFile', 'tls.svid.certFile'), keyFile: str(s, 'keyFile', 'tls.svid.keyFile') };
    } else fail('tls.svid.source', 'must be `workload-api` or `files`');
    const clientCert = str(t, 'clientCert', 'tls.clientCert', 'request');
    if (clientCert !== 'request' && clientCert !== 'require') fail('tls.clientCert', 'must be `request` or `require`');
    tls = { svid, clientCert };
  }

  const p = o.pdp === undefined ? {} : obj(o.pdp, 'pdp');
  only(p, 'pdp', ['mode', 'timeoutMs', 'cacheTtlMs', 'cacheMaxEntries', 'pollIntervalMs']);
  const mode = p.mode === undefined ? 'remote' : p.mode;
  if (typeof mode !== 'string' || !(PDP_MODES as readonly string[]).includes(mode)) fail('pdp.mode', 'must be `remote` (ask the server\'s AuthZEN PDP per request) or `local` (decide here with the server\'s policy bundle)');
  const pdp = { mode: mode as PdpMode, pollIntervalMs: int(p, 'pollIntervalMs', 'pdp.pollIntervalMs', 30_000, 1000, 3_600_000), timeoutMs: int(p, 'timeoutMs', 'pdp.timeoutMs', 2000, 1, 60_000), cacheTtlMs: int(p, 'cacheTtlMs', 'pdp.cacheTtlMs', 1000, 0, 300_000), cacheMaxEntries: int(p, 'cacheMaxEntries', 'pdp.cacheMaxEntries', 10_000, 1, 1_000_000) };
  const tc = o.tokenCache === undefined ? {} : obj(o.tokenCache, 'tokenCache');
  only(tc, 'tokenCache', ['maxEntries']);
  const r = o.revocations === undefined ? {} : obj(o.revocations, 'revocations');
  only(r, 'revocations', ['maxStalenessMs']);
  const d = o.dpop === undefined ? {} : obj(o.dpop, 'dpop');
  only(d, 'dpop', ['iatWindowSeconds']);

  const ups = obj(o.upstreams, 'upstreams');
  const upstreams = new Map<string, UpstreamConfig>();
  for (const [name, v] of Object.entries(ups)) {
    const field = `upstreams.${name}`;
    if (!NAME.test(name)) fail(field, 'upstream names are 1-64 of a-z 0-9 . _ -');
    const u = obj(v, field);
    only(u, field, ['url', 'timeoutMs', 'maxSockets']);
    const url = str(u, 'url', `${field}.url`);
    let parsed: URL | undefined;
    try {
      parsed = new URL(url);
    } catch {
      parsed = undefined;
    }
    if (parsed === undefined || parsed.protocol !== 'http:' || (parsed.pathname !== '/' && parsed.pathname !== '') || parsed.search !== '' || parsed.username !== '') fail(`${field}.url`, 'must be `http://host:port` without path, query or credentials');
    upstreams.set(name, Object.freeze({ name, url: parsed.origin, timeoutMs: int(u, 'timeoutMs', `${field}.timeoutMs`, 30_000, 1, 600_000), maxSockets: int(u, 'maxSockets', `${field}.maxSockets`, 256, 1, 65_536) }));
  }
  if (upstreams.size === 0) fail('upstreams', 'must name at least one upstream');
  if (!Array.isArray(o.routes) || o.routes.length === 0) fail('routes', 'must be a non-empty array');
  const routes = o.routes.map((rt, i) => routeOf(rt, i, upstreams, tls !== undefined));
  const names = new Set<string>();
  routes.forEach((rt, i) => {
    if (names.has(rt.name)) fail(`routes[${i}].name`, `\`${rt.name}\` is used by an earlier route`);
    names.add(rt.name);
  });
  return deepFreeze({
    listen,
    ...(metricsListen === undefined ? {} : { metricsListen }),
    trustDomain,
    audience,
    ...(publicUrl === undefined ? {} : { publicUrl: publicUrl.replace(/\/+$/, '') }),
    ...(workloadApiSocket === undefined ? {} : { workloadApiSocket }),
    ...(tls === undefined ? {} : { tls }),
    pdp,
    tokenCacheMaxEntries: int(tc, 'maxEntries', 'tokenCache.maxEntries', 10_000, 1, 1_000_000),
    revocationMaxStalenessMs: int(r, 'maxStalenessMs', 'revocations.maxStalenessMs', 15_000, 100, 3_600_000),
    dpopIatWindowSeconds: int(d, 'iatWindowSeconds', 'dpop.iatWindowSeconds', 60, 1, 600),
    upstreams,
    routes,
  });
}
