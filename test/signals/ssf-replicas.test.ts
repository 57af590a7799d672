/**
 * Two transmitter replicas over one store and one bus (as server replicas
 * share PostgreSQL and the bus): each hears every revocation, yet each SET is
 * queued once per stream (its `jti` comes from the revocation and stream
 * ids), and a push SET is sent once (a replica claims it before trying).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { systemClock } from '../../src/kernel/index.ts';
import type { AuditEventInput, AuditRecord } from '../../src/kernel/index.ts';
import { InProcessRevocationBus, SetSigner, SsfStreams, SSF_PUSH } from '../../src/signals/index.ts';
import type { StreamCaller } from '../../src/signals/index.ts';
import { openStore } from '../../src/storage/index.ts';
import { KeyEncryptionKey } from '../../src/identity/index.ts';
import { kekSealer } from '../../src/server/index.ts';

const audit = {
  events: [] as AuditEventInput[],
  async append(e: AuditEventInput): Promise<AuditRecord> {
    this.events.push(e);
    return { seq: this.events.length, time: '', action: e.action, actor: e.actor, outcome: e.outcome, reasons: [], correlationId: e.correlationId, details: {}, prevHash: '', hash: '' };
  },
};
const caller: StreamCaller = { id: 'adm_rx', admin: false, actor: { type: 'admin', id: 'adm_rx' }, correlationId: 'cid' };

test('two replicas: one queued SET per revocation and stream; one push per SET', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'writ-ssf-replicas-'));
  const store = await openStore({ url: '', dataDir: dir });
  await store.migrate();
  const bus = new InProcessRevocationBus(systemClock);
  const pushes: string[] = [];
  const receiver = createServer((req, res) => {
    let b = '';
    req.on('data', (c: Buffer) => (b += c.toString()));
    req.on('end', () => {
      pushes.push(b);
      res.writeHead(202).end();
    });
  });
  await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
  const addr = receiver.address();
  const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
  // Replicas share the store, so they share the key-encryption key too.
  const sealer = kekSealer(new KeyEncryptionKey(randomBytes(32)));
  const replicas = await Promise.all([0, 1].map(async () => {
    const signer = await SetSigner.generate();
    const s = new SsfStreams({ store: store.ssf, sealer, signer: async () => signer, audit, clock: systemClock, sweepMs: 50 });
    s.setIssuer('https://writ.example');
    await s.start(bus);
    return s;
  }));
  const [a, b] = replicas as [SsfStreams, SsfStreams];
  try {
    const poll = (await a.create(caller, {})) as { stream_id: string };
    const push = (await b.create(caller, { delivery: { method: SSF_PUSH, endpoint_url: `http://127.0.0.1:${port}/events` } })) as { stream_id: string };
    for (let i = 0; i < 5; i++) await bus.publish({ kind: 'subject-revoked', subject: `spiffe://writ.local/svc/r${i}`, reason: 'posture-failed' });
    const end = Date.now() + 15_000;
    let sets: Record<string, string> = {};
    while (Date.now() < end) {
      sets = (await b.poll(caller, poll.stream_id, { returnImmediately: true })).sets;
      if (Object.keys(sets).length >= 5 && pushes.length >= 5) break;
      await new Promise((r) => setTimeout(r, 25));
    }
    assert.equal(Object.keys(sets).length, 5, 'five SETs on the poll stream, not ten');
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(pushes.length, 5, 'five pushes, not ten');
    assert.equal(new Set(pushes).size, 5);
    assert.deepEqual(await store.ssf.dueSets(push.stream_id, '9999-12-31T00:00:00.000Z', 10), [], 'every push SET left the queue');
  } finally {
    await a.close();
    await b.close();
    await bus.close();
    await new Promise<void>((r) => receiver.close(() => r()));
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
