import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { randomBytes } from 'node:crypto';
import { ManualClock, TrustDomain } from '../kernel/index.ts';
import { CaManager } from './ca.ts';
import { CollectingAuditSink } from './audit-sink.test-support.ts';
import { MemoryCaKeyStore } from './memory-ca-key-store.test-support.ts';
import { TrustBundle, bundleSet } from './bundle.ts';
import { generateSigningKeyPair, certSignatureParams, nodeWebCrypto } from './keys.ts';
import type { GeneratedKeyPair } from './keys.ts';
import * as x509 from './x509-lib.ts';
import { OID, createRootCertificate, createSigningCaCertificate } from './x509-certs.ts';
import { certificatesToPem, signX509Svid, validateX509Svid } from './x509-svid.ts';
import type { X509Authority } from './x509-svid.ts';

const run = promisify(execFile);
const MIN = 60_000;

async function openssl(args: string[]): Promise<{ stdout: string; stderr: string; code: number }> {
  try {
    const { stdout, stderr } = await run('openssl', args);
    return { stdout, stderr, code: 0 };
  } catch (e) {
    const err = e as { stdout?: string; stderr?: string; code?: number };
    return { stdout: err.stdout ?? '', stderr: err.stderr ?? '', code: err.code ?? 1 };
  }
}

async function withTmp<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'writ-x509-'));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** A CA opened at the real time, because openssl checks validity against the wall clock. */
async function realTimeCa(): Promise<{ ca: CaManager; clock: ManualClock }> {
  const clock = new ManualClock(Date.now());
  const ca = await CaManager.open({ trustDomain: 'example.org', clock, audit: new CollectingAuditSink(), store: new MemoryCaKeyStore(), kek: randomBytes(32) });
  return { ca, clock };
}

/** A hand-built root and signing CA, for crafting certificates that break the rules. */
async function handAuthority(td: string, now: number): Promise<{ authority: X509Authority; root: x509.X509Certificate; rootKey: GeneratedKeyPair; caKey: GeneratedKeyPair }> {
  const trustDomain = TrustDomain.parse(td);
  const rootKey = await generateSigningKeyPair('ES256');
  const root = await createRootCertificate({ trustDomain, id: 'r', publicKey: rootKey.publicKey, notBefore: new Date(now - MIN), notAfter: new Date(now + 1000 * MIN), pathLength: 1 }, rootKey.privateKey, 'ES256');
  const caKey = await generateSigningKeyPair('ES256');
  const ca = await createSigningCaCertificate(
    { trustDomain, id: 'i', publicKey: caKey.publicKey, notBefore: new Date(now - MIN), notAfter: new Date(now + 500 * MIN), pathLength: 0 },
    { certificate: root, privateKey: rootKey.privateKey, alg: 'ES256' },
  );
  return { authority: { certificate: ca, privateKey: caKey.privateKey, alg: 'ES256', intermediates: [new Uint8Array(ca.rawData)] }, root, rootKey, caKey };
}

const LIMITS = { defaultTtlMs: 15 * MIN, maxTtlMs: 60 * MIN };

test('an X.509-SVID and its signing CA pass openssl verify for sslclient and sslserver', async () => {
  const { ca } = await realTimeCa();
  const kp = await generateSigningKeyPair('ES256');
  const svid = await ca.issueX509Svid({ spiffeId: 'spiffe://example.org/ns/prod/sa/api', publicKey: kp.publicKey, dnsNames: ['api.internal'] });
  await withTmp(async (dir) => {
    const [leaf, ...intermediates] = svid.chain;
    assert.ok(leaf !== undefined);
    await writeFile(join(dir, 'bundle.pem'), ca.bundle().toPem());
    await writeFile(join(dir, 'intermediate.pem'), certificatesToPem(intermediates));
    await writeFile(join(dir, 'leaf.pem'), certificatesToPem([leaf]));
    for (const purpose of ['sslclient', 'sslserver']) {
      const r = await openssl(['verify', '-CAfile', join(dir, 'bundle.pem'), '-untrusted', join(dir, 'intermediate.pem'), '-purpose', purpose, join(dir, 'leaf.pem')]);
      assert.equal(r.code, 0, `${purpose}: ${r.stderr}`);
      assert.match(r.stdout, /leaf\.pem: OK/);
    }
    // The signing CA chains to the bundle on its own too.
    const r = await openssl(['verify', '-CAfile', join(dir, 'bundle.pem'), join(dir, 'intermediate.pem')]);
    assert.equal(r.code, 0, r.stderr);
    // And a leaf is refused without its intermediate: the bundle holds only the root.
    const alone = await openssl(['verify', '-CAfile', join(dir, 'bundle.pem'), join(dir, 'leaf.pem')]);
    assert.notEqual(alone.code, 0);
    assert.match(alone.stdout + alone.stderr, /unable to get local issuer certificate/);
  });
});

