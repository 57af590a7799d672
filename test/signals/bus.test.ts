/**
 * The revocation bus conformance suite against the in-process bus, PostgreSQL
 * (outbox + LISTEN/NOTIFY, scratch schema) and NATS JetStream (a private
 * nats-server child when the binary is here, else the shared server with a
 * private stream).
 */
import { randomBytes } from 'node:crypto';
import { systemClock } from '../../src/kernel/index.ts';
import { InProcessRevocationBus } from '../../src/signals/index.ts';
import { openStore } from '../../src/storage/index.ts';
import { PostgresRevocationBus, NatsRevocationBus } from '../../src/storage/bus/index.ts';
import { PG_URL, NATS_URL, scratchSchema, dropSchema, skipWithoutPostgres, skipWithoutNats } from '../support/services.ts';
import { busConformance } from './bus-conformance.ts';
import { natsServerAvailable, startOwnNats } from './nats-server.ts';

busConformance('memory', async () => {
  const bus = new InProcessRevocationBus(systemClock);
  return { bus, peer: async () => bus, cleanup: () => bus.close() };
});

busConformance('postgres', async (t) => {
  if (await skipWithoutPostgres(t)) return undefined;
  const schema = scratchSchema('writ_bus');
  const store = await openStore({ url: PG_URL, dataDir: '', pgSchema: schema });
  await store.migrate();
  await store.close();
  const buses: PostgresRevocationBus[] = [];
  const mk = (): PostgresRevocationBus => {
    const b = new PostgresRevocationBus({ url: PG_URL, schema, clock: systemClock });
    buses.push(b);
    return b;
  };
  return {
    bus: mk(),
    peer: async () => mk(),
    cleanup: async () => {
      for (const b of buses) await b.close();
      await dropSchema(schema);
    },
  };
});

busConformance('nats', async (t) => {
  let url = NATS_URL;
  let dispose = async (): Promise<void> => undefined;
  if (natsServerAvailable()) {
    const own = await startOwnNats();
    url = own.url;
    dispose = () => own.dispose();
  } else if (await skipWithoutNats(t)) return undefined;
  const suffix = randomBytes(4).toString('hex');
  const opts = { url, clock: systemClock, stream: `WRIT_TEST_${suffix}`, subject: `writ.test.${suffix}` };
  const buses: NatsRevocationBus[] = [];
  const bus = await NatsRevocationBus.open(opts);
  buses.push(bus);
  return {
    bus,
    peer: async () => {
      const b = await NatsRevocationBus.open(opts);
      buses.push(b);
      return b;
    },
    cleanup: async () => {
      for (const b of buses) await b.close();
      await dispose();
    },
  };
});
