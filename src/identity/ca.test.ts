import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { randomBytes } from 'node:crypto';
import { ManualClock, SpiffeId } from '../kernel/index.ts';
import type { AuditEventInput } from '../kernel/index.ts';
import { CaManager } from './ca.ts';
import type { CaManagerOptions } from './ca.ts';
import { CollectingAuditSink } from './audit-sink.test-support.ts';
import { MemoryCaKeyStore } from './memory-ca-key-store.test-support.ts';
import { generateSigningKeyPair } from './keys.ts';
import { certificatesToPem, validateX509Svid } from './x509-svid.ts';
import type { X509Svid } from './x509-svid.ts';
import { validateJwtSvid } from './jwt-svid.ts';
import type { JwtSvid } from './jwt-svid.ts';

const run = promisify(execFile);
const MIN = 60_000;
const HOUR = 60 * MIN;
const T0 = Date.parse('2026-03-01T00:00:00Z');

interface Rig {
  ca: CaManager;
  clock: ManualClock;
  audit: CollectingAuditSink;
  store: MemoryCaKeyStore;
  kek: Uint8Array;
}

async function rig(extra: Partial<CaManagerOptions> = {}, start = T0): Promise<Rig> {
  const clock = new ManualClock(start);
  const audit = new CollectingAuditSink();
  const store = new MemoryCaKeyStore();
  const kek = randomBytes(32);
  const ca = await CaManager.open({ trustDomain: 'example.org', clock, audit, store, kek, ...extra });
  return { ca, clock, audit, store, kek };
}

function stepsOf(events: readonly AuditEventInput[]): string[] {
  return events.map((e) => `${e.action}:${String(e.details?.kind)}:${e.outcome}`);
}

async function workloadKey(): Promise<CryptoKey> {
  return (await generateSigningKeyPair('ES256')).publicKey as unknown as CryptoKey;
}
type CryptoKey = Awaited<ReturnType<typeof generateSigningKeyPair>>['publicKey'];

test('opening an empty store creates, proves and activates the first keys, audited in order', async () => {
  const { ca, audit } = await rig();
  assert.deepEqual(stepsOf(audit.events), [
    'ca.key.prepared:x509:success',
    'ca.key.proved:x509:success',
    'ca.key.activated:x509:success',
    'ca.key.prepared:jwt:success',
    'ca.key.proved:jwt:success',
    'ca.key.activated:jwt:success',
  ]);
  const b = ca.bundle();
  assert.equal(b.x509Authorities.length, 1);
  assert.equal(b.jwtAuthorities.size, 1);
  assert.equal(b.sequence, 2);
  assert.equal(b.refreshHintSeconds, 300);
  assert.deepEqual(ca.keys().map((k) => `${k.kind}:${k.state}`).sort(), ['jwt:active', 'x509:active']);
  for (const e of audit.events) {
    assert.equal(e.actor.type, 'system');
    assert.equal(e.target?.type, 'ca-key');
    assert.match(String(e.details?.fingerprint), /^[0-9a-f]{64}$/);
  }
});

test('key slots move only prepare → prove → activate; out-of-order steps are refused with codes', async () => {
  const { ca, audit } = await rig();
  const seq0 = ca.bundle().sequence ?? 0;
  const id = await ca.prepare('jwt');
  // Prepared keys are published before they sign anything.
  assert.ok(ca.bundle().jwtAuthorities.has(id));
  assert.equal(ca.bundle().sequence, seq0 + 1);
  await assert.rejects(ca.activate(id), { code: 'ERR_IDENTITY_KEY_NOT_PROVED', message: `key \`${id}\` cannot be activated before a trial signature proved it` });
  await ca.prove(id);
  await assert.rejects(ca.prove(id), { code: 'ERR_IDENTITY_KEY_STATE_INVALID', message: `key \`${id}\` is proved and cannot prove` });
  const old = ca.activeKeyId('jwt');
  assert.ok(old !== undefined);
  await assert.rejects(ca.retire(old), { code: 'ERR_IDENTITY_KEY_STATE_INVALID', message: `key \`${old}\` is active and is retired only by activating its successor` });
  await assert.rejects(ca.activate('nope'), { code: 'ERR_IDENTITY_KEY_STATE_INVALID', message: 'no CA key `nope` in trust domain `example.org`' });
  await ca.activate(id);
  assert.equal(ca.activeKeyId('jwt'), id);
  await assert.rejects(ca.activate(id), { code: 'ERR_IDENTITY_KEY_STATE_INVALID', message: `key \`${id}\` is active and cannot activate` });
  // Activation does not change the bundle: both keys were already in it.
  assert.equal(ca.bundle().sequence, seq0 + 1);
  assert.deepEqual(stepsOf(audit.events.slice(6)), ['ca.key.prepared:jwt:success', 'ca.key.proved:jwt:success', 'ca.key.activated:jwt:success', 'ca.key.retired:jwt:success']);
  const retired = audit.events.at(-1);
  assert.equal(retired?.target?.id, old);
  assert.deepEqual(retired?.reasons, ['rotated']);
  // An abandoned prepared key leaves the bundle at once.
  const spare = await ca.prepare('x509', { newRoot: true });
  assert.equal(ca.bundle().x509Authorities.length, 2);
  await ca.retire(spare);
  assert.equal(ca.bundle().x509Authorities.length, 1);
  assert.deepEqual(audit.actions().slice(-2), ['ca.key.retired', 'ca.key.dropped']);
});

