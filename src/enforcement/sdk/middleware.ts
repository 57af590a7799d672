/**
 * Authorization middleware for Node apps: authenticate the caller by its
 * SPIFFE credential (JWT-SVID bearer, or the X.509-SVID of an mTLS peer) and
 * ask the PDP for each request, before the route runs. Express-compatible
 * `(req, res, next)` middleware (works with plain `node:http` too) and a
 * Fastify plugin; both go through {@link HttpAuthorizer}, so they fail closed
 * exactly like `writ ext-authz`.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { TLSSocket } from 'node:tls';
import type { FastifyInstance, FastifyPluginCallback, FastifyReply, FastifyRequest } from 'fastify';
import { Secret, systemClock } from '../../kernel/index.ts';
import type { Clock } from '../../kernel/index.ts';
import { HttpAuthorizer, denyBody } from '../authorizer.ts';
import type { CheckAllowed, CheckDenied, HttpCheck } from '../authorizer.ts';
import { ServerBundleSource } from '../caller.ts';
import type { BundleSource } from '../caller.ts';
import { CachingPdp, RemotePdp } from '../pdp-client.ts';
import type { PdpClient } from '../pdp-client.ts';

/** Who called, as the route sees it after an allow. */
export interface WritCaller {
  readonly spiffeId: string;
  readonly method: 'jwt-svid' | 'x509-svid';
  readonly decisionId: string;
}

/** Options shared by the middleware and the plugin. */
export interface WritAuthzOptions {
  /** The audience callers' JWT-SVIDs must name (this service). */
  readonly audience: string;
  /** Writ server: AuthZEN PDP at `<server>/access/v1/evaluation`, bundle at `<server>/bundle`. */
  readonly server?: string;
  /** PEP credential (an admin principal with role `pep`) for the remote PDP. */
  readonly credential?: string | Secret;
  /** Trust domain of the server's bundle (default `writ.local`). */
  readonly trustDomain?: string;
  /** A PDP to use instead of the server's (e.g. a {@link LocalPdp}). */
  readonly pdp?: PdpClient;
  /** A bundle source to use instead of the server's `/bundle`. */
  readonly bundles?: BundleSource;
  readonly clock?: Clock;
  /** Decision cache TTL in ms (default 1000; 0 disables). */
  readonly cacheTtlMs?: number;
  /** Use the X.509-SVID of an mTLS peer the TLS server verified (`requestCert`, `ca` = the Writ bundle; default true). */
  readonly peerCertificates?: boolean;
  /** Paths that skip authorization (health checks), exact match on the path without query. */
  readonly skip?: readonly string[];
}

/**
 * Build the authorizer the middleware uses from {@link WritAuthzOptions}.
 *
 * @example
 * const authorizer = authorizerFromOptions({ audience: 'orders', server: 'http://127.0.0.1:7400', credential: pepToken });
 */
export function authorizerFromOptions(o: WritAuthzOptions): HttpAuthorizer {
  const clock = o.clock ?? systemClock;
  let pdp = o.pdp;
  if (pdp === undefined) {
    if (o.server === undefined || o.credential === undefined) throw new TypeError('give `pdp`, or `server` and `credential`');
    pdp = new RemotePdp({ url: o.server, credential: typeof o.credential === 'string' ? new Secret(o.credential) : o.credential });
  }
  if ((o.cacheTtlMs ?? 1000) > 0) pdp = new CachingPdp(pdp, { clock, ttlMs: o.cacheTtlMs ?? 1000 });
  let bundles = o.bundles;
  if (bundles === undefined) {
    if (o.server === undefined) throw new TypeError('give `bundles`, or `server` to read its /bundle');
    bundles = new ServerBundleSource({ url: o.server, trustDomain: o.trustDomain ?? 'writ.local', clock });
  }
  return new HttpAuthorizer({ pdp, bundles, clock, audience: o.audience });
}

/**
 * The peer leaf (DER) of a TLS socket whose client certificate the TLS stack
 * verified (`requestCert` with the Writ bundle as `ca`); undefined otherwise.
 * Node exposes only the leaf on the server side, so the chain check is the
 * TLS stack's and the SVID rules are checked by `authenticateTlsVerifiedLeaf`.
 *
 * @example
 * const leaf = verifiedPeerLeaf(req.socket);
 */
