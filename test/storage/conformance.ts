/**
 * The storage conformance suite: one set of behaviours every store adapter
 * must show. Run by sqlite.test.ts, memory.test.ts and postgres.test.ts.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { startRecordingReceiver } from '../support/recording-receiver.ts';
import type { Store } from '../../src/storage/index.ts';
import { seal, prepareEvent, toEventBody, verifyChain, GENESIS_HASH } from '../../src/audit/index.ts';
import type { StoredAuditRow } from '../../src/audit/index.ts';
import type { AdminPrincipalRow } from '../../src/governance/index.ts';
import type { StoredCaKey, RegistrationEntry, JoinTokenRecord, NodeRecord } from '../../src/identity/index.ts';
import type { Lease, LegacyException, Task } from '../../src/credentials/index.ts';
import type { SetKeyRecord, Signal, SignalRecord, StreamCaller, StreamDeliveryReport } from '../../src/signals/index.ts';
import { createLocalJWKSet, jwtVerify } from 'jose';
import { CAEP_SESSION_REVOKED, InProcessRevocationBus, SetSigner, SSF_PUSH, SsfStreams } from '../../src/signals/index.ts';
import { KeyEncryptionKey } from '../../src/identity/index.ts';
import { systemClock } from '../../src/kernel/index.ts';
import type { AuditEventInput, AuditRecord } from '../../src/kernel/index.ts';
import { kekSealer } from '../../src/server/index.ts';

/** How the suite gets a fresh, migrated store, and a second handle on the same data. */
export interface StoreFactory {
  /** A fresh empty store, migrated. */
  open(): Promise<Store>;
  /** A second, independent handle (another pool/connection) on the store `open` returned last, or undefined if the engine cannot share. */
  openPeer?(): Promise<Store>;
  /** Remove what `open` created. */
  cleanup?(): Promise<void>;
  /** Skip the suite, with a reason, when the engine is not reachable. */
  skip?(): Promise<string | undefined>;
  /** The store commits audit batches off the event loop (`appendInOrder`): its tests run only then. */
  readonly offThreadAudit?: boolean;
}

function event(i: number, overrides: Partial<{ action: string; correlationId: string; time: string }> = {}) {
  return prepareEvent(
    toEventBody(
      {
        action: overrides.action ?? 'test.appended',
        actor: { type: 'system', id: 'conformance' },
        outcome: 'success',
        correlationId: overrides.correlationId ?? `c${i}`,
        details: { i, text: 'ünïcødé ✓ "quoted" \\ back', lines: 'one\ntwo\r\n\u2028three' },
        ...(overrides.time === undefined ? {} : { time: overrides.time }),
      },
      new Date(Date.UTC(2026, 0, 1, 0, 0, i)).toISOString(),
    ),
  );
}

function principal(id: string, name: string, role: string): AdminPrincipalRow {
  return { id, name, role, tokenHash: 'a'.repeat(64), createdAt: `2026-01-01T00:00:${id.slice(-2)}.000Z`, createdBy: 'test', revokedAt: null };
}

/**
 * @example
 * storeConformance('sqlite', { open: () => openStore(...) });
 */
