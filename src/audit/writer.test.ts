import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock, Secret } from '../kernel/index.ts';
import type { AuditEventInput, AuditRecord } from '../kernel/index.ts';
import { AuditWriter, OFF_THREAD_LANES, OFF_THREAD_MIN_BATCH } from './writer.ts';
import { verifyChain } from './verify.ts';
import { chainHash, GENESIS_HASH } from './chain.ts';
import { InOrderMemoryAuditStore, MemoryAuditStore } from './memory-store.test-support.ts';

const clock = new ManualClock(Date.parse('2026-11-22T12:00:00.000Z'));
const opts = { flushEvents: 100, flushDelayMs: 2, maxBatchEvents: 1000, queueLimit: 10_000 };

function ev(i: number, extra: Partial<AuditEventInput> = {}): AuditEventInput {
  return { action: 'test.appended', actor: { type: 'system', id: 'writ' }, outcome: 'success', correlationId: `corr-${i}`, details: { i }, ...extra };
}

describe('AuditWriter', () => {
  it('resolves each append with its sealed record, in order, chained from genesis', async () => {
    const store = new MemoryAuditStore();
    const w = new AuditWriter(store, clock, opts);
    const recs = await Promise.all([w.append(ev(1)), w.append(ev(2)), w.append(ev(3))]);
    assert.deepEqual(recs.map((r) => r.seq), [1, 2, 3]);
    assert.equal(recs[0]?.prevHash, GENESIS_HASH);
    assert.equal(recs[1]?.prevHash, recs[0]?.hash);
    assert.equal(recs[0]?.time, '2026-11-22T12:00:00.000Z');
    assert.equal(recs[0]?.hash, chainHash(GENESIS_HASH, 1, store.rows[0]?.event ?? ''));
    assert.equal(store.commits, 1, 'three events under the threshold share one commit after the delay');
    await w.close();
  });

  it('an idle writer gathers a batch for flushDelayMs; right after a write it does not idle', async () => {
    const store = new MemoryAuditStore();
    // A delay no test waits for: only the under-load path can write the second batch.
    const w = new AuditWriter(store, clock, { ...opts, flushDelayMs: 1_000_000 });
    const first = w.append(ev(1));
    for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
    assert.equal(store.commits, 0, 'an idle writer waits for more events');
    void w.flush();
    await first;
    // As a caller blocked on the previous write does: the next event comes right after it.
    const second = w.append(ev(2));
    let guard: NodeJS.Timeout | undefined;
    const rec = await Promise.race([second, new Promise<never>((_, reject) => {
      guard = setTimeout(() => reject(new Error('the second batch waited for flushDelayMs')), 60_000);
    })]);
    clearTimeout(guard);
    assert.equal(rec.seq, 2);
    assert.equal(store.commits, 2);
    await w.close();
  });

  it('group commit: while one batch is written, the next gathers everything that arrived', async () => {
    const store = new MemoryAuditStore();
    store.commitDelayMs = 20;
    const w = new AuditWriter(store, clock, { ...opts, flushEvents: 10 });
    const all = Array.from({ length: 500 }, (_, i) => w.append(ev(i)));
    await Promise.all(all);
    assert.ok(store.commits <= 3, `500 events took ${store.commits} commits`);
    assert.equal(w.stats.appended, 500);
    assert.equal((await verifyChain(store)).ok, true);
    await w.close();
  });

  it('under load, the next batch waits one turn so the callers just served join the events already waiting', async () => {
    const store = new MemoryAuditStore();
    store.commitDelayMs = 20;
    const w = new AuditWriter(store, clock, { ...opts, flushEvents: 20, flushDelayMs: 1_000_000 });
    // Twenty callers, each appending a second event as soon as its first is durable.
    const first = Array.from({ length: 20 }, (_, i) => w.append(ev(i)).then(() => w.append(ev(100 + i))));
    // While the first batch is written, twenty more arrive: flushEvents wait.
    await new Promise((r) => setImmediate(r));
    assert.equal(store.commits, 0, 'the first batch is still being written');
    const waiting = Array.from({ length: 20 }, (_, i) => w.append(ev(200 + i)));
    await Promise.all([...first, ...waiting]);
    assert.equal(store.commits, 2, 'the twenty waiting and the twenty follow-ups share the second commit');
    assert.equal(w.stats.lastBatchSize, 40);
    assert.equal((await verifyChain(store)).ok, true);
    await w.close();
  });

  it('flush resolves only once events queued during a running write are durable too', async () => {
    const store = new MemoryAuditStore();
    store.commitDelayMs = 20;
    const w = new AuditWriter(store, clock, { ...opts, flushEvents: 1, flushDelayMs: 1_000_000 });
    const a = w.append(ev(1));
    await new Promise((r) => setImmediate(r));
    const b = w.append(ev(2));
    await w.flush();
    assert.equal(store.rows.length, 2, 'both events are stored when flush resolves');
    assert.deepEqual([(await a).seq, (await b).seq], [1, 2]);
    await w.close();
  });

  it('a store that commits off the event loop gets the batches through appendInOrder, chained in append order', async () => {
    const store = new InOrderMemoryAuditStore();
    store.commitDelayMs = 5;
    const w = new AuditWriter(store, clock, opts);
    const recs = await Promise.all(Array.from({ length: 50 }, (_, i) => w.append(ev(i))));
    assert.deepEqual(recs.map((r) => r.seq), Array.from({ length: 50 }, (_, i) => i + 1));
    assert.deepEqual(recs.map((r) => r.details.i), Array.from({ length: 50 }, (_, i) => i));
    assert.equal(store.sealedCalls, 0);
    assert.ok(store.inOrderCalls >= 1);
    assert.equal((await verifyChain(store)).ok, true);
    await w.close();
  });

  it('with an off-thread store, a batch that queued during a write is handed over right after it, without waiting a turn', async () => {
    const store = new InOrderMemoryAuditStore();
    store.commitDelayMs = 20;
    const w = new AuditWriter(store, clock, { ...opts, flushEvents: 20, flushDelayMs: 1_000_000 });
    const first = Array.from({ length: 20 }, (_, i) => w.append(ev(i)));
    await new Promise((r) => setImmediate(r));
    const second = Array.from({ length: 20 }, (_, i) => w.append(ev(100 + i)));
    // The next batch is handed over when the first resolves, in the same turn: the store then
    // commits while the callers just served go on (the event loop is not blocked by the commit).
    let handedOver = -1;
    void (first[0] as Promise<unknown>).then(() => {
      handedOver = store.inOrderCalls;
    });
    await Promise.all(first);
    assert.equal(handedOver, 2, 'the second batch was handed over before the first caller resumed');
    assert.deepEqual((await Promise.all(second)).map((r) => r.seq), Array.from({ length: 20 }, (_, i) => 21 + i));
    assert.equal(store.sealedCalls, 0);
    await w.close();
  });

  it('with an off-thread store, full batches gathered while one commits are posted at once, behind it (up to OFF_THREAD_LANES), and chain after it', async () => {
    const store = new InOrderMemoryAuditStore();
    store.commitDelayMs = 30;
    const n = OFF_THREAD_MIN_BATCH + 4;
    const w = new AuditWriter(store, clock, { ...opts, flushEvents: n, maxBatchEvents: n, flushDelayMs: 1_000_000 });
    const first = Array.from({ length: n }, (_, i) => w.append(ev(i)));
    assert.equal(store.inOrderCalls, 1, 'the first full batch went at once');
    const behind: Promise<AuditRecord>[] = [];
    for (let b = 1; b <= OFF_THREAD_LANES; b++) {
      behind.push(...Array.from({ length: n }, (_, i) => w.append(ev(b * 100 + i))));
      assert.equal(store.inOrderCalls, 1 + b, `full batch ${b} is posted while the first still commits`);
    }
    const waiting = Array.from({ length: n + 3 }, (_, i) => w.append(ev(10_000 + i)));
    assert.equal(store.inOrderCalls, 1 + OFF_THREAD_LANES, 'beyond OFF_THREAD_LANES batches in flight, the rest waits for the loop');
    const recs = await Promise.all([...first, ...behind, ...waiting]);
    assert.deepEqual(recs.map((r) => r.seq), Array.from({ length: recs.length }, (_, i) => i + 1));
    assert.equal(store.sealedCalls, 0);
    assert.equal((await verifyChain(store)).ok, true);
    await w.close();
  });

  it('with an off-thread store, a lone caller\'s small batches are committed on its thread, large ones and the next after them off it', async () => {
    const store = new InOrderMemoryAuditStore();
    const w = new AuditWriter(store, clock, opts);
    // Between the groups the writer goes idle, so each group gathers into one batch.
    const idle = async () => {
      for (let i = 0; i < 3; i++) await new Promise((r) => setImmediate(r));
    };
    const lone = await w.append(ev(1));
    await idle();
    const few = await Promise.all(Array.from({ length: OFF_THREAD_MIN_BATCH - 1 }, (_, i) => w.append(ev(10 + i))));
    await idle();
    const many = await Promise.all(Array.from({ length: OFF_THREAD_MIN_BATCH }, (_, i) => w.append(ev(100 + i))));
    assert.deepEqual([store.sealedCalls, store.inOrderCalls], [2, 1]);
    assert.deepEqual([lone.seq, few.at(-1)?.seq, many.at(-1)?.seq], [1, OFF_THREAD_MIN_BATCH, 2 * OFF_THREAD_MIN_BATCH]);
    // Right after a large batch a small one still goes off the thread; after a small one, not.
    await idle();
    await w.append(ev(200));
    assert.deepEqual([store.sealedCalls, store.inOrderCalls], [2, 2]);
    await idle();
    await w.append(ev(201));
    assert.deepEqual([store.sealedCalls, store.inOrderCalls], [3, 2]);
    assert.equal((await verifyChain(store)).ok, true, 'batches taken either way chain in append order');
    await w.close();
  });

  it('a batch larger than maxBatchEvents is split into several commits', async () => {
    const store = new MemoryAuditStore();
    const w = new AuditWriter(store, clock, { ...opts, flushEvents: 1000, maxBatchEvents: 50, flushDelayMs: 1 });
    await Promise.all(Array.from({ length: 120 }, (_, i) => w.append(ev(i))));
    assert.equal(store.commits, 3);
    await w.close();
  });

  it('a failed commit rejects every event of that batch with ERR_AUDIT_WRITE_FAILED, and the writer goes on', async () => {
    const store = new MemoryAuditStore();
    store.failNext = new Error('disk full');
    const w = new AuditWriter(store, clock, opts);
    const results = await Promise.allSettled([w.append(ev(1)), w.append(ev(2))]);
    for (const r of results) {
      assert.equal(r.status, 'rejected');
      assert.equal((r as PromiseRejectedResult).reason.code, 'ERR_AUDIT_WRITE_FAILED');
      assert.equal((r as PromiseRejectedResult).reason.message, 'audit batch could not be written');
    }
    const ok = await w.append(ev(3));
    assert.equal(ok.seq, 1, 'nothing of the failed batch was kept');
    assert.equal(w.stats.failed, 2);
    await w.close();
  });

  it('refuses events beyond the queue limit with ERR_AUDIT_QUEUE_FULL rather than growing', async () => {
    const store = new MemoryAuditStore();
    store.commitDelayMs = 30;
    const w = new AuditWriter(store, clock, { ...opts, queueLimit: 100, flushEvents: 100_000, flushDelayMs: 1000 });
    const accepted = Array.from({ length: 100 }, (_, i) => w.append(ev(i)));
    await assert.rejects(w.append(ev(101)), { code: 'ERR_AUDIT_QUEUE_FULL', message: 'audit queue holds 100 events, the limit' });
    await w.flush();
    await Promise.all(accepted);
    await w.close();
  });

  it('close writes what is queued, then refuses with ERR_AUDIT_WRITER_CLOSED', async () => {
    const store = new MemoryAuditStore();
    const w = new AuditWriter(store, clock, { ...opts, flushDelayMs: 1000 });
    const p = w.append(ev(1));
    await w.close();
    assert.equal((await p).seq, 1);
    await assert.rejects(w.append(ev(2)), { code: 'ERR_AUDIT_WRITER_CLOSED', message: 'audit writer is closed' });
  });

  it('never stores a secret: Secret values and secret-named fields are redacted', async () => {
    const store = new MemoryAuditStore();
    const w = new AuditWriter(store, clock, opts);
    await w.append(ev(1, { details: { token: 'tok-should-not-appear', nested: { password: 'pw-should-not-appear', note: new Secret('sec-should-not-appear') }, keep: 'visible' } }));
    await w.close();
    const stored = JSON.stringify(store.rows);
    for (const s of ['tok-should-not-appear', 'pw-should-not-appear', 'sec-should-not-appear']) assert.ok(!stored.includes(s), `${s} leaked`);
    assert.ok(stored.includes('visible'));
  });

  it('refuses malformed events with ERR_AUDIT_EVENT_INVALID', async () => {
    const w = new AuditWriter(new MemoryAuditStore(), clock, opts);
    await assert.rejects(w.append(ev(1, { action: 'NoDots' })), { code: 'ERR_AUDIT_EVENT_INVALID', message: 'audit action `NoDots` is not <entity>.<past-tense>' });
    await assert.rejects(w.append(ev(1, { reasons: ['Not Kebab'] })), { code: 'ERR_AUDIT_EVENT_INVALID', message: 'audit reason `Not Kebab` is not kebab-case' });
    await assert.rejects(w.append(ev(1, { correlationId: '' })), { code: 'ERR_AUDIT_EVENT_INVALID', message: 'audit correlation id must be 1 to 128 characters' });
    await w.close();
  });
});

