/**
 * Versioned migrations, run on every start (each runs once; the order is the
 * name order). Never edit a released migration: add a new one.
 */
import { sql } from 'kysely';
import type { Kysely, Migration, MigrationProvider } from 'kysely';

const GENESIS = '0'.repeat(64);

const migrations: Record<string, Migration> = {
  '0001_audit_log': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('audit_events')
        .addColumn('seq', 'bigint', (c) => c.primaryKey())
        .addColumn('time', 'text', (c) => c.notNull())
        .addColumn('action', 'text', (c) => c.notNull())
        .addColumn('outcome', 'text', (c) => c.notNull())
        .addColumn('actor_id', 'text', (c) => c.notNull())
        .addColumn('correlation_id', 'text', (c) => c.notNull())
        .addColumn('event', 'text', (c) => c.notNull())
        .addColumn('prev_hash', 'text', (c) => c.notNull())
        .addColumn('hash', 'text', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('audit_events_correlation').on('audit_events').column('correlation_id').execute();
      await db.schema.createIndex('audit_events_action').on('audit_events').columns(['action', 'seq']).execute();
      await db.schema.createIndex('audit_events_time').on('audit_events').column('time').execute();
      await db.schema
        .createTable('audit_head')
        .addColumn('id', 'integer', (c) => c.primaryKey().check(sql`id = 1`))
        .addColumn('seq', 'bigint', (c) => c.notNull())
        .addColumn('hash', 'text', (c) => c.notNull())
        .execute();
      await sql`insert into audit_head (id, seq, hash) values (1, 0, ${GENESIS})`.execute(db);
    },
  },
  '0002_admin_principals': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('admin_principals')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('role', 'text', (c) => c.notNull())
        .addColumn('token_hash', 'text', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('created_by', 'text', (c) => c.notNull())
        .addColumn('revoked_at', 'text')
        .execute();
      await sql`create unique index admin_principals_active_name on admin_principals (name) where revoked_at is null`.execute(db);
    },
  },
  '0003_identity': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('ca_keys')
        .addColumn('trust_domain', 'text', (c) => c.notNull())
        .addColumn('id', 'text', (c) => c.notNull())
        .addColumn('record', 'text', (c) => c.notNull())
        .addPrimaryKeyConstraint('ca_keys_pk', ['trust_domain', 'id'])
        .execute();
      await db.schema
        .createTable('ca_bundle_sequence')
        .addColumn('trust_domain', 'text', (c) => c.primaryKey())
        .addColumn('sequence', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('registration_entries')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('spiffe_id', 'text', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('revision', 'integer', (c) => c.notNull())
        .addColumn('entry', 'text', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('registration_entries_spiffe_id').on('registration_entries').column('spiffe_id').execute();
      await db.schema
        .createTable('join_tokens')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('token_hash', 'text', (c) => c.notNull().unique())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('expires_at', 'text', (c) => c.notNull())
        .addColumn('created_by', 'text', (c) => c.notNull())
        .addColumn('selectors', 'text', (c) => c.notNull())
        .addColumn('used_at', 'text')
        .addColumn('node_id', 'text')
        .execute();
      await db.schema
        .createTable('nodes')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('spiffe_id', 'text', (c) => c.notNull().unique())
        .addColumn('attestation_type', 'text', (c) => c.notNull())
        .addColumn('selectors', 'text', (c) => c.notNull())
        .addColumn('attested_at', 'text', (c) => c.notNull())
        .addColumn('svid_serial', 'text', (c) => c.notNull())
        .addColumn('svid_not_after', 'text', (c) => c.notNull())
        .addColumn('last_seen_at', 'text')
        .addColumn('evicted_at', 'text')
        .execute();
      await db.schema
        .createTable('attestation_replay')
        .addColumn('key', 'text', (c) => c.primaryKey())
        .addColumn('expires_at', 'text', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('attestation_replay_expires').on('attestation_replay').column('expires_at').execute();
    },
  },
  '0004_signals': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('signals')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('type', 'text', (c) => c.notNull())
        .addColumn('subject', 'text', (c) => c.notNull())
        .addColumn('received_at', 'text', (c) => c.notNull())
        .addColumn('occurred_at', 'text', (c) => c.notNull())
        .addColumn('source', 'text', (c) => c.notNull())
        .addColumn('reason', 'text')
        .addColumn('body', 'text', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('signals_subject_type').on('signals').columns(['subject', 'type', 'received_at']).execute();
      await db.schema.createIndex('signals_received').on('signals').column('received_at').execute();
      // Outbox of the PostgreSQL revocation bus (storage/bus/postgres.ts); seq is the cursor.
      await db.schema
        .createTable('revocation_events')
        .addColumn('seq', 'bigint', (c) => c.primaryKey())
        .addColumn('id', 'text', (c) => c.notNull().unique())
        .addColumn('body', 'text', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .execute();
    },
  },
  '0005_credentials': {
    async up(db: Kysely<unknown>) {
      // Leases: written before the credential they cover exists (write-ahead).
      await db.schema
        .createTable('leases')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('kind', 'text', (c) => c.notNull())
        .addColumn('subject', 'text', (c) => c.notNull())
        .addColumn('task_id', 'text')
        .addColumn('audience', 'text')
        .addColumn('state', 'text', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('expires_at', 'text', (c) => c.notNull())
        .addColumn('max_expires_at', 'text', (c) => c.notNull())
        .addColumn('revoked_at', 'text')
        .addColumn('revoke_reason', 'text')
        .addColumn('handle', 'text', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('leases_task').on('leases').columns(['task_id', 'state']).execute();
      await db.schema.createIndex('leases_subject').on('leases').columns(['subject', 'state']).execute();
      await db.schema.createIndex('leases_state_expires').on('leases').columns(['state', 'expires_at']).execute();
      await db.schema.createIndex('leases_state_created').on('leases').columns(['state', 'created_at']).execute();
      await db.schema
        .createTable('tasks')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('owner', 'text', (c) => c.notNull())
        .addColumn('description', 'text', (c) => c.notNull())
        .addColumn('scopes', 'text', (c) => c.notNull())
        .addColumn('state', 'text', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('deadline', 'text', (c) => c.notNull())
        .addColumn('ended_at', 'text')
        .addColumn('ended_by', 'text')
        .execute();
      await db.schema.createIndex('tasks_state_deadline').on('tasks').columns(['state', 'deadline']).execute();
    },
  },
  '0006_credential_exceptions': {
    async up(db: Kysely<unknown>) {
      // Legacy exceptions: static secrets Writ cannot replace, owned, justified and time-boxed.
      // Secrets are sealed JSON (envelope-encrypted under the KEK), never plaintext.
      await db.schema
        .createTable('legacy_exceptions')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('name', 'text', (c) => c.notNull().unique())
        .addColumn('account', 'text', (c) => c.notNull())
        .addColumn('system', 'text', (c) => c.notNull())
        .addColumn('engine', 'text')
        .addColumn('rotate_every_seconds', 'integer')
        .addColumn('owner_team', 'text', (c) => c.notNull())
        .addColumn('owner_contact', 'text', (c) => c.notNull())
        .addColumn('justification', 'text', (c) => c.notNull())
        .addColumn('compensating_controls', 'text', (c) => c.notNull())
        .addColumn('risks', 'text', (c) => c.notNull())
        .addColumn('expires_at', 'text', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('created_by', 'text', (c) => c.notNull())
        .addColumn('updated_at', 'text', (c) => c.notNull())
        .addColumn('revision', 'integer', (c) => c.notNull())
        .addColumn('last_rotated_at', 'text')
        .addColumn('next_rotation_at', 'text')
        .addColumn('last_rotation_error', 'text')
        .addColumn('expired_finding_at', 'text')
        .addColumn('secret', 'text')
        .addColumn('pending_secret', 'text')
        .execute();
      // One schedule per account: two exceptions must not rotate the same role.
      await sql`create unique index legacy_exceptions_engine_account on legacy_exceptions (engine, account) where engine is not null`.execute(db);
      await db.schema.createIndex('legacy_exceptions_next_rotation').on('legacy_exceptions').column('next_rotation_at').execute();
      // The admin secret of each secret engine once Writ has rotated it.
      await db.schema
        .createTable('engine_secrets')
        .addColumn('engine', 'text', (c) => c.primaryKey())
        .addColumn('current_secret', 'text')
        .addColumn('next_secret', 'text')
        .addColumn('next_at', 'text')
        .addColumn('rotated_at', 'text', (c) => c.notNull())
        .addColumn('revision', 'integer', (c) => c.notNull())
        .execute();
    },
  },
  '0007_signals_ssf': {
    async up(db: Kysely<unknown>) {
      // Shared Signals streams (SSF §8.1): the configuration as JSON in `body`.
      await db.schema
        .createTable('ssf_streams')
        .addColumn('stream_id', 'text', (c) => c.primaryKey())
        .addColumn('owner', 'text', (c) => c.notNull())
        .addColumn('revision', 'integer', (c) => c.notNull())
        .addColumn('body', 'text', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('updated_at', 'text', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('ssf_streams_owner').on('ssf_streams').column('owner').execute();
      // SETs waiting for poll acknowledgement or push acceptance.
      await db.schema
        .createTable('ssf_set_queue')
        .addColumn('stream_id', 'text', (c) => c.notNull())
        .addColumn('jti', 'text', (c) => c.notNull())
        .addColumn('set_jwt', 'text', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('attempts', 'integer', (c) => c.notNull())
        .addColumn('next_at', 'text', (c) => c.notNull())
        .addPrimaryKeyConstraint('ssf_set_queue_pk', ['stream_id', 'jti'])
        .execute();
      await db.schema.createIndex('ssf_set_queue_due').on('ssf_set_queue').columns(['stream_id', 'next_at', 'created_at']).execute();
      // SETs a receiver accepted (`iss` + `jti`), so a replayed SET is not acted on twice.
      await db.schema
        .createTable('ssf_received')
        .addColumn('key', 'text', (c) => c.primaryKey())
        .addColumn('received_at', 'text', (c) => c.notNull())
        .execute();
    },
  },
  '0008_oauth_clients': {
    async up(db: Kysely<unknown>) {
      // OAuth clients registered by admins: they must survive a restart and be seen by every replica.
      await db.schema
        .createTable('oauth_clients')
        .addColumn('client_id', 'text', (c) => c.primaryKey())
        .addColumn('spiffe_id', 'text', (c) => c.unique())
        .addColumn('body', 'text', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .execute();
    },
  },
  '0009_signals_drills': {
    async up(db: Kysely<unknown>) {
      // Enforcement points following the revocation stream (registered by opening it with `?pep=`).
      await db.schema
        .createTable('enforcement_points')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('principal_id', 'text', (c) => c.notNull())
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('registered_at', 'text', (c) => c.notNull())
        .addColumn('last_seen_at', 'text', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('enforcement_points_seen').on('enforcement_points').column('last_seen_at').execute();
      // Acknowledgements of drill revocations, which drills measure.
      await db.schema
        .createTable('revocation_acks')
        .addColumn('event_id', 'text', (c) => c.notNull())
        .addColumn('pep_id', 'text', (c) => c.notNull())
        .addColumn('acked_at', 'text', (c) => c.notNull())
        .addColumn('denied', 'integer', (c) => c.notNull())
        .addPrimaryKeyConstraint('revocation_acks_pk', ['event_id', 'pep_id'])
        .execute();
    },
  },
  '0010_ssf_sealed_authorization': {
    async up(db: Kysely<unknown>) {
      // A push stream's `authorization_header`, sealed under the KEK. Rows an
      // older version wrote keep it in plain text in `body` until the stream
      // transmitter seals them on start (it needs the KEK, a migration has none).
      await db.schema.alterTable('ssf_streams').addColumn('authorization_sealed', 'text').execute();
    },
  },
  '0011_ssf_set_keys': {
    async up(db: Kysely<unknown>) {
      // The key SETs are signed with, shared by every replica and kept across restarts
      // (before, each process made its own at start, so a SET queued before a restart or
      // signed by another replica did not verify against the JWKS a receiver fetched).
      await db.schema
        .createTable('ssf_set_keys')
        .addColumn('slot', 'text', (c) => c.primaryKey())
        .addColumn('kid', 'text', (c) => c.notNull().unique())
        .addColumn('public_jwk', 'text', (c) => c.notNull())
        .addColumn('private_sealed', 'text', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .execute();
    },
  },
};

/** The migrations, in order, for Kysely's Migrator. */
export const migrationProvider: MigrationProvider = {
  getMigrations: () => Promise.resolve(migrations),
};

/** Names of every migration this build knows. */
export const MIGRATION_NAMES: readonly string[] = Object.keys(migrations).sort();