test('audit events and stored records carry no key material', async () => {
  const { ca, audit, store } = await rig();
  await ca.rotate('x509', { newRoot: true });
  await ca.rotate('jwt');
  const events = JSON.stringify(audit.events);
  assert.doesNotMatch(events, /PRIVATE KEY|BEGIN|wrapped|ciphertext|"d":|"x5c"/);
  for (const e of audit.events) {
    for (const key of Object.keys(e.details ?? {})) assert.ok(!['privateKey', 'key', 'pkcs8', 'jwk', 'd'].includes(key), key);
  }
  // Wrapped keys never appear in the audit trail either.
  for (const w of store.writes) {
    const rec = JSON.parse(w) as { wrappedPrivateKey: { ciphertext: string }; certificateChainPem?: string; publicJwk?: Record<string, unknown> };
    assert.ok(!events.includes(rec.wrappedPrivateKey.ciphertext));
    assert.doesNotMatch(w, /PRIVATE KEY/);
    assert.equal(rec.publicJwk?.d, undefined);
  }
  assert.ok(store.writes.length >= 8);
});

test('a rotation keeps the old root in the bundle until its last SVID has expired', async () => {
  const { ca, clock } = await rig({ x509SvidMaxTtlMs: HOUR, jwtSvidMaxTtlMs: HOUR });
  const pub = await workloadKey();
  clock.advance(10 * MIN);
  // The last SVIDs of the old keys, issued just before the rotation with the longest lifetime.
  const oldSvid = await ca.issueX509Svid({ spiffeId: 'spiffe://example.org/api', publicKey: pub, ttlMs: HOUR });
  const oldJwt = await ca.signJwtSvid({ spiffeId: 'spiffe://example.org/api', audience: 'billing', ttlMs: HOUR });
  const seq0 = ca.bundle().sequence ?? 0;
  await ca.rotate('x509', { newRoot: true });
  await ca.rotate('jwt');
  assert.equal(ca.bundle().x509Authorities.length, 2);
  assert.equal(ca.bundle().jwtAuthorities.size, 2);
  assert.equal(ca.bundle().sequence, seq0 + 2);
  const newSvid = await ca.issueX509Svid({ spiffeId: 'spiffe://example.org/api', publicKey: pub });
  assert.notDeepEqual(newSvid.chain.at(-1), oldSvid.chain.at(-1));
  // Both generations validate against the current bundle.
  assert.equal(validateX509Svid(oldSvid.chain, ca.bundle(), clock).spiffeId.toString(), 'spiffe://example.org/api');
  assert.equal(validateX509Svid(newSvid.chain, ca.bundle(), clock).spiffeId.toString(), 'spiffe://example.org/api');
  assert.equal((await validateJwtSvid(oldJwt.token, 'billing', ca.bundle(), clock)).kid, oldJwt.kid);
  // The old keys stay until retiredAt + the longest SVID lifetime.
  clock.advance(HOUR - 1000);
  await ca.runDue();
  assert.equal(ca.bundle().x509Authorities.length, 2);
  assert.equal(ca.bundle().jwtAuthorities.size, 2);
  assert.equal(validateX509Svid(oldSvid.chain, ca.bundle(), clock).spiffeId.toString(), 'spiffe://example.org/api');
  clock.advance(1000);
  assert.deepEqual(ca.due().map((d) => `${d.kind}:${d.step}`).sort(), ['jwt:drop', 'x509:drop']);
  await ca.runDue();
  assert.equal(ca.bundle().x509Authorities.length, 1);
  assert.equal(ca.bundle().jwtAuthorities.size, 1);
  assert.ok(!ca.bundle().jwtAuthorities.has(oldJwt.kid));
  assert.equal(ca.bundle().sequence, seq0 + 3);
  assert.deepEqual(ca.due(), []);
  // Everything the old keys signed had expired by then.
  assert.ok(oldSvid.notAfter.getTime() <= clock.nowMs());
  assert.ok(oldJwt.expiresAt.getTime() <= clock.nowMs());
  const fresh = await ca.issueX509Svid({ spiffeId: 'spiffe://example.org/api', publicKey: pub });
  assert.equal(validateX509Svid(fresh.chain, ca.bundle(), clock).spiffeId.toString(), 'spiffe://example.org/api');
  assert.deepEqual(fresh.chain.slice(1), newSvid.chain.slice(1));
});

