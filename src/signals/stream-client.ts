/**
 * The client an enforcement point runs to follow the server's revocation
 * stream (`GET /v1/revocations/stream`, Server-Sent Events). It keeps the set
 * of revoked subjects, leases and tokens, resumes from its cursor with
 * `Last-Event-ID` after any disconnect (backing off), and knows how long ago
 * it last heard from the server: beyond the staleness bound a PEP cannot
 * confirm a subject's state and must deny (fail closed).
 */
import type { Clock } from '../kernel/index.ts';
import { REVOCATION_KINDS } from './ports.ts';
import type { RevocationEvent, RevocationKind } from './ports.ts';
import { parseSseFrame } from './sse-frame.ts';

/** Options of {@link RevocationStreamClient}. */
export interface RevocationStreamClientOptions {
  /** Base URL of a Writ server (`http://host:port`). */
  readonly url: string;
  /** A credential of a principal with `revocations.subscribe` (role `pep`). */
  readonly token: string;
  readonly clock: Clock;
  /** Beyond this long without an event or heartbeat, the client is stale. */
  readonly stalenessMs: number;
  /** First reconnect delay; doubles up to `maxBackoffMs`. Defaults 100 and 5000. */
  readonly minBackoffMs?: number;
  readonly maxBackoffMs?: number;
  /** Resume after this cursor (a PEP that persisted it); default: from now. */
  readonly fromCursor?: number;
  /** Called for every event after the local sets are updated (drop caches here). */
  readonly onEvent?: (event: RevocationEvent) => void;
  /**
   * This enforcement point's instance name (1-64 of `A-Za-z0-9._-`): the
   * stream registers it, and it acknowledges every drill event it applied
   * (`POST /v1/revocations/ack`) with whether its own check now denies.
   */
  readonly pep?: string;
  /** Connection trouble (the client keeps trying); an error for a refused connection has the HTTP `status`. */
  readonly onError?: (err: unknown) => void;
}

/** What a PEP asks before it allows. */
export interface RevocationQuery {
  readonly subject?: string;
  readonly leaseId?: string;
  readonly tokenId?: string;
}

/** `revoked` and `stale` are denials; only `clear` may go on to the decision. */
export type RevocationStatus = 'clear' | 'revoked' | 'stale';

function parseEvent(data: string): RevocationEvent | undefined {
  let o: unknown;
  try {
    o = JSON.parse(data);
  } catch {
    return undefined;
  }
  if (typeof o !== 'object' || o === null) return undefined;
  const r = o as Record<string, unknown>;
  if (typeof r.id !== 'string' || typeof r.cursor !== 'number' || typeof r.kind !== 'string' || typeof r.at !== 'string' || typeof r.reason !== 'string') return undefined;
  if (!(REVOCATION_KINDS as readonly string[]).includes(r.kind)) return undefined;
  return {
    id: r.id,
    cursor: r.cursor,
    kind: r.kind as RevocationKind,
    at: r.at,
    reason: r.reason,
    ...(typeof r.subject === 'string' ? { subject: r.subject } : {}),
    ...(typeof r.leaseId === 'string' ? { leaseId: r.leaseId } : {}),
    ...(typeof r.tokenId === 'string' ? { tokenId: r.tokenId } : {}),
  };
}

/**
 * @example
 * const revocations = new RevocationStreamClient({ url, token, clock: systemClock, stalenessMs: 15_000 });
 * revocations.start();
 * if (revocations.check({ subject: callerId }) !== 'clear') deny();
 */
export class RevocationStreamClient {
  readonly #o: RevocationStreamClientOptions;
  readonly #subjects = new Set<string>();
  readonly #leases = new Set<string>();
  readonly #tokens = new Set<string>();
  #cursor: number | undefined;
  #lastHeardMs: number | undefined;
  #abort: AbortController | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #backoff = 0;
  #running = false;
  #connected = false;
  /** Connections made so far (the first one included). */
  connects = 0;

  constructor(options: RevocationStreamClientOptions) {
    if (!(options.stalenessMs > 0)) throw new TypeError('stalenessMs must be positive');
    if (options.pep !== undefined && !/^[A-Za-z0-9._-]{1,64}$/.test(options.pep)) throw new TypeError('pep must be 1-64 letters, digits, `.`, `_` or `-`');
    this.#o = options;
    this.#cursor = options.fromCursor;
  }

  /** The last cursor received (persist it to resume across restarts). */
  get cursor(): number | undefined {
    return this.#cursor;
  }

  get connected(): boolean {
    return this.#connected;
  }

  /** Milliseconds since the last event or heartbeat; Infinity before the first. */
  staleness(): number {
    return this.#lastHeardMs === undefined ? Infinity : this.#o.clock.nowMs() - this.#lastHeardMs;
  }

  /** True beyond the staleness bound (and before the first heartbeat). */
  isStale(): boolean {
    return this.staleness() > this.#o.stalenessMs;
  }

