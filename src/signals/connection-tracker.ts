/**
 * The hook long-lived connections hang on: an enforcement point (the proxy's
 * keep-alive connections, MCP sessions, streams) registers each open
 * connection under the subject, lease and token it was authorized with, and
 * feeds every revocation event to {@link RevocationConnectionTracker.apply},
 * which closes the connections the event takes away. `subject-revoked`
 * closes everything of the subject, `lease-revoked`/`token-revoked` what was
 * opened with that credential; `policy-changed` and `signal` close nothing
 * here (the point re-decides on its next request).
 */
import type { RevocationEvent } from './ports.ts';

/** What an open connection was authorized with. */
export interface HeldBy {
  readonly subject?: string;
  readonly leaseId?: string;
  readonly tokenId?: string;
}

interface Entry {
  readonly by: HeldBy;
  readonly close: (reason: string) => void;
}

/**
 * @example
 * const tracker = new RevocationConnectionTracker();
 * const untrack = tracker.track({ subject: spiffeId, tokenId: jti }, (reason) => socket.destroy(new Error(reason)));
 * socket.once('close', untrack);
 * new RevocationStreamClient({ url, token, clock, stalenessMs, onEvent: (e) => tracker.apply(e) }).start();
 */
export class RevocationConnectionTracker {
  readonly #open = new Set<Entry>();

  /** Register an open connection; the returned function forgets it (call it when the connection closes). */
  track(by: HeldBy, close: (reason: string) => void): () => void {
    const entry: Entry = { by: { ...by }, close };
    this.#open.add(entry);
    return () => {
      this.#open.delete(entry);
    };
  }

  /** Open connections tracked. */
  get size(): number {
    return this.#open.size;
  }

  /** Close every connection the event takes away; returns how many. A close that throws is still forgotten. */
  apply(e: RevocationEvent): number {
    const hit = (b: HeldBy): boolean => {
      switch (e.kind) {
        case 'subject-revoked':
          return e.subject !== undefined && b.subject === e.subject;
        case 'lease-revoked':
          return e.leaseId !== undefined && b.leaseId === e.leaseId;
        case 'token-revoked':
          return e.tokenId !== undefined && b.tokenId === e.tokenId;
        case 'policy-changed':
        case 'signal':
          return false;
      }
    };
    let n = 0;
    for (const entry of [...this.#open]) {
      if (!hit(entry.by)) continue;
      this.#open.delete(entry);
      n += 1;
      try {
        entry.close(`${e.kind}:${e.reason}`);
      } catch {
        // The connection was already gone.
      }
    }
    return n;
  }
}
