// The PDP port fails closed against real HTTP servers that misbehave, and the
// decision cache only repeats answers the PDP gave.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { ManualClock, Secret } from '../kernel/index.ts';
import { CachingPdp, RemotePdp } from './pdp-client.ts';
import type { AccessRequest, PdpClient, PdpDecision } from './pdp-client.ts';

type Handler = (req: IncomingMessage, res: ServerResponse, body: string) => void;

async function serve(handler: Handler): Promise<{ url: string; server: Server }> {
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => handler(req, res, body));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const a = server.address();
  if (typeof a !== 'object' || a === null) throw new Error('no port');
  return { url: `http://127.0.0.1:${a.port}`, server };
}

const REQ: AccessRequest = { subject: { type: 'workload', id: 'spiffe://writ.local/a' }, action: { name: 'http:GET' }, resource: { type: 'resource', id: 'api/hello' } };

describe('RemotePdp', () => {
  const servers: Server[] = [];
  const seen: { auth: string | undefined; traceparent: string | undefined; body: unknown }[] = [];
  let answer: Handler = (_q, res) => res.end();
  let url = '';
  before(async () => {
    const s = await serve((req, res, body) => {
      seen.push({ auth: req.headers.authorization, traceparent: req.headers.traceparent as string | undefined, body: JSON.parse(body) });
      answer(req, res, body);
    });
    servers.push(s.server);
    url = s.url;
  });
  after(() => {
    for (const s of servers) s.close();
  });
  const pdp = (timeoutMs = 2000) => new RemotePdp({ url, credential: new Secret('pep-credential'), timeoutMs });

  it('allows only on 200 with decision true, sending the PEP credential, the request and a trace id', async () => {
    answer = (_q, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'x-correlation-id': 'c0ffee' });
      res.end('{"decision":true}');
    };
    const d = await pdp().evaluate(REQ, { correlationId: '0123456789abcdef0123456789abcdef' });
    assert.deepEqual(d, { allow: true, reason: 'allowed by policy', decisionId: 'c0ffee', cached: false });
    const last = seen.at(-1);
    assert.equal(last?.auth, 'Bearer pep-credential');
    assert.match(last?.traceparent ?? '', /^00-0123456789abcdef0123456789abcdef-[0-9a-f]{16}-01$/);
    assert.deepEqual(last?.body, REQ);
  });

  it('denies decision false as a policy deny', async () => {
    answer = (_q, res) => res.end('{"decision":false}');
    const d = await pdp().evaluate(REQ);
    assert.equal(d.allow, false);
    assert.equal(d.code, 'ERR_ENFORCE_DENIED');
    assert.equal(d.reason, 'denied by policy');
  });

  const failures: [string, Handler, string, string][] = [
    ['a 500', (_q, res) => { res.writeHead(500); res.end('{"decision":true}'); }, 'ERR_ENFORCE_PDP_UNAVAILABLE', 'policy decision point answered status 500'],
    ['a 401 (bad PEP credential)', (_q, res) => { res.writeHead(401); res.end('{}'); }, 'ERR_ENFORCE_PDP_UNAVAILABLE', 'policy decision point answered status 401'],
    ['a body that is not JSON', (_q, res) => res.end('yes'), 'ERR_ENFORCE_PDP_MALFORMED', 'policy decision point answered a body that is not JSON'],
    ['decision "true" as a string', (_q, res) => res.end('{"decision":"true"}'), 'ERR_ENFORCE_PDP_MALFORMED', 'policy decision point answered without a boolean `decision`'],
    ['decision 1', (_q, res) => res.end('{"decision":1}'), 'ERR_ENFORCE_PDP_MALFORMED', 'policy decision point answered without a boolean `decision`'],
    ['no decision', (_q, res) => res.end('{"evaluations":[{"decision":true}]}'), 'ERR_ENFORCE_PDP_MALFORMED', 'policy decision point answered without a boolean `decision`'],
    ['a JSON array', (_q, res) => res.end('[true]'), 'ERR_ENFORCE_PDP_MALFORMED', 'policy decision point answered without a boolean `decision`'],
  ];
  for (const [what, handler, code, reason] of failures) {
    it(`denies on ${what}`, async () => {
      answer = handler;
      const d = await pdp().evaluate(REQ);
      assert.equal(d.allow, false);
      assert.equal(d.code, code);
      assert.equal(d.reason, reason);
    });
  }

  it('denies when the PDP does not answer in time', async () => {
    answer = () => undefined; // never answers
    const d = await pdp(150).evaluate(REQ);
    assert.equal(d.allow, false);
    assert.equal(d.code, 'ERR_ENFORCE_PDP_UNAVAILABLE');
    assert.equal(d.reason, 'policy decision point did not answer within 150 ms');
  });

  it('denies when the PDP is unreachable', async () => {
    const s = await serve((_q, res) => res.end());
    const dead = s.url;
    await new Promise<void>((r) => s.server.close(() => r()));
    const d = await new RemotePdp({ url: dead, credential: new Secret('x') }).evaluate(REQ);
    assert.equal(d.allow, false);
    assert.equal(d.code, 'ERR_ENFORCE_PDP_UNAVAILABLE');
    assert.equal(d.reason, 'policy decision point is unreachable');
  });
});

