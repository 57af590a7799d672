/**
 * The external authorizer: Envoy's `envoy.service.auth.v3.Authorization/Check`
 * over gRPC, and the HTTP-mode contract (2xx allows, anything else denies)
 * that Envoy's HTTP mode and nginx `auth_request` speak (STANDARDS.md §7).
 * Both ask {@link HttpAuthorizer.check}; neither logs a token.
 */
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { denyBody } from './authorizer.ts';
import type { CheckDenied, CheckResult, HttpAuthorizer, HttpCheck } from './authorizer.ts';

/** Folder of the trimmed Envoy protos. */
export const ENVOY_PROTO_ROOT = fileURLToPath(new URL('../../proto/', import.meta.url));
/** The ext_authz service proto, relative to {@link ENVOY_PROTO_ROOT}. */
export const EXT_AUTHZ_PROTO = 'envoy/service/auth/v3/external_auth.proto';

/** gRPC status codes the authorizer answers (google.rpc.Code). */
export const GRPC_OK = 0;
export const GRPC_PERMISSION_DENIED = 7;
export const GRPC_UNAUTHENTICATED = 16;

/**
 * Load the Envoy ext_authz package definition (keepCase, enums as strings).
 *
 * @example
 * const def = loadExtAuthzDefinition();
 * const Client = grpc.makeGenericClientConstructor(def['envoy.service.auth.v3.Authorization'] as grpc.ServiceDefinition, 'Authorization');
 */
export function loadExtAuthzDefinition(): protoLoader.PackageDefinition {
  return protoLoader.loadSync(EXT_AUTHZ_PROTO, { includeDirs: [ENVOY_PROTO_ROOT], keepCase: true, longs: String, enums: String, defaults: false, oneofs: true });
}

type Msg = Record<string, unknown>;

function obj(v: unknown): Msg {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Msg) : {};
}
function str(v: unknown): string | undefined {
  return typeof v === 'string' && v !== '' ? v : undefined;
}

/**
 * Map an Envoy CheckRequest to the request the authorizer decides: method,
 * path (with query), host and lower-case headers from `attributes.request.http`;
 * the peer certificate from `attributes.source.certificate` (URL-encoded PEM).
 *
 * @example
 * checkRequestToHttp({ attributes: { request: { http: { method: 'GET', path: '/hello', host: 'api', headers: {} } } } });
 */
export function checkRequestToHttp(request: unknown): HttpCheck {
  const attrs = obj(obj(request).attributes);
  const http = obj(obj(attrs.request).http);
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(obj(http.headers))) if (typeof v === 'string') headers[k.toLowerCase()] = v;
  const cert = str(obj(attrs.source).certificate);
  return {
    method: str(http.method) ?? '',
    path: str(http.path) ?? '',
    ...(str(http.host) === undefined ? {} : { host: str(http.host) }),
    headers,
    ...(cert === undefined ? {} : { peerCertificate: cert }),
  };
}

function header(key: string, value: string): Msg {
  return { header: { key, value }, append: { value: false } };
}

/**
 * Build the CheckResponse for a decision: OK with `ok_response.headers`
 * (`x-writ-spiffe-id`, `x-writ-decision-id`) and the inbound `authorization`
 * removed, or PERMISSION_DENIED / UNAUTHENTICATED with a `denied_response`
 * (403/401, JSON body with the reason code).
 *
 * @example
 * callback(null, checkResponseOf(await authorizer.check(checkRequestToHttp(call.request))));
 */
export function checkResponseOf(r: CheckResult): Msg {
  if (r.allow) {
    return {
      status: { code: GRPC_OK, message: '' },
      ok_response: {
        headers: Object.entries(r.upstreamHeaders).map(([k, v]) => header(k, v)),
        // The caller's credential is for this hop only.
        headers_to_remove: ['authorization'],
      },
    };
  }
  return {
    status: { code: r.status === 401 ? GRPC_UNAUTHENTICATED : GRPC_PERMISSION_DENIED, message: r.code },
    denied_response: {
      status: { code: r.status === 401 ? 'Unauthorized' : 'Forbidden' },
      headers: deniedHeaders(r).map(([k, v]) => header(k, v)),
      body: JSON.stringify(denyBody(r)),
    },
  };
}

function deniedHeaders(r: CheckDenied): [string, string][] {
  const h: [string, string][] = [['content-type', 'application/json'], ['x-writ-decision-id', r.decisionId]];
  if (r.wwwAuthenticate !== undefined) h.push(['www-authenticate', r.wwwAuthenticate]);
  return h;
}

/** What a decision log line holds (never a token or certificate). */
export interface DecisionLogLine {
  readonly via: 'grpc' | 'http';
  readonly allow: boolean;
  readonly method: string;
  readonly path: string;
  readonly spiffeId?: string;
  readonly code?: string;
  readonly decisionId: string;
}

/** Options of the ext-authz servers. */
export interface ExtAuthzOptions {
  readonly authorizer: HttpAuthorizer;
  /** Called once per decision (the PDP audits; this is the operator's log). */
  readonly log?: (line: DecisionLogLine) => void;
}

