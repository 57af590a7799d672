/**
 * The node API side of revocation (docs/identity-api.md): the node
 * revocation stream relays only `subject-revoked` events of the node's own
 * entries, resumes after `Last-Event-ID`, and SVID issuance fails closed when
 * the policy check cannot be made. A real server in process, called over
 * HTTP with signed node requests.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { systemClock } from '../../src/kernel/index.ts';
import { signNodeRequest } from '../../src/identity/index.ts';
import { startTestServer } from '../support/server.ts';
import type { TestServer } from '../support/server.ts';
import { attestWithJoinToken, newKey, nodeCall } from './support.ts';
import type { TestNode } from './support.ts';

const MINE = 'spiffe://writ.local/nr/mine';
const OTHER = 'spiffe://writ.local/nr/other';

interface Frame {
  event: string;
  id?: string;
  data: string;
}

/** Open the node revocation stream (signed request) and collect its frames. */
async function openStream(s: TestServer, node: TestNode, lastEventId?: number): Promise<{ frames: Frame[]; close(): void }> {
  const path = '/node/v1/revocations/stream';
  const authorization = await signNodeRequest({ chain: node.chain, privateKey: node.key.privateKey }, { method: 'GET', path }, systemClock);
  const abort = new AbortController();
  const res = await fetch(`${s.url}${path}`, { headers: { authorization, accept: 'text/event-stream', ...(lastEventId === undefined ? {} : { 'last-event-id': String(lastEventId) }) }, signal: abort.signal });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/);
  const frames: Frame[] = [];
  void (async () => {
    const decoder = new TextDecoder();
    let buf = '';
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        buf += decoder.decode(chunk, { stream: true });
        let end = buf.indexOf('\n\n');
        while (end !== -1) {
          const f: Frame = { event: 'message', data: '' };
          for (const line of buf.slice(0, end).split('\n')) {
            if (line.startsWith('event: ')) f.event = line.slice(7);
            else if (line.startsWith('id: ')) f.id = line.slice(4);
            else if (line.startsWith('data: ')) f.data = line.slice(6);
          }
          frames.push(f);
          buf = buf.slice(end + 2);
          end = buf.indexOf('\n\n');
        }
      }
    } catch {
      // aborted
    }
  })();
  return { frames, close: () => abort.abort() };
}

