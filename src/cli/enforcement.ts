/**
 * `writ ext-authz`: the external authorizer for Envoy (gRPC
 * `envoy.service.auth.v3.Authorization/Check`) and for nginx `auth_request` /
 * Envoy HTTP mode, deciding each request through the server's AuthZEN PDP with
 * a PEP credential and authenticating callers against the server's bundle.
 */
import * as grpc from '@grpc/grpc-js';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import { AccessTokenVerifier, CachingPdp, CallBudgets, HttpAuthorizer, McpGateway, RemotePdp, ServerBundleSource, TokenExchanger, extAuthzGrpcServer, extAuthzHttpServer, identityProxy } from '../enforcement/index.ts';
import type { BudgetLimits } from '../enforcement/index.ts';
import { Secret, systemClock } from '../kernel/index.ts';
import type { AuditEventInput, AuditRecord, AuditSink } from '../kernel/index.ts';
import { RevocationStreamClient } from '../signals/index.ts';
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
  usage: 'writ ext-authz --server URL --token-file F [--grpc HOST:PORT] [--http HOST:PORT] [--audience AUD] [--trust-domain TD]',
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
  },
  help: {
    '--server URL': CLIENT_HELP['--server URL'],
    '--token-file FILE': 'PEP credential: an admin principal with role `pep` (env WRIT_TOKEN_FILE or WRIT_TOKEN)',
    '--grpc HOST:PORT': 'serve envoy.service.auth.v3.Authorization/Check here (plaintext gRPC; keep it on loopback or a private network)',
    '--http HOST:PORT': 'serve the HTTP-mode authorizer here (Envoy HTTP mode, nginx auth_request)',
    '--audience AUD': 'the audience a caller\'s JWT-SVID must name (default `writ-ext-authz`)',
    '--trust-domain TD': 'the trust domain of the server\'s bundle (default writ.local)',
    '--cache-ttl-ms MS': 'reuse a decision this long for the identical request (default 1000; 0 disables)',
    '--timeout-ms MS': 'deadline of one PDP call; past it the request is denied (default 2000)',
    '--context-header NAME': 'a request header to pass to the PDP in context.headers (repeatable; never authorization or cookie)',
    '--path-prefix P': 'Envoy HTTP mode `path_prefix` to strip',
    '--trust-client-cert-header': 'in HTTP mode read the caller certificate from X-Writ-Client-Cert (URL-encoded PEM), set by the TLS-terminating proxy',
  },
  async run(v, _p, io: Io) {
    if (v.grpc === undefined && v.http === undefined) throw new CliError('give --grpc HOST:PORT, --http HOST:PORT or both', 'ERR_CLI_USAGE', 2);
    const c = client(v, io);
    if (c.token === undefined || c.token === '') throw new CliError('no PEP credential: pass --token-file or set WRIT_TOKEN', 'ERR_CLI_TOKEN_FILE', 2);
    const clock = systemClock;
    const remote = new RemotePdp({ url: c.server, credential: new Secret(c.token), timeoutMs: positiveNumber(v, 'timeout-ms', 2000) });
    const pdp = new CachingPdp(remote, { clock, ttlMs: positiveNumber(v, 'cache-ttl-ms', 1000, true) });
    const bundles = new ServerBundleSource({ url: c.server, trustDomain: (v['trust-domain'] as string | undefined) ?? 'writ.local', clock });
    const headers = v['context-header'] as unknown as string[] | undefined;
    const authorizer = new HttpAuthorizer({ pdp, bundles, clock, audience: (v.audience as string | undefined) ?? 'writ-ext-authz', ...(headers === undefined ? {} : { contextHeaders: headers }) });
    const log = (line: object) => io.err(JSON.stringify({ msg: 'decision', ...line }));

    let grpcServer: grpc.Server | undefined;
    let httpServer: Server | undefined;
    if (v.grpc !== undefined) {
      const { host, port } = hostPort(v.grpc as string, '--grpc');
      grpcServer = extAuthzGrpcServer({ authorizer, log });
      const bound = await new Promise<number>((ok, fail) => {
        grpcServer?.bindAsync(`${host.includes(':') ? `[${host}]` : host}:${port}`, grpc.ServerCredentials.createInsecure(), (err, p) => (err === null ? ok(p) : fail(err)));
      }).catch((e: unknown) => {
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
        throw new CliError(`cannot listen on ${v.http as string}: ${(e as Error).message}`, 'ERR_CLI_LISTEN');
      });
      const a = server.address();
      io.err(`writ ext-authz: http listening on ${host}:${typeof a === 'object' && a !== null ? a.port : port}`);
    }
    io.err(`writ ext-authz: deciding through ${c.server}/access/v1/evaluation`);
    await new Promise<void>((done) => {
      const stop = () => {
        grpcServer?.forceShutdown();
        if (httpServer === undefined) done();
        else httpServer.close(() => done());
        httpServer?.closeAllConnections();
      };
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
    });
    return 0;
  },
};

