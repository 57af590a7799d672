/**
 * The signals context's Shared Signals port over Kysely (SQLite and
 * PostgreSQL alike): streams, their SET queues and the receiver's replay cache.
 * A stream's push credential arrives sealed (`sealedAuthorization`) and is
 * stored as it is, in its own column; this adapter never sees it in the clear.
 */
import type { Kysely } from 'kysely';
import type { EnforcementPointRecord, EnforcementPointStore, QueuedSet, RevocationAck, SetKeyRecord, SetKeyStore, SsfStore, SsfStreamRecord, SsfStreamState } from '../signals/index.ts';
import type { Database, SsfSetQueueTable, SsfStreamsTable } from './schema.ts';

function toStream(r: SsfStreamsTable): SsfStreamRecord {
  return { streamId: r.stream_id, owner: r.owner, revision: Number(r.revision), config: JSON.parse(r.body) as SsfStreamState, ...(r.authorization_sealed === null ? {} : { sealedAuthorization: r.authorization_sealed }), createdAt: r.created_at, updatedAt: r.updated_at };
}

function toQueued(r: SsfSetQueueTable): QueuedSet {
  return { streamId: r.stream_id, jti: r.jti, set: r.set_jwt, createdAt: r.created_at, attempts: Number(r.attempts), nextAt: r.next_at };
}

/**
 * @example
 * await store.ssf.insertStream(record);
 * const due = await store.ssf.dueSets(record.streamId, new Date().toISOString(), 10);
 */
export class SsfTables implements SsfStore, EnforcementPointStore, SetKeyStore {
  readonly #db: Kysely<Database>;

  constructor(db: Kysely<Database>) {
    this.#db = db;
  }

  async insertStream(r: SsfStreamRecord): Promise<void> {
    await this.#db.insertInto('ssf_streams').values({ stream_id: r.streamId, owner: r.owner, revision: r.revision, body: JSON.stringify(r.config), authorization_sealed: r.sealedAuthorization ?? null, created_at: r.createdAt, updated_at: r.updatedAt }).execute();
  }

  async getStream(streamId: string): Promise<SsfStreamRecord | undefined> {
    const r = await this.#db.selectFrom('ssf_streams').selectAll().where('stream_id', '=', streamId).executeTakeFirst();
    return r === undefined ? undefined : toStream(r);
  }

  async listStreams(owner?: string): Promise<readonly SsfStreamRecord[]> {
    let q = this.#db.selectFrom('ssf_streams').selectAll();
    if (owner !== undefined) q = q.where('owner', '=', owner);
    return (await q.orderBy('created_at').orderBy('stream_id').execute()).map(toStream);
  }

  async updateStream(r: SsfStreamRecord, expectedRevision: number): Promise<boolean> {
    const res = await this.#db
      .updateTable('ssf_streams')
      .set({ revision: r.revision, body: JSON.stringify(r.config), authorization_sealed: r.sealedAuthorization ?? null, updated_at: r.updatedAt })
      .where('stream_id', '=', r.streamId)
      .where('revision', '=', expectedRevision)
      .executeTakeFirst();
    return Number(res.numUpdatedRows) === 1;
  }

