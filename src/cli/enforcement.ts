/**
 * `writ ext-authz`: the external authorizer for Envoy (gRPC
 * `envoy.service.auth.v3.Authorization/Check`) and for nginx `auth_request` /
 * Envoy HTTP mode, deciding each request through the server's AuthZEN PDP with
 * a PEP credential and authenticating callers against the server's bundle.
 */
import * as grpc from '@grpc/grpc-js';
import type { Server } from 'node:http';
import { CachingPdp, HttpAuthorizer, RemotePdp, ServerBundleSource, extAuthzGrpcServer, extAuthzHttpServer, identityProxy } from '../enforcement/index.ts';
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

/** The enforcement commands. */
export const ENFORCEMENT_COMMANDS: readonly Command[] = [extAuthz, proxy];
