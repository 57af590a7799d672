/**
 * Ports the governance context needs from a store.
 */

/** An admin principal as stored. Only the SHA-256 of its secret is kept. */
export interface AdminPrincipalRow {
  readonly id: string;
  readonly name: string;
  readonly role: string;
  /** Hex SHA-256 of the credential's secret part. */
  readonly tokenHash: string;
  readonly createdAt: string;
  readonly createdBy: string;
  readonly revokedAt: string | null;
}

/**
 * @example
 * await store.insertPrincipal(row); // false when the name is taken
 */
export interface AdminPrincipalStore {
  /** Insert; resolves false when an active principal already has the name. */
  insertPrincipal(row: AdminPrincipalRow): Promise<boolean>;
  getPrincipal(id: string): Promise<AdminPrincipalRow | undefined>;
  listPrincipals(): Promise<readonly AdminPrincipalRow[]>;
  /** Replace the token hash of an active principal; false when none. */
  setPrincipalTokenHash(id: string, tokenHash: string): Promise<boolean>;
  /**
   * Revoke an active principal unless it is the last active one with role
   * `protectRole`. Atomic, so two concurrent revocations cannot remove both
   * of the last two admins.
   */
  revokePrincipal(id: string, at: string, protectRole: string): Promise<'revoked' | 'not-found' | 'last-of-role'>;
  countActivePrincipals(): Promise<number>;
}
