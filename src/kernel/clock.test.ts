import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock, systemClock } from './clock.ts';
import type { Clock } from './clock.ts';

const START = Date.parse('2026-01-01T00:00:00Z');
const BACKWARDS = { name: 'TypeError', message: 'a clock only moves forward' };

describe('ManualClock', () => {
  test('starts at the given time, or at the epoch', () => {
    const clock: Clock = new ManualClock(START);
    assert.equal(clock.nowMs(), START);
    assert.equal(clock.now().toISOString(), '2026-01-01T00:00:00.000Z');
    assert.equal(new ManualClock().nowMs(), 0);
  });

  test('stands still until told to move', () => {
    const clock = new ManualClock(START);
    assert.equal(clock.nowMs(), clock.nowMs());
    assert.equal(clock.nowMs(), START);
  });

  test('advance moves forward by the amount given, including zero', () => {
    const clock = new ManualClock(START);
    clock.advance(5_000);
    assert.equal(clock.nowMs(), START + 5_000);
    clock.advance(0);
    assert.equal(clock.nowMs(), START + 5_000);
    clock.advance(1);
    assert.equal(clock.now().toISOString(), '2026-01-01T00:00:05.001Z');
  });

  test('advance refuses to move backwards (TypeError) and leaves the time alone', () => {
    const clock = new ManualClock(START);
    assert.throws(() => clock.advance(-1), BACKWARDS);
    assert.throws(() => clock.advance(NaN), BACKWARDS);
    assert.equal(clock.nowMs(), START);
  });

  test('set jumps forward or stays, never back', () => {
    const clock = new ManualClock(START);
    clock.set(START + 60_000);
    assert.equal(clock.nowMs(), START + 60_000);
    clock.set(START + 60_000);
    assert.equal(clock.nowMs(), START + 60_000);
    assert.throws(() => clock.set(START), BACKWARDS);
    assert.throws(() => clock.set(START + 59_999), BACKWARDS);
    assert.equal(clock.nowMs(), START + 60_000);
  });

  test('now() returns a fresh Date: changing it does not move the clock', () => {
    const clock = new ManualClock(START);
    const d = clock.now();
    d.setTime(0);
    assert.equal(clock.nowMs(), START);
    assert.notEqual(clock.now(), clock.now());
  });

  test('set and advance refuse NaN and infinite times', () => {
    const clock = new ManualClock(START);
    assert.throws(() => clock.set(NaN), BACKWARDS);
    assert.equal(clock.nowMs(), START);
    assert.throws(() => clock.set(Infinity), { name: 'TypeError' });
    assert.throws(() => clock.advance(Infinity), { name: 'TypeError' });
    assert.equal(clock.nowMs(), START);
  });
});

describe('systemClock', () => {
  test('reads the real time and cannot be replaced', () => {
    const before = Date.now();
    const ms = systemClock.nowMs();
    const date = systemClock.now();
    const after = Date.now();
    assert.ok(before <= ms && ms <= after);
    assert.ok(date instanceof Date);
    assert.ok(before <= date.getTime() && date.getTime() <= after);
    assert.ok(Object.isFrozen(systemClock));
  });
});
