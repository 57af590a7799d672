/**
 * The mutual-TLS listener (`tls.listen`).
 *
 * NOTE: it serves the *same* Fastify app as the plain listener: the HTTPS
 * server hands every request to `app.routing`, so both listeners share one
 * route table, one set of hooks (admin authentication, audit, metrics) and
 * one error shape, and a route cannot exist on one listener and be forgotten
 * on the other. Routes that care about the transport read the verified
 * client SVID from `req.clientCert` (set by {@link registerClientCertCheck});
 * it is always `none` on the plain listener.
 *
 * Server side: the listener presents an X.509-SVID of the server's own SPIFFE
 * ID (`spiffe://<td>/writ/server`, plus `tls.dnsNames`) issued by Writ's CA
 * for a key generated in memory, and swaps in a fresh one (new key) at half
 * its life with `setSecureContext`: no restart, open connections keep theirs.
 *
 * Client side: a certificate is requested but optional. A presented one must
 * be a valid X.509-SVID of the trust bundle (X509-SVID §5, validateX509Svid);
 * anything else is refused with `ERR_SERVER_CLIENT_CERT_INVALID` on every
 * route (fail closed), except where a route answers in its own protocol's
 * error shape (the OAuth endpoints: `invalid_client`), which it must do.
 */
import { constants, generateKeyPairSync } from 'node:crypto';
import { createServer } from 'node:https';
import type { Server } from 'node:https';
import type { PeerCertificate, TLSSocket } from 'node:tls';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Clock, WritConfig } from '../kernel/index.ts';
import { newCorrelationId } from '../kernel/index.ts';
import type { WritError } from '../kernel/index.ts';
import { certificatesToPem, validateX509Svid } from '../identity/index.ts';
import type { IdentityIssuer, ValidatedX509Svid, X509Svid } from '../identity/index.ts';
import { serverErrors } from './errors.ts';
import { toWritError } from './http-errors.ts';

/** What the TLS layer established about the caller. */
export type ClientCert =
  | { readonly status: 'none' }
  | { readonly status: 'valid'; readonly svid: ValidatedX509Svid }
  /** `reason` is the validation code (`ERR_IDENTITY_…`), safe to show. */
  | { readonly status: 'invalid'; readonly error: WritError; readonly reason: string };

declare module 'fastify' {
  interface FastifyRequest {
    /** The TLS client certificate of this request's connection, verified as an X.509-SVID (set by the onRequest hook). */
    clientCert: ClientCert | undefined;
  }
  interface FastifyContextConfig {
    /** The route refuses an invalid client certificate itself, in its own error shape. */
    ownClientCertErrors?: boolean;
  }
}

/** No client certificate (a plain connection, or none sent). */
export const NO_CLIENT_CERT: ClientCert = Object.freeze({ status: 'none' });
const NONE = NO_CLIENT_CERT;

interface Cached {
  readonly bundle: object;
  readonly result: ClientCert;
  readonly untilMs: number;
}

/** Per connection: the verdict, kept while the bundle is the same and the SVID has not expired. */
const verdicts = new WeakMap<object, Cached>();

function isTlsSocket(s: unknown): s is TLSSocket {
  return typeof s === 'object' && s !== null && (s as { encrypted?: unknown }).encrypted === true && typeof (s as TLSSocket).getPeerCertificate === 'function';
}

/** The certificates the peer sent, leaf first (DER). */
function peerChain(socket: TLSSocket): Uint8Array[] {
  const leaf = socket.getPeerCertificate(true) as PeerCertificate & { issuerCertificate?: PeerCertificate };
  const out: Uint8Array[] = [];
  const seen = new Set<string>();
  let c: (PeerCertificate & { issuerCertificate?: PeerCertificate }) | undefined = leaf;
  while (c !== undefined && c.raw !== undefined && !seen.has(c.fingerprint256) && out.length < 9) {
    seen.add(c.fingerprint256);
    out.push(new Uint8Array(c.raw));
    c = c.issuerCertificate;
  }
  return out;
}

