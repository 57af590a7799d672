/**
 * Join tokens: single-use, short-lived secrets an operator hands to a new
 * node. Only the SHA-256 of a token is stored; the token is shown once.
 *
 * Format: `wjt.<id>.<secret>` where `id` is 16 hex characters (public, named
 * in audit events and in the node selector `join_token:id:<id>`) and `secret`
 * is 32 random bytes in base64url.
 */
import { createHash, randomBytes } from 'node:crypto';
import { Secret } from '../../kernel/index.ts';
import type { Clock } from '../../kernel/index.ts';
import type { JoinTokenRecord } from '../ports.ts';
import { attestationErrors } from './errors.ts';

const TOKEN = /^wjt\.([0-9a-f]{16})\.([A-Za-z0-9_-]{43})$/;

/** Hex SHA-256 of a join token: what the store keeps and looks up. */
export function hashJoinToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

/**
 * Check a presented token's shape; the secret is never echoed.
 *
 * @example
 * parseJoinToken('wjt.0123456789abcdef.…'); // { id: '0123456789abcdef' }
 */
export function parseJoinToken(token: unknown): { id: string; hash: string } {
  const m = typeof token === 'string' ? TOKEN.exec(token) : null;
  const id = m?.[1];
  if (m === null || id === undefined || typeof token !== 'string') throw attestationErrors.error('ERR_ATTEST_JOIN_TOKEN_INVALID', 'join token is malformed');
  return { id, hash: hashJoinToken(token) };
}

/**
 * Make a new join token and the record to store for it.
 *
 * @example
 * const { token, record } = newJoinToken(clock, 600, 'admin-id', []);
 * await store.insertJoinToken(record);
 * print(token.reveal()); // once
 */
export function newJoinToken(clock: Clock, ttlSeconds: number, createdBy: string, selectors: readonly string[]): { token: Secret<string>; record: JoinTokenRecord } {
  if (!(Number.isSafeInteger(ttlSeconds) && ttlSeconds > 0)) throw new TypeError('ttlSeconds must be a positive integer');
  const id = randomBytes(8).toString('hex');
  const token = `wjt.${id}.${randomBytes(32).toString('base64url')}`;
  const now = clock.nowMs();
  const record: JoinTokenRecord = {
    id,
    tokenHash: hashJoinToken(token),
    createdAt: new Date(now).toISOString(),
    expiresAt: new Date(now + ttlSeconds * 1000).toISOString(),
    createdBy,
    selectors: [...selectors],
    usedAt: null,
    nodeId: null,
  };
  return { token: new Secret(token), record };
}
