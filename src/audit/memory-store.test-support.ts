/**
 * An in-memory AuditStore for the audit context's own unit tests (a fake, not
 * a mock: it keeps the port's contract). Real adapters live in storage/.
 */
import type { AuditQuery, AuditStore, ChainHead, SealInput, StoredAuditRow } from './ports.ts';
import { GENESIS_HASH, seal } from './chain.ts';

export class MemoryAuditStore implements AuditStore {
  rows: StoredAuditRow[] = [];
  headRow: ChainHead = { seq: 0, hash: GENESIS_HASH };
  commits = 0;
  /** When set, the next appendSealed fails with this error. */
  failNext: Error | undefined;
  /** Delay each commit by this many ms (simulates fsync). */
  commitDelayMs = 0;

  async appendSealed(sealFn: (head: ChainHead) => readonly StoredAuditRow[]): Promise<readonly StoredAuditRow[]> {
    if (this.failNext !== undefined) {
      const e = this.failNext;
      this.failNext = undefined;
      throw e;
    }
    const rows = sealFn(this.headRow);
    if (this.commitDelayMs > 0) await new Promise((r) => setTimeout(r, this.commitDelayMs));
    this.rows.push(...rows);
    const last = rows[rows.length - 1];
    if (last !== undefined) this.headRow = { seq: last.seq, hash: last.hash };
    this.commits += 1;
    return rows;
  }
  async head(): Promise<ChainHead> {
    return this.headRow;
  }
  async readRange(afterSeq: number, limit: number): Promise<readonly StoredAuditRow[]> {
    return this.rows.filter((r) => r.seq > afterSeq).sort((a, b) => a.seq - b.seq).slice(0, limit);
  }
  async query(q: AuditQuery): Promise<readonly StoredAuditRow[]> {
    return this.rows
      .filter((r) => r.seq > (q.afterSeq ?? 0) && (q.action === undefined || r.action === q.action) && (q.correlationId === undefined || r.correlationId === q.correlationId) && (q.since === undefined || r.time >= q.since))
      .slice(0, q.limit);
  }
}

/**
 * A MemoryAuditStore that also takes batches through `appendInOrder`, as a
 * store committing off the event loop does; counts which way batches came.
 */
export class InOrderMemoryAuditStore extends MemoryAuditStore {
  sealedCalls = 0;
  inOrderCalls = 0;
  #chain: Promise<unknown> = Promise.resolve();

  override appendSealed(sealFn: (head: ChainHead) => readonly StoredAuditRow[]): Promise<readonly StoredAuditRow[]> {
    this.sealedCalls += 1;
    return super.appendSealed(sealFn);
  }

  readonly appendInOrder = (events: readonly SealInput[]): Promise<readonly StoredAuditRow[]> => {
    this.inOrderCalls += 1;
    // In the order given, each after the one before, as the SQLite worker does.
    const done = this.#chain.then(() => super.appendSealed((head) => seal(head, events)));
    this.#chain = done.catch(() => undefined);
    return done;
  };
}
