/**
 * In-memory {@link CaKeyStore} for tests and single-process experiments.
 * Records are deep-copied in and out, as a real store would serialize them.
 */
import type { CaKeyStore, StoredCaKey } from './ports.ts';

/**
 * @example
 * const store = new MemoryCaKeyStore();
 * await store.put(record);
 */
export class MemoryCaKeyStore implements CaKeyStore {
  readonly #keys = new Map<string, Map<string, StoredCaKey>>();
  readonly #sequences = new Map<string, number>();
  /** Every record written, in order (serialized), for assertions. */
  readonly writes: string[] = [];

  async list(trustDomain: string): Promise<readonly StoredCaKey[]> {
    return [...(this.#keys.get(trustDomain)?.values() ?? [])].map((k) => structuredClone(k));
  }

  async put(key: StoredCaKey): Promise<void> {
    let td = this.#keys.get(key.trustDomain);
    if (td === undefined) {
      td = new Map();
      this.#keys.set(key.trustDomain, td);
    }
    this.writes.push(JSON.stringify(key));
    td.set(key.id, structuredClone(key));
  }

  async delete(trustDomain: string, id: string): Promise<void> {
    this.#keys.get(trustDomain)?.delete(id);
  }

  async readSequence(trustDomain: string): Promise<number> {
    return this.#sequences.get(trustDomain) ?? 0;
  }

  async writeSequence(trustDomain: string, sequence: number): Promise<void> {
    this.#sequences.set(trustDomain, sequence);
  }
}
