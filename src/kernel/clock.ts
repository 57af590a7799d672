/**
 * Time source. Domain code never calls `Date.now()`: it is handed a Clock, so
 * tests move time by hand.
 */
export interface Clock {
  /** Milliseconds since the Unix epoch. */
  nowMs(): number;
  /** The same instant as a Date. */
  now(): Date;
}

/**
 * The real clock.
 *
 * @example
 * const t = systemClock.nowMs();
 */
export const systemClock: Clock = Object.freeze({
  nowMs: () => Date.now(),
  now: () => new Date(),
});

/**
 * A clock that moves only when told. For tests and simulations.
 *
 * @example
 * const clock = new ManualClock(Date.parse('2026-01-01T00:00:00Z'));
 * clock.advance(5_000);
 */
export class ManualClock implements Clock {
  #ms: number;
  constructor(startMs = 0) {
    this.#ms = startMs;
  }
  nowMs(): number {
    return this.#ms;
  }
  now(): Date {
    return new Date(this.#ms);
  }
  /** Move forward by `ms` (must be >= 0). */
  advance(ms: number): void {
    if (!(ms >= 0) || !Number.isFinite(ms)) throw new TypeError('a clock only moves forward');
    this.#ms += ms;
  }
  /** Jump to an absolute time (not earlier than now). */
  set(ms: number): void {
    if (!Number.isFinite(ms) || ms < this.#ms) throw new TypeError('a clock only moves forward');
    this.#ms = ms;
  }
}