  /**
   * Fail closed: `stale` when the stream cannot vouch for the present,
   * `revoked` when any named subject, lease or token was revoked.
   */
  check(q: RevocationQuery): RevocationStatus {
    if (this.isStale()) return 'stale';
    if (q.subject !== undefined && this.#subjects.has(q.subject)) return 'revoked';
    if (q.leaseId !== undefined && this.#leases.has(q.leaseId)) return 'revoked';
    if (q.tokenId !== undefined && this.#tokens.has(q.tokenId)) return 'revoked';
    return 'clear';
  }

  /** Connect and keep connected until {@link stop}. */
  start(): void {
    if (this.#running) return;
    this.#running = true;
    void this.#connect();
  }

  stop(): void {
    this.#running = false;
    this.#connected = false;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#abort?.abort();
  }

  #apply(e: RevocationEvent): void {
    if (e.kind === 'subject-revoked' && e.subject !== undefined) this.#subjects.add(e.subject);
    if (e.kind === 'lease-revoked' && e.leaseId !== undefined) this.#leases.add(e.leaseId);
    if (e.kind === 'token-revoked' && e.tokenId !== undefined) this.#tokens.add(e.tokenId);
    this.#cursor = e.cursor;
    this.#o.onEvent?.(e);
    if (this.#o.pep !== undefined && e.id.startsWith('drill_')) void this.#ack(e);
  }

  /** Tell the server this point applied a drill event, and whether it now denies what the event names. */
  async #ack(e: RevocationEvent): Promise<void> {
    const q = e.kind === 'subject-revoked' ? { subject: e.subject } : e.kind === 'lease-revoked' ? { leaseId: e.leaseId } : e.kind === 'token-revoked' ? { tokenId: e.tokenId } : {};
    const denied = this.check(q as RevocationQuery) !== 'clear';
    for (let attempt = 0; attempt < 3 && this.#running; attempt += 1) {
      try {
        const res = await fetch(`${this.#o.url.replace(/\/+$/, '')}/v1/revocations/ack`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${this.#o.token}` },
          body: JSON.stringify({ pep: this.#o.pep, id: e.id, denied }),
          signal: AbortSignal.timeout(5000),
        });
        await res.body?.cancel().catch(() => undefined);
        if (res.status === 204) return;
        if (res.status < 500) break;
      } catch (err) {
        this.#o.onError?.(err);
      }
    }
  }

  #frame(text: string): void {
    const { event, data } = parseSseFrame(text);
    if (event === 'heartbeat') {
      this.#lastHeardMs = this.#o.clock.nowMs();
      // The server's cursor for this connection: adopting it means a reconnect
      // after a quiet period resumes from here, not from "now".
      const hb = /^\{"cursor":(\d{1,16})\}$/.exec(data);
      const c = hb?.[1] === undefined ? undefined : Number(hb[1]);
      if (c !== undefined && (this.#cursor === undefined || c > this.#cursor)) this.#cursor = c;
      return;
    }
    if (event !== 'revocation') return;
    const e = parseEvent(data);
    if (e === undefined) {
      this.#o.onError?.(new Error('revocation stream sent an event that does not parse'));
      return;
    }
    this.#lastHeardMs = this.#o.clock.nowMs();
    if (this.#cursor !== undefined && e.cursor <= this.#cursor) return;
    this.#apply(e);
  }

  async #connect(): Promise<void> {
    if (!this.#running) return;
    const abort = new AbortController();
    this.#abort = abort;
    try {
      const headers: Record<string, string> = { accept: 'text/event-stream', authorization: `Bearer ${this.#o.token}` };
      if (this.#cursor !== undefined) headers['last-event-id'] = String(this.#cursor);
      const res = await fetch(`${this.#o.url.replace(/\/+$/, '')}/v1/revocations/stream${this.#o.pep === undefined ? '' : `?pep=${encodeURIComponent(this.#o.pep)}`}`, { headers, signal: abort.signal });
      if (res.status !== 200 || res.body === null) {
        await res.body?.cancel().catch(() => undefined);
        // The status goes with the error: 401/403 mean the credential is refused (not `pep`), not an outage.
        throw Object.assign(new Error(`revocation stream answered ${res.status}`), { status: res.status });
      }
      this.connects += 1;
      this.#connected = true;
      this.#backoff = 0;
      const decoder = new TextDecoder();
      let buf = '';
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        buf += decoder.decode(chunk, { stream: true }).replace(/\r\n?/g, '\n');
        let end = buf.indexOf('\n\n');
        while (end !== -1) {
          this.#frame(buf.slice(0, end));
          buf = buf.slice(end + 2);
          end = buf.indexOf('\n\n');
        }
      }
      throw new Error('revocation stream ended');
    } catch (err) {
      this.#connected = false;
      if (!this.#running) return;
      this.#o.onError?.(err);
      const min = this.#o.minBackoffMs ?? 100;
      this.#backoff = Math.min(this.#o.maxBackoffMs ?? 5000, this.#backoff === 0 ? min : this.#backoff * 2);
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        void this.#connect();
      }, this.#backoff);
    }
  }
}
