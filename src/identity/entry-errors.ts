/**
 * Error codes of registration entries: what an admin gets back when an entry
 * cannot be registered, changed or found.
 */
import { defineErrorCatalog } from '../kernel/index.ts';

export const entryErrors = defineErrorCatalog('ENTRY', {
  ERR_ENTRY_OWNER_REQUIRED: { status: 400, description: 'a registration entry names no owner (a team and a human contact): an identity without an owner cannot be registered' },
  ERR_ENTRY_SPIFFE_ID_INVALID: { status: 400, description: 'the SPIFFE ID of an entry breaks a SPIFFE ID rule, is in another trust domain, has no path, or uses the reserved `/writ/` path' },
  ERR_ENTRY_PARENT_INVALID: { status: 400, description: 'an entry must name exactly one parent: a node SPIFFE ID (`spiffe://<td>/writ/node/<id>`) or a set of node selectors' },
  ERR_ENTRY_SELECTOR_INVALID: { status: 400, description: 'a selector is not `<type>:<key>:<value>`, a workload entry has none, or a unix or k8s selector is malformed' },
  ERR_ENTRY_TTL_INVALID: { status: 400, description: 'an entry asks for an SVID lifetime that is not a positive number of seconds within the server maximum' },
  ERR_ENTRY_FIELD_INVALID: { status: 400, description: 'a DNS name, environment label or owner field of an entry is malformed; the message names the field' },
  ERR_ENTRY_NOT_FOUND: { status: 404, description: 'no registration entry has this id' },
  ERR_ENTRY_CONFLICT: { status: 409, description: 'the entry changed since it was read (revision mismatch), or an entry with the same SPIFFE ID, parent and selectors exists' },
});

/** Every entry error code. */
export type EntryErrorCode = keyof typeof entryErrors.specs;
