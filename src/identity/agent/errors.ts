/**
 * Error codes of the node agent: caller (peer) attestation, workload
 * selectors and the Workload API endpoint address.
 *
 * They share the identity context's `ERR_IDENTITY_` prefix; the identity
 * context's catalogue lists them next to its own.
 */
import { defineErrorCatalog } from '../../kernel/index.ts';

/**
 * The agent's closed catalogue of error codes.
 *
 * @example
 * throw agentErrors.error('ERR_IDENTITY_PEER_NOT_FOUND', 'no process holds peer socket `123`');
 */
export const agentErrors = defineErrorCatalog('IDENTITY', {
  ERR_IDENTITY_PEER_UNSUPPORTED: {
    status: 500,
    description: 'kernel-verified peer attestation is not available on this platform (Linux with /proc and iproute2 `ss` is required)',
  },
  ERR_IDENTITY_PEER_LOOKUP_FAILED: {
    status: 500,
    description: 'the kernel could not be asked who the peer of a Unix socket connection is, or its answer could not be read unambiguously',
  },
  ERR_IDENTITY_PEER_NOT_FOUND: {
    status: 403,
    description: 'no process visible to the agent holds the peer end of the caller\'s connection (it exited, or lives in another PID namespace)',
  },
  ERR_IDENTITY_PEER_AMBIGUOUS: {
    status: 403,
    description: 'several processes hold the peer end of the caller\'s connection and they differ in uid, gid or executable',
  },
  ERR_IDENTITY_PEER_CHANGED: {
    status: 403,
    description: 'the calling process changed (exited, was replaced, exec\'d or dropped the socket) while it was being attested',
  },
  ERR_IDENTITY_PEER_OWNER_MISMATCH: {
    status: 403,
    description: 'the kernel-recorded owner of the caller\'s socket differs from the effective uid or gid of the process holding it',
  },
  ERR_IDENTITY_PEER_EXE_UNAVAILABLE: {
    status: 403,
    description: 'the executable of the calling process cannot be read or was deleted, so it cannot be measured',
  },
  ERR_IDENTITY_SELECTOR_INVALID: {
    status: 400,
    description: 'a workload selector is not of the form `<type>:<key>:<value>` or has an unknown unix key or a malformed value',
  },
  ERR_IDENTITY_ENDPOINT_SOCKET_INVALID: {
    status: 400,
    description: 'a Workload API endpoint address (SPIFFE_ENDPOINT_SOCKET) is not `unix:///absolute/path` or `tcp://<ip>:<port>`',
  },
  ERR_IDENTITY_AGENT_SERVER_UNAVAILABLE: {
    status: 503,
    description: 'the agent cannot reach the Writ server (or the server failed); the agent keeps serving cached SVIDs until they expire and retries',
  },
  ERR_IDENTITY_AGENT_NODE_REFUSED: {
    status: 403,
    description: 'the Writ server refused this node\'s credential (node evicted, unknown or expired); the agent stops serving every entry and tries to attest again',
  },
  ERR_IDENTITY_AGENT_NOT_ATTESTED: {
    status: 503,
    description: 'the agent holds no valid node credential yet, so it cannot ask the server for anything',
  },
  ERR_IDENTITY_AGENT_RESPONSE_INVALID: {
    status: 502,
    description: 'the Writ server answered the agent with something it cannot use (an SVID for another key or SPIFFE ID, an expired SVID, a malformed bundle)',
  },
  ERR_IDENTITY_AGENT_SERVER_UNTRUSTED: {
    status: 502,
    description: 'over mutual TLS, the Writ server did not present an X.509-SVID of `spiffe://<trust domain>/writ/server` chaining to the agent\'s trust bundle; nothing was sent, and the agent keeps its cache and retries as in an outage',
  },
  ERR_IDENTITY_AGENT_STATE_INVALID: {
    status: 500,
    description: 'the agent\'s saved node credential in its data folder is unreadable or does not match its key',
  },
});

/** One of the agent's error codes. */
export type AgentErrorCode = keyof typeof agentErrors.specs;
