/**
 * The node API over mutual TLS, on real TLS connections: the node SVID as
 * client certificate authenticates renewals, entries and SVID issuance (no
 * signed request needed), checked with curl as an independent client; the
 * agent's client (HttpNodeApi) switches to mTLS once it holds a node SVID and
 * refuses a server that does not present the server SVID; an evicted node is
 * refused over mTLS with the same code as over signed requests.
 */
import assert from 'node:assert/strict';
import { X509Certificate, generateKeyPairSync } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:https';
import type { Server } from 'node:https';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { certificatesToPem } from '../../src/identity/index.ts';
import type { AgentNodeCredential } from '../../src/identity/index.ts';
import { HttpNodeApi } from '../../src/cli/node-api-client.ts';
import { startTestServer } from '../support/server.ts';
import type { TestServer } from '../support/server.ts';
import { pemKey, run, runWithInput, svidFromServerCa, tempDir, tlsCall, writeIdentity } from '../support/tls.ts';
import type { ClientIdentity } from '../support/tls.ts';
import { attestWithJoinToken, derChain, entryBody, newKey, nodeCall } from './support.ts';
import type { TestNode } from './support.ts';

const TD = 'writ.local';

function identityOf(node: TestNode): ClientIdentity {
  const [leaf] = node.chain;
  assert.ok(leaf !== undefined);
  return { cert: certificatesToPem(node.chain), key: pemKey(node.key.privateKey), leafDer: leaf };
}

function credentialOf(node: TestNode): AgentNodeCredential {
  const leaf = new X509Certificate(Buffer.from(node.chain[0] ?? new Uint8Array()));
  return {
    spiffeId: node.spiffeId,
    certChainDer: node.chain,
    privateKeyPkcs8Der: new Uint8Array(node.key.privateKey.export({ format: 'der', type: 'pkcs8' })),
    notBeforeMs: leaf.validFromDate.getTime(),
    notAfterMs: leaf.validToDate.getTime(),
  };
}

function spki(): { der: Uint8Array; pem: string; key: ReturnType<typeof generateKeyPairSync>['privateKey'] } {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { der: new Uint8Array(publicKey.export({ format: 'der', type: 'spki' })), pem: publicKey.export({ format: 'pem', type: 'spki' }).toString(), key: privateKey };
}

