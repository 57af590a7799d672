import { defineErrorCatalog } from '../kernel/index.ts';

/** The signals context's error codes. */
export const signalsErrors = defineErrorCatalog('SIGNALS', {
  ERR_SIGNALS_INVALID: { status: 400, description: 'a signal is malformed: unknown type, a missing or invalid field (SPIFFE ID, score, risk level, id)' },
  ERR_SIGNALS_REVOCATION_INVALID: { status: 400, description: 'a revocation is malformed: unknown kind, or the subject, lease or token it names is missing or invalid' },
  ERR_SIGNALS_BUS_UNAVAILABLE: { status: 503, description: 'the revocation bus did not accept the event (its broker or database is unreachable); nothing was acknowledged' },
  ERR_SIGNALS_BUS_CONFIG: { status: 500, description: 'the revocation bus configuration cannot work: `bus.kind` `postgres` without a PostgreSQL store' },
  ERR_SIGNALS_SSF_CONFIG: { status: 500, description: 'option `ssf.receivers` is not an array of `{endpointUrl, audience, authorizationHeaderEnv?}` with http(s) URLs, or names an environment variable that is not set' },
  ERR_SIGNALS_SSF_STREAM_INVALID: { status: 400, description: 'a Shared Signals stream request is malformed: unknown field, unsupported delivery method, a bad endpoint URL, event type, status or subject' },
  ERR_SIGNALS_SSF_STREAM_NOT_FOUND: { status: 404, description: 'no Shared Signals stream with this `stream_id` belongs to the caller' },
  ERR_SIGNALS_SSF_STREAM_CONFLICT: { status: 409, description: 'the Shared Signals stream changed while it was updated, or `stream_id` is missing where the caller has several streams; retry' },
  ERR_SIGNALS_SSF_VERIFY_TOO_SOON: { status: 429, description: 'a verification event was requested sooner than the stream\'s `min_verification_interval` after the previous one' },
  ERR_SIGNALS_SSF_POLL_INVALID: { status: 400, description: 'an RFC 8936 poll request is malformed (`maxEvents`, `returnImmediately`, `ack`, `setErrs`), or the stream is not a poll stream' },
  ERR_SIGNALS_SSF_TRANSMITTERS_CONFIG: { status: 500, description: 'option `ssf.transmitters` is not an array of `{issuer, jwksUri, audience, pushAuthorizationEnv?, pollUrl?, pollAuthorizationEnv?, pollIntervalMs?}` with http(s) URLs, or names an environment variable that is not set' },
  ERR_SIGNALS_DRILL_INVALID: { status: 400, description: 'a revocation drill request is malformed: the subject is not a SPIFFE ID, task id or token id, or `timeoutMs` is out of range' },
  ERR_SIGNALS_DRILL_NOTHING_LIVE: { status: 409, description: 'a live revocation drill found nothing to revoke for its subject (no live lease of the task); use `canary`' },
  ERR_SIGNALS_ACK_INVALID: { status: 400, description: 'a revocation acknowledgement is malformed: `pep` must be an instance name, `id` an event id, `denied` a boolean' },
  ERR_SIGNALS_CURSOR_INVALID: { status: 400, description: 'a revocation stream cursor (`Last-Event-ID`) is not a non-negative integer' },
});