function completeChain(sent: readonly Uint8Array[], known: readonly Uint8Array[]): Uint8Array[] {
  const seen = new Set(sent.map((d) => Buffer.from(d).toString('base64')));
  const out = [...sent];
  for (const d of known) {
    const k = Buffer.from(d).toString('base64');
    if (seen.has(k) || out.length >= 8) continue;
    seen.add(k);
    out.push(d);
  }
  return out;
}

/**
 * The verified client certificate of a connection: `none` on a plain socket
 * or when the client sent none, `valid` with the SVID, or `invalid`.
 *
 * @example
 * const cert = clientCertOf(req.raw.socket, issuer, clock);
 * if (cert.status === 'valid') cert.svid.spiffeId.toString();
 */
export function clientCertOf(socket: unknown, issuer: IdentityIssuer, clock: Clock): ClientCert {
  if (!isTlsSocket(socket)) return NONE;
  const bundle = issuer.bundle();
  const now = clock.nowMs();
  const hit = verdicts.get(socket);
  if (hit !== undefined && hit.bundle === bundle && now <= hit.untilMs) return hit.result;
  const sent = peerChain(socket);
  // NOTE: on the server side Node exposes only the client's leaf (not the intermediates it sent), so
  // the path is completed with this CA's own intermediates; validateX509Svid still checks every link.
  const chain = sent.length === 0 ? sent : completeChain(sent, issuer.ca.x509Intermediates());
  let result: ClientCert;
  let untilMs = Number.POSITIVE_INFINITY;
  if (chain.length === 0) {
    result = NONE;
  } else {
    try {
      const svid = validateX509Svid(chain, bundle, clock);
      result = Object.freeze({ status: 'valid', svid });
      untilMs = svid.expiresAt.getTime();
    } catch (e) {
      const cause = toWritError(e);
      const error = serverErrors.error('ERR_SERVER_CLIENT_CERT_INVALID', `the TLS client certificate is not a valid X.509-SVID of a trusted trust domain (${cause.code}: ${cause.message})`, { cause: e });
      result = Object.freeze({ status: 'invalid', error, reason: cause.code });
    }
  }
  verdicts.set(socket, { bundle, result, untilMs });
  return result;
}

/**
 * onRequest hook: every request gets `req.clientCert`; a presented but
 * invalid certificate is refused (fail closed) unless the route refuses it
 * itself (`config.ownClientCertErrors`).
 *
 * @example
 * registerClientCertCheck(app, issuer, clock);
 */
export function registerClientCertCheck(app: FastifyInstance, issuer: IdentityIssuer, clock: Clock): void {
  app.decorateRequest('clientCert', undefined);
  app.addHook('onRequest', async (req: FastifyRequest) => {
    const cert = clientCertOf(req.raw.socket, issuer, clock);
    req.clientCert = cert;
    if (cert.status !== 'invalid') return;
    if (req.routeOptions.config.ownClientCertErrors === true) return;
    throw cert.error;
  });
}

/** When to replace an SVID: at half its life (never sooner than in 1 s). */
export function renewDelayMs(svid: Pick<X509Svid, 'issuedAt' | 'notAfter'>, nowMs: number): number {
  const half = svid.issuedAt.getTime() + (svid.notAfter.getTime() - svid.issuedAt.getTime()) / 2;
  return Math.max(1000, half - nowMs);
}

/** The running TLS listener. */
export interface TlsListener {
  /** `https://…` base URL to advertise (`tls.publicUrl`, or derived from the bound address). */
  readonly url: string;
  readonly port: number;
  readonly server: Server;
  /** The SVID being presented now. */
  current(): X509Svid;
  /** Issue a new server SVID (new key) and hot-swap it; the timer is re-armed. */
  rotate(): Promise<X509Svid>;
  /** Stop accepting, wait for open requests up to `drainMs`, then close the rest. */
  close(drainMs: number): Promise<void>;
}

function splitListen(listen: string): { host: string; port: number } {
  const i = listen.lastIndexOf(':');
  return { host: listen.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(listen.slice(i + 1)) };
}

const LOOPBACK_OR_ANY = new Set(['127.0.0.1', '::1', '0.0.0.0', '::', 'localhost']);

