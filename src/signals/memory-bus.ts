/**
 * The in-process revocation bus: one node, no broker. Events live in memory
 * (bounded), so a subscriber that re-subscribes from its cursor replays what
 * it missed while that is still retained.
 */
import type { Clock } from '../kernel/index.ts';
import type { RevocationBus, RevocationEvent, RevocationHandler, RevocationInput, SubscribeOptions, Unsubscribe } from './ports.ts';
import { OrderedDelivery, revocationBody } from './revocation.ts';

/**
 * @example
 * const bus = new InProcessRevocationBus(systemClock);
 * const stop = await bus.subscribe(undefined, (e) => console.log(e.kind, e.subject));
 * await bus.publish({ kind: 'subject-revoked', subject: 'spiffe://writ.local/ci', reason: 'admin-revoked' });
 */
export class InProcessRevocationBus implements RevocationBus {
  readonly kind = 'memory';
  readonly #clock: Clock;
  readonly #retain: number;
  readonly #events: RevocationEvent[] = [];
  readonly #byId = new Map<string, RevocationEvent>();
  readonly #subs = new Set<OrderedDelivery>();
  #cursor = 0;

  constructor(clock: Clock, options: { retain?: number } = {}) {
    this.#clock = clock;
    this.#retain = options.retain ?? 100_000;
  }

  async publish(input: RevocationInput): Promise<RevocationEvent> {
    const body = revocationBody(input, this.#clock.now().toISOString());
    const seen = this.#byId.get(body.id);
    if (seen !== undefined) return seen;
    this.#cursor += 1;
    const event: RevocationEvent = { ...body, cursor: this.#cursor };
    this.#events.push(event);
    this.#byId.set(event.id, event);
    if (this.#events.length > this.#retain) {
      const old = this.#events.shift();
      if (old !== undefined) this.#byId.delete(old.id);
    }
    for (const s of this.#subs) void s.offer(event);
    return event;
  }

  async subscribe(fromCursor: number | undefined, handler: RevocationHandler, options: SubscribeOptions = {}): Promise<Unsubscribe> {
    const onError = options.onError ?? (() => undefined);
    const d = new OrderedDelivery(fromCursor ?? this.#cursor, handler, onError);
    for (const e of this.#events) if (e.cursor > d.last) await d.offer(e);
    this.#subs.add(d);
    return async () => {
      this.#subs.delete(d);
    };
  }

  async head(): Promise<number> {
    return this.#cursor;
  }

  async close(): Promise<void> {
    this.#subs.clear();
  }
}
