/**
 * The credentials context's OAuth client registry over Kysely (SQLite and
 * PostgreSQL alike): a registered client survives a restart and is seen by
 * every replica. The client is kept as JSON (public keys only: registration
 * refuses private JWK members); the client id and the SPIFFE ID are unique.
 */
import type { Kysely } from 'kysely';
import type { OAuthClient, OAuthClientStore } from '../credentials/index.ts';
import type { Database, OAuthClientsTable } from './schema.ts';

function clientOf(r: OAuthClientsTable): OAuthClient {
  return JSON.parse(r.body) as OAuthClient;
}

/**
 * @example
 * const inserted = await store.oauthClients.insert(client);
 * const c = await store.oauthClients.bySpiffeId('spiffe://example.org/ci');
 */
export class OAuthClientTables implements OAuthClientStore {
  readonly #db: Kysely<Database>;

  constructor(db: Kysely<Database>) {
    this.#db = db;
  }

  async get(clientId: string): Promise<OAuthClient | undefined> {
    const r = await this.#db.selectFrom('oauth_clients').selectAll().where('client_id', '=', clientId).executeTakeFirst();
    return r === undefined ? undefined : clientOf(r);
  }

  async bySpiffeId(spiffeId: string): Promise<OAuthClient | undefined> {
    const r = await this.#db.selectFrom('oauth_clients').selectAll().where('spiffe_id', '=', spiffeId).executeTakeFirst();
    return r === undefined ? undefined : clientOf(r);
  }

  /** False when the client id or its SPIFFE ID is taken (the unique constraints decide, across replicas). */
  async insert(client: OAuthClient): Promise<boolean> {
    const r = await this.#db
      .insertInto('oauth_clients')
      .values({ client_id: client.clientId, spiffe_id: client.spiffeId ?? null, body: JSON.stringify(client), created_at: client.createdAt })
      .onConflict((oc) => oc.doNothing())
      .executeTakeFirst();
    return Number(r.numInsertedOrUpdatedRows ?? 0n) === 1;
  }

  async list(): Promise<readonly OAuthClient[]> {
    const rows = await this.#db.selectFrom('oauth_clients').selectAll().orderBy('created_at').orderBy('client_id').execute();
    return rows.map(clientOf);
  }

  async delete(clientId: string): Promise<boolean> {
    const r = await this.#db.deleteFrom('oauth_clients').where('client_id', '=', clientId).executeTakeFirst();
    return Number(r.numDeletedRows) === 1;
  }
}
