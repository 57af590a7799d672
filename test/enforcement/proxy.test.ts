// `writ proxy` as a child process in front of a test upstream, backed by a
// real `writ up`: the permitted caller reaches the upstream with the identity
// headers and without its token (a forged identity header is replaced); a
// denied caller and one without identity never reach it; with the server
// down the proxy denies.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createServer, request } from 'node:http';
import type { IncomingHttpHeaders, Server } from 'node:http';
import { ALLOWED, DENIED, WRIT, startWrit } from './support.ts';
import type { Writ } from './support.ts';

function call(port: number, path: string, headers: Record<string, string> = {}, method = 'GET', body?: string): Promise<{ status: number; headers: IncomingHttpHeaders; text: string }> {
  return new Promise((ok, fail) => {
    const req = request({ host: '127.0.0.1', port, path, method, headers: { host: 'hello.test', ...headers } }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      res.on('end', () => ok({ status: res.statusCode ?? 0, headers: res.headers, text }));
    });
    req.on('error', fail);
    req.end(body);
  });
}

describe('writ proxy', () => {
  let w: Writ;
  let upstream: Server;
  let child: ChildProcess;
  let out = '';
  let port = 0;
  const seen: { headers: IncomingHttpHeaders; url: string | undefined }[] = [];
  before(async () => {
    w = await startWrit();
    upstream = createServer((req, res) => {
      seen.push({ headers: req.headers, url: req.url });
      res.writeHead(200, { 'content-type': 'application/json', 'x-upstream': 'yes' });
      res.end(JSON.stringify({ hello: 'world' }));
    });
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', () => r()));
    const ua = upstream.address();
    const upPort = typeof ua === 'object' && ua !== null ? ua.port : 0;
    child = spawn(process.execPath, [WRIT, 'proxy', '--server', w.s.url, '--token-file', w.tokenFile, '--listen', '127.0.0.1:0', '--upstream', `http://127.0.0.1:${upPort}`, '--audience', 'writ-ext-authz'], { stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } });
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
    const deadline = Date.now() + 45_000;
    while (!/listening on [^\s]+:(\d+)/.test(out)) {
      if (child.exitCode !== null || Date.now() > deadline) throw new Error(`writ proxy did not start: ${out}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    port = Number(/listening on [^\s]+:(\d+)/.exec(out)?.[1]);
  });
  after(async () => {
    if (child.exitCode === null) {
      const gone = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await gone;
    }
    await new Promise<void>((r) => upstream.close(() => r()));
    await w.stop().catch(() => undefined);
  });

  it('the permitted caller reaches the upstream with identity headers, without its token; forged identity headers are replaced', async () => {
    const jwt = await w.jwt(ALLOWED);
    const r = await call(port, '/hello?q=1', { authorization: `Bearer ${jwt}`, 'x-writ-spiffe-id': 'spiffe://writ.local/forged', 'x-request-tag': 'kept' });
    assert.equal(r.status, 200);
    assert.equal(r.headers['x-upstream'], 'yes');
    assert.deepEqual(JSON.parse(r.text), { hello: 'world' });
    const last = seen.at(-1);
    assert.equal(last?.url, '/hello?q=1');
    assert.equal(last?.headers['x-writ-spiffe-id'], ALLOWED);
    assert.match(String(last?.headers['x-writ-decision-id']), /^[0-9a-f]{32}$/);
    assert.equal(last?.headers.authorization, undefined);
    assert.equal(last?.headers['x-request-tag'], 'kept');
    assert.equal(last?.headers['x-forwarded-host'], 'hello.test');
    assert.ok(!out.includes(jwt), 'the token reached the log');
  });

  it('denied and unauthenticated callers never reach the upstream', async () => {
    const before = seen.length;
    const denied = await call(port, '/hello', { authorization: `Bearer ${await w.jwt(DENIED)}` });
    assert.equal(denied.status, 403);
    assert.equal(JSON.parse(denied.text).code, 'ERR_ENFORCE_DENIED');
    const none = await call(port, '/hello');
    assert.equal(none.status, 401);
    // The catch-all route of the flag form accepts JWT-SVIDs and access tokens: both challenges (RFC 6750 §3, RFC 9449 §7.1).
    assert.equal(none.headers['www-authenticate'], 'Bearer realm="writ", DPoP realm="writ", algs="ES256 ES384 PS256 RS256 EdDSA"');
    assert.equal(JSON.parse(none.text).code, 'ERR_ENFORCE_UNAUTHENTICATED');
    const post = await call(port, '/hello', { authorization: `Bearer ${await w.jwt(ALLOWED)}`, 'content-type': 'text/plain' }, 'POST', 'body');
    assert.equal(post.status, 403);
    assert.equal(seen.length, before);
  });

  it('with the server down, a request the cache has not seen is denied', async () => {
    const jwt = await w.jwt(ALLOWED);
    const before = seen.length;
    await w.s.stop();
    const r = await call(port, '/hello/never-asked', { authorization: `Bearer ${jwt}` });
    assert.equal(r.status, 403);
    assert.equal(JSON.parse(r.text).code, 'ERR_ENFORCE_PDP_UNAVAILABLE');
    assert.equal(seen.length, before);
  });
});
