/**
 * Policy context (layer 1): the Cedar policy decision point. Policy sets are
 * folders of `.cedar` files validated against a schema (`writ.cedarschema` by
 * default), pre-parsed, sliced and swapped atomically; `decide()` assembles
 * live context through ports and explains every decision; `authzen` is the
 * OpenID AuthZEN Authorization API 1.0 without its transport.
 */
export { policyErrors } from './errors.ts';
export type { PolicyErrorCode } from './errors.ts';
export { compilePolicySet, compileOrThrow, CompiledPolicySet, PolicyEngine } from './policy-set.ts';
export type { PolicySource, SourceFile, LoadProblem, PolicyInfo, Slice, CompileResult, LoadReport, EngineStatus } from './policy-set.ts';
export { readPolicyFolder, readWritSchema, WRIT_SCHEMA_PATH } from './policy-source.ts';
export { Decider } from './decide.ts';
export type { Decision, DecisionRequest, DeciderOptions, EntityData, DecisionObserver } from './decide.ts';
export { ShadowEvaluator } from './shadow.ts';
export type { ShadowStats, ShadowOptions } from './shadow.ts';
export { memoryEntityLoader } from './ports.ts';
export type { EntityRef, EntityLoader, LoadedEntities, ContextSource, ContextQuery } from './ports.ts';
export { clockContextSource, registryEntityLoader, signalContextSources } from './context-sources.ts';
export type { RegisteredWorkload, RegisteredNode, IdentityDirectory, RegistryLoaderOptions, RegistryEntityLoader, SignalReader } from './context-sources.ts';
export { buildSchemaInfo, resolveEntityType, resolveAction, uidKey } from './schema-info.ts';
export type { SchemaInfo, AttributeNames, ActionAppliesTo } from './schema-info.ts';
export {
  parseEvaluationRequest,
  parseEvaluationsRequest,
  toDecisionRequest,
  toAuthzenDecision,
  failedItemDecision,
  evaluate,
  evaluations,
  parseAuthzenBody,
  authzenMetadata,
} from './authzen.ts';
export type {
  AuthzenEntity,
  AuthzenAction,
  AuthzenEvaluation,
  AuthzenEvaluationsRequest,
  AuthzenDecision,
  AuthzenMetadata,
  AuthzenResponseOptions,
  BatchItem,
  DecideFn,
  EvaluationsSemantic,
} from './authzen.ts';
export { parsePolicyCase, runPolicyCases, readPolicyCases } from './policy-test.ts';
export type { PolicyCase, PolicyCaseResult } from './policy-test.ts';
export { search, parseSearchRequest, knownEntities, applicableActions, MAX_SEARCH_LIMIT } from './search.ts';
export type { SearchKind, SearchResponse, SearchDeps, SearchOptions } from './search.ts';
export { analyzeAccess } from './analyze.ts';
export type { AnalysisQuery, AccessFinding, AnalysisReport, AnalyzeDeps, AnalyzeOptions } from './analyze.ts';
export { replayDecisions } from './replay.ts';
export type { RecordedDecision, Flip, ReplayReport } from './replay.ts';
export { recordingAuditSink } from './fakes.ts';
export type { RecordingAuditSink } from './fakes.ts';
