/**
 * Node agent (part of the identity context): kernel-verified attestation of
 * local callers and the SPIFFE Workload API they fetch their SVIDs from.
 */
export { agentErrors } from './errors.ts';
export type { AgentErrorCode } from './errors.ts';
export { PeerAttestor } from './peer-credentials.ts';
export type { PeerCredentials, PeerAttestorOptions } from './peer-credentials.ts';
export { parseSelector, selectorsFromPeer, matchesSelectors } from './selectors.ts';
export type { Selector, SelectorParts } from './selectors.ts';
export { SPIFFE_ENDPOINT_SOCKET, parseEndpointSocket, grpcTargetOf } from './endpoint-socket.ts';
export type { EndpointAddress } from './endpoint-socket.ts';
export { WorkloadApiServer, WORKLOAD_API_HEADER, WORKLOAD_API_PROTO_PATH, loadWorkloadApiDefinition } from './workload-api-server.ts';
export type { WorkloadApiServerOptions } from './workload-api-server.ts';
export type {
  WorkloadCaller,
  WorkloadIdentitySource,
  X509SvidMaterial,
  X509SvidState,
  X509BundlesState,
  X509BundleMap,
  JwtSvidMaterial,
  ValidatedJwtSvid,
} from './workload-identity-source.ts';
export { WorkloadAgent, assertCredentialConsistent } from './agent.ts';
export type { AgentStateStore, AgentLog, AgentStatus, WorkloadAgentOptions } from './agent.ts';
export type {
  NodeApi,
  NodeAttestationEvidence,
  AgentNodeCredential,
  IssuedNodeSvid,
  AgentEntry,
  AgentRevocation,
  RevocationListener,
  IssuedX509Svid,
  IssuedJwtSvid,
} from './node-api.ts';
