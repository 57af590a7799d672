/**
 * The mutual-TLS listener (`tls.listen`) over real TLS connections: the
 * server SVID checked by openssl s_client against the served bundle, the
 * same routes as the plain listener, optional client certificates validated
 * as X.509-SVIDs (a foreign or self-signed one refused, fail closed), and
 * the server SVID rotated in place (new connections see the new one, an open
 * connection keeps working).
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { Agent } from 'node:https';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startTestServer } from '../support/server.ts';
import type { TestServer } from '../support/server.ts';
import { foreignCert, run, runWithInput, svidFromServerCa, tempDir, tlsCall } from '../support/tls.ts';
import { renewDelayMs } from '../../src/server/tls-listener.ts';

const TD = 'writ.local';
const SERVER_ID = `spiffe://${TD}/writ/server`;

describe('TLS listener', () => {
  let s: TestServer;
  let port: number;
  let bundle: string;
  let dir: string;

  before(async () => {
    s = await startTestServer({ flags: { 'tls.listen': '127.0.0.1:0' } });
    const tls = s.server.tls;
    assert.ok(tls !== undefined, 'the TLS listener is started');
    port = tls.port;
    bundle = (await s.call('GET', '/bundle.pem', { token: null })).text;
    dir = tempDir();
    writeFileSync(join(dir, 'bundle.pem'), bundle);
  });
  after(async () => {
    await s.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('is off by default', async () => {
    const plain = await startTestServer();
    try {
      assert.equal(plain.server.tls, undefined);
      assert.equal(plain.server.config['tls.listen'], '');
    } finally {
      await plain.stop();
    }
  });

  it('presents an X.509-SVID of the server that openssl s_client verifies against the bundle', async () => {
    const { code, stdout, stderr } = await runWithInput('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-servername', 'localhost', '-CAfile', join(dir, 'bundle.pem'), '-verify_return_error', '-verify_hostname', 'localhost', '-quiet', '-ign_eof'], 'GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n');
    assert.equal(code, 0, stderr);
    assert.match(stdout, /^HTTP\/1\.[01] 200 /);
    assert.match(stdout, /\{"status":"ok"\}/);
    const { stdout: shown } = await runWithInput('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-servername', 'localhost', '-CAfile', join(dir, 'bundle.pem'), '-verify_return_error', '-showcerts'], 'Q\n');
    assert.match(shown, /Verify return code: 0 \(ok\)/);
    const stdout2 = shown;
    const pem = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(stdout2)?.[0];
    assert.ok(pem !== undefined);
    writeFileSync(join(dir, 'server.pem'), pem);
    const { stdout: ext } = await run('openssl', ['x509', '-noout', '-ext', 'subjectAltName,keyUsage,extendedKeyUsage', '-in', join(dir, 'server.pem')]);
    assert.match(ext, new RegExp(`URI:${SERVER_ID.replace(/[/.]/g, '\\$&')}`));
    assert.match(ext, /DNS:localhost/);
    assert.match(ext, /TLS Web Server Authentication, TLS Web Client Authentication/);
    // The served SVID is the one the listener reports.
    assert.equal(new X509Certificate(pem).serialNumber.toLowerCase(), s.server.tls?.current().serialNumber.toLowerCase());
  });

  it('serves the same routes as the plain listener, without a client certificate', async () => {
    const r = await tlsCall(port, bundle, 'GET', '/healthz');
    assert.equal(r.status, 200);
    assert.deepEqual(r.json, { status: 'ok' });
    const b = await tlsCall(port, bundle, 'GET', '/bundle');
    assert.equal(b.status, 200);
    assert.deepEqual(b.json, (await s.call('GET', '/bundle', { token: null })).json);
    const admin = await tlsCall(port, bundle, 'GET', '/admin/v1/whoami', { headers: { authorization: `Bearer ${s.token}` } });
    assert.equal(admin.status, 200);
  });

  it('accepts a valid X.509-SVID as client certificate, which grants no admin access by itself', async () => {
    const client = await svidFromServerCa(s, `spiffe://${TD}/app/web`);
    const r = await tlsCall(port, bundle, 'GET', '/healthz', { client });
    assert.equal(r.status, 200, r.text);
    const admin = await tlsCall(port, bundle, 'GET', '/admin/v1/whoami', { client });
    assert.equal(admin.status, 401);
    assert.equal(admin.json.code, 'ERR_GOV_UNAUTHENTICATED');
  });

  it('refuses a presented but invalid client certificate on every route (fail closed)', async () => {
    const foreign = await foreignCert(dir);
    for (const path of ['/healthz', '/bundle', '/admin/v1/whoami']) {
      const r = await tlsCall(port, bundle, 'GET', path, { client: foreign, headers: { authorization: `Bearer ${s.token}` } });
      assert.equal(r.status, 401, path);
      assert.equal(r.json.code, 'ERR_SERVER_CLIENT_CERT_INVALID', path);
      assert.match(r.json.message, /^the TLS client certificate is not a valid X\.509-SVID of a trusted trust domain \(ERR_IDENTITY_BUNDLE_NOT_FOUND: no bundle for trust domain `other\.example`\)$/);
    }
    // Same trust domain name, but not signed by the CA: untrusted.
    const forged = await foreignCert(dir, `spiffe://${TD}/app/web`);
    const r = await tlsCall(port, bundle, 'GET', '/healthz', { client: forged });
    assert.equal(r.status, 401);
    assert.equal(r.json.code, 'ERR_SERVER_CLIENT_CERT_INVALID');
    assert.match(r.json.message, /ERR_IDENTITY_X509_SVID_UNTRUSTED/);
    // curl as an independent client: the same refusal.
    const { stdout } = await run('curl', ['-sS', '--cacert', join(dir, 'bundle.pem'), '--cert', foreign.certFile, '--key', foreign.keyFile, '--resolve', `localhost:${port}:127.0.0.1`, `https://localhost:${port}/healthz`]);
    assert.equal(JSON.parse(stdout).code, 'ERR_SERVER_CLIENT_CERT_INVALID');
  });

  it('rotates the server SVID in place: new connections get the new one, an open connection keeps working', async () => {
    const tls = s.server.tls;
    assert.ok(tls !== undefined);
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const before = await tlsCall(port, bundle, 'GET', '/healthz', { agent });
      assert.equal(before.serverSerial, tls.current().serialNumber.toLowerCase());
      const next = await tls.rotate();
      assert.notEqual(next.serialNumber.toLowerCase(), before.serverSerial);
      const fresh = await tlsCall(port, bundle, 'GET', '/healthz');
      assert.equal(fresh.serverSerial, next.serialNumber.toLowerCase());
      assert.equal(fresh.status, 200);
      // The kept-alive connection still has the old certificate and is still served.
      const kept = await tlsCall(port, bundle, 'GET', '/healthz', { agent });
      assert.equal(kept.status, 200);
      assert.equal(kept.serverSerial, before.serverSerial);
      // A new key each time.
      assert.notDeepEqual(new X509Certificate(Buffer.from(fresh.serverCertDer)).publicKey.export({ format: 'der', type: 'spki' }), new X509Certificate(Buffer.from(before.serverCertDer)).publicKey.export({ format: 'der', type: 'spki' }));
    } finally {
      agent.destroy();
    }
    // Each server SVID is in the audit trail.
    const audit = await s.call('GET', '/admin/v1/audit/events?action=svid.issued&limit=1000');
    assert.equal(audit.status, 200, audit.text);
    const serverEvents = (audit.json.events as { target: { name: string }; reasons: string[] }[]).filter((e) => e.target.name === SERVER_ID);
    assert.ok(serverEvents.length >= 2);
    assert.ok(serverEvents.every((e) => e.reasons.includes('server-tls')));
  });

  it('schedules rotation at half the SVID life', () => {
    const issuedAt = new Date(Date.UTC(2026, 0, 1, 0, 0, 0));
    const notAfter = new Date(issuedAt.getTime() + 900_000);
    assert.equal(renewDelayMs({ issuedAt, notAfter }, issuedAt.getTime()), 450_000);
    assert.equal(renewDelayMs({ issuedAt, notAfter }, issuedAt.getTime() + 400_000), 50_000);
    // Past half-life (a late timer): soon, but never a busy loop.
    assert.equal(renewDelayMs({ issuedAt, notAfter }, issuedAt.getTime() + 800_000), 1000);
  });
});

describe('TLS listener server SVID rotation by its timer', () => {
  it('replaces the server SVID at half its life, without a restart, before it expires', async () => {
    // The shortest lifetime the configuration allows (60 s): the timer fires after about 30 s.
    const s = await startTestServer({ flags: { 'tls.listen': '127.0.0.1:0', 'identity.x509SvidTtlSeconds': 60 } });
    try {
      const tls = s.server.tls;
      assert.ok(tls !== undefined);
      const bundle = (await s.call('GET', '/bundle.pem', { token: null })).text;
      const first = tls.current();
      assert.equal((first.notAfter.getTime() - first.issuedAt.getTime()) / 1000 <= 60, true);
      const firstSerial = first.serialNumber.toLowerCase();
      assert.equal((await tlsCall(tls.port, bundle, 'GET', '/healthz')).serverSerial, firstSerial);
      // Poll for the swap (generous bound for a loaded machine; the SVID itself lives 60 s).
      const end = Date.now() + 120_000;
      while (tls.current().serialNumber.toLowerCase() === firstSerial) {
        if (Date.now() > end) throw new Error('the server SVID was not rotated');
        await new Promise((r) => setTimeout(r, 250));
      }
      const next = tls.current();
      assert.ok(next.issuedAt.getTime() < first.notAfter.getTime(), 'the successor was issued before the first SVID expired');
      const r = await tlsCall(tls.port, bundle, 'GET', '/healthz');
      assert.equal(r.status, 200);
      assert.equal(r.serverSerial, next.serialNumber.toLowerCase());
      assert.ok(s.logs().includes('"msg":"server SVID rotated"'));
    } finally {
      await s.stop();
    }
  });
});
