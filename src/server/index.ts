/**
 * Server (layer 4): the composition root and the HTTP API.
 */
export { startServer, writVersion } from './start.ts';
export type { RunningServer } from './start.ts';
export { buildApp, requireAdminPermission } from './app.ts';
export { serverErrors } from './errors.ts';
export { allErrorCodes, renderErrorsDoc, ERROR_CATALOGS } from './error-catalog.ts';
export { tokenFilePath } from './bootstrap.ts';
export { kekSealer } from './signals-routes.ts';