  async deleteStream(streamId: string): Promise<boolean> {
    return this.#db.transaction().execute(async (tx) => {
      await tx.deleteFrom('ssf_set_queue').where('stream_id', '=', streamId).execute();
      const res = await tx.deleteFrom('ssf_streams').where('stream_id', '=', streamId).executeTakeFirst();
      return Number(res.numDeletedRows) === 1;
    });
  }

  async listSetKeys(): Promise<readonly SetKeyRecord[]> {
    const rows = await this.#db.selectFrom('ssf_set_keys').selectAll().orderBy('created_at').orderBy('kid').execute();
    return rows.map((r) => ({ kid: r.kid, publicJwk: r.public_jwk, privateSealed: r.private_sealed, createdAt: r.created_at }));
  }

  async insertSetKey(r: SetKeyRecord): Promise<boolean> {
    const res = await this.#db
      .insertInto('ssf_set_keys')
      .values({ slot: 'current', kid: r.kid, public_jwk: r.publicJwk, private_sealed: r.privateSealed, created_at: r.createdAt })
      .onConflict((oc) => oc.column('slot').doNothing())
      .executeTakeFirst();
    return Number(res.numInsertedOrUpdatedRows ?? 0n) === 1;
  }

  async enqueueSet(q: QueuedSet): Promise<boolean> {
    const res = await this.#db
      .insertInto('ssf_set_queue')
      .values({ stream_id: q.streamId, jti: q.jti, set_jwt: q.set, created_at: q.createdAt, attempts: q.attempts, next_at: q.nextAt })
      .onConflict((oc) => oc.columns(['stream_id', 'jti']).doNothing())
      .executeTakeFirst();
    return Number(res.numInsertedOrUpdatedRows ?? 0n) === 1;
  }

  async dueSets(streamId: string, nowIso: string, limit: number): Promise<readonly QueuedSet[]> {
    const rows = await this.#db.selectFrom('ssf_set_queue').selectAll().where('stream_id', '=', streamId).where('next_at', '<=', nowIso).orderBy('created_at').orderBy('jti').limit(limit).execute();
    return rows.map(toQueued);
  }

  async deleteSets(streamId: string, jtis: readonly string[]): Promise<number> {
    if (jtis.length === 0) return 0;
    const res = await this.#db.deleteFrom('ssf_set_queue').where('stream_id', '=', streamId).where('jti', 'in', [...jtis]).executeTakeFirst();
    return Number(res.numDeletedRows);
  }

  async rescheduleSet(streamId: string, jti: string, expectedNextAt: string, attempts: number, nextAt: string): Promise<boolean> {
    const res = await this.#db
      .updateTable('ssf_set_queue')
      .set({ attempts, next_at: nextAt })
      .where('stream_id', '=', streamId)
      .where('jti', '=', jti)
      .where('next_at', '=', expectedNextAt)
      .executeTakeFirst();
    return Number(res.numUpdatedRows) === 1;
  }

  async rememberReceivedSet(key: string, at: string): Promise<boolean> {
    const res = await this.#db.insertInto('ssf_received').values({ key, received_at: at }).onConflict((oc) => oc.column('key').doNothing()).executeTakeFirst();
    return Number(res.numInsertedOrUpdatedRows ?? 0n) === 1;
  }

  async forgetReceivedSet(key: string): Promise<void> {
    await this.#db.deleteFrom('ssf_received').where('key', '=', key).execute();
  }

  // ---------------------------------------------------------- enforcement points

  async touchEnforcementPoint(p: { readonly id: string; readonly principalId: string; readonly name: string; readonly at: string }): Promise<void> {
    await this.#db
      .insertInto('enforcement_points')
      .values({ id: p.id, principal_id: p.principalId, name: p.name, registered_at: p.at, last_seen_at: p.at })
      .onConflict((oc) => oc.column('id').doUpdateSet({ last_seen_at: p.at }))
      .execute();
  }

  async listEnforcementPoints(seenSince?: string): Promise<readonly EnforcementPointRecord[]> {
    let q = this.#db.selectFrom('enforcement_points').selectAll();
    if (seenSince !== undefined) q = q.where('last_seen_at', '>=', seenSince);
    const rows = await q.orderBy('id').execute();
    return rows.map((r) => ({ id: r.id, principalId: r.principal_id, name: r.name, registeredAt: r.registered_at, lastSeenAt: r.last_seen_at }));
  }

  async recordAck(ack: RevocationAck): Promise<void> {
    await this.#db
      .insertInto('revocation_acks')
      .values({ event_id: ack.eventId, pep_id: ack.pepId, acked_at: ack.ackedAt, denied: ack.denied ? 1 : 0 })
      .onConflict((oc) => oc.columns(['event_id', 'pep_id']).doNothing())
      .execute();
  }

  async listAcks(eventIds: readonly string[]): Promise<readonly RevocationAck[]> {
    if (eventIds.length === 0) return [];
    const rows = await this.#db.selectFrom('revocation_acks').selectAll().where('event_id', 'in', [...eventIds]).orderBy('acked_at').execute();
    return rows.map((r) => ({ eventId: r.event_id, pepId: r.pep_id, ackedAt: r.acked_at, denied: Number(r.denied) === 1 }));
  }
}