test('openssl reads the X509-SVID extensions of the leaf and of the signing CA', async () => {
  const { ca } = await realTimeCa();
  const kp = await generateSigningKeyPair('ES256');
  const svid = await ca.issueX509Svid({ spiffeId: 'spiffe://example.org/api', publicKey: kp.publicKey, dnsNames: ['api.internal', 'api.example.org'] });
  await withTmp(async (dir) => {
    const [leaf, signing] = svid.chain;
    assert.ok(leaf !== undefined && signing !== undefined);
    await writeFile(join(dir, 'leaf.pem'), certificatesToPem([leaf]));
    await writeFile(join(dir, 'ca.pem'), certificatesToPem([signing]));
    const ext = ['x509', '-noout', '-ext', 'subjectAltName,keyUsage,extendedKeyUsage,basicConstraints', '-in'];
    const l = await openssl([...ext, join(dir, 'leaf.pem')]);
    assert.equal(l.code, 0, l.stderr);
    const uris = l.stdout.match(/URI:[^,\s]+/g) ?? [];
    assert.deepEqual(uris, ['URI:spiffe://example.org/api']);
    assert.match(l.stdout, /DNS:api\.internal, DNS:api\.example\.org/);
    assert.match(l.stdout, /X509v3 Basic Constraints: critical\n\s+CA:FALSE/);
    assert.match(l.stdout, /X509v3 Key Usage: critical\n\s+Digital Signature/);
    assert.doesNotMatch(l.stdout, /Certificate Sign|CRL Sign/);
    assert.match(l.stdout, /X509v3 Extended Key Usage: *\n\s+TLS Web Server Authentication, TLS Web Client Authentication/);
    const c = await openssl([...ext, join(dir, 'ca.pem')]);
    assert.equal(c.code, 0, c.stderr);
    assert.match(c.stdout, /X509v3 Basic Constraints: critical\n\s+CA:TRUE/);
    assert.match(c.stdout, /X509v3 Key Usage: critical\n\s+Certificate Sign, CRL Sign/);
    // X509-SVID §4.1: the signing CA's SPIFFE ID has no path.
    assert.deepEqual(c.stdout.match(/URI:[^,\s]+/g), ['URI:spiffe://example.org']);
  });
});

test('issuance: 15 minute default TTL, capped by the server maximum and by the CA expiry; random serials', async () => {
  const now = Date.parse('2026-03-01T00:00:00Z');
  const clock = new ManualClock(now);
  const { authority } = await handAuthority('example.org', now);
  const kp = await generateSigningKeyPair('ES256');
  const d = await signX509Svid(authority, { spiffeId: 'spiffe://example.org/a', publicKey: kp.publicKey }, clock, LIMITS);
  assert.equal(d.notAfter.getTime() - now, 15 * MIN);
  const capped = await signX509Svid(authority, { spiffeId: 'spiffe://example.org/a', publicKey: kp.publicKey, ttlMs: 600 * MIN }, clock, LIMITS);
  assert.equal(capped.notAfter.getTime() - now, 60 * MIN);
  clock.set(now + 490 * MIN); // the signing CA expires at +500 min
  const atEdge = await signX509Svid(authority, { spiffeId: 'spiffe://example.org/a', publicKey: kp.publicKey }, clock, LIMITS);
  assert.equal(atEdge.notAfter.getTime(), now + 500 * MIN);
  assert.ok(atEdge.notAfter.getTime() <= authority.certificate.notAfter.getTime());
  clock.set(now + 500 * MIN);
  await assert.rejects(signX509Svid(authority, { spiffeId: 'spiffe://example.org/a', publicKey: kp.publicKey }, clock, LIMITS), {
    code: 'ERR_IDENTITY_CA_EXPIRED',
    message: 'the signing key expires too soon to sign anything',
  });
  const serials = new Set([d.serialNumber, capped.serialNumber, atEdge.serialNumber]);
  assert.equal(serials.size, 3);
  for (const s of serials) assert.match(s, /^[0-7][0-9a-f]{31}$/);
});

