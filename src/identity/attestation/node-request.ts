/**
 * Authentication of node API calls by the node SVID: a signed request.
 *
 * On the server's mutual-TLS listener the node SVID is the TLS client
 * certificate; elsewhere (no TLS listener, a proxy terminating TLS) an agent
 * proves it holds its node SVID's private key on every call with a compact
 * JWS in `Authorization: WritNode <jws>`:
 *
 * - protected header `{alg, typ: "writ-node-request+jwt", x5c: [node SVID chain, DER base64, leaf first]}`;
 * - payload `{htm, htu, bh, iat, exp, jti}`: the HTTP method, the path with its
 *   query, base64url SHA-256 of the body (of the empty string when there is
 *   none), issue and expiry times (at most {@link MAX_NODE_REQUEST_TTL_S}
 *   seconds apart) and a unique id.
 *
 * The server validates the chain as an X.509-SVID against its own bundle
 * (X509-SVID §5), requires a node SPIFFE ID (`/writ/node/<id>`), verifies the
 * signature with the leaf's key, binds the signature to this request (method,
 * path, body) and refuses a `jti` it has seen (replay cache shared by
 * replicas). The threat model is in docs/identity-api.md.
 */
import { X509Certificate, createHash, createPrivateKey, randomBytes } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { CompactSign, compactVerify, decodeProtectedHeader } from 'jose';
import type { BundleLookup } from '../bundle.ts';
import type { Clock } from '../../kernel/index.ts';
import type { TrustDomain } from '../../kernel/index.ts';
import { validateX509Svid } from '../x509-svid.ts';
import { algOfKeyObject } from '../keys.ts';
import type { CryptoKey, JwtSvidAlg } from '../keys.ts';
import { nodeIdOf } from '../entries.ts';
import type { ReplayCache } from '../ports.ts';
import { attestationErrors } from './errors.ts';

/** The authorization scheme. */
export const NODE_AUTH_SCHEME = 'WritNode';
/** The JWS `typ` of a node request signature. */
export const NODE_REQUEST_TYP = 'writ-node-request+jwt';
/** Longest lifetime of one request signature, in seconds. */
export const MAX_NODE_REQUEST_TTL_S = 60;
/** Tolerated clock skew, in seconds. */
const SKEW_S = 30;
const MAX_JWS_BYTES = 32 * 1024;
const ALGS = ['ES256', 'ES384', 'ES512', 'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512'];

/** base64url SHA-256 of a request body (`''` when there is none). */
export function bodyHash(body: string | Uint8Array | undefined): string {
  return createHash('sha256').update(body ?? '').digest('base64url');
}

/** What a node needs to sign its requests: its node SVID chain and private key. */
export interface NodeRequestSigner {
  /** DER chain of the node SVID, leaf first. */
  readonly chain: readonly Uint8Array[];
  /** The node key: a CryptoKey, a KeyObject, or PKCS#8 DER bytes. */
  readonly privateKey: CryptoKey | KeyObject | Uint8Array;
  /** Default: ES256/ES384/ES512 by curve, RS256 for RSA. */
  readonly alg?: JwtSvidAlg;
}

/**
 * Sign one node API request; the result goes in `Authorization`.
 *
 * @example
 * const auth = await signNodeRequest({ chain, privateKey }, { method: 'POST', path: '/node/v1/svid/jwt', body }, clock);
 * await fetch(url + '/node/v1/svid/jwt', { method: 'POST', headers: { authorization: auth, 'content-type': 'application/json' }, body });
 */
export async function signNodeRequest(cred: NodeRequestSigner, request: { method: string; path: string; body?: string }, clock: Clock): Promise<string> {
  const key = cred.privateKey instanceof Uint8Array ? createPrivateKey({ key: Buffer.from(cred.privateKey), format: 'der', type: 'pkcs8' }) : cred.privateKey;
  const alg = cred.alg ?? (isKeyObject(key) ? algOfKeyObject(key) : undefined);
  if (alg === undefined) throw new TypeError('signNodeRequest needs `alg` for this key');
  const iat = Math.floor(clock.nowMs() / 1000);
  const payload = { htm: request.method.toUpperCase(), htu: request.path, bh: bodyHash(request.body), iat, exp: iat + MAX_NODE_REQUEST_TTL_S, jti: randomBytes(16).toString('base64url') };
  const jws = await new CompactSign(new TextEncoder().encode(JSON.stringify(payload)))
    .setProtectedHeader({ alg, typ: NODE_REQUEST_TYP, x5c: cred.chain.map((d) => Buffer.from(d).toString('base64')) })
    .sign(key);
  return `${NODE_AUTH_SCHEME} ${jws}`;
}