/** A PDP that answers from a script, counting calls. */
class ScriptedPdp implements PdpClient {
  calls = 0;
  next: PdpDecision = { allow: true, reason: 'allowed by policy', decisionId: 'd1', cached: false };
  async evaluate(): Promise<PdpDecision> {
    this.calls++;
    return this.next;
  }
}

describe('CachingPdp', () => {
  it('reuses an answer for the identical request until its TTL, then asks again', async () => {
    const clock = new ManualClock(1_000_000);
    const inner = new ScriptedPdp();
    const pdp = new CachingPdp(inner, { clock, ttlMs: 500 });
    assert.equal((await pdp.evaluate(REQ)).cached, false);
    const again = await pdp.evaluate({ resource: REQ.resource, action: REQ.action, subject: REQ.subject });
    assert.equal(again.cached, true);
    assert.equal(again.allow, true);
    assert.equal(inner.calls, 1);
    clock.advance(500);
    assert.equal((await pdp.evaluate(REQ)).cached, false);
    assert.equal(inner.calls, 2);
  });

  it('never caches a failure to ask', async () => {
    const inner = new ScriptedPdp();
    inner.next = { allow: false, code: 'ERR_ENFORCE_PDP_UNAVAILABLE', reason: 'policy decision point is unreachable', decisionId: 'x', cached: false };
    const pdp = new CachingPdp(inner, { clock: new ManualClock(0), ttlMs: 10_000 });
    await pdp.evaluate(REQ);
    await pdp.evaluate(REQ);
    assert.equal(inner.calls, 2);
    assert.equal(pdp.size, 0);
  });

  it('invalidate drops matching entries (a revoked subject) and clear drops all', async () => {
    const inner = new ScriptedPdp();
    const pdp = new CachingPdp(inner, { clock: new ManualClock(0), ttlMs: 10_000 });
    const other: AccessRequest = { ...REQ, subject: { type: 'workload', id: 'spiffe://writ.local/b' } };
    await pdp.evaluate(REQ);
    await pdp.evaluate(other);
    assert.equal(pdp.invalidate((r) => r.subject.id === 'spiffe://writ.local/a'), 1);
    inner.next = { allow: false, code: 'ERR_ENFORCE_DENIED', reason: 'denied by policy', decisionId: 'd2', cached: false };
    assert.equal((await pdp.evaluate(REQ)).allow, false);
    assert.equal((await pdp.evaluate(other)).cached, true);
    pdp.clear();
    assert.equal(pdp.size, 0);
    assert.equal((await pdp.evaluate(other)).allow, false);
  });

  it('ttl 0 disables the cache', async () => {
    const inner = new ScriptedPdp();
    const pdp = new CachingPdp(inner, { clock: new ManualClock(0), ttlMs: 0 });
    await pdp.evaluate(REQ);
    await pdp.evaluate(REQ);
    assert.equal(inner.calls, 2);
  });
});

describe('batch evaluation (AuthZEN Evaluations)', () => {
  let server: Server;
  let url = '';
  const paths: string[] = [];
  let answer = '{"evaluations":[{"decision":true},{"decision":false}]}';
  before(async () => {
    const s = await serve((req, res) => {
      paths.push(req.url ?? '');
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(answer);
    });
    server = s.server;
    url = s.url;
  });
  after(() => server.close());
  const OTHER: AccessRequest = { ...REQ, resource: { type: 'resource', id: 'api/admin' } };

  it('asks /access/v1/evaluations once and maps each item; a short or malformed answer denies every item', async () => {
    const pdp = new RemotePdp({ url, credential: new Secret('pep-credential') });
    const ds = await pdp.evaluateMany([REQ, OTHER]);
    assert.deepEqual(ds.map((d) => [d.allow, d.code]), [[true, undefined], [false, 'ERR_ENFORCE_DENIED']]);
    assert.equal(paths.at(-1), '/access/v1/evaluations');
    answer = '{"evaluations":[{"decision":true}]}';
    assert.deepEqual((await pdp.evaluateMany([REQ, OTHER])).map((d) => [d.allow, d.code]), [[false, 'ERR_ENFORCE_PDP_MALFORMED'], [false, 'ERR_ENFORCE_PDP_MALFORMED']]);
    answer = '{"evaluations":[{"decision":"yes"},{"decision":true}]}';
    assert.deepEqual((await pdp.evaluateMany([REQ, OTHER])).map((d) => [d.allow, d.code]), [[false, 'ERR_ENFORCE_PDP_MALFORMED'], [true, undefined]]);
    answer = '{"evaluations":[{"decision":true},{"decision":false}]}';
  });

  it('through the cache: hits are answered locally, only misses go out in one batch', async () => {
    const clock = new ManualClock(1_000_000);
    const cached = new CachingPdp(new RemotePdp({ url, credential: new Secret('pep-credential') }), { clock, ttlMs: 1000 });
    const n = paths.length;
    await cached.evaluateMany([REQ, OTHER]);
    const again = await cached.evaluateMany([REQ, OTHER]);
    assert.deepEqual(again.map((d) => [d.allow, d.cached]), [[true, true], [false, true]]);
    assert.equal(paths.length, n + 1, 'the second batch was answered from the cache');
  });
});
