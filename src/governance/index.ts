/**
 * Governance (layer 3): who administers Writ, with which role — and later
 * inventory, ownership, reviews, JIT access and break-glass.
 */
export { governanceErrors } from './errors.ts';
export { AdminPrincipals } from './admin-principals.ts';
export type { AdminPrincipal, ChangeContext } from './admin-principals.ts';
export { ADMIN_ROLES, isAdminRole, roleAllows, rolePermissions } from './roles.ts';
export type { AdminRole, AdminPermission } from './roles.ts';
export type { AdminPrincipalRow, AdminPrincipalStore } from './ports.ts';
