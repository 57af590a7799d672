/**
 * Credentials (layer 2): leases every issued credential goes through, tasks
 * they are bound to, dynamic secret engines (PostgreSQL roles, Redis ACL
 * users) and the reaper that ends what should no longer exist.
 */
export { credentialErrors } from './errors.ts';
export type { CredentialErrorCode } from './errors.ts';
export type { Lease, LeaseKind, LeaseState, LeaseManagerPort, OpenLeaseRequest } from './lease-port.ts';
export type { LeaseStore, TaskStore, Task, TaskState, LeaseFilter, LeasePatch, LeaseQuota, QuotaOutcome, SealedSecret, ExceptionOwner, LegacyException, ExceptionPatch, ExceptionStore, EngineSecretRow, EngineSecretStore } from './ports.ts';
export { LeaseManager, newLeaseId } from './lease-manager.ts';
export type { LeaseLimits, LeaseRevoker } from './lease-manager.ts';
export { TaskService } from './tasks.ts';
export type { StartTaskRequest, RevocationReceipt } from './tasks.ts';
export { DynamicCredentials } from './dynamic.ts';
export type { DynamicRequest, DynamicCredential } from './dynamic.ts';
export { Reaper } from './reaper.ts';
export type { ReaperPass } from './reaper.ts';
export { buildEngines, postgresPlugin, redisPlugin, generatePassword } from './engines/index.ts';
export type { SecretEngine, EnginePlugin, DynamicAccount, PostgresEngineConfig, RedisEngineConfig } from './engines/index.ts';
export * from './oauth/index.ts';
