/**
 * Revocation bus over PostgreSQL: an outbox table (`revocation_events`, see
 * migrations) plus LISTEN/NOTIFY as the wake-up. Events get their cursor under
 * a transaction-level advisory lock, so cursors become visible in order and a
 * reader that asks for `seq > cursor` never skips one that commits later.
 * Subscribers read the table, so one that reconnects replays from its cursor:
 * a lost NOTIFY or a dropped listener loses nothing. A slow poll backs up the
 * wake-up.
 */
import pg from 'pg';
import type { Clock } from '../../kernel/index.ts';
import { signalsErrors, OrderedDelivery, revocationBody, encodeRevocation, decodeRevocation } from '../../signals/index.ts';
import type { RevocationBus, RevocationEvent, RevocationHandler, RevocationInput, SubscribeOptions, Unsubscribe } from '../../signals/index.ts';

const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,40}$/;

/** Options of {@link PostgresRevocationBus}. */
export interface PostgresBusOptions {
  readonly url: string;
  /** Schema holding `revocation_events` (the store's); default `public`. */
  readonly schema?: string;
  readonly clock: Clock;
  /** Backstop poll when no NOTIFY arrives; default 1000 ms. */
  readonly pollMs?: number;
  /** Longest wait between listener reconnect attempts; default 2000 ms. */
  readonly maxBackoffMs?: number;
}

interface Sub {
  readonly d: OrderedDelivery;
  readonly onError: (err: unknown) => void;
}

/**
 * @example
 * const bus = new PostgresRevocationBus({ url: 'postgres://postgres@127.0.0.1:5432/test', clock: systemClock });
 * const stop = await bus.subscribe(lastCursor, handle);
 */
export class PostgresRevocationBus implements RevocationBus {
  readonly kind = 'postgres';
  readonly #opts: PostgresBusOptions;
  readonly #schema: string;
  readonly #channel: string;
  readonly #pool: pg.Pool;
  readonly #subs = new Set<Sub>();
  #listener: pg.Client | undefined;
  #listenerPid: number | undefined;
  #connecting: Promise<void> | undefined;
  #backoff = 0;
  #poll: NodeJS.Timeout | undefined;
  #reconnectTimer: NodeJS.Timeout | undefined;
  #pumping = false;
  #again = false;
  #closed = false;
  /** Times the listener connection was (re)established; for tests and status. */
  connects = 0;

  constructor(opts: PostgresBusOptions) {
    const schema = opts.schema ?? 'public';
    if (!SCHEMA_NAME.test(schema)) throw new TypeError('schema must be a plain lower-case identifier');
    this.#opts = opts;
    this.#schema = schema;
    this.#channel = `writ_revocations_${schema}`;
    this.#pool = new pg.Pool({ connectionString: opts.url, max: 4, connectionTimeoutMillis: 5000, options: `-c search_path=${schema}` });
    this.#pool.on('error', () => undefined);
  }

