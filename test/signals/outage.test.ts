/**
 * Outages: the broker (NATS) stops while revocations are issued, or the
 * PostgreSQL listener's backend is terminated while publishing. Afterwards
 * every acknowledged revocation has reached every subscriber, in order, once.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { systemClock } from '../../src/kernel/index.ts';
import type { RevocationBus, RevocationEvent } from '../../src/signals/index.ts';
import { openStore } from '../../src/storage/index.ts';
import { PostgresRevocationBus, NatsRevocationBus } from '../../src/storage/bus/index.ts';
import { PG_URL, IN_CI, scratchSchema, dropSchema, skipWithoutPostgres } from '../support/services.ts';
import { Collector } from './bus-conformance.ts';
import { natsServerAvailable, startOwnNats, NATS_SERVER_BIN } from './nats-server.ts';

/** Publish until acknowledged, with the same id each try (the bus de-duplicates). */
async function publishUntilAcked(bus: RevocationBus, i: number): Promise<RevocationEvent> {
  const id = `outage-${i}`;
  for (let attempt = 0; ; attempt++) {
    try {
      return await bus.publish({ id, kind: 'subject-revoked', subject: `spiffe://writ.local/w/${i}`, reason: 'admin-revoked' });
    } catch (e) {
      assert.equal((e as { code?: string }).code, 'ERR_SIGNALS_BUS_UNAVAILABLE');
      if (attempt > 200) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

test('NATS stops while revocations are issued and comes back: every subscriber gets every revocation, none lost, none twice', async (t) => {
  if (!natsServerAvailable()) {
    const why = `no nats-server binary at ${NATS_SERVER_BIN}`;
    if (IN_CI) throw new Error(`${why}; CI=true forbids skipping`);
    t.skip(why);
    return;
  }
  const nats = await startOwnNats();
  const opts = { url: nats.url, clock: systemClock, publishTimeoutMs: 500 };
  const publisher = await NatsRevocationBus.open(opts);
  const subscribers = [await NatsRevocationBus.open(opts), await NatsRevocationBus.open(opts), await NatsRevocationBus.open(opts)];
  const collectors = subscribers.map(() => new Collector());
  const stops: (() => Promise<void>)[] = [];
  try {
    for (const [i, s] of subscribers.entries()) stops.push(await s.subscribe(0, collectors[i]?.handler ?? (() => undefined)));
    const acked: RevocationEvent[] = [];
    for (let i = 0; i < 10; i++) acked.push(await publishUntilAcked(publisher, i));
    for (const c of collectors) await c.count(10);

    await nats.stop();
    // Issued while the broker is down: each publish keeps trying until acknowledged.
    const during = Promise.all(Array.from({ length: 20 }, (_, k) => publishUntilAcked(publisher, 10 + k)));
    await new Promise((r) => setTimeout(r, 1500));
    await nats.start();
    acked.push(...(await during));
    for (let i = 30; i < 35; i++) acked.push(await publishUntilAcked(publisher, i));

    const want = [...acked].sort((a, b) => a.cursor - b.cursor).map((e) => e.id);
    assert.equal(new Set(want).size, 35, 'every id stored once');
    for (const c of collectors) {
      await c.count(35, 30_000);
      await new Promise((r) => setTimeout(r, 200));
      assert.deepEqual(c.ids(), want);
    }
  } finally {
    for (const s of stops) await s();
    for (const s of subscribers) await s.close();
    await publisher.close();
    await nats.dispose();
  }
});

test('PostgreSQL listener backends are terminated while publishing: every subscriber replays from its cursor, none lost', async (t) => {
  if (await skipWithoutPostgres(t)) return;
  const schema = scratchSchema('writ_outage');
  const store = await openStore({ url: PG_URL, dataDir: '', pgSchema: schema });
  await store.migrate();
  await store.close();
  // A long backstop poll: delivery here comes from LISTEN and the replay on reconnect.
  const mk = (): PostgresRevocationBus => new PostgresRevocationBus({ url: PG_URL, schema, clock: systemClock, pollMs: 600_000, maxBackoffMs: 200 });
  const publisher = mk();
  const subscribers = [mk(), mk(), mk()];
  const collectors = subscribers.map(() => new Collector());
  const stops: (() => Promise<void>)[] = [];
  const admin = new pg.Client({ connectionString: PG_URL });
  await admin.connect();
  try {
    for (const [i, s] of subscribers.entries()) stops.push(await s.subscribe(0, collectors[i]?.handler ?? (() => undefined)));
    const acked: RevocationEvent[] = [];
    for (let i = 0; i < 10; i++) acked.push(await publishUntilAcked(publisher, i));
    for (const c of collectors) await c.count(10);

    const pids = subscribers.map((s) => s.listenerPid());
    for (const pid of pids) assert.equal(typeof pid, 'number');
    const killing = admin.query('select pg_terminate_backend(pid) from unnest($1::int[]) as pid', [pids]);
    for (let i = 10; i < 30; i++) acked.push(await publishUntilAcked(publisher, i));
    await killing;
    for (let i = 30; i < 35; i++) acked.push(await publishUntilAcked(publisher, i));

    const want = acked.map((e) => e.id);
    for (const [i, c] of collectors.entries()) {
      await c.count(35, 20_000);
      await new Promise((r) => setTimeout(r, 100));
      assert.deepEqual(c.ids(), want);
      assert.ok((subscribers[i]?.connects ?? 0) >= 2, 'the listener reconnected');
      assert.notEqual(subscribers[i]?.listenerPid(), pids[i], 'a new backend listens');
    }
  } finally {
    await admin.end();
    for (const s of stops) await s();
    for (const s of subscribers) await s.close();
    await publisher.close();
    await dropSchema(schema);
  }
});