test('issuance refuses a path-less SPIFFE ID, bad DNS names and bad TTLs', async () => {
  const now = Date.parse('2026-03-01T00:00:00Z');
  const clock = new ManualClock(now);
  const { authority } = await handAuthority('example.org', now);
  const kp = await generateSigningKeyPair('ES256');
  const cases: [Parameters<typeof signX509Svid>[1], string][] = [
    [{ spiffeId: 'spiffe://example.org', publicKey: kp.publicKey }, 'SPIFFE ID `spiffe://example.org` has no path and cannot name a workload'],
    [{ spiffeId: 'spiffe://example.org/a', publicKey: kp.publicKey, dnsNames: ['bad name'] }, 'DNS name `bad name` is not valid'],
    [{ spiffeId: 'spiffe://example.org/a', publicKey: kp.publicKey, ttlMs: -5 }, 'ttl `-5` must be a positive number of milliseconds'],
  ];
  for (const [req, message] of cases) {
    await assert.rejects(signX509Svid(authority, req, clock, LIMITS), { code: 'ERR_IDENTITY_SVID_REQUEST_INVALID', message });
  }
  const { ca } = await realTimeCa();
  await assert.rejects(ca.issueX509Svid({ spiffeId: 'spiffe://other.org/a', publicKey: kp.publicKey }), {
    code: 'ERR_IDENTITY_SVID_REQUEST_INVALID',
    message: 'SPIFFE ID `spiffe://other.org/a` is not in trust domain `example.org`',
  });
});

test('validateX509Svid accepts a good SVID and reports its ID and the verified path', async () => {
  const now = Date.parse('2026-03-01T00:00:00Z');
  const clock = new ManualClock(now);
  const { authority, root } = await handAuthority('example.org', now);
  const kp = await generateSigningKeyPair('ES256');
  const svid = await signX509Svid(authority, { spiffeId: 'spiffe://example.org/api', publicKey: kp.publicKey }, clock, LIMITS);
  const bundle = new TrustBundle({ trustDomain: 'example.org', x509Authorities: [new Uint8Array(root.rawData)] });
  const v = validateX509Svid(svid.chain, bundle, clock);
  assert.equal(v.spiffeId.toString(), 'spiffe://example.org/api');
  assert.equal(v.verifiedChain.length, 3);
  assert.equal(v.expiresAt.getTime(), svid.notAfter.getTime());
  // PEM strings are accepted too.
  assert.equal(validateX509Svid(svid.chain.map((d) => certificatesToPem([d])), bundle, clock).spiffeId.toString(), 'spiffe://example.org/api');
});

interface LeafShape {
  uris?: string[];
  ca?: boolean;
  ku?: number | null;
  kuCritical?: boolean;
  eku?: string[] | null;
  notBefore?: number;
  notAfter?: number;
  extra?: x509.Extension[];
}

async function craftLeaf(authority: X509Authority, now: number, shape: LeafShape): Promise<Uint8Array> {
  const kp = await generateSigningKeyPair('ES256');
  const ext: x509.Extension[] = [new x509.BasicConstraintsExtension(shape.ca ?? false, undefined, true)];
  const ku = shape.ku === undefined ? x509.KeyUsageFlags.digitalSignature : shape.ku;
  if (ku !== null) ext.push(new x509.KeyUsagesExtension(ku, shape.kuCritical ?? true));
  const eku = shape.eku === undefined ? [OID.serverAuth, OID.clientAuth] : shape.eku;
  if (eku !== null) ext.push(new x509.ExtendedKeyUsageExtension(eku));
  const uris = shape.uris ?? ['spiffe://example.org/api'];
  if (uris.length > 0) ext.push(new x509.SubjectAlternativeNameExtension(uris.map((value) => ({ type: 'url' as const, value }))));
  ext.push(...(shape.extra ?? []));
  const cert = await x509.X509CertificateGenerator.create(
    {
      serialNumber: '01',
      subject: 'O=Test',
      issuer: authority.certificate.subjectName,
      notBefore: new Date(shape.notBefore ?? now - MIN),
      notAfter: new Date(shape.notAfter ?? now + 10 * MIN),
      publicKey: kp.publicKey,
      signingKey: authority.privateKey,
      signingAlgorithm: certSignatureParams('ES256'),
      extensions: ext,
    },
    nodeWebCrypto,
  );
  return new Uint8Array(cert.rawData);
}

