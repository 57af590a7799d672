/**
 * Signals (layer 1): typed signals about workloads, nodes, owners, tasks and
 * policy; the revocation bus port with its in-process adapter; the client an
 * enforcement point uses to follow the server's revocation stream.
 */
export { signalsErrors } from './errors.ts';
export { SIGNAL_TYPES, RISK_LEVELS, parseSignal } from './signal.ts';
export type { Signal, SignalType, RiskLevel, SignalRecord, ParsedSignal } from './signal.ts';
export { REVOCATION_KINDS, ssfStreamSecretContext, setKeySecretContext } from './ports.ts';
export type { RevocationBus, RevocationEvent, RevocationInput, RevocationKind, RevocationHandler, SubscribeOptions, Unsubscribe, SignalStore, SignalContext, SsfStore, SsfStreamRecord, SecretSealer, SetKeyRecord, SetKeyStore, SsfStreamState, SsfSubject, QueuedSet, EnforcementPointRecord, EnforcementPointStore, RevocationAck } from './ports.ts';
export { parseRevocation, revocationBody, encodeRevocation, decodeRevocation, OrderedDelivery } from './revocation.ts';
export type { RevocationBody } from './revocation.ts';
export { InProcessRevocationBus } from './memory-bus.ts';
export { SignalService } from './service.ts';
export type { SignalServiceDeps, SignalOrigin } from './service.ts';
export { RevocationStreamClient } from './stream-client.ts';
export type { RevocationStreamClientOptions, RevocationQuery, RevocationStatus } from './stream-client.ts';
export { CAEP_SESSION_REVOKED, CAEP_CREDENTIAL_CHANGE, SSF_PUSH, setForRevocation, SetSigner, SsfPushTransmitter } from './ssf.ts';
export type { SubjectId, SetClaims, PushReceiver, DeliveryReport, SsfPushOptions } from './ssf.ts';
export { Reevaluator } from './reevaluation.ts';
export type { LiveItem, LiveQuery, SignalDecisionContext, Redecision, ReevaluationPort, ReceiptItem, ReevaluationReceipt, ReevaluatorDeps } from './reevaluation.ts';
export { SSF_POLL, SSF_VERIFICATION, SSF_STREAM_UPDATED, SSF_EVENTS_SUPPORTED, SsfStreams, publicConfig } from './ssf-streams.ts';
export type { StreamCaller, StreamDeliveryReport, SsfStreamsOptions } from './ssf-streams.ts';
export { SsfReceiver, SetRejected, signalForEvent } from './ssf-receiver.ts';
export type { SetErrorCode, TrustedTransmitter, ReceivedSet, SsfReceiverOptions } from './ssf-receiver.ts';
export { RevocationDrill, DRILL_EVENT_PREFIX, drillSubjectKind } from './drill.ts';
export type { DrillTarget, DrillSubjectKind, DrillPepResult, DrillReport, RevocationDrillDeps } from './drill.ts';
export { RevocationConnectionTracker } from './connection-tracker.ts';
export type { HeldBy } from './connection-tracker.ts';
export { parseSseFrame } from './sse-frame.ts';
