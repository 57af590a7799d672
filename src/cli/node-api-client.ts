/**
 * The agent's client of the Writ server's node API (docs/identity-api.md):
 * `POST /node/v1/attest` with the evidence and a public key, then every call
 * authenticated by the node SVID, and the public `GET /bundle`.
 *
 * Once the agent holds a node SVID and knows the server's mutual-TLS listener
 * (from `--server-mtls`, or advertised by the server in the `mtls` member of
 * the attest, renew and entries answers), its calls go there with the node
 * SVID as TLS client certificate, and the server must present the X.509-SVID
 * `spiffe://<td>/writ/server` chaining to the trust bundle the agent holds;
 * anything else is refused before a byte of the request is sent. Without a
 * TLS listener, the calls are signed instead (`Authorization: WritNode <jws>`,
 * bound to method, path and body).
 *
 * Failures become WritErrors the agent classifies (node-api.ts): the server's
 * own code and status when it answered, `ERR_IDENTITY_AGENT_SERVER_UNAVAILABLE`
 * (503) when it could not be reached, `ERR_IDENTITY_AGENT_RESPONSE_INVALID`
 * when the answer is not what the API documents.
 */
import { createPrivateKey } from 'node:crypto';
import { request as httpsRequest } from 'node:https';
import type { PeerCertificate } from 'node:tls';
import { SpiffeId, systemClock, WritError } from '../kernel/index.ts';
import type { Clock } from '../kernel/index.ts';
import { TrustBundle, agentErrors, certificatesToPem, serverSpiffeId, signNodeRequest } from '../identity/index.ts';
import type { AgentEntry, AgentNodeCredential, AgentRevocation, IssuedJwtSvid, IssuedNodeSvid, IssuedX509Svid, NodeApi, NodeAttestationEvidence, RevocationListener } from '../identity/index.ts';
import type { IncomingMessage } from 'node:http';
import { parseSseFrame } from '../signals/index.ts';

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

/** Options of {@link HttpNodeApi}. */
export interface HttpNodeApiOptions {
  readonly clock?: Clock;
  /**
   * The server's mutual-TLS listener (`https://host:port`). When given, it is
   * used for every call made with a node credential and what the server
   * advertises is ignored; when absent, the advertised one is used.
   */
  readonly mtlsUrl?: string;
}

/** The URI SANs of a peer certificate (Node's `subjectaltname` text). */
function uriSans(cert: PeerCertificate): string[] {
  const out: string[] = [];
  for (const part of (cert.subjectaltname ?? '').split(', ')) if (part.startsWith('URI:')) out.push(part.slice(4));
  return out;
}

/**
 * @example
 * const api = new HttpNodeApi('http://127.0.0.1:7400');
 * const issued = await api.attest({ kind: 'join_token', token }, spkiDer);
 */
export class HttpNodeApi implements NodeApi {
  readonly #base: string;
  readonly #clock: Clock;
  readonly #pinnedMtls: string | undefined;
  #advertisedMtls: string | undefined;
  /** PEM of the X.509 authorities of the last bundle the server sent. */
  #bundlePem: string | undefined;

  constructor(serverUrl: string, options: Clock | HttpNodeApiOptions = {}) {
    this.#base = serverUrl.replace(/\/+$/, '');
    const o: HttpNodeApiOptions = 'nowMs' in options ? { clock: options } : options;
    this.#clock = o.clock ?? systemClock;
    if (o.mtlsUrl !== undefined) {
      let u: URL | undefined;
      try {
        u = new URL(o.mtlsUrl);
      } catch {
        u = undefined;
      }
      if (u?.protocol !== 'https:') throw new TypeError('the mutual-TLS URL must be https://host:port');
      this.#pinnedMtls = u.origin;
    }
  }

  /** The mutual-TLS base URL calls with a node credential go to, if any. */
  get mtlsUrl(): string | undefined {
    return this.#pinnedMtls ?? this.#advertisedMtls;
  }

