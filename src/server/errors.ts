import { defineErrorCatalog } from '../kernel/index.ts';

/** The server's own error codes (HTTP edge, lifecycle). */
export const serverErrors = defineErrorCatalog('SERVER', {
  ERR_SERVER_BAD_REQUEST: { status: 400, description: 'the request does not match the route\'s schema: a missing or unknown field, a wrong type or an out-of-range value; the message names the field' },
  ERR_SERVER_MALFORMED_JSON: { status: 400, description: 'the body is not valid JSON, or is empty where JSON is required' },
  ERR_SERVER_UNSUPPORTED_MEDIA_TYPE: { status: 415, description: 'the body\'s Content-Type is not one the route accepts (JSON routes take `application/json`)' },
  ERR_SERVER_BODY_TOO_LARGE: { status: 413, description: 'the body is larger than `http.bodyLimitBytes`' },
  ERR_SERVER_URI_TOO_LONG: { status: 414, description: 'a path segment (an id or a name in the URL) is longer than the 256 characters the router accepts' },
  ERR_SERVER_NOT_FOUND: { status: 404, description: 'no route has this method and path' },
  ERR_SERVER_TIMEOUT: { status: 408, description: 'the client did not send the whole request within `http.requestTimeoutMs`' },
  ERR_SERVER_INTERNAL: { status: 500, description: 'an unexpected error; the detail is in the server log under the correlation id, never in the response' },
  ERR_SERVER_UNAVAILABLE: { status: 503, description: 'the server is shutting down or a dependency it needs for this call (store, audit log) is not available' },
  ERR_SERVER_CLIENT_CERT_INVALID: { status: 401, description: 'on the TLS listener, the client presented a certificate that is not a valid X.509-SVID of a trust domain this server trusts (expired, foreign, malformed, or not chaining to the bundle); the connection gets nothing (fail closed). Omit the certificate to call public routes' },
  ERR_SERVER_DATA_DIR_UNSAFE: { status: 500, description: 'the data folder or the admin token file is readable by other users' },
});
