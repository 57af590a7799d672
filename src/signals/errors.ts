import { defineErrorCatalog } from '../kernel/index.ts';

/** The signals context's error codes. */
export const signalsErrors = defineErrorCatalog('SIGNALS', {
  ERR_SIGNALS_INVALID: { status: 400, description: 'a signal is malformed: unknown type, a missing or invalid field (SPIFFE ID, score, risk level, id)' },
  ERR_SIGNALS_REVOCATION_INVALID: { status: 400, description: 'a revocation is malformed: unknown kind, or the subject, lease or token it names is missing or invalid' },
  ERR_SIGNALS_BUS_UNAVAILABLE: { status: 503, description: 'the revocation bus did not accept the event (its broker or database is unreachable); nothing was acknowledged' },
  ERR_SIGNALS_BUS_CONFIG: { status: 500, description: 'the revocation bus configuration cannot work: `bus.kind` `postgres` without a PostgreSQL store' },
  ERR_SIGNALS_SSF_CONFIG: { status: 500, description: 'option `ssf.receivers` is not an array of `{endpointUrl, audience, authorizationHeaderEnv?}` with http(s) URLs, or names an environment variable that is not set' },
  ERR_SIGNALS_CURSOR_INVALID: { status: 400, description: 'a revocation stream cursor (`Last-Event-ID`) is not a non-negative integer' },
});