async function until<T>(what: string, probe: () => T | undefined, timeoutMs = 60_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = probe();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe('node API: revocation stream and the policy check before issuance', () => {
  let s: TestServer;
  let node: TestNode;
  let mineId: string;

  before(async () => {
    s = await startTestServer({ flags: { 'revocations.heartbeatMs': 200 } });
    node = await attestWithJoinToken(s);
    const mine = await s.call('POST', '/admin/v1/entries', { body: { spiffeId: MINE, parentId: node.spiffeId, selectors: ['unix:uid:1000'], owner: { team: 't', contact: 't@example.org' } } });
    assert.equal(mine.status, 201, mine.text);
    mineId = mine.json.id;
    const other = await s.call('POST', '/admin/v1/entries', { body: { spiffeId: OTHER, parentId: 'spiffe://writ.local/writ/node/someone-else', selectors: ['unix:uid:1000'], owner: { team: 't', contact: 't@example.org' } } });
    assert.equal(other.status, 201, other.text);
  });

  after(async () => {
    await s.stop();
  });

  it('relays subject-revoked of the node\'s own entries only, with heartbeats carrying the cursor, and resumes after Last-Event-ID', async () => {
    const stream = await openStream(s, node);
    await until('a heartbeat', () => stream.frames.find((f) => f.event === 'heartbeat'));
    const publish = async (body: Record<string, unknown>): Promise<number> => {
      const r = await s.call('POST', '/admin/v1/revocations', { body });
      assert.equal(r.status, 201, r.text);
      return r.json.cursor as number;
    };
    const foreign = await publish({ kind: 'subject-revoked', subject: OTHER, reason: 'admin-revoked' });
    const token = await publish({ kind: 'token-revoked', subject: MINE, tokenId: 'tok-1', reason: 'admin-revoked' });
    const own = await publish({ kind: 'subject-revoked', subject: MINE, reason: 'posture-failed' });
    const relayed = await until('the own revocation', () => stream.frames.find((f) => f.event === 'revocation'));
    assert.equal(relayed.id, String(own));
    const e = JSON.parse(relayed.data) as { kind: string; subject: string; reason: string; cursor: number };
    assert.deepEqual([e.kind, e.subject, e.reason, e.cursor], ['subject-revoked', MINE, 'posture-failed', own]);
    // The heartbeat's cursor moves past what was filtered out too.
    await until('a heartbeat at the head', () => stream.frames.find((f) => f.event === 'heartbeat' && f.data === `{"cursor":${own}}`));
    assert.equal(stream.frames.filter((f) => f.event === 'revocation').length, 1);
    stream.close();

    // Resumed after the foreign event: the own one is replayed, nothing else.
    const resumed = await openStream(s, node, foreign);
    const again = await until('the replayed revocation', () => resumed.frames.find((f) => f.event === 'revocation'));
    assert.equal(again.id, String(own));
    await until('a heartbeat', () => resumed.frames.find((f) => f.event === 'heartbeat'));
    assert.deepEqual(resumed.frames.filter((f) => f.event === 'revocation').map((f) => f.id), [String(own)]);
    assert.ok(token > foreign && token < own);
    resumed.close();
  });

  it('refuses a bad cursor and a caller without a node SVID, with codes', async () => {
    const path = '/node/v1/revocations/stream';
    const none = await fetch(`${s.url}${path}`);
    assert.equal(none.status, 401);
    assert.equal(((await none.json()) as { code: string }).code, 'ERR_ATTEST_NODE_UNAUTHENTICATED');
    // An admin credential is not a node SVID.
    const adminCall = await s.call('GET', path);
    assert.equal(adminCall.status, 401);
    assert.equal(adminCall.json.code, 'ERR_ATTEST_NODE_UNAUTHENTICATED');
    const authorization = await signNodeRequest({ chain: node.chain, privateKey: node.key.privateKey }, { method: 'GET', path }, systemClock);
    const bad = await fetch(`${s.url}${path}`, { headers: { authorization, 'last-event-id': 'abc' } });
    assert.equal(bad.status, 400);
    assert.deepEqual(((await bad.json()) as { code: string; message: string }).message, 'cursor `abc` is not a non-negative integer');
  });

  it('without policies an SVID is issued; a policy check that cannot be made refuses it (fail closed) and is audited', async () => {
    const key = newKey();
    const ok = await nodeCall(s, node, 'POST', '/node/v1/svid/x509', { entryId: mineId, publicKey: key.publicKeyPem });
    assert.equal(ok.status, 200, ok.text);
    s.server.identity.setIssuanceGate(async () => {
      throw new Error('the PDP is down');
    });
    const x = await nodeCall(s, node, 'POST', '/node/v1/svid/x509', { entryId: mineId, publicKey: key.publicKeyPem });
    assert.equal(x.status, 503, x.text);
    assert.equal(x.json.code, 'ERR_IDENTITY_SVID_POLICY_UNAVAILABLE');
    // A 5xx keeps its code; its message stays in the server log.
    assert.equal(x.json.message, 'internal error; see the server log for this correlation id');
    const j = await nodeCall(s, node, 'POST', '/node/v1/svid/jwt', { entryId: mineId, audience: ['https://a.example.org'] });
    assert.equal(j.status, 503, j.text);
    assert.equal(j.json.code, 'ERR_IDENTITY_SVID_POLICY_UNAVAILABLE');
    const events = (await s.call('GET', '/admin/v1/audit/events?action=svid.issued&limit=1000')).json.events as { outcome: string; reasons: string[]; target: { name: string }; details: { kind: string } }[];
    const failed = events.filter((e) => e.outcome === 'failure' && e.target.name === MINE);
    assert.deepEqual(failed.map((e) => [e.details.kind, e.reasons]), [['x509', ['pdp-unavailable']], ['jwt', ['pdp-unavailable']]]);
  });
});
