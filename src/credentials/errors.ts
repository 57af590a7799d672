/**
 * Error codes of the credentials context: leases, tasks and dynamic secret
 * engines. Messages never carry a secret.
 */
import { defineErrorCatalog } from '../kernel/index.ts';

export const credentialErrors = defineErrorCatalog('CRED', {
  ERR_CRED_QUOTA_EXCEEDED: { status: 429, description: 'an identity or a task already holds as many live leases as the configured quota allows; revoke some or wait for them to expire' },
  ERR_CRED_LEASE_NOT_FOUND: { status: 404, description: 'no lease has this id' },
  ERR_CRED_LEASE_NOT_PENDING: { status: 409, description: 'a lease can be activated only while it is pending (it was revoked or expired first)' },
  ERR_CRED_LEASE_NOT_RENEWABLE: { status: 409, description: 'the lease is not active, has expired, or already reached its maximum lifetime' },
  ERR_CRED_TTL_INVALID: { status: 400, description: 'a requested lifetime is not a positive number of milliseconds or seconds within the configured maximum' },
  ERR_CRED_TASK_NOT_FOUND: { status: 404, description: 'no task has this id' },
  ERR_CRED_TASK_NOT_ACTIVE: { status: 409, description: 'the task is completed or past its deadline: nothing more may be bound to it' },
  ERR_CRED_TASK_INVALID: { status: 400, description: 'a task field is malformed: owner, deadline (in the future, within the maximum) or scopes' },
  ERR_CRED_ENGINE_NOT_FOUND: { status: 404, description: 'no secret engine with this name is configured' },
  ERR_CRED_ENGINE_CONFIG_INVALID: { status: 400, description: 'a secret engine definition is malformed; the message names the field' },
  ERR_CRED_ROLE_NOT_FOUND: { status: 404, description: 'the secret engine defines no role with this name' },
  ERR_CRED_ENGINE_FAILED: { status: 502, description: 'the database or cache behind a secret engine refused or failed an operation; the lease is revoked and the detail is in the server log' },
  ERR_CRED_ACCOUNT_NOT_FOUND: { status: 404, description: 'the account a legacy exception names does not exist in its engine' },
  ERR_CRED_ACCOUNT_NOT_ROTATABLE: { status: 409, description: 'writ does not rotate this account: a superuser, an account a secret engine creates, or the engine\'s own admin account' },
  ERR_CRED_EXCEPTION_INVALID: { status: 400, description: 'a legacy exception field is malformed: owner team and contact, justification, compensating controls, OWASP NHI risk ids, expiry or rotation; the message names the field' },
  ERR_CRED_EXCEPTION_NOT_FOUND: { status: 404, description: 'no legacy exception has this id' },
  ERR_CRED_EXCEPTION_CONFLICT: { status: 409, description: 'another legacy exception already has this name or covers this engine account' },
  ERR_CRED_EXCEPTION_NOT_ROTATABLE: { status: 409, description: 'the legacy exception names no PostgreSQL engine, so writ cannot rotate its secret' },
  ERR_CRED_EXCEPTION_NO_SECRET: { status: 404, description: 'writ has not rotated this exception\'s secret yet, so it holds none to show' },
  ERR_CRED_ROTATION_IN_PROGRESS: { status: 409, description: 'another rotation of this secret is under way (on this or another replica); retry when it finishes' },
  ERR_CRED_REVOKE_SELECTOR_INVALID: { status: 400, description: 'a bulk revocation names exactly one of task, subject or prefix, and a prefix is not empty' },
});

/** Every credentials error code. */
export type CredentialErrorCode = keyof typeof credentialErrors.specs;
