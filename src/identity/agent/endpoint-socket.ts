/**
 * The Workload API endpoint address, as carried by `SPIFFE_ENDPOINT_SOCKET`
 * (SPIFFE Workload Endpoint, "Locating the Endpoint"): either
 * `unix:///absolute/path` or `tcp://<IP>:<port>`, and nothing else.
 */
import { isIP } from 'node:net';
import { agentErrors } from './errors.ts';

/** Name of the environment variable clients fall back to. */
export const SPIFFE_ENDPOINT_SOCKET = 'SPIFFE_ENDPOINT_SOCKET';

/** A parsed Workload API endpoint address. */
export type EndpointAddress =
  | { readonly kind: 'unix'; readonly path: string }
  | { readonly kind: 'tcp'; readonly host: string; readonly port: number; readonly family: 4 | 6 };

/**
 * Parse a `SPIFFE_ENDPOINT_SOCKET` value.
 *
 * @example
 * parseEndpointSocket('unix:///run/writ/agent.sock'); // { kind: 'unix', path: '/run/writ/agent.sock' }
 * parseEndpointSocket('tcp://127.0.0.1:8081');        // { kind: 'tcp', host: '127.0.0.1', port: 8081, family: 4 }
 */
export function parseEndpointSocket(value: string): EndpointAddress {
  const bad = (why: string): Error =>
    agentErrors.error('ERR_IDENTITY_ENDPOINT_SOCKET_INVALID', `invalid workload endpoint \`${printable(value)}\`: ${why}`);
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw bad('not a URI');
  }
  if (url.username !== '' || url.password !== '') throw bad('user info is not allowed');
  if (url.search !== '' || value.includes('?')) throw bad('a query is not allowed');
  if (url.hash !== '' || value.includes('#')) throw bad('a fragment is not allowed');

  if (url.protocol === 'unix:') {
    // Only the `unix:///abs/path` form: an empty authority and an absolute path.
    if (!value.startsWith('unix:///')) throw bad('a unix address must be `unix:///absolute/path`');
    let path: string;
    try {
      path = decodeURIComponent(url.pathname);
    } catch {
      throw bad('the path has a malformed percent-encoding');
    }
    if (path === '/' || path.endsWith('/')) throw bad('a unix address must name a socket file');
    if (/[\u0000-\u001f\u007f]/.test(path)) throw bad('a unix path must not hold control characters');
    return Object.freeze({ kind: 'unix', path });
  }
  if (url.protocol === 'tcp:') {
    if (url.pathname !== '' && url.pathname !== '/') throw bad('a tcp address must not have a path');
    if (value.endsWith('/')) throw bad('a tcp address must not have a path');
    const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
    const family = isIP(host);
    if (family !== 4 && family !== 6) throw bad('a tcp address must use an IP address, not a host name');
    if (url.port === '') throw bad('a tcp address must have a port');
    const port = Number(url.port);
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw bad('the port must be 1 to 65535');
    return Object.freeze({ kind: 'tcp', host, port, family });
  }
  throw bad('the scheme must be `unix` or `tcp`');
}

/**
 * The gRPC target string for an endpoint address. grpc-js has no `tcp://`
 * scheme; IP addresses use its `ipv4:`/`ipv6:` schemes.
 *
 * @example
 * grpcTargetOf(parseEndpointSocket('tcp://127.0.0.1:8081')); // 'ipv4:127.0.0.1:8081'
 */
export function grpcTargetOf(address: EndpointAddress): string {
  if (address.kind === 'unix') return `unix://${address.path}`;
  return address.family === 4 ? `ipv4:${address.host}:${address.port}` : `ipv6:[${address.host}]:${address.port}`;
}

function printable(s: string): string {
  const cut = s.length > 128 ? `${s.slice(0, 128)}…` : s;
  return cut.replace(/[\u0000-\u001f\u007f`]/g, '?');
}
