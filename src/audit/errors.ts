import { defineErrorCatalog } from '../kernel/index.ts';

/** The audit context's error codes. */
export const auditErrors = defineErrorCatalog('AUDIT', {
  ERR_AUDIT_QUEUE_FULL: { status: 503, description: 'more audit events wait to be written than `audit.queueLimit` allows; the action was refused rather than left unaudited' },
  ERR_AUDIT_WRITER_CLOSED: { status: 503, description: 'the audit writer is shutting down and accepts no more events' },
  ERR_AUDIT_WRITE_FAILED: { status: 500, description: 'the store refused an audit batch; every event of the batch is reported as not written' },
  ERR_AUDIT_EVENT_INVALID: { status: 500, description: 'an event handed to the audit log has a malformed action, reason or correlation id (a programming error)' },
  ERR_AUDIT_QUERY_INVALID: { status: 400, description: 'an audit query has an out-of-range limit, cursor or filter' },
});
