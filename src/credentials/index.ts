/**
 * Credentials (layer 2): leases every issued credential goes through, tasks
 * they are bound to, dynamic secret engines (PostgreSQL roles, Redis ACL
 * users) and the reaper that ends what should no longer exist.
 */
export { credentialErrors } from './errors.ts';
export type { CredentialErrorCode } from './errors.ts';
export type { Lease, LeaseKind, LeaseState, LeaseManagerPort, OpenLeaseRequest } from './lease-port.ts';
export type { LeaseStore, TaskStore, Task, TaskState, LeaseFilter, LeasePatch, LeaseQuota, QuotaOutcome, SealedSecret, ExceptionOwner, LegacyException, ExceptionPatch, ExceptionStore, EngineSecretRow, EngineSecretPatch, EngineSecretStore } from './ports.ts';
export { LeaseManager, newLeaseId } from './lease-manager.ts';
export type { LeaseLimits, LeaseRevoker } from './lease-manager.ts';
export { TaskService } from './tasks.ts';
export type { StartTaskRequest, RevocationReceipt } from './tasks.ts';
export { DynamicCredentials } from './dynamic.ts';
export type { DynamicRequest, DynamicCredential } from './dynamic.ts';
export { Reaper } from './reaper.ts';
export type { ReaperPass } from './reaper.ts';
export { buildEngines, postgresPlugin, redisPlugin, generatePassword, scramSha256Verifier } from './engines/index.ts';
export type { SecretEngine, EnginePlugin, DynamicAccount, PostgresEngineConfig, RedisEngineConfig, AdminSecretSource } from './engines/index.ts';
export { EngineRotator, STALE_ROTATION_MS } from './engine-rotation.ts';
export type { EngineRotation, EngineRotationStatus } from './engine-rotation.ts';
export { ExceptionService, OWASP_NHI_TOP10, DEFAULT_EXCEPTION_ROTATION_SECONDS, MAX_EXCEPTION_TTL_MS, exceptionView, normalizeRisks } from './exceptions.ts';
export type { ExceptionInput, ExceptionRenewal, ExceptionFinding, ExceptionSweep } from './exceptions.ts';
export { sealSecret, openSecret, engineSecretContext, exceptionSecretContext } from './sealed.ts';
export * from './oauth/index.ts';
