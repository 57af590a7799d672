/** Table shapes, as Kysely sees them. Column names are snake case. */
export interface AuditEventsTable {
  seq: number;
  time: string;
  action: string;
  outcome: string;
  actor_id: string;
  correlation_id: string;
  event: string;
  prev_hash: string;
  hash: string;
}

export interface AuditHeadTable {
  id: number;
  seq: number;
  hash: string;
}

export interface AdminPrincipalsTable {
  id: string;
  name: string;
  role: string;
  token_hash: string;
  created_at: string;
  created_by: string;
  revoked_at: string | null;
}

/** Identity: CA key slots (the record as JSON; private keys only wrapped). */
export interface CaKeysTable {
  trust_domain: string;
  id: string;
  record: string;
}

export interface CaBundleSequenceTable {
  trust_domain: string;
  sequence: number;
}

export interface RegistrationEntriesTable {
  id: string;
  spiffe_id: string;
  created_at: string;
  revision: number;
  /** The whole entry as JSON. */
  entry: string;
}

export interface JoinTokensTable {
  id: string;
  token_hash: string;
  created_at: string;
  expires_at: string;
  created_by: string;
  selectors: string;
  used_at: string | null;
  node_id: string | null;
}

export interface NodesTable {
  id: string;
  spiffe_id: string;
  attestation_type: string;
  selectors: string;
  attested_at: string;
  svid_serial: string;
  svid_not_after: string;
  last_seen_at: string | null;
  evicted_at: string | null;
}

export interface AttestationReplayTable {
  key: string;
  expires_at: string;
}

export interface Database {
  audit_events: AuditEventsTable;
  audit_head: AuditHeadTable;
  admin_principals: AdminPrincipalsTable;
  ca_keys: CaKeysTable;
  ca_bundle_sequence: CaBundleSequenceTable;
  registration_entries: RegistrationEntriesTable;
  join_tokens: JoinTokensTable;
  nodes: NodesTable;
  attestation_replay: AttestationReplayTable;
  leases: LeasesTable;
  tasks: TasksTable;
  signals: SignalsTable;
  revocation_events: RevocationEventsTable;
  legacy_exceptions: LegacyExceptionsTable;
  engine_secrets: EngineSecretsTable;
  ssf_streams: SsfStreamsTable;
  ssf_set_queue: SsfSetQueueTable;
  ssf_received: SsfReceivedTable;
  ssf_set_keys: SsfSetKeysTable;
  oauth_clients: OAuthClientsTable;
  enforcement_points: EnforcementPointsTable;
  revocation_acks: RevocationAcksTable;
}

/** OAuth clients registered by admins; `body` is the client as JSON (public keys only). */
export interface OAuthClientsTable {
  client_id: string;
  spiffe_id: string | null;
  body: string;
  created_at: string;
}

/** Enforcement points following the revocation stream. */
export interface EnforcementPointsTable {
  id: string;
  principal_id: string;
  name: string;
  registered_at: string;
  last_seen_at: string;
}

/** Acknowledgements of drill revocations; `denied` is 0 or 1. */
export interface RevocationAcksTable {
  event_id: string;
  pep_id: string;
  acked_at: string;
  denied: number;
}

/**
 * Shared Signals streams; `body` is the stream state as JSON, without the
 * push `authorization_header`, which is in `authorization_sealed` (sealed
 * under the KEK, AAD `writ/signals/ssf-stream/<stream_id>`).
 */
export interface SsfStreamsTable {
  stream_id: string;
  owner: string;
  revision: number;
  body: string;
  authorization_sealed: string | null;
  created_at: string;
  updated_at: string;
}

/** SETs waiting for delivery. */
export interface SsfSetQueueTable {
  stream_id: string;
  jti: string;
  set_jwt: string;
  created_at: string;
  attempts: number;
  next_at: string;
}

/**
 * The SET signing key: `slot` is `current` (one key per deployment, shared by
 * every replica); the private JWK is sealed under the KEK, AAD
 * `writ/signals/set-key/<kid>`.
 */
export interface SsfSetKeysTable {
  slot: string;
  kid: string;
  public_jwk: string;
  private_sealed: string;
  created_at: string;
}

/** SETs a receiver accepted (replay cache). */
export interface SsfReceivedTable {
  key: string;
  received_at: string;
}

/** Signals: the validated signal as JSON in `body`. */
export interface SignalsTable {
  id: string;
  type: string;
  subject: string;
  received_at: string;
  occurred_at: string;
  source: string;
  reason: string | null;
  body: string;
}

/** Outbox of the PostgreSQL revocation bus. */
export interface RevocationEventsTable {
  seq: number;
  id: string;
  body: string;
  created_at: string;
}

/** Credential leases; `handle` is JSON (an engine account name, never a secret). */
export interface LeasesTable {
  id: string;
  kind: string;
  subject: string;
  task_id: string | null;
  audience: string | null;
  state: string;
  created_at: string;
  expires_at: string;
  max_expires_at: string;
  revoked_at: string | null;
  revoke_reason: string | null;
  handle: string;
}

/** Tasks credentials are bound to; `scopes` is a JSON array. */
export interface TasksTable {
  id: string;
  owner: string;
  description: string;
  scopes: string;
  state: string;
  created_at: string;
  deadline: string;
  ended_at: string | null;
  ended_by: string | null;
}

/** Legacy exceptions; lists are JSON arrays, secrets sealed JSON (never plaintext). */
export interface LegacyExceptionsTable {
  id: string;
  name: string;
  account: string;
  system: string;
  engine: string | null;
  rotate_every_seconds: number | null;
  owner_team: string;
  owner_contact: string;
  justification: string;
  compensating_controls: string;
  risks: string;
  expires_at: string;
  created_at: string;
  created_by: string;
  updated_at: string;
  revision: number;
  last_rotated_at: string | null;
  next_rotation_at: string | null;
  last_rotation_error: string | null;
  expired_finding_at: string | null;
  secret: string | null;
  pending_secret: string | null;
}

/** Engine admin secrets rotated by Writ; sealed JSON. */
export interface EngineSecretsTable {
  engine: string;
  current_secret: string | null;
  next_secret: string | null;
  next_at: string | null;
  rotated_at: string;
  revision: number;
}
