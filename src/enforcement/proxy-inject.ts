/**
 * Credential injection for legacy upstreams: the upstream receives a
 * credential the caller never holds — a short-lived access token from the
 * Writ broker (RFC 8693 token exchange of the proxy's own JWT-SVID for
 * `audience` = the upstream), or the static secret of a documented
 * exception — in a header or as HTTP Basic (RFC 7617). Exchanged tokens are
 * reused until shortly before they expire; a failure to get one means the
 * request is not forwarded.
 */
import type { Clock, Secret } from '../kernel/index.ts';
import { enforcementErrors } from './errors.ts';
import type { InjectConfig, InjectPlacement } from './proxy-config.ts';

/** The proxy's own JWT-SVID for an audience (the Workload API in production). */
export type JwtSvidProvider = (audience: string) => Promise<string>;

/** The broker as the injector sees it. */
export interface TokenBroker {
  /** The token endpoint and the audience the subject JWT-SVID must name (the issuer). */
  resolve(): Promise<{ readonly issuer: string; readonly tokenEndpoint: string }>;
}

/** Options of {@link CredentialInjector}. */
export interface CredentialInjectorOptions {
  readonly clock: Clock;
  readonly broker?: TokenBroker;
  readonly jwtSvid?: JwtSvidProvider;
  /** Static secrets by route name (read by the CLI from `secretFile`). */
  readonly staticSecrets?: ReadonlyMap<string, Secret>;
  readonly timeoutMs?: number;
  readonly fetch?: typeof fetch;
}

interface Held {
  readonly value: string;
  readonly refreshAt: number;
  readonly expiresAt: number;
}

const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const TT_JWT = 'urn:ietf:params:oauth:token-type:jwt';
const TT_ACCESS = 'urn:ietf:params:oauth:token-type:access_token';

/**
 * The header value for a credential placed per `p`.
 *
 * @example
 * headerValue({ header: 'authorization', format: 'basic', username: 'svc' }, 's3cret'); // 'Basic c3ZjOnMzY3JldA=='
 */
export function headerValue(p: InjectPlacement, credential: string): string {
  if (p.format === 'bearer') return `Bearer ${credential}`;
  if (p.format === 'basic') return `Basic ${Buffer.from(`${p.username ?? ''}:${credential}`).toString('base64')}`;
  return credential;
}

/**
 * Gets the credential each route injects.
 *
 * @example
 * const inj = new CredentialInjector({ clock: systemClock, broker, jwtSvid: (aud) => wl.fetchJwtSvid([aud]).then((s) => s.token) });
 * const { header, value } = await inj.credentialFor('legacy', route.inject);
 */
export class CredentialInjector {
  readonly #o: CredentialInjectorOptions;
  readonly #held = new Map<string, Held>();
  readonly #inflight = new Map<string, Promise<Held>>();
  /** Credentials and header values handed out, so responses can be scrubbed of them (NOTE: kept for the process lifetime; tokens are short-lived, few per upstream). */
  readonly #live = new Set<string>();

  constructor(options: CredentialInjectorOptions) {
    this.#o = options;
  }

  /** True when `s` contains a credential this injector placed (response scrubbing). */
  leaks(s: string): boolean {
    for (const v of this.#live) if (v !== '' && s.includes(v)) return true;
    return false;
  }

  /** The header and its value for `route`; throws `ERR_ENFORCE_INJECTION_FAILED`. */
  async credentialFor(route: string, cfg: InjectConfig): Promise<{ header: string; value: string }> {
    if (cfg.source === 'static') {
      const s = this.#o.staticSecrets?.get(route);
      if (s === undefined) throw enforcementErrors.error('ERR_ENFORCE_INJECTION_FAILED', `route \`${route}\` has no static secret loaded`);
      const raw = s.reveal();
      const value = headerValue(cfg, raw);
      this.#live.add(raw);
      this.#live.add(value);
      return { header: cfg.header, value };
    }
    const key = `${cfg.audience}\n${cfg.scope ?? ''}`;
    const now = this.#o.clock.nowMs();
    const held = this.#held.get(key);
    if (held !== undefined && now < held.refreshAt) return { header: cfg.header, value: headerValue(cfg, held.value) };
    let p = this.#inflight.get(key);
    if (p === undefined) {
      p = this.#exchange(cfg.audience, cfg.scope).finally(() => this.#inflight.delete(key));
      this.#inflight.set(key, p);
    }
    try {
      const fresh = await p;
      this.#held.set(key, fresh);
      const value = headerValue(cfg, fresh.value);
      this.#live.add(fresh.value);
      this.#live.add(value);
      return { header: cfg.header, value };
    } catch (e) {
      // A refresh that fails keeps a token that has not expired yet.
      if (held !== undefined && this.#o.clock.nowMs() < held.expiresAt - 1000) return { header: cfg.header, value: headerValue(cfg, held.value) };
      throw e;
    }
  }

  async #exchange(audience: string, scope: string | undefined): Promise<Held> {
    const fail = (why: string, cause?: unknown) => enforcementErrors.error('ERR_ENFORCE_INJECTION_FAILED', `no credential for upstream audience \`${audience.slice(0, 128)}\`: ${why}`, cause === undefined ? undefined : { cause });
    if (this.#o.broker === undefined || this.#o.jwtSvid === undefined) throw fail('token exchange is not configured (no server or Workload API)');
    let endpoint: string;
    let subject: string;
    try {
      const b = await this.#o.broker.resolve();
      endpoint = b.tokenEndpoint;
      subject = await this.#o.jwtSvid(b.issuer);
    } catch (e) {
      throw fail('the proxy\'s own JWT-SVID or the broker metadata is unavailable', e);
    }
    const body = new URLSearchParams({ grant_type: TOKEN_EXCHANGE, subject_token: subject, subject_token_type: TT_JWT, audience, requested_token_type: TT_ACCESS });
    if (scope !== undefined) body.set('scope', scope);
    let res: Response;
    let json: Record<string, unknown>;
    try {
      res = await (this.#o.fetch ?? fetch)(endpoint, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' }, body, signal: AbortSignal.timeout(this.#o.timeoutMs ?? 5000) });
      json = (await res.json()) as Record<string, unknown>;
    } catch (e) {
      throw fail('the token endpoint is unreachable', e);
    }
    if (res.status !== 200 || typeof json.access_token !== 'string') {
      throw fail(`the token endpoint refused (${res.status}${typeof json.error === 'string' ? ` ${json.error.slice(0, 64)}` : ''})`);
    }
    const now = this.#o.clock.nowMs();
    const ttlMs = (typeof json.expires_in === 'number' && json.expires_in > 0 ? json.expires_in : 60) * 1000;
    // Renew at 80% of the lifetime so the upstream never gets a token about to expire.
    return { value: json.access_token, refreshAt: now + ttlMs * 0.8, expiresAt: now + ttlMs };
  }
}