function logLine(via: 'grpc' | 'http', req: HttpCheck, r: CheckResult): DecisionLogLine {
  const path = (req.path.split('?')[0] ?? '').slice(0, 256);
  const spiffeId = r.caller?.spiffeId;
  return { via, allow: r.allow, method: req.method.slice(0, 16), path, ...(spiffeId === undefined ? {} : { spiffeId }), ...(r.allow ? {} : { code: r.code }), decisionId: r.decisionId };
}

/**
 * A gRPC server (not yet bound) serving `envoy.service.auth.v3.Authorization`.
 *
 * @example
 * const server = extAuthzGrpcServer({ authorizer });
 * server.bindAsync('127.0.0.1:9001', grpc.ServerCredentials.createInsecure(), () => undefined);
 */
export function extAuthzGrpcServer(o: ExtAuthzOptions): grpc.Server {
  const def = loadExtAuthzDefinition();
  const service = def['envoy.service.auth.v3.Authorization'] as grpc.ServiceDefinition;
  const server = new grpc.Server();
  server.addService(service, {
    Check: (call: grpc.ServerUnaryCall<Msg, Msg>, callback: grpc.sendUnaryData<Msg>) => {
      const req = checkRequestToHttp(call.request);
      o.authorizer.check(req).then(
        (r) => {
          o.log?.(logLine('grpc', req, r));
          callback(null, checkResponseOf(r));
        },
        () => callback(null, { status: { code: GRPC_PERMISSION_DENIED, message: 'ERR_ENFORCE_PDP_UNAVAILABLE' }, denied_response: { status: { code: 'Forbidden' }, body: '{"code":"ERR_ENFORCE_PDP_UNAVAILABLE"}' } }),
      );
    },
  });
  return server;
}

/** Headers that carry the original request when the authorizer is called as a subrequest (nginx `auth_request`). */
export const ORIGINAL_METHOD_HEADER = 'x-original-method';
export const ORIGINAL_URI_HEADER = 'x-original-uri';
/** Header a trusted TLS-terminating proxy sets to the caller's URL-encoded PEM certificate. */
export const CLIENT_CERT_HEADER = 'x-writ-client-cert';

/**
 * Map an HTTP-mode authorization request to the request to decide. Envoy's
 * HTTP mode sends the original method and path; nginx `auth_request` sends a
 * subrequest whose original method and URI are in `X-Original-Method` and
 * `X-Original-URI` (set them with `proxy_set_header`). `pathPrefix` (Envoy's
 * `path_prefix`) is stripped.
 *
 * @example
 * httpModeRequest(req, ''); // { method: 'GET', path: '/hello', host: 'api', headers: {…} }
 */
export function httpModeRequest(req: IncomingMessage, pathPrefix = '', trustClientCertHeader = false): HttpCheck {
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(req.headers)) {
    if (typeof v === 'string') headers[k] = v;
    else if (Array.isArray(v)) headers[k] = v.join(', ');
  }
  let path = headers[ORIGINAL_URI_HEADER] ?? req.url ?? '';
  if (headers[ORIGINAL_URI_HEADER] === undefined && pathPrefix !== '' && path.startsWith(pathPrefix)) path = path.slice(pathPrefix.length) || '/';
  const method = headers[ORIGINAL_METHOD_HEADER] ?? req.method ?? '';
  const host = headers['x-forwarded-host'] ?? headers.host;
  const cert = trustClientCertHeader ? headers[CLIENT_CERT_HEADER] : undefined;
  return { method, path, ...(host === undefined ? {} : { host }), headers, ...(cert === undefined || cert === '' ? {} : { peerCertificate: cert }) };
}

/** Options of the HTTP-mode server. */
export interface HttpModeOptions extends ExtAuthzOptions {
  /** Envoy `path_prefix` to strip from the request path. */
  readonly pathPrefix?: string;
  /**
   * Read the caller's certificate from `X-Writ-Client-Cert` (URL-encoded PEM).
   * Only when the one proxy that reaches this listener sets (and overwrites) it.
   */
  readonly trustClientCertHeader?: boolean;
}

/**
 * The HTTP-mode authorizer: `200` with `x-writ-spiffe-id` and
 * `x-writ-decision-id` allows; `401` (with `WWW-Authenticate`) or `403` with a
 * JSON `{code, message, decisionId}` body denies.
 *
 * @example
 * const server = extAuthzHttpServer({ authorizer });
 * server.listen(9002, '127.0.0.1');
 */
export function extAuthzHttpServer(o: HttpModeOptions): Server {
  return createServer((req: IncomingMessage, res: ServerResponse) => {
    // The body is never needed; drain it.
    req.resume();
    const check = httpModeRequest(req, o.pathPrefix ?? '', o.trustClientCertHeader ?? false);
    o.authorizer.check(check).then(
      (r) => {
        o.log?.(logLine('http', check, r));
        if (r.allow) {
          res.writeHead(200, { ...r.upstreamHeaders, 'content-length': '0' });
          res.end();
          return;
        }
        const body = JSON.stringify(denyBody(r));
        res.writeHead(r.status, Object.fromEntries([...deniedHeaders(r), ['content-length', String(Buffer.byteLength(body))]]));
        res.end(body);
      },
      () => {
        res.writeHead(403, { 'content-type': 'application/json' });
        res.end('{"code":"ERR_ENFORCE_PDP_UNAVAILABLE","message":"authorizer failed"}');
      },
    );
  });
}