export function verifiedPeerLeaf(socket: unknown): Uint8Array | undefined {
  if (!(socket instanceof TLSSocket) || !socket.authorized) return undefined;
  const leaf = socket.getPeerCertificate(false);
  if (leaf === null || typeof leaf !== 'object' || !('raw' in leaf) || !(leaf.raw instanceof Uint8Array)) return undefined;
  return new Uint8Array(leaf.raw);
}

function checkOf(req: IncomingMessage, url: string, usePeer: boolean): HttpCheck {
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(req.headers)) {
    if (typeof v === 'string') headers[k] = v;
    else if (Array.isArray(v)) headers[k] = v.join(', ');
  }
  const leaf = usePeer ? verifiedPeerLeaf(req.socket) : undefined;
  return { method: req.method ?? '', path: url, ...(headers.host === undefined ? {} : { host: headers.host }), headers, ...(leaf === undefined ? {} : { tlsVerifiedLeaf: leaf }) };
}

function writeDeny(res: ServerResponse, r: CheckDenied): void {
  const body = JSON.stringify(denyBody(r));
  res.statusCode = r.status;
  res.setHeader('content-type', 'application/json');
  res.setHeader('x-writ-decision-id', r.decisionId);
  if (r.wwwAuthenticate !== undefined) res.setHeader('www-authenticate', r.wwwAuthenticate);
  res.end(body);
}

function callerOf(r: CheckAllowed): WritCaller {
  return { spiffeId: r.caller.spiffeId, method: r.caller.method, decisionId: r.decisionId };
}

/** A request after the middleware allowed it. */
export type WritRequest = IncomingMessage & { writ?: WritCaller; originalUrl?: string };

/**
 * Express-compatible middleware: `app.use(writAuthorize({...}))`. On allow it
 * sets `req.writ` and calls `next()`; on deny it answers 401/403 with
 * `{code, message, decisionId}` and does not call `next`.
 *
 * @example
 * const authz = writAuthorize({ audience: 'orders', server: 'http://127.0.0.1:7400', credential: pepToken });
 * http.createServer((req, res) => authz(req, res, () => res.end(`hello ${req.writ?.spiffeId}`)));
 */
export function writAuthorize(options: WritAuthzOptions): (req: WritRequest, res: ServerResponse, next: (err?: unknown) => void) => void {
  const authorizer = authorizerFromOptions(options);
  const skip = new Set(options.skip ?? []);
  const usePeer = options.peerCertificates ?? true;
  return (req, res, next) => {
    const url = req.originalUrl ?? req.url ?? '';
    if (skip.has(url.split('?')[0] ?? '')) {
      next();
      return;
    }
    authorizer.check(checkOf(req, url, usePeer)).then(
      (r) => {
        if (!r.allow) {
          writeDeny(res, r);
          return;
        }
        req.writ = callerOf(r);
        next();
      },
      (err: unknown) => next(err),
    );
  };
}

declare module 'fastify' {
  interface FastifyRequest {
    /** The authenticated, authorized caller (set by the Writ plugin). */
    writ?: WritCaller;
  }
}

/**
 * Fastify plugin: an `onRequest` hook on every route of the instance it is
 * registered on (it is not encapsulated). On deny the reply is sent with
 * 401/403 and the route does not run.
 *
 * @example
 * await app.register(writFastify, { audience: 'orders', server: 'http://127.0.0.1:7400', credential: pepToken });
 * app.get('/orders', async (req) => ({ caller: req.writ?.spiffeId }));
 */
export const writFastify: FastifyPluginCallback<WritAuthzOptions> = Object.assign(
  (app: FastifyInstance, options: WritAuthzOptions, done: (err?: Error) => void) => {
    const authorizer = authorizerFromOptions(options);
    const skip = new Set(options.skip ?? []);
    const usePeer = options.peerCertificates ?? true;
    app.decorateRequest('writ', undefined);
    app.addHook('onRequest', async (req: FastifyRequest, reply: FastifyReply) => {
      if (skip.has(req.url.split('?')[0] ?? '')) return;
      const r = await authorizer.check(checkOf(req.raw, req.url, usePeer));
      if (r.allow) {
        req.writ = callerOf(r);
        return;
      }
      void reply.code(r.status).header('content-type', 'application/json').header('x-writ-decision-id', r.decisionId);
      if (r.wwwAuthenticate !== undefined) void reply.header('www-authenticate', r.wwwAuthenticate);
      return reply.send(denyBody(r));
    });
    done();
  },
  // What fastify-plugin sets: the hook applies to the registering instance, not a child scope.
  { [Symbol.for('skip-override')]: true },
);
