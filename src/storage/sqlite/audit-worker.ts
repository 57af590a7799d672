/**
 * Worker thread that appends audit batches to a SQLite file on its own
 * connection, so the durable commit (an fsync with `synchronous=FULL`) blocks
 * this thread and not the server's event loop. Batches are handled in the
 * order they were posted. Group commit happens here too: the batches that
 * queued up while a commit ran are taken together (up to
 * {@link MAX_EVENTS_PER_COMMIT} events) into one `BEGIN IMMEDIATE`
 * transaction that reads the chain head, seals them after it one after the
 * other, inserts the rows, moves the head and commits once. Each batch's
 * reply comes only after that commit; if it fails, every batch in it fails.
 */
import { parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads';
import type { SQLInputValue, StatementSync } from 'node:sqlite';
import { seal } from '../../audit/index.ts';
import type { SealInput, StoredAuditRow } from '../../audit/index.ts';
import { openNodeSqlite } from './node-sqlite.ts';
import { AUDIT_INSERT_CHUNKS, auditInsertSql } from '../audit-sql.ts';
import type { AuditBatchReply, AuditBatchRequest } from './audit-appender.ts';

if (parentPort === null) throw new Error('audit-worker.ts runs as a worker thread');
const port = parentPort;
const { raw } = openNodeSqlite((workerData as { path: string }).path);
const selectHead = raw.prepare('select "seq", "hash" from "audit_head" where "id" = ?');
const updateHead = raw.prepare('update "audit_head" set "seq" = ?, "hash" = ? where "id" = ?');
const inserts = new Map<number, StatementSync>(AUDIT_INSERT_CHUNKS.map((n) => [n, raw.prepare(auditInsertSql('sqlite', n))]));

/** The batch as seal inputs: each canonical event with its five query columns (see {@link AuditBatchRequest}). */
function sealInputs(events: string, columns: string): SealInput[] {
  const canonical = events.split('\n');
  const cols = JSON.parse(columns) as string[];
  if (cols.length !== canonical.length * 5) throw new Error('audit batch columns do not match its events');
  const out: SealInput[] = new Array<SealInput>(canonical.length);
  for (let i = 0, c = 0; i < canonical.length; i++, c += 5) {
    out[i] = { canonical: canonical[i] as string, body: { time: cols[c] as string, action: cols[c + 1] as string, outcome: cols[c + 2] as SealInput['body']['outcome'], actor: { id: cols[c + 3] as string }, correlationId: cols[c + 4] as string } };
  }
  return out;
}

/** Most events sealed and committed in one transaction when several batches wait. */
const MAX_EVENTS_PER_COMMIT = 20_000;

/** Seal and insert the batches after the head, in one transaction: the rows of each batch. */
function append(batches: readonly AuditBatchRequest[]): StoredAuditRow[][] {
  const pending = batches.map((b) => sealInputs(b.events, b.columns));
  raw.exec('begin immediate');
  try {
    const row = selectHead.get(1) as { seq: number | bigint; hash: string } | undefined;
    if (row === undefined) throw new Error('audit_head row is missing');
    let head = { seq: Number(row.seq), hash: row.hash };
    const out: StoredAuditRow[][] = [];
    for (const events of pending) {
      const rows = seal(head, events);
      insertRows(rows);
      const last = rows[rows.length - 1];
      if (last !== undefined) head = { seq: last.seq, hash: last.hash };
      out.push(rows);
    }
    updateHead.run(head.seq, head.hash, 1);
    raw.exec('commit');
    return out;
  } catch (e) {
    if (raw.isTransaction) raw.exec('rollback');
    throw e;
  }
}

function insertRows(rows: readonly StoredAuditRow[]): void {
  let i = 0;
  for (const size of AUDIT_INSERT_CHUNKS) {
    const stmt = inserts.get(size) as StatementSync;
    for (; rows.length - i >= size; i += size) {
      const params: SQLInputValue[] = [];
      for (let j = i; j < i + size; j++) {
        const r = rows[j] as StoredAuditRow;
        params.push(r.seq, r.time, r.action, r.outcome, r.actorId, r.correlationId, r.event, r.prevHash, r.hash);
      }
      stmt.run(...params);
    }
  }
}

/** Events in a posted batch (its canonical events are joined by `\n`). */
function eventCount(b: AuditBatchRequest): number {
  let n = 1;
  for (let i = b.events.indexOf('\n'); i !== -1; i = b.events.indexOf('\n', i + 1)) n++;
  return n;
}

function close(): void {
  raw.close();
  port.close();
}

port.on('message', (m: AuditBatchRequest | 'close') => {
  if (m === 'close') return close();
  // The batches that queued while the last commit ran go into this one, in posting order.
  const batches: AuditBatchRequest[] = [m];
  let events = eventCount(m);
  let closing = false;
  while (events < MAX_EVENTS_PER_COMMIT) {
    const next = receiveMessageOnPort(port) as { message: AuditBatchRequest | 'close' } | undefined;
    if (next === undefined) break;
    if (next.message === 'close') {
      closing = true;
      break;
    }
    batches.push(next.message);
    events += eventCount(next.message);
  }
  let replies: AuditBatchReply[];
  try {
    const rows = append(batches);
    replies = batches.map((b, i) => {
      const r = rows[i] as StoredAuditRow[];
      const first = r[0] as StoredAuditRow;
      return { id: b.id, firstSeq: first.seq, prevHash: first.prevHash, hashes: r.map((x) => x.hash).join('') };
    });
  } catch (e) {
    const err = e as { message?: unknown; code?: unknown; errcode?: unknown };
    const error = { message: String(err.message ?? e), code: typeof err.code === 'string' ? err.code : undefined, errcode: typeof err.errcode === 'number' ? err.errcode : undefined };
    replies = batches.map((b) => ({ id: b.id, error }));
  }
  for (const reply of replies) port.postMessage(reply);
  if (closing) close();
});
