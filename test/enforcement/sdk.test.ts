// The SDK against a real `writ up`: the Express-compatible middleware on a
// node:http server (bearer JWT-SVID, and the X.509-SVID of an mTLS peer whose
// client uses the SDK's mtlsAgent), the Fastify plugin, and the Workload API
// client over a real Workload API server socket.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, request } from 'node:http';
import type { IncomingHttpHeaders, Server } from 'node:http';
import { createServer as createHttpsServer, request as httpsRequest } from 'node:https';
import type { Agent as HttpsAgent } from 'node:https';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Fastify from 'fastify';
import type { FastifyInstance } from 'fastify';
import { certificatesToPem, WorkloadApiServer } from '../../src/identity/index.ts';
import type { WorkloadIdentitySource } from '../../src/identity/index.ts';
import { WorkloadApiClient, X509SvidWatcher, mtlsAgent, writAuthorize, writFastify } from '../../src/enforcement/sdk/index.ts';
import type { WritRequest, X509SvidHandle } from '../../src/enforcement/sdk/index.ts';
import { ALLOWED, AUDIENCE, DENIED, startWrit } from './support.ts';
import type { Writ } from './support.ts';

interface Res { status: number; headers: IncomingHttpHeaders; body: any }

function get(port: number, path: string, token?: string, o: { https?: boolean; agent?: HttpsAgent } = {}): Promise<Res> {
  const opts = { host: '127.0.0.1', port, path, method: 'GET', headers: { host: 'hello.test', ...(token === undefined ? {} : { authorization: `Bearer ${token}` }) }, ...(o.agent === undefined ? {} : { agent: o.agent }) };
  return new Promise((ok, fail) => {
    const req = (o.https === true ? httpsRequest : request)(opts, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      res.on('end', () => ok({ status: res.statusCode ?? 0, headers: res.headers, body: text === '' ? undefined : JSON.parse(text) }));
    });
    req.on('error', fail);
    req.end();
  });
}

describe('SDK middleware (Express-compatible) on node:http', () => {
  let w: Writ;
  let server: Server;
  let port = 0;
  let ran = 0;
  before(async () => {
    w = await startWrit();
    const authz = writAuthorize({ audience: AUDIENCE, server: w.s.url, credential: w.pep, skip: ['/healthz'] });
    server = createServer((req: WritRequest, res) => {
      authz(req, res, (err?: unknown) => {
        ran++;
        if (err !== undefined) {
          res.statusCode = 500;
          res.end();
          return;
        }
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ route: req.url, caller: req.writ ?? null }));
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const a = server.address();
    port = typeof a === 'object' && a !== null ? a.port : 0;
  });
  after(async () => {
    await new Promise<void>((r) => server.close(() => r()));
    await w.stop();
  });

  it('the permitted caller reaches the route with req.writ set', async () => {
    const r = await get(port, '/hello', await w.jwt(ALLOWED));
    assert.equal(r.status, 200);
    assert.equal(r.body.caller.spiffeId, ALLOWED);
    assert.equal(r.body.caller.method, 'jwt-svid');
    assert.match(r.body.caller.decisionId, /^[0-9a-f]{32}$/);
  });

  it('a denied caller gets 403 and the route never runs', async () => {
    const before = ran;
    const r = await get(port, '/hello', await w.jwt(DENIED));
    assert.equal(r.status, 403);
    assert.deepEqual([r.body.code, r.body.message], ['ERR_ENFORCE_DENIED', 'denied by policy']);
    assert.equal(ran, before);
  });

  it('no credential gets 401 with a Bearer challenge; a skipped path needs none', async () => {
    const r = await get(port, '/hello');
    assert.equal(r.status, 401);
    assert.equal(r.body.code, 'ERR_ENFORCE_UNAUTHENTICATED');
    assert.equal(r.headers['www-authenticate'], 'Bearer realm="writ"');
    const h = await get(port, '/healthz');
    assert.equal(h.status, 200);
    assert.equal(h.body.caller, null);
  });
});

describe('SDK middleware with mTLS: the peer X.509-SVID is the caller, presented through mtlsAgent', () => {
  let w: Writ;
  let server: ReturnType<typeof createHttpsServer>;
  let port = 0;
  let serverSvid: X509SvidHandle;
  before(async () => {
    w = await startWrit();
    serverSvid = await w.svid('spiffe://writ.local/hello-server');
    const authz = writAuthorize({ audience: AUDIENCE, server: w.s.url, credential: w.pep });
    server = createHttpsServer({
      cert: certificatesToPem(serverSvid.chain),
      key: serverSvid.privateKey.export({ format: 'pem', type: 'pkcs8' }),
      ca: certificatesToPem(serverSvid.bundle),
      requestCert: true,
      rejectUnauthorized: true,
    }, (req: WritRequest, res) => authz(req, res, () => {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ caller: req.writ ?? null }));
    }));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const a = server.address();
    port = typeof a === 'object' && a !== null ? a.port : 0;
  });
  after(async () => {
    await new Promise<void>((r) => server.close(() => r()));
    await w.stop();
  });

  it('allowed and denied workloads over mTLS; the client checks the server SPIFFE ID', async () => {
    const allowedAgent = mtlsAgent(await w.svid(ALLOWED), { serverId: 'spiffe://writ.local/hello-server' });
    const ok = await get(port, '/hello', undefined, { https: true, agent: allowedAgent });
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    assert.deepEqual([ok.body.caller.spiffeId, ok.body.caller.method], [ALLOWED, 'x509-svid']);
    const deniedAgent = mtlsAgent(await w.svid(DENIED), { serverId: 'spiffe://writ.local/hello-server' });
    const no = await get(port, '/hello', undefined, { https: true, agent: deniedAgent });
    assert.equal(no.status, 403);
    const wrongServer = mtlsAgent(await w.svid(ALLOWED), { serverId: 'spiffe://writ.local/someone-else' });
    await assert.rejects(get(port, '/hello', undefined, { https: true, agent: wrongServer }), /server SPIFFE ID `spiffe:\/\/writ.local\/hello-server` is not the expected one/);
    for (const a of [allowedAgent, deniedAgent, wrongServer]) a.destroy();
  });
});