/**
 * Start the TLS listener for `app` (which must be ready to route).
 *
 * @example
 * const tls = await startTlsListener({ app, issuer, config, clock, log: app.log });
 * tls.url; // 'https://localhost:7443'
 */
export async function startTlsListener(o: { app: FastifyInstance; issuer: IdentityIssuer; config: WritConfig; clock: Clock; log: { info(obj: object, msg: string): void; error(obj: object, msg: string): void } }): Promise<TlsListener> {
  const { app, issuer, config } = o;
  const dnsNames = config['tls.dnsNames'].split(',').filter((d) => d !== '');
  const ctx = { actor: { type: 'system' as const, id: 'writ' } };

  const issue = async (): Promise<{ svid: X509Svid; key: string }> => {
    // The key is made here and never leaves this process (no store, no log).
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const svid = await issuer.issueServerSvid(publicKey.export({ format: 'pem', type: 'spki' }).toString(), dnsNames, { ...ctx, correlationId: newCorrelationId() });
    return { svid, key: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString() };
  };
  const contextOf = (c: { svid: X509Svid; key: string }) => ({
    key: c.key,
    cert: certificatesToPem(c.svid.chain),
    // The bundle's authorities, named to clients as the acceptable issuers; validateX509Svid decides.
    ca: issuer.bundle().toPem(),
  });

  let cur = await issue();
  const server = createServer({
    ...contextOf(cur),
    requestCert: true,
    // Validation is ours (SPIFFE rules, per trust domain), so OpenSSL must not drop cert-less clients.
    rejectUnauthorized: false,
    minVersion: 'TLSv1.2',
    // No session tickets: every connection proves its own client key in a full handshake.
    secureOptions: constants.SSL_OP_NO_TICKET,
    requestTimeout: config['http.requestTimeoutMs'],
    // As Fastify's own listener: idle keep-alive connections live 72 s.
    keepAliveTimeout: 72_000,
  }, (req, res) => app.routing(req, res));

  let timer: NodeJS.Timeout | undefined;
  let closed = false;
  const arm = (delayMs: number): void => {
    if (closed) return;
    if (timer !== undefined) clearTimeout(timer);
    timer = setTimeout(() => {
      rotate().catch((err: unknown) => {
        // The current SVID is still valid: try again sooner, well before it expires.
        o.log.error({ err }, 'server SVID rotation failed; retrying');
        arm(Math.max(1000, Math.min(30_000, (cur.svid.notAfter.getTime() - o.clock.nowMs()) / 4)));
      });
    }, delayMs);
    timer.unref();
  };
  const rotate = async (): Promise<X509Svid> => {
    const next = await issue();
    server.setSecureContext(contextOf(next));
    cur = next;
    o.log.info({ spiffeId: next.svid.spiffeId.toString(), serialNumber: next.svid.serialNumber.toLowerCase(), notAfter: next.svid.notAfter.toISOString() }, 'server SVID rotated');
    arm(renewDelayMs(next.svid, o.clock.nowMs()));
    return next.svid;
  };

  const { host, port } = splitListen(config['tls.listen']);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address();
  const actualPort = typeof addr === 'object' && addr !== null ? addr.port : port;
  const name = LOOPBACK_OR_ANY.has(host) ? (dnsNames[0] ?? 'localhost') : host.includes(':') ? `[${host}]` : host;
  const url = config['tls.publicUrl'] === '' ? `https://${name}:${actualPort}` : config['tls.publicUrl'];
  arm(renewDelayMs(cur.svid, o.clock.nowMs()));

  return {
    url,
    port: actualPort,
    server,
    current: () => cur.svid,
    rotate,
    async close(drainMs) {
      closed = true;
      if (timer !== undefined) clearTimeout(timer);
      const done = new Promise<void>((r) => server.close(() => r()));
      server.closeIdleConnections();
      let t: NodeJS.Timeout | undefined;
      const late = new Promise<'late'>((r) => {
        t = setTimeout(() => r('late'), drainMs);
      });
      if ((await Promise.race([done.then(() => 'done' as const), late])) === 'late') server.closeAllConnections();
      if (t !== undefined) clearTimeout(t);
      await done;
    },
  };
}