  /**
   * Learn the advertised TLS listener and the bundle from an answer. Once
   * the agent talks mTLS, only answers that came over mTLS (from the server
   * it authenticated) may change them: a plain-HTTP answer cannot downgrade
   * or redirect it.
   */
  #learn(json: unknown, viaMtls: boolean): void {
    if (json === null || typeof json !== 'object') return;
    if (this.mtlsUrl !== undefined && this.#bundlePem !== undefined && !viaMtls) return;
    const r = json as { mtls?: { url?: unknown }; bundle?: unknown; keys?: unknown };
    if (r.mtls !== undefined && typeof r.mtls.url === 'string') {
      try {
        const u = new URL(r.mtls.url);
        if (u.protocol === 'https:') this.#advertisedMtls = u.origin;
      } catch {
        // not a URL: keep what we had
      }
    }
    const doc = r.bundle ?? (Array.isArray(r.keys) ? r : undefined);
    if (doc !== undefined) this.#rememberBundle(doc);
  }

  #rememberBundle(doc: unknown): void {
    try {
      // The trust domain is only a label here: the PEM is what TLS verification uses.
      const pem = TrustBundle.parse(doc, 'bundle.invalid').toPem();
      if (pem !== '') this.#bundlePem = pem;
    } catch {
      // an unusable bundle does not replace a usable one
    }
  }

  async #call(method: 'GET' | 'POST', path: string, body: unknown, credential: AgentNodeCredential | undefined): Promise<unknown> {
    const text = body === undefined ? undefined : JSON.stringify(body);
    const headers: Record<string, string> = { accept: 'application/json' };
    if (text !== undefined) headers['content-type'] = 'application/json';
    const mtls = this.mtlsUrl;
    let status: number;
    let answer: string;
    const viaMtls = credential !== undefined && mtls !== undefined;
    // Bootstrap (e.g. a restart with a saved credential): the bundle to verify the server with
    // comes from the public bundle endpoint, trusted on first use as the attestation answer is.
    if (viaMtls && this.#bundlePem === undefined) await this.#call('GET', '/bundle', undefined, undefined);
    if (viaMtls) {
      ({ status, answer } = await this.#mtlsCall(mtls, method, path, headers, text, credential));
    } else {
      if (credential !== undefined) {
        headers.authorization = await signNodeRequest({ chain: credential.certChainDer, privateKey: credential.privateKeyPkcs8Der }, { method, path, ...(text === undefined ? {} : { body: text }) }, this.#clock);
      }
      try {
        const res = await fetch(`${this.#base}${path}`, { method, headers, ...(text === undefined ? {} : { body: text }), signal: AbortSignal.timeout(TIMEOUT_MS) });
        answer = await res.text();
        status = res.status;
      } catch (e) {
        const why = (e as { cause?: { code?: string } }).cause?.code ?? (e as Error).name;
        throw agentErrors.error('ERR_IDENTITY_AGENT_SERVER_UNAVAILABLE', `cannot reach the writ server at ${this.#base} (${why})`, { cause: e });
      }
    }
    const res = { status };
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
    this.#learn(json, viaMtls);
    return json;
  }

  /**
   * One call over mutual TLS: the node SVID and its key as client
   * certificate; the server must present an X.509-SVID chaining to the
   * bundle with exactly the URI SAN `spiffe://<node's trust domain>/writ/server`.
   */
  #mtlsCall(base: string, method: string, path: string, headers: Record<string, string>, text: string | undefined, credential: AgentNodeCredential): Promise<{ status: number; answer: string }> {
    return new Promise((resolve, reject) => {
      this.#mtlsRequest(base, method, path, headers, text, credential, TIMEOUT_MS, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, answer: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', (e) => reject(agentErrors.error('ERR_IDENTITY_AGENT_SERVER_UNAVAILABLE', `the writ server at ${base} broke the connection`, { cause: e })));
      }, reject);
    });
  }

  /** One request over mutual TLS (see {@link #mtlsCall}); `onResponse` gets the answer as it streams in. */
  #mtlsRequest(base: string, method: string, path: string, headers: Record<string, string>, text: string | undefined, credential: AgentNodeCredential, timeoutMs: number, onResponse: (res: IncomingMessage) => void, reject: (err: unknown) => void, signal?: AbortSignal): void {
    const ca = this.#bundlePem;
    if (ca === undefined) {
      reject(agentErrors.error('ERR_IDENTITY_AGENT_SERVER_UNTRUSTED', `no trust bundle yet to verify the writ server at ${base}`));
      return;
    }
    const td = SpiffeId.parse(credential.spiffeId).trustDomain;
    const expected = serverSpiffeId(td);
    const url = new URL(path, base);
    {
      let untrusted: string | undefined;
      const req = httpsRequest({
        protocol: 'https:',
        hostname: url.hostname.replace(/^\[|\]$/g, ''),
        port: url.port === '' ? 443 : Number(url.port),
        path: url.pathname + url.search,
        method,
        headers: { ...headers, ...(text === undefined ? {} : { 'content-length': String(Buffer.byteLength(text)) }) },
        cert: certificatesToPem(credential.certChainDer),
        key: createPrivateKey({ key: Buffer.from(credential.privateKeyPkcs8Der), format: 'der', type: 'pkcs8' }).export({ format: 'pem', type: 'pkcs8' }).toString(),
        // OpenSSL validates the server's chain against the bundle's authorities (and serverAuth);
        // the SPIFFE ID replaces the host name check (X509-SVID §5).
        ca,
        rejectUnauthorized: true,
        checkServerIdentity: (_host, cert) => {
          const uris = uriSans(cert);
          if (uris.length === 1 && uris[0] === expected) return undefined;
          untrusted = `the writ server at ${base} presented ${uris.length === 1 ? `\`${(uris[0] ?? '').slice(0, 256)}\`` : `${uris.length} URI SANs`}, not \`${expected}\``;
          return new Error(untrusted);
        },
        agent: false,
        timeout: timeoutMs,
        ...(signal === undefined ? {} : { signal }),
      }, onResponse);
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', (e: NodeJS.ErrnoException) => {
        const code = e.code ?? e.message;
        if (untrusted !== undefined) reject(agentErrors.error('ERR_IDENTITY_AGENT_SERVER_UNTRUSTED', untrusted, { cause: e }));
        else if (/CERT|SELF_SIGNED|UNABLE_TO|SIGNATURE/.test(code)) reject(agentErrors.error('ERR_IDENTITY_AGENT_SERVER_UNTRUSTED', `the writ server at ${base} presented a certificate that does not chain to the trust bundle (${code})`, { cause: e }));
        else reject(agentErrors.error('ERR_IDENTITY_AGENT_SERVER_UNAVAILABLE', `cannot reach the writ server at ${base} (${code})`, { cause: e }));
      });
      if (text !== undefined) req.write(text);
      req.end();
    }
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

  /**
   * `GET /node/v1/revocations/stream` (Server-Sent Events) with the node
   * SVID as client certificate (or a signed request without mTLS), from
   * after `fromCursor`. Resolves when `signal` aborts; rejects when the
   * stream cannot be opened (the server's code) or ends. A connection that
   * brings neither an event nor a heartbeat for a minute is dropped.
   */
  async followRevocations(credential: AgentNodeCredential, fromCursor: number | undefined, listener: RevocationListener, signal: AbortSignal): Promise<void> {
    const path = '/node/v1/revocations/stream';
    const headers: Record<string, string> = { accept: 'text/event-stream' };
    if (fromCursor !== undefined) headers['last-event-id'] = String(fromCursor);
    const mtls = this.mtlsUrl;
    if (mtls !== undefined && this.#bundlePem === undefined) await this.#call('GET', '/bundle', undefined, undefined);
    const parser = new SseParser(listener);
    const check = async (status: number, read: () => Promise<string>): Promise<void> => {
      if (status === 200) return;
      const text = await read().catch(() => '');
      let err: { code?: unknown; message?: unknown } = {};
      try {
        err = JSON.parse(text) as typeof err;
      } catch {
        // not JSON: the status says it
      }
      const code = typeof err.code === 'string' && /^ERR_[A-Z0-9_]+$/.test(err.code) ? err.code : `HTTP_${status}`;
      throw new WritError(code, status, typeof err.message === 'string' ? err.message.slice(0, 500) : `the writ server answered ${status}`);
    };
    if (mtls !== undefined) {
      await new Promise<void>((resolve, reject) => {
        const done = (err?: unknown): void => (signal.aborted ? resolve() : err === undefined ? reject(agentErrors.error('ERR_IDENTITY_AGENT_SERVER_UNAVAILABLE', 'the revocation stream ended')) : reject(err));
        this.#mtlsRequest(mtls, 'GET', path, headers, undefined, credential, STREAM_IDLE_MS, (res) => {
          const status = res.statusCode ?? 0;
          if (status !== 200) {
            const chunks: Buffer[] = [];
            res.on('data', (c: Buffer) => chunks.push(c));
            res.on('end', () => void check(status, async () => Buffer.concat(chunks).toString('utf8')).catch(reject));
            return;
          }
          listener.opened();
          res.setEncoding('utf8');
          res.on('data', (c: string) => parser.push(c));
          res.on('end', () => done());
          res.on('error', (e) => done(signal.aborted ? undefined : agentErrors.error('ERR_IDENTITY_AGENT_SERVER_UNAVAILABLE', 'the revocation stream broke', { cause: e })));
          res.on('close', () => done());
        }, (e) => done(signal.aborted ? undefined : e), signal);
      });
      return;
    }
    headers.authorization = await signNodeRequest({ chain: credential.certChainDer, privateKey: credential.privateKeyPkcs8Der }, { method: 'GET', path }, this.#clock);
    let res: Response;
    try {
      res = await fetch(`${this.#base}${path}`, { headers, signal });
    } catch (e) {
      if (signal.aborted) return;
      throw agentErrors.error('ERR_IDENTITY_AGENT_SERVER_UNAVAILABLE', `cannot reach the writ server at ${this.#base}`, { cause: e });
    }
    await check(res.status, () => res.text());
    if (res.body === null) throw agentErrors.error('ERR_IDENTITY_AGENT_RESPONSE_INVALID', 'the revocation stream has no body');
    listener.opened();
    const decoder = new TextDecoder();
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) parser.push(decoder.decode(chunk, { stream: true }));
    } catch (e) {
      if (signal.aborted) return;
      throw agentErrors.error('ERR_IDENTITY_AGENT_SERVER_UNAVAILABLE', 'the revocation stream broke', { cause: e });
    }
    if (!signal.aborted) throw agentErrors.error('ERR_IDENTITY_AGENT_SERVER_UNAVAILABLE', 'the revocation stream ended');
  }

  async fetchBundle(credential: AgentNodeCredential): Promise<object> {
    // SPIFFE bundle endpoint: public, no client authentication needed; over mTLS once the agent
    // talks mTLS, so the bundle comes from the server it authenticated.
    return obj(await this.#call('GET', '/bundle', undefined, this.mtlsUrl === undefined || this.#bundlePem === undefined ? undefined : credential), 'bundle');
  }
}

