/**
 * Admin roles and what each may do. One table, read top to bottom; a
 * permission not listed for a role is refused.
 */

/** The admin roles. */
export const ADMIN_ROLES = ['admin', 'operator', 'approver', 'auditor', 'pep'] as const;
export type AdminRole = (typeof ADMIN_ROLES)[number];

/** Permissions admin routes ask for. */
export type AdminPermission =
  | 'status.read'
  | 'principals.read'
  | 'principals.manage'
  | 'policy.read'
  | 'policy.manage'
  | 'decisions.evaluate'
  | 'audit.read'
  | 'audit.verify'
  | 'entries.read'
  | 'entries.manage'
  | 'nodes.read'
  | 'nodes.manage'
  | 'ca.read'
  | 'ca.manage'
  | 'signals.submit'
  | 'signals.read'
  | 'revocations.publish'
  | 'revocations.subscribe'
  | 'creds.issue'
  | 'leases.read'
  | 'leases.manage'
  | 'tasks.read'
  | 'tasks.manage'
  | 'exceptions.read'
  | 'exceptions.manage'
  | 'exceptions.reveal'
  | 'engines.read'
  | 'engines.manage';

const GRANTS: Readonly<Record<AdminRole, readonly AdminPermission[]>> = {
  admin: ['policy.read', 'policy.manage', 'decisions.evaluate', 'status.read', 'principals.read', 'principals.manage', 'audit.read', 'audit.verify', 'entries.read', 'entries.manage', 'nodes.read', 'nodes.manage', 'ca.read', 'ca.manage', 'signals.submit', 'signals.read', 'revocations.publish', 'revocations.subscribe', 'creds.issue', 'leases.read', 'leases.manage', 'tasks.read', 'tasks.manage', 'exceptions.read', 'exceptions.manage', 'exceptions.reveal', 'engines.read', 'engines.manage'],
  operator: ['policy.read', 'policy.manage', 'status.read', 'principals.read', 'entries.read', 'entries.manage', 'nodes.read', 'nodes.manage', 'ca.read', 'ca.manage', 'signals.submit', 'signals.read', 'revocations.publish', 'creds.issue', 'leases.read', 'leases.manage', 'tasks.read', 'tasks.manage', 'exceptions.read', 'exceptions.manage', 'engines.read', 'engines.manage'],
  approver: ['status.read'],
  // An enforcement point: asks the PDP for decisions (AuthZEN) and follows the revocation stream.
  pep: ['decisions.evaluate', 'revocations.subscribe'],
  auditor: ['policy.read', 'status.read', 'principals.read', 'audit.read', 'audit.verify', 'entries.read', 'nodes.read', 'ca.read', 'signals.read', 'leases.read', 'tasks.read', 'exceptions.read', 'engines.read'],
};

/** True when `role` is one of {@link ADMIN_ROLES}. */
export function isAdminRole(role: string): role is AdminRole {
  return (ADMIN_ROLES as readonly string[]).includes(role);
}

/**
 * Allow is the only explicit branch: unknown roles and unlisted permissions deny.
 *
 * @example
 * roleAllows('auditor', 'audit.read'); // true
 * roleAllows('operator', 'principals.manage'); // false
 */
export function roleAllows(role: string, permission: AdminPermission): boolean {
  if (!isAdminRole(role)) return false;
  if (GRANTS[role].includes(permission)) return true;
  return false;
}

/** The permission table, for docs and `writ admin roles`. */
export function rolePermissions(): Readonly<Record<AdminRole, readonly AdminPermission[]>> {
  return GRANTS;
}
