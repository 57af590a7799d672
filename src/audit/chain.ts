/**
 * The hash chain: `hash = SHA-256(prev_hash || seq || canonical event)`, where
 * prev_hash is the previous row's 32 raw hash bytes (32 zero bytes before the
 * first row), seq is an unsigned 64-bit big-endian integer and the canonical
 * event is the UTF-8 of the event body in canonical JSON (sorted keys).
 */
import { createHash } from 'node:crypto';
import { canonicalJson, redact } from '../kernel/index.ts';
import type { AuditEventInput, AuditRecord, AuditActor, AuditTarget } from '../kernel/index.ts';
import type { ChainHead, SealInput, StoredAuditRow } from './ports.ts';
import { auditErrors } from './errors.ts';

/** prev_hash of the first row. */
export const GENESIS_HASH = '0'.repeat(64);

/** The part of an event that is hashed and stored as canonical JSON: a record without its place in the chain. */
export type AuditEventBody = Omit<AuditRecord, 'seq' | 'prevHash' | 'hash'>;

const ACTION = /^[a-z][a-z0-9_-]*(?:\.[a-z][a-z0-9_-]*)+$/;
const REASON = /^[a-z0-9]+(?:-[a-z0-9]+)*$/;
const OUTCOMES = new Set(['success', 'failure', 'denied']);

/**
 * Validate an event and turn it into its stored body: secret-named fields and
 * `Secret` values in `details` (and the actor/target) become `[redacted]`.
 *
 * @example
 * const body = toEventBody(input, new Date().toISOString());
 */
export function toEventBody(input: AuditEventInput, now: string): AuditEventBody {
  if (!ACTION.test(input.action)) throw auditErrors.error('ERR_AUDIT_EVENT_INVALID', `audit action \`${input.action}\` is not <entity>.<past-tense>`);
  if (!OUTCOMES.has(input.outcome)) throw auditErrors.error('ERR_AUDIT_EVENT_INVALID', `audit outcome \`${String(input.outcome)}\` is not success, failure or denied`);
  for (const r of input.reasons ?? []) {
    if (!REASON.test(r)) throw auditErrors.error('ERR_AUDIT_EVENT_INVALID', `audit reason \`${r}\` is not kebab-case`);
  }
  if (typeof input.correlationId !== 'string' || input.correlationId.length === 0 || input.correlationId.length > 128) {
    throw auditErrors.error('ERR_AUDIT_EVENT_INVALID', 'audit correlation id must be 1 to 128 characters');
  }
  const body: AuditEventBody = {
    time: input.time ?? now,
    action: input.action,
    actor: redact(input.actor) as AuditActor,
    ...(input.target === undefined ? {} : { target: redact(input.target) as AuditTarget }),
    outcome: input.outcome,
    reasons: [...(input.reasons ?? [])],
    correlationId: input.correlationId,
    details: (redact(input.details ?? {}) ?? {}) as Record<string, unknown>,
  };
  return body;
}

const HEX64 = /^[0-9a-f]{64}$/;

/** SHA-256(prev_hash || seq || canonical event) over the raw previous hash; `seqBytes` is scratch space. */
function linkDigest(prevRaw: Buffer, seq: number, canonicalEvent: string, seqBytes: Buffer): Buffer {
  // seq as an unsigned 64-bit big-endian integer, without a BigInt per row (seq is a safe integer).
  seqBytes.writeUInt32BE(Math.floor(seq / 0x1_0000_0000), 0);
  seqBytes.writeUInt32BE(seq >>> 0, 4);
  return createHash('sha256').update(prevRaw).update(seqBytes).update(canonicalEvent, 'utf8').digest();
}

/** SHA-256(prev_hash || seq || canonical event), hex. */
export function chainHash(prevHash: string, seq: number, canonicalEvent: string): string {
  if (!HEX64.test(prevHash)) throw new TypeError('prev hash must be 64 hex digits');
  if (!Number.isSafeInteger(seq) || seq < 1) throw new TypeError('seq must be a positive integer');
  return linkDigest(Buffer.from(prevHash, 'hex'), seq, canonicalEvent, Buffer.allocUnsafe(8)).toString('hex');
}

/** A body already serialized, ready to be sealed. */
export interface PendingEvent {
  readonly body: AuditEventBody;
  readonly canonical: string;
}

/** Serialize a body once, outside the store's lock. */
export function prepareEvent(body: AuditEventBody): PendingEvent {
  return { body, canonical: canonicalJson(body) };
}

/**
 * Chain pending events after `head`.
 *
 * @example
 * const rows = seal({ seq: 0, hash: GENESIS_HASH }, [prepareEvent(body)]);
 */
export function seal(head: ChainHead, events: readonly SealInput[]): StoredAuditRow[] {
  const hashes = chainHashes(head, events.map((e) => e.canonical));
  const rows: StoredAuditRow[] = new Array<StoredAuditRow>(events.length);
  let prev = head.hash;
  for (let i = 0; i < events.length; i++) {
    const e = events[i] as SealInput;
    const hash = hashes[i] as string;
    rows[i] = {
      seq: head.seq + i + 1,
      time: e.body.time,
      action: e.body.action,
      outcome: e.body.outcome,
      actorId: e.body.actor.id,
      correlationId: e.body.correlationId,
      event: e.canonical,
      prevHash: prev,
      hash,
    };
    prev = hash;
  }
  return rows;
}

/**
 * The hashes of canonical events chained after `head`, in order: the chain
 * alone, with no rows built (what {@link seal} computes, and the floor the
 * audit benchmark measures).
 *
 * @example
 * const [h1, h2] = chainHashes({ seq: 0, hash: GENESIS_HASH }, [a.canonical, b.canonical]);
 */
export function chainHashes(head: ChainHead, canonicalEvents: readonly string[]): string[] {
  if (!HEX64.test(head.hash)) throw new TypeError('prev hash must be 64 hex digits');
  if (!Number.isSafeInteger(head.seq) || head.seq < 0 || !Number.isSafeInteger(head.seq + canonicalEvents.length)) throw new TypeError('head seq must be a non-negative integer with room for the batch');
  const out: string[] = new Array<string>(canonicalEvents.length);
  const seqBytes = Buffer.allocUnsafe(8);
  // Each link chains from the previous row's raw digest: no hex round trip per row.
  let prevRaw: Buffer = Buffer.from(head.hash, 'hex');
  for (let i = 0; i < canonicalEvents.length; i++) {
    prevRaw = linkDigest(prevRaw, head.seq + i + 1, canonicalEvents[i] as string, seqBytes);
    out[i] = prevRaw.toString('hex');
  }
  return out;
}

/** Read a stored row back as a record. Throws TypeError on a row whose event is not JSON. */
export function toRecord(row: StoredAuditRow): AuditRecord {
  const body = JSON.parse(row.event) as AuditEventBody;
  return {
    seq: row.seq,
    time: body.time,
    action: body.action,
    actor: body.actor,
    ...(body.target === undefined ? {} : { target: body.target }),
    outcome: body.outcome,
    reasons: body.reasons ?? [],
    correlationId: body.correlationId,
    details: body.details ?? {},
    prevHash: row.prevHash,
    hash: row.hash,
  };
}