describe('verifyChain', () => {
  async function filled(n: number): Promise<MemoryAuditStore> {
    const store = new MemoryAuditStore();
    const w = new AuditWriter(store, clock, opts);
    await Promise.all(Array.from({ length: n }, (_, i) => w.append(ev(i))));
    await w.close();
    return store;
  }

  it('passes an untouched chain and reports its head', async () => {
    const store = await filled(20);
    const r = await verifyChain(store, { pageSize: 7 });
    assert.deepEqual(r, { ok: true, checked: 20, headSeq: 20, headHash: store.headRow.hash });
  });

  const cases: [string, (s: MemoryAuditStore) => void, number, string][] = [
    ['an edited event', (s) => { s.rows[6] = { ...s.rows[6]!, event: s.rows[6]!.event.replace('"i":6', '"i":66') }; }, 7, 'hash-mismatch'],
    ['an edited query column', (s) => { s.rows[4] = { ...s.rows[4]!, action: 'test.forged' }; }, 5, 'column-mismatch'],
    ['a deleted row', (s) => { s.rows.splice(9, 1); }, 10, 'seq-gap'],
    ['an inserted row (renumbered)', (s) => { const forged = { ...s.rows[0]! }; s.rows.splice(3, 0, forged); s.rows = s.rows.map((r, i) => ({ ...r, seq: i + 1 })); }, 4, 'prev-hash-mismatch'],
    ['two rows swapped', (s) => { const a = s.rows[11]!; const b = s.rows[12]!; s.rows[11] = { ...b, seq: a.seq }; s.rows[12] = { ...a, seq: b.seq }; }, 12, 'prev-hash-mismatch'],
    ['a truncated tail', (s) => { s.rows.pop(); }, 20, 'tail-missing'],
  ];
  for (const [name, tamper, bad, reason] of cases) {
    it(`names the first bad seq after ${name}`, async () => {
      const store = await filled(20);
      tamper(store);
      const r = await verifyChain(store, { pageSize: 5 });
      assert.equal(r.ok, false);
      if (r.ok) return;
      assert.equal(r.firstBadSeq, bad);
      assert.equal(r.reason, reason);
    });
  }
});
