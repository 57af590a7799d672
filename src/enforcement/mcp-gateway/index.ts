/**
 * The MCP gateway (`writ mcp-gateway`): an OAuth protected resource in front
 * of an upstream MCP server that authorizes every tool call through the PDP,
 * filters tool lists, enforces per-task budgets, exchanges the agent's token
 * for the upstream and audits each call.
 */
export { AccessTokenVerifier, GATEWAY_DPOP_ALGS } from './access-token.ts';
export type { AgentIdentity, AccessTokenVerifierOptions, TokenPresentation } from './access-token.ts';
export { TokenExchanger } from './exchange.ts';
export type { TokenExchangerOptions } from './exchange.ts';
export { CallBudgets } from './budget.ts';
export type { BudgetLimits, BudgetCharge } from './budget.ts';
export { McpGateway, MCP_DENIED, MCP_INTERNAL, MCP_INVALID_REQUEST, MCP_PARSE_ERROR, MCP_HEADER_MISMATCH, MCP_PROTOCOL_VERSIONS } from './gateway.ts';
export type { McpGatewayOptions, McpDecisionLine } from './gateway.ts';
