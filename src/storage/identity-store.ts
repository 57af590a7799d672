/**
 * The identity context's ports over the store's Kysely handle: CA key slots
 * and the bundle sequence, registration entries, join tokens, nodes and the
 * replay cache. Records the identity context owns are stored as JSON text
 * beside the columns queries need.
 */
import { sql } from 'kysely';
import type { Kysely } from 'kysely';
import type {
  ConsumeJoinTokenResult,
  IdentityStore,
  JoinTokenRecord,
  NodeRecord,
  RegistrationEntry,
  StoredCaKey,
} from '../identity/index.ts';
import type { Database } from './schema.ts';

type Kind = 'sqlite' | 'postgres';

function isUniqueViolation(e: unknown): boolean {
  const err = e as { code?: unknown; errcode?: unknown };
  return err.code === '23505' || err.errcode === 2067 || err.errcode === 1555;
}

function tokenOf(r: Database['join_tokens']): JoinTokenRecord {
  return {
    id: r.id,
    tokenHash: r.token_hash,
    createdAt: r.created_at,
    expiresAt: r.expires_at,
    createdBy: r.created_by,
    selectors: JSON.parse(r.selectors) as string[],
    usedAt: r.used_at,
    nodeId: r.node_id,
  };
}

function nodeOf(r: Database['nodes']): NodeRecord {
  return {
    id: r.id,
    spiffeId: r.spiffe_id,
    attestationType: r.attestation_type,
    selectors: JSON.parse(r.selectors) as string[],
    attestedAt: r.attested_at,
    svidSerial: r.svid_serial,
    svidNotAfter: r.svid_not_after,
    lastSeenAt: r.last_seen_at,
    evictedAt: r.evicted_at,
  };
}

/**
 * @example
 * const ids = new IdentityTables('sqlite', db);
 * await ids.put(caKeyRecord);
 */
export class IdentityTables implements IdentityStore {
  readonly #kind: Kind;
  readonly #db: Kysely<Database>;
  #lastPrune = 0;

  constructor(kind: Kind, db: Kysely<Database>) {
    this.#kind = kind;
    this.#db = db;
  }

  // ---- CaKeyStore --------------------------------------------------------

  async list(trustDomain: string): Promise<readonly StoredCaKey[]> {
    const rows = await this.#db.selectFrom('ca_keys').select('record').where('trust_domain', '=', trustDomain).execute();
    return rows.map((r) => JSON.parse(r.record) as StoredCaKey);
  }

  async put(key: StoredCaKey): Promise<void> {
    const record = JSON.stringify(key);
    await this.#db
      .insertInto('ca_keys')
      .values({ trust_domain: key.trustDomain, id: key.id, record })
      .onConflict((oc) => oc.columns(['trust_domain', 'id']).doUpdateSet({ record }))
      .execute();
  }

  async delete(trustDomain: string, id: string): Promise<void> {
    await this.#db.deleteFrom('ca_keys').where('trust_domain', '=', trustDomain).where('id', '=', id).execute();
  }

  async readSequence(trustDomain: string): Promise<number> {
    const r = await this.#db.selectFrom('ca_bundle_sequence').select('sequence').where('trust_domain', '=', trustDomain).executeTakeFirst();
    return r === undefined ? 0 : Number(r.sequence);
  }

  async writeSequence(trustDomain: string, sequence: number): Promise<void> {
    // INVARIANT: the stored sequence never goes backwards, whichever replica writes last.
    const keep = this.#kind === 'postgres' ? sql<number>`greatest(ca_bundle_sequence.sequence, excluded.sequence)` : sql<number>`max(ca_bundle_sequence.sequence, excluded.sequence)`;
    await this.#db
      .insertInto('ca_bundle_sequence')
      .values({ trust_domain: trustDomain, sequence })
      .onConflict((oc) => oc.column('trust_domain').doUpdateSet({ sequence: keep }))
      .execute();
  }

  // ---- EntryStore ----------------------------------------------------------

  async insertEntry(entry: RegistrationEntry): Promise<void> {
    await this.#db
      .insertInto('registration_entries')
      .values({ id: entry.id, spiffe_id: entry.spiffeId, created_at: entry.createdAt, revision: entry.revision, entry: JSON.stringify(entry) })
      .execute();
  }

  async getEntry(id: string): Promise<RegistrationEntry | undefined> {
    const r = await this.#db.selectFrom('registration_entries').select('entry').where('id', '=', id).executeTakeFirst();
    return r === undefined ? undefined : (JSON.parse(r.entry) as RegistrationEntry);
  }

  async listEntries(): Promise<readonly RegistrationEntry[]> {
    const rows = await this.#db.selectFrom('registration_entries').select('entry').orderBy('created_at', 'asc').orderBy('id', 'asc').execute();
    return rows.map((r) => JSON.parse(r.entry) as RegistrationEntry);
  }