test('rotating only the signing CA keeps the root and leaves the bundle unchanged', async () => {
  const { ca } = await rig();
  const seq = ca.bundle().sequence;
  const before = ca.bundle().x509Authorities[0];
  const old = ca.activeKeyId('x509');
  await ca.rotate('x509');
  assert.notEqual(ca.activeKeyId('x509'), old);
  assert.deepEqual(ca.bundle().x509Authorities, [before]);
  assert.equal(ca.bundle().sequence, seq);
});

test('scheduled rotation: prepare at half life, activate at five sixths, drop after the last SVID expired', async () => {
  const { ca, clock, audit } = await rig({ x509CaTtlMs: 24 * HOUR, jwtKeyTtlMs: 24 * HOUR });
  const x0 = ca.activeKeyId('x509');
  const j0 = ca.activeKeyId('jwt');
  clock.advance(12 * HOUR - 1000);
  assert.deepEqual(ca.due(), []);
  clock.advance(1000);
  assert.deepEqual(ca.due().map((d) => `${d.kind}:${d.step}`), ['x509:prepare', 'jwt:prepare']);
  const n = audit.events.length;
  await ca.runDue({ actor: { type: 'system', id: 'scheduler' } });
  assert.deepEqual(stepsOf(audit.events.slice(n)), ['ca.key.prepared:x509:success', 'ca.key.proved:x509:success', 'ca.key.prepared:jwt:success', 'ca.key.proved:jwt:success']);
  assert.ok(audit.events.slice(n).every((e) => e.actor.id === 'scheduler'));
  assert.equal(ca.activeKeyId('x509'), x0);
  assert.equal(ca.bundle().jwtAuthorities.size, 2);
  assert.deepEqual(ca.due(), []);
  clock.set(T0 + 20 * HOUR);
  assert.deepEqual(ca.due().map((d) => `${d.kind}:${d.step}`), ['x509:activate', 'jwt:activate']);
  await ca.runDue();
  assert.notEqual(ca.activeKeyId('x509'), x0);
  assert.notEqual(ca.activeKeyId('jwt'), j0);
  clock.advance(HOUR);
  assert.deepEqual(ca.due().map((d) => `${d.kind}:${d.step}`).sort(), ['jwt:drop', 'x509:drop']);
  await ca.runDue();
  assert.deepEqual(ca.keys().map((k) => `${k.kind}:${k.state}`).sort(), ['jwt:active', 'x509:active']);
});

