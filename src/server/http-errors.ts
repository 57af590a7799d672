/**
 * Turning any thrown error into the one response shape:
 * `{code, message, correlationId}` with the right status. Fastify's own
 * errors (parser, limits, validation) become Writ codes; anything unknown is a
 * generic 500 whose detail goes only to the log.
 */
import { WritError } from '../kernel/index.ts';
import { serverErrors } from './errors.ts';

/**
 * The longest path segment the router takes: the longest id the API accepts in
 * a path (an OAuth `client_id`, up to 256 characters). Fastify's default of 100
 * would leave a registered client with a longer id impossible to delete.
 */
export const MAX_PATH_PARAM_LENGTH = 256;

interface FastifyLikeError {
  code?: string;
  statusCode?: number;
  validation?: { instancePath?: string; message?: string; keyword?: string; params?: Record<string, unknown> }[];
  validationContext?: string;
  message?: string;
}

function describeValidation(e: FastifyLikeError): string {
  const first = e.validation?.[0];
  const where = e.validationContext ?? 'body';
  if (first === undefined) return `invalid ${where}`;
  const path = (first.instancePath ?? '').replace(/^\//, '').replace(/\//g, '.');
  if (first.keyword === 'additionalProperties') {
    const extra = String(first.params?.additionalProperty ?? '');
    return `${where} has unknown field \`${[path, extra].filter((p) => p !== '').join('.')}\``;
  }
  if (first.keyword === 'required') {
    const missing = String(first.params?.missingProperty ?? '');
    return `${where} is missing required field \`${[path, missing].filter((p) => p !== '').join('.')}\``;
  }
  return `${where}${path === '' ? '' : ` field \`${path}\``} ${first.message ?? 'is invalid'}`;
}

/**
 * @example
 * const e = toWritError(err); reply.code(e.status).send(errorBody(e, correlationId));
 */
export function toWritError(err: unknown): WritError {
  if (err instanceof WritError) return err;
  const e = (err ?? {}) as FastifyLikeError;
  if (e.validation !== undefined) return serverErrors.error('ERR_SERVER_BAD_REQUEST', describeValidation(e));
  switch (e.code) {
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return serverErrors.error('ERR_SERVER_UNSUPPORTED_MEDIA_TYPE', 'content type is not supported here; send `application/json`');
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return serverErrors.error('ERR_SERVER_BODY_TOO_LARGE', 'request body is larger than the limit');
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return serverErrors.error('ERR_SERVER_MALFORMED_JSON', 'body is empty but the content type says JSON');
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return serverErrors.error('ERR_SERVER_MALFORMED_JSON', 'body is not valid JSON');
    case 'FST_ERR_CTP_INVALID_TYPE':
      return serverErrors.error('ERR_SERVER_UNSUPPORTED_MEDIA_TYPE', 'content type header is malformed');
    case 'FST_ERR_BAD_URL':
      return serverErrors.error('ERR_SERVER_BAD_REQUEST', 'path is not a valid URL: a `%` escape is malformed');
    case 'FST_ERR_MAX_PARAM_LENGTH':
      return serverErrors.error('ERR_SERVER_URI_TOO_LONG', `a path segment is longer than ${MAX_PATH_PARAM_LENGTH} characters`);
    default:
      break;
  }
  if (err instanceof SyntaxError || (e.statusCode === 400 && /JSON/i.test(e.message ?? ''))) return serverErrors.error('ERR_SERVER_MALFORMED_JSON', 'body is not valid JSON');
  if (e.statusCode === 413) return serverErrors.error('ERR_SERVER_BODY_TOO_LARGE', 'request body is larger than the limit');
  if (e.statusCode === 415) return serverErrors.error('ERR_SERVER_UNSUPPORTED_MEDIA_TYPE', 'content type is not supported here; send `application/json`');
  if (e.statusCode === 408) return serverErrors.error('ERR_SERVER_TIMEOUT', 'request was not received in time');
  if (e.statusCode === 404) return serverErrors.error('ERR_SERVER_NOT_FOUND', 'no such route');
  if (e.statusCode !== undefined && e.statusCode >= 400 && e.statusCode < 500) return serverErrors.error('ERR_SERVER_BAD_REQUEST', 'request is malformed');
  return serverErrors.error('ERR_SERVER_INTERNAL', 'internal error', { cause: err });
}

/** The response body for an error: exposed message or a generic one. */
export function errorBody(e: WritError, correlationId: string): { code: string; message: string; correlationId: string; reasons?: readonly string[] } {
  const message = e.expose ? e.message : 'internal error; see the server log for this correlation id';
  return { code: e.code, message, correlationId, ...(e.reasons.length > 0 ? { reasons: e.reasons } : {}) };
}
