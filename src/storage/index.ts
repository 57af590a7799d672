/**
 * Storage (layer 4): adapters for every context's ports — SQLite (Node's
 * built-in `node:sqlite`, the embedded default), PostgreSQL (`pg`) — through
 * one Kysely query layer, with versioned migrations and one conformance suite.
 */
export { openStore, describeStoreUrl } from './open.ts';
export type { OpenStoreOptions } from './open.ts';
export { Store } from './store.ts';
export type { StoreKind } from './store.ts';
export { storageErrors } from './errors.ts';
export { PostgresRevocationBus, NatsRevocationBus } from './bus/index.ts';
export type { PostgresBusOptions, NatsBusOptions } from './bus/index.ts';
