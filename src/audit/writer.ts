/**
 * The single audit writer of a process, with group commit: events queue, and
 * a batch is sealed and written in one durable transaction as soon as
 * `flushEvents` wait or `flushDelayMs` after the first one arrived. While a
 * batch is being written, new events gather into the next, so under load the
 * batches grow (up to `maxBatchEvents`) and the commit cost is shared. Right
 * after a write, the next batch is written at the next turn of the event loop
 * (at once only when a full batch waits), so the callers just served, who
 * append again at once, share that commit with the events already waiting.
 * A store that commits off the event loop (`appendInOrder`, SQLite's worker)
 * instead gets the next batch as soon as the previous one committed: there
 * the commit does not block this thread, so the callers just served sign
 * their next requests while it runs; and a full batch that gathers while one
 * commits there is posted at once behind it (up to OFF_THREAD_LANES wait; that thread commits the ones that queued together), so the two
 * threads overlap instead of taking turns. A lone caller's batches (smaller than
 * OFF_THREAD_MIN_BATCH, after a small one) are still committed on this thread.
 * `append` resolves only after the event's transaction committed.
 */
import type { AuditEventInput, AuditRecord, AuditSink, Clock } from '../kernel/index.ts';
import { toEventBody, prepareEvent, seal } from './chain.ts';
import type { PendingEvent } from './chain.ts';
import type { AuditStore } from './ports.ts';
import { auditErrors } from './errors.ts';

/**
 * Smallest batch handed to a store's off-thread path (`appendInOrder`) when
 * the batch before was small too. Such a batch is committed on this thread: a
 * lone caller gains nothing from the round trip to another thread (nor should
 * it start one). Right after a large batch, small ones still go off the
 * thread: under load they come between large ones, and committing them here
 * would stall the callers the off-thread path keeps running.
 */
export const OFF_THREAD_MIN_BATCH = 16;

/**
 * Most extra batches posted to a store's off-thread path while one is being
 * written: enough to keep that thread busy (it commits the ones that queued
 * together), few enough that a failing store fails a bounded number of
 * callers at once.
 */
export const OFF_THREAD_LANES = 8;

/** Group-commit settings (see the `audit.*` options of the config schema). */
export interface AuditWriterOptions {
  readonly flushEvents: number;
  readonly flushDelayMs: number;
  readonly maxBatchEvents: number;
  readonly queueLimit: number;
}

/** Counters for `/metrics`. */
export interface AuditWriterStats {
  appended: number;
  failed: number;
  batches: number;
  queued: number;
  lastBatchSize: number;
}

interface Waiting {
  readonly pending: PendingEvent;
  readonly resolve: (r: AuditRecord) => void;
  readonly reject: (e: unknown) => void;
}

/**
 * @example
 * const writer = new AuditWriter(store, systemClock, { flushEvents: 100, flushDelayMs: 2, maxBatchEvents: 2000, queueLimit: 200000 });
 * await writer.append({ action: 'admin.principal.created', actor, outcome: 'success', correlationId });
 * await writer.close();
 */
export class AuditWriter implements AuditSink {
  readonly #store: AuditStore;
  readonly #clock: Clock;
  readonly #opts: AuditWriterOptions;
  #queue: Waiting[] = [];
  #timer: NodeJS.Timeout | undefined;
  #immediate: NodeJS.Immediate | undefined;
  /** True from the end of a write until the event loop turns: the writer is under load. */
  #justWrote = false;
  #running: Promise<void> | undefined;
  /** Extra off-thread batches posted while `#running` writes (pipelining; see `#schedule`). */
  readonly #lanes = new Set<Promise<void>>();
  #closed = false;
  readonly stats: AuditWriterStats = { appended: 0, failed: 0, batches: 0, queued: 0, lastBatchSize: 0 };

  constructor(store: AuditStore, clock: Clock, opts: AuditWriterOptions) {
    if (opts.flushEvents < 1 || opts.maxBatchEvents < 1 || opts.queueLimit < 1 || opts.flushDelayMs < 0) throw new TypeError('audit writer options out of range');
    this.#store = store;
    this.#clock = clock;
    this.#opts = { ...opts };
  }

