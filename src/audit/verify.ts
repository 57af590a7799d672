/**
 * Verification of the whole chain. Walks the rows in seq order and names the
 * first sequence number where the log stops being what was written: a changed
 * row (hash mismatch), a deleted one (a gap), an inserted or reordered one (a
 * seq out of place or a prev_hash that does not link), a row whose query
 * columns disagree with its hashed event, or a missing tail (the head says more
 * rows exist than are stored).
 */
import type { AuditStore, StoredAuditRow } from './ports.ts';
import { chainHash, GENESIS_HASH } from './chain.ts';

/** Verification outcome. `firstBadSeq` names where the chain first breaks. */
export type VerifyResult =
  | { readonly ok: true; readonly checked: number; readonly headSeq: number; readonly headHash: string }
  | { readonly ok: false; readonly checked: number; readonly firstBadSeq: number; readonly reason: VerifyFailure; readonly message: string };

/** Kebab-case reasons a chain fails. */
export type VerifyFailure = 'hash-mismatch' | 'prev-hash-mismatch' | 'seq-gap' | 'seq-out-of-order' | 'column-mismatch' | 'event-unreadable' | 'head-mismatch' | 'tail-missing';

/** Progress callback: rows checked so far. */
export type VerifyProgress = (checked: number) => void;

function fail(checked: number, firstBadSeq: number, reason: VerifyFailure, message: string): VerifyResult {
  return { ok: false, checked, firstBadSeq, reason, message };
}

function columnsMatch(row: StoredAuditRow): boolean {
  let body: { time?: unknown; action?: unknown; outcome?: unknown; correlationId?: unknown; actor?: { id?: unknown } };
  try {
    body = JSON.parse(row.event) as typeof body;
  } catch {
    return false;
  }
  return body.time === row.time && body.action === row.action && body.outcome === row.outcome && body.correlationId === row.correlationId && body.actor?.id === row.actorId;
}

/**
 * @example
 * const result = await verifyChain(store);
 * if (!result.ok) console.error(`first bad seq ${result.firstBadSeq}: ${result.message}`);
 */
export async function verifyChain(store: AuditStore, opts: { pageSize?: number; onProgress?: VerifyProgress } = {}): Promise<VerifyResult> {
  const pageSize = opts.pageSize ?? 5000;
  const head = await store.head();
  let expectedSeq = 1;
  let prevHash = GENESIS_HASH;
  let checked = 0;
  let after = 0;
  for (;;) {
    const rows = await store.readRange(after, pageSize);
    if (rows.length === 0) break;
    for (const row of rows) {
      if (row.seq !== expectedSeq) {
        return row.seq > expectedSeq
          ? fail(checked, expectedSeq, 'seq-gap', `row ${expectedSeq} is missing (next stored row is ${row.seq})`)
          : fail(checked, row.seq, 'seq-out-of-order', `row ${row.seq} appears after row ${expectedSeq - 1}`);
      }
      if (row.prevHash !== prevHash) return fail(checked, row.seq, 'prev-hash-mismatch', `row ${row.seq} does not link to row ${row.seq - 1}`);
      if (chainHash(prevHash, row.seq, row.event) !== row.hash) return fail(checked, row.seq, 'hash-mismatch', `row ${row.seq} was changed after it was written`);
      if (!columnsMatch(row)) return fail(checked, row.seq, 'column-mismatch', `row ${row.seq} has query columns that differ from its hashed event`);
      prevHash = row.hash;
      expectedSeq += 1;
      checked += 1;
    }
    after = rows[rows.length - 1]?.seq ?? after;
    opts.onProgress?.(checked);
  }
  const lastSeq = expectedSeq - 1;
  if (head.seq > lastSeq) return fail(checked, lastSeq + 1, 'tail-missing', `the chain head is at row ${head.seq} but the log ends at row ${lastSeq}`);
  if (head.seq < lastSeq) return fail(checked, head.seq + 1, 'head-mismatch', `row ${head.seq + 1} is stored beyond the chain head ${head.seq}`);
  if (head.hash !== prevHash) return fail(checked, head.seq, 'head-mismatch', `the chain head hash differs from row ${head.seq}`);
  return { ok: true, checked, headSeq: head.seq, headHash: head.hash };
}
