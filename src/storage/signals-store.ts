/**
 * The signals context's storage port over Kysely (SQLite and PostgreSQL alike).
 */
import type { Kysely } from 'kysely';
import type { SignalRecord, SignalStore, SignalType } from '../signals/index.ts';
import type { Database, SignalsTable } from './schema.ts';

function toRecord(r: SignalsTable): SignalRecord {
  return JSON.parse(r.body) as SignalRecord;
}

/**
 * @example
 * await store.signals.insertSignal(record);
 * const latest = await store.signals.latestSignal('spiffe://writ.local/ci', 'posture-changed');
 */
export class SignalTables implements SignalStore {
  readonly #db: Kysely<Database>;

  constructor(db: Kysely<Database>) {
    this.#db = db;
  }

  async insertSignal(record: SignalRecord): Promise<void> {
    await this.#db
      .insertInto('signals')
      .values({ id: record.id, type: record.type, subject: record.subject, received_at: record.receivedAt, occurred_at: record.occurredAt, source: record.source, reason: record.reason ?? null, body: JSON.stringify(record) })
      .execute();
  }

  async listSignals(q: { readonly subject?: string; readonly type?: SignalType; readonly limit: number }): Promise<readonly SignalRecord[]> {
    let b = this.#db.selectFrom('signals').selectAll();
    if (q.subject !== undefined) b = b.where('subject', '=', q.subject);
    if (q.type !== undefined) b = b.where('type', '=', q.type);
    const rows = await b.orderBy('received_at', 'desc').orderBy('id', 'desc').limit(q.limit).execute();
    return rows.map(toRecord);
  }

  async latestSignal(subject: string, type: SignalType): Promise<SignalRecord | undefined> {
    const r = await this.#db.selectFrom('signals').selectAll().where('subject', '=', subject).where('type', '=', type).orderBy('received_at', 'desc').orderBy('id', 'desc').limit(1).executeTakeFirst();
    return r === undefined ? undefined : toRecord(r);
  }
}
