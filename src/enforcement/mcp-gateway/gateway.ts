/**
 * `writ mcp-gateway`: an authorizing gateway between MCP clients (agents) and
 * one upstream MCP server over Streamable HTTP (MCP 2025-11-25 transport,
 * `Mcp-Session-Id` sessions), following STANDARDS.md §5 "Gateway that
 * authorizes every tools/call":
 *
 * 1. it is an OAuth protected resource (RFC 9728 metadata; a 401 with
 *    `WWW-Authenticate: Bearer resource_metadata=…`) that accepts only Writ
 *    access tokens whose audience is the gateway ({@link AccessTokenVerifier});
 * 2. it parses each JSON-RPC message (no batches) and cross-checks the
 *    `Mcp-Method` / `Mcp-Name` headers when a client sends them;
 * 3. `tools/call`, `resources/read` and `prompts/get` are each an AuthZEN
 *    evaluation (COAZ-MCP mapping; subject = the agent, context = arguments,
 *    task and delegation chain) decided by Writ's PDP; `tools/list` answers
 *    are filtered with one batch evaluation; per-task budgets are charged;
 * 4. a deny is JSON-RPC error −32001 with the reason; a PDP that cannot
 *    answer is −32603 (fail closed either way);
 * 5. the upstream gets a token exchanged at Writ (RFC 8693; audience = the
 *    upstream, `act` keeps the agent), never the client's token;
 * 6. every decided call is audited with the agent, the principal it acts for,
 *    the task and the decision id.
 *
 * INVARIANT: allow is the only explicit branch; a method not on the
 * allow-list, an unknown session, a failed exchange or an unrecorded allow is
 * a deny.
 */
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { newCorrelationId } from '../../kernel/index.ts';
import type { RevocationEvent, RevocationQuery, RevocationStatus } from '../../signals/index.ts';
import type { AuditSink, Clock, WritError } from '../../kernel/index.ts';
import { enforcementErrors } from '../errors.ts';
import type { EnforcementErrorCode } from '../errors.ts';
import { evaluateAll } from '../pdp-client.ts';
import { challengeText } from '../challenge.ts';
import type { AccessRequest, PdpClient, PdpDecision } from '../pdp-client.ts';
import { AccessTokenVerifier, GATEWAY_DPOP_ALGS } from './access-token.ts';
import type { AgentIdentity } from './access-token.ts';
import { CallBudgets } from './budget.ts';
import type { TokenExchanger } from './exchange.ts';

/** JSON-RPC error code of an authorization deny (STANDARDS.md §5 step 4; not −32401). */
export const MCP_DENIED = -32001;
/** JSON-RPC internal error: the PDP (or the token exchange) could not answer. */
export const MCP_INTERNAL = -32603;
/** JSON-RPC invalid request. */
export const MCP_INVALID_REQUEST = -32600;
/** JSON-RPC parse error. */
export const MCP_PARSE_ERROR = -32700;
/** `Mcp-*` header and body disagree (MCP 2026-07-28 `HeaderMismatch`). */
export const MCP_HEADER_MISMATCH = -32020;

/** The MCP protocol versions the gateway forwards (`MCP-Protocol-Version`). */
export const MCP_PROTOCOL_VERSIONS: readonly string[] = ['2026-07-28', '2025-11-25', '2025-06-18', '2025-03-26'];

/** Methods forwarded without a decision of their own (the token was checked). */
const PASS_THROUGH = new Set([
  'initialize', 'ping', 'tools/list', 'resources/list', 'resources/templates/list', 'prompts/list',
  'completion/complete', 'logging/setLevel', 'resources/subscribe', 'resources/unsubscribe',
  // MCP 2026-07-28 (stateless): capability discovery instead of `initialize`.
  'server/discover',
]);

/** Request headers copied to the upstream; everything else (credentials first) stays here. */
const FORWARD_REQUEST = ['content-type', 'accept', 'mcp-session-id', 'mcp-protocol-version', 'last-event-id', 'mcp-method', 'mcp-name'];
/** Response headers copied back to the client. */
const FORWARD_RESPONSE = ['content-type', 'mcp-session-id', 'cache-control', 'mcp-protocol-version'];

/** One decided call, as logged (never a token). */
export interface McpDecisionLine {
  readonly allow: boolean;
  readonly method: string;
  readonly name?: string;
  readonly agent: string;
  readonly subject: string;
  readonly task?: string;
  readonly decisionId: string;
  readonly code?: string;
  readonly reason?: string;
}