test('keys survive a restart through the store; the wrong KEK cannot open them', async () => {
  const { ca, clock, audit, store, kek } = await rig();
  const pub = await workloadKey();
  const svid = await ca.issueX509Svid({ spiffeId: 'spiffe://example.org/api', publicKey: pub });
  const jwt = await ca.signJwtSvid({ spiffeId: 'spiffe://example.org/api', audience: 'billing' });
  const reopened = await CaManager.open({ trustDomain: 'example.org', clock, audit, store, kek });
  assert.equal(reopened.activeKeyId('x509'), ca.activeKeyId('x509'));
  assert.equal(reopened.activeKeyId('jwt'), ca.activeKeyId('jwt'));
  assert.ok(reopened.bundle().sameKeysAs(ca.bundle()));
  assert.ok((reopened.bundle().sequence ?? 0) >= (ca.bundle().sequence ?? 0));
  assert.equal(validateX509Svid(svid.chain, reopened.bundle(), clock).spiffeId.toString(), 'spiffe://example.org/api');
  assert.equal((await validateJwtSvid(jwt.token, 'billing', reopened.bundle(), clock)).kid, jwt.kid);
  // The reopened CA signs with the same keys.
  const again = await reopened.issueX509Svid({ spiffeId: 'spiffe://example.org/api', publicKey: pub });
  assert.deepEqual(again.chain.slice(1), svid.chain.slice(1));
  await assert.rejects(CaManager.open({ trustDomain: 'example.org', clock, audit, store, kek: randomBytes(32) }), { code: 'ERR_IDENTITY_KEY_UNWRAP_FAILED' });
  await assert.rejects(CaManager.open({ trustDomain: 'example.org', clock, audit, store, kek: randomBytes(16) }), {
    code: 'ERR_IDENTITY_KEK_INVALID',
    message: 'the key-encryption key must be 32 bytes, got 16',
  });
});

