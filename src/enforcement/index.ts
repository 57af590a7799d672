/**
 * Enforcement context (layer 3): policy enforcement points. The PDP port with
 * its remote (AuthZEN over HTTP) and local adapters (one kept in sync with the
 * server's policy bundle) and a decision cache;
 * caller authentication by SPIFFE credentials against a refreshed trust
 * bundle; the HTTP authorizer every front end shares; the Envoy ext_authz
 * gRPC service and the HTTP-mode authorizer for nginx `auth_request`; the
 * MCP gateway that authorizes every tool call of an agent.
 */
export { enforcementErrors } from './errors.ts';
export type { EnforcementErrorCode } from './errors.ts';
export { RemotePdp, LocalPdp, CachingPdp, evaluateAll } from './pdp-client.ts';
export type { AccessRequest, PdpDecision, PdpClient, EvaluateOptions, RemotePdpOptions, LocalPdpOptions, CachingPdpOptions } from './pdp-client.ts';
export { SyncedLocalPdp, parsePolicyBundle } from './local-pdp.ts';
export type { PolicyBundle, BundleRefresh, SyncedLocalPdpOptions } from './local-pdp.ts';
export { StaticBundleSource, ServerBundleSource, bearerToken, authenticateJwtSvid, authenticateX509Svid, authenticateTlsVerifiedLeaf, decodeForwardedCertificate } from './caller.ts';
export type { BundleSource, ServerBundleSourceOptions, CallerIdentity } from './caller.ts';
export { HttpAuthorizer, normalizePath, denyBody, revocationDenial } from './authorizer.ts';
export type { HttpCheck, CheckAllowed, CheckDenied, CheckResult, HttpAuthorizerOptions, RevocationView, RevocationDenial } from './authorizer.ts';
export {
  ENVOY_PROTO_ROOT,
  EXT_AUTHZ_PROTO,
  GRPC_OK,
  GRPC_PERMISSION_DENIED,
  GRPC_UNAUTHENTICATED,
  ORIGINAL_METHOD_HEADER,
  ORIGINAL_URI_HEADER,
  CLIENT_CERT_HEADER,
  loadExtAuthzDefinition,
  checkRequestToHttp,
  checkResponseOf,
  extAuthzGrpcServer,
  extAuthzHttpServer,
  httpModeRequest,
} from './ext-authz.ts';
export type { DecisionLogLine, ExtAuthzOptions, HttpModeOptions } from './ext-authz.ts';
export { IdentityProxy } from './proxy.ts';
export type { IdentityProxyOptions, ProxyTlsMaterial } from './proxy.ts';
export { parseProxyConfig, compilePathTemplate, matchPath, AUTH_MODES, PDP_MODES } from './proxy-config.ts';
export type { ProxyConfig, RouteConfig, UpstreamConfig, InjectConfig, InjectPlacement, ProxyTlsConfig, ServingSvidSource, AuthMode, PathTemplate, PdpMode } from './proxy-config.ts';
export { ProxyAuthenticator, WritAuthorizationServer, DPOP_CHALLENGE_ALGS } from './proxy-auth.ts';
export type { ProxyCaller, AuthFailure, AccessTokenIssuer, ProxyAuthenticatorOptions, PresentedCredentials, WritAuthorizationServerOptions } from './proxy-auth.ts';
export { CredentialInjector, headerValue } from './proxy-inject.ts';
export { WorkloadApiClient, X509SvidWatcher } from './sdk/index.ts';
export type { CredentialInjectorOptions, JwtSvidProvider, TokenBroker } from './proxy-inject.ts';
export {
  AccessTokenVerifier,
  GATEWAY_DPOP_ALGS,
  TokenExchanger,
  CallBudgets,
  McpGateway,
  MCP_DENIED,
  MCP_INTERNAL,
  MCP_INVALID_REQUEST,
  MCP_PARSE_ERROR,
  MCP_HEADER_MISMATCH,
  MCP_PROTOCOL_VERSIONS,
} from './mcp-gateway/index.ts';
export type { AgentIdentity, AccessTokenVerifierOptions, TokenPresentation, TokenExchangerOptions, BudgetLimits, BudgetCharge, McpGatewayOptions, McpDecisionLine } from './mcp-gateway/index.ts';
