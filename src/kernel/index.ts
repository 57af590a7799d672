/**
 * Kernel (layer 0): value types, the clock, errors, the event envelope,
 * configuration and the small ports every context shares.
 */
export { WritError, defineErrorCatalog, kernelErrors, ERROR_CODE_PATTERN } from './errors.ts';
export type { ErrorCatalog, ErrorSpec } from './errors.ts';
export { SpiffeId, TrustDomain, SPIFFE_ID_RULES, MAX_SPIFFE_ID_BYTES, MAX_TRUST_DOMAIN_BYTES } from './spiffe-id.ts';
export { systemClock, ManualClock } from './clock.ts';
export type { Clock } from './clock.ts';
export { canonicalJson } from './canonical-json.ts';
export { Secret, redact, isSecretKey, constantTimeEqual, REDACTED_VALUE } from './secret.ts';
export { correlationIdFrom, newCorrelationId } from './correlation.ts';
export type { AuditActor, AuditTarget, AuditOutcome, AuditEventInput, AuditRecord, AuditSink } from './event.ts';
export { CONFIG_SCHEMA, CLIENT_ENV, loadConfig, describeConfig, envName } from './config.ts';
export type { WritConfig, ConfigKey, ConfigSources, OptionSpec } from './config.ts';