test('an upstream CA given as key and chain signs the signing CA; SVIDs pass openssl verify against its root', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'writ-upstream-'));
  try {
    const key = join(dir, 'up.key');
    const cert = join(dir, 'up.pem');
    await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert, '-subj', '/O=Upstream/CN=upstream root', '-days', '30',
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
    const upstream = { privateKeyPem: await readFile(key, 'utf8'), certificateChainPem: await readFile(cert, 'utf8') };
    const { ca } = await rig({ upstream }, Date.now());
    assert.equal(ca.bundle().x509Authorities.length, 1);
    assert.equal(ca.bundle().toPem().replace(/\s/g, ''), upstream.certificateChainPem.replace(/\s/g, ''));
    const svid = await ca.issueX509Svid({ spiffeId: 'spiffe://example.org/api', publicKey: await workloadKey() });
    const [leaf, ...inter] = svid.chain;
    assert.ok(leaf !== undefined);
    await writeFile(join(dir, 'bundle.pem'), ca.bundle().toPem());
    await writeFile(join(dir, 'intermediate.pem'), certificatesToPem(inter));
    await writeFile(join(dir, 'leaf.pem'), certificatesToPem([leaf]));
    const { stdout } = await run('openssl', ['verify', '-CAfile', join(dir, 'bundle.pem'), '-untrusted', join(dir, 'intermediate.pem'), '-purpose', 'sslclient', join(dir, 'leaf.pem')]);
    assert.match(stdout, /leaf\.pem: OK/);
    await assert.rejects(ca.rotate('x509', { newRoot: true }), { code: 'ERR_IDENTITY_UPSTREAM_INVALID', message: 'the root of an upstream CA is rotated upstream, not by Writ' });
    await ca.rotate('x509');
    assert.equal(ca.bundle().x509Authorities.length, 1);
    // A key that does not match the certificate is refused.
    const otherKey = join(dir, 'other.key');
    await run('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', otherKey]);
    await assert.rejects(rig({ upstream: { ...upstream, privateKeyPem: await readFile(otherKey, 'utf8') } }), {
      code: 'ERR_IDENTITY_UPSTREAM_INVALID',
      message: 'upstream private key does not match the upstream certificate',
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('rotation under load: SVIDs issued before, during and after rotations all validate against the current bundle', async () => {
  const { ca, clock } = await rig({ x509SvidMaxTtlMs: HOUR, jwtSvidMaxTtlMs: HOUR });
  const pub = await workloadKey();
  const x509s: X509Svid[] = [];
  const jwts: JwtSvid[] = [];
  const failures: string[] = [];
  let stop = false;
  const checkAll = async (): Promise<void> => {
    const bundle = ca.bundle();
    // Snapshots: the workers keep appending while this awaits.
    for (const s of [...x509s]) {
      try {
        validateX509Svid(s.chain, bundle, clock);
      } catch (e) {
        failures.push(`x509 ${s.serialNumber}: ${(e as Error).message}`);
      }
    }
    for (const j of [...jwts]) {
      try {
        await validateJwtSvid(j.token, 'peer', bundle, clock);
      } catch (e) {
        failures.push(`jwt ${j.kid}: ${(e as Error).message}`);
      }
    }
  };
  const worker = async (n: number): Promise<void> => {
    while (!stop) {
      const id = `spiffe://example.org/w/${n}`;
      const s = await ca.issueX509Svid({ spiffeId: id, publicKey: pub });
      const j = await ca.signJwtSvid({ spiffeId: id, audience: 'peer' });
      // Each new SVID is checked at once by a "peer" holding the bundle of this moment.
      try {
        validateX509Svid(s.chain, ca.bundle(), clock);
        await validateJwtSvid(j.token, 'peer', ca.bundle(), clock);
      } catch (e) {
        failures.push(`fresh ${id}: ${(e as Error).message}`);
      }
      x509s.push(s);
      jwts.push(j);
      // A steady stream rather than a flood, so the checks of every round stay cheap.
      await new Promise((r) => setTimeout(r, 25));
    }
  };
  const workers = [1, 2, 3].map(worker);
  const signers = new Set<string>();
  for (let round = 0; round < 6; round++) {
    // Each round waits for a few fresh SVIDs under the current keys, however slow the machine.
    const target = x509s.length + 4;
    while (x509s.length < target) await new Promise((r) => setTimeout(r, 5));
    // Time moves, but less in total than the 5-minute JWT-SVID lifetime: nothing may expire here.
    clock.advance(30_000);
    await ca.rotate('x509', { newRoot: round % 2 === 0 });
    await ca.rotate('jwt');
    signers.add(ca.activeKeyId('x509') ?? '');
    await checkAll();
  }
  stop = true;
  await Promise.all(workers);
  await checkAll();
  assert.deepEqual(failures, []);
  assert.equal(signers.size, 6);
  assert.ok(x509s.length >= 20, `issued ${x509s.length}`);
  assert.ok(new Set(x509s.map((s) => Buffer.from(s.chain.at(1) ?? []).toString('hex'))).size >= 3, 'SVIDs from several signing CAs');
  assert.ok(new Set(jwts.map((j) => j.kid)).size >= 3, 'JWT-SVIDs from several keys');
});

test('a JWT-SVID is signed only for a valid SPIFFE ID of the trust domain, given as a string or a parsed ID', async () => {
  const { ca, clock } = await rig();
  await assert.rejects(ca.signJwtSvid({ spiffeId: 'spiffe://other.org/api', audience: 'billing' }), {
    code: 'ERR_IDENTITY_SVID_REQUEST_INVALID',
    message: 'SPIFFE ID `spiffe://other.org/api` is not in trust domain `example.org`',
  });
  await assert.rejects(ca.signJwtSvid({ spiffeId: SpiffeId.parse('spiffe://other.org/api'), audience: 'billing' }), {
    code: 'ERR_IDENTITY_SVID_REQUEST_INVALID',
    message: 'SPIFFE ID `spiffe://other.org/api` is not in trust domain `example.org`',
  });
  await assert.rejects(ca.signJwtSvid({ spiffeId: 'spiffe://example.org/a/../b', audience: 'billing' }), { code: 'ERR_KERNEL_SPIFFE_ID_INVALID' });
  await assert.rejects(ca.signJwtSvid({ spiffeId: 'example.org', audience: 'billing' }), { code: 'ERR_KERNEL_SPIFFE_ID_INVALID' });
  await assert.rejects(ca.signJwtSvid({ spiffeId: 'spiffe://example.org', audience: 'billing' }), {
    code: 'ERR_IDENTITY_SVID_REQUEST_INVALID',
    message: 'SPIFFE ID `spiffe://example.org` has no path and cannot name a workload',
  });
  for (const spiffeId of ['spiffe://example.org/api', SpiffeId.parse('spiffe://example.org/api')]) {
    const jwt = await ca.signJwtSvid({ spiffeId, audience: 'billing' });
    assert.equal(jwt.spiffeId.toString(), 'spiffe://example.org/api');
    assert.equal((await validateJwtSvid(jwt.token, 'billing', ca.bundle(), clock)).spiffeId.toString(), 'spiffe://example.org/api');
  }
});
