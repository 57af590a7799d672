import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { chainHash, seal, GENESIS_HASH } from './chain.ts';
import type { SealInput } from './ports.ts';

/** The rule written out the slow way: SHA-256(prev 32 bytes || seq u64 BE || UTF-8 event). */
function reference(prevHex: string, seq: number, canonical: string): string {
  const seqBytes = Buffer.alloc(8);
  seqBytes.writeBigUInt64BE(BigInt(seq));
  return createHash('sha256').update(Buffer.concat([Buffer.from(prevHex, 'hex'), seqBytes, Buffer.from(canonical, 'utf8')])).digest('hex');
}

function input(i: number): SealInput {
  return { canonical: `{"action":"api.called","n":${i},"s":"é✓"}`, body: { time: '2026-11-22T00:00:00.000Z', action: 'api.called', outcome: 'success', actor: { id: `a${i}` }, correlationId: `c${i}` } };
}

describe('hash chain', () => {
  it('chainHash follows SHA-256(prev_hash || seq || canonical event), seq as 64-bit big-endian', () => {
    for (const seq of [1, 255, 2 ** 32 - 1, 2 ** 32, 2 ** 40 + 7, Number.MAX_SAFE_INTEGER]) {
      assert.equal(chainHash(GENESIS_HASH, seq, 'x'), reference(GENESIS_HASH, seq, 'x'), `seq ${seq}`);
    }
    assert.equal(chainHash('ab'.repeat(32), 3, '{"é":1}'), reference('ab'.repeat(32), 3, '{"é":1}'));
  });

  it('seal chains each row from the one before, as chainHash computes it', () => {
    const head = { seq: 2 ** 32 - 2, hash: 'cd'.repeat(32) };
    const rows = seal(head, [input(1), input(2), input(3)]);
    let prev = head.hash;
    rows.forEach((r, i) => {
      assert.equal(r.seq, head.seq + i + 1);
      assert.equal(r.prevHash, prev);
      assert.equal(r.hash, reference(prev, r.seq, r.event));
      assert.equal(r.actorId, `a${i + 1}`);
      assert.equal(r.correlationId, `c${i + 1}`);
      prev = r.hash;
    });
  });

  it('refuses a malformed head or seq', () => {
    assert.throws(() => seal({ seq: 0, hash: 'XYZ' }, [input(1)]), { name: 'TypeError', message: 'prev hash must be 64 hex digits' });
    assert.throws(() => seal({ seq: -1, hash: GENESIS_HASH }, [input(1)]), { name: 'TypeError', message: 'head seq must be a non-negative integer with room for the batch' });
    assert.throws(() => seal({ seq: Number.MAX_SAFE_INTEGER, hash: GENESIS_HASH }, [input(1)]), { name: 'TypeError', message: 'head seq must be a non-negative integer with room for the batch' });
    assert.throws(() => chainHash(GENESIS_HASH, 0, 'x'), { name: 'TypeError', message: 'seq must be a positive integer' });
    assert.throws(() => chainHash('0'.repeat(63), 1, 'x'), { name: 'TypeError', message: 'prev hash must be 64 hex digits' });
  });
});
