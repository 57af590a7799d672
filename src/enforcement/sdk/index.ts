/**
 * `writ/sdk`: what a Node app needs to take part in Writ — authorization
 * middleware for Express-style servers and Fastify that authenticates the
 * caller by SPIFFE credential and asks the PDP per request, and a Workload API
 * client with an mTLS agent built from the current X.509-SVID.
 */
export { writAuthorize, writFastify, authorizerFromOptions, verifiedPeerLeaf } from './middleware.ts';
export type { WritAuthzOptions, WritCaller, WritRequest } from './middleware.ts';
export { WorkloadApiClient, X509SvidWatcher, mtlsAgent, spiffeIdVerifier, splitDerSequence } from './workload-api.ts';
export type { WorkloadApiClientOptions, X509SvidHandle, JwtSvidHandle } from './workload-api.ts';
export { RemotePdp, LocalPdp, CachingPdp } from '../pdp-client.ts';
export type { PdpClient, PdpDecision, AccessRequest } from '../pdp-client.ts';
export { ServerBundleSource, StaticBundleSource } from '../caller.ts';
export type { BundleSource, CallerIdentity } from '../caller.ts';
export { enforcementErrors } from '../errors.ts';
