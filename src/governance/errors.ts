import { defineErrorCatalog } from '../kernel/index.ts';

/** The governance context's error codes. */
export const governanceErrors = defineErrorCatalog('GOV', {
  ERR_GOV_UNAUTHENTICATED: { status: 401, description: 'an admin call carried no credential, or one that is malformed, unknown or revoked' },
  ERR_GOV_FORBIDDEN: { status: 403, description: 'the admin principal\'s role does not allow this call' },
  ERR_GOV_PRINCIPAL_NOT_FOUND: { status: 404, description: 'no admin principal has the given id' },
  ERR_GOV_PRINCIPAL_EXISTS: { status: 409, description: 'an admin principal with that name already exists' },
  ERR_GOV_LAST_ADMIN: { status: 409, description: 'the change would leave no active principal with the admin role' },
  ERR_GOV_PRINCIPAL_NAME_INVALID: { status: 400, description: 'an admin principal name is not 1-63 characters of a-z, 0-9, dot, dash and underscore' },
  ERR_GOV_ROLE_INVALID: { status: 400, description: 'the role is not one of admin, operator, approver, auditor' },
});