const proxy: Command = {
  name: 'proxy',
  summary: 'run an identity-aware reverse proxy: every request authenticated by SPIFFE credential and decided by the PDP',
  usage: 'writ proxy --server URL --token-file F --listen HOST:PORT --upstream http://HOST:PORT [--audience AUD] [--trust-domain TD]',
  options: {
    server: { type: 'string' },
    'token-file': { type: 'string' },
    listen: { type: 'string' },
    upstream: { type: 'string' },
    audience: { type: 'string' },
    'trust-domain': { type: 'string' },
    'cache-ttl-ms': { type: 'string' },
    'timeout-ms': { type: 'string' },
  },
  help: {
    '--server URL': CLIENT_HELP['--server URL'],
    '--token-file FILE': 'PEP credential: an admin principal with role `pep` (env WRIT_TOKEN_FILE or WRIT_TOKEN)',
    '--listen HOST:PORT': 'where the proxy listens (plain HTTP)',
    '--upstream URL': 'the http:// upstream allowed requests go to',
    '--audience AUD': 'the audience a caller\'s JWT-SVID must name (default `writ-proxy`)',
    '--trust-domain TD': 'the trust domain of the server\'s bundle (default writ.local)',
    '--cache-ttl-ms MS': 'reuse a decision this long for the identical request (default 1000; 0 disables)',
    '--timeout-ms MS': 'deadline of one PDP call; past it the request is denied (default 2000)',
  },
  async run(v, _p, io: Io) {
    if (v.listen === undefined || v.upstream === undefined) throw new CliError('--listen and --upstream are required', 'ERR_CLI_USAGE', 2);
    const c = client(v, io);
    if (c.token === undefined || c.token === '') throw new CliError('no PEP credential: pass --token-file or set WRIT_TOKEN', 'ERR_CLI_TOKEN_FILE', 2);
    const clock = systemClock;
    const remote = new RemotePdp({ url: c.server, credential: new Secret(c.token), timeoutMs: positiveNumber(v, 'timeout-ms', 2000) });
    const pdp = new CachingPdp(remote, { clock, ttlMs: positiveNumber(v, 'cache-ttl-ms', 1000, true) });
    const bundles = new ServerBundleSource({ url: c.server, trustDomain: (v['trust-domain'] as string | undefined) ?? 'writ.local', clock });
    const authorizer = new HttpAuthorizer({ pdp, bundles, clock, audience: (v.audience as string | undefined) ?? 'writ-proxy' });
    let server: Server;
    try {
      server = identityProxy({ authorizer, upstream: v.upstream as string, log: (line) => io.err(JSON.stringify({ msg: 'decision', ...line })) });
    } catch (e) {
      throw new CliError(`--upstream: ${(e as Error).message}`, 'ERR_CLI_USAGE', 2);
    }
    const { host, port } = hostPort(v.listen as string, '--listen');
    await new Promise<void>((ok, fail) => {
      server.once('error', fail);
      server.listen(port, host, () => ok());
    }).catch((e: unknown) => {
      throw new CliError(`cannot listen on ${v.listen as string}: ${(e as Error).message}`, 'ERR_CLI_LISTEN');
    });
    const a = server.address();
    io.err(`writ proxy: listening on ${host}:${typeof a === 'object' && a !== null ? a.port : port}, upstream ${v.upstream as string}, deciding through ${c.server}/access/v1/evaluation`);
    await new Promise<void>((done) => {
      const stop = () => {
        server.close(() => done());
        server.closeAllConnections();
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
  usage: 'writ mcp-gateway --server URL --token-file F --listen HOST:PORT --upstream URL [--resource URL] [--upstream-audience AUD] [--budget-total N] [--budget-per-tool N] [--budget-tool NAME=N]',
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
  },
  async run(v, _p, io: Io) {
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
    const remote = new RemotePdp({ url: c.server, credential: new Secret(c.token), timeoutMs: positiveNumber(v, 'timeout-ms', 2000) });
    const pdp = new CachingPdp(remote, { clock, ttlMs: positiveNumber(v, 'cache-ttl-ms', 0, true) });
    const server = createServer();
    await new Promise<void>((ok, fail) => {
      server.once('error', fail);
      server.listen(port, host, () => ok());
    }).catch((e: unknown) => {
      throw new CliError(`cannot listen on ${v.listen as string}: ${(e as Error).message}`, 'ERR_CLI_LISTEN');
    });
    const a = server.address();
    const bound = typeof a === 'object' && a !== null ? a.port : port;
    const resource = (v.resource as string | undefined) ?? `http://${host.includes(':') ? `[${host}]` : host}:${bound}/mcp`;
    let gateway: McpGateway | undefined;
    let revocations: RevocationStreamClient | undefined;
    try {
      if (v['no-revocations'] !== true) {
        revocations = new RevocationStreamClient({ url: c.server, token: c.token, clock, stalenessMs: positiveNumber(v, 'revocation-staleness-ms', 30_000), onEvent: (e) => void gateway?.onRevocation(e), onError: () => undefined });
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
        audit: jsonLinesAudit((line) => io.err(line)),
        ...(scopes === undefined ? {} : { scopesSupported: scopes }),
        ...(revocations === undefined ? {} : { revocations }),
      });
    } catch (e) {
      server.close();
      throw new CliError(`--upstream/--resource: ${(e as Error).message}`, 'ERR_CLI_USAGE', 2);
    }
    const gw = gateway;
    server.on('request', (req, res) => {
      gw.handle(req, res).catch(() => res.destroy());
    });
    revocations?.start();
    io.err(`writ mcp-gateway: listening on ${host}:${bound}, resource ${resource}, upstream ${v.upstream as string}, tokens from ${issuer}, deciding through ${c.server}/access/v1/evaluation`);
    await new Promise<void>((done) => {
      const stop = () => {
        revocations?.stop();
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