  append(event: AuditEventInput): Promise<AuditRecord> {
    if (this.#closed) return Promise.reject(auditErrors.error('ERR_AUDIT_WRITER_CLOSED', 'audit writer is closed'));
    if (this.#queue.length >= this.#opts.queueLimit) {
      return Promise.reject(auditErrors.error('ERR_AUDIT_QUEUE_FULL', `audit queue holds ${this.#queue.length} events, the limit`));
    }
    let pending: PendingEvent;
    try {
      pending = prepareEvent(toEventBody(event, this.#clock.now().toISOString()));
    } catch (e) {
      return Promise.reject(e);
    }
    return new Promise<AuditRecord>((resolve, reject) => {
      this.#queue.push({ pending, resolve, reject });
      this.stats.queued = this.#queue.length;
      this.#schedule();
    });
  }

  /** Resolves when everything appended so far is durable. */
  async flush(): Promise<void> {
    for (;;) {
      this.#clearTimer();
      if (this.#immediate !== undefined) {
        clearImmediate(this.#immediate);
        this.#immediate = undefined;
      }
      this.#kick();
      if (this.#running === undefined && this.#lanes.size === 0) return; // nothing queued, nothing being written
      await Promise.all([this.#running, ...this.#lanes]);
    }
  }

  /** Stop accepting events and write what is queued. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.flush();
  }

  #schedule(): void {
    if (this.#running !== undefined) {
      // Off-thread commits run in posting order on the store's thread, each sealed on the head the
      // one before left: while a batch commits there, a full batch gathered meanwhile is posted at
      // once instead of waiting for that commit, so this thread keeps serving callers while the
      // other commits; the store's thread takes the batches that queued up during a commit into
      // its next one (group commit there too). At most OFF_THREAD_LANES such extra batches are in
      // flight; the running loop picks up the rest.
      if (this.#store.appendInOrder !== undefined && this.#lanes.size < OFF_THREAD_LANES && this.#queue.length >= this.#opts.flushEvents) {
        const batch = this.#queue.splice(0, this.#opts.maxBatchEvents);
        this.stats.queued = this.#queue.length;
        const lane: Promise<void> = this.#write(batch, true).finally(() => {
          this.#lanes.delete(lane);
        });
        this.#lanes.add(lane);
      }
      return; // the running loop picks the rest of the queue up
    }
    // Off-thread commits: under load, hand the next batch over at once (see the module doc).
    const offThread = this.#store.appendInOrder !== undefined;
    if (this.#queue.length >= this.#opts.maxBatchEvents || (offThread && this.#justWrote) || (!this.#justWrote && (this.#queue.length >= this.#opts.flushEvents || this.#opts.flushDelayMs === 0))) {
      this.#clearTimer();
      this.#kick();
    } else if (this.#justWrote) {
      // Under load (a write just ended), waiting `flushDelayMs` only idles the writer while every
      // caller waits for it: write at the next turn of the event loop instead, after the I/O that is
      // ready then, so the batch still takes everything that arrived in the meantime. Even when
      // `flushEvents` already wait: the callers of the batch just written are about to append their
      // next events (their continuations run before that turn), and one commit then carries both
      // groups instead of two commits each carrying half.
      this.#immediate ??= setImmediate(() => {
        this.#immediate = undefined;
        this.#clearTimer();
        this.#kick();
      });
    } else if (this.#timer === undefined) {
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        this.#kick();
      }, this.#opts.flushDelayMs);
    }
  }

  #clearTimer(): void {
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
  }

  #kick(): void {
    if (this.#running !== undefined || this.#queue.length === 0) return;
    this.#running = this.#loop().finally(() => {
      this.#running = undefined;
      this.#justWrote = true;
      setImmediate(() => {
        this.#justWrote = false;
      });
      // Events that arrived during the last write and did not fill a batch.
      if (this.#queue.length > 0) this.#schedule();
    });
  }

  async #loop(): Promise<void> {
    // Group commit: one batch takes all that waited. After it, the loop goes on at once only while a
    // full batch waits (with an off-thread store: while anything waits); otherwise `#schedule` writes
    // the rest at the next turn of the event loop.
    do {
      const batch = this.#queue.splice(0, this.#opts.maxBatchEvents);
      this.stats.queued = this.#queue.length;
      // A pipelined batch is in flight on the store's thread: this one follows it there, in order.
      const offThread = this.#store.appendInOrder !== undefined && (this.#lanes.size > 0 || batch.length >= OFF_THREAD_MIN_BATCH || this.stats.lastBatchSize >= OFF_THREAD_MIN_BATCH);
      await this.#write(batch, offThread);
    } while (this.#queue.length >= (this.#store.appendInOrder !== undefined ? 1 : this.#opts.maxBatchEvents));
  }

  /** Seal and commit one batch (here, or on the store's own thread), then answer its callers. */
  async #write(batch: readonly Waiting[], offThread: boolean): Promise<void> {
    {
      const pending = batch.map((w) => w.pending);
      try {
        const rows = offThread && this.#store.appendInOrder !== undefined
          ? await this.#store.appendInOrder(pending)
          : await this.#store.appendSealed((head) => seal(head, pending));
        this.stats.batches += 1;
        this.stats.lastBatchSize = rows.length;
        this.stats.appended += rows.length;
        for (let i = 0; i < batch.length; i++) {
          const row = rows[i];
          const w = batch[i];
          if (w === undefined) continue;
          if (row === undefined) w.reject(auditErrors.error('ERR_AUDIT_WRITE_FAILED', 'audit store returned fewer rows than it was given'));
          // The body is already in hand: no need to parse the stored JSON back.
          else w.resolve({ ...w.pending.body, seq: row.seq, prevHash: row.prevHash, hash: row.hash });
        }
      } catch (cause) {
        this.stats.failed += batch.length;
        const err = auditErrors.error('ERR_AUDIT_WRITE_FAILED', 'audit batch could not be written', { cause });
        for (const w of batch) w.reject(err);
      }
    }
  }
}