export function storeConformance(name: string, factory: StoreFactory): void {
  describe(`storage conformance: ${name}`, () => {
    let store: Store;
    let skipReason: string | undefined;

    before(async () => {
      skipReason = await factory.skip?.();
      if (skipReason !== undefined) return;
      store = await factory.open();
    });
    after(async () => {
      if (skipReason !== undefined) return;
      await store.close();
      await factory.cleanup?.();
    });

    const test = (title: string, fn: () => Promise<void>) =>
      it(title, async (t) => {
        if (skipReason !== undefined) return t.skip(skipReason);
        await fn();
      });
    /**
     * For stores that commit audit batches off the event loop (`appendInOrder`): registered only
     * for a factory that says it has one (not a skip: the test does not apply to the others), and
     * failing if the store then lacks it.
     */
    const inOrderTest = (title: string, fn: (appendInOrder: NonNullable<Store['appendInOrder']>) => Promise<void>) => {
      if (factory.offThreadAudit !== true) return;
      it(title, async (t) => {
        if (skipReason !== undefined) return t.skip(skipReason);
        assert.ok(store.appendInOrder !== undefined, 'the factory says this store commits audit batches off the event loop');
        await fn(store.appendInOrder);
      });
    };

    test('oauth clients: inserted once per client id and per SPIFFE ID, found both ways, listed, deleted once', async () => {
      const a = { clientId: 'conf-ci', spiffeId: 'spiffe://example.org/ci', scope: ['deploy'], grantTypes: ['client_credentials'], createdAt: '2026-02-01T00:00:00.000Z' };
      const b = { clientId: 'conf-jwks', jwks: { keys: [{ kty: 'EC', crv: 'P-256', x: 'x', y: 'y' }] }, scope: [], grantTypes: ['client_credentials'], createdAt: '2026-02-01T00:00:01.000Z' };
      assert.equal(await store.oauthClients.insert(a), true);
      assert.equal(await store.oauthClients.insert(b), true);
      assert.equal(await store.oauthClients.insert({ ...a, spiffeId: 'spiffe://example.org/other' }), false, 'client id taken');
      assert.equal(await store.oauthClients.insert({ ...a, clientId: 'conf-ci-2' }), false, 'SPIFFE ID taken');
      assert.deepEqual(await store.oauthClients.get('conf-ci'), a);
      assert.deepEqual(await store.oauthClients.bySpiffeId('spiffe://example.org/ci'), a);
      assert.equal(await store.oauthClients.get('nope'), undefined);
      assert.deepEqual((await store.oauthClients.list()).map((c) => c.clientId), ['conf-ci', 'conf-jwks']);
      assert.equal(await store.oauthClients.delete('conf-ci'), true);
      assert.equal(await store.oauthClients.delete('conf-ci'), false);
      assert.equal(await store.oauthClients.bySpiffeId('spiffe://example.org/ci'), undefined);
      assert.equal(await store.oauthClients.insert({ ...a, clientId: 'conf-ci-2' }), true, 'the SPIFFE ID is free again');
    });

    test('ssf: one SET signing key for every replica, sealed; racing replicas end up with the same key; a SET verifies against any replica\'s JWKS', async () => {
      const sealer = kekSealer(new KeyEncryptionKey(randomBytes(32)));
      const peer = (await factory.openPeer?.()) ?? store;
      try {
        assert.deepEqual(await store.ssf.listSetKeys(), []);
        const [a, b] = await Promise.all([SetSigner.load(store.ssf, sealer, systemClock), SetSigner.load(peer.ssf, sealer, systemClock)]);
        assert.equal(a.kid, b.kid, 'one key, whoever stored it');
        const stored = await store.ssf.listSetKeys();
        assert.equal(stored.length, 1);
        assert.doesNotMatch(stored[0]?.privateSealed ?? '', /"d":/, 'the private exponent is not stored in clear');
        assert.equal(await store.ssf.insertSetKey({ ...(stored[0] as SetKeyRecord), kid: 'other' }), false, 'the slot is taken');
        const set = await a.sign({ iss: 'https://writ.example', aud: 'https://rx.example', jti: 'j1', iat: 1, txn: 't1', sub_id: { format: 'opaque', id: 'x' }, events: {} });
        const { payload } = await jwtVerify(set, createLocalJWKSet(b.jwks()), { typ: 'secevent+jwt' });
        assert.equal(payload.jti, 'j1');
        // A changed public column does not change what is published: that is derived from the sealed private key.
        await store.db.updateTable('ssf_set_keys').set({ public_jwk: JSON.stringify({ kty: 'RSA', n: 'AQAB', e: 'AQAB', kid: a.kid }) }).execute();
        const reloaded = await SetSigner.load(store.ssf, sealer, systemClock);
        assert.deepEqual(reloaded.jwks(), a.jwks());
        assert.equal((await jwtVerify(await reloaded.sign({ iss: 'https://writ.example', aud: 'https://rx.example', jti: 'j2', iat: 1, txn: 't2', sub_id: { format: 'opaque', id: 'x' }, events: {} }), createLocalJWKSet(reloaded.jwks()), { typ: 'secevent+jwt' })).payload.jti, 'j2');
        // Another KEK cannot open it: loading fails closed instead of making a key receivers do not know.
        await assert.rejects(SetSigner.load(store.ssf, kekSealer(new KeyEncryptionKey(randomBytes(32))), systemClock), { code: 'ERR_IDENTITY_KEY_UNWRAP_FAILED' });
      } finally {
        if (peer !== store) await peer.close();
      }
    });

    test('ssf: streams compare-and-set, queued SETs once per (stream, jti), due order, reschedule, ack, replay cache', async () => {
      const config = { stream_id: 'st_conf', iss: 'https://writ.example', aud: 'https://rx.example', events_supported: ['e'], events_requested: ['e'], events_delivered: ['e'], delivery: { method: 'urn:ietf:rfc:8936', endpoint_url: 'https://writ.example/ssf/poll/st_conf' }, min_verification_interval: 5, status: 'enabled' as const, excluded_subjects: [] };
      const rec = { streamId: 'st_conf', owner: 'adm_1', config, revision: 1, createdAt: '2026-02-01T00:00:00.000Z', updatedAt: '2026-02-01T00:00:00.000Z' };
      await store.ssf.insertStream(rec);
      assert.deepEqual(await store.ssf.getStream('st_conf'), rec);
      assert.deepEqual((await store.ssf.listStreams('adm_1')).map((r) => r.streamId), ['st_conf']);
      assert.deepEqual(await store.ssf.listStreams('adm_2'), []);
      const paused = { ...rec, revision: 2, config: { ...config, status: 'paused' as const } };
      assert.equal(await store.ssf.updateStream(paused, 1), true);
      assert.equal(await store.ssf.updateStream({ ...paused, revision: 3 }, 1), false, 'a stale revision loses');
      assert.equal((await store.ssf.getStream('st_conf'))?.config.status, 'paused');
      const q = (jti: string, at: string) => ({ streamId: 'st_conf', jti, set: `jwt-${jti}`, createdAt: at, attempts: 0, nextAt: at });
      assert.equal(await store.ssf.enqueueSet(q('b', '2026-02-01T00:00:02.000Z')), true);
      assert.equal(await store.ssf.enqueueSet(q('a', '2026-02-01T00:00:01.000Z')), true);
      assert.equal(await store.ssf.enqueueSet(q('a', '2026-02-01T00:00:05.000Z')), false, 'queued once');
      assert.deepEqual((await store.ssf.dueSets('st_conf', '2026-02-01T00:00:03.000Z', 10)).map((x) => x.jti), ['a', 'b']);
      assert.deepEqual((await store.ssf.dueSets('st_conf', '2026-02-01T00:00:01.500Z', 10)).map((x) => x.jti), ['a']);
      assert.equal(await store.ssf.rescheduleSet('st_conf', 'a', '2026-02-01T00:00:01.000Z', 1, '2026-02-01T00:00:09.000Z'), true);
      assert.equal(await store.ssf.rescheduleSet('st_conf', 'a', '2026-02-01T00:00:01.000Z', 1, '2026-02-01T00:00:09.000Z'), false, 'compare-and-set');
      assert.deepEqual((await store.ssf.dueSets('st_conf', '2026-02-01T00:00:03.000Z', 10)).map((x) => [x.jti, x.set, x.attempts]), [['b', 'jwt-b', 0]]);
      assert.equal(await store.ssf.deleteSets('st_conf', ['b', 'zz']), 1);
      assert.equal(await store.ssf.rememberReceivedSet('iss|jti1', '2026-02-01T00:00:00.000Z'), true);
      assert.equal(await store.ssf.rememberReceivedSet('iss|jti1', '2026-02-01T00:00:01.000Z'), false);
      await store.ssf.forgetReceivedSet('iss|jti1');
      assert.equal(await store.ssf.rememberReceivedSet('iss|jti1', '2026-02-01T00:00:02.000Z'), true, 'forgotten, it is new again');
      assert.equal(await store.ssf.deleteStream('st_conf'), true);
      assert.equal(await store.ssf.deleteStream('st_conf'), false);
      assert.deepEqual(await store.ssf.dueSets('st_conf', '2026-12-01T00:00:00.000Z', 10), [], 'the queue goes with the stream');
    });

    test('ssf: a sealed push credential round-trips in its own column, and goes when an update carries none', async () => {
      const config = { stream_id: 'st_conf_sealed', iss: 'https://writ.example', aud: 'adm_1', events_supported: ['e'], events_requested: ['e'], events_delivered: ['e'], delivery: { method: SSF_PUSH, endpoint_url: 'https://rx.example/events' }, min_verification_interval: 5, status: 'enabled' as const, excluded_subjects: [] };
      const rec = { streamId: 'st_conf_sealed', owner: 'adm_1', config, sealedAuthorization: '{"v":1,"opaque":true}', revision: 1, createdAt: '2026-02-01T00:00:00.000Z', updatedAt: '2026-02-01T00:00:00.000Z' };
      await store.ssf.insertStream(rec);
      assert.deepEqual(await store.ssf.getStream('st_conf_sealed'), rec);
      const raw = await store.db.selectFrom('ssf_streams').selectAll().where('stream_id', '=', 'st_conf_sealed').executeTakeFirstOrThrow();
      assert.equal(raw.authorization_sealed, '{"v":1,"opaque":true}');
      assert.deepEqual(JSON.parse(raw.body), config, 'the body is the configuration alone');
      const { sealedAuthorization: _s, ...without } = rec;
      assert.equal(await store.ssf.updateStream({ ...without, revision: 2 }, 1), true);
      assert.deepEqual(await store.ssf.getStream('st_conf_sealed'), { ...without, revision: 2 });
      assert.equal((await store.db.selectFrom('ssf_streams').select('authorization_sealed').where('stream_id', '=', 'st_conf_sealed').executeTakeFirstOrThrow()).authorization_sealed, null);
      assert.equal(await store.ssf.deleteStream('st_conf_sealed'), true);
    });

    test('ssf: a push credential is in the database only sealed (plain-text rows of an older version are sealed on start), is sent to the receiver, and does not open on another stream', async () => {
      const receiver = await startRecordingReceiver();
      const { got, base } = receiver;
      const events: AuditEventInput[] = [];
      const audit = {
        async append(e: AuditEventInput): Promise<AuditRecord> {
          events.push(e);
          return { seq: events.length, time: '', action: e.action, actor: e.actor, outcome: e.outcome, reasons: [], correlationId: e.correlationId, details: {}, prevHash: '', hash: '' };
        },
      };
      const reports: StreamDeliveryReport[] = [];
      const bus = new InProcessRevocationBus(systemClock);
      const signer = await SetSigner.generate();
      const streams = new SsfStreams({ store: store.ssf, sealer: kekSealer(new KeyEncryptionKey(randomBytes(32))), signer: async () => signer, audit, clock: systemClock, sweepMs: 50, retryBaseMs: 20, maxAttempts: 3, onDelivery: (r) => reports.push(r) });
      streams.setIssuer('https://writ.example');
      const caller: StreamCaller = { id: 'adm_rx', admin: false, actor: { type: 'admin', id: 'adm_rx' }, correlationId: 'cid' };
      const row = (id: string) => store.db.selectFrom('ssf_streams').selectAll().where('stream_id', '=', id).executeTakeFirstOrThrow();
      const until = async (what: string, pred: () => boolean): Promise<void> => {
        const end = Date.now() + 15_000;
        while (!pred()) {
          if (Date.now() > end) throw new Error(`timed out waiting for ${what}; pushes ${JSON.stringify(got.map((g) => g.path))}, reports ${JSON.stringify(reports.map((r) => r.outcome))}`);
          await new Promise((r) => setTimeout(r, 20));
        }
      };
      // A row as an older version wrote it: the credential in plain text in the body, no sealed column.
      const legacyConfig = { stream_id: 'st_conf_legacy', iss: 'https://writ.example', aud: 'adm_rx', events_supported: [CAEP_SESSION_REVOKED], events_requested: [CAEP_SESSION_REVOKED], events_delivered: [CAEP_SESSION_REVOKED], delivery: { method: SSF_PUSH, endpoint_url: `${base}/legacy`, authorization_header: 'Bearer legacy-plain-secret' }, min_verification_interval: 5, status: 'enabled' as const, excluded_subjects: [] };
      await store.ssf.insertStream({ streamId: 'st_conf_legacy', owner: 'adm_rx', config: legacyConfig, revision: 1, createdAt: '2026-02-01T00:00:00.000Z', updatedAt: '2026-02-01T00:00:00.000Z' });
      assert.match((await row('st_conf_legacy')).body, /legacy-plain-secret/, 'the older version stored it in plain text');
      let created = '';
      try {
        await streams.start(bus);
        const legacy = await row('st_conf_legacy');
        assert.ok(legacy.authorization_sealed !== null, 'sealed on start');
        assert.doesNotMatch(JSON.stringify(legacy), /legacy-plain-secret/);
        assert.equal(JSON.parse(legacy.body).delivery.authorization_header, undefined);
        assert.equal(legacy.revision, 2);
        created = ((await streams.create(caller, { delivery: { method: SSF_PUSH, endpoint_url: `${base}/new`, authorization_header: 'Bearer new-stream-secret' } })) as { stream_id: string }).stream_id;
        const fresh = await row(created);
        assert.doesNotMatch(JSON.stringify(fresh), /new-stream-secret/, 'neither the body nor the sealed column holds the credential');
        assert.deepEqual(Object.keys(JSON.parse(fresh.authorization_sealed ?? '{}')).sort(), ['ciphertext', 'kekId', 'v', 'wrappedDek']);
        // A PATCH that leaves the delivery alone keeps the credential.
        await streams.update(caller, { stream_id: created, description: 'kept' }, false);
        assert.equal((await row(created)).authorization_sealed, fresh.authorization_sealed);

        await bus.publish({ kind: 'subject-revoked', subject: 'spiffe://writ.local/svc/sealed-1', reason: 'posture-failed' });
        await until('a push on each stream', () => got.length >= 2);
        assert.deepEqual(got.map((g) => [g.path, g.auth]).sort(), [['/legacy', 'Bearer legacy-plain-secret'], ['/new', 'Bearer new-stream-secret']]);

        // The new stream's sealed credential moved onto the legacy stream: its AAD names another stream, so it does not open.
        await store.db.updateTable('ssf_streams').set({ authorization_sealed: fresh.authorization_sealed }).where('stream_id', '=', 'st_conf_legacy').execute();
        got.length = 0;
        await bus.publish({ kind: 'subject-revoked', subject: 'spiffe://writ.local/svc/sealed-2', reason: 'posture-failed' });
        await until('the legacy stream to give up', () => reports.some((r) => r.streamId === 'st_conf_legacy' && r.outcome === 'gave-up'));
        await until('the push on the new stream', () => got.length >= 1);
        assert.deepEqual(got, [{ path: '/new', auth: 'Bearer new-stream-secret' }], 'nothing is sent on the stream whose credential does not open');
        const failed = reports.filter((r) => r.streamId === 'st_conf_legacy' && r.outcome !== 'delivered');
        assert.deepEqual(failed.map((r) => [r.outcome, r.attempts]), [['credential-unreadable', 1], ['credential-unreadable', 2], ['credential-unreadable', 3], ['gave-up', 3]]);
        const unreadable = events.filter((e) => e.action === 'ssf.stream.credential-unreadable');
        assert.deepEqual(unreadable.map((e) => [e.target?.id, e.outcome]), [['st_conf_legacy', 'failure']], 'audited once, not per try');
        assert.doesNotMatch(JSON.stringify([events, reports]), /secret|Bearer/);
      } finally {
        await streams.close();
        await bus.close();
        await receiver.close();
        await store.ssf.deleteStream('st_conf_legacy');
        if (created !== '') await store.ssf.deleteStream(created);
      }
    });

    test('enforcement points: registered once, last seen refreshed; the first acknowledgement of an event is kept', async () => {
      await store.ssf.touchEnforcementPoint({ id: 'adm_p/edge-1', principalId: 'adm_p', name: 'edge-1', at: '2026-02-01T00:00:00.000Z' });
      await store.ssf.touchEnforcementPoint({ id: 'adm_p/edge-2', principalId: 'adm_p', name: 'edge-2', at: '2026-02-01T00:00:01.000Z' });
      await store.ssf.touchEnforcementPoint({ id: 'adm_p/edge-1', principalId: 'adm_p', name: 'edge-1', at: '2026-02-01T00:00:05.000Z' });
      assert.deepEqual(await store.ssf.listEnforcementPoints('2026-02-01T00:00:03.000Z'), [{ id: 'adm_p/edge-1', principalId: 'adm_p', name: 'edge-1', registeredAt: '2026-02-01T00:00:00.000Z', lastSeenAt: '2026-02-01T00:00:05.000Z' }]);
      assert.equal((await store.ssf.listEnforcementPoints()).length, 2);
      await store.ssf.recordAck({ eventId: 'drill_x:0', pepId: 'adm_p/edge-1', ackedAt: '2026-02-01T00:00:06.000Z', denied: true });
      await store.ssf.recordAck({ eventId: 'drill_x:0', pepId: 'adm_p/edge-1', ackedAt: '2026-02-01T00:00:07.000Z', denied: false });
      await store.ssf.recordAck({ eventId: 'drill_x:0', pepId: 'adm_p/edge-2', ackedAt: '2026-02-01T00:00:08.000Z', denied: false });
      assert.deepEqual(await store.ssf.listAcks(['drill_x:0', 'drill_y:0']), [
        { eventId: 'drill_x:0', pepId: 'adm_p/edge-1', ackedAt: '2026-02-01T00:00:06.000Z', denied: true },
        { eventId: 'drill_x:0', pepId: 'adm_p/edge-2', ackedAt: '2026-02-01T00:00:08.000Z', denied: false },
      ]);
    });

    test('signals: stored as given, listed newest first, latest per subject and type', async () => {
      const rec = (i: number, type: 'posture-changed' | 'risk-changed', subject: string): SignalRecord => {
        const at = new Date(Date.UTC(2026, 1, 1, 0, 0, i)).toISOString();
        const signal: Signal = type === 'posture-changed' ? { type, subject, subjectKind: 'workload', score: 10 * i, failingChecks: i % 2 === 0 ? [] : ['disk-encryption'] } : { type, subject, level: i > 2 ? 'high' : 'low' };
        return { id: `sig_conf_${i}`, type, subject, receivedAt: at, occurredAt: at, source: 'admin:conformance', ...(i === 1 ? { reason: 'scan-failed' } : {}), signal };
      };
      const a = 'spiffe://writ.local/conf/a';
      const b = 'spiffe://writ.local/conf/b';
      const all = [rec(1, 'posture-changed', a), rec(2, 'risk-changed', a), rec(3, 'posture-changed', a), rec(4, 'posture-changed', b), rec(5, 'risk-changed', a)];
      for (const r of all) await store.signals.insertSignal(r);
      assert.deepEqual(await store.signals.latestSignal(a, 'posture-changed'), all[2]);
      assert.deepEqual(await store.signals.latestSignal(a, 'risk-changed'), all[4]);
      assert.equal(await store.signals.latestSignal(b, 'risk-changed'), undefined);
      assert.deepEqual((await store.signals.listSignals({ subject: a, limit: 10 })).map((r) => r.id), ['sig_conf_5', 'sig_conf_3', 'sig_conf_2', 'sig_conf_1']);
      assert.deepEqual((await store.signals.listSignals({ type: 'posture-changed', limit: 2 })).map((r) => r.id), ['sig_conf_4', 'sig_conf_3']);
      assert.deepEqual((await store.signals.listSignals({ subject: a, limit: 10 })).at(-1), all[0], 'reason and checks survive the round trip');
    });

    test('migrations are idempotent and the store answers', async () => {
      const again = await store.migrate();
      assert.deepEqual(again.applied, []);
      await store.ping();
    });

    test('an empty log has the genesis head', async () => {
      assert.deepEqual(await store.head(), { seq: 0, hash: GENESIS_HASH });
      assert.deepEqual(await store.readRange(0, 10), []);
    });

    test('appendSealed chains rows after the head and moves it', async () => {
      const rows = await store.appendSealed((head) => seal(head, [event(1), event(2), event(3)]));
      assert.deepEqual(rows.map((r) => r.seq), [1, 2, 3]);
      const head = await store.head();
      assert.equal(head.seq, 3);
      assert.equal(head.hash, rows[2]?.hash);
      const stored = await store.readRange(0, 10);
      assert.deepEqual(stored, rows, 'rows read back exactly as written, unicode included');
    });

    test('a seal function that throws leaves nothing behind', async () => {
      const before = await store.head();
      await assert.rejects(store.appendSealed(() => { throw new Error('seal refused'); }), /seal refused/);
      assert.deepEqual(await store.head(), before);
    });

    test('a batch that fails half way is rolled back whole', async () => {
      const before = await store.head();
      await assert.rejects(
        store.appendSealed((head) => {
          const rows = seal(head, [event(10), event(11)]);
          const dup: StoredAuditRow = { ...(rows[1] as StoredAuditRow), seq: rows[0]?.seq ?? 0 };
          return [rows[0] as StoredAuditRow, dup];
        }),
      );
      assert.deepEqual(await store.head(), before);
      assert.equal((await store.readRange(before.seq, 10)).length, 0);
    });

    test('a batch larger than one INSERT statement is stored whole, in order', async () => {
      const start = (await store.head()).seq;
      // 345 = 256 + 64 + 16 + 4 + 4 + 1 rows: several statements of every size the store uses.
      const rows = await store.appendSealed((head) => seal(head, Array.from({ length: 345 }, (_, i) => event(1000 + i))));
      assert.equal(rows.length, 345);
      assert.deepEqual(await store.readRange(start, 1000), rows, 'every row read back exactly as sealed, in seq order');
      assert.deepEqual(await store.head(), { seq: start + 345, hash: rows[344]?.hash });
      assert.equal((await verifyChain(store)).ok, true);
    });

    test('a failure in the last INSERT of a large batch rolls back the earlier ones too', async () => {
      const before = await store.head();
      await assert.rejects(
        store.appendSealed((head) => {
          // 301 = 256 + 16 + 16 + 4 + 4 + 4 + 1: the last row, alone in the last statement,
          // repeats the first row's seq.
          const rows = seal(head, Array.from({ length: 301 }, (_, i) => event(2000 + i)));
          return [...rows.slice(0, 300), { ...(rows[300] as StoredAuditRow), seq: rows[0]?.seq ?? 0 }];
        }),
      );
      assert.deepEqual(await store.head(), before);
      assert.equal((await store.readRange(before.seq, 10)).length, 0);
    });

    inOrderTest('appendInOrder, where the store commits off the event loop: batches posted together commit in order, durable when resolved', async (appendInOrder) => {
      const start = await store.head();
      const batches = [3, 1, 300, 2].map((n, b) => Array.from({ length: n }, (_, i) => event(3000 + b * 1000 + i)));
      const results = await Promise.all(batches.map((events) => appendInOrder(events)));
      const all = results.flat();
      assert.deepEqual(all.map((r) => r.seq), Array.from({ length: 306 }, (_, i) => start.seq + 1 + i), 'in the order posted, without gaps');
      assert.equal(all[0]?.prevHash, start.hash);
      assert.deepEqual(all.map((r) => r.event), batches.flat().map((e) => e.canonical));
      // Read back through the store's own connection: committed, not only written by the worker.
      assert.deepEqual(await store.readRange(start.seq, 1000), all);
      assert.deepEqual(await store.head(), { seq: start.seq + 306, hash: all[305]?.hash });
      assert.equal((await verifyChain(store)).ok, true);
    });

    inOrderTest('appendInOrder and appendSealed interleaved never fork the chain', async (appendInOrder) => {
      const start = (await store.head()).seq;
      await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? appendInOrder([event(5000 + i), event(5100 + i)]) : store.appendSealed((head) => seal(head, [event(5200 + i), event(5300 + i)])))));
      assert.equal((await store.head()).seq, start + 40);
      assert.equal((await verifyChain(store)).ok, true);
    });

    inOrderTest('appendInOrder: a batch that cannot be written is rolled back whole and rejected; the next is written', async (appendInOrder) => {
      const before = await store.head();
      // A stray row where the batch's second row goes: its INSERT violates the primary key.
      await store.db.insertInto('audit_events').values({ seq: before.seq + 2, time: 't', action: 'x.y', outcome: 'success', actor_id: 'a', correlation_id: 'c', event: '{}', prev_hash: 'p', hash: 'h' }).execute();
      await assert.rejects(appendInOrder([event(6000), event(6001), event(6002)]), (e: Error & { errcode?: number }) => e.errcode === 1555 || e.errcode === 2067);
      assert.deepEqual(await store.head(), before);
      await store.db.deleteFrom('audit_events').where('seq', '=', before.seq + 2).execute();
      assert.equal((await store.readRange(before.seq, 10)).length, 0, 'nothing of the failed batch was kept');
      const rows = await appendInOrder([event(6003)]);
      assert.deepEqual(rows.map((r) => r.seq), [before.seq + 1]);
      assert.equal((await verifyChain(store)).ok, true);
    });

    inOrderTest('appendInOrder: batches that queued during a commit are committed together; when that commit fails, none of them is kept, and the chain stays whole', async (appendInOrder) => {
      const before = await store.head();
      // A stray row where the third batch's row goes: the transaction that holds it fails.
      await store.db.insertInto('audit_events').values({ seq: before.seq + 5, time: 't', action: 'x.y', outcome: 'success', actor_id: 'a', correlation_id: 'c', event: '{}', prev_hash: 'p', hash: 'h' }).execute();
      const batches = [2, 2, 2, 2, 2].map((n, b) => Array.from({ length: n }, (_, i) => event(7000 + b * 10 + i)));
      const settled = await Promise.allSettled(batches.map((events) => appendInOrder(events)));
      assert.equal(settled[2]?.status, 'rejected', 'the batch whose row collides is refused');
      await store.db.deleteFrom('audit_events').where('seq', '=', before.seq + 5).where('hash', '=', 'h').execute();
      // Whatever was committed is exactly what was acknowledged, in order and chained.
      const kept = settled.flatMap((r) => (r.status === 'fulfilled' ? r.value : []));
      assert.deepEqual(await store.readRange(before.seq, 100), kept);
      assert.equal((await store.head()).seq, before.seq + kept.length);
      assert.equal((await verifyChain(store)).ok, true);
      // And the worker goes on.
      assert.deepEqual((await appendInOrder([event(7100)])).map((r) => r.seq), [before.seq + kept.length + 1]);
    });

    test('concurrent appends never fork the chain', async () => {
      const peer = (await factory.openPeer?.()) ?? store;
      try {
        const start = (await store.head()).seq;
        await Promise.all(
          Array.from({ length: 40 }, (_, i) => (i % 2 === 0 ? store : peer).appendSealed((head) => seal(head, [event(100 + i), event(200 + i)]))),
        );
        const head = await store.head();
        assert.equal(head.seq, start + 80);
        const result = await verifyChain(store);
        assert.equal(result.ok, true, JSON.stringify(result));
      } finally {
        if (peer !== store) await peer.close();
      }
    });

    test('query filters by action, correlation id, time and cursor, ascending, limited', async () => {
      const base = (await store.head()).seq;
      await store.appendSealed((head) =>
        seal(head, [
          event(1, { action: 'q.first', correlationId: 'corr-a', time: '2030-01-01T00:00:00.000Z' }),
          event(2, { action: 'q.second', correlationId: 'corr-b', time: '2030-01-02T00:00:00.000Z' }),
          event(3, { action: 'q.first', correlationId: 'corr-b', time: '2030-01-03T00:00:00.000Z' }),
        ]),
      );
      assert.deepEqual((await store.query({ limit: 10, action: 'q.first' })).map((r) => r.seq), [base + 1, base + 3]);
      assert.deepEqual((await store.query({ limit: 10, correlationId: 'corr-b' })).map((r) => r.seq), [base + 2, base + 3]);
      assert.deepEqual((await store.query({ limit: 10, since: '2030-01-02T00:00:00.000Z' })).map((r) => r.seq), [base + 2, base + 3]);
      assert.deepEqual((await store.query({ limit: 1, afterSeq: base + 1 })).map((r) => r.seq), [base + 2]);
      assert.equal((await verifyChain(store)).ok, true);
    });

    test('admin principals: insert, unique active names, get, list, token rotation', async () => {
      assert.equal(await store.insertPrincipal(principal('00000000000000a1', 'alice', 'admin')), true);
      assert.equal(await store.insertPrincipal(principal('00000000000000a2', 'alice', 'operator')), false, 'active name is unique');
      const got = await store.getPrincipal('00000000000000a1');
      assert.deepEqual(got, principal('00000000000000a1', 'alice', 'admin'));
      assert.equal(await store.getPrincipal('ffffffffffffffff'), undefined);
      assert.equal(await store.setPrincipalTokenHash('00000000000000a1', 'b'.repeat(64)), true);
      assert.equal((await store.getPrincipal('00000000000000a1'))?.tokenHash, 'b'.repeat(64));
      assert.equal(await store.setPrincipalTokenHash('ffffffffffffffff', 'b'.repeat(64)), false);
      assert.equal(await store.countActivePrincipals(), 1);
    });

    test('admin principals: the last admin cannot be revoked; others can; names free up', async () => {
      assert.equal(await store.revokePrincipal('00000000000000a1', '2026-02-01T00:00:00.000Z', 'admin'), 'last-of-role');
      assert.equal(await store.revokePrincipal('ffffffffffffffff', '2026-02-01T00:00:00.000Z', 'admin'), 'not-found');
      assert.equal(await store.insertPrincipal(principal('00000000000000b1', 'bob', 'auditor')), true);
      assert.equal(await store.revokePrincipal('00000000000000b1', '2026-02-01T00:00:00.000Z', 'admin'), 'revoked');
      assert.equal(await store.revokePrincipal('00000000000000b1', '2026-02-01T00:00:00.000Z', 'admin'), 'not-found', 'revoked twice');
      assert.equal(await store.setPrincipalTokenHash('00000000000000b1', 'c'.repeat(64)), false, 'revoked principals keep their hash');
      assert.equal(await store.insertPrincipal(principal('00000000000000b2', 'bob', 'auditor')), true, 'a revoked name can be reused');
      assert.deepEqual((await store.listPrincipals()).map((p) => [p.id, p.revokedAt !== null]), [
        ['00000000000000a1', false],
        ['00000000000000b1', true],
        ['00000000000000b2', false],
      ]);
    });

    test('admin principals: two concurrent revocations cannot remove both of the last two admins', async () => {
      const peer = (await factory.openPeer?.()) ?? store;
      try {
        assert.equal(await store.insertPrincipal(principal('00000000000000c1', 'carol', 'admin')), true);
        const results = await Promise.all([
          store.revokePrincipal('00000000000000a1', '2026-03-01T00:00:00.000Z', 'admin'),
          peer.revokePrincipal('00000000000000c1', '2026-03-01T00:00:00.000Z', 'admin'),
        ]);
        assert.deepEqual([...results].sort(), ['last-of-role', 'revoked']);
      } finally {
        if (peer !== store) await peer.close();
      }
    });

    // ---- identity ports ------------------------------------------------------
    const caKey = (id: string, state: StoredCaKey['state']): StoredCaKey => ({
      trustDomain: 'conformance.test',
      id,
      kind: 'jwt',
      state,
      alg: 'ES256',
      createdAt: '2026-01-01T00:00:00.000Z',
      notAfter: '2026-01-02T00:00:00.000Z',
      publicJwk: { kty: 'EC', crv: 'P-256', x: 'eA', y: 'eQ' },
      wrappedPrivateKey: { v: 1, kekId: 'k', wrappedDek: 'd', ciphertext: 'c' },
    });

    test('identity: CA key slots are put, replaced, listed per trust domain and deleted', async () => {
      const ids = store.identity;
      await ids.put(caKey('k1', 'prepared'));
      await ids.put(caKey('k2', 'active'));
      await ids.put({ ...caKey('k3', 'active'), trustDomain: 'other.test' });
      await ids.put(caKey('k1', 'proved'));
      const listed = [...(await ids.list('conformance.test'))].sort((a, b) => a.id.localeCompare(b.id));
      assert.deepEqual(listed, [caKey('k1', 'proved'), caKey('k2', 'active')]);
      await ids.delete('conformance.test', 'k1');
      await ids.delete('conformance.test', 'missing');
      assert.deepEqual((await ids.list('conformance.test')).map((k) => k.id), ['k2']);
      assert.deepEqual((await ids.list('other.test')).map((k) => k.id), ['k3']);
    });

    test('identity: the bundle sequence starts at 0 and never goes backwards, across replicas', async () => {
      const peer = (await factory.openPeer?.()) ?? store;
      try {
        assert.equal(await store.identity.readSequence('seq.test'), 0);
        await store.identity.writeSequence('seq.test', 3);
        assert.equal(await peer.identity.readSequence('seq.test'), 3);
        await peer.identity.writeSequence('seq.test', 2);
        assert.equal(await store.identity.readSequence('seq.test'), 3, 'a stale replica cannot move it back');
        await Promise.all([store.identity.writeSequence('seq.test', 7), peer.identity.writeSequence('seq.test', 5)]);
        assert.equal(await store.identity.readSequence('seq.test'), 7);
      } finally {
        if (peer !== store) await peer.close();
      }
    });

    const entry = (id: string, revision = 1): RegistrationEntry => ({
      id,
      spiffeId: `spiffe://conformance.test/app/${id}`,
      parentId: 'spiffe://conformance.test/writ/node/n1',
      selectors: ['unix:uid:1000'],
      dnsNames: ['app.internal'],
      owner: { team: 'payments', contact: 'ana@example.com' },
      createdAt: `2026-01-01T00:00:0${id.slice(-1)}.000Z`,
      updatedAt: '2026-01-01T00:00:09.000Z',
      createdBy: 'admin1',
      revision,
    });

    test('identity: entries round-trip, update only at the expected revision, delete once', async () => {
      const ids = store.identity;
      await ids.insertEntry(entry('00000000000000e2'));
      await ids.insertEntry(entry('00000000000000e1'));
      assert.deepEqual(await ids.getEntry('00000000000000e1'), entry('00000000000000e1'));
      assert.equal(await ids.getEntry('ffffffffffffffff'), undefined);
      assert.deepEqual((await ids.listEntries()).map((e) => e.id), ['00000000000000e1', '00000000000000e2']);
      const next = { ...entry('00000000000000e1', 2), x509SvidTtlSeconds: 600 };
      assert.equal(await ids.updateEntry(next, 1), true);
      assert.equal(await ids.updateEntry({ ...next, revision: 3 }, 1), false, 'stale revision');
      assert.deepEqual(await ids.getEntry('00000000000000e1'), next);
      assert.equal(await ids.deleteEntry('00000000000000e1'), true);
      assert.equal(await ids.deleteEntry('00000000000000e1'), false);
      assert.equal(await ids.updateEntry({ ...next, revision: 3 }, 2), false, 'gone');
    });

    const joinToken = (id: string, expiresAt: string): JoinTokenRecord => ({
      id,
      tokenHash: id.repeat(4),
      createdAt: '2026-01-01T00:00:00.000Z',
      expiresAt,
      createdBy: 'admin1',
      selectors: ['join_token:env:prod'],
      usedAt: null,
      nodeId: null,
    });

    test('identity: a join token is consumed once; used, expired and unknown tokens say so', async () => {
      const ids = store.identity;
      await ids.insertJoinToken(joinToken('000000000000a001', '2026-01-01T00:10:00.000Z'));
      await ids.insertJoinToken(joinToken('000000000000a002', '2026-01-01T00:01:00.000Z'));
      const first = await ids.consumeJoinToken('000000000000a001'.repeat(4), '2026-01-01T00:05:00.000Z', 'node-a');
      assert.equal(first.status, 'consumed');
      assert.deepEqual(first.status === 'consumed' ? first.token : undefined, { ...joinToken('000000000000a001', '2026-01-01T00:10:00.000Z'), usedAt: '2026-01-01T00:05:00.000Z', nodeId: 'node-a' });
      assert.equal((await ids.consumeJoinToken('000000000000a001'.repeat(4), '2026-01-01T00:06:00.000Z', 'node-b')).status, 'used');
      assert.equal((await ids.consumeJoinToken('000000000000a002'.repeat(4), '2026-01-01T00:05:00.000Z', 'node-c')).status, 'expired');
      assert.equal((await ids.consumeJoinToken('f'.repeat(64), '2026-01-01T00:05:00.000Z', 'node-d')).status, 'unknown');
      assert.deepEqual((await ids.listJoinTokens()).map((t) => [t.id, t.nodeId]), [['000000000000a001', 'node-a'], ['000000000000a002', null]]);
    });

    test('identity: two replicas consuming one join token at once: exactly one wins', async () => {
      const peer = (await factory.openPeer?.()) ?? store;
      try {
        await store.identity.insertJoinToken(joinToken('000000000000a003', '2026-01-01T00:10:00.000Z'));
        const results = await Promise.all(
          Array.from({ length: 8 }, (_, i) => (i % 2 === 0 ? store : peer).identity.consumeJoinToken('000000000000a003'.repeat(4), '2026-01-01T00:05:00.000Z', `node-${i}`)),
        );
        assert.deepEqual(results.map((r) => r.status).sort(), ['consumed', 'used', 'used', 'used', 'used', 'used', 'used', 'used']);
      } finally {
        if (peer !== store) await peer.close();
      }
    });

    const node = (id: string): NodeRecord => ({
      id,
      spiffeId: `spiffe://conformance.test/writ/node/${id}`,
      attestationType: 'join_token',
      selectors: ['join_token:id:000000000000a001'],
      attestedAt: '2026-01-01T00:05:00.000Z',
      svidSerial: '01',
      svidNotAfter: '2026-01-01T01:05:00.000Z',
      lastSeenAt: null,
      evictedAt: null,
    });

    test('identity: nodes are inserted, renewed, listed and evicted once; an evicted node is not renewed', async () => {
      const ids = store.identity;
      await ids.insertNode(node('node-a'));
      assert.deepEqual(await ids.getNode('node-a'), node('node-a'));
      assert.equal(await ids.renewNodeSvid('node-a', '02', '2026-01-01T02:00:00.000Z', '2026-01-01T01:00:00.000Z'), true);
      assert.deepEqual(await ids.getNode('node-a'), { ...node('node-a'), svidSerial: '02', svidNotAfter: '2026-01-01T02:00:00.000Z', lastSeenAt: '2026-01-01T01:00:00.000Z' });
      assert.equal(await ids.evictNode('node-a', '2026-01-01T01:30:00.000Z'), true);
      assert.equal(await ids.evictNode('node-a', '2026-01-01T01:31:00.000Z'), false);
      assert.equal(await ids.evictNode('missing', '2026-01-01T01:31:00.000Z'), false);
      assert.equal(await ids.renewNodeSvid('node-a', '03', '2026-01-01T03:00:00.000Z', '2026-01-01T02:00:00.000Z'), false);
      assert.equal((await ids.getNode('node-a'))?.evictedAt, '2026-01-01T01:30:00.000Z');
      assert.deepEqual((await ids.listNodes()).map((n) => n.id), ['node-a']);
    });

    test('identity: the replay cache refuses a key it holds until it expires, across replicas', async () => {
      const peer = (await factory.openPeer?.()) ?? store;
      try {
        assert.equal(await store.identity.remember('oidc:iss:jti-1', '2026-01-01T00:10:00.000Z', '2026-01-01T00:00:00.000Z'), true);
        assert.equal(await peer.identity.remember('oidc:iss:jti-1', '2026-01-01T00:10:00.000Z', '2026-01-01T00:05:00.000Z'), false);
        assert.equal(await store.identity.remember('oidc:iss:jti-1', '2026-01-01T00:20:00.000Z', '2026-01-01T00:10:00.000Z'), true, 'expired keys may be used again');
        const results = await Promise.all(Array.from({ length: 6 }, (_, i) => (i % 2 === 0 ? store : peer).identity.remember('req:x', '2026-01-01T01:00:00.000Z', '2026-01-01T00:30:00.000Z')));
        assert.equal(results.filter((r) => r).length, 1);
      } finally {
        if (peer !== store) await peer.close();
      }
    });

    const lease = (id: string, o: Partial<Lease> = {}): Lease => ({
      id, kind: 'postgres', subject: 'spiffe://example.org/ci', taskId: null, audience: 'postgres:main', state: 'pending',
      createdAt: '2026-01-01T00:00:00.000Z', expiresAt: '2026-01-01T00:10:00.000Z', maxExpiresAt: '2026-01-01T01:00:00.000Z',
      revokedAt: null, revokeReason: null, handle: { engine: 'main', username: `writ_${id}` }, ...o,
    });

    test('credentials: lease rows round-trip and change state by compare-and-set, across replicas', async () => {
      const c = store.credentials;
      await c.insertLease(lease('a00000000000000000000001'));
      assert.deepEqual(await c.getLease('a00000000000000000000001'), lease('a00000000000000000000001'));
      assert.equal(await c.getLease('missing'), undefined);
      const active = await c.updateLease('a00000000000000000000001', ['pending'], { state: 'active' });
      assert.equal(active?.state, 'active');
      assert.equal(await c.updateLease('a00000000000000000000001', ['pending'], { state: 'active' }), undefined, 'a CAS from the wrong state changes nothing');
      const peer = (await factory.openPeer?.()) ?? store;
      try {
        const racers = await Promise.all(Array.from({ length: 6 }, (_, i) => (i % 2 === 0 ? store : peer).credentials.updateLease('a00000000000000000000001', ['pending', 'active'], { state: 'revoked', revokedAt: '2026-01-01T00:05:00.000Z', revokeReason: `r${i}` })));
        assert.equal(racers.filter((r) => r !== undefined).length, 1, 'exactly one revoker wins');
      } finally {
        if (peer !== store) await peer.close();
      }
      const done = await c.getLease('a00000000000000000000001');
      assert.equal(done?.state, 'revoked');
      assert.equal(done?.revokedAt, '2026-01-01T00:05:00.000Z');
    });

    test('credentials: leases list by task, subject, prefix, state and time, and count live ones', async () => {
      const c = store.credentials;
      await c.insertLeases([
        lease('b00000000000000000000001', { taskId: 'task_1', subject: 'spiffe://example.org/ns/a/x', state: 'active' }),
        lease('b00000000000000000000002', { taskId: 'task_1', subject: 'spiffe://example.org/ns/a/y', createdAt: '2026-01-01T00:01:00.000Z' }),
        lease('b00000000000000000000003', { taskId: 'task_2', subject: 'spiffe://example.org/ns/b/x', state: 'active', expiresAt: '2026-01-01T00:02:00.000Z' }),
        lease('b00000000000000000000004', { taskId: 'task_1', subject: 'spiffe://example.org/ns/a/x', state: 'revoked' }),
      ]);
      const ids = (ls: readonly Lease[]) => ls.map((l) => l.id);
      assert.deepEqual(ids(await c.listLeases({ taskId: 'task_1', states: ['pending', 'active'] })), ['b00000000000000000000001', 'b00000000000000000000002']);
      assert.deepEqual(ids(await c.listLeases({ subject: 'spiffe://example.org/ns/a/x' })), ['b00000000000000000000001', 'b00000000000000000000004']);
      assert.deepEqual(ids(await c.listLeases({ subjectPrefix: 'spiffe://example.org/ns/a/', states: ['active', 'pending'] })), ['b00000000000000000000001', 'b00000000000000000000002']);
      assert.deepEqual(ids(await c.listLeases({ subjectPrefix: 'spiffe://example.org/ns/b/', expiresBefore: '2026-01-01T00:03:00.000Z' })), ['b00000000000000000000003']);
      assert.deepEqual(ids(await c.listLeases({ taskId: 'task_1', states: ['pending'], createdBefore: '2026-01-01T00:00:30.000Z' })), []);
      assert.deepEqual(ids(await c.listLeases({ taskId: 'task_1', limit: 1 })), ['b00000000000000000000001']);
      assert.deepEqual(await c.listLeases({ states: [] }), []);
      assert.equal(await c.countLiveLeases({ taskId: 'task_1' }, '2026-01-01T00:00:00.000Z'), 2);
      assert.equal(await c.countLiveLeases({ subject: 'spiffe://example.org/ns/a/x' }, '2026-01-01T00:00:00.000Z'), 1);
      assert.equal(await c.countLiveLeases({ taskId: 'task_2' }, '2026-01-01T00:05:00.000Z'), 0, 'an expired lease is not live');
      const moved = await c.updateLeasesByIds(['b00000000000000000000001', 'b00000000000000000000002', 'b00000000000000000000004', 'missing'], ['pending', 'active'], { state: 'revoked', revokedAt: '2026-01-01T00:06:00.000Z', revokeReason: 'bulk' });
      assert.deepEqual(ids(moved).sort(), ['b00000000000000000000001', 'b00000000000000000000002'], 'only live rows move');
      assert.equal((await c.getLease('b00000000000000000000002'))?.revokeReason, 'bulk');
      assert.deepEqual(await c.updateLeasesByIds([], ['active'], { state: 'revoked' }), []);
    });

    test('credentials: a lease is inserted only within its task and subject quotas', async () => {
      const c = store.credentials;
      const now = '2026-01-01T00:00:00.000Z';
      const q = { maxPerSubject: 2, maxPerTask: 3 };
      assert.deepEqual(await c.insertLeaseWithinQuota(lease('q00000000000000000000001', { taskId: 'task_q', subject: 'spiffe://example.org/q/a' }), q, now), { inserted: true });
      assert.deepEqual(await c.insertLeaseWithinQuota(lease('q00000000000000000000002', { taskId: 'task_q', subject: 'spiffe://example.org/q/a' }), q, now), { inserted: true });
      assert.deepEqual(await c.insertLeaseWithinQuota(lease('q00000000000000000000003', { taskId: 'task_q', subject: 'spiffe://example.org/q/a' }), q, now), { inserted: false, by: 'subject', live: 2 });
      assert.equal(await c.getLease('q00000000000000000000003'), undefined, 'a refused lease leaves no row');
      assert.deepEqual(await c.insertLeaseWithinQuota(lease('q00000000000000000000004', { taskId: 'task_q', subject: 'spiffe://example.org/q/b' }), q, now), { inserted: true });
      assert.deepEqual(await c.insertLeaseWithinQuota(lease('q00000000000000000000005', { taskId: 'task_q', subject: 'spiffe://example.org/q/c' }), q, now), { inserted: false, by: 'task', live: 3 });
      assert.deepEqual(await c.insertLeaseWithinQuota(lease('q00000000000000000000006', { subject: 'spiffe://example.org/q/a' }), q, '2026-01-01T00:10:00.000Z'), { inserted: true }, 'leases expired at `now` do not count');
      assert.deepEqual(await c.insertLeaseWithinQuota(lease('q00000000000000000000007', { taskId: 'task_q', subject: 'spiffe://example.org/q/d', state: 'revoked' }), { maxPerSubject: 9, maxPerTask: 9 }, now), { inserted: true });
      assert.deepEqual(await c.insertLeaseWithinQuota(lease('q00000000000000000000008', { taskId: 'task_q', subject: 'spiffe://example.org/q/e' }), q, now), { inserted: false, by: 'task', live: 3 }, 'revoked rows do not count');
    });

    test('credentials: tasks end once, and overdue ones are listed', async () => {
      const c = store.credentials;
      const task: Task = { id: 'task_c1', owner: 'spiffe://example.org/ci', description: 'deploy', scopes: ['db:read'], state: 'active', createdAt: '2026-01-01T00:00:00.000Z', deadline: '2026-01-01T01:00:00.000Z', endedAt: null, endedBy: null };
      await c.insertTask(task);
      await c.insertTask({ ...task, id: 'task_c2', deadline: '2026-01-01T00:30:00.000Z' });
      assert.deepEqual(await c.getTask('task_c1'), task);
      assert.deepEqual((await c.listOverdueTasks('2026-01-01T00:45:00.000Z', 10)).map((t) => t.id), ['task_c2']);
      const ended = await c.endTask('task_c1', 'completed', '2026-01-01T00:10:00.000Z', 'admin:x');
      assert.deepEqual(ended, { ...task, state: 'completed', endedAt: '2026-01-01T00:10:00.000Z', endedBy: 'admin:x' });
      assert.equal(await c.endTask('task_c1', 'expired', '2026-01-01T00:11:00.000Z', 'system:writ'), undefined);
      assert.equal(await c.getTask('nope'), undefined);
    });

    const exception = (id: string, o: Partial<LegacyException> = {}): LegacyException => ({
      id, name: `legacy-${id}`, account: `app_${id}`, system: 'billing PostgreSQL', engine: 'main', rotateEverySeconds: 86_400,
      owner: { team: 'payments', contact: 'ana@example.org' }, justification: 'vendor app reads a static password from its config',
      compensatingControls: ['network-restricted to 10.0.3.0/24', 'read-only grants'], risks: ['NHI2', 'NHI7'],
      expiresAt: '2026-06-01T00:00:00.000Z', createdAt: '2026-01-01T00:00:00.000Z', createdBy: 'admin:a1', updatedAt: '2026-01-01T00:00:00.000Z',
      revision: 1, lastRotatedAt: null, nextRotationAt: '2026-01-02T00:00:00.000Z', lastRotationError: null, expiredFindingAt: null, secret: null, pendingSecret: null, ...o,
    });
    const sealedSecret = { v: 1 as const, kekId: 'k1', wrappedDek: 'd'.repeat(20), ciphertext: 'c'.repeat(40) };

    test('credentials: legacy exceptions round-trip, are unique by name and by engine account, and change by compare-and-set', async () => {
      const c = store.credentials;
      assert.equal(await c.insertException(exception('exc_1')), true);
      assert.deepEqual(await c.getException('exc_1'), exception('exc_1'));
      assert.equal(await c.insertException(exception('exc_2', { name: 'legacy-exc_1' })), false, 'a name is taken once');
      assert.equal(await c.insertException(exception('exc_3', { account: 'app_exc_1' })), false, 'one exception per engine account');
      assert.equal(await c.insertException(exception('exc_4', { engine: null, account: 'app_exc_1', rotateEverySeconds: null, nextRotationAt: null })), true, 'an account Writ does not rotate may repeat');
      assert.equal(await c.insertException(exception('exc_5', { engine: null, account: 'app_exc_1', rotateEverySeconds: null, nextRotationAt: null })), true);
      assert.deepEqual((await c.listExceptions()).map((e) => e.id), ['exc_1', 'exc_4', 'exc_5']);
      const peer = (await factory.openPeer?.()) ?? store;
      try {
        const racers = await Promise.all(Array.from({ length: 4 }, (_, i) => (i % 2 === 0 ? store : peer).credentials.updateException('exc_1', 1, { pendingSecret: { ...sealedSecret, ciphertext: `c${i}` } })));
        assert.equal(racers.filter((r) => r !== undefined).length, 1, 'exactly one rotation claims the revision');
      } finally {
        if (peer !== store) await peer.close();
      }
      const claimed = await c.getException('exc_1');
      assert.equal(claimed?.revision, 2);
      const done = await c.updateException('exc_1', 2, { secret: claimed?.pendingSecret ?? null, pendingSecret: null, lastRotatedAt: '2026-01-02T00:00:00.000Z', nextRotationAt: '2026-01-03T00:00:00.000Z', risks: ['NHI7'], compensatingControls: ['mfa on the jump host'], owner: { team: 'ops', contact: 'bo@example.org' } });
      assert.equal(done?.revision, 3);
      assert.deepEqual(done?.secret, claimed?.pendingSecret);
      assert.equal(done?.pendingSecret, null);
      assert.deepEqual(done?.risks, ['NHI7']);
      assert.deepEqual(done?.owner, { team: 'ops', contact: 'bo@example.org' });
      assert.equal(await c.updateException('exc_1', 2, { expiresAt: '2027-01-01T00:00:00.000Z' }), undefined, 'a stale revision changes nothing');
      assert.equal(await c.deleteException('exc_1'), true);
      assert.equal(await c.deleteException('exc_1'), false);
      assert.equal(await c.getException('exc_1'), undefined);
      assert.equal(await c.insertException(exception('exc_6', { account: 'app_exc_1' })), true, 'a deleted exception frees its account');
    });

    test('credentials: engine secrets are created once and move by compare-and-set', async () => {
      const c = store.credentials;
      assert.equal(await c.getEngineSecret('main'), undefined);
      const first = await c.ensureEngineSecret('main', '2026-01-01T00:00:00.000Z');
      assert.deepEqual(first, { engine: 'main', current: null, next: null, nextAt: null, rotatedAt: '2026-01-01T00:00:00.000Z', revision: 0 });
      assert.deepEqual(await c.ensureEngineSecret('main', '2026-02-01T00:00:00.000Z'), first, 'a second call keeps the row');
      const claimed = await c.updateEngineSecret('main', 0, { next: sealedSecret, nextAt: '2026-01-05T00:00:00.000Z' });
      assert.deepEqual(claimed, { ...first, next: sealedSecret, nextAt: '2026-01-05T00:00:00.000Z', revision: 1 });
      assert.equal(await c.updateEngineSecret('main', 0, { next: sealedSecret }), undefined, 'a stale revision changes nothing');
      const promoted = await c.updateEngineSecret('main', 1, { current: sealedSecret, next: null, nextAt: null, rotatedAt: '2026-01-05T00:00:00.000Z' });
      assert.deepEqual(promoted, { engine: 'main', current: sealedSecret, next: null, nextAt: null, rotatedAt: '2026-01-05T00:00:00.000Z', revision: 2 });
      assert.equal(await c.updateEngineSecret('other', 0, { next: null }), undefined);
    });

    test('a closed store says it is unavailable', async () => {
      const extra = (await factory.openPeer?.()) ?? undefined;
      if (extra === undefined) return;
      await extra.close();
      await assert.rejects(extra.ping(), (e: { code?: string }) => e.code === 'ERR_STORE_UNAVAILABLE');
    });
  });
}
