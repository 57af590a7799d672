/**
 * `writ proxy`: an identity-aware reverse proxy configured per route.
 *
 * Each request goes through one visible pipeline; anything but an explicit
 * allow is a deny that never reaches an upstream:
 *
 * 1. route      method + path template → route (none: 404 `ERR_ENFORCE_ROUTE_NOT_FOUND`)
 * 2. authn      mTLS X.509-SVID, JWT-SVID or Writ access token, as the route accepts,
 *               with DPoP / certificate binding checked (401 + RFC 6750 / 9449 challenge)
 * 3. revoked?   the revocation stream's view: revoked → 401, stale → 403 (fail closed)
 * 4. decide     AuthZEN request → decision cache → PDP (deny / PDP failure → 403)
 * 5. inject     the upstream's own credential, if the route says so (failure → 503)
 * 6. forward    inbound credentials stripped, identity headers added, keep-alive upstream
 *
 * Allows are audited at the route's sample rate, denies always; audit writes
 * never hold a request. Metrics are kept per route.
 */
import { randomBytes } from 'node:crypto';
import { Agent, createServer as createHttpServer, request } from 'node:http';
import type { IncomingMessage, OutgoingHttpHeaders, Server, ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Socket } from 'node:net';
import { TLSSocket } from 'node:tls';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { AuditSink, Clock } from '../kernel/index.ts';
import type { RevocationEvent } from '../signals/index.ts';
import { normalizePath, revocationDenial } from './authorizer.ts';
import type { RevocationView } from './authorizer.ts';
import { challengeText } from './challenge.ts';
import type { EnforcementErrorCode } from './errors.ts';
import type { PdpClient, PdpDecision, AccessRequest } from './pdp-client.ts';
import { DPOP_CHALLENGE_ALGS } from './proxy-auth.ts';
import type { AuthFailure, ProxyAuthenticator, ProxyCaller } from './proxy-auth.ts';
import { compilePathTemplate, matchPath } from './proxy-config.ts';
import type { PathTemplate, ProxyConfig, RouteConfig, UpstreamConfig } from './proxy-config.ts';
import type { CredentialInjector } from './proxy-inject.ts';

/** RFC 9110 §7.6.1 hop-by-hop fields, never forwarded. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'proxy-authenticate', 'proxy-authorization']);
/** Inbound credentials and identity headers a caller could forge: never forwarded. */
const STRIP_INBOUND = new Set(['authorization', 'dpop', 'x-writ-spiffe-id', 'x-writ-decision-id', 'x-writ-client-cert', 'x-forwarded-for', 'x-forwarded-host', 'x-forwarded-proto']);

/** The TLS material of the listener: the serving SVID and the trust bundle's CAs. */
export interface ProxyTlsMaterial {
  readonly key: string;
  /** PEM, leaf first. */
  readonly cert: string;
  /** PEM CA certificates of the trust bundle; never empty-means-system: an empty list trusts nothing. */
  readonly ca: readonly string[];
}

/** Options of {@link IdentityProxy}. */
export interface IdentityProxyOptions {
  readonly config: ProxyConfig;
  readonly authenticator: ProxyAuthenticator;
  readonly pdp: PdpClient;
  readonly clock: Clock;
  /** Absent only where no revocation can happen (benchmarks); the CLI always sets it. */
  readonly revocations?: RevocationView;
  readonly injector?: CredentialInjector;
  readonly audit?: AuditSink;
  /** Required when `config.tls` is set. */
  readonly tls?: ProxyTlsMaterial;
  /** One line per deny and per audited allow (never a credential). */
  readonly log?: (line: Readonly<Record<string, unknown>>) => void;
  /** Sampling source (default Math.random). */
  readonly random?: () => number;
}

interface CompiledRoute {
  readonly cfg: RouteConfig;
  readonly template: PathTemplate;
  readonly methods: ReadonlySet<string> | undefined;
  readonly upstream: CompiledUpstream;
  readonly resourceParts: readonly string[];
  readonly duration: { observe(v: number): void };
  readonly allowed: { inc(): void };
}

interface CompiledUpstream {
  readonly cfg: UpstreamConfig;
  readonly host: string;
  readonly port: number;
  readonly agent: Agent;
}