test('validateX509Svid enforces the X509-SVID rules, one code and message each', async () => {
  const now = Date.parse('2026-03-01T00:00:00Z');
  const clock = new ManualClock(now);
  const { authority, root } = await handAuthority('example.org', now);
  const other = await handAuthority('example.org', now);
  const bundle = new TrustBundle({ trustDomain: 'example.org', x509Authorities: [new Uint8Array(root.rawData)] });
  const inter = authority.intermediates;
  const cases: [string, LeafShape, string, string][] = [
    ['two URI SANs', { uris: ['spiffe://example.org/a', 'spiffe://example.org/b'] }, 'ERR_IDENTITY_X509_SVID_INVALID', 'invalid X.509-SVID: leaf certificate contains more than one URI SAN'],
    ['no URI SAN', { uris: [] }, 'ERR_IDENTITY_X509_SVID_INVALID', 'invalid X.509-SVID: leaf certificate contains no URI SAN'],
    ['not a SPIFFE ID', { uris: ['https://example.org/a'] }, 'ERR_IDENTITY_X509_SVID_INVALID', 'invalid X.509-SVID: URI SAN `https://example.org/a` is not a valid SPIFFE ID'],
    ['no path', { uris: ['spiffe://example.org'] }, 'ERR_IDENTITY_X509_SVID_INVALID', 'invalid X.509-SVID: leaf SPIFFE ID has no path'],
    ['CA leaf', { ca: true }, 'ERR_IDENTITY_X509_SVID_INVALID', 'invalid X.509-SVID: leaf certificate must not have CA flag set to true'],
    ['no key usage', { ku: null }, 'ERR_IDENTITY_X509_SVID_INVALID', 'invalid X.509-SVID: leaf certificate must have a key usage extension'],
    ['key usage not critical', { kuCritical: false }, 'ERR_IDENTITY_X509_SVID_INVALID', 'invalid X.509-SVID: leaf certificate key usage must be critical'],
    ['no digitalSignature', { ku: x509.KeyUsageFlags.keyAgreement }, 'ERR_IDENTITY_X509_SVID_INVALID', "invalid X.509-SVID: leaf certificate must have 'digitalSignature' set as key usage"],
    ['keyCertSign', { ku: x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyCertSign }, 'ERR_IDENTITY_X509_SVID_INVALID', "invalid X.509-SVID: leaf certificate must not have 'keyCertSign' set as key usage"],
    ['cRLSign', { ku: x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.cRLSign }, 'ERR_IDENTITY_X509_SVID_INVALID', "invalid X.509-SVID: leaf certificate must not have 'cRLSign' set as key usage"],
    ['EKU without clientAuth', { eku: [OID.serverAuth] }, 'ERR_IDENTITY_X509_SVID_INVALID', 'invalid X.509-SVID: leaf certificate extended key usage must include serverAuth and clientAuth'],
    ['unknown critical extension', { extra: [new x509.Extension('1.2.3.4.5', true, new Uint8Array([5, 0]))] }, 'ERR_IDENTITY_X509_SVID_INVALID', 'invalid X.509-SVID: leaf certificate has an unsupported critical extension `1.2.3.4.5`'],
    ['expired', { notAfter: now - 1000 }, 'ERR_IDENTITY_X509_SVID_EXPIRED', 'leaf certificate has expired'],
    ['not yet valid', { notBefore: now + MIN }, 'ERR_IDENTITY_X509_SVID_EXPIRED', 'leaf certificate is not yet valid'],
  ];
  for (const [name, shape, code, message] of cases) {
    const leaf = await craftLeaf(authority, now, shape);
    assert.throws(() => validateX509Svid([leaf, ...inter], bundle, clock), { code, message }, name);
  }
  // An SVID without EKU is allowed (EKU is SHOULD).
  const noEku = await craftLeaf(authority, now, { eku: null });
  assert.equal(validateX509Svid([noEku, ...inter], bundle, clock).spiffeId.toString(), 'spiffe://example.org/api');
  // Signed by another CA of the same name: untrusted.
  const foreign = await craftLeaf(other.authority, now, {});
  assert.throws(() => validateX509Svid([foreign, ...other.authority.intermediates], bundle, clock), {
    code: 'ERR_IDENTITY_X509_SVID_UNTRUSTED',
    message: 'X.509-SVID does not chain to an authority of trust domain `example.org`',
  });
  // Missing intermediate: untrusted.
  const good = await craftLeaf(authority, now, {});
  assert.throws(() => validateX509Svid([good], bundle, clock), { code: 'ERR_IDENTITY_X509_SVID_UNTRUSTED' });
  // Only the bundle of the ID's own trust domain counts.
  const foreignTd = await craftLeaf(authority, now, { uris: ['spiffe://other.org/api'] });
  assert.throws(() => validateX509Svid([foreignTd, ...inter], bundle, clock), { code: 'ERR_IDENTITY_BUNDLE_NOT_FOUND', message: 'no bundle for trust domain `other.org`' });
  const otherBundle = new TrustBundle({ trustDomain: 'other.org', x509Authorities: [new Uint8Array(root.rawData)] });
  assert.equal(validateX509Svid([foreignTd, ...inter], bundleSet(bundle, otherBundle), clock).spiffeId.toString(), 'spiffe://other.org/api');
  // Garbage and empty chains are malformed.
  assert.throws(() => validateX509Svid([new Uint8Array([1, 2, 3])], bundle, clock), { code: 'ERR_IDENTITY_X509_SVID_MALFORMED', message: 'certificate 0 of the chain could not be parsed' });
  assert.throws(() => validateX509Svid([], bundle, clock), { code: 'ERR_IDENTITY_X509_SVID_MALFORMED', message: 'certificate chain is empty' });
  // An expired signing CA breaks the path.
  clock.set(now + 501 * MIN);
  const late = await craftLeaf(authority, now + 501 * MIN, {});
  assert.throws(() => validateX509Svid([late, ...inter], bundle, clock), { code: 'ERR_IDENTITY_X509_SVID_EXPIRED', message: 'intermediate certificate has expired' });
});