describe('node API over mutual TLS', () => {
  let s: TestServer;
  let port: number;
  let bundle: string;
  let dir: string;
  /** Client certificates seen by the TLS listener, by serial. */
  const seenSerials: string[] = [];

  before(async () => {
    s = await startTestServer({ flags: { 'tls.listen': '127.0.0.1:0' } });
    const tls = s.server.tls;
    assert.ok(tls !== undefined);
    port = tls.port;
    tls.server.on('secureConnection', (sock: TLSSocket) => {
      const c = sock.getPeerCertificate();
      if (c.serialNumber !== undefined) seenSerials.push(c.serialNumber.toLowerCase());
    });
    bundle = (await s.call('GET', '/bundle.pem', { token: null })).text;
    dir = tempDir();
    writeFileSync(join(dir, 'bundle.pem'), bundle);
  });
  after(async () => {
    await s.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('advertises the TLS listener and the server SPIFFE ID to attesting nodes', async () => {
    const t = await s.call('POST', '/admin/v1/join-tokens', { body: {} });
    const key = newKey();
    const r = await s.call('POST', '/node/v1/attest', { token: null, body: { method: 'join_token', token: t.json.token, publicKey: key.publicKeyPem } });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json.mtls, { url: `https://localhost:${port}`, serverSpiffeId: `spiffe://${TD}/writ/server` });
  });

  it('renews, lists entries and issues SVIDs with the node SVID as client certificate, no signature', async () => {
    const node = await attestWithJoinToken(s);
    const client = identityOf(node);
    const entry = await s.call('POST', '/admin/v1/entries', { body: entryBody(`spiffe://${TD}/mtls/web`, { parentId: node.spiffeId }) });
    assert.equal(entry.status, 201, entry.text);

    const next = newKey();
    const renew = await tlsCall(port, bundle, 'POST', '/node/v1/renew', { client, body: JSON.stringify({ publicKey: next.publicKeyPem }), headers: { 'content-type': 'application/json' } });
    assert.equal(renew.status, 200, renew.text);
    assert.equal(renew.json.svid.spiffeId, node.spiffeId);
    const renewed = new X509Certificate(Buffer.from(derChain(renew.json.svid)[0] ?? new Uint8Array()));
    assert.equal(renewed.publicKey.export({ format: 'pem', type: 'spki' }).toString(), next.publicKeyPem, 'the renewed SVID certifies the new key');

    const entries = await tlsCall(port, bundle, 'GET', '/node/v1/entries', { client });
    assert.equal(entries.status, 200, entries.text);
    assert.deepEqual(entries.json.entries.map((e: { id: string }) => e.id), [entry.json.id]);

    const workload = spki();
    const x509 = await tlsCall(port, bundle, 'POST', '/node/v1/svid/x509', { client, body: JSON.stringify({ entryId: entry.json.id, publicKey: workload.pem }), headers: { 'content-type': 'application/json' } });
    assert.equal(x509.status, 200, x509.text);
    assert.equal(x509.json.svid.spiffeId, `spiffe://${TD}/mtls/web`);
    const jwt = await tlsCall(port, bundle, 'POST', '/node/v1/svid/jwt', { client, body: JSON.stringify({ entryId: entry.json.id, audience: ['billing'] }), headers: { 'content-type': 'application/json' } });
    assert.equal(jwt.status, 200, jwt.text);

    // The audit trail says how the node authenticated.
    const events = (await s.call('GET', '/admin/v1/audit/events?action=svid.issued&limit=1000')).json.events as { details: { spiffeId: string; nodeAuth?: string }; reasons: string[] }[];
    const mine = events.filter((e) => e.details.spiffeId === `spiffe://${TD}/mtls/web` || (e.details.spiffeId === node.spiffeId && e.reasons.includes('node-renewal')));
    assert.equal(mine.length, 3);
    assert.ok(mine.every((e) => e.details.nodeAuth === 'mtls'));
    const signedCall = await nodeCall(s, node, 'POST', '/node/v1/svid/jwt', { entryId: entry.json.id, audience: ['billing'] });
    assert.equal(signedCall.status, 200, signedCall.text);
    const last = (await s.call('GET', '/admin/v1/audit/events?action=svid.issued&limit=1000')).json.events.at(-1) as { details: { nodeAuth?: string } };
    assert.equal(last.details.nodeAuth, 'signed-request');

    // The renewed node SVID works over mTLS as well.
    const renewedClient = { cert: certificatesToPem(derChain(renew.json.svid)), key: pemKey(next.privateKey), leafDer: derChain(renew.json.svid)[0] ?? new Uint8Array() };
    assert.equal((await tlsCall(port, bundle, 'GET', '/node/v1/entries', { client: renewedClient })).status, 200);
  });

  it('curl with the node SVID as --cert renews over mTLS, and is refused once the node is evicted', async () => {
    const node = await attestWithJoinToken(s);
    const files = writeIdentity(dir, `node-${node.id}`, identityOf(node));
    const next = newKey();
    const body = JSON.stringify({ publicKey: next.publicKeyPem });
    const curl = async (): Promise<{ status: number; json: any }> => {
      const { stdout } = await run('curl', ['-sS', '--cacert', join(dir, 'bundle.pem'), '--cert', files.certFile, '--key', files.keyFile, '--resolve', `localhost:${port}:127.0.0.1`,
        '-H', 'content-type: application/json', '--data-binary', body, '-w', '\n%{http_code}', `https://localhost:${port}/node/v1/renew`]);
      const i = stdout.lastIndexOf('\n');
      return { status: Number(stdout.slice(i + 1)), json: JSON.parse(stdout.slice(0, i)) };
    };
    const ok = await curl();
    assert.equal(ok.status, 200, JSON.stringify(ok.json));
    assert.equal(ok.json.svid.spiffeId, node.spiffeId);
    assert.equal(ok.json.mtls.serverSpiffeId, `spiffe://${TD}/writ/server`);

    const evict = await s.call('POST', `/admin/v1/nodes/${node.id}/evict`);
    assert.equal(evict.status, 200, evict.text);
    const refused = await curl();
    assert.equal(refused.status, 403);
    assert.equal(refused.json.code, 'ERR_ATTEST_NODE_EVICTED');
    assert.equal(refused.json.message, `node \`${node.id}\` was evicted`);
    // The same node's entries and SVIDs: refused too, over mTLS as over signed requests.
    const entries = await tlsCall(port, bundle, 'GET', '/node/v1/entries', { client: identityOf(node) });
    assert.equal(entries.status, 403);
    assert.equal(entries.json.code, 'ERR_ATTEST_NODE_EVICTED');
    const signed = await nodeCall(s, node, 'GET', '/node/v1/entries');
    assert.equal(signed.status, 403);
    assert.equal(signed.json.code, 'ERR_ATTEST_NODE_EVICTED');
  });

  it('openssl s_client with the node SVID as -cert lists the entries over mTLS', async () => {
    const node = await attestWithJoinToken(s);
    const files = writeIdentity(dir, `node-ossl-${node.id}`, identityOf(node));
    const r = await runWithInput('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-servername', 'localhost', '-CAfile', join(dir, 'bundle.pem'), '-verify_return_error', '-cert', files.certFile, '-key', files.keyFile, '-quiet', '-ign_eof'],
      'GET /node/v1/entries HTTP/1.0\r\nHost: localhost\r\n\r\n');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^HTTP\/1\.[01] 200 /);
    const body = JSON.parse(r.stdout.slice(r.stdout.indexOf('\r\n\r\n') + 4)) as { entries: unknown[]; mtls: { serverSpiffeId: string } };
    assert.deepEqual(body.entries, []);
    assert.equal(body.mtls.serverSpiffeId, `spiffe://${TD}/writ/server`);
  });

  it('needs a node SVID or a signature: no certificate, or a workload SVID, is unauthenticated', async () => {
    const none = await tlsCall(port, bundle, 'GET', '/node/v1/entries');
    assert.equal(none.status, 401);
    assert.equal(none.json.code, 'ERR_ATTEST_NODE_UNAUTHENTICATED');
    const workload = await svidFromServerCa(s, `spiffe://${TD}/app/web`);
    const r = await tlsCall(port, bundle, 'GET', '/node/v1/entries', { client: workload });
    assert.equal(r.status, 401);
    assert.equal(r.json.code, 'ERR_ATTEST_NODE_UNAUTHENTICATED');
  });

  it('the agent client attests over HTTP, then calls over mTLS; an evicted node is refused with the same code', async () => {
    const api = new HttpNodeApi(s.url);
    const key = spki();
    const t = await s.call('POST', '/admin/v1/join-tokens', { body: {} });
    const issued = await api.attest({ kind: 'join_token', token: t.json.token }, key.der);
    assert.equal(api.mtlsUrl, `https://localhost:${port}`);
    const node: TestNode = { id: issued.spiffeId.split('/').pop() ?? '', spiffeId: issued.spiffeId, key: { privateKey: key.key, publicKeyPem: key.pem }, chain: [...issued.certChainDer] };
    const cred = credentialOf(node);
    const serial = new X509Certificate(Buffer.from(node.chain[0] ?? new Uint8Array())).serialNumber.toLowerCase();

    const before = seenSerials.filter((x) => x === serial).length;
    const next = spki();
    const renewed = await api.renew(cred, next.der);
    assert.equal(renewed.spiffeId, node.spiffeId);
    assert.deepEqual(await api.fetchEntries(cred), []);
    assert.equal(seenSerials.filter((x) => x === serial).length, before + 2, 'both calls came in on the TLS listener with the node SVID');

    assert.equal((await s.call('POST', `/admin/v1/nodes/${node.id}/evict`)).status, 200);
    await assert.rejects(api.renew(cred, next.der), (e: { code?: string; status?: number; message?: string }) => {
      assert.equal(e.code, 'ERR_ATTEST_NODE_EVICTED');
      assert.equal(e.status, 403);
      assert.equal(e.message, `node \`${node.id}\` was evicted`);
      return true;
    });
  });

  it('the agent client restarted with a saved credential bootstraps the bundle, then calls over mTLS only', async () => {
    const node = await attestWithJoinToken(s);
    const cred = credentialOf(node);
    const serial = new X509Certificate(Buffer.from(node.chain[0] ?? new Uint8Array())).serialNumber.toLowerCase();
    // A fresh client (as after a restart) that was told where the TLS listener is.
    const api = new HttpNodeApi(s.url, { mtlsUrl: `https://localhost:${port}` });
    const before = seenSerials.filter((x) => x === serial).length;
    assert.deepEqual(await api.fetchEntries(cred), []);
    const bundle = await api.fetchBundle(cred);
    assert.deepEqual(bundle, (await s.call('GET', '/bundle', { token: null })).json);
    assert.equal(seenSerials.filter((x) => x === serial).length, before + 2, 'entries and bundle came over mTLS with the node SVID');
  });

  it('the agent client refuses a TLS server that does not present the server SVID, before sending anything', async () => {
    // An impostor with a perfectly valid SVID of the same trust domain, but not the server's SPIFFE ID.
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const svid = await s.server.identity.ca.issueX509Svid({ spiffeId: `spiffe://${TD}/app/impostor`, publicKey: publicKey.export({ format: 'pem', type: 'spki' }).toString(), dnsNames: ['localhost'] });
    let requests = 0;
    const impostor: Server = createServer({ key: pemKey(privateKey), cert: certificatesToPem(svid.chain) }, (_req, res) => {
      requests++;
      res.end('{}');
    });
    await new Promise<void>((r) => impostor.listen(0, '127.0.0.1', () => r()));
    try {
      const addr = impostor.address();
      const impostorPort = typeof addr === 'object' && addr !== null ? addr.port : 0;
      const node = await attestWithJoinToken(s);
      const api = new HttpNodeApi(s.url, { mtlsUrl: `https://localhost:${impostorPort}` });
      await assert.rejects(api.fetchEntries(credentialOf(node)), (e: { code?: string; status?: number; message?: string }) => {
        assert.equal(e.code, 'ERR_IDENTITY_AGENT_SERVER_UNTRUSTED');
        assert.equal(e.status, 502);
        assert.equal(e.message, `the writ server at https://localhost:${impostorPort} presented \`spiffe://${TD}/app/impostor\`, not \`spiffe://${TD}/writ/server\``);
        return true;
      });
      assert.equal(requests, 0);
    } finally {
      await new Promise<void>((r) => impostor.close(() => r()));
    }
  });
});
