import { defineErrorCatalog } from '../kernel/index.ts';

/**
 * The policy context's error codes.
 *
 * @example
 * throw policyErrors.error('ERR_POLICY_SET_INVALID', 'policy set in `./policies` has 2 errors');
 */
export const policyErrors = defineErrorCatalog('POLICY', {
  ERR_POLICY_SET_INVALID: { status: 400, description: 'a policy set (policies, schema or entities file) failed to parse or to validate against the schema; the message lists the problems as `file:line:column`' },
  ERR_POLICY_SCHEMA_INVALID: { status: 400, description: 'the Cedar schema of a policy set does not parse' },
  ERR_POLICY_FOLDER_UNREADABLE: { status: 400, description: 'the policy folder or one of its files cannot be read' },
  ERR_POLICY_AUTHZEN_INVALID: { status: 400, description: 'an AuthZEN request misses a required member or has a member of the wrong type (AuthZEN 1.0 §6)' },
  ERR_POLICY_NO_FOLDER: { status: 409, description: 'the server has no policy folder configured (`policy.dir`), so there is nothing to reload' },
  ERR_POLICY_METADATA_UNAVAILABLE: { status: 404, description: 'AuthZEN metadata is not served because the server\'s `publicUrl` is not an https URL (AuthZEN 1.0 §9)' },
  ERR_POLICY_ANALYSIS_INVALID: { status: 400, description: 'an analysis request names neither or both of `principal` and `resource`, or a type the schema does not declare' },
  ERR_POLICY_CASE_INVALID: { status: 400, description: 'a policy test case file is not of the shape `{entities, request, want: {decision, reasons}}`' },
});

/** A policy error code. */
export type PolicyErrorCode = keyof typeof policyErrors.specs;
