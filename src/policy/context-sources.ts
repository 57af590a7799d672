/**
 * Context sources the PDP can fill by itself, without any store.
 */
import type { Clock } from '../kernel/index.ts';
import type { ContextSource } from './ports.ts';

/**
 * Request time from the clock into `context.time` as
 * `{epochSeconds, hourUtc, weekday}` (weekday 0 = Sunday). Its version is the
 * current second, so a cached decision never outlives the second it was made in.
 *
 * @example
 * new Decider({ engine, audit, clock, contextSources: [clockContextSource(clock)] });
 */
export function clockContextSource(clock: Clock): ContextSource {
  return {
    name: 'clock',
    key: 'time',
    required: true,
    version: () => String(Math.floor(clock.nowMs() / 1000)),
    load: async () => {
      const d = clock.now();
      return { epochSeconds: Math.floor(d.getTime() / 1000), hourUtc: d.getUTCHours(), weekday: d.getUTCDay() };
    },
  };
}
