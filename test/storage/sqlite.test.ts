import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openStore } from '../../src/storage/index.ts';
import { storeConformance } from './conformance.ts';
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { prepareEvent, toEventBody, verifyChain } from '../../src/audit/index.ts';
import { SqliteAuditAppender } from '../../src/storage/sqlite/audit-appender.ts';

let dir = '';
storeConformance('sqlite (file)', {
  offThreadAudit: true,
  async open() {
    dir = mkdtempSync(join(tmpdir(), 'writ-sqlite-'));
    const s = await openStore({ url: '', dataDir: dir });
    await s.migrate();
    return s;
  },
  // No in-process peer: node:sqlite is synchronous, so a second connection in
  // the same thread would block on the first one's lock. Two processes sharing
  // one file are covered by BEGIN IMMEDIATE plus the busy timeout.
  async cleanup() {
    rmSync(dir, { recursive: true, force: true });
  },
});

storeConformance('memory (sqlite in memory)', {
  async open() {
    const s = await openStore({ url: 'sqlite::memory:', dataDir: '' });
    await s.migrate();
    return s;
  },
});

describe('sqlite audit worker', () => {
  it('a file store commits audit batches on a worker; in memory and read-only stores do not', async () => {
    const d = mkdtempSync(join(tmpdir(), 'writ-sqlite-w-'));
    try {
      const s = await openStore({ url: '', dataDir: d });
      await s.migrate();
      assert.equal(typeof s.appendInOrder, 'function');
      const ro = await openStore({ url: '', dataDir: d, readOnly: true });
      assert.equal(ro.appendInOrder, undefined);
      await ro.close();
      const mem = await openStore({ url: 'sqlite::memory:', dataDir: '' });
      assert.equal(mem.appendInOrder, undefined);
      await mem.close();
      await s.close();
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });

  it('a worker that cannot start fails the batches posted to it, and the next append tries a new one', async () => {
    const d = mkdtempSync(join(tmpdir(), 'writ-sqlite-w-'));
    // A database without the audit tables: the worker dies preparing its statements.
    const appender = new SqliteAuditAppender(join(d, 'empty.db'));
    try {
      const body = toEventBody({ action: 'test.appended', actor: { type: 'system', id: 'w' }, outcome: 'success', correlationId: 'c1' }, '2026-01-01T00:00:00.000Z');
      await assert.rejects(appender.append([prepareEvent(body)]), /no such table: audit_head/);
      await assert.rejects(appender.append([prepareEvent(body)]), /no such table: audit_head/);
    } finally {
      await appender.close();
      rmSync(d, { recursive: true, force: true });
    }
  });

  it('close waits for the batches posted, then appends are refused', async () => {
    const d = mkdtempSync(join(tmpdir(), 'writ-sqlite-w-'));
    try {
      const s = await openStore({ url: '', dataDir: d });
      await s.migrate();
      const appendInOrder = s.appendInOrder;
      assert.ok(appendInOrder !== undefined);
      const body = toEventBody({ action: 'test.appended', actor: { type: 'system', id: 'w' }, outcome: 'success', correlationId: 'c1' }, '2026-01-01T00:00:00.000Z');
      const posted = appendInOrder([prepareEvent(body), prepareEvent(body)]);
      await s.close();
      assert.deepEqual((await posted).map((r) => r.seq), [1, 2]);
      await assert.rejects(appendInOrder([prepareEvent(body)]), { message: 'the audit worker is closed' });
      const again = await openStore({ url: '', dataDir: d, readOnly: true });
      assert.deepEqual(await verifyChain(again), { ok: true, checked: 2, headSeq: 2, headHash: (await again.head()).hash }, 'both rows are durable and chained');
      await again.close();
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });
});