/** A revocation stream connection with no byte for this long is dropped (heartbeats come every few seconds). */
const STREAM_IDLE_MS = 60_000;

/**
 * The Server-Sent Events frames of the node revocation stream: `revocation`
 * events (one JSON line of data) and `heartbeat` events (`{"cursor":n}`);
 * comments, `retry` and other events are ignored, as is an event that does
 * not parse.
 */
class SseParser {
  readonly #listener: RevocationListener;
  #buf = '';

  constructor(listener: RevocationListener) {
    this.#listener = listener;
  }

  push(text: string): void {
    this.#buf += text.replace(/\r\n?/g, '\n');
    if (this.#buf.length > 1_000_000) this.#buf = this.#buf.slice(-65_536);
    let end = this.#buf.indexOf('\n\n');
    while (end !== -1) {
      this.#frame(this.#buf.slice(0, end));
      this.#buf = this.#buf.slice(end + 2);
      end = this.#buf.indexOf('\n\n');
    }
  }

  #frame(text: string): void {
    const { event, data } = parseSseFrame(text);
    let o: unknown;
    try {
      o = JSON.parse(data);
    } catch {
      return;
    }
    if (o === null || typeof o !== 'object') return;
    const r = o as Record<string, unknown>;
    if (event === 'heartbeat') {
      if (typeof r.cursor === 'number' && Number.isSafeInteger(r.cursor) && r.cursor >= 0) this.#listener.heartbeat(r.cursor);
      return;
    }
    if (event !== 'revocation' || r.kind !== 'subject-revoked') return;
    if (typeof r.cursor !== 'number' || !Number.isSafeInteger(r.cursor) || typeof r.subject !== 'string' || typeof r.reason !== 'string' || typeof r.at !== 'string') return;
    const e: AgentRevocation = { cursor: r.cursor, subject: r.subject, reason: r.reason, at: r.at };
    this.#listener.revoked(e);
  }
}
