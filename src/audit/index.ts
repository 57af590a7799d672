/**
 * Audit (layer 1): the append-only, hash-chained evidence trail.
 */
export { auditErrors } from './errors.ts';
export { AuditWriter } from './writer.ts';
export type { AuditWriterOptions, AuditWriterStats } from './writer.ts';
export { verifyChain } from './verify.ts';
export type { VerifyResult, VerifyFailure } from './verify.ts';
export { GENESIS_HASH, chainHash, chainHashes, seal, prepareEvent, toEventBody, toRecord } from './chain.ts';
export type { AuditEventBody, PendingEvent } from './chain.ts';
export type { AuditStore, StoredAuditRow, ChainHead, AuditQuery, SealInput } from './ports.ts';
export { toOcsf, ocsfMappingFor, OCSF_VERSION } from './ocsf.ts';
export type { OcsfEvent, OcsfProduct } from './ocsf.ts';
