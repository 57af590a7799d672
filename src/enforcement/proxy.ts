/**
 * `writ proxy`, first increment: an identity-aware reverse proxy in front of
 * one HTTP upstream. Each request is authenticated (JWT-SVID bearer, or the
 * verified mTLS peer when the listener is TLS) and decided by the PDP through
 * {@link HttpAuthorizer}; an allowed request goes upstream with the identity
 * headers and without the caller's credential; a denied one never leaves the
 * proxy (401 with an RFC 6750 §3 challenge, or 403, with the reason code).
 */
import { Agent, createServer, request } from 'node:http';
import type { IncomingMessage, OutgoingHttpHeaders, Server, ServerResponse } from 'node:http';
import { TLSSocket } from 'node:tls';
import { denyBody } from './authorizer.ts';
import type { CheckResult, HttpAuthorizer, HttpCheck } from './authorizer.ts';

/** RFC 9110 §7.6.1 hop-by-hop fields, never forwarded. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'proxy-authenticate']);
/** Inbound credentials and identity headers a caller could forge: stripped before the upstream. */
const STRIP_INBOUND = new Set(['authorization', 'proxy-authorization', 'x-writ-spiffe-id', 'x-writ-decision-id', 'x-writ-client-cert']);

/** Options of {@link identityProxy}. */
export interface ProxyOptions {
  readonly authorizer: HttpAuthorizer;
  /** `http://host:port` of the upstream. */
  readonly upstream: string;
  /** One line per decision (never a token). */
  readonly log?: (line: { allow: boolean; method: string; path: string; spiffeId?: string; code?: string; decisionId: string; status?: number }) => void;
  /** Upstream deadline for the response head (default 30 s). */
  readonly upstreamTimeoutMs?: number;
}

function headerMap(req: IncomingMessage): Record<string, string> {
  const h: Record<string, string> = {};
  for (const [k, v] of Object.entries(req.headers)) {
    if (typeof v === 'string') h[k] = v;
    else if (Array.isArray(v)) h[k] = v.join(', ');
  }
  return h;
}

function deny(res: ServerResponse, r: Exclude<CheckResult, { allow: true }>): void {
  const body = JSON.stringify(denyBody(r));
  res.writeHead(r.status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    'x-writ-decision-id': r.decisionId,
    ...(r.wwwAuthenticate === undefined ? {} : { 'www-authenticate': r.wwwAuthenticate }),
  });
  res.end(body);
}

/**
 * An HTTP server that decides every request and forwards the allowed ones.
 *
 * @example
 * const proxy = identityProxy({ authorizer, upstream: 'http://127.0.0.1:8080' });
 * proxy.listen(8443, '127.0.0.1');
 */
export function identityProxy(o: ProxyOptions): Server {
  const up = new URL(o.upstream);
  if (up.protocol !== 'http:') throw new TypeError('the upstream must be an http:// URL');
  const agent = new Agent({ keepAlive: true, maxSockets: 512 });
  const server = createServer((req, res) => {
    const headers = headerMap(req);
    const socket = req.socket;
    const leaf = socket instanceof TLSSocket && socket.authorized ? socket.getPeerCertificate(false).raw : undefined;
    const check: HttpCheck = { method: req.method ?? '', path: req.url ?? '', ...(headers.host === undefined ? {} : { host: headers.host }), headers, ...(leaf === undefined ? {} : { tlsVerifiedLeaf: new Uint8Array(leaf) }) };
    o.authorizer.check(check).then(
      (r) => {
        const path = (req.url ?? '').split('?')[0] ?? '';
        if (!r.allow) {
          o.log?.({ allow: false, method: check.method, path, ...(r.caller === undefined ? {} : { spiffeId: r.caller.spiffeId }), code: r.code, decisionId: r.decisionId, status: r.status });
          req.resume();
          deny(res, r);
          return;
        }
        o.log?.({ allow: true, method: check.method, path, spiffeId: r.caller.spiffeId, decisionId: r.decisionId });
        const out: OutgoingHttpHeaders = {};
        const connectionListed = new Set((headers.connection ?? '').split(',').map((s) => s.trim().toLowerCase()).filter((s) => s !== ''));
        for (const [k, v] of Object.entries(req.headers)) {
          if (v === undefined || HOP_BY_HOP.has(k) || STRIP_INBOUND.has(k) || connectionListed.has(k)) continue;
          out[k] = v;
        }
        Object.assign(out, r.upstreamHeaders);
        const prior = headers['x-forwarded-for'];
        const ip = socket.remoteAddress ?? '';
        out['x-forwarded-for'] = prior === undefined ? ip : `${prior}, ${ip}`;
        out['x-forwarded-proto'] = socket instanceof TLSSocket ? 'https' : 'http';
        if (headers.host !== undefined) out['x-forwarded-host'] = headers.host;
        const upReq = request({ host: up.hostname, port: up.port === '' ? 80 : Number(up.port), method: req.method, path: req.url, headers: out, agent, timeout: o.upstreamTimeoutMs ?? 30_000 }, (upRes) => {
          const back: OutgoingHttpHeaders = {};
          for (const [k, v] of Object.entries(upRes.headers)) if (v !== undefined && !HOP_BY_HOP.has(k)) back[k] = v;
          res.writeHead(upRes.statusCode ?? 502, back);
          upRes.pipe(res);
        });
        upReq.on('timeout', () => upReq.destroy(new Error('upstream timeout')));
        upReq.on('error', () => {
          if (!res.headersSent) {
            res.writeHead(502, { 'content-type': 'application/json' });
            res.end('{"code":"ERR_ENFORCE_UPSTREAM","message":"upstream unavailable"}');
          } else res.destroy();
        });
        req.pipe(upReq);
      },
      () => {
        req.resume();
        res.writeHead(403, { 'content-type': 'application/json' });
        res.end('{"code":"ERR_ENFORCE_PDP_UNAVAILABLE","message":"authorizer failed"}');
      },
    );
  });
  server.on('close', () => agent.destroy());
  return server;
}