test('an intermediate that is not a CA cannot extend the path', async () => {
  const now = Date.parse('2026-03-01T00:00:00Z');
  const clock = new ManualClock(now);
  const { authority, root, rootKey } = await handAuthority('example.org', now);
  const bundle = new TrustBundle({ trustDomain: 'example.org', x509Authorities: [new Uint8Array(root.rawData)] });
  // A leaf-like certificate issued by the root, used as if it were a CA.
  const fakeCaKey = await generateSigningKeyPair('ES256');
  const fakeCa = await x509.X509CertificateGenerator.create(
    {
      serialNumber: '02', subject: 'CN=fake', issuer: root.subjectName, notBefore: new Date(now - MIN), notAfter: new Date(now + 100 * MIN),
      publicKey: fakeCaKey.publicKey, signingKey: rootKey.privateKey, signingAlgorithm: certSignatureParams('ES256'),
      extensions: [new x509.BasicConstraintsExtension(false, undefined, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyCertSign, true)],
    },
    nodeWebCrypto,
  );
  const leaf = await craftLeaf({ ...authority, certificate: fakeCa, privateKey: fakeCaKey.privateKey }, now, {});
  assert.throws(() => validateX509Svid([leaf, new Uint8Array(fakeCa.rawData)], bundle, clock), {
    code: 'ERR_IDENTITY_X509_SVID_INVALID',
    message: 'invalid X.509-SVID: intermediate certificate is not a CA',
  });
});

test('issuedAt is the signing instant: notBefore is backdated before it, the lifetime counts from it', async () => {
  const start = Date.parse('2026-03-01T00:00:00.250Z');
  const { authority } = await handAuthority('example.org', start);
  const kp = await generateSigningKeyPair('ES256');
  const clock = new ManualClock(start);
  const svid = await signX509Svid(authority, { spiffeId: 'spiffe://example.org/api', publicKey: kp.publicKey }, clock, LIMITS);
  // Time that passes after signing (a slow audit write, a loaded machine) changes none of this.
  clock.advance(1_500);
  assert.equal(svid.issuedAt.getTime(), start);
  assert.equal(svid.notBefore.getTime(), Date.parse('2026-02-28T23:59:50Z'));
  assert.equal(svid.notAfter.getTime(), Date.parse('2026-03-01T00:15:00Z'));
  assert.equal(Math.ceil((svid.notAfter.getTime() - svid.issuedAt.getTime()) / 1000), 15 * 60);
});
