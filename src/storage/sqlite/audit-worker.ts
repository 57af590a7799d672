/**
 * Worker thread that appends audit batches to a SQLite file on its own
 * connection, so the durable commit (an fsync with `synchronous=FULL`) blocks
 * this thread and not the server's event loop. Batches are handled one at a
 * time, in the order they were posted; each is one `BEGIN IMMEDIATE`
 * transaction that reads the chain head, seals the batch after it, inserts the
 * rows, moves the head and commits. The reply comes only after the commit.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { SQLInputValue, StatementSync } from 'node:sqlite';
import { seal } from '../../audit/index.ts';
import type { SealInput, StoredAuditRow } from '../../audit/index.ts';
import { openNodeSqlite } from './node-sqlite.ts';
import { AUDIT_INSERT_CHUNKS, auditInsertSql } from '../audit-sql.ts';
import type { AuditBatchReply, AuditBatchRequest } from './audit-appender.ts';

const port = parentPort;
if (port === null) throw new Error('audit-worker.ts runs as a worker thread');
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

function append(events: string, columns: string): StoredAuditRow[] {
  const pending = sealInputs(events, columns);
  raw.exec('begin immediate');
  try {
    const head = selectHead.get(1) as { seq: number | bigint; hash: string } | undefined;
    if (head === undefined) throw new Error('audit_head row is missing');
    const rows = seal({ seq: Number(head.seq), hash: head.hash }, pending);
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
    const last = rows[rows.length - 1];
    if (last !== undefined) updateHead.run(last.seq, last.hash, 1);
    raw.exec('commit');
    return rows;
  } catch (e) {
    if (raw.isTransaction) raw.exec('rollback');
    throw e;
  }
}

port.on('message', (m: AuditBatchRequest | 'close') => {
  if (m === 'close') {
    raw.close();
    port.close();
    return;
  }
  let reply: AuditBatchReply;
  try {
    const rows = append(m.events, m.columns);
    const first = rows[0] as StoredAuditRow;
    reply = { id: m.id, firstSeq: first.seq, prevHash: first.prevHash, hashes: rows.map((r) => r.hash).join('') };
  } catch (e) {
    const err = e as { message?: unknown; code?: unknown; errcode?: unknown };
    reply = { id: m.id, error: { message: String(err.message ?? e), code: typeof err.code === 'string' ? err.code : undefined, errcode: typeof err.errcode === 'number' ? err.errcode : undefined } };
  }
  port.postMessage(reply);
});
