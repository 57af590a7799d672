/**
 * The upstream credential: RFC 8693 token exchange at Writ's token endpoint.
 * The client's access token is the `subject_token`; the issued token's
 * audience is the upstream MCP server and it keeps the delegation (`act` names
 * the agent). The client's own token never leaves the gateway (MCP
 * authorization: no token passthrough).
 *
 * Issued tokens are reused per (client token `jti`, audience) until shortly
 * before they expire, so a session's tool calls cost one exchange.
 */
import type { Clock } from '../../kernel/index.ts';
import { Secret } from '../../kernel/index.ts';
import { enforcementErrors } from '../errors.ts';

const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN = 'urn:ietf:params:oauth:token-type:access_token';
const JWT = 'urn:ietf:params:oauth:token-type:jwt';

/** Options of {@link TokenExchanger}. */
export interface TokenExchangerOptions {
  /** Writ's token endpoint (`<issuer>/oauth2/token`). */
  readonly tokenEndpoint: string;
  readonly clock: Clock;
  /** Deadline of one exchange (default 3000 ms). */
  readonly timeoutMs?: number;
  /**
   * The gateway's own JWT-SVID (aud = the issuer), sent as `actor_token` when
   * set: the upstream token's `act` then names the gateway, with the agent's
   * chain nested under it.
   */
  readonly actorToken?: () => Promise<string>;
  /** Reuse an issued token until this long before its expiry (default 30 s). */
  readonly refreshSkewMs?: number;
  readonly fetch?: typeof fetch;
}

interface Cached {
  readonly token: Secret;
  readonly expiresAtMs: number;
}

/**
 * @example
 * const ex = new TokenExchanger({ tokenEndpoint: `${writ}/oauth2/token`, clock: systemClock });
 * const upstreamToken = await ex.exchange(clientToken, who.jti, 'https://tools.example.com/mcp');
 */
export class TokenExchanger {
  readonly #o: TokenExchangerOptions;
  readonly #fetch: typeof fetch;
  readonly #cache = new Map<string, Cached>();

  constructor(o: TokenExchangerOptions) {
    const u = new URL(o.tokenEndpoint);
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new TypeError('the token endpoint must be an http(s) URL');
    this.#o = o;
    this.#fetch = o.fetch ?? fetch;
  }

  /**
   * A token for `audience` acting for the holder of `subjectToken`. Throws
   * `ERR_ENFORCE_UPSTREAM_TOKEN` when Writ refuses or cannot be reached.
   */
  async exchange(subjectToken: string, subjectJti: string, audience: string, correlationId?: string): Promise<Secret> {
    const key = `${subjectJti} ${audience}`;
    const now = this.#o.clock.nowMs();
    const hit = this.#cache.get(key);
    if (hit !== undefined && hit.expiresAtMs - (this.#o.refreshSkewMs ?? 30_000) > now) return hit.token;
    const form = new URLSearchParams({ grant_type: TOKEN_EXCHANGE, subject_token: subjectToken, subject_token_type: ACCESS_TOKEN, audience, requested_token_type: ACCESS_TOKEN });
    if (this.#o.actorToken !== undefined) {
      form.set('actor_token', await this.#o.actorToken());
      form.set('actor_token_type', JWT);
    }
    let status: number;
    let body: unknown;
    try {
      const res = await this.#fetch(this.#o.tokenEndpoint, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json', ...(correlationId === undefined ? {} : { traceparent: `00-${correlationId}-${'0'.repeat(15)}1-01` }) },
        body: form,
        signal: AbortSignal.timeout(this.#o.timeoutMs ?? 3000),
      });
      status = res.status;
      body = await res.json().catch(() => undefined);
    } catch {
      throw enforcementErrors.error('ERR_ENFORCE_UPSTREAM_TOKEN', 'the token endpoint could not be reached for the upstream token exchange');
    }
    const b = (body ?? {}) as Record<string, unknown>;
    if (status !== 200 || typeof b.access_token !== 'string' || b.access_token === '') {
      const err = typeof b.error === 'string' ? b.error.slice(0, 64) : `status ${status}`;
      const desc = typeof b.error_description === 'string' ? `: ${b.error_description.slice(0, 200)}` : '';
      throw enforcementErrors.error('ERR_ENFORCE_UPSTREAM_TOKEN', `the upstream token exchange was refused (${err}${desc})`);
    }
    const ttlMs = typeof b.expires_in === 'number' && b.expires_in > 0 ? b.expires_in * 1000 : 60_000;
    const token = new Secret(b.access_token);
    if (this.#cache.size >= 10_000) {
      for (const [k, v] of this.#cache) if (v.expiresAtMs <= now) this.#cache.delete(k);
      const oldest = this.#cache.keys().next();
      if (this.#cache.size >= 10_000 && oldest.done !== true) this.#cache.delete(oldest.value);
    }
    this.#cache.set(key, { token, expiresAtMs: now + ttlMs });
    return token;
  }

  /** Forget the upstream tokens issued for a client token (its session closed or it was revoked). */
  forget(subjectJti: string): void {
    for (const k of this.#cache.keys()) if (k.startsWith(`${subjectJti} `)) this.#cache.delete(k);
  }
}
