/**
 * Revocation bus over NATS JetStream: a file-backed stream holds every event;
 * the stream sequence is the cursor. Publishing sets `Nats-Msg-Id` to the
 * event id, so a publisher that retries after a lost acknowledgement stores it
 * once (within the stream's duplicate window). Each subscription reads with an
 * ordered consumer from its cursor; when the connection or the server goes
 * away it re-creates the consumer from the last cursor it delivered, so a
 * subscriber replays what it missed.
 */
import { connect, StorageType, RetentionPolicy, DeliverPolicy, nanos } from 'nats';
import type { NatsConnection, JetStreamClient, JetStreamManager, ConsumerMessages } from 'nats';
import type { Clock } from '../../kernel/index.ts';
import { signalsErrors, OrderedDelivery, revocationBody, encodeRevocation, decodeRevocation } from '../../signals/index.ts';
import type { RevocationBus, RevocationEvent, RevocationHandler, RevocationInput, SubscribeOptions, Unsubscribe } from '../../signals/index.ts';

/** Options of {@link NatsRevocationBus.open}. */
export interface NatsBusOptions {
  /** `nats://host:port` (comma-separated for a cluster). */
  readonly url: string;
  readonly clock: Clock;
  /** Stream name; default `WRIT_REVOCATIONS`. */
  readonly stream?: string;
  /** Subject; default `writ.revocations`. */
  readonly subject?: string;
  /** How long the stream keeps events; default 7 days. */
  readonly maxAgeMs?: number;
  /** Publish acknowledgement timeout; default 2000 ms. */
  readonly publishTimeoutMs?: number;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

/**
 * @example
 * const bus = await NatsRevocationBus.open({ url: 'nats://127.0.0.1:4222', clock: systemClock });
 * await bus.publish({ kind: 'lease-revoked', leaseId: 'l-1', reason: 'task-completed' });
 */
export class NatsRevocationBus implements RevocationBus {
  readonly kind = 'nats';
  readonly #nc: NatsConnection;
  readonly #js: JetStreamClient;
  readonly #jsm: JetStreamManager;
  readonly #opts: NatsBusOptions;
  readonly #stream: string;
  readonly #subject: string;
  readonly #stops = new Set<() => Promise<void>>();
  #closed = false;

  private constructor(nc: NatsConnection, jsm: JetStreamManager, opts: NatsBusOptions) {
    this.#nc = nc;
    this.#jsm = jsm;
    this.#js = nc.jetstream();
    this.#opts = opts;
    this.#stream = opts.stream ?? 'WRIT_REVOCATIONS';
    this.#subject = opts.subject ?? 'writ.revocations';
  }

  /** Connect and make sure the stream exists. */
  static async open(opts: NatsBusOptions): Promise<NatsRevocationBus> {
    let nc: NatsConnection;
    try {
      nc = await connect({ servers: opts.url.split(','), maxReconnectAttempts: -1, reconnectTimeWait: 100, reconnectJitter: 50, pingInterval: 2000, name: 'writ-revocation-bus' });
    } catch (cause) {
      throw signalsErrors.error('ERR_SIGNALS_BUS_UNAVAILABLE', 'NATS did not answer', { cause });
    }
    try {
      const jsm = await nc.jetstreamManager();
      const bus = new NatsRevocationBus(nc, jsm, opts);
      await bus.#ensureStream();
      return bus;
    } catch (e) {
      await nc.close().catch(() => undefined);
      throw signalsErrors.error('ERR_SIGNALS_BUS_UNAVAILABLE', 'NATS JetStream is not available', { cause: e });
    }
  }

  async #ensureStream(): Promise<void> {
    try {
      await this.#jsm.streams.info(this.#stream);
    } catch {
      await this.#jsm.streams.add({
        name: this.#stream,
        subjects: [this.#subject],
        storage: StorageType.File,
        retention: RetentionPolicy.Limits,
        max_age: nanos(this.#opts.maxAgeMs ?? 7 * 86_400_000),
        duplicate_window: nanos(120_000),
      });
    }
  }

  async publish(input: RevocationInput): Promise<RevocationEvent> {
    const body = revocationBody(input, this.#opts.clock.now().toISOString());
    try {
      const ack = await this.#js.publish(this.#subject, enc.encode(encodeRevocation(body)), { msgID: body.id, timeout: this.#opts.publishTimeoutMs ?? 2000 });
      if (!ack.duplicate) return { ...body, cursor: ack.seq };
      // Seen before: answer with the stored event.
      const m = await this.#jsm.streams.getMessage(this.#stream, { seq: ack.seq });
      return decodeRevocation(dec.decode(m.data), ack.seq);
    } catch (cause) {
      throw signalsErrors.error('ERR_SIGNALS_BUS_UNAVAILABLE', 'NATS JetStream did not acknowledge the event', { cause });
    }
  }

  async head(): Promise<number> {
    const info = await this.#jsm.streams.info(this.#stream);
    return info.state.last_seq;
  }

  async subscribe(fromCursor: number | undefined, handler: RevocationHandler, options: SubscribeOptions = {}): Promise<Unsubscribe> {
    if (this.#closed) throw new TypeError('the bus is closed');
    const onError = options.onError ?? (() => undefined);
    const d = new OrderedDelivery(fromCursor ?? (await this.head()), handler, onError);
    let stopped = false;
    let current: ConsumerMessages | undefined;
    let wakeSleep: (() => void) | undefined;
    const loop = async (): Promise<void> => {
      let backoff = 0;
      while (!stopped) {
        try {
          const consumer = await this.#js.consumers.get(this.#stream, { filterSubjects: this.#subject, deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: d.last + 1 });
          current = await consumer.consume({ max_messages: 256, idle_heartbeat: 1000, expires: 5000 });
          backoff = 0;
          for await (const m of current) {
            await d.offer(decodeRevocation(dec.decode(m.data), m.seq));
            if (stopped) break;
          }
        } catch (err) {
          if (!stopped) onError(err);
        }
        if (stopped) break;
        // The consumer ended (server restart, connection lost): start again from our cursor.
        backoff = Math.min(2000, backoff === 0 ? 50 : backoff * 2);
        await new Promise<void>((r) => {
          const t = setTimeout(r, backoff);
          wakeSleep = () => {
            clearTimeout(t);
            r();
          };
        });
      }
    };
    const done = loop();
    const stop = async (): Promise<void> => {
      if (stopped) return;
      stopped = true;
      this.#stops.delete(stop);
      wakeSleep?.();
      current?.stop();
      await done;
    };
    this.#stops.add(stop);
    return stop;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.all([...this.#stops].map((s) => s()));
    await this.#nc.close().catch(() => undefined);
  }
}