function isKeyObject(k: CryptoKey | KeyObject): k is KeyObject {
  return typeof (k as KeyObject).export === 'function' && typeof (k as KeyObject).asymmetricKeyType !== 'undefined';
}

/** A verified node request. */
export interface AuthenticatedNode {
  readonly nodeId: string;
  readonly spiffeId: string;
  /** Hex serial of the node SVID that signed. */
  readonly serialNumber: string;
  readonly svidExpiresAt: Date;
}

function unauthenticated(message: string, cause?: unknown): Error {
  return attestationErrors.error('ERR_ATTEST_NODE_UNAUTHENTICATED', message, cause === undefined ? undefined : { cause });
}

/**
 * Verify the `Authorization` header of a node API request.
 *
 * @example
 * const node = await verifyNodeRequest(req.headers.authorization, { method, path, body }, { trustDomain, bundle, clock, replay });
 */
export async function verifyNodeRequest(
  authorization: unknown,
  request: { method: string; path: string; body: string | Uint8Array | undefined },
  ctx: { trustDomain: TrustDomain; bundle: BundleLookup; clock: Clock; replay: ReplayCache },
): Promise<AuthenticatedNode> {
  if (typeof authorization !== 'string' || !authorization.startsWith(`${NODE_AUTH_SCHEME} `)) throw unauthenticated(`node API calls need the node SVID as TLS client certificate (on the mutual-TLS listener) or \`Authorization: ${NODE_AUTH_SCHEME} <signed request>\``);
  const jws = authorization.slice(NODE_AUTH_SCHEME.length + 1).trim();
  if (jws.length > MAX_JWS_BYTES) throw unauthenticated('node request signature is too long');
  let header: ReturnType<typeof decodeProtectedHeader>;
  try {
    header = decodeProtectedHeader(jws);
  } catch {
    throw unauthenticated('node request signature is not a compact JWS');
  }
  if (header.typ !== NODE_REQUEST_TYP) throw unauthenticated(`node request signature must have \`typ\` \`${NODE_REQUEST_TYP}\``);
  const x5c = header.x5c;
  if (!Array.isArray(x5c) || x5c.length === 0 || x5c.length > 8 || !x5c.every((c) => typeof c === 'string')) throw unauthenticated('node request signature has no `x5c` chain');
  let svid: ReturnType<typeof validateX509Svid>;
  try {
    // X509-SVID §5: the chain must be a valid SVID of our own trust domain's bundle.
    svid = validateX509Svid(x5c.map((c) => new Uint8Array(Buffer.from(c, 'base64'))), ctx.bundle, ctx.clock);
  } catch (e) {
    throw unauthenticated('node request is not signed by a valid node SVID of this trust domain', e);
  }
  const spiffeId = svid.spiffeId.toString();
  const nodeId = nodeIdOf(ctx.trustDomain, spiffeId);
  if (nodeId === undefined) throw unauthenticated('node request is signed by an SVID that is not a node SVID');
  const leaf = new X509Certificate(svid.leaf);
  let payload: Record<string, unknown>;
  try {
    const { payload: bytes } = await compactVerify(jws, leaf.publicKey, { algorithms: ALGS });
    payload = JSON.parse(new TextDecoder().decode(bytes)) as Record<string, unknown>;
  } catch (e) {
    throw unauthenticated('node request signature does not verify with the node SVID key', e);
  }
  if (payload === null || typeof payload !== 'object') throw unauthenticated('node request signature payload is not an object');
  const { htm, htu, bh, iat, exp, jti } = payload;
  if (htm !== request.method.toUpperCase() || htu !== request.path) throw unauthenticated('node request signature is for another method or path');
  if (bh !== bodyHash(request.body)) throw unauthenticated('node request signature is for another body');
  if (typeof iat !== 'number' || typeof exp !== 'number' || typeof jti !== 'string' || jti.length < 16 || jti.length > 128) throw unauthenticated('node request signature needs `iat`, `exp` and `jti`');
  const now = ctx.clock.nowMs() / 1000;
  if (exp - iat > MAX_NODE_REQUEST_TTL_S || iat > now + SKEW_S || exp < now - SKEW_S) throw unauthenticated('node request signature is expired or not yet valid');
  if (!(await ctx.replay.remember(`node-request:${jti}`, new Date((exp + SKEW_S) * 1000).toISOString(), ctx.clock.now().toISOString()))) {
    throw unauthenticated('node request signature was already used');
  }
  return Object.freeze({ nodeId, spiffeId, serialNumber: leaf.serialNumber.toLowerCase(), svidExpiresAt: svid.expiresAt });
}
