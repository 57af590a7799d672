/**
 * Ports the audit context needs from a store.
 */
import type { AuditRecord } from '../kernel/index.ts';

/** What sealing reads of a prepared event: its canonical form (hashed) and the body's query columns. */
export interface SealInput {
  readonly canonical: string;
  readonly body: Pick<AuditRecord, 'time' | 'action' | 'outcome' | 'correlationId'> & { readonly actor: { readonly id: string } };
}

/** One stored row of the chain. `event` is the canonical JSON of the event body. */
export interface StoredAuditRow {
  readonly seq: number;
  readonly time: string;
  readonly action: string;
  readonly outcome: string;
  readonly actorId: string;
  readonly correlationId: string;
  readonly event: string;
  readonly prevHash: string;
  readonly hash: string;
}

/** The last sealed row: where the next one chains from. */
export interface ChainHead {
  readonly seq: number;
  readonly hash: string;
}

/** Filter for {@link AuditStore.query}; rows come in ascending `seq`. */
export interface AuditQuery {
  readonly afterSeq?: number;
  readonly limit: number;
  readonly action?: string;
  readonly correlationId?: string;
  /** ISO-8601 lower bound on `time`, inclusive. */
  readonly since?: string;
}

/**
 * Append-only storage of the hash chain.
 *
 * @example
 * const rows = await store.appendSealed((head) => seal(head, batch));
 */
export interface AuditStore {
  /**
   * In one transaction: lock the chain head, call `seal` with it, insert the
   * rows it returns (their seqs follow the head without gaps) and move the head
   * to the last one. Resolves only once the transaction is durable.
   * INVARIANT: two appenders, in one process or many, never seal from the same head.
   */
  appendSealed(seal: (head: ChainHead) => readonly StoredAuditRow[]): Promise<readonly StoredAuditRow[]>;
  /**
   * Present when the store commits off the caller's thread: what
   * `appendSealed((head) => seal(head, events))` does, sealed by the store.
   * Resolves only once the transaction is durable. Batches are committed in
   * the order they were given, each chained after the one before.
   */
  readonly appendInOrder?: (events: readonly SealInput[]) => Promise<readonly StoredAuditRow[]>;
  /** The current head (seq 0 and the genesis hash when the log is empty). */
  head(): Promise<ChainHead>;
  /** Up to `limit` rows with seq > afterSeq, ascending by seq, as they are stored. */
  readRange(afterSeq: number, limit: number): Promise<readonly StoredAuditRow[]>;
  /** Rows matching a filter, ascending by seq. */
  query(q: AuditQuery): Promise<readonly StoredAuditRow[]>;
}
