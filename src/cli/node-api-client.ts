/**
 * The agent's client of the Writ server's node API (docs/identity-api.md):
 * `POST /node/v1/attest` with the evidence and a public key, then every call
 * signed with the node SVID key (`Authorization: WritNode <jws>`, bound to
 * method, path and body), and the public `GET /bundle`.
 *
 * Failures become WritErrors the agent classifies (node-api.ts): the server's
 * own code and status when it answered, `ERR_IDENTITY_AGENT_SERVER_UNAVAILABLE`
 * (503) when it could not be reached, `ERR_IDENTITY_AGENT_RESPONSE_INVALID`
 * when the answer is not what the API documents.
 */
import { systemClock, WritError } from '../kernel/index.ts';
import type { Clock } from '../kernel/index.ts';
import { agentErrors, signNodeRequest } from '../identity/index.ts';
import type { AgentEntry, AgentNodeCredential, IssuedJwtSvid, IssuedNodeSvid, IssuedX509Svid, NodeApi, NodeAttestationEvidence } from '../identity/index.ts';

const TIMEOUT_MS = 10_000;

function invalid(what: string): WritError {
  return agentErrors.error('ERR_IDENTITY_AGENT_RESPONSE_INVALID', `the server's answer has no valid ${what}`);
}

function obj(v: unknown, what: string): Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw invalid(what);
  return v as Record<string, unknown>;
}

function str(v: unknown, what: string): string {
  if (typeof v !== 'string' || v === '') throw invalid(what);
  return v;
}

function time(v: unknown, what: string): number {
  const ms = Date.parse(str(v, what));
  if (!Number.isFinite(ms)) throw invalid(what);
  return ms;
}

function chain(v: unknown): Uint8Array[] {
  if (!Array.isArray(v) || v.length === 0) throw invalid('certificate chain');
  return v.map((c) => new Uint8Array(Buffer.from(str(c, 'certificate chain'), 'base64')));
}

function svidOf(v: unknown): { spiffeId: string; certChainDer: Uint8Array[]; notBeforeMs: number; notAfterMs: number } {
  const s = obj(v, 'svid');
  return { spiffeId: str(s.spiffeId, 'svid.spiffeId'), certChainDer: chain(s.certChain), notBeforeMs: time(s.notBefore, 'svid.notBefore'), notAfterMs: time(s.notAfter, 'svid.notAfter') };
}

/**
 * @example
 * const api = new HttpNodeApi('http://127.0.0.1:7400');
 * const issued = await api.attest({ kind: 'join_token', token }, spkiDer);
 */
export class HttpNodeApi implements NodeApi {
  readonly #base: string;
  readonly #clock: Clock;

  constructor(serverUrl: string, clock: Clock = systemClock) {
    this.#base = serverUrl.replace(/\/+$/, '');
    this.#clock = clock;
  }

  async #call(method: 'GET' | 'POST', path: string, body: unknown, credential: AgentNodeCredential | undefined): Promise<unknown> {
    const text = body === undefined ? undefined : JSON.stringify(body);
    const headers: Record<string, string> = { accept: 'application/json' };
    if (text !== undefined) headers['content-type'] = 'application/json';
    if (credential !== undefined) {
      headers.authorization = await signNodeRequest({ chain: credential.certChainDer, privateKey: credential.privateKeyPkcs8Der }, { method, path, ...(text === undefined ? {} : { body: text }) }, this.#clock);
    }
    let res: Response;
    let answer: string;
    try {
      res = await fetch(`${this.#base}${path}`, { method, headers, ...(text === undefined ? {} : { body: text }), signal: AbortSignal.timeout(TIMEOUT_MS) });
      answer = await res.text();
    } catch (e) {
      const why = (e as { cause?: { code?: string } }).cause?.code ?? (e as Error).name;
      throw agentErrors.error('ERR_IDENTITY_AGENT_SERVER_UNAVAILABLE', `cannot reach the writ server at ${this.#base} (${why})`, { cause: e });
    }
    let json: unknown;
    try {
      json = answer === '' ? undefined : JSON.parse(answer);
    } catch {
      json = undefined;
    }
    if (res.status >= 400) {
      const err = (json ?? {}) as { code?: unknown; message?: unknown };
      const code = typeof err.code === 'string' && /^ERR_[A-Z0-9_]+$/.test(err.code) ? err.code : `HTTP_${res.status}`;
      const message = typeof err.message === 'string' ? err.message.slice(0, 500) : `the writ server answered ${res.status}`;
      throw new WritError(code, res.status, message);
    }
    if (json === undefined) throw agentErrors.error('ERR_IDENTITY_AGENT_RESPONSE_INVALID', `the server's answer to ${method} ${path} is not JSON`);
    return json;
  }

  async attest(evidence: NodeAttestationEvidence, publicKey: Uint8Array): Promise<IssuedNodeSvid> {
    const r = obj(await this.#call('POST', '/node/v1/attest', { method: evidence.kind, token: evidence.token, publicKey: Buffer.from(publicKey).toString('base64') }, undefined), 'attestation');
    return svidOf(r.svid);
  }

  async renew(credential: AgentNodeCredential, publicKey: Uint8Array): Promise<IssuedNodeSvid> {
    const r = obj(await this.#call('POST', '/node/v1/renew', { publicKey: Buffer.from(publicKey).toString('base64') }, credential), 'renewal');
    return svidOf(r.svid);
  }

  async fetchEntries(credential: AgentNodeCredential): Promise<readonly AgentEntry[]> {
    const r = obj(await this.#call('GET', '/node/v1/entries', undefined, credential), 'entry list');
    if (!Array.isArray(r.entries)) throw invalid('entries');
    return r.entries.map((raw) => {
      const e = obj(raw, 'entry');
      const selectors = Array.isArray(e.selectors) ? e.selectors.map((s) => str(s, 'entry selector')) : [];
      const dnsNames = Array.isArray(e.dnsNames) ? e.dnsNames.map((s) => str(s, 'entry DNS name')) : [];
      return { id: str(e.id, 'entry id'), spiffeId: str(e.spiffeId, 'entry spiffeId'), selectors, dnsNames, revision: String(e.revision ?? '') };
    });
  }

  async issueX509(credential: AgentNodeCredential, entryId: string, publicKey: Uint8Array): Promise<IssuedX509Svid> {
    const r = obj(await this.#call('POST', '/node/v1/svid/x509', { entryId, publicKey: Buffer.from(publicKey).toString('base64') }, credential), 'X.509-SVID');
    return svidOf(r.svid);
  }

  async issueJwt(credential: AgentNodeCredential, entryId: string, audience: readonly string[]): Promise<IssuedJwtSvid> {
    const r = obj(await this.#call('POST', '/node/v1/svid/jwt', { entryId, audience }, credential), 'JWT-SVID');
    return { spiffeId: str(r.spiffeId, 'spiffeId'), token: str(r.token, 'token'), issuedAtMs: time(r.issuedAt, 'issuedAt'), expiresAtMs: time(r.expiresAt, 'expiresAt') };
  }

  async fetchBundle(_credential: AgentNodeCredential): Promise<object> {
    // SPIFFE bundle endpoint: public, no client authentication.
    return obj(await this.#call('GET', '/bundle', undefined, undefined), 'bundle');
  }
}