  async updateEntry(entry: RegistrationEntry, expectedRevision: number): Promise<boolean> {
    const r = await this.#db
      .updateTable('registration_entries')
      .set({ spiffe_id: entry.spiffeId, revision: entry.revision, entry: JSON.stringify(entry) })
      .where('id', '=', entry.id)
      .where('revision', '=', expectedRevision)
      .executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }

  async deleteEntry(id: string): Promise<boolean> {
    const r = await this.#db.deleteFrom('registration_entries').where('id', '=', id).executeTakeFirst();
    return Number(r.numDeletedRows) === 1;
  }

  // ---- JoinTokenStore -------------------------------------------------------

  async insertJoinToken(t: JoinTokenRecord): Promise<void> {
    await this.#db
      .insertInto('join_tokens')
      .values({ id: t.id, token_hash: t.tokenHash, created_at: t.createdAt, expires_at: t.expiresAt, created_by: t.createdBy, selectors: JSON.stringify(t.selectors), used_at: t.usedAt, node_id: t.nodeId })
      .execute();
  }

  async consumeJoinToken(tokenHash: string, at: string, nodeId: string): Promise<ConsumeJoinTokenResult> {
    const row = await this.#db.selectFrom('join_tokens').selectAll().where('token_hash', '=', tokenHash).executeTakeFirst();
    if (row === undefined) return { status: 'unknown' };
    if (row.used_at !== null) return { status: 'used', token: tokenOf(row) };
    if (row.expires_at <= at) return { status: 'expired', token: tokenOf(row) };
    // INVARIANT: the conditional update is the single point of consumption; of two
    // concurrent consumers (on any replica) only one sees a row updated.
    const r = await this.#db
      .updateTable('join_tokens')
      .set({ used_at: at, node_id: nodeId })
      .where('token_hash', '=', tokenHash)
      .where('used_at', 'is', null)
      .where('expires_at', '>', at)
      .executeTakeFirst();
    const after = await this.#db.selectFrom('join_tokens').selectAll().where('token_hash', '=', tokenHash).executeTakeFirst();
    if (after === undefined) return { status: 'unknown' };
    if (Number(r.numUpdatedRows) === 1) return { status: 'consumed', token: tokenOf(after) };
    return after.used_at !== null ? { status: 'used', token: tokenOf(after) } : { status: 'expired', token: tokenOf(after) };
  }

  async listJoinTokens(): Promise<readonly JoinTokenRecord[]> {
    const rows = await this.#db.selectFrom('join_tokens').selectAll().orderBy('created_at', 'asc').orderBy('id', 'asc').execute();
    return rows.map(tokenOf);
  }

  // ---- NodeStore --------------------------------------------------------------

  async insertNode(n: NodeRecord): Promise<void> {
    await this.#db
      .insertInto('nodes')
      .values({
        id: n.id,
        spiffe_id: n.spiffeId,
        attestation_type: n.attestationType,
        selectors: JSON.stringify(n.selectors),
        attested_at: n.attestedAt,
        svid_serial: n.svidSerial,
        svid_not_after: n.svidNotAfter,
        last_seen_at: n.lastSeenAt,
        evicted_at: n.evictedAt,
      })
      .execute();
  }

  async getNode(id: string): Promise<NodeRecord | undefined> {
    const r = await this.#db.selectFrom('nodes').selectAll().where('id', '=', id).executeTakeFirst();
    return r === undefined ? undefined : nodeOf(r);
  }

  async listNodes(): Promise<readonly NodeRecord[]> {
    const rows = await this.#db.selectFrom('nodes').selectAll().orderBy('attested_at', 'asc').orderBy('id', 'asc').execute();
    return rows.map(nodeOf);
  }

  async renewNodeSvid(id: string, serial: string, notAfter: string, at: string): Promise<boolean> {
    const r = await this.#db
      .updateTable('nodes')
      .set({ svid_serial: serial, svid_not_after: notAfter, last_seen_at: at })
      .where('id', '=', id)
      .where('evicted_at', 'is', null)
      .executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }

  async evictNode(id: string, at: string): Promise<boolean> {
    const r = await this.#db.updateTable('nodes').set({ evicted_at: at }).where('id', '=', id).where('evicted_at', 'is', null).executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }

  // ---- ReplayCache --------------------------------------------------------------

  async remember(key: string, expiresAt: string, now: string): Promise<boolean> {
    // Forget expired keys now and then (at most once a minute per process).
    const nowMs = Date.parse(now);
    if (nowMs - this.#lastPrune > 60_000) {
      this.#lastPrune = nowMs;
      await this.#db.deleteFrom('attestation_replay').where('expires_at', '<=', now).execute();
    }
    try {
      await this.#db.insertInto('attestation_replay').values({ key, expires_at: expiresAt }).execute();
      return true;
    } catch (e) {
      if (!isUniqueViolation(e)) throw e;
    }
    // Seen before: a replay, unless the earlier record has expired (then take it over).
    const r = await this.#db.updateTable('attestation_replay').set({ expires_at: expiresAt }).where('key', '=', key).where('expires_at', '<=', now).executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }
}
