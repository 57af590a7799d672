/**
 * The enforcement commands:
 * - `writ ext-authz`: the external authorizer for Envoy (gRPC
 *   `envoy.service.auth.v3.Authorization/Check`) and for nginx `auth_request` /
 *   Envoy HTTP mode, deciding each request through the server's AuthZEN PDP with
 *   a PEP credential (or, with `--pdp-mode local`, in process with the server's
 *   synced policy bundle) and authenticating callers against the server's bundle;
 * - `writ proxy`: the identity-aware reverse proxy, configured per route by a
 *   JSON file (docs/enforcement.md), with its serving SVID from the Workload
 *   API or files, the bundle and revocations from the server.
 */
import * as grpc from '@grpc/grpc-js';
import { existsSync, readFileSync, unwatchFile, watchFile } from 'node:fs';
import { appendFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import { Registry } from 'prom-client';
import { certificatesToPem } from '../identity/index.ts';
import type { TrustBundle } from '../identity/index.ts';
import { GENESIS_HASH, chainHash, toEventBody } from '../audit/index.ts';
import { canonicalJson } from '../kernel/index.ts';
import type { AuditEventInput, AuditRecord, AuditSink } from '../kernel/index.ts';
import { RevocationStreamClient } from '../signals/index.ts';
import type { RevocationEvent } from '../signals/index.ts';
import {
  AccessTokenVerifier,
  CachingPdp,
  CallBudgets,
  CredentialInjector,
  HttpAuthorizer,
  IdentityProxy,
  McpGateway,
  ProxyAuthenticator,
  RemotePdp,
  ServerBundleSource,
  SyncedLocalPdp,
  TokenExchanger,
  WorkloadApiClient,
  WritAuthorizationServer,
  X509SvidWatcher,
  enforcementErrors,
  extAuthzGrpcServer,
  extAuthzHttpServer,
  parseProxyConfig,
} from '../enforcement/index.ts';
import type { BudgetLimits, PdpClient, ProxyConfig, ProxyTlsMaterial } from '../enforcement/index.ts';
import { Secret, systemClock } from '../kernel/index.ts';
import { CliError } from './client.ts';
import { CLIENT_HELP, client } from './command.ts';
import type { Command, Io, Values } from './command.ts';

function hostPort(v: string, flag: string): { host: string; port: number } {
  const i = v.lastIndexOf(':');
  const host = v.slice(0, i).replace(/^\[|\]$/g, '');
  const port = Number(v.slice(i + 1));
  if (i <= 0 || !Number.isInteger(port) || port < 0 || port > 65535) throw new CliError(`${flag} must be HOST:PORT, not \`${v}\``, 'ERR_CLI_USAGE', 2);
  return { host, port };
}

/** `--pdp-mode` of ext-authz and mcp-gateway: `remote` (default) or `local`. */
function pdpMode(v: Values): 'remote' | 'local' {
  const m = v['pdp-mode'];
  if (m === undefined || m === 'remote') return 'remote';
  if (m === 'local') return 'local';
  throw new CliError(`--pdp-mode must be \`remote\` or \`local\`, not \`${String(m).slice(0, 64)}\``, 'ERR_CLI_USAGE', 2);
}

/**
 * Local PDP mode of an enforcement point, as the proxy's: the server's policy
 * bundle synced and decided in process, local decisions into `audit`.
 */
function syncedLocalPdp(server: string, token: string, audit: AuditSink, requestedBy: string, decisionTimeoutMs: number, io: Io): SyncedLocalPdp {
  return new SyncedLocalPdp({ url: server, credential: new Secret(token), clock: systemClock, audit, requestedBy, decisionTimeoutMs, log: (line) => io.err(JSON.stringify(line)) });
}

/** The startup line's tail: where decisions come from. */
function decidingFrom(server: string, local: SyncedLocalPdp | undefined): string {
  return local === undefined ? `deciding through ${server}/access/v1/evaluation` : `deciding locally with the policy bundle of ${server}/v1/policy/bundle`;
}

/** Why the revocation stream is not followed, for the one stderr line of an outage (never the credential). */
function revocationOutage(e: unknown): string {
  const status = (e as { status?: unknown } | undefined)?.status;
  if (status === 403) return 'the server refuses the PEP credential on the revocation stream (403): it needs the `pep` role (`writ principal create --role pep`); every request is denied as ERR_ENFORCE_REVOCATION_STALE until it has it; retrying';
  if (status === 401) return 'the server refuses the PEP credential on the revocation stream (401): it is unknown, expired or revoked; every request is denied as ERR_ENFORCE_REVOCATION_STALE; retrying';
  return `revocation stream unavailable, retrying: ${e instanceof Error ? e.message.slice(0, 200) : 'unknown'}`;
}

/**
 * Follow the server's revocation stream as an enforcement point (not started):
 * one stderr line per outage, not per retry; past the staleness bound every
 * request is denied anyway. `firstContact` waits (at most `ms`) for the first
 * heartbeat or the first failure, so a point starts deciding on a fresh view.
 */
function followRevocations(server: string, token: string, stalenessMs: number, onEvent: (e: RevocationEvent) => void, io: Io): { revocations: RevocationStreamClient; firstContact(ms: number): Promise<void> } {
  let loggedAt = -1;
  let failures = 0;
  const revocations: RevocationStreamClient = new RevocationStreamClient({
    url: server,
    token,
    clock: systemClock,
    stalenessMs,
    onEvent,
    onError: (e) => {
      failures += 1;
      if (revocations.connects === loggedAt) return;
      loggedAt = revocations.connects;
      io.err(JSON.stringify({ msg: 'revocations', error: revocationOutage(e) }));
    },
  });
  const firstContact = async (ms: number): Promise<void> => {
    const end = Date.now() + ms;
    while (revocations.isStale() && failures === 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
  };
  return { revocations, firstContact };
}

const LOCAL_PDP_HELP = '`remote` (default: ask the server\'s AuthZEN PDP per request) or `local` (decide here with the server\'s policy bundle, synced; no live posture/risk context)';

function positiveNumber(v: Values, flag: string, dflt: number, allowZero = false): number {
  const raw = v[flag];
  if (raw === undefined) return dflt;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0 || (!allowZero && n === 0)) throw new CliError(`--${flag} must be a ${allowZero ? 'non-negative' : 'positive'} number`, 'ERR_CLI_USAGE', 2);
  return n;
}

const extAuthz: Command = {
  name: 'ext-authz',
  summary: 'run the external authorizer for Envoy (gRPC Check) and nginx auth_request (HTTP mode)',
  usage: 'writ ext-authz --server URL --token-file F [--grpc HOST:PORT] [--http HOST:PORT] [--audience AUD] [--trust-domain TD] [--pdp-mode remote|local] [--revocation-staleness-ms MS] [--no-revocations]',
  options: {
    server: { type: 'string' },
    'token-file': { type: 'string' },
    grpc: { type: 'string' },
    http: { type: 'string' },
    audience: { type: 'string' },
    'trust-domain': { type: 'string' },
    'cache-ttl-ms': { type: 'string' },
    'timeout-ms': { type: 'string' },
    'context-header': { type: 'string', multiple: true },
    'path-prefix': { type: 'string' },
    'trust-client-cert-header': { type: 'boolean' },
    'pdp-mode': { type: 'string' },
    'no-revocations': { type: 'boolean' },
    'revocation-staleness-ms': { type: 'string' },
  },
  help: {
    '--server URL': CLIENT_HELP['--server URL'],
    '--token-file FILE': 'PEP credential: an admin principal with role `pep`, for the PDP and the revocation stream (env WRIT_TOKEN_FILE or WRIT_TOKEN)',
    '--grpc HOST:PORT': 'serve envoy.service.auth.v3.Authorization/Check here (plaintext gRPC; keep it on loopback or a private network)',
    '--http HOST:PORT': 'serve the HTTP-mode authorizer here (Envoy HTTP mode, nginx auth_request)',
    '--audience AUD': 'the audience a caller\'s JWT-SVID must name (default `writ-ext-authz`)',
    '--trust-domain TD': 'the trust domain of the server\'s bundle (default writ.local)',
    '--cache-ttl-ms MS': 'reuse a decision this long for the identical request (default 1000; 0 disables)',
    '--timeout-ms MS': 'deadline of one PDP call; past it the request is denied (default 2000)',
    '--context-header NAME': 'a request header to pass to the PDP in context.headers (repeatable; never authorization or cookie)',
    '--path-prefix P': 'Envoy HTTP mode `path_prefix` to strip',
    '--trust-client-cert-header': 'in HTTP mode read the caller certificate from X-Writ-Client-Cert (URL-encoded PEM), set by the TLS-terminating proxy',
    '--pdp-mode MODE': `${LOCAL_PDP_HELP}; local decisions are audit records on stderr`,
    '--revocation-staleness-ms MS': 'deny every request (403 ERR_ENFORCE_REVOCATION_STALE) once the revocation stream has been silent this long (default 30000)',
    '--no-revocations': 'UNSAFE: do not follow the server\'s revocation stream, so a revoked caller passes until its SVID expires (in local mode the stream is still read for `policy-changed`)',
  },
  async run(v, _p, io: Io) {
    const mode = pdpMode(v);
    if (v.grpc === undefined && v.http === undefined) throw new CliError('give --grpc HOST:PORT, --http HOST:PORT or both', 'ERR_CLI_USAGE', 2);
    const c = client(v, io);
    if (c.token === undefined || c.token === '') throw new CliError('no PEP credential: pass --token-file or set WRIT_TOKEN', 'ERR_CLI_TOKEN_FILE', 2);
    const token = c.token;
    const clock = systemClock;
    const timeoutMs = positiveNumber(v, 'timeout-ms', 2000);
    const ttlMs = positiveNumber(v, 'cache-ttl-ms', 1000, true);
    // Local mode: local decisions are hash-chained audit records on stderr, next to the decision lines.
    const audit = mode === 'local' ? jsonlAuditSink(undefined, io) : undefined;
    const local = audit === undefined ? undefined : syncedLocalPdp(c.server, token, audit, 'writ-ext-authz', timeoutMs, io);
    const pdp = new CachingPdp(local ?? new RemotePdp({ url: c.server, credential: new Secret(token), timeoutMs }), { clock, ttlMs });
    const enforceRevocations = v['no-revocations'] !== true;
    const stalenessMs = positiveNumber(v, 'revocation-staleness-ms', 30_000);
    const stops: (() => void)[] = [];
    // Revoked callers are refused and the decisions about them dropped (both modes); a stale stream denies everything.
    // With --no-revocations, local mode still reads it for `policy-changed`; the ETag poll covers an outage.
    const stream = enforceRevocations || local !== undefined ? followRevocations(c.server, token, stalenessMs, (e) => {
      if (enforceRevocations) authorizer.onRevocation(e);
      if (e.kind === 'policy-changed') void local?.refresh();
    }, io) : undefined;
    const bundles = new ServerBundleSource({ url: c.server, trustDomain: (v['trust-domain'] as string | undefined) ?? 'writ.local', clock });
    const headers = v['context-header'] as unknown as string[] | undefined;
    const authorizer = new HttpAuthorizer({
      pdp,
      bundles,
      clock,
      audience: (v.audience as string | undefined) ?? 'writ-ext-authz',
      ...(headers === undefined ? {} : { contextHeaders: headers }),
      ...(enforceRevocations && stream !== undefined ? { revocations: { view: stream.revocations, maxStalenessMs: stalenessMs } } : {}),
    });
    if (stream !== undefined) {
      stream.revocations.start();
      stops.push(() => stream.revocations.stop());
    }
    if (local !== undefined) {
      // A decision cached under the old set goes when the new set is installed.
      local.onSwap(() => pdp.invalidate());
      // Fail closed until a bundle compiled: the authorizer listens, and denies with ERR_ENFORCE_POLICY_UNAVAILABLE.
      const first = await local.start();
      stops.push(() => local.stop());
      io.err(JSON.stringify({ msg: 'policy', first: first.outcome, version: local.version ?? null }));
    }
    // Start on a fresh view when the server answers; a refused or unreachable stream is logged and fails closed.
    if (enforceRevocations) await stream?.firstContact(Math.min(5000, stalenessMs));
    const log = (line: object) => io.err(JSON.stringify({ msg: 'decision', ...line }));

    let grpcServer: grpc.Server | undefined;
    let httpServer: Server | undefined;
    if (v.grpc !== undefined) {
      const { host, port } = hostPort(v.grpc as string, '--grpc');
      grpcServer = extAuthzGrpcServer({ authorizer, log });
      const bound = await new Promise<number>((ok, fail) => {
        grpcServer?.bindAsync(`${host.includes(':') ? `[${host}]` : host}:${port}`, grpc.ServerCredentials.createInsecure(), (err, p) => (err === null ? ok(p) : fail(err)));
      }).catch((e: unknown) => {
        for (const s of stops) s();
        throw new CliError(`cannot listen on ${v.grpc as string}: ${(e as Error).message}`, 'ERR_CLI_LISTEN');
      });
      io.err(`writ ext-authz: grpc listening on ${host}:${bound}`);
    }
    if (v.http !== undefined) {
      const { host, port } = hostPort(v.http as string, '--http');
      const server = extAuthzHttpServer({ authorizer, log, pathPrefix: (v['path-prefix'] as string | undefined) ?? '', trustClientCertHeader: v['trust-client-cert-header'] === true });
      httpServer = server;
      await new Promise<void>((ok, fail) => {
        server.once('error', fail);
        server.listen(port, host, () => ok());
      }).catch((e: unknown) => {
        for (const s of stops) s();
        grpcServer?.forceShutdown();
        throw new CliError(`cannot listen on ${v.http as string}: ${(e as Error).message}`, 'ERR_CLI_LISTEN');
      });
      const a = server.address();
      io.err(`writ ext-authz: http listening on ${host}:${typeof a === 'object' && a !== null ? a.port : port}`);
    }
    io.err(enforceRevocations
      ? `writ ext-authz: refusing revoked callers (revocation stream of ${c.server}; every request denied when silent for ${stalenessMs} ms)`
      : 'writ ext-authz: NOT refusing revoked callers (--no-revocations): a revoked caller passes until its SVID expires');
    io.err(`writ ext-authz: ${decidingFrom(c.server, local)}`);
    await new Promise<void>((done) => {
      const stop = () => {
        for (const s of stops) s();
        grpcServer?.forceShutdown();
        const flushed = audit?.flush() ?? Promise.resolve();
        if (httpServer === undefined) void flushed.then(() => done());
        else httpServer.close(() => void flushed.then(() => done()));
        httpServer?.closeAllConnections();
      };
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
    });
    return 0;
  },
};

/**
 * A hash-chained JSON-lines audit log for an enforcement point: each line is
 * an audit record (`seq`, `prevHash`, `hash` as the server's chain), written
 * in the background so a request never waits for the disk. Appends to `file`
 * (continuing its chain) or writes to stderr.
 */
function jsonlAuditSink(file: string | undefined, io: Io): AuditSink & { flush(): Promise<void> } {
  let seq = 0;
  let prev = GENESIS_HASH;
  if (file !== undefined && existsSync(file)) {
    const lines = readFileSync(file, 'utf8').trimEnd().split('\n');
    const last = lines.at(-1);
    if (last !== undefined && last !== '') {
      try {
        const r = JSON.parse(last) as { seq?: unknown; hash?: unknown };
        if (typeof r.seq === 'number' && typeof r.hash === 'string') {
          seq = r.seq;
          prev = r.hash;
        }
      } catch {
        throw new CliError(`--audit-log ${file}: the last line is not an audit record; move the file away`, 'ERR_CLI_USAGE', 2);
      }
    }
  }
  let buf: string[] = [];
  let scheduled = false;
  let writing: Promise<void> = Promise.resolve();
  const flush = (): Promise<void> => {
    scheduled = false;
    if (buf.length === 0) return writing;
    const text = buf.join('');
    buf = [];
    if (file === undefined) io.err(text.trimEnd());
    // INVARIANT: batches are appended in order, one at a time, so the file's chain stays in sequence.
    else writing = writing.then(() => appendFile(file, text, { mode: 0o600 })).catch((e: unknown) => io.err(JSON.stringify({ msg: 'audit', error: `cannot append to ${file}: ${(e as Error).message}` })));
    return writing;
  };
  return {
    flush,
    async append(e: AuditEventInput): Promise<AuditRecord> {
      const body = toEventBody(e, new Date(systemClock.nowMs()).toISOString());
      seq += 1;
      const hash = chainHash(prev, seq, canonicalJson(body));
      const record: AuditRecord = { seq, ...body, prevHash: prev, hash } as AuditRecord;
      prev = hash;
      buf.push(`${JSON.stringify(record)}\n`);
      if (!scheduled) {
        scheduled = true;
        setTimeout(() => void flush(), 20).unref();
      }
      return record;
    },
  };
}

/** The configuration of the flag-only form: one catch-all route to `--upstream`. */
function flagConfig(v: Values): unknown {
  return {
    listen: v.listen,
    audience: (v.audience as string | undefined) ?? 'writ-proxy',
    trustDomain: (v['trust-domain'] as string | undefined) ?? 'writ.local',
    pdp: { ...(v['pdp-mode'] === undefined ? {} : { mode: v['pdp-mode'] }), cacheTtlMs: positiveNumber(v, 'cache-ttl-ms', 1000, true), timeoutMs: positiveNumber(v, 'timeout-ms', 2000) },
    upstreams: { default: { url: v.upstream } },
    routes: [{ name: 'default', path: '/{rest*}', upstream: 'default', auth: ['jwt-svid', 'access-token'] }],
  };
}

function loadProxyConfig(v: Values): ProxyConfig {
  let raw: unknown;
  if (v.config !== undefined) {
    if (v.listen !== undefined || v.upstream !== undefined) throw new CliError('give either --config or --listen/--upstream, not both', 'ERR_CLI_USAGE', 2);
    if (v['pdp-mode'] !== undefined) throw new CliError('with --config set `pdp.mode` in the file, not --pdp-mode', 'ERR_CLI_USAGE', 2);
    let text: string;
    try {
      text = readFileSync(v.config as string, 'utf8');
    } catch (e) {
      throw new CliError(`cannot read --config ${v.config as string}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, 'ERR_CLI_USAGE', 2);
    }
    try {
      raw = JSON.parse(text);
    } catch (e) {
      throw new CliError(`--config ${v.config as string} is not JSON: ${(e as Error).message}`, 'ERR_CLI_USAGE', 2);
    }
  } else {
    if (v.listen === undefined || v.upstream === undefined) throw new CliError('give --config FILE, or --listen and --upstream', 'ERR_CLI_USAGE', 2);
    raw = flagConfig(v);
  }
  try {
    return parseProxyConfig(raw);
  } catch (e) {
    if (enforcementErrors.is(e, 'ERR_ENFORCE_PROXY_CONFIG')) throw new CliError(e.message, 'ERR_ENFORCE_PROXY_CONFIG', 2);
    throw e;
  }
}

function readSecretFile(file: string, route: string): Secret {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new CliError(`route \`${route}\`: cannot read inject.secretFile ${file}: ${(e as NodeJS.ErrnoException).code ?? 'unreadable'}`, 'ERR_CLI_USAGE', 2);
  }
  const secret = text.replace(/\r?\n$/, '');
  if (secret === '' || /[\r\n]/.test(secret)) throw new CliError(`route \`${route}\`: inject.secretFile ${file} must hold one non-empty line`, 'ERR_CLI_USAGE', 2);
  return new Secret(secret);
}

function bundlePem(b: TrustBundle | undefined): string[] {
  return b === undefined ? [] : b.x509Authorities.map((der) => certificatesToPem([der]));
}

const proxy: Command = {
  name: 'proxy',
  summary: 'run the identity-aware reverse proxy: per-route authentication (mTLS, JWT-SVID, access token + DPoP), a PDP decision per request, credential injection',
  usage: 'writ proxy --config proxy.json --server URL --token-file F [--audit-log FILE]  |  writ proxy --listen HOST:PORT --upstream URL --server URL --token-file F [--pdp-mode remote|local]',
  options: {
    server: { type: 'string' },
    'token-file': { type: 'string' },
    config: { type: 'string', short: 'c' },
    'audit-log': { type: 'string' },
    listen: { type: 'string' },
    upstream: { type: 'string' },
    audience: { type: 'string' },
    'trust-domain': { type: 'string' },
    'cache-ttl-ms': { type: 'string' },
    'timeout-ms': { type: 'string' },
    'pdp-mode': { type: 'string' },
  },
  help: {
    '-c, --config FILE': 'the proxy configuration (JSON): listener, TLS, upstreams and routes; see docs/enforcement.md',
    '--server URL': CLIENT_HELP['--server URL'],
    '--token-file FILE': 'PEP credential: an admin principal with role `pep` (env WRIT_TOKEN_FILE or WRIT_TOKEN); used for the PDP and the revocation stream',
    '--audit-log FILE': 'append the hash-chained allow/deny audit records here (default: stderr)',
    '--listen HOST:PORT': 'without --config: where the proxy listens (plain HTTP)',
    '--upstream URL': 'without --config: the http:// upstream of the one catch-all route',
    '--audience AUD': 'without --config: the audience a caller\'s token must name (default `writ-proxy`)',
    '--trust-domain TD': 'without --config: the trust domain of the server\'s bundle (default writ.local)',
    '--cache-ttl-ms MS': 'without --config: reuse a decision this long (default 1000; 0 disables)',
    '--timeout-ms MS': 'without --config: deadline of one PDP call; past it the request is denied (default 2000)',
    '--pdp-mode MODE': `without --config: ${LOCAL_PDP_HELP}`,
  },
  async run(v, _p, io: Io) {
    const cfg = loadProxyConfig(v);
    const c = client(v, io);
    if (c.token === undefined || c.token === '') throw new CliError('no PEP credential: pass --token-file or set WRIT_TOKEN', 'ERR_CLI_TOKEN_FILE', 2);
    const clock = systemClock;
    const staticSecrets = new Map<string, Secret>();
    for (const r of cfg.routes) if (r.inject?.source === 'static') staticSecrets.set(r.name, readSecretFile(r.inject.secretFile, r.name));
    const audit = jsonlAuditSink(v['audit-log'] as string | undefined, io);

    // Local mode: the server's policy bundle compiled here; local decisions go to this proxy's audit log.
    const localMetrics = new Registry();
    const local = cfg.pdp.mode === 'local'
      ? new SyncedLocalPdp({ url: c.server, credential: new Secret(c.token), clock, audit, requestedBy: 'writ-proxy', decisionTimeoutMs: cfg.pdp.timeoutMs, pollIntervalMs: cfg.pdp.pollIntervalMs, log: (line) => io.err(JSON.stringify(line)), metrics: localMetrics })
      : undefined;
    const pdp: PdpClient = local ?? new RemotePdp({ url: c.server, credential: new Secret(c.token), timeoutMs: cfg.pdp.timeoutMs });
    const bundles = new ServerBundleSource({ url: c.server, trustDomain: cfg.trustDomain, clock });
    const as = new WritAuthorizationServer({ url: c.server });
    const authenticator = new ProxyAuthenticator({ bundles, clock, audience: cfg.audience, accessTokens: as, maxEntries: cfg.tokenCacheMaxEntries, dpopIatWindowSeconds: cfg.dpopIatWindowSeconds });

    const needsWorkloadApi = cfg.tls?.svid.source === 'workload-api' || cfg.routes.some((r) => r.inject?.source === 'exchange');
    let wl: WorkloadApiClient | undefined;
    if (needsWorkloadApi) {
      try {
        wl = new WorkloadApiClient({ ...(cfg.workloadApiSocket === undefined ? {} : { socket: cfg.workloadApiSocket }), timeoutMs: 5000 });
      } catch (e) {
        throw new CliError(`workloadApiSocket: ${(e as Error).message}`, 'ERR_CLI_USAGE', 2);
      }
    }
    const workload = wl;
    const injector = new CredentialInjector({
      clock,
      broker: as,
      ...(workload === undefined ? {} : { jwtSvid: async (aud: string) => (await workload.fetchJwtSvid([aud])).token }),
      staticSecrets,
    });

    // TLS: the serving SVID (Workload API stream or files) and the bundle's CAs, swapped in on every change.
    let watcher: X509SvidWatcher | undefined;
    let serving: { key: string; cert: string } | undefined;
    let lastBundle: TrustBundle | undefined;
    const stops: (() => void)[] = [];
    const tlsCfg = cfg.tls;
    if (tlsCfg !== undefined) {
      if (tlsCfg.svid.source === 'workload-api') {
        if (workload === undefined) throw new CliError('tls.svid.source `workload-api` needs a Workload API socket', 'ERR_CLI_USAGE', 2);
        try {
          watcher = await X509SvidWatcher.start(workload);
        } catch (e) {
          throw new CliError(`no serving X.509-SVID from the Workload API: ${(e as Error).message}`, 'ERR_CLI_UNREACHABLE');
        }
        const of = (s: X509SvidWatcher['current']) => ({ key: s.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(), cert: certificatesToPem(s.chain) });
        serving = of(watcher.current);
        const w = watcher;
        stops.push(() => w.stop());
        w.onRotate((s) => {
          serving = of(s);
          apply('serving SVID rotated');
        });
      } else {
        const { certFile, keyFile } = tlsCfg.svid;
        const read = () => ({ key: readFileSync(keyFile, 'utf8'), cert: readFileSync(certFile, 'utf8') });
        try {
          serving = read();
        } catch (e) {
          throw new CliError(`cannot read the serving SVID (tls.svid.certFile / keyFile): ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, 'ERR_CLI_USAGE', 2);
        }
        const onChange = () => {
          try {
            serving = read();
            apply('serving SVID files changed');
          } catch (e) {
            io.err(JSON.stringify({ msg: 'tls', error: `serving SVID files unreadable, keeping the previous one: ${(e as Error).message}` }));
          }
        };
        watchFile(certFile, { interval: 1000 }, onChange);
        watchFile(keyFile, { interval: 1000 }, onChange);
        stops.push(() => {
          unwatchFile(certFile);
          unwatchFile(keyFile);
        });
      }
      lastBundle = await bundles.current().catch(() => undefined);
    }
    const material = (): ProxyTlsMaterial | undefined => (serving === undefined ? undefined : { ...serving, ca: bundlePem(lastBundle) });

    let instance: IdentityProxy | undefined;
    const { revocations } = followRevocations(c.server, c.token, cfg.revocationMaxStalenessMs, (e) => {
      instance?.onRevocation(e);
      if (e.kind === 'policy-changed') void local?.refresh();
    }, io);
    const tlsMaterial = material();
    const p = new IdentityProxy({
      config: cfg,
      authenticator,
      pdp,
      clock,
      revocations,
      injector,
      audit,
      ...(tlsMaterial === undefined ? {} : { tls: tlsMaterial }),
    });
    instance = p;
    function apply(why: string): void {
      const m = material();
      if (m === undefined || tlsCfg === undefined) return;
      try {
        p.updateTls(m);
        io.err(JSON.stringify({ msg: 'tls', updated: why, trustedCas: m.ca.length }));
      } catch (e) {
        io.err(JSON.stringify({ msg: 'tls', error: `could not apply new TLS material, keeping the previous one: ${(e as Error).message}` }));
      }
    }
    // The bundle is refetched at its refresh hint by `current()`; a new bundle object means new CAs for the handshake.
    if (tlsCfg !== undefined) {
      const t = setInterval(() => {
        bundles.current().then((b) => {
          if (b !== lastBundle) {
            lastBundle = b;
            apply('trust bundle changed');
          }
        }, () => undefined);
      }, 2000);
      t.unref();
      stops.push(() => clearInterval(t));
    }
    revocations.start();
    stops.push(() => revocations.stop());
    if (local !== undefined) {
      // A decision cached under the old set goes when the new set is installed (the `policy-changed` event may arrive before it).
      local.onSwap(() => p.onPolicyChanged());
      // Fail closed until a bundle compiled: the proxy listens, and denies with ERR_ENFORCE_POLICY_UNAVAILABLE.
      const first = await local.start();
      stops.push(() => local.stop());
      io.err(JSON.stringify({ msg: 'policy', first: first.outcome, version: local.version ?? null }));
    }

    const { host, port } = hostPort(cfg.listen, 'listen');
    let bound: number;
    try {
      bound = await p.listen(port, host);
    } catch (e) {
      for (const s of stops) s();
      throw new CliError(`cannot listen on ${cfg.listen}: ${(e as Error).message}`, 'ERR_CLI_LISTEN');
    }
    let metricsServer: Server | undefined;
    if (cfg.metricsListen !== undefined) {
      const m = hostPort(cfg.metricsListen, 'metricsListen');
      const ms = createServer((req, res) => {
        if (req.url !== '/metrics') {
          res.writeHead(404).end();
          return;
        }
        Registry.merge([p.metrics, localMetrics]).metrics().then((text) => {
          res.writeHead(200, { 'content-type': p.metrics.contentType });
          res.end(text);
        }, () => res.writeHead(500).end());
      });
      metricsServer = ms;
      await new Promise<void>((ok, fail) => {
        ms.once('error', fail);
        ms.listen(m.port, m.host, () => ok());
      }).catch((e: unknown) => {
        throw new CliError(`cannot listen on ${cfg.metricsListen ?? ''}: ${(e as Error).message}`, 'ERR_CLI_LISTEN');
      });
      const a = ms.address();
      io.err(`writ proxy: metrics on ${m.host}:${typeof a === 'object' && a !== null ? a.port : m.port}/metrics`);
    }
    const deciding = local === undefined ? `deciding through ${c.server}/access/v1/evaluation` : `deciding locally with the policy bundle of ${c.server}/v1/policy/bundle`;
    io.err(`writ proxy: listening on ${host}:${bound} (${tlsCfg === undefined ? 'http' : 'https'}), ${cfg.routes.length} route(s), ${deciding}`);
    await new Promise<void>((done) => {
      const stop = () => {
        for (const s of stops) s();
        workload?.close();
        metricsServer?.close();
        metricsServer?.closeAllConnections();
        void Promise.all([p.close(), audit.flush()]).then(() => done());
      };
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
    });
    return 0;
  },
};

function budgetLimits(v: Values): BudgetLimits {
  const int = (raw: unknown, flag: string): number => {
    const n = Number(raw);
    if (typeof raw !== 'string' || !/^\d{1,9}$/.test(raw) || !Number.isSafeInteger(n)) throw new CliError(`${flag} must be a non-negative integer`, 'ERR_CLI_USAGE', 2);
    return n;
  };
  const perTool: Record<string, number> = {};
  for (const item of (v['budget-tool'] as unknown as string[] | undefined) ?? []) {
    const i = item.lastIndexOf('=');
    if (i <= 0) throw new CliError(`--budget-tool must be NAME=N, not \`${item.slice(0, 64)}\``, 'ERR_CLI_USAGE', 2);
    perTool[item.slice(0, i)] = int(item.slice(i + 1), '--budget-tool');
  }
  return {
    ...(v['budget-total'] === undefined ? {} : { totalCalls: int(v['budget-total'], '--budget-total') }),
    ...(v['budget-per-tool'] === undefined ? {} : { callsPerTool: int(v['budget-per-tool'], '--budget-per-tool') }),
    ...(Object.keys(perTool).length === 0 ? {} : { perTool }),
  };
}

/**
 * The gateway's audit events as JSON lines (one `{"msg":"audit",…}` per
 * decided call) for a log shipper; the PDP's own `decision.made` records, in
 * Writ's hash-chained log, carry the same correlation id.
 */
function jsonLinesAudit(write: (line: string) => void): AuditSink {
  let seq = 0;
  return {
    async append(e: AuditEventInput): Promise<AuditRecord> {
      seq++;
      const record: AuditRecord = { seq, time: e.time ?? new Date().toISOString(), action: e.action, actor: e.actor, ...(e.target === undefined ? {} : { target: e.target }), outcome: e.outcome, reasons: e.reasons ?? [], correlationId: e.correlationId, details: e.details ?? {}, prevHash: '', hash: '' };
      write(JSON.stringify({ msg: 'audit', seq, time: record.time, action: record.action, actor: record.actor, target: record.target, outcome: record.outcome, reasons: record.reasons, correlationId: record.correlationId, details: record.details }));
      return record;
    },
  };
}

const mcpGateway: Command = {
  name: 'mcp-gateway',
  summary: 'run the MCP gateway: agents reach an upstream MCP server only with a Writ token, and every tool call is decided by the PDP',
  usage: 'writ mcp-gateway --server URL --token-file F --listen HOST:PORT --upstream URL [--resource URL] [--upstream-audience AUD] [--budget-total N] [--budget-per-tool N] [--budget-tool NAME=N] [--pdp-mode remote|local]',
  options: {
    server: { type: 'string' },
    'token-file': { type: 'string' },
    listen: { type: 'string' },
    upstream: { type: 'string' },
    'upstream-audience': { type: 'string' },
    resource: { type: 'string' },
    'server-id': { type: 'string' },
    'budget-total': { type: 'string' },
    'budget-per-tool': { type: 'string' },
    'budget-tool': { type: 'string', multiple: true },
    scope: { type: 'string', multiple: true },
    'cache-ttl-ms': { type: 'string' },
    'timeout-ms': { type: 'string' },
    'no-revocations': { type: 'boolean' },
    'revocation-staleness-ms': { type: 'string' },
    'pdp-mode': { type: 'string' },
  },
  help: {
    '--server URL': CLIENT_HELP['--server URL'],
    '--token-file FILE': 'PEP credential: an admin principal with role `pep` (env WRIT_TOKEN_FILE or WRIT_TOKEN)',
    '--listen HOST:PORT': 'where the gateway listens (plain HTTP; put TLS in front for anything but loopback)',
    '--upstream URL': 'the upstream MCP endpoint (Streamable HTTP), e.g. http://127.0.0.1:8931/mcp',
    '--upstream-audience AUD': 'audience of the token exchanged for the upstream (default the --upstream URL)',
    '--resource URL': 'the gateway\'s public MCP URL: its RFC 9728 `resource` and the audience agents\' tokens must name (default http://LISTEN/mcp)',
    '--server-id ID': 'context.mcp.server in every evaluation (default the upstream audience)',
    '--budget-total N': 'most tools/call per task',
    '--budget-per-tool N': 'most calls of any one tool per task',
    '--budget-tool NAME=N': 'most calls of tool NAME per task (repeatable; overrides --budget-per-tool)',
    '--scope S': 'a scope listed in the protected resource metadata (`scopes_supported`; repeatable)',
    '--cache-ttl-ms MS': 'reuse a decision this long for the identical request (default 0: every call asks the PDP)',
    '--timeout-ms MS': 'deadline of one PDP call; past it the call is refused (default 2000)',
    '--no-revocations': 'do not follow the server\'s revocation stream (sessions then end only with their tokens)',
    '--revocation-staleness-ms MS': 'refuse every call once the revocation stream has been silent this long (default 30000)',
    '--pdp-mode MODE': `${LOCAL_PDP_HELP}; local decisions are audit lines on stderr`,
  },
  async run(v, _p, io: Io) {
    const mode = pdpMode(v);
    if (v.listen === undefined || v.upstream === undefined) throw new CliError('--listen and --upstream are required', 'ERR_CLI_USAGE', 2);
    const c = client(v, io);
    if (c.token === undefined || c.token === '') throw new CliError('no PEP credential: pass --token-file or set WRIT_TOKEN', 'ERR_CLI_TOKEN_FILE', 2);
    const clock = systemClock;
    const { host, port } = hostPort(v.listen as string, '--listen');
    const budgets = new CallBudgets(budgetLimits(v));
    // RFC 8414: the issuer tokens carry, from the server's metadata.
    let issuer: string;
    let tokenEndpoint: string;
    try {
      const res = await fetch(`${c.server.replace(/\/+$/, '')}/.well-known/oauth-authorization-server`, { signal: AbortSignal.timeout(5000) });
      const meta = (await res.json()) as { issuer?: unknown; token_endpoint?: unknown };
      if (res.status !== 200 || typeof meta.issuer !== 'string' || typeof meta.token_endpoint !== 'string') throw new Error(`status ${res.status}`);
      issuer = meta.issuer;
      tokenEndpoint = meta.token_endpoint;
    } catch (e) {
      throw new CliError(`cannot read the authorization server metadata of ${c.server}: ${(e as Error).message}`, 'ERR_CLI_UNREACHABLE');
    }
    const timeoutMs = positiveNumber(v, 'timeout-ms', 2000);
    const ttlMs = positiveNumber(v, 'cache-ttl-ms', 0, true);
    const audit = jsonLinesAudit((line) => io.err(line));
    // Local mode: local decisions (`decision.made`) are audit lines on stderr, next to the gateway's `mcp.call.decided`.
    const local = mode === 'local' ? syncedLocalPdp(c.server, c.token, audit, 'writ-mcp-gateway', timeoutMs, io) : undefined;
    const pdp = new CachingPdp(local ?? new RemotePdp({ url: c.server, credential: new Secret(c.token), timeoutMs }), { clock, ttlMs });
    if (local !== undefined) {
      // A decision cached under the old set goes when the new set is installed.
      local.onSwap(() => pdp.invalidate());
      // Fail closed until a bundle compiled: the gateway listens, and refuses every call with ERR_ENFORCE_POLICY_UNAVAILABLE.
      const first = await local.start();
      io.err(JSON.stringify({ msg: 'policy', first: first.outcome, version: local.version ?? null }));
    }
    const server = createServer();
    await new Promise<void>((ok, fail) => {
      server.once('error', fail);
      server.listen(port, host, () => ok());
    }).catch((e: unknown) => {
      local?.stop();
      throw new CliError(`cannot listen on ${v.listen as string}: ${(e as Error).message}`, 'ERR_CLI_LISTEN');
    });
    const a = server.address();
    const bound = typeof a === 'object' && a !== null ? a.port : port;
    const resource = (v.resource as string | undefined) ?? `http://${host.includes(':') ? `[${host}]` : host}:${bound}/mcp`;
    let gateway: McpGateway | undefined;
    let revocations: RevocationStreamClient | undefined;
    try {
      if (v['no-revocations'] !== true) {
        revocations = followRevocations(c.server, c.token, positiveNumber(v, 'revocation-staleness-ms', 30_000), (e) => {
          void gateway?.onRevocation(e);
          if (e.kind === 'policy-changed') void local?.refresh();
        }, io).revocations;
      }
      const upstreamAudience = v['upstream-audience'] as string | undefined;
      const serverId = v['server-id'] as string | undefined;
      const scopes = v.scope as unknown as string[] | undefined;
      gateway = new McpGateway({
        tokens: new AccessTokenVerifier({ issuer, audience: resource, clock }),
        pdp,
        exchanger: new TokenExchanger({ tokenEndpoint, clock }),
        upstream: v.upstream as string,
        ...(upstreamAudience === undefined ? {} : { upstreamAudience }),
        ...(serverId === undefined ? {} : { serverId }),
        resource,
        authorizationServer: issuer,
        clock,
        budgets,
        audit,
        ...(scopes === undefined ? {} : { scopesSupported: scopes }),
        ...(revocations === undefined ? {} : { revocations }),
      });
    } catch (e) {
      server.close();
      local?.stop();
      throw new CliError(`--upstream/--resource: ${(e as Error).message}`, 'ERR_CLI_USAGE', 2);
    }
    const gw = gateway;
    server.on('request', (req, res) => {
      gw.handle(req, res).catch(() => res.destroy());
    });
    revocations?.start();
    io.err(`writ mcp-gateway: listening on ${host}:${bound}, resource ${resource}, upstream ${v.upstream as string}, tokens from ${issuer}, ${decidingFrom(c.server, local)}`);
    await new Promise<void>((done) => {
      const stop = () => {
        revocations?.stop();
        local?.stop();
        server.close(() => done());
        server.closeAllConnections();
      };
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
    });
    return 0;
  },
};

/** The enforcement commands. */
export const ENFORCEMENT_COMMANDS: readonly Command[] = [extAuthz, proxy, mcpGateway];
