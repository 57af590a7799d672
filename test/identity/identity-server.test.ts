/**
 * Workload identity served by a real Writ server over HTTP, on SQLite and on
 * PostgreSQL: registration entries, join-token attestation, node SVIDs,
 * workload SVIDs through the node API (checked with openssl and jose),
 * eviction, and CA rotation through the admin API.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';
import { startTestServer } from '../support/server.ts';
import type { TestServer } from '../support/server.ts';
import { skipWithoutPostgres } from '../support/services.ts';
import { attestWithJoinToken, derChain, entryBody, newKey, nodeCall, opensslText, opensslVerify } from './support.ts';
import type { TestNode } from './support.ts';

const TD = 'writ.local';

async function auditEvents(s: TestServer, action: string): Promise<any[]> {
  const r = await s.call('GET', `/admin/v1/audit/events?action=${encodeURIComponent(action)}&limit=10000`);
  assert.equal(r.status, 200, r.text);
  return r.json.events as any[];
}

function servedFlow(name: string, postgres: boolean): void {
  describe(`identity served over HTTP: ${name}`, () => {
    let s: TestServer;
    let skipped = false;

    before(async (t) => {
      if (postgres && (await skipWithoutPostgres(t as never))) {
        skipped = true;
        return;
      }
      s = await startTestServer({ postgres });
    });
    after(async () => {
      if (!skipped) await s.stop();
    });

    const it = (title: string, fn: () => Promise<void>) =>
      test(title, async (t) => {
        if (skipped) return t.skip('PostgreSQL not reachable');
        await fn();
      });

    it('entries: create, list, show, update, delete; audited as entry.created|updated|deleted', async () => {
      const c = await s.call('POST', '/admin/v1/entries', { body: entryBody(`spiffe://${TD}/billing`, { parentId: `spiffe://${TD}/writ/node/n1` }, { dnsNames: ['billing.internal'], environment: 'prod', x509SvidTtlSeconds: 600 }) });
      assert.equal(c.status, 201, c.text);
      const id = c.json.id as string;
      assert.match(id, /^[0-9a-f]{16}$/);
      assert.deepEqual({ ...c.json, id: undefined, createdAt: undefined, updatedAt: undefined, createdBy: undefined }, {
        id: undefined,
        createdAt: undefined,
        updatedAt: undefined,
        createdBy: undefined,
        spiffeId: `spiffe://${TD}/billing`,
        parentId: `spiffe://${TD}/writ/node/n1`,
        selectors: ['unix:uid:1000'],
        x509SvidTtlSeconds: 600,
        dnsNames: ['billing.internal'],
        environment: 'prod',
        owner: { team: 'payments', contact: 'ana@example.com' },
        revision: 1,
      });
      const list = await s.call('GET', '/admin/v1/entries');
      assert.ok((list.json.entries as { id: string }[]).some((e) => e.id === id));
      assert.equal((await s.call('GET', `/admin/v1/entries/${id}`)).json.spiffeId, `spiffe://${TD}/billing`);
      const u = await s.call('PATCH', `/admin/v1/entries/${id}`, { body: { jwtSvidTtlSeconds: 120, environment: null, revision: 1 } });
      assert.equal(u.status, 200, u.text);
      assert.equal(u.json.jwtSvidTtlSeconds, 120);
      assert.equal(u.json.environment, undefined);
      assert.equal(u.json.revision, 2);
      const stale = await s.call('PATCH', `/admin/v1/entries/${id}`, { body: { jwtSvidTtlSeconds: 60, revision: 1 } });
      assert.equal(stale.status, 409);
      assert.equal(stale.json.code, 'ERR_ENTRY_CONFLICT');
      assert.equal(stale.json.message, `entry \`${id}\` is at revision 2, not 1`);
      assert.equal((await s.call('DELETE', `/admin/v1/entries/${id}`)).status, 204);
      const gone = await s.call('GET', `/admin/v1/entries/${id}`);
      assert.equal(gone.status, 404);
      assert.equal(gone.json.code, 'ERR_ENTRY_NOT_FOUND');
      for (const action of ['entry.created', 'entry.updated', 'entry.deleted']) {
        const events = (await auditEvents(s, action)).filter((e) => e.target?.id === id);
        assert.equal(events.length, 1, action);
        assert.equal(events[0].details.spiffeId, `spiffe://${TD}/billing`);
        assert.equal(events[0].actor.type, 'admin');
      }
    });

    it('entries: registration refused with its own code (table: no owner, invalid SPIFFE ID, parent, selectors, TTL)', async () => {
      const parent = { parentId: `spiffe://${TD}/writ/node/n1` };
      const cases: [string, Record<string, unknown>, string, string][] = [
        ['no owner', { spiffeId: `spiffe://${TD}/a`, ...parent, selectors: ['unix:uid:1'] }, 'ERR_ENTRY_OWNER_REQUIRED', 'an entry needs an owner `{team, contact}`: an identity without an owner cannot be registered'],
        ['owner without contact', entryBody(`spiffe://${TD}/a`, parent, { owner: { team: 'payments' } }), 'ERR_ENTRY_OWNER_REQUIRED', 'an entry needs a human contact (`owner.contact`)'],
        ['owner with blank team', entryBody(`spiffe://${TD}/a`, parent, { owner: { team: '  ', contact: 'x@y' } }), 'ERR_ENTRY_OWNER_REQUIRED', 'an entry needs an owning team (`owner.team`)'],
        ['SPIFFE ID with a query', entryBody(`spiffe://${TD}/a?x=1`, parent), 'ERR_ENTRY_SPIFFE_ID_INVALID', ''],
        ['SPIFFE ID with an empty segment', entryBody(`spiffe://${TD}/a//b`, parent), 'ERR_ENTRY_SPIFFE_ID_INVALID', ''],
        ['SPIFFE ID of another trust domain', entryBody('spiffe://other.example/a', parent), 'ERR_ENTRY_SPIFFE_ID_INVALID', `SPIFFE ID \`spiffe://other.example/a\` is not in trust domain \`${TD}\``],
        ['trust domain ID', entryBody(`spiffe://${TD}`, parent), 'ERR_ENTRY_SPIFFE_ID_INVALID', `SPIFFE ID \`spiffe://${TD}\` has no path and cannot name a workload`],
        ['reserved /writ/ path', entryBody(`spiffe://${TD}/writ/node/x`, parent), 'ERR_ENTRY_SPIFFE_ID_INVALID', `SPIFFE ID \`spiffe://${TD}/writ/node/x\` uses the path \`/writ/\`, reserved for nodes and the server`],
        ['two parents', entryBody(`spiffe://${TD}/a`, parent, { nodeSelectors: ['oidc:sub:x'] }), 'ERR_ENTRY_PARENT_INVALID', 'an entry needs exactly one parent: `parentId` (a node SPIFFE ID) or `nodeSelectors`'],
        ['parent not a node', entryBody(`spiffe://${TD}/a`, { parentId: `spiffe://${TD}/billing` }), 'ERR_ENTRY_PARENT_INVALID', `\`parentId\` must be a node SPIFFE ID \`spiffe://${TD}/writ/node/<id>\``],
        ['no selectors', entryBody(`spiffe://${TD}/a`, parent, { selectors: [] }), 'ERR_ENTRY_SELECTOR_INVALID', '`selectors` needs at least one selector: an entry without selectors would match nothing'],
        ['bad unix uid', entryBody(`spiffe://${TD}/a`, parent, { selectors: ['unix:uid:-1'] }), 'ERR_ENTRY_SELECTOR_INVALID', 'invalid selector `unix:uid:-1`: malformed unix uid'],
        ['unknown k8s key', entryBody(`spiffe://${TD}/a`, parent, { selectors: ['k8s:cluster:x'] }), 'ERR_ENTRY_SELECTOR_INVALID', 'invalid selector `k8s:cluster:x`: k8s keys are ns, sa, pod-label, pod-name, pod-uid, container-name, container-image, node-name'],
        ['TTL above the server maximum', entryBody(`spiffe://${TD}/a`, parent, { x509SvidTtlSeconds: 7200 }), 'ERR_ENTRY_TTL_INVALID', '`x509SvidTtlSeconds` 7200 is above the server maximum of 3600 seconds'],
        ['zero JWT TTL', entryBody(`spiffe://${TD}/a`, parent, { jwtSvidTtlSeconds: 0 }), 'ERR_ENTRY_TTL_INVALID', '`jwtSvidTtlSeconds` must be a positive whole number of seconds'],
      ];
      for (const [title, body, code, message] of cases) {
        const r = await s.call('POST', '/admin/v1/entries', { body });
        assert.equal(r.status, 400, `${title}: ${r.text}`);
        assert.equal(r.json.code, code, title);
        if (message !== '') assert.equal(r.json.message, message, title);
      }
      // The SPIFFE ID message carries the kernel's rule.
      const q = await s.call('POST', '/admin/v1/entries', { body: entryBody(`spiffe://${TD}/a?x=1`, parent) });
      assert.match(q.json.message, /SPIFFE ID/);
    });

    it('entries: an auditor reads but cannot manage; an operator manages', async () => {
      const aud = await s.call('POST', '/admin/v1/principals', { body: { name: `aud-${postgres ? 'pg' : 'sq'}`, role: 'auditor' } });
      const op = await s.call('POST', '/admin/v1/principals', { body: { name: `op-${postgres ? 'pg' : 'sq'}`, role: 'operator' } });
      assert.equal(aud.status, 201, aud.text);
      const denied = await s.call('POST', '/admin/v1/entries', { token: aud.json.token, body: entryBody(`spiffe://${TD}/audit-test`, { parentId: `spiffe://${TD}/writ/node/n1` }) });
      assert.equal(denied.status, 403);
      assert.equal(denied.json.code, 'ERR_GOV_FORBIDDEN');
      assert.equal(denied.json.message, 'role `auditor` lacks permission `entries.manage`');
      assert.equal((await s.call('GET', '/admin/v1/entries', { token: aud.json.token })).status, 200);
      const made = await s.call('POST', '/admin/v1/entries', { token: op.json.token, body: entryBody(`spiffe://${TD}/operator-made`, { parentId: `spiffe://${TD}/writ/node/n1` }) });
      assert.equal(made.status, 201, made.text);
      assert.equal((await s.call('POST', '/admin/v1/ca/rotate', { token: aud.json.token, body: { kind: 'jwt' } })).status, 403);
    });

    it('join token: attests once; a replay, an expired and an unknown token fail with their own codes', async () => {
      const t = await s.call('POST', '/admin/v1/join-tokens', { body: { ttlSeconds: 600 } });
      assert.equal(t.status, 201, t.text);
      assert.match(t.json.token, /^wjt\.[0-9a-f]{16}\.[A-Za-z0-9_-]{43}$/);
      const key = newKey();
      const ok = await s.call('POST', '/node/v1/attest', { token: null, body: { method: 'join_token', token: t.json.token, publicKey: key.publicKeyPem } });
      assert.equal(ok.status, 200, ok.text);
      assert.match(ok.json.node.spiffeId, new RegExp(`^spiffe://${TD.replace('.', '\\.')}/writ/node/[0-9a-f]{16}$`));
      assert.deepEqual(ok.json.node.selectors, [`join_token:id:${t.json.id}`]);
      const replay = await s.call('POST', '/node/v1/attest', { token: null, body: { method: 'join_token', token: t.json.token, publicKey: newKey().publicKeyPem } });
      assert.equal(replay.status, 401);
      assert.equal(replay.json.code, 'ERR_ATTEST_JOIN_TOKEN_USED');
      assert.equal(replay.json.message, `join token \`${t.json.id}\` was already used`);
      const short = await s.call('POST', '/admin/v1/join-tokens', { body: { ttlSeconds: 1 } });
      await new Promise((r) => setTimeout(r, 1200));
      const expired = await s.call('POST', '/node/v1/attest', { token: null, body: { method: 'join_token', token: short.json.token, publicKey: key.publicKeyPem } });
      assert.equal(expired.status, 401);
      assert.equal(expired.json.code, 'ERR_ATTEST_JOIN_TOKEN_EXPIRED');
      const unknown = await s.call('POST', '/node/v1/attest', { token: null, body: { method: 'join_token', token: `wjt.0123456789abcdef.${'A'.repeat(43)}`, publicKey: key.publicKeyPem } });
      assert.equal(unknown.status, 401);
      assert.equal(unknown.json.code, 'ERR_ATTEST_JOIN_TOKEN_INVALID');
      assert.equal(unknown.json.message, 'join token `0123456789abcdef` is not known');
      // A bad public key is refused before the token is consumed.
      const fresh = await s.call('POST', '/admin/v1/join-tokens', { body: {} });
      const badKey = await s.call('POST', '/node/v1/attest', { token: null, body: { method: 'join_token', token: fresh.json.token, publicKey: 'not a key' } });
      assert.equal(badKey.json.code, 'ERR_ATTEST_REQUEST_INVALID');
      const after = await s.call('POST', '/node/v1/attest', { token: null, body: { method: 'join_token', token: fresh.json.token, publicKey: key.publicKeyPem } });
      assert.equal(after.status, 200, 'the token survived the bad request');
      const attested = await auditEvents(s, 'node.attested');
      assert.ok(attested.some((e) => e.outcome === 'success' && e.target.id === ok.json.node.id && e.details.joinTokenId === t.json.id));
      assert.ok(attested.some((e) => e.outcome === 'failure' && e.details.code === 'ERR_ATTEST_JOIN_TOKEN_USED'));
      const exported = (await s.call('GET', '/admin/v1/audit/export')).text;
      assert.ok(!exported.includes(t.json.token.split('.')[2]), 'the token secret is never in the audit log');
    });

    it('node SVID passes openssl verify (sslclient and sslserver) against the served bundle and follows the X509-SVID rules', async () => {
      const node = await attestWithJoinToken(s);
      const bundlePem = (await s.call('GET', '/bundle.pem', { token: null })).text;
      for (const purpose of ['sslclient', 'sslserver'] as const) {
        const v = await opensslVerify(bundlePem, node.chain, purpose);
        assert.equal(v.code, 0, v.out);
        assert.match(v.out, /OK/);
      }
      const text = await opensslText(node.chain[0] ?? new Uint8Array());
      assert.match(text, new RegExp(`URI:${node.spiffeId.replace(/[./]/g, '\\$&')}`));
      assert.match(text, /CA:FALSE/);
      assert.match(text, /X509v3 Key Usage: critical\s+Digital Signature/);
      assert.match(text, /TLS Web Server Authentication, TLS Web Client Authentication/);
    });

    let node: TestNode;
    let entryId: string;

    it('workload X.509-SVID through the node API passes openssl verify; its JWT-SVID verifies with jose createRemoteJWKSet against the live /keys', async () => {
      node = await attestWithJoinToken(s);
      const entry = await s.call('POST', '/admin/v1/entries', { body: entryBody(`spiffe://${TD}/api-${postgres ? 'pg' : 'sq'}`, { parentId: node.spiffeId }, { dnsNames: ['api.internal'], jwtSvidTtlSeconds: 120 }) });
      assert.equal(entry.status, 201, entry.text);
      entryId = entry.json.id;
      const entries = await nodeCall(s, node, 'GET', '/node/v1/entries');
      assert.equal(entries.status, 200, entries.text);
      assert.deepEqual(entries.json.entries.map((e: { id: string }) => e.id), [entryId]);
      const workloadKey = newKey();
      const x = await nodeCall(s, node, 'POST', '/node/v1/svid/x509', { entryId, publicKey: workloadKey.publicKeyPem });
      assert.equal(x.status, 200, x.text);
      assert.equal(x.json.svid.spiffeId, entry.json.spiffeId);
      const ttl = (Date.parse(x.json.svid.notAfter) - Date.now()) / 1000;
      assert.ok(ttl > 850 && ttl <= 900, `default X.509-SVID TTL is 15 minutes, got ${ttl}`);
      const bundlePem = (await s.call('GET', '/bundle.pem', { token: null })).text;
      for (const purpose of ['sslclient', 'sslserver'] as const) {
        const v = await opensslVerify(bundlePem, derChain(x.json.svid), purpose);
        assert.equal(v.code, 0, v.out);
      }
      assert.match(await opensslText(derChain(x.json.svid)[0] ?? new Uint8Array()), /DNS:api\.internal/);

      const j = await nodeCall(s, node, 'POST', '/node/v1/svid/jwt', { entryId, audience: ['billing'] });
      assert.equal(j.status, 200, j.text);
      assert.deepEqual(Object.keys(decodeProtectedHeader(j.json.token)).sort(), ['alg', 'kid', 'typ']);
      const discovery = (await s.call('GET', '/.well-known/openid-configuration', { token: null })).json;
      assert.equal(discovery.jwks_uri, `${s.url}/keys`);
      const jwks = createRemoteJWKSet(new URL(discovery.jwks_uri));
      const { payload } = await jwtVerify(j.json.token, jwks, { audience: 'billing' });
      assert.equal(payload.sub, entry.json.spiffeId);
      assert.equal((payload.exp ?? 0) - (payload.iat ?? 0), 120, 'the entry JWT TTL applies');
      await assert.rejects(jwtVerify(j.json.token, jwks, { audience: 'other' }), (e: { code?: string }) => e.code === 'ERR_JWT_CLAIM_VALIDATION_FAILED');

      const issued = (await auditEvents(s, 'svid.issued')).filter((e) => e.details.entryId === entryId);
      assert.equal(issued.length, 2);
      const xe = issued.find((e) => e.details.kind === 'x509');
      assert.deepEqual({ serial: xe.details.serialNumber, spiffeId: xe.details.spiffeId, node: xe.details.nodeId, ttl: xe.details.ttlSeconds }, { serial: x.json.svid.serialNumber, spiffeId: entry.json.spiffeId, node: node.id, ttl: 900 });
      assert.equal(xe.actor.type, 'node');
      const exported = (await s.call('GET', '/admin/v1/audit/export')).text;
      assert.ok(!exported.includes(j.json.token), 'the JWT-SVID is never in the audit log');
      assert.ok(!exported.includes('PRIVATE KEY'));
    });

    it('node API refuses unsigned, replayed, re-targeted and foreign-entry requests with their codes', async () => {
      const unsigned = await fetch(`${s.url}/node/v1/entries`);
      assert.equal(unsigned.status, 401);
      assert.equal(((await unsigned.json()) as { code: string }).code, 'ERR_ATTEST_NODE_UNAUTHENTICATED');
      const first = await nodeCall(s, node, 'GET', '/node/v1/entries');
      assert.equal(first.status, 200);
      const replay = await nodeCall(s, node, 'GET', '/node/v1/entries', undefined, { authorization: first.authorization });
      assert.equal(replay.status, 401);
      assert.equal(replay.json.code, 'ERR_ATTEST_NODE_UNAUTHENTICATED');
      assert.equal(replay.json.message, 'node request signature was already used');
      const signedForJwt = await nodeCall(s, node, 'POST', '/node/v1/svid/jwt', { entryId, audience: ['a'] });
      assert.equal(signedForJwt.status, 200);
      const moved = await nodeCall(s, node, 'POST', '/node/v1/svid/jwt', { entryId, audience: ['b'] }, { authorization: signedForJwt.authorization });
      assert.equal(moved.json.message, 'node request signature is for another body');
      const other = await attestWithJoinToken(s);
      const foreign = await nodeCall(s, other, 'POST', '/node/v1/svid/jwt', { entryId, audience: ['a'] });
      assert.equal(foreign.status, 404);
      assert.equal(foreign.json.code, 'ERR_ATTEST_NOT_ENTITLED');
      assert.equal(foreign.json.message, `node \`${other.id}\` may not serve entry \`${entryId}\``);
    });

    it('entries by node selectors apply to every node holding them', async () => {
      const tagged = await attestWithJoinToken(s, ['join_token:pool:blue']);
      const e = await s.call('POST', '/admin/v1/entries', { body: entryBody(`spiffe://${TD}/pool-blue-${postgres ? 'pg' : 'sq'}`, { nodeSelectors: ['join_token:pool:blue'] }) });
      assert.equal(e.status, 201, e.text);
      const mine = await nodeCall(s, tagged, 'GET', '/node/v1/entries');
      assert.ok(mine.json.entries.some((x: { id: string }) => x.id === e.json.id));
      const theirs = await nodeCall(s, node, 'GET', '/node/v1/entries');
      assert.ok(!theirs.json.entries.some((x: { id: string }) => x.id === e.json.id));
    });

    it('node renewal gives a fresh node SVID for a new key', async () => {
      const key = newKey();
      const r = await nodeCall(s, node, 'POST', '/node/v1/renew', { publicKey: key.publicKeyPem });
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json.svid.spiffeId, node.spiffeId);
      node = { ...node, key, chain: derChain(r.json.svid) };
      assert.equal((await nodeCall(s, node, 'GET', '/node/v1/entries')).status, 200);
    });

    it('CA rotation through the API: SVIDs issued before and after validate against the served bundle; steps audited; sequence grows', async () => {
      const workloadKey = newKey();
      const beforeX = await nodeCall(s, node, 'POST', '/node/v1/svid/x509', { entryId, publicKey: workloadKey.publicKeyPem });
      const beforeJ = await nodeCall(s, node, 'POST', '/node/v1/svid/jwt', { entryId, audience: ['billing'] });
      const seq0 = (await s.call('GET', '/bundle', { token: null })).json.spiffe_sequence as number;
      const rot = await s.call('POST', '/admin/v1/ca/rotate', { body: { kind: 'all' }, headers: { traceparent: '00-0123456789abcdef0123456789abcdef-0123456789abcdef-01' } });
      assert.equal(rot.status, 200, rot.text);
      assert.deepEqual(rot.json.keys.filter((k: { state: string }) => k.state === 'active').map((k: { kind: string }) => k.kind).sort(), ['jwt', 'x509']);
      assert.equal(rot.json.keys.filter((k: { state: string }) => k.state === 'retired').length, 2, 'the old keys stay published, retired');
      const bundle = (await s.call('GET', '/bundle', { token: null })).json;
      assert.ok(bundle.spiffe_sequence > seq0, `sequence ${bundle.spiffe_sequence} > ${seq0}`);
      assert.equal(bundle.spiffe_refresh_hint, 300);
      const afterX = await nodeCall(s, node, 'POST', '/node/v1/svid/x509', { entryId, publicKey: workloadKey.publicKeyPem });
      const afterJ = await nodeCall(s, node, 'POST', '/node/v1/svid/jwt', { entryId, audience: ['billing'] });
      assert.notEqual(decodeProtectedHeader(afterJ.json.token).kid, decodeProtectedHeader(beforeJ.json.token).kid);
      const bundlePem = (await s.call('GET', '/bundle.pem', { token: null })).text;
      for (const svid of [beforeX.json.svid, afterX.json.svid]) {
        const v = await opensslVerify(bundlePem, derChain(svid), 'sslclient');
        assert.equal(v.code, 0, v.out);
      }
      const jwks = createRemoteJWKSet(new URL(`${s.url}/keys`));
      for (const tok of [beforeJ.json.token, afterJ.json.token]) assert.equal((await jwtVerify(tok, jwks, { audience: 'billing' })).payload.sub, `spiffe://${TD}/api-${postgres ? 'pg' : 'sq'}`);
      const steps = (await s.call('GET', '/admin/v1/audit/events?correlationId=0123456789abcdef0123456789abcdef&limit=100')).json.events.map((e: { action: string }) => e.action);
      for (const a of ['ca.key.prepared', 'ca.key.proved', 'ca.key.activated', 'ca.key.retired']) assert.equal(steps.filter((x: string) => x === a).length, 2, `${a} for x509 and jwt`);
    });

    it('an evicted node gets nothing more: no entries, no SVIDs, no renewal, no re-attestation of its token', async () => {
      const ev = await s.call('POST', `/admin/v1/nodes/${node.id}/evict`, { body: {} });
      assert.equal(ev.status, 200, ev.text);
      assert.ok(ev.json.evictedAt !== null);
      for (const [method, path, body] of [['GET', '/node/v1/entries', undefined], ['POST', '/node/v1/svid/x509', { entryId, publicKey: newKey().publicKeyPem }], ['POST', '/node/v1/svid/jwt', { entryId, audience: ['x'] }], ['POST', '/node/v1/renew', { publicKey: newKey().publicKeyPem }]] as const) {
        const r = await nodeCall(s, node, method, path, body);
        assert.equal(r.status, 403, `${path}: ${r.text}`);
        assert.equal(r.json.code, 'ERR_ATTEST_NODE_EVICTED');
        assert.equal(r.json.message, `node \`${node.id}\` was evicted`);
      }
      const again = await s.call('POST', `/admin/v1/nodes/${node.id}/evict`, { body: {} });
      assert.equal(again.json.code, 'ERR_ATTEST_NODE_EVICTED');
      const nodes = (await s.call('GET', '/admin/v1/nodes')).json.nodes as { id: string; evictedAt: string | null }[];
      assert.ok(nodes.find((n) => n.id === node.id)?.evictedAt !== null);
      assert.equal((await auditEvents(s, 'node.evicted')).filter((e) => e.target.id === node.id).length, 1);
    });
  });
}

servedFlow('SQLite', false);
servedFlow('PostgreSQL', true);
