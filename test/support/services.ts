/**
 * Reaching the real services a test needs. A test that needs a service skips
 * with a one-line reason when it does not answer, except under CI=true, where
 * it fails: CI must never go green by skipping.
 */
import pg from 'pg';
import { randomBytes } from 'node:crypto';
import type { TestContext } from 'node:test';

/** PostgreSQL for tests: WRIT_TEST_PG_URL, else the local trust-auth server. */
export const PG_URL = process.env.WRIT_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

export const IN_CI = process.env.CI === 'true';

let pgAnswer: Promise<string | undefined> | undefined;

/** undefined when PostgreSQL answers, else why not. */
export function postgresProblem(): Promise<string | undefined> {
  pgAnswer ??= (async () => {
    const c = new pg.Client({ connectionString: PG_URL, connectionTimeoutMillis: 3000 });
    try {
      await c.connect();
      await c.query('select 1');
      return undefined;
    } catch (e) {
      return `PostgreSQL at ${PG_URL} does not answer (${(e as Error).message})`;
    } finally {
      await c.end().catch(() => undefined);
    }
  })();
  return pgAnswer;
}

/**
 * Call at the top of a PostgreSQL test: returns true when the test must stop
 * (skipped). Under CI=true an unreachable server fails the test instead.
 */
export async function skipWithoutPostgres(t: TestContext): Promise<boolean> {
  const problem = await postgresProblem();
  if (problem === undefined) return false;
  if (IN_CI) throw new Error(`${problem}; CI=true forbids skipping`);
  t.skip(problem);
  return true;
}

/** A fresh schema name, so tests never see each other's tables. */
export function scratchSchema(prefix = 'writ_test'): string {
  return `${prefix}_${randomBytes(6).toString('hex')}`;
}

/** Drop a scratch schema. */
export async function dropSchema(schema: string): Promise<void> {
  const c = new pg.Client({ connectionString: PG_URL });
  await c.connect();
  try {
    await c.query(`drop schema if exists ${schema} cascade`);
  } finally {
    await c.end();
  }
}

/** NATS with JetStream for tests: WRIT_TEST_NATS_URL, else the local server. */
export const NATS_URL = process.env.WRIT_TEST_NATS_URL ?? 'nats://127.0.0.1:4222';

let natsAnswer: Promise<string | undefined> | undefined;

/** undefined when NATS (with JetStream) answers, else why not. */
export function natsProblem(): Promise<string | undefined> {
  natsAnswer ??= (async () => {
    const { connect } = await import('nats');
    try {
      const nc = await connect({ servers: NATS_URL, timeout: 3000, reconnect: false });
      try {
        await (await nc.jetstreamManager()).getAccountInfo();
        return undefined;
      } catch (e) {
        return `NATS at ${NATS_URL} answers but JetStream does not (${(e as Error).message})`;
      } finally {
        await nc.close();
      }
    } catch (e) {
      return `NATS at ${NATS_URL} does not answer (${(e as Error).message})`;
    }
  })();
  return natsAnswer;
}

/** Like {@link skipWithoutPostgres}, for NATS JetStream. */
export async function skipWithoutNats(t: TestContext): Promise<boolean> {
  const problem = await natsProblem();
  if (problem === undefined) return false;
  if (IN_CI) throw new Error(`${problem}; CI=true forbids skipping`);
  t.skip(problem);
  return true;
}

/** Redis for tests: WRIT_TEST_REDIS_URL, else the local server. */
export const REDIS_URL = process.env.WRIT_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

let redisAnswer: Promise<string | undefined> | undefined;

/** undefined when Redis answers PING, else why not. */
export function redisProblem(): Promise<string | undefined> {
  redisAnswer ??= (async () => {
    const { connect } = await import('node:net');
    const u = new URL(REDIS_URL);
    return new Promise<string | undefined>((resolve) => {
      const s = connect({ host: u.hostname, port: Number(u.port === '' ? 6379 : u.port) });
      const done = (why: string | undefined): void => {
        s.destroy();
        resolve(why);
      };
      s.setTimeout(3000, () => done(`Redis at ${REDIS_URL} does not answer (timeout)`));
      s.on('error', (e) => done(`Redis at ${REDIS_URL} does not answer (${e.message})`));
      s.on('connect', () => s.write('PING\r\n'));
      s.on('data', (d) => done(d.toString().startsWith('+PONG') ? undefined : `Redis at ${REDIS_URL} answered ${JSON.stringify(d.toString().slice(0, 40))}`));
    });
  })();
  return redisAnswer;
}

/** Like {@link skipWithoutPostgres}, for Redis. */
export async function skipWithoutRedis(t: TestContext): Promise<boolean> {
  const problem = await redisProblem();
  if (problem === undefined) return false;
  if (IN_CI) throw new Error(`${problem}; CI=true forbids skipping`);
  t.skip(problem);
  return true;
}