describe('SDK Fastify plugin', () => {
  let w: Writ;
  let app: FastifyInstance;
  before(async () => {
    w = await startWrit();
    app = Fastify();
    await app.register(writFastify, { audience: AUDIENCE, server: w.s.url, credential: w.pep });
    app.get('/hello', async (req) => ({ caller: req.writ?.spiffeId }));
    app.get('/admin', async () => ({ secret: 'never' }));
    await app.ready();
  });
  after(async () => {
    await app.close();
    await w.stop();
  });

  it('allows the permitted caller, denies others per route, 401 without identity', async () => {
    const inject = async (url: string, token?: string) => app.inject({ method: 'GET', url, headers: { host: 'hello.test', ...(token === undefined ? {} : { authorization: `Bearer ${token}` }) } });
    const allowed = await w.jwt(ALLOWED);
    const ok = await inject('/hello', allowed);
    assert.equal(ok.statusCode, 200);
    assert.deepEqual(ok.json(), { caller: ALLOWED });
    const admin = await inject('/admin', allowed);
    assert.equal(admin.statusCode, 403);
    assert.equal(admin.json().code, 'ERR_ENFORCE_DENIED');
    assert.ok(!admin.body.includes('never'));
    const other = await inject('/hello', await w.jwt(DENIED));
    assert.equal(other.statusCode, 403);
    const none = await inject('/hello');
    assert.equal(none.statusCode, 401);
    assert.equal(none.headers['www-authenticate'], 'Bearer realm="writ"');
  });
});

describe('SDK Workload API client over a Workload API socket', () => {
  let w: Writ;
  let dir: string;
  let wl: WorkloadApiServer;
  let current: X509SvidHandle;
  const listeners = new Set<() => void>();
  before(async () => {
    w = await startWrit();
    current = await w.svid(ALLOWED);
    dir = mkdtempSync(join(tmpdir(), 'writ-sdk-wl-'));
    const material = () => ({
      spiffeId: current.spiffeId,
      certChainDer: current.chain,
      privateKeyPkcs8Der: new Uint8Array(current.privateKey.export({ format: 'der', type: 'pkcs8' })),
      bundleDer: current.bundle,
    });
    // The SVIDs come from the real server; this source only hands them out.
    const source: WorkloadIdentitySource = {
      x509Svids: async () => ({ svids: [material()], federatedBundles: new Map() }),
      x509Bundles: async () => ({ bundles: new Map([['spiffe://writ.local', current.bundle]]) }),
      jwtSvids: async (_c, audience) => [{ spiffeId: ALLOWED, token: await w.jwt(ALLOWED, audience[0]) }],
      jwtBundles: async () => new Map(),
      validateJwtSvid: async () => null,
      subscribe: (l) => {
        listeners.add(l);
        return () => listeners.delete(l);
      },
    };
    wl = new WorkloadApiServer({ socketPath: join(dir, 'agent.sock'), source });
    await wl.start();
  });
  after(async () => {
    await wl.stop();
    await w.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('fetches the X.509-SVID and a JWT-SVID the server accepts', async () => {
    const c = new WorkloadApiClient({ socket: join(dir, 'agent.sock') });
    try {
      const svid = await c.fetchX509Svid();
      assert.equal(svid.spiffeId, ALLOWED);
      assert.equal(svid.chain.length, 2);
      assert.equal(svid.bundle.length >= 1, true);
      const jwt = await c.fetchJwtSvid([AUDIENCE]);
      assert.equal(jwt.spiffeId, ALLOWED);
      assert.equal(jwt.token.split('.').length, 3);
    } finally {
      c.close();
    }
  });

  it('the watcher follows a rotation and rebuilds its mTLS agent', async () => {
    const c = new WorkloadApiClient({ socket: join(dir, 'agent.sock') });
    const watcher = await X509SvidWatcher.start(c);
    try {
      const firstSerial = Buffer.from(watcher.current.chain[0] ?? []).toString('base64');
      const a1 = watcher.agent();
      const rotated = new Promise<X509SvidHandle>((r) => watcher.onRotate(r));
      current = await w.svid(ALLOWED);
      for (const l of listeners) l();
      const next = await rotated;
      assert.notEqual(Buffer.from(next.chain[0] ?? []).toString('base64'), firstSerial);
      assert.equal(watcher.current, next);
      assert.notEqual(watcher.agent(), a1);
    } finally {
      watcher.stop();
      c.close();
    }
  });

  it('an unreachable socket fails with ERR_ENFORCE_WORKLOAD_API', async () => {
    const c = new WorkloadApiClient({ socket: join(dir, 'nobody.sock'), timeoutMs: 1000 });
    try {
      await assert.rejects(c.fetchX509Svid(), (e: unknown) => (e as { code?: string }).code === 'ERR_ENFORCE_WORKLOAD_API');
    } finally {
      c.close();
    }
  });
});

describe('package subpath export', () => {
  it('`writ/sdk` resolves to the SDK', async () => {
    const sdk = await import('writ/sdk');
    assert.equal(sdk.writAuthorize, writAuthorize);
    assert.equal(sdk.WorkloadApiClient, WorkloadApiClient);
  });
});
