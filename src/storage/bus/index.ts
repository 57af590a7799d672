/** Revocation bus adapters that need a database or a broker. */
export { PostgresRevocationBus } from './postgres.ts';
export type { PostgresBusOptions } from './postgres.ts';
export { NatsRevocationBus } from './nats.ts';
export type { NatsBusOptions } from './nats.ts';