interface Denial {
  readonly status: 401 | 403 | 404 | 503;
  readonly code: EnforcementErrorCode;
  readonly reason: string;
  readonly challenge?: string | string[];
}

interface CacheEntry {
  /** The PDP's answer, marked `cached`. */
  readonly decision: PdpDecision;
  readonly subject: string;
  readonly expiresAt: number;
}

// Decision ids come from a pooled random buffer: one syscall per 256 requests, not one per request.
let idPool = Buffer.alloc(0);
let idAt = 0;
function newDecisionId(): string {
  if (idAt + 16 > idPool.length) {
    idPool = randomBytes(4096);
    idAt = 0;
  }
  idAt += 16;
  return idPool.toString('hex', idAt - 16, idAt);
}

/** A path the URL parser would not change: no dot segment, no `//`, no escapes. */
const PLAIN_PATH = /^\/[A-Za-z0-9\-_~/.]*$/;

function normalized(url: string, rawPath: string): string | undefined {
  if (PLAIN_PATH.test(rawPath) && !rawPath.includes('/.') && !rawPath.includes('//')) return rawPath;
  return normalizePath(url);
}

const KEBAB = (code: string) => code.replace(/^ERR_ENFORCE_/, '').toLowerCase().replace(/_/g, '-');

function hostOnly(host: string | undefined): string {
  if (host === undefined || host === '') return '';
  const h = host.trim().toLowerCase();
  if (h.startsWith('[')) return h.slice(0, h.indexOf(']') + 1);
  const i = h.lastIndexOf(':');
  return i === -1 ? h : h.slice(0, i);
}

/** Split a resource template into literal and `{name}` parts once. */
function resourceParts(t: string): string[] {
  return t.split(/(\{[A-Za-z_][A-Za-z0-9_]*\})/).filter((p) => p !== '');
}

/**
 * The proxy: an HTTP or HTTPS server plus its caches, metrics and
 * revocation handling.
 *
 * @example
 * const proxy = new IdentityProxy({ config, authenticator, pdp, clock: systemClock, revocations, audit });
 * await proxy.listen(8443, '127.0.0.1');
 */
export class IdentityProxy {
  readonly server: Server;
  readonly metrics = new Registry();
  readonly #o: IdentityProxyOptions;
  readonly #routes: CompiledRoute[];
  readonly #upstreams: CompiledUpstream[];
  readonly #decisions = new Map<string, CacheEntry>();
  readonly #sockets = new Map<Socket, Set<string>>();
  readonly #random: () => number;
  readonly #requests: Counter<'route' | 'outcome' | 'code'>;
  readonly #closedConnections: Counter<'reason'>;
  readonly #auditFailures: Counter;
  #decisionHits = 0;
  #decisionMisses = 0;

