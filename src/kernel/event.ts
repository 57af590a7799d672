/**
 * The event envelope every context writes into the audit log.
 *
 * Names are `<entity>.<past-tense>` (`svid.issued`, `lease.revoked`,
 * `admin.principal.created`); reasons are kebab-case.
 */

/** Who did it. */
export interface AuditActor {
  /** `admin` (an admin principal), `workload`, `agent`, `node`, `system`, `anonymous`. */
  readonly type: 'admin' | 'workload' | 'agent' | 'node' | 'system' | 'anonymous';
  /** Stable id: principal id, SPIFFE ID, `writ` for the system itself. */
  readonly id: string;
  /** Display name, when there is one. */
  readonly name?: string;
  /** Admin role, for admin principals. */
  readonly role?: string;
  /** Network source, when the action came over the network. */
  readonly ip?: string;
}

/** What it was done to. */
export interface AuditTarget {
  readonly type: string;
  readonly id: string;
  readonly name?: string;
}

/** How it ended. `denied` is a refusal by policy or authorization; `failure` an error. */
export type AuditOutcome = 'success' | 'failure' | 'denied';

/** An event as a context hands it to the {@link AuditSink}. */
export interface AuditEventInput {
  /** `<entity>.<past-tense>`, e.g. `admin.principal.created`. */
  readonly action: string;
  readonly actor: AuditActor;
  readonly target?: AuditTarget;
  readonly outcome: AuditOutcome;
  /** Kebab-case reasons, most important first. */
  readonly reasons?: readonly string[];
  /** Joins every event of one unit of work (W3C trace id when present). */
  readonly correlationId: string;
  /** Free-form detail. Secret-named fields and `Secret` values are redacted before storage. */
  readonly details?: Readonly<Record<string, unknown>>;
  /** ISO-8601 time the action happened; the sink's clock when absent. */
  readonly time?: string;
}

/** An event as stored: the input plus its place in the chain. */
export interface AuditRecord {
  readonly seq: number;
  readonly time: string;
  readonly action: string;
  readonly actor: AuditActor;
  readonly target?: AuditTarget;
  readonly outcome: AuditOutcome;
  readonly reasons: readonly string[];
  readonly correlationId: string;
  readonly details: Readonly<Record<string, unknown>>;
  /** Hex SHA-256 of the previous record (64 zeros for the first). */
  readonly prevHash: string;
  /** Hex SHA-256 of this record: SHA-256(prev_hash || seq || canonical event). */
  readonly hash: string;
}

/**
 * Port: where contexts send audit events. `append` resolves only once the
 * event is durable, so a caller that acknowledges after it never loses it.
 *
 * @example
 * await sink.append({ action: 'entry.created', actor, outcome: 'success', correlationId });
 */
export interface AuditSink {
  append(event: AuditEventInput): Promise<AuditRecord>;
}
