import { defineErrorCatalog } from '../kernel/index.ts';

/** The storage context's error codes. */
export const storageErrors = defineErrorCatalog('STORE', {
  ERR_STORE_URL_INVALID: { status: 400, description: 'the store URL is not empty, `sqlite:<path>`, `sqlite::memory:` or `postgres://…`' },
  ERR_STORE_UNAVAILABLE: { status: 503, description: 'the store did not answer (connection refused, timed out or closed)' },
  ERR_STORE_MIGRATION_FAILED: { status: 500, description: 'a schema migration failed on start; the server does not start on a half-migrated store' },
  ERR_STORE_NEWER_SCHEMA: { status: 500, description: 'the store was migrated by a newer Writ than this one; refusing to run against a schema it does not know' },
});
