/**
 * The main-thread side of the SQLite audit worker (`audit-worker.ts`): posts
 * batches of prepared events and resolves each with its sealed rows once the
 * worker's transaction has committed. Batches are committed in the order they
 * were posted, each sealed after the head left by the one before.
 */
import { Worker } from 'node:worker_threads';
import type { SealInput, StoredAuditRow } from '../../audit/index.ts';

/**
 * A batch as posted to the worker: the canonical events joined by `\n` (canonical JSON has no raw
 * line break), one string, the cheapest thing to copy between threads; and their query columns
 * (time, action, outcome, actor id, correlation id — five per event, in order) as one JSON array,
 * taken from the same bodies the canonical events were serialized from, so the worker does not
 * parse each event back to find them.
 */
export interface AuditBatchRequest {
  readonly id: number;
  readonly events: string;
  readonly columns: string;
}

/** The query columns of a batch, five per event, as {@link AuditBatchRequest.columns}. */
export function batchColumns(events: readonly SealInput[]): string {
  const cols: string[] = [];
  for (const e of events) cols.push(e.body.time, e.body.action, e.body.outcome, e.body.actor.id, e.body.correlationId);
  return JSON.stringify(cols);
}

/**
 * The worker's answer: where the batch went in the chain (the first seq and the hash it chained
 * from) and the rows' hashes concatenated (64 hex digits each); or why the batch was rolled back.
 */
export type AuditBatchReply =
  | { readonly id: number; readonly firstSeq: number; readonly prevHash: string; readonly hashes: string }
  | { readonly id: number; readonly error: { readonly message: string; readonly code: string | undefined; readonly errcode: number | undefined } };

interface Waiting {
  readonly worker: Worker;
  readonly events: readonly SealInput[];
  readonly resolve: (rows: readonly StoredAuditRow[]) => void;
  readonly reject: (e: unknown) => void;
}

/** Error of a batch the worker rolled back (or could not run), with the SQLite codes when there are. */
export class AuditWorkerError extends Error {
  readonly code: string | undefined;
  readonly errcode: number | undefined;
  constructor(message: string, code?: string, errcode?: number) {
    super(message);
    this.name = 'AuditWorkerError';
    this.code = code;
    this.errcode = errcode;
  }
}

/**
 * @example
 * const appender = new SqliteAuditAppender('/var/lib/writ/writ.db');
 * const rows = await appender.append([prepareEvent(body)]);
 * await appender.close();
 */
export class SqliteAuditAppender {
  readonly #path: string;
  #worker: Worker | undefined;
  readonly #waiting = new Map<number, Waiting>();
  readonly #inFlight = new Set<Promise<unknown>>();
  #nextId = 1;
  #closed = false;

  constructor(path: string) {
    this.#path = path;
  }

  append(events: readonly SealInput[]): Promise<readonly StoredAuditRow[]> {
    if (this.#closed) return Promise.reject(new AuditWorkerError('the audit worker is closed'));
    if (events.length === 0) return Promise.resolve([]);
    const worker = this.#ensureWorker();
    const id = this.#nextId++;
    const request: AuditBatchRequest = { id, events: events.map((e) => e.canonical).join('\n'), columns: batchColumns(events) };
    const done = new Promise<readonly StoredAuditRow[]>((resolve, reject) => {
      this.#waiting.set(id, { worker, events, resolve, reject });
      if (this.#waiting.size === 1) worker.ref();
      worker.postMessage(request);
    });
    this.#inFlight.add(done);
    const forget = () => this.#inFlight.delete(done);
    done.then(forget, forget);
    return done;
  }

  /** Waits for the batches posted so far, then stops the worker. */
  async close(): Promise<void> {
    this.#closed = true;
    await Promise.allSettled([...this.#inFlight]);
    const worker = this.#worker;
    if (worker === undefined) return;
    this.#worker = undefined;
    const exited = new Promise<void>((r) => worker.once('exit', () => r()));
    worker.ref(); // an idle worker is unreferenced: keep the process up until it closed its connection
    worker.postMessage('close');
    await exited;
  }

  #ensureWorker(): Worker {
    if (this.#worker !== undefined) return this.#worker;
    const worker = new Worker(new URL('./audit-worker.ts', import.meta.url), { workerData: { path: this.#path } });
    worker.unref();
    worker.on('message', (reply: AuditBatchReply) => this.#settle(reply));
    worker.on('error', (e) => this.#fail(worker, e));
    worker.on('exit', (code) => this.#fail(worker, new AuditWorkerError(`the audit worker exited with code ${code}`)));
    this.#worker = worker;
    return worker;
  }

  #settle(reply: AuditBatchReply): void {
    const w = this.#waiting.get(reply.id);
    if (w === undefined) return;
    this.#waiting.delete(reply.id);
    if (this.#waiting.size === 0) this.#worker?.unref();
    if ('error' in reply) {
      w.reject(new AuditWorkerError(reply.error.message, reply.error.code, reply.error.errcode));
      return;
    }
    if (reply.hashes.length !== w.events.length * 64) {
      w.reject(new AuditWorkerError('the audit worker answered for a different number of rows'));
      return;
    }
    const rows: StoredAuditRow[] = [];
    let prevHash = reply.prevHash;
    for (let i = 0; i < w.events.length; i++) {
      const e = w.events[i] as SealInput;
      const hash = reply.hashes.slice(i * 64, i * 64 + 64);
      rows.push({ seq: reply.firstSeq + i, time: e.body.time, action: e.body.action, outcome: e.body.outcome, actorId: e.body.actor.id, correlationId: e.body.correlationId, event: e.canonical, prevHash, hash });
      prevHash = hash;
    }
    w.resolve(rows);
  }

  /** A worker died: every batch still waiting on it fails (it may or may not have committed); the next append starts a new worker. */
  #fail(worker: Worker, cause: unknown): void {
    if (this.#worker === worker) this.#worker = undefined;
    const err = cause instanceof Error ? cause : new AuditWorkerError(String(cause));
    for (const [id, w] of this.#waiting) {
      if (w.worker !== worker) continue; // posted to a newer worker
      this.#waiting.delete(id);
      w.reject(err);
    }
  }
}
