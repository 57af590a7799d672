/**
 * One conformance suite for every RevocationBus adapter: ordering, replay from
 * a cursor, de-dup by id, several subscribers, and a subscriber that goes
 * away and comes back from its cursor. `open()` returns a fresh bus on a fresh
 * backend; `peer()` another bus instance on the same backend (another replica).
 */
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import type { RevocationBus, RevocationEvent } from '../../src/signals/index.ts';

export interface BusFixture {
  readonly bus: RevocationBus;
  peer(): Promise<RevocationBus>;
  cleanup(): Promise<void>;
}

/** Collects events and waits until a predicate holds. */
export class Collector {
  readonly events: RevocationEvent[] = [];
  #waiters: { pred: () => boolean; resolve: () => void }[] = [];
  readonly handler = (e: RevocationEvent): void => {
    this.events.push(e);
    this.#waiters = this.#waiters.filter((w) => {
      if (!w.pred()) return true;
      w.resolve();
      return false;
    });
  };
  ids(): string[] {
    return this.events.map((e) => e.id);
  }
  async until(pred: () => boolean, timeoutMs = 10_000, what = 'events'): Promise<void> {
    if (pred()) return;
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`timed out waiting for ${what}; have ${this.events.length}`)), timeoutMs);
      this.#waiters.push({
        pred,
        resolve: () => {
          clearTimeout(t);
          resolve();
        },
      });
    });
  }
  async count(n: number, timeoutMs?: number): Promise<void> {
    await this.until(() => this.events.length >= n, timeoutMs, `${n} events`);
  }
}

const SUBJECT = (i: number): string => `spiffe://writ.local/w/${i}`;

export function busConformance(name: string, open: (t: TestContext) => Promise<BusFixture | undefined>): void {
  const withBus = (title: string, body: (f: BusFixture) => Promise<void>): void => {
    test(`${name}: ${title}`, async (t) => {
      const f = await open(t);
      if (f === undefined) return;
      try {
        await body(f);
      } finally {
        await f.cleanup();
      }
    });
  };

  withBus('publish assigns increasing cursors and subscribers get every event in order', async ({ bus }) => {
    const c = new Collector();
    const stop = await bus.subscribe(0, c.handler);
    const published: RevocationEvent[] = [];
    for (let i = 0; i < 20; i++) published.push(await bus.publish({ kind: 'subject-revoked', subject: SUBJECT(i), reason: 'admin-revoked' }));
    for (let i = 1; i < published.length; i++) assert.ok((published[i]?.cursor ?? 0) > (published[i - 1]?.cursor ?? 0), 'cursors increase');
    await c.count(20);
    assert.deepEqual(c.ids(), published.map((e) => e.id));
    assert.deepEqual(c.events.map((e) => e.subject), published.map((e) => e.subject));
    assert.equal(c.events[0]?.kind, 'subject-revoked');
    assert.equal(c.events[0]?.reason, 'admin-revoked');
    assert.equal(await bus.head(), published.at(-1)?.cursor);
    await stop();
  });

  withBus('subscribe from a cursor replays only what came after it, then follows', async ({ bus }) => {
    const first: RevocationEvent[] = [];
    for (let i = 0; i < 5; i++) first.push(await bus.publish({ kind: 'lease-revoked', leaseId: `lease-${i}`, reason: 'task-completed' }));
    const from = first[2]?.cursor ?? 0;
    const c = new Collector();
    const stop = await bus.subscribe(from, c.handler);
    await c.count(2);
    assert.deepEqual(c.events.map((e) => e.leaseId), ['lease-3', 'lease-4']);
    const later = await bus.publish({ kind: 'token-revoked', tokenId: 'jti-9', reason: 'credential-compromised' });
    await c.count(3);
    assert.equal(c.events[2]?.id, later.id);
    assert.equal(c.events[2]?.tokenId, 'jti-9');
    await stop();
  });

  withBus('subscribe from now (no cursor) skips the past', async ({ bus }) => {
    await bus.publish({ kind: 'policy-changed', reason: 'policy-reloaded' });
    const c = new Collector();
    const stop = await bus.subscribe(undefined, c.handler);
    const e = await bus.publish({ kind: 'subject-revoked', subject: SUBJECT(1), reason: 'admin-revoked' });
    await c.count(1);
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(c.ids(), [e.id]);
    await stop();
  });

  withBus('re-publishing an id is de-duplicated: same cursor, delivered once', async ({ bus }) => {
    const c = new Collector();
    const stop = await bus.subscribe(0, c.handler);
    const a = await bus.publish({ id: 'rev-dup-1', kind: 'subject-revoked', subject: SUBJECT(1), reason: 'admin-revoked' });
    const again = await bus.publish({ id: 'rev-dup-1', kind: 'subject-revoked', subject: SUBJECT(1), reason: 'admin-revoked' });
    const b = await bus.publish({ kind: 'subject-revoked', subject: SUBJECT(2), reason: 'admin-revoked' });
    assert.equal(again.cursor, a.cursor);
    assert.equal(again.id, 'rev-dup-1');
    assert.equal(again.at, a.at);
    await c.count(2);
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(c.ids(), ['rev-dup-1', b.id]);
    await stop();
  });

  withBus('every subscriber on every replica gets every event', async ({ bus, peer }) => {
    const other = await peer();
    const cs = [new Collector(), new Collector(), new Collector()];
    const stops = [await bus.subscribe(0, cs[0]?.handler ?? (() => undefined)), await other.subscribe(0, cs[1]?.handler ?? (() => undefined)), await other.subscribe(0, cs[2]?.handler ?? (() => undefined))];
    const ids: string[] = [];
    for (let i = 0; i < 10; i++) ids.push((await (i % 2 === 0 ? bus : other).publish({ kind: 'subject-revoked', subject: SUBJECT(i), reason: 'admin-revoked' })).id);
    for (const c of cs) {
      await c.count(10);
      assert.deepEqual(c.ids(), ids);
    }
    for (const s of stops) await s();
    await other.close();
  });

  withBus('a subscriber that goes away and comes back from its cursor loses nothing and repeats nothing', async ({ bus, peer }) => {
    const other = await peer();
    const c = new Collector();
    let stop = await other.subscribe(0, c.handler);
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await bus.publish({ kind: 'subject-revoked', subject: SUBJECT(i), reason: 'admin-revoked' })).id);
    await c.count(5);
    await stop();
    const cursor = c.events.at(-1)?.cursor ?? 0;
    for (let i = 5; i < 12; i++) ids.push((await bus.publish({ kind: 'subject-revoked', subject: SUBJECT(i), reason: 'admin-revoked' })).id);
    stop = await other.subscribe(cursor, c.handler);
    await c.count(12);
    for (let i = 12; i < 15; i++) ids.push((await bus.publish({ kind: 'subject-revoked', subject: SUBJECT(i), reason: 'admin-revoked' })).id);
    await c.count(15);
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(c.ids(), ids);
    await stop();
    await other.close();
  });

  withBus('a handler that throws is reported and delivery continues', async ({ bus }) => {
    const errors: unknown[] = [];
    const c = new Collector();
    const stop = await bus.subscribe(0, (e) => {
      c.handler(e);
      if (c.events.length === 1) throw new Error('handler broke');
    }, { onError: (err) => errors.push(err) });
    await bus.publish({ kind: 'subject-revoked', subject: SUBJECT(1), reason: 'admin-revoked' });
    await bus.publish({ kind: 'subject-revoked', subject: SUBJECT(2), reason: 'admin-revoked' });
    await c.count(2);
    assert.equal((errors[0] as Error).message, 'handler broke');
    await stop();
  });
}