/** Options of {@link McpGateway}, checked once. */
export interface McpGatewayOptions {
  readonly tokens: AccessTokenVerifier;
  readonly pdp: PdpClient;
  readonly exchanger: TokenExchanger;
  /** The upstream MCP endpoint (`http(s)://host:port/mcp`). */
  readonly upstream: string;
  /** The audience of the upstream token (default `upstream`). */
  readonly upstreamAudience?: string;
  /** The gateway's resource identifier: its public MCP URL, the audience its tokens must name. */
  readonly resource: string;
  /** Writ's issuer URL, listed in the protected resource metadata. */
  readonly authorizationServer: string;
  /** `context.mcp.server` of every evaluation (default the upstream audience). */
  readonly serverId?: string;
  readonly clock: Clock;
  readonly budgets?: CallBudgets;
  /** Where each decided call is recorded; an allow that cannot be recorded is refused. */
  readonly audit?: AuditSink;
  readonly log?: (line: McpDecisionLine) => void;
  /** RFC 9728 `scopes_supported`. */
  readonly scopesSupported?: readonly string[];
  /** Largest request body accepted (default 1 MiB). */
  readonly maxBodyBytes?: number;
  /** Upstream deadline for the response head (default 30 s). */
  readonly upstreamTimeoutMs?: number;
  /** Largest `tools/list` answer the gateway buffers to filter (default 4 MiB). */
  readonly maxListBytes?: number;
  readonly fetch?: typeof fetch;
  /**
   * The revocation state this gateway follows (a `RevocationStreamClient`):
   * a revoked agent, principal, actor or token is refused, and a stale
   * stream refuses everyone (fail closed).
   */
  readonly revocations?: { check(q: RevocationQuery): RevocationStatus };
  /**
   * Browser origins allowed to call (MCP Streamable HTTP: servers MUST
   * validate `Origin` against DNS rebinding). A request with any other
   * `Origin` is 403; requests without one (non-browser agents) pass. Default:
   * the origin of `resource`.
   */
  readonly allowedOrigins?: readonly string[];
}

interface Session {
  readonly id: string;
  readonly agent: string;
  readonly subject: string;
  readonly chain: readonly string[];
  /** The token last used on the session (a client refreshes its token within a session). */
  jti: string;
  expiresAtMs: number;
  closed: boolean;
}

interface JsonRpcMessage {
  readonly id: string | number | null | undefined;
  readonly method: string | undefined;
  readonly params: Record<string, unknown>;
}

interface Denial {
  readonly jsonRpcCode: number;
  readonly code: EnforcementErrorCode;
  readonly reason: string;
  readonly decisionId: string;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string | string[]> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store', ...headers });
  res.end(text);
}

function rpcError(id: JsonRpcMessage['id'], code: number, message: string, data?: Record<string, unknown>): unknown {
  return { jsonrpc: '2.0', id: id ?? null, error: { code, message, ...(data === undefined ? {} : { data }) } };
}

/** Decode an `Mcp-Name` value: plain ASCII, or `=?base64?…?=` (MCP 2026-07-28). */
function headerName(v: string): string | undefined {
  const m = /^=\?base64\?([A-Za-z0-9+/=]*)\?=$/.exec(v);
  if (m === null) return v;
  try {
    return Buffer.from(m[1] ?? '', 'base64').toString('utf8');
  } catch {
    return undefined;
  }
}

/**
 * The gateway: a request handler (`handle`) and, through {@link McpGateway.listen}, an HTTP server.
 *
 * @example
 * const gw = new McpGateway({ tokens, pdp, exchanger, upstream: 'http://127.0.0.1:8931/mcp', resource: 'http://127.0.0.1:7600/mcp', authorizationServer: writUrl, clock: systemClock });
 * gw.server().listen(7600, '127.0.0.1');
 * await gw.closeSessionsFor('spiffe://writ.local/agent/triage');
 */
export class McpGateway {
  readonly #o: McpGatewayOptions;
  readonly #resource: URL;
  readonly #mcpPath: string;
  readonly #upstreamAudience: string;
  readonly #serverId: string;
  readonly #fetch: typeof fetch;
  readonly #sessions = new Map<string, Session>();
  /** Token `jti` → expiry: tokens whose sessions were closed by revocation. */
  readonly #revoked = new Map<string, number>();
  /** Tool name → `annotations.readOnlyHint` as the upstream listed it. */
  readonly #readOnly = new Map<string, boolean>();

