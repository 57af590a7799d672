/**
 * Revocation events: validation of untrusted input, and the one codec every
 * bus adapter uses on the wire, so all three carry the same shape.
 */
import { randomUUID } from 'node:crypto';
import { SpiffeId } from '../kernel/index.ts';
import { signalsErrors } from './errors.ts';
import { REVOCATION_KINDS } from './ports.ts';
import type { RevocationEvent, RevocationInput, RevocationKind } from './ports.ts';

const ID = /^[A-Za-z0-9._:@/+-]{1,200}$/;
const KEBAB = /^[a-z0-9]+(?:-[a-z0-9]+)*$/;

function fail(message: string): Error {
  return signalsErrors.error('ERR_SIGNALS_REVOCATION_INVALID', message);
}

/**
 * Check an untrusted revocation (admin API, SSF receiver). `subject-revoked`
 * needs a SPIFFE ID subject; `lease-revoked` a lease id; `token-revoked` a
 * token id; a `subject` given with any kind must be a SPIFFE ID.
 *
 * @example
 * parseRevocation({ kind: 'subject-revoked', subject: 'spiffe://writ.local/ci', reason: 'admin-revoked' });
 */
export function parseRevocation(input: unknown): RevocationInput {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) throw fail('a revocation must be a JSON object');
  const o = input as Record<string, unknown>;
  for (const k of Object.keys(o)) if (!['id', 'kind', 'subject', 'leaseId', 'tokenId', 'reason'].includes(k)) throw fail(`field \`${k.slice(0, 40)}\` is not allowed in a revocation`);
  const kind = o.kind;
  if (typeof kind !== 'string' || !(REVOCATION_KINDS as readonly string[]).includes(kind)) throw fail(`unknown revocation kind; one of ${REVOCATION_KINDS.join(', ')}`);
  const reason = o.reason ?? 'admin-revoked';
  if (typeof reason !== 'string' || reason.length > 64 || !KEBAB.test(reason)) throw fail('`reason` must be kebab-case, at most 64 characters');
  const str = (k: string): string | undefined => {
    const v = o[k];
    if (v === undefined) return undefined;
    if (typeof v !== 'string' || !ID.test(v)) throw fail(`\`${k}\` must be 1-200 characters of letters, digits and . _ : @ / + -`);
    return v;
  };
  const id = str('id');
  const leaseId = str('leaseId');
  const tokenId = str('tokenId');
  let subject: string | undefined;
  if (o.subject !== undefined) {
    const s = typeof o.subject === 'string' ? SpiffeId.tryParse(o.subject) : undefined;
    if (s === undefined) throw fail('`subject` must be a valid SPIFFE ID');
    subject = s.toString();
  }
  if (kind === 'subject-revoked' && subject === undefined) throw fail('`subject-revoked` needs a `subject`');
  if (kind === 'lease-revoked' && leaseId === undefined) throw fail('`lease-revoked` needs a `leaseId`');
  if (kind === 'token-revoked' && tokenId === undefined) throw fail('`token-revoked` needs a `tokenId`');
  return {
    kind: kind as RevocationKind,
    reason,
    ...(id === undefined ? {} : { id }),
    ...(subject === undefined ? {} : { subject }),
    ...(leaseId === undefined ? {} : { leaseId }),
    ...(tokenId === undefined ? {} : { tokenId }),
  };
}

/** The body every adapter stores or sends (everything but the cursor, which the bus assigns). */
export type RevocationBody = Omit<RevocationEvent, 'cursor'>;

/** Fill in id and time. */
export function revocationBody(input: RevocationInput, nowIso: string): RevocationBody {
  return {
    id: input.id ?? randomUUID(),
    kind: input.kind,
    ...(input.subject === undefined ? {} : { subject: input.subject }),
    ...(input.leaseId === undefined ? {} : { leaseId: input.leaseId }),
    ...(input.tokenId === undefined ? {} : { tokenId: input.tokenId }),
    at: input.at ?? nowIso,
    reason: input.reason,
  };
}

/** Encode for the wire (JSON). */
export function encodeRevocation(body: RevocationBody): string {
  return JSON.stringify(body);
}

/** Decode what an adapter stored, adding the cursor. Throws TypeError on corrupt data (our own writes). */
export function decodeRevocation(text: string, cursor: number): RevocationEvent {
  const o = JSON.parse(text) as Record<string, unknown>;
  if (typeof o.id !== 'string' || typeof o.kind !== 'string' || typeof o.at !== 'string' || typeof o.reason !== 'string') throw new TypeError('stored revocation is corrupt');
  if (!(REVOCATION_KINDS as readonly string[]).includes(o.kind)) throw new TypeError('stored revocation has an unknown kind');
  return {
    id: o.id,
    cursor,
    kind: o.kind as RevocationKind,
    ...(typeof o.subject === 'string' ? { subject: o.subject } : {}),
    ...(typeof o.leaseId === 'string' ? { leaseId: o.leaseId } : {}),
    ...(typeof o.tokenId === 'string' ? { tokenId: o.tokenId } : {}),
    at: o.at,
    reason: o.reason,
  };
}

/**
 * Delivery within one subscription: in cursor order, each cursor once, and a
 * repeated id (a re-published event) never twice. Adapters push what they read
 * through it, so a replay that overlaps what was already delivered is harmless.
 *
 * @example
 * const d = new OrderedDelivery(0, handler, onError);
 * await d.offer(event);
 */
export class OrderedDelivery {
  #last: number;
  readonly #handler: (e: RevocationEvent) => void | Promise<void>;
  readonly #onError: (err: unknown) => void;
  readonly #seenIds = new Set<string>();
  readonly #idOrder: string[] = [];
  static readonly ID_MEMORY = 10_000;

  constructor(fromCursor: number, handler: (e: RevocationEvent) => void | Promise<void>, onError: (err: unknown) => void) {
    this.#last = fromCursor;
    this.#handler = handler;
    this.#onError = onError;
  }

  /** The last cursor delivered (or the starting cursor). */
  get last(): number {
    return this.#last;
  }

  /** Deliver `e` unless its cursor or id was already delivered. */
  async offer(e: RevocationEvent): Promise<void> {
    if (e.cursor <= this.#last) return;
    this.#last = e.cursor;
    if (this.#seenIds.has(e.id)) return;
    this.#seenIds.add(e.id);
    this.#idOrder.push(e.id);
    if (this.#idOrder.length > OrderedDelivery.ID_MEMORY) {
      const old = this.#idOrder.shift();
      if (old !== undefined) this.#seenIds.delete(old);
    }
    try {
      await this.#handler(e);
    } catch (err) {
      this.#onError(err);
    }
  }
}