  async publish(input: RevocationInput): Promise<RevocationEvent> {
    const body = revocationBody(input, this.#opts.clock.now().toISOString());
    let client: pg.PoolClient;
    try {
      client = await this.#pool.connect();
    } catch (cause) {
      throw signalsErrors.error('ERR_SIGNALS_BUS_UNAVAILABLE', 'revocation bus database did not answer', { cause });
    }
    try {
      // One writer at a time per schema: the cursor order is the commit order.
      // (Two statements without parameters go in one round trip.)
      await client.query(`begin; select pg_advisory_xact_lock(hashtext('writ.revocations.' || current_schema()))`);
      // Insert and notify in one statement (the notification is delivered at commit).
      const r = await client.query<{ seq: string }>(
        'with ins as (insert into revocation_events (seq, id, body, created_at) select coalesce(max(seq), 0) + 1, $1, $2, $3 from revocation_events on conflict (id) do nothing returning seq) select seq, pg_notify($4, seq::text) from ins',
        [body.id, encodeRevocation(body), body.at, this.#channel],
      );
      const inserted = r.rows[0];
      if (inserted === undefined) {
        // The id was published before: answer with the first event.
        const seen = await client.query<{ seq: string; body: string }>('select seq, body from revocation_events where id = $1', [body.id]);
        await client.query('commit');
        const first = seen.rows[0];
        if (first === undefined) throw new Error('revocation id conflicted but is not stored');
        return decodeRevocation(first.body, Number(first.seq));
      }
      const seq = Number(inserted.seq);
      await client.query('commit');
      return { ...body, cursor: seq };
    } catch (cause) {
      await client.query('rollback').catch(() => undefined);
      throw signalsErrors.error('ERR_SIGNALS_BUS_UNAVAILABLE', 'revocation bus database refused the event', { cause });
    } finally {
      client.release();
    }
  }

  async head(): Promise<number> {
    const r = await this.#pool.query<{ seq: string | null }>('select max(seq) as seq from revocation_events');
    return Number(r.rows[0]?.seq ?? 0);
  }

  async subscribe(fromCursor: number | undefined, handler: RevocationHandler, options: SubscribeOptions = {}): Promise<Unsubscribe> {
    if (this.#closed) throw new TypeError('the bus is closed');
    const onError = options.onError ?? (() => undefined);
    const start = fromCursor ?? (await this.head());
    const sub: Sub = { d: new OrderedDelivery(start, handler, onError), onError };
    this.#subs.add(sub);
    await this.#ensureListener().catch((err: unknown) => onError(err));
    this.#poll ??= setInterval(() => this.#wake(), this.#opts.pollMs ?? 1000);
    this.#wake();
    return async () => {
      this.#subs.delete(sub);
      if (this.#subs.size === 0) await this.#stopListening();
    };
  }

  /** The listener's backend pid (tests terminate it to simulate a dropped connection). */
  listenerPid(): number | undefined {
    return this.#listenerPid;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#subs.clear();
    await this.#stopListening();
    await this.#pool.end().catch(() => undefined);
  }

  async #stopListening(): Promise<void> {
    if (this.#poll !== undefined) clearInterval(this.#poll);
    this.#poll = undefined;
    if (this.#reconnectTimer !== undefined) clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = undefined;
    const l = this.#listener;
    this.#listener = undefined;
    this.#listenerPid = undefined;
    if (l !== undefined) await l.end().catch(() => undefined);
  }

  #ensureListener(): Promise<void> {
    if (this.#listener !== undefined) return Promise.resolve();
    this.#connecting ??= this.#connect().finally(() => {
      this.#connecting = undefined;
    });
    return this.#connecting;
  }

  async #connect(): Promise<void> {
    const c = new pg.Client({ connectionString: this.#opts.url, connectionTimeoutMillis: 5000 });
    const lost = (err: unknown): void => {
      if (this.#listener !== c) return;
      this.#listener = undefined;
      this.#listenerPid = undefined;
      for (const s of this.#subs) s.onError(err);
      void c.end().catch(() => undefined);
      this.#scheduleReconnect();
    };
    c.on('error', lost);
    c.on('end', () => lost(new Error('revocation listener connection ended')));
    c.on('notification', () => this.#wake());
    try {
      await c.connect();
      await c.query(`listen "${this.#channel}"`);
      const pid = await c.query<{ pid: number }>('select pg_backend_pid() as pid');
      if (this.#closed || this.#subs.size === 0) {
        await c.end().catch(() => undefined);
        return;
      }
      this.#listener = c;
      this.#listenerPid = pid.rows[0]?.pid;
      this.#backoff = 0;
      this.connects += 1;
      // Whatever was published while we were away is read now: replay from each cursor.
      this.#wake();
    } catch (err) {
      await c.end().catch(() => undefined);
      this.#scheduleReconnect();
      throw err;
    }
  }

  #scheduleReconnect(): void {
    if (this.#closed || this.#subs.size === 0 || this.#reconnectTimer !== undefined) return;
    this.#backoff = Math.min(this.#opts.maxBackoffMs ?? 2000, this.#backoff === 0 ? 50 : this.#backoff * 2);
    this.#reconnectTimer = setTimeout(() => {
      this.#reconnectTimer = undefined;
      this.#ensureListener().catch((err: unknown) => {
        for (const s of this.#subs) s.onError(err);
      });
    }, this.#backoff);
  }

  #wake(): void {
    if (this.#pumping) {
      this.#again = true;
      return;
    }
    this.#pumping = true;
    void this.#pump().finally(() => {
      this.#pumping = false;
      if (this.#again) {
        this.#again = false;
        this.#wake();
      }
    });
  }

  async #pump(): Promise<void> {
    for (;;) {
      if (this.#subs.size === 0) return;
      let from = Infinity;
      for (const s of this.#subs) from = Math.min(from, s.d.last);
      let rows: { seq: string; body: string }[];
      try {
        rows = (await this.#pool.query<{ seq: string; body: string }>('select seq, body from revocation_events where seq > $1 order by seq limit 500', [from])).rows;
      } catch (err) {
        for (const s of this.#subs) s.onError(err);
        return;
      }
      for (const row of rows) {
        const e = decodeRevocation(row.body, Number(row.seq));
        for (const s of this.#subs) await s.d.offer(e);
      }
      if (rows.length < 500) return;
    }
  }
}