  constructor(o: McpGatewayOptions) {
    const up = new URL(o.upstream);
    if (up.protocol !== 'http:' && up.protocol !== 'https:') throw new TypeError('the upstream must be an http(s) URL');
    this.#resource = new URL(o.resource);
    if (this.#resource.hash !== '' || this.#resource.search !== '') throw new TypeError('the gateway resource must be a URL without query or fragment');
    this.#mcpPath = this.#resource.pathname === '' ? '/' : this.#resource.pathname;
    this.#upstreamAudience = o.upstreamAudience ?? o.upstream;
    this.#serverId = o.serverId ?? this.#upstreamAudience;
    this.#fetch = o.fetch ?? fetch;
    this.#o = o;
  }

  /** The protected resource metadata document (RFC 9728 §2). */
  metadata(): Record<string, unknown> {
    return {
      resource: this.#o.resource,
      authorization_servers: [this.#o.authorizationServer],
      bearer_methods_supported: ['header'],
      dpop_signing_alg_values_supported: [...GATEWAY_DPOP_ALGS],
      ...(this.#o.scopesSupported === undefined ? {} : { scopes_supported: [...this.#o.scopesSupported] }),
      resource_name: 'Writ MCP gateway',
    };
  }

  /** URL of the metadata document for this resource (RFC 9728 §3.1: well-known path before the resource path). */
  metadataUrl(): string {
    const path = this.#mcpPath === '/' ? '' : this.#mcpPath;
    return `${this.#resource.origin}/.well-known/oauth-protected-resource${path}`;
  }

  /** Live sessions (for metrics and tests). */
  get sessionCount(): number {
    return [...this.#sessions.values()].filter((s) => !s.closed).length;
  }

  /**
   * Close every session of `subject` (an agent, or a principal or actor of its
   * chain) — the hook for a revocation: later requests on those sessions get
   * 404, and the access tokens they were opened with are refused until they
   * expire. The upstream sessions are no longer routed to and are left to
   * time out there; their exchanged tokens are dropped.
   */
  async closeSessionsFor(subject: string): Promise<number> {
    this.#prune();
    let n = 0;
    const ends: Promise<void>[] = [];
    for (const s of this.#sessions.values()) {
      if (s.closed || (s.agent !== subject && s.subject !== subject && !s.chain.includes(subject))) continue;
      s.closed = true;
      n++;
      this.#revoked.set(s.jti, s.expiresAtMs);
      ends.push(this.#endUpstream(s));
    }
    await Promise.all(ends);
    return n;
  }

  /**
   * Apply one event of Writ's revocation stream: the sessions of a revoked
   * subject, or of the token or lease revoked, are closed.
   *
   * @example
   * new RevocationStreamClient({ url, token, clock, stalenessMs: 15_000, onEvent: (e) => void gateway.onRevocation(e) }).start();
   */
  async onRevocation(e: RevocationEvent): Promise<number> {
    let n = 0;
    if (e.subject !== undefined) n += await this.closeSessionsFor(e.subject);
    for (const id of [e.leaseId, e.tokenId]) {
      if (id === undefined) continue;
      for (const s of this.#sessions.values()) {
        if (s.closed || s.jti !== id) continue;
        s.closed = true;
        n++;
        this.#revoked.set(s.jti, s.expiresAtMs);
        await this.#endUpstream(s);
      }
    }
    return n;
  }

  /** Forget revoked tokens past their expiry and sessions closed past their token's expiry. */
  #prune(): void {
    const now = this.#o.clock.nowMs();
    for (const [jti, exp] of this.#revoked) if (exp <= now) this.#revoked.delete(jti);
    for (const [id, s] of this.#sessions) if (s.expiresAtMs <= now) this.#sessions.delete(id);
  }

  #revocationState(who: AgentIdentity): RevocationStatus {
    const r = this.#o.revocations;
    if (r === undefined) return 'clear';
    const queries: RevocationQuery[] = [{ subject: who.subject, leaseId: who.jti, tokenId: who.jti }, ...who.chain.map((a) => ({ subject: a }))];
    let out: RevocationStatus = 'clear';
    for (const q of queries) {
      const st = r.check(q);
      if (st === 'revoked') return 'revoked';
      if (st === 'stale') out = 'stale';
    }
    return out;
  }

  async #endUpstream(s: Session): Promise<void> {
    // NOTE: the upstream session is left to time out there; the gateway no longer routes to it.
    this.#o.exchanger.forget(s.jti);
  }

  /** An HTTP server serving the gateway. */
  server(): Server {
    const server = createServer((req, res) => {
      this.handle(req, res).catch(() => {
        if (!res.headersSent) sendJson(res, 500, rpcError(null, MCP_INTERNAL, 'gateway failure'));
        else res.destroy();
      });
    });
    return server;
  }

  /** Serve one HTTP request. */
  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = req.method ?? '';
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    if (path.startsWith('/.well-known/oauth-protected-resource')) {
      req.resume();
      if (method !== 'GET' && method !== 'HEAD') return sendJson(res, 405, { error: 'method not allowed' }, { allow: 'GET' });
      const rest = path.slice('/.well-known/oauth-protected-resource'.length);
      // RFC 9728 §3.1, MCP: the path-suffixed document, and the root as a fallback.
      if (rest !== '' && rest !== this.#mcpPath) return sendJson(res, 404, { error: 'not found' });
      return sendJson(res, 200, this.metadata(), { 'cache-control': 'public, max-age=300' });
    }
    if (path !== this.#mcpPath) {
      req.resume();
      return sendJson(res, 404, { error: 'not found' });
    }
    const origin = req.headers.origin;
    if (typeof origin === 'string' && !(this.#o.allowedOrigins ?? [this.#resource.origin]).includes(origin)) {
      req.resume();
      return sendJson(res, 403, rpcError(null, MCP_INVALID_REQUEST, `origin \`${origin.slice(0, 128)}\` is not allowed`));
    }
    if (method !== 'POST' && method !== 'GET' && method !== 'DELETE') {
      req.resume();
      return sendJson(res, 405, rpcError(null, MCP_INVALID_REQUEST, 'method not allowed'), { allow: 'GET, POST, DELETE' });
    }

    // 1. The caller: a Writ access token for this resource.
    let who: AgentIdentity;
    try {
      who = await this.#o.tokens.verify({ authorization: req.headers.authorization, dpop: this.#dpopHeaders(req), method, url: this.#resource.href });
    } catch (e) {
      req.resume();
      return this.#unauthorized(res, e);
    }
    const revokedUntil = this.#revoked.get(who.jti);
    if (revokedUntil !== undefined) {
      req.resume();
      return this.#unauthorized(res, enforcementErrors.error('ERR_ENFORCE_CREDENTIAL_REVOKED', 'access token was revoked'));
    }
    const state = this.#revocationState(who);
    if (state === 'stale') {
      req.resume();
      // The same code as the proxy and ext-authz; a temporary condition for an MCP client, hence 503.
      return sendJson(res, 503, rpcError(null, MCP_INTERNAL, 'revocation state is unknown (stream stale): refused', { code: 'ERR_ENFORCE_REVOCATION_STALE' }), { 'retry-after': '5' });
    }
    if (state === 'revoked') {
      req.resume();
      this.#revoked.set(who.jti, who.expiresAt.getTime());
      await this.closeSessionsFor(who.agent);
      return this.#unauthorized(res, enforcementErrors.error('ERR_ENFORCE_CREDENTIAL_REVOKED', 'access token was revoked'));
    }

    // 2. The session, when one is named, must be live and the caller's own.
    const sid = typeof req.headers['mcp-session-id'] === 'string' ? req.headers['mcp-session-id'] : undefined;
    const session = sid === undefined ? undefined : this.#sessions.get(sid);
    if (sid !== undefined && (session === undefined || session.closed || session.agent !== who.agent || session.subject !== who.subject)) {
      req.resume();
      // MCP Streamable HTTP: 404 tells the client to start a new session.
      return sendJson(res, 404, rpcError(null, MCP_INVALID_REQUEST, 'session not found'));
    }
    if (session !== undefined && session.jti !== who.jti) {
      session.jti = who.jti;
      session.expiresAtMs = who.expiresAt.getTime();
    }
    const version = req.headers['mcp-protocol-version'];
    if (typeof version === 'string' && !MCP_PROTOCOL_VERSIONS.includes(version)) {
      req.resume();
      return sendJson(res, 400, rpcError(null, MCP_INVALID_REQUEST, `unsupported MCP protocol version \`${version.slice(0, 32)}\``));
    }

    if (method === 'GET') return this.#forward(req, res, who, undefined, undefined, newCorrelationId());
    if (method === 'DELETE') {
      await this.#forward(req, res, who, undefined, undefined, newCorrelationId());
      if (session !== undefined && res.statusCode < 300) this.#sessions.delete(session.id);
      return;
    }

    // 3. One JSON-RPC message.
    let body: Buffer;
    try {
      body = await this.#readBody(req);
    } catch {
      return sendJson(res, 413, rpcError(null, MCP_INVALID_REQUEST, 'request body too large'));
    }
    let raw: unknown;
    try {
      raw = JSON.parse(body.toString('utf8'));
    } catch {
      return sendJson(res, 400, rpcError(null, MCP_PARSE_ERROR, 'request body is not JSON'));
    }
    // MCP 2025-06-18 removed JSON-RPC batching.
    if (Array.isArray(raw)) return sendJson(res, 400, rpcError(null, MCP_INVALID_REQUEST, 'JSON-RPC batches are not supported'));
    if (!isObject(raw) || raw.jsonrpc !== '2.0') return sendJson(res, 400, rpcError(null, MCP_INVALID_REQUEST, 'request body is not a JSON-RPC 2.0 message'));
    const id = typeof raw.id === 'string' || typeof raw.id === 'number' ? raw.id : raw.id === null ? null : undefined;
    const msg: JsonRpcMessage = { id, method: typeof raw.method === 'string' ? raw.method : undefined, params: isObject(raw.params) ? raw.params : {} };
    if (raw.method !== undefined && msg.method === undefined) return sendJson(res, 400, rpcError(id, MCP_INVALID_REQUEST, '`method` must be a string'));
    const mismatch = this.#headerMismatch(req, msg);
    if (mismatch !== undefined) return sendJson(res, 400, rpcError(id, MCP_HEADER_MISMATCH, mismatch));

    const correlationId = newCorrelationId();
    const m = msg.method;
    // A response or error from the client to a server request (sampling, elicitation): forwarded.
    if (m === undefined) return this.#forward(req, res, who, body, undefined, correlationId);
    if (m.startsWith('notifications/')) return this.#forward(req, res, who, body, undefined, correlationId);
    if (m === 'tools/call' || m === 'resources/read' || m === 'prompts/get') {
      const denial = await this.#authorize(who, msg, m, correlationId);
      if (denial !== undefined) return sendJson(res, 200, rpcError(id, denial.jsonRpcCode, `denied: ${denial.reason}`, { code: denial.code, reason: denial.reason, decisionId: denial.decisionId }), { 'x-writ-decision-id': denial.decisionId });
      return this.#forward(req, res, who, body, undefined, correlationId);
    }
    if (m === 'tools/list') return this.#forward(req, res, who, body, msg, correlationId);
    if (PASS_THROUGH.has(m)) return this.#forward(req, res, who, body, m === 'initialize' ? msg : undefined, correlationId);
    await this.#record(who, msg, m, undefined, { allow: false, code: 'ERR_ENFORCE_METHOD_NOT_ALLOWED', reason: `method \`${m.slice(0, 64)}\` is not forwarded`, decisionId: correlationId, cached: false }, correlationId).catch(() => undefined);
    return sendJson(res, 200, rpcError(id, MCP_DENIED, `denied: method \`${m.slice(0, 64)}\` is not forwarded by the gateway`, { code: 'ERR_ENFORCE_METHOD_NOT_ALLOWED', decisionId: correlationId }));
  }

  #dpopHeaders(req: IncomingMessage): string[] {
    const out: string[] = [];
    for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) if (req.rawHeaders[i]?.toLowerCase() === 'dpop') out.push(req.rawHeaders[i + 1] ?? '');
    return out;
  }

  #unauthorized(res: ServerResponse, e: unknown): void {
    const code: EnforcementErrorCode = enforcementErrors.is(e, 'ERR_ENFORCE_UNAUTHENTICATED', 'ERR_ENFORCE_DPOP_INVALID', 'ERR_ENFORCE_CREDENTIAL_REVOKED') ? e.code as EnforcementErrorCode : 'ERR_ENFORCE_CREDENTIAL_INVALID';
    const message = enforcementErrors.is(e, 'ERR_ENFORCE_UNAUTHENTICATED', 'ERR_ENFORCE_CREDENTIAL_INVALID', 'ERR_ENFORCE_DPOP_INVALID', 'ERR_ENFORCE_CREDENTIAL_REVOKED') ? (e as WritError).message : 'access token could not be validated';
    // RFC 9449 §7.1: a DPoP problem is answered under the DPoP scheme, with `invalid_dpop_proof` when the proof is at fault.
    const dpopError = code === 'ERR_ENFORCE_DPOP_INVALID' ? ((e as WritError).reasons[0] === 'invalid-dpop-proof' ? 'invalid_dpop_proof' : 'invalid_token') : undefined;
    const error = code === 'ERR_ENFORCE_UNAUTHENTICATED' ? undefined : dpopError ?? 'invalid_token';
    const scope = this.#o.scopesSupported !== undefined && this.#o.scopesSupported.length > 0 ? `scope="${this.#o.scopesSupported.join(' ')}"` : undefined;
    // RFC 9728 §5.1 and RFC 6750 §3: the metadata URL; `invalid_token` when a bearer token was sent.
    const bearer = [`resource_metadata="${this.metadataUrl()}"`, ...(error !== undefined && dpopError === undefined ? [`error="${error}"`] : []), ...(scope === undefined ? [] : [scope])];
    // RFC 9449 §7.1: both schemes are offered; the DPoP challenge names the proof algorithms accepted.
    const dpop = [`algs="${GATEWAY_DPOP_ALGS.join(' ')}"`, ...(dpopError === undefined ? [] : [`error="${dpopError}"`, `error_description="${challengeText(message)}"`]), ...(scope === undefined ? [] : [scope])];
    sendJson(res, 401, { error: error ?? 'unauthorized', error_description: message, code }, { 'www-authenticate': [`Bearer ${bearer.join(', ')}`, `DPoP ${dpop.join(', ')}`] });
  }

  #headerMismatch(req: IncomingMessage, msg: JsonRpcMessage): string | undefined {
    const hm = req.headers['mcp-method'];
    if (typeof hm === 'string' && hm !== (msg.method ?? '')) return '`Mcp-Method` does not match the body';
    const hn = req.headers['mcp-name'];
    if (typeof hn === 'string') {
      const name = msg.method === 'resources/read' ? msg.params.uri : msg.params.name;
      if (headerName(hn) !== name) return '`Mcp-Name` does not match the body';
    }
    return undefined;
  }

  async #readBody(req: IncomingMessage): Promise<Buffer> {
    const max = this.#o.maxBodyBytes ?? 1024 * 1024;
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const c of req) {
      const b = c as Buffer;
      size += b.length;
      if (size > max) {
        req.resume();
        throw new Error('too large');
      }
      chunks.push(b);
    }
    return Buffer.concat(chunks);
  }

  /** The AuthZEN evaluation of one call (COAZ-MCP mapping; docs/enforcement.md). */
  accessRequest(who: AgentIdentity, method: 'tools/call' | 'resources/read' | 'prompts/get', name: string, args: Record<string, unknown> | undefined, listing = false): AccessRequest {
    const resource = method === 'tools/call'
      ? { type: 'tool', id: name, properties: { readOnly: this.#readOnly.get(name) ?? false } }
      : method === 'resources/read'
        ? { type: 'resource', id: name, properties: { internetFacing: false, sensitivity: 'unknown' } }
        : { type: 'prompt', id: name };
    return {
      subject: { type: 'agent', id: who.agent, properties: { spiffeId: who.agent, labels: [] } },
      action: { name: method },
      resource,
      context: {
        mcp: {
          server: this.#serverId,
          tool: method === 'tools/call' ? name : '',
          // A listing has no arguments: `context.mcp has arguments` is false for it.
          ...(listing ? {} : method === 'tools/call' ? { arguments: args ?? {} } : method === 'resources/read' ? { uri: name } : { prompt: name, arguments: args ?? {} }),
          ...(who.task === undefined ? {} : { task: { id: who.task, scopes: [...who.scope] } }),
        },
        delegation: { depth: who.chain.length, actors: [...who.chain] },
        authn: { method: who.senderConstrained ? 'dpop-access-token' : 'access-token', senderConstrained: who.senderConstrained },
      },
    };
  }

  async #authorize(who: AgentIdentity, msg: JsonRpcMessage, m: 'tools/call' | 'resources/read' | 'prompts/get', correlationId: string): Promise<Denial | undefined> {
    const nameRaw = m === 'resources/read' ? msg.params.uri : msg.params.name;
    if (typeof nameRaw !== 'string' || nameRaw === '' || nameRaw.length > 1024) {
      return { jsonRpcCode: MCP_INVALID_REQUEST, code: 'ERR_ENFORCE_MCP_INVALID', reason: m === 'resources/read' ? '`params.uri` must be a non-empty string' : '`params.name` must be a non-empty string', decisionId: correlationId };
    }
    const args = msg.params.arguments;
    if (args !== undefined && !isObject(args)) return { jsonRpcCode: MCP_INVALID_REQUEST, code: 'ERR_ENFORCE_MCP_INVALID', reason: '`params.arguments` must be an object', decisionId: correlationId };
    const d = await this.#o.pdp.evaluate(this.accessRequest(who, m, nameRaw, args), { correlationId });
    let decision: PdpDecision = d;
    let budgetNote: Record<string, unknown> | undefined;
    if (d.allow && m === 'tools/call' && this.#o.budgets !== undefined && this.#o.budgets.limited) {
      const key = who.task ?? `${who.agent} ${who.subject}`;
      const c = this.#o.budgets.charge(key, nameRaw, this.#o.clock.nowMs());
      if (!c.ok) decision = { allow: false, code: 'ERR_ENFORCE_BUDGET_EXCEEDED', reason: `${c.reason}: limit ${c.limit}`, decisionId: d.decisionId, cached: false };
      else budgetNote = { used: c.used, usedForTool: c.usedForTool };
    }
    try {
      await this.#record(who, msg, m, nameRaw, decision, correlationId, budgetNote);
    } catch {
      // An unrecorded allow is not an allow (ARCHITECTURE.md invariant 3).
      return { jsonRpcCode: MCP_INTERNAL, code: 'ERR_ENFORCE_PDP_UNAVAILABLE', reason: 'the call could not be audited', decisionId: decision.decisionId };
    }
    if (decision.allow) return undefined;
    const code = decision.code ?? 'ERR_ENFORCE_DENIED';
    // A local PDP without a compiled policy set cannot answer either: fail closed as for an unreachable PDP.
    const unavailable = code === 'ERR_ENFORCE_PDP_UNAVAILABLE' || code === 'ERR_ENFORCE_PDP_MALFORMED' || code === 'ERR_ENFORCE_POLICY_UNAVAILABLE';
    return { jsonRpcCode: unavailable ? MCP_INTERNAL : MCP_DENIED, code, reason: decision.reason, decisionId: decision.decisionId };
  }

  async #record(who: AgentIdentity, msg: JsonRpcMessage, m: string, name: string | undefined, d: PdpDecision, correlationId: string, budget?: Record<string, unknown>): Promise<void> {
    this.#o.log?.({ allow: d.allow, method: m, ...(name === undefined ? {} : { name }), agent: who.agent, subject: who.subject, ...(who.task === undefined ? {} : { task: who.task }), decisionId: d.decisionId, ...(d.allow ? {} : { code: d.code ?? 'ERR_ENFORCE_DENIED', reason: d.reason }) });
    if (this.#o.audit === undefined) return;
    await this.#o.audit.append({
      action: 'mcp.call.decided',
      actor: { type: 'agent', id: who.agent },
      target: { type: m === 'tools/call' ? 'tool' : m === 'resources/read' ? 'resource' : m === 'prompts/get' ? 'prompt' : 'mcp_method', id: name ?? m },
      outcome: d.allow ? 'success' : 'denied',
      reasons: d.allow ? [] : [(d.code ?? 'ERR_ENFORCE_DENIED').toLowerCase().replace(/^err_enforce_/, '').replace(/_/g, '-')],
      correlationId,
      details: {
        decision: d.allow ? 'allow' : 'deny',
        decisionId: d.decisionId,
        operation: name === undefined ? m : `${m} ${name}`,
        method: 'POST',
        path: this.#mcpPath,
        server: this.#serverId,
        agent: who.agent,
        onBehalfOf: who.subject,
        delegation: [...who.chain],
        clientId: who.clientId,
        ...(who.task === undefined ? {} : { taskId: who.task }),
        ...(msg.id === undefined || msg.id === null ? {} : { rpcId: String(msg.id).slice(0, 64) }),
        ...(d.allow ? {} : { code: d.code ?? 'ERR_ENFORCE_DENIED', reason: d.reason }),
        ...(budget === undefined ? {} : { budget }),
      },
    });
  }

  /**
   * Send the request upstream with an exchanged token and stream the answer
   * back. `inspect` is the message when the answer must be read: `tools/list`
   * (filtered) or `initialize` (its session recorded).
   */
  async #forward(req: IncomingMessage, res: ServerResponse, who: AgentIdentity, body: Buffer | undefined, inspect: JsonRpcMessage | undefined, correlationId: string): Promise<void> {
    const clientToken = AccessTokenVerifier.tokenOf(req.headers.authorization);
    if (clientToken === undefined) return sendJson(res, 401, { error: 'invalid_token' });
    let upstreamToken: string;
    try {
      upstreamToken = (await this.#o.exchanger.exchange(clientToken, who.jti, this.#upstreamAudience, correlationId)).reveal();
    } catch (e) {
      const reason = enforcementErrors.is(e, 'ERR_ENFORCE_UPSTREAM_TOKEN') ? (e as WritError).message : 'the upstream token could not be obtained';
      return sendJson(res, 502, rpcError(inspect?.id ?? null, MCP_INTERNAL, reason, { code: 'ERR_ENFORCE_UPSTREAM_TOKEN' }));
    }
    const headers: Record<string, string> = {};
    for (const h of FORWARD_REQUEST) {
      const v = req.headers[h];
      if (typeof v === 'string') headers[h] = v;
    }
    headers.authorization = `Bearer ${upstreamToken}`;
    headers.traceparent = `00-${correlationId}-${'0'.repeat(15)}1-01`;
    let up: Response;
    // The deadline covers the response head only: an SSE answer or a GET stream may then run as long as it needs.
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), this.#o.upstreamTimeoutMs ?? 30_000);
    res.on('close', () => {
      if (!res.writableFinished) abort.abort();
    });
    try {
      up = await this.#fetch(this.#o.upstream, {
        method: req.method ?? 'POST',
        headers,
        ...(body === undefined ? {} : { body }),
        signal: abort.signal,
      });
    } catch {
      return sendJson(res, 502, rpcError(inspect?.id ?? null, MCP_INTERNAL, 'upstream MCP server unavailable', { code: 'ERR_ENFORCE_UPSTREAM' }));
    } finally {
      clearTimeout(timer);
    }
    const back: Record<string, string> = {};
    for (const h of FORWARD_RESPONSE) {
      const v = up.headers.get(h);
      if (v !== null) back[h] = v;
    }
    const sid = up.headers.get('mcp-session-id');
    if (inspect?.method === 'initialize' && sid !== null && up.status < 300 && sid.length <= 256) {
      if (this.#sessions.size >= 1000) this.#prune();
      this.#sessions.set(sid, { id: sid, agent: who.agent, subject: who.subject, chain: who.chain, jti: who.jti, expiresAtMs: who.expiresAt.getTime(), closed: false });
    }
    if (inspect?.method === 'tools/list' && up.status === 200 && up.body !== null) {
      const text = await this.#readLimited(up);
      if (text === undefined) return sendJson(res, 502, rpcError(inspect.id, MCP_INTERNAL, 'upstream tools/list answer too large'));
      const filtered = await this.#filterToolsAnswer(text, up.headers.get('content-type') ?? '', who, inspect, correlationId);
      delete back['content-length'];
      res.writeHead(200, { ...back, 'content-length': Buffer.byteLength(filtered) });
      res.end(filtered);
      return;
    }
    res.writeHead(up.status, back);
    if (up.body === null) {
      res.end();
      return;
    }
    const stream = Readable.fromWeb(up.body as unknown as WebReadableStream<Uint8Array>);
    res.on('close', () => stream.destroy());
    stream.on('error', () => res.destroy());
    stream.pipe(res);
  }

  async #readLimited(up: Response): Promise<string | undefined> {
    const max = this.#o.maxListBytes ?? 4 * 1024 * 1024;
    const reader = up.body?.getReader();
    if (reader === undefined) return '';
    const chunks: Uint8Array[] = [];
    let size = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.byteLength;
      if (size > max) {
        await reader.cancel();
        return undefined;
      }
      chunks.push(value);
    }
    return Buffer.concat(chunks).toString('utf8');
  }

  /** Filter a `tools/list` answer (JSON or an SSE stream) to the tools the PDP allows, in one batch. */
  async #filterToolsAnswer(text: string, contentType: string, who: AgentIdentity, msg: JsonRpcMessage, correlationId: string): Promise<string> {
    const filterMessage = async (json: string): Promise<string> => {
      let v: unknown;
      try {
        v = JSON.parse(json);
      } catch {
        return json;
      }
      if (!isObject(v) || v.id !== msg.id || !isObject(v.result) || !Array.isArray(v.result.tools)) return json;
      const tools = v.result.tools.filter((t): t is Record<string, unknown> => isObject(t) && typeof t.name === 'string');
      for (const t of tools) {
        const ann = t.annotations;
        if (isObject(ann) && typeof ann.readOnlyHint === 'boolean') this.#readOnly.set(t.name as string, ann.readOnlyHint);
      }
      // Listing is not calling: the tool is offered when a call with no arguments could be allowed.
      const decisions = await evaluateAll(this.#o.pdp, tools.map((t) => this.accessRequest(who, 'tools/call', t.name as string, undefined, true)), { correlationId });
      const kept = tools.filter((_t, i) => decisions[i]?.allow === true);
      this.#o.log?.({ allow: true, method: 'tools/list', agent: who.agent, subject: who.subject, ...(who.task === undefined ? {} : { task: who.task }), decisionId: decisions[0]?.decisionId ?? correlationId, reason: `${kept.length} of ${tools.length} tools allowed` });
      return JSON.stringify({ ...v, result: { ...v.result, tools: kept } });
    };
    if (contentType.toLowerCase().startsWith('text/event-stream')) {
      // SSE (WHATWG HTML §9.2): events separated by a blank line; `data:` lines hold the JSON-RPC message.
      const events = text.split(/\r?\n\r?\n/);
      const out: string[] = [];
      for (const ev of events) {
        const lines = ev.split(/\r?\n/);
        const data = lines.filter((l) => l.startsWith('data:')).map((l) => l.slice(5).replace(/^ /, '')).join('\n');
        if (data === '') {
          out.push(ev);
          continue;
        }
        const filtered = await filterMessage(data);
        out.push([...lines.filter((l) => !l.startsWith('data:')), `data: ${filtered}`].join('\n'));
      }
      return out.join('\n\n');
    }
    return filterMessage(text);
  }
}