  constructor(options: IdentityProxyOptions) {
    const cfg = options.config;
    if (cfg.tls !== undefined && options.tls === undefined) throw new TypeError('config.tls is set: pass the TLS material');
    this.#o = options;
    this.#random = options.random ?? Math.random;
    const reg = this.metrics;
    this.#requests = new Counter({ name: 'writ_proxy_requests_total', help: 'requests by route, outcome (allow, deny) and reason code', labelNames: ['route', 'outcome', 'code'] as const, registers: [reg] });
    const duration = new Histogram({ name: 'writ_proxy_request_duration_seconds', help: 'time from request to response end, by route', labelNames: ['route'] as const, buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5], registers: [reg] });
    this.#closedConnections = new Counter({ name: 'writ_proxy_connections_closed_total', help: 'client connections the proxy closed, by reason', labelNames: ['reason'] as const, registers: [reg] });
    this.#auditFailures = new Counter({ name: 'writ_proxy_audit_failures_total', help: 'audit events that could not be written', registers: [reg] });
    const auth = options.authenticator;
    const self = this;
    new Gauge({ name: 'writ_proxy_cache_lookups', help: 'verified-token and decision cache lookups since start, by cache and result', labelNames: ['cache', 'result'] as const, registers: [reg], collect() {
      this.set({ cache: 'token', result: 'hit' }, auth.hits);
      this.set({ cache: 'token', result: 'miss' }, auth.misses);
      this.set({ cache: 'decision', result: 'hit' }, self.#decisionHits);
      this.set({ cache: 'decision', result: 'miss' }, self.#decisionMisses);
    } });
    new Gauge({ name: 'writ_proxy_revocation_staleness_seconds', help: 'seconds since the revocation stream was last heard from (+Inf before the first heartbeat)', registers: [reg], collect() {
      this.set(options.revocations === undefined ? 0 : options.revocations.staleness() / 1000);
    } });

    this.#upstreams = [...cfg.upstreams.values()].map((u) => {
      const url = new URL(u.url);
      return { cfg: u, host: url.hostname, port: url.port === '' ? 80 : Number(url.port), agent: new Agent({ keepAlive: true, maxSockets: u.maxSockets, maxFreeSockets: Math.min(u.maxSockets, 256), scheduling: 'lifo' }) };
    });
    this.#routes = cfg.routes.map((r) => {
      const upstream = this.#upstreams.find((u) => u.cfg.name === r.upstream);
      if (upstream === undefined) throw new TypeError(`route ${r.name} names an unknown upstream`);
      return {
        cfg: r,
        template: compilePathTemplate(r.path, r.name),
        methods: r.methods === '*' ? undefined : new Set(r.methods),
        upstream,
        resourceParts: resourceParts(r.resource),
        duration: duration.labels(r.name),
        allowed: this.#requests.labels(r.name, 'allow', ''),
      };
    });

    const handler = (req: IncomingMessage, res: ServerResponse) => this.#handle(req, res);
    if (cfg.tls !== undefined && options.tls !== undefined) {
      const t = options.tls;
      // rejectUnauthorized false: a bad certificate still gets an HTTP answer with its reason; nothing is allowed without the checks below.
      this.server = createHttpsServer({ key: t.key, cert: t.cert, ca: [...t.ca], requestCert: true, rejectUnauthorized: false }, handler);
    } else {
      this.server = createHttpServer(handler);
    }
    this.server.keepAliveTimeout = 30_000;
    this.server.on('close', () => {
      for (const u of this.#upstreams) u.agent.destroy();
    });
  }

  /** Replace the serving SVID and/or the trusted CAs (rotation without restart). */
  updateTls(material: ProxyTlsMaterial): void {
    if (!('setSecureContext' in this.server)) throw new TypeError('the proxy listens without TLS');
    (this.server as unknown as { setSecureContext(o: object): void }).setSecureContext({ key: material.key, cert: material.cert, ca: [...material.ca] });
  }

  /** Listen; resolves with the bound port. */
  listen(port: number, host: string): Promise<number> {
    return new Promise((ok, fail) => {
      this.server.once('error', fail);
      this.server.listen(port, host, () => {
        this.server.off('error', fail);
        const a = this.server.address();
        ok(typeof a === 'object' && a !== null ? a.port : port);
      });
    });
  }

  /** Stop listening and close every connection. */
  close(): Promise<void> {
    return new Promise((ok) => {
      this.server.close(() => ok());
      this.server.closeAllConnections();
    });
  }

  /** Decisions held now. */
  get decisionCacheSize(): number {
    return this.#decisions.size;
  }

  /** A policy change: every cached decision goes. */
  onPolicyChanged(): void {
    this.#decisions.clear();
  }

  /**
   * A revocation from the stream: drop what the caches hold about it and
   * close the client connections that carried the revoked identity.
   */
  onRevocation(e: RevocationEvent): void {
    if (e.kind === 'policy-changed') {
      this.onPolicyChanged();
      return;
    }
    const subject = e.kind === 'subject-revoked' ? e.subject : undefined;
    const tokenId = e.kind === 'token-revoked' ? e.tokenId : e.kind === 'lease-revoked' ? e.leaseId : undefined;
    if (subject === undefined && tokenId === undefined) {
      // A signal may change any decision (posture, risk): start over.
      if (e.kind === 'signal') this.#decisions.clear();
      return;
    }
    this.#o.authenticator.invalidate({ ...(subject === undefined ? {} : { subject }), ...(tokenId === undefined ? {} : { tokenId }) });
    if (subject !== undefined) for (const [k, d] of this.#decisions) if (d.subject === subject) this.#decisions.delete(k);
    for (const [socket, ids] of this.#sockets) {
      if ((subject !== undefined && ids.has(`s:${subject}`)) || (tokenId !== undefined && ids.has(`t:${tokenId}`))) {
        socket.destroy();
        this.#sockets.delete(socket);
        this.#closedConnections.labels('revoked').inc();
      }
    }
  }

  #route(method: string, path: string): { route: CompiledRoute; params: Record<string, string> } | undefined {
    for (const route of this.#routes) {
      if (route.methods !== undefined && !route.methods.has(method)) continue;
      const params = matchPath(route.template, path);
      if (params !== undefined) return { route, params };
    }
    return undefined;
  }

  #track(socket: Socket, caller: ProxyCaller): void {
    let ids = this.#sockets.get(socket);
    if (ids === undefined) {
      ids = new Set();
      this.#sockets.set(socket, ids);
      socket.once('close', () => this.#sockets.delete(socket));
    }
    if (ids.size < 64) {
      ids.add(`s:${caller.spiffeId}`);
      if (caller.tokenId !== undefined) ids.add(`t:${caller.tokenId}`);
    }
  }

  // INVARIANT: `key` holds every input of the AuthZEN request `access()` builds, so a hit answers the same question.
  async #decide(access: () => AccessRequest, key: string, subject: string, correlationId: string): Promise<PdpDecision> {
    const ttl = this.#o.config.pdp.cacheTtlMs;
    if (ttl > 0) {
      const hit = this.#decisions.get(key);
      if (hit !== undefined) {
        if (hit.expiresAt > this.#o.clock.nowMs()) {
          this.#decisionHits++;
          return hit.decision;
        }
        this.#decisions.delete(key);
      }
    }
    this.#decisionMisses++;
    const d = await this.#o.pdp.evaluate(access(), { correlationId });
    // Only answers the PDP gave are cached; a failure to ask never is.
    if (ttl > 0 && (d.allow || d.code === 'ERR_ENFORCE_DENIED')) {
      if (this.#decisions.size >= this.#o.config.pdp.cacheMaxEntries) {
        const oldest = this.#decisions.keys().next();
        if (oldest.done !== true) this.#decisions.delete(oldest.value);
      }
      this.#decisions.set(key, { decision: { ...d, cached: true }, subject, expiresAt: this.#o.clock.nowMs() + ttl });
    }
    return d;
  }

  #handle(req: IncomingMessage, res: ServerResponse): void {
    const started = performance.now();
    this.#pipeline(req, res, started).catch(() => {
      // Never reached by design; if it is, the answer is still a deny.
      if (!res.headersSent) this.#deny(req, res, undefined, undefined, { status: 403, code: 'ERR_ENFORCE_REQUEST_INVALID', reason: 'the request could not be processed' }, newDecisionId(), started);
      else res.destroy();
    });
  }

  async #pipeline(req: IncomingMessage, res: ServerResponse, started: number): Promise<void> {
    const cfg = this.#o.config;
    const correlationId = newDecisionId();
    const method = req.method ?? '';
    const url = req.url ?? '';
    const q = url.indexOf('?');
    const rawPath = q === -1 ? url : url.slice(0, q);
    const path = normalized(url, rawPath);
    if (path === undefined || !/^[A-Z]{1,16}$/.test(method)) {
      this.#deny(req, res, undefined, undefined, { status: 403, code: 'ERR_ENFORCE_REQUEST_INVALID', reason: 'the request method or path cannot be mapped to a route' }, correlationId, started);
      return;
    }
    // 1. route
    const m = this.#route(method, path);
    if (m === undefined) {
      this.#deny(req, res, undefined, undefined, { status: 404, code: 'ERR_ENFORCE_ROUTE_NOT_FOUND', reason: `no route for \`${method} ${path.slice(0, 128)}\`` }, correlationId, started);
      return;
    }
    const { route, params } = m;
    const socket = req.socket;
    const tls = socket instanceof TLSSocket ? socket : undefined;
    const hostHeader = req.headers.host;
    const host = hostOnly(hostHeader);

    // 2. authn
    if (cfg.tls?.clientCert === 'require' && tls !== undefined && tls.getPeerX509Certificate() === undefined) {
      this.#deny(req, res, route, undefined, { status: 401, code: 'ERR_ENFORCE_UNAUTHENTICATED', reason: 'this listener requires an X.509-SVID (mTLS)', challenge: 'Bearer realm="writ"' }, correlationId, started);
      return;
    }
    const dpopHeader = req.headers.dpop;
    const htu = `${cfg.publicUrl ?? `${tls === undefined ? 'http' : 'https'}://${hostHeader ?? ''}`}${rawPath}`;
    const authn = await this.#o.authenticator.authenticate(route.cfg.auth, {
      method,
      htu,
      ...(req.headers.authorization === undefined ? {} : { authorization: req.headers.authorization }),
      ...(dpopHeader === undefined ? {} : { dpop: typeof dpopHeader === 'string' ? dpopHeader.split(', ') : dpopHeader }),
      ...(tls === undefined ? {} : { tls }),
    });
    if ('code' in authn) {
      this.#deny(req, res, route, undefined, this.#unauthenticated(route, authn), correlationId, started);
      return;
    }
    const caller = authn;

    // 3. revoked?
    const rv = this.#o.revocations;
    if (rv !== undefined) {
      const d = revocationDenial(rv, { subject: caller.spiffeId, ...(caller.tokenId === undefined ? {} : { tokenId: caller.tokenId, leaseId: caller.tokenId }) }, cfg.revocationMaxStalenessMs);
      if (d !== undefined) {
        this.#deny(req, res, route, caller, d.status === 403 ? d : { ...d, challenge: `${caller.method === 'access-token' && caller.senderConstrained ? 'DPoP' : 'Bearer'} realm="writ", error="invalid_token", error_description="revoked"` }, correlationId, started);
        return;
      }
    }
    this.#track(socket, caller);

    // 4. decide
    const action = route.cfg.action ?? `http:${method}`;
    let resource = '';
    for (const p of route.resourceParts) {
      if (p.charCodeAt(0) !== 123 /* { */) resource += p;
      else if (p === '{host}') resource += host;
      else if (p === '{path}') resource += path;
      else resource += params[p.slice(1, -1)] ?? '';
    }
    // The token's scope and task are part of the question, so they are part of the cache key.
    const token = caller.scope === undefined ? undefined : { scope: [...caller.scope], ...(caller.taskId === undefined ? {} : { taskId: caller.taskId }) };
    const key = `${caller.spiffeId}\n${caller.method}\n${caller.senderConstrained ? 1 : 0}\n${action}\n${resource}\n${method}\n${path}\n${host}\n${token === undefined ? '' : `${token.scope.join(' ')}\n${token.taskId ?? ''}`}`;
    const access = (): AccessRequest => ({
      subject: { type: 'workload', id: caller.spiffeId },
      action: { name: action },
      resource: { type: 'resource', id: resource },
      context: {
        http: { method, path, ...(host === '' ? {} : { host }) },
        authn: { method: caller.method, senderConstrained: caller.senderConstrained },
        ...(token === undefined ? {} : { token }),
      },
    });
    const d = await this.#decide(access, key, caller.spiffeId, correlationId);
    if (!d.allow) {
      const code = d.code ?? 'ERR_ENFORCE_DENIED';
      // RFC 6750 §3.1: a token that lacks the privileges is `insufficient_scope` on a 403.
      const challenge = code === 'ERR_ENFORCE_DENIED' && caller.method !== 'x509-svid' ? `${caller.method === 'access-token' && caller.senderConstrained && req.headers.dpop !== undefined ? 'DPoP' : 'Bearer'} realm="writ", error="insufficient_scope"` : undefined;
      this.#deny(req, res, route, caller, { status: 403, code, reason: d.reason, ...(challenge === undefined ? {} : { challenge }) }, d.decisionId, started);
      return;
    }

    // 5. inject
    let injected: { header: string; value: string } | undefined;
    if (route.cfg.inject !== undefined) {
      const inj = this.#o.injector;
      try {
        if (inj === undefined) throw new Error('no injector');
        injected = await inj.credentialFor(route.cfg.name, route.cfg.inject);
      } catch (e) {
        this.#deny(req, res, route, caller, { status: 503, code: 'ERR_ENFORCE_INJECTION_FAILED', reason: e instanceof Error && 'code' in e && e.code === 'ERR_ENFORCE_INJECTION_FAILED' ? e.message : 'the upstream credential could not be obtained' }, d.decisionId, started);
        return;
      }
    }

    // 6. forward
    route.allowed.inc();
    if (route.cfg.auditAllowSampleRate > 0 && (route.cfg.auditAllowSampleRate >= 1 || this.#random() < route.cfg.auditAllowSampleRate)) {
      this.#audit(true, req, route, caller, { decisionId: d.decisionId, path, host, status: 0, cached: d.cached, injected: injected !== undefined });
    }
    // The upstream gets the path that was decided (dot segments resolved), never a spelling it might resolve differently.
    this.#forward(req, res, route, caller, d.decisionId, injected, started, q === -1 ? path : `${path}${url.slice(q)}`);
  }

  #unauthenticated(route: CompiledRoute, f: AuthFailure): Denial {
    const challenges: string[] = [];
    if (f.code === 'ERR_ENFORCE_UNAUTHENTICATED') {
      // RFC 6750 §3: no error attribute when no credential was sent.
      challenges.push('Bearer realm="writ"');
      if (route.cfg.auth.includes('access-token')) challenges.push(`DPoP realm="writ", algs="${DPOP_CHALLENGE_ALGS}"`);
    } else {
      const err = f.error ?? 'invalid_token';
      const base = `${f.scheme} realm="writ", error="${err}", error_description="${challengeText(f.reason)}"`;
      challenges.push(f.scheme === 'DPoP' ? `${base}, algs="${DPOP_CHALLENGE_ALGS}"` : base);
    }
    return { status: 401, code: f.code, reason: f.reason, challenge: challenges.length === 1 ? (challenges[0] ?? '') : challenges };
  }

  #audit(allow: boolean, req: IncomingMessage, route: CompiledRoute | undefined, caller: ProxyCaller | undefined, x: { decisionId: string; path: string; host: string; status: number; cached: boolean; injected: boolean; code?: string; reason?: string }): void {
    const line = {
      allow,
      route: route?.cfg.name ?? null,
      method: req.method ?? '',
      path: x.path,
      ...(caller === undefined ? {} : { spiffeId: caller.spiffeId, authn: caller.method }),
      ...(x.code === undefined ? {} : { code: x.code }),
      decisionId: x.decisionId,
      ...(x.status === 0 ? {} : { status: x.status }),
    };
    this.#o.log?.(line);
    const sink = this.#o.audit;
    if (sink === undefined) return;
    sink.append({
      action: allow ? 'request.allowed' : 'request.denied',
      actor: caller === undefined ? { type: 'anonymous', id: 'unauthenticated', ...(req.socket.remoteAddress === undefined ? {} : { ip: req.socket.remoteAddress }) } : { type: 'workload', id: caller.spiffeId, ...(req.socket.remoteAddress === undefined ? {} : { ip: req.socket.remoteAddress }) },
      target: { type: 'route', id: route?.cfg.name ?? '-' },
      outcome: allow ? 'success' : 'denied',
      ...(x.code === undefined ? {} : { reasons: [KEBAB(x.code)] }),
      correlationId: x.decisionId,
      details: {
        enforcementPoint: 'writ-proxy',
        method: req.method ?? '',
        path: x.path,
        host: x.host,
        ...(caller === undefined ? {} : { authn: caller.method, senderConstrained: caller.senderConstrained }),
        ...(x.code === undefined ? {} : { code: x.code, reason: x.reason }),
        ...(x.status === 0 ? {} : { status: x.status }),
        decisionCached: x.cached,
        ...(route === undefined ? {} : { upstream: route.cfg.upstream, credentialInjected: x.injected }),
      },
    }).catch(() => this.#auditFailures.inc());
  }

  #deny(req: IncomingMessage, res: ServerResponse, route: CompiledRoute | undefined, caller: ProxyCaller | undefined, d: Denial, decisionId: string, started: number): void {
    const routeName = route?.cfg.name ?? '-';
    this.#requests.labels(routeName, 'deny', d.code).inc();
    const url = req.url ?? '';
    const q = url.indexOf('?');
    this.#audit(false, req, route, caller, { decisionId, path: q === -1 ? url.slice(0, 512) : url.slice(0, Math.min(q, 512)), host: hostOnly(req.headers.host), status: d.status, cached: false, injected: false, code: d.code, reason: d.reason });
    req.resume();
    const body = JSON.stringify({ code: d.code, message: d.reason, decisionId });
    const headers: OutgoingHttpHeaders = { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store', 'x-writ-decision-id': decisionId };
    if (d.challenge !== undefined) headers['www-authenticate'] = d.challenge;
    res.writeHead(d.status, headers);
    res.end(body);
    route?.duration.observe((performance.now() - started) / 1000);
  }

  #forward(req: IncomingMessage, res: ServerResponse, route: CompiledRoute, caller: ProxyCaller, decisionId: string, injected: { header: string; value: string } | undefined, started: number, target: string): void {
    const up = route.upstream;
    const out: OutgoingHttpHeaders = {};
    const raw = req.headers;
    const listed = raw.connection === undefined ? undefined : new Set(raw.connection.split(',').map((s) => s.trim().toLowerCase()));
    const strip = route.cfg.stripCookies;
    for (const k in raw) {
      const v = raw[k];
      if (v === undefined || HOP_BY_HOP.has(k) || STRIP_INBOUND.has(k) || listed?.has(k) === true) continue;
      if (k === 'cookie' && strip.length > 0 && typeof v === 'string') {
        const kept = v.split(';').map((c) => c.trim()).filter((c) => c !== '' && !strip.includes(c.slice(0, Math.max(0, c.indexOf('=')))));
        if (kept.length > 0) out.cookie = kept.join('; ');
        continue;
      }
      out[k] = v;
    }
    out['x-writ-spiffe-id'] = caller.spiffeId;
    out['x-writ-decision-id'] = decisionId;
    const prior = raw['x-forwarded-for'];
    const ip = req.socket.remoteAddress ?? '';
    out['x-forwarded-for'] = typeof prior === 'string' && prior !== '' ? `${prior}, ${ip}` : ip;
    out['x-forwarded-proto'] = req.socket instanceof TLSSocket ? 'https' : 'http';
    if (raw.host !== undefined) out['x-forwarded-host'] = raw.host;
    if (injected !== undefined) out[injected.header] = injected.value;
    const inj = this.#o.injector;
    const upReq = request({ host: up.host, port: up.port, method: req.method, path: target, headers: out, agent: up.agent, timeout: up.cfg.timeoutMs }, (upRes) => {
      const back: OutgoingHttpHeaders = {};
      for (const k in upRes.headers) {
        const v = upRes.headers[k];
        if (v === undefined || HOP_BY_HOP.has(k)) continue;
        // The client never sees an injected credential, even if the upstream echoes it.
        if (injected !== undefined && inj !== undefined && inj.leaks(Array.isArray(v) ? v.join('\n') : v)) continue;
        back[k] = v;
      }
      back['x-writ-decision-id'] = decisionId;
      res.writeHead(upRes.statusCode ?? 502, back);
      upRes.pipe(res);
    });
    upReq.on('timeout', () => upReq.destroy(new Error('upstream timeout')));
    upReq.on('error', () => {
      if (!res.headersSent) {
        this.#requests.labels(route.cfg.name, 'error', 'ERR_ENFORCE_UPSTREAM').inc();
        res.writeHead(502, { 'content-type': 'application/json', 'x-writ-decision-id': decisionId });
        res.end(JSON.stringify({ code: 'ERR_ENFORCE_UPSTREAM', message: 'upstream unavailable', decisionId }));
      } else res.destroy();
    });
    res.once('finish', () => route.duration.observe((performance.now() - started) / 1000));
    req.pipe(upReq);
  }
}
