import { randomBytes } from 'node:crypto';

/** W3C Trace Context `traceparent` (version 00): version-traceid-parentid-flags. */
const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$/;

/**
 * The correlation id of one unit of work: the W3C trace id when the caller sent
 * a valid `traceparent` (W3C Trace Context §3.2), else 32 random hex digits in
 * the same shape so ids from both sources sort and join alike.
 *
 * @example
 * correlationIdFrom('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01');
 * // '4bf92f3577b34da6a3ce929d0e0e4736'
 */
export function correlationIdFrom(traceparent: string | undefined): string {
  if (traceparent !== undefined) {
    const m = TRACEPARENT.exec(traceparent.trim());
    const traceId = m?.[1];
    const parentId = m?.[2];
    // All-zero trace id (§3.2.2.3) or parent id (§3.2.2.4) is invalid.
    if (traceId !== undefined && parentId !== undefined && !/^0+$/.test(traceId) && !/^0+$/.test(parentId)) return traceId;
  }
  return newCorrelationId();
}

/** CSPRNG bytes drawn 4 KiB at a time: one `randomBytes` call serves 256 ids (it cost ~5% of an SVID issuance). */
const POOL_BYTES = 4096;
let pool: Buffer = Buffer.alloc(0);
let offset = 0;

/** A fresh correlation id (128 random bits, hex); every id takes its own 16 bytes of the pool, never reused. */
export function newCorrelationId(): string {
  if (offset + 16 > pool.length) {
    pool = randomBytes(POOL_BYTES);
    offset = 0;
  }
  const id = pool.toString('hex', offset, offset + 16);
  offset += 16;
  return id;
}
