// `writ proxy --config` as a child process, terminating mTLS with its own
// X.509-SVID from a Workload API socket, in front of two test upstreams and
// backed by a real `writ up`. The clients are curl (mTLS, bearer, DPoP) and
// node:https; DPoP proofs are signed with jose. Covers the acceptance of
// issue 6 item 1: mTLS allow / deny reasons (no certificate, expired, other
// trust domain), DPoP binding, credential injection (exchange and static),
// policy deny, revocation (cache drop and connection close), rotation of the
// serving SVID without restart, audit and metrics, and fail closed with the
// server down.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createHash, generateKeyPairSync, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { IncomingHttpHeaders, Server } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { connect as tlsConnect } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { SignJWT, exportJWK, generateKeyPair, decodeJwt } from 'jose';
import { certificatesToPem, WorkloadApiServer } from '../../src/identity/index.ts';
import type { WorkloadIdentitySource } from '../../src/identity/index.ts';
import { GENESIS_HASH, chainHash } from '../../src/audit/index.ts';
import { canonicalJson } from '../../src/kernel/index.ts';
import { ALLOWED, WRIT, startWrit, until, listen } from './support.ts';
import type { Writ } from './support.ts';

const run = promisify(execFile);
const POLICIES = fileURLToPath(new URL('./fixtures/proxy-policies', import.meta.url));
const PROXY_ID = 'spiffe://writ.local/proxy';
const REVOKEE = 'spiffe://writ.local/revokee';
const STATIC_SECRET = 'legacy-static-s3cret-value';

interface Seen {
  readonly url: string | undefined;
  readonly headers: IncomingHttpHeaders;
}

interface Curl {
  status: number;
  headers: Record<string, string>;
  body: string;
  raw: string;
}

describe('writ proxy --config (mTLS, DPoP, injection, revocation, fail closed)', () => {
  let w: Writ;
  let dir: string;
  let wl: WorkloadApiServer;
  let clientWl: WorkloadApiServer;
  let child: ChildProcess;
  let out = '';
  let port = 0;
  let metricsPort = 0;
  let hello: Server;
  let legacy: Server;
  let issuer = '';
  const seenHello: Seen[] = [];
  const seenLegacy: Seen[] = [];
  const listeners = new Set<() => void>();
  let proxySvid: { chain: Uint8Array[]; keyDer: Uint8Array; serial: string };
  let bundleDer: Uint8Array[];
  const f = (name: string) => join(dir, name);

  async function issueProxySvid(): Promise<void> {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const s = await w.s.server.identity.ca.issueX509Svid({ spiffeId: PROXY_ID, publicKey: publicKey.export({ format: 'pem', type: 'spki' }).toString(), dnsNames: ['localhost'], ttlMs: 10 * 60_000 });
    proxySvid = { chain: [...s.chain], keyDer: new Uint8Array(privateKey.export({ format: 'der', type: 'pkcs8' })), serial: s.serialNumber };
  }

  /** A client X.509-SVID written as curl wants it; `ttlMs` short for the expired case. */
  async function clientSvid(name: string, spiffeId: string, ttlMs = 10 * 60_000): Promise<{ cert: string; key: string; notAfter: Date }> {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const s = await w.s.server.identity.ca.issueX509Svid({ spiffeId, publicKey: publicKey.export({ format: 'pem', type: 'spki' }).toString(), ttlMs });
    writeFileSync(f(`${name}.pem`), certificatesToPem(s.chain));
    writeFileSync(f(`${name}.key`), privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(), { mode: 0o600 });
    return { cert: f(`${name}.pem`), key: f(`${name}.key`), notAfter: s.notAfter };
  }

  async function curl(path: string, o: { cert?: { cert: string; key: string }; headers?: Record<string, string> } = {}): Promise<Curl> {
    const args = ['-sS', '-i', '--max-time', '20', '--cacert', f('bundle.pem'), ...(o.cert === undefined ? [] : ['--cert', o.cert.cert, '--key', o.cert.key])];
    for (const [k, v] of Object.entries(o.headers ?? {})) args.push('-H', `${k}: ${v}`);
    args.push(`https://localhost:${port}${path}`);
    const { stdout } = await run('curl', args, { maxBuffer: 1 << 20 });
    const [head = '', ...rest] = stdout.split('\r\n\r\n');
    const lines = head.split('\r\n');
    const headers: Record<string, string> = {};
    for (const l of lines.slice(1)) {
      const i = l.indexOf(':');
      const k = l.slice(0, i).toLowerCase();
      headers[k] = headers[k] === undefined ? l.slice(i + 1).trim() : `${headers[k]}, ${l.slice(i + 1).trim()}`;
    }
    return { status: Number(/^HTTP\/\S+ (\d{3})/.exec(lines[0] ?? '')?.[1]), headers, body: rest.join('\r\n\r\n'), raw: stdout };
  }

  /** GET /hello with a bearer token over `agent`'s one keep-alive socket; `socketClosed` settles when that socket closes. */
  function keepAliveGet(agent: HttpsAgent, token: string): Promise<{ status: number; body: string; socketClosed: Promise<void> }> {
    return new Promise((ok, fail) => {
      const req = httpsRequest({ host: 'localhost', port, path: '/hello', agent, headers: { authorization: `Bearer ${token}` } }, (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => ok({ status: res.statusCode ?? 0, body, socketClosed: new Promise((r) => req.socket?.once('close', () => r())) }));
      });
      req.on('error', fail);
      req.end();
    });
  }

  async function jwt(spiffeId: string, audience: string): Promise<string> {
    return (await w.s.server.identity.ca.signJwtSvid({ spiffeId, audience })).token;
  }

  before(async () => {
    w = await startWrit({ policies: POLICIES, flags: { 'revocations.heartbeatMs': 300 } });
    dir = mkdtempSync(join(tmpdir(), 'writ-proxy-e2e-'));
    writeFileSync(f('bundle.pem'), (await w.s.call('GET', '/bundle.pem', { token: null })).text);
    bundleDer = [];
    issuer = (await (await fetch(`${w.s.url}/.well-known/oauth-authorization-server`)).json() as { issuer: string }).issuer;
    await issueProxySvid();
    const bundleDerNow = () => (new X509Certificate(readFileSync(f('bundle.pem'))).raw);
    bundleDer = [new Uint8Array(bundleDerNow())];
    // The proxy's Workload API: SVIDs issued by the real server, handed out by a real Workload API server.
    const source: WorkloadIdentitySource = {
      x509Svids: async () => ({ svids: [{ spiffeId: PROXY_ID, certChainDer: proxySvid.chain, privateKeyPkcs8Der: proxySvid.keyDer, bundleDer }], federatedBundles: new Map() }),
      x509Bundles: async () => ({ bundles: new Map([['spiffe://writ.local', bundleDer]]) }),
      jwtSvids: async (_c, audience) => [{ spiffeId: PROXY_ID, token: await jwt(PROXY_ID, audience[0] ?? '') }],
      jwtBundles: async () => new Map(),
      validateJwtSvid: async () => null,
      subscribe: (l) => {
        listeners.add(l);
        return () => listeners.delete(l);
      },
    };
    wl = new WorkloadApiServer({ socketPath: f('agent.sock'), source });
    await wl.start();
    // The client's own Workload API: `writ svid fetch` writes what curl presents.
    const { privateKey: ck, publicKey: cp } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const clientIssued = await w.s.server.identity.ca.issueX509Svid({ spiffeId: ALLOWED, publicKey: cp.export({ format: 'pem', type: 'spki' }).toString(), ttlMs: 10 * 60_000 });
    const clientSource: WorkloadIdentitySource = {
      ...source,
      x509Svids: async () => ({ svids: [{ spiffeId: ALLOWED, certChainDer: [...clientIssued.chain], privateKeyPkcs8Der: new Uint8Array(ck.export({ format: 'der', type: 'pkcs8' })), bundleDer }], federatedBundles: new Map() }),
      subscribe: () => () => undefined,
    };
    clientWl = new WorkloadApiServer({ socketPath: f('client-agent.sock'), source: clientSource });
    await clientWl.start();

    hello = createServer((req, res) => {
      seenHello.push({ url: req.url, headers: req.headers });
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ hello: 'world' }));
    });
    legacy = createServer((req, res) => {
      seenLegacy.push({ url: req.url, headers: req.headers });
      // A careless legacy app echoes the credential it got: the proxy must not let it out.
      res.writeHead(200, { 'content-type': 'text/plain', 'x-echo-authorization': req.headers.authorization ?? '' });
      res.end('legacy ok');
    });
    const helloPort = await listen(hello);
    const legacyPort = await listen(legacy);
    writeFileSync(f('static.secret'), `${STATIC_SECRET}\n`, { mode: 0o600 });
    const config = {
      listen: '127.0.0.1:0',
      metricsListen: '127.0.0.1:0',
      audience: 'writ-proxy',
      workloadApiSocket: `unix://${f('agent.sock')}`,
      tls: { svid: { source: 'workload-api' }, clientCert: 'request' },
      pdp: { cacheTtlMs: 60_000 },
      revocations: { maxStalenessMs: 5000 },
      upstreams: { hello: { url: `http://127.0.0.1:${helloPort}` }, legacy: { url: `http://127.0.0.1:${legacyPort}` } },
      routes: [
        { name: 'hello', methods: ['GET'], path: '/hello', resource: 'hello.test{path}', upstream: 'hello', auth: ['mtls', 'jwt-svid', 'access-token'] },
        { name: 'admin', methods: ['GET'], path: '/admin', resource: 'hello.test{path}', upstream: 'hello', auth: ['mtls', 'jwt-svid'] },
        { name: 'reports', methods: ['GET'], path: '/reports', resource: 'hello.test{path}', upstream: 'hello', auth: ['access-token'] },
        { name: 'legacy', methods: ['GET'], path: '/legacy/{item}', resource: 'legacy-api/items', upstream: 'legacy', auth: ['mtls', 'jwt-svid'], auditAllowSampleRate: 0, stripCookies: ['session'], inject: { source: 'exchange', audience: 'legacy-api' } },
        { name: 'legacy-static', methods: ['GET'], path: '/static/{item}', resource: 'legacy-api/items', upstream: 'legacy', auth: ['mtls'], inject: { source: 'static', secretFile: f('static.secret'), format: 'basic', username: 'svc' } },
      ],
    };
    writeFileSync(f('proxy.json'), JSON.stringify(config, null, 2));
    child = spawn(process.execPath, [WRIT, 'proxy', '--config', f('proxy.json'), '--server', w.s.url, '--token-file', w.tokenFile, '--audit-log', f('audit.jsonl')], { stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } });
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
    await until('writ proxy to listen', async () => {
      if (child.exitCode !== null) throw new Error(`writ proxy exited: ${out}`);
      return /listening on [^\s]+:(\d+)/.test(out) ? true : undefined;
    });
    port = Number(/listening on [^\s]+:(\d+)/.exec(out)?.[1]);
    metricsPort = Number(/metrics on [^\s]+:(\d+)/.exec(out)?.[1]);
    // Ready once the revocation stream has been heard from: a caller is then decided, not refused as stale.
    const me = await clientSvid('client', ALLOWED);
    let last: Curl | undefined;
    await until('the proxy to allow', async () => {
      last = await curl('/hello', { cert: me });
      return last.status === 200 ? true : undefined;
    }).catch((e: unknown) => {
      throw new Error(`${(e as Error).message}; last answer: ${last?.raw ?? 'none'}; proxy output: ${out}`);
    });
  });

  after(async () => {
    if (child !== undefined && child.exitCode === null) {
      const gone = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await gone;
    }
    await wl?.stop();
    await clientWl?.stop();
    await Promise.all([hello, legacy].map((s) => new Promise<void>((r) => (s === undefined ? r() : s.close(() => r())))));
    await w?.stop().catch(() => undefined);
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it('curl with the X.509-SVID `writ svid fetch` wrote is allowed; the upstream gets the identity headers and no client credential', async () => {
    await run(process.execPath, [WRIT, 'svid', 'fetch', '--socket', `unix://${f('client-agent.sock')}`, '--out', f('fetched')], { env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } });
    const me = { cert: join(f('fetched'), 'svid.pem'), key: join(f('fetched'), 'svid_key.pem') };
    const before = seenHello.length;
    const r = await curl('/hello?x=1', { cert: me, headers: { 'x-writ-spiffe-id': 'spiffe://writ.local/forged', cookie: 'a=b' } });
    assert.equal(r.status, 200, r.raw);
    assert.deepEqual(JSON.parse(r.body), { hello: 'world' });
    assert.match(r.headers['x-writ-decision-id'] ?? '', /^[0-9a-f]{32}$/);
    const got = seenHello.at(-1);
    assert.equal(seenHello.length, before + 1);
    assert.equal(got?.url, '/hello?x=1');
    assert.equal(got?.headers['x-writ-spiffe-id'], ALLOWED);
    assert.equal(got?.headers['x-writ-decision-id'], r.headers['x-writ-decision-id']);
    assert.equal(got?.headers['x-forwarded-proto'], 'https');
    assert.equal(got?.headers.authorization, undefined);
  });

  it('without a certificate, with an expired SVID or one of another trust domain: 401 with the reason', async () => {
    const before = seenHello.length;
    const none = await curl('/hello');
    assert.equal(none.status, 401);
    assert.equal(JSON.parse(none.body).code, 'ERR_ENFORCE_UNAUTHENTICATED');
    assert.equal(JSON.parse(none.body).message, 'no caller identity: send an X.509-SVID (mTLS) or a JWT-SVID bearer or a Writ access token');
    assert.equal(none.headers['www-authenticate'], `Bearer realm="writ", DPoP realm="writ", algs="ES256 ES384 PS256 RS256 EdDSA"`);

    const short = await clientSvid('expired', ALLOWED, 1000);
    await until('the short SVID to expire', async () => (Date.now() > short.notAfter.getTime() + 1500 ? true : undefined));
    const expired = await curl('/hello', { cert: short });
    assert.equal(expired.status, 401);
    assert.equal(JSON.parse(expired.body).code, 'ERR_ENFORCE_CREDENTIAL_INVALID');
    assert.equal(JSON.parse(expired.body).message, 'X.509-SVID rejected: certificate has expired');
    assert.equal(expired.headers['www-authenticate'], 'Bearer realm="writ", error="invalid_token", error_description="X.509-SVID rejected: certificate has expired"');

    // Another trust domain: its own CA (openssl), a leaf with spiffe://other.test/hello-client.
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', f('other-ca.key'), '-out', f('other-ca.pem'), '-days', '1', '-subj', '/O=other', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign', '-addext', 'subjectAltName=URI:spiffe://other.test'], { stdio: 'ignore' });
    execFileSync('openssl', ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', f('other.key'), '-out', f('other.csr'), '-subj', '/O=other'], { stdio: 'ignore' });
    writeFileSync(f('other.ext'), 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=critical,URI:spiffe://other.test/hello-client\n');
    execFileSync('openssl', ['x509', '-req', '-in', f('other.csr'), '-CA', f('other-ca.pem'), '-CAkey', f('other-ca.key'), '-CAcreateserial', '-out', f('other.pem'), '-days', '1', '-extfile', f('other.ext')], { stdio: 'ignore' });
    const foreign = await curl('/hello', { cert: { cert: f('other.pem'), key: f('other.key') } });
    assert.equal(foreign.status, 401);
    assert.equal(JSON.parse(foreign.body).code, 'ERR_ENFORCE_CREDENTIAL_INVALID');
    assert.equal(JSON.parse(foreign.body).message, 'X.509-SVID rejected: trust domain `other.test` is not `writ.local`');
    assert.equal(seenHello.length, before, 'no denied request reached the upstream');
  });

  it('a policy deny is 403 with its reason code; an unknown route is 404', async () => {
    const me = await clientSvid('client', ALLOWED);
    const before = seenHello.length;
    const admin = await curl('/admin', { cert: me });
    assert.equal(admin.status, 403);
    assert.equal(JSON.parse(admin.body).code, 'ERR_ENFORCE_DENIED');
    const bearer = await curl('/admin', { headers: { authorization: `Bearer ${await jwt(ALLOWED, 'writ-proxy')}` } });
    assert.equal(bearer.status, 403);
    assert.equal(bearer.headers['www-authenticate'], 'Bearer realm="writ", error="insufficient_scope"');
    const nowhere = await curl('/nowhere', { cert: me });
    assert.equal(nowhere.status, 404);
    assert.equal(JSON.parse(nowhere.body).code, 'ERR_ENFORCE_ROUTE_NOT_FOUND');
    assert.equal(seenHello.length, before);
  });

  it('a DPoP-bound access token fails without its proof and works with it; a replayed proof fails', async () => {
    // The client gets a DPoP-bound token for the proxy from Writ's token endpoint (RFC 8693 + RFC 9449).
    const { privateKey, publicKey } = await generateKeyPair('ES256');
    const jwk = await exportJWK(publicKey);
    const proof = (htm: string, htu: string, extra: Record<string, unknown> = {}) => new SignJWT({ htm, htu, jti: crypto.randomUUID(), iat: Math.floor(Date.now() / 1000), ...extra }).setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk }).sign(privateKey);
    const tokenEndpoint = `${w.s.url}/oauth2/token`;
    const res = await fetch(tokenEndpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', dpop: await proof('POST', tokenEndpoint) },
      body: new URLSearchParams({ grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange', subject_token: await jwt(ALLOWED, issuer), subject_token_type: 'urn:ietf:params:oauth:token-type:jwt', audience: 'writ-proxy' }),
    });
    const tok = (await res.json()) as { access_token: string; token_type: string };
    assert.equal(res.status, 200, JSON.stringify(tok));
    assert.equal(tok.token_type, 'DPoP');
    const at = tok.access_token;
    const htu = `https://localhost:${port}/hello`;
    const ath = createHash('sha256').update(at).digest('base64url');
    const before = seenHello.length;

    const asBearer = await curl('/hello', { headers: { authorization: `Bearer ${at}` } });
    assert.equal(asBearer.status, 401);
    assert.equal(JSON.parse(asBearer.body).code, 'ERR_ENFORCE_DPOP_INVALID');
    assert.match(asBearer.headers['www-authenticate'] ?? '', /^DPoP realm="writ", error="invalid_token", error_description="the access token is DPoP-bound[^"]*", algs="ES256 ES384 PS256 RS256 EdDSA"$/);

    const noProof = await curl('/hello', { headers: { authorization: `DPoP ${at}` } });
    assert.equal(noProof.status, 401);
    assert.equal(JSON.parse(noProof.body).message, 'the DPoP proof is missing');
    assert.match(noProof.headers['www-authenticate'] ?? '', /^DPoP realm="writ", error="invalid_dpop_proof"/);

    const wrongUrl = await curl('/hello', { headers: { authorization: `DPoP ${at}`, dpop: await proof('GET', `https://localhost:${port}/admin`, { ath }) } });
    assert.equal(wrongUrl.status, 401);
    assert.equal(JSON.parse(wrongUrl.body).message, 'DPoP proof `htu` does not match the request URL');

    const good = await proof('GET', htu, { ath });
    const ok = await curl('/hello', { headers: { authorization: `DPoP ${at}`, dpop: good } });
    assert.equal(ok.status, 200, ok.raw);
    assert.equal(seenHello.at(-1)?.headers['x-writ-spiffe-id'], ALLOWED);
    assert.equal(seenHello.at(-1)?.headers.authorization, undefined);
    assert.equal(seenHello.at(-1)?.headers.dpop, undefined);
    const replay = await curl('/hello', { headers: { authorization: `DPoP ${at}`, dpop: good } });
    assert.equal(replay.status, 401);
    assert.equal(JSON.parse(replay.body).message, 'DPoP proof `jti` was already used');
    assert.equal(seenHello.length, before + 1);
  });

  it('credential injection: the legacy upstream gets an exchanged token, never the client\'s; the client never sees it', async () => {
    const clientToken = await jwt(ALLOWED, 'writ-proxy');
    const r = await curl('/legacy/42', { headers: { authorization: `Bearer ${clientToken}`, cookie: 'session=abc123; theme=dark' } });
    assert.equal(r.status, 200, r.raw);
    assert.equal(r.body, 'legacy ok');
    const got = seenLegacy.at(-1);
    const auth = got?.headers.authorization ?? '';
    assert.match(auth, /^Bearer [A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/);
    const injected = auth.slice('Bearer '.length);
    assert.notEqual(injected, clientToken);
    const claims = decodeJwt(injected);
    assert.equal(claims.aud, 'legacy-api');
    assert.equal(claims.sub, PROXY_ID);
    assert.equal(got?.headers['x-writ-spiffe-id'], ALLOWED);
    assert.equal(got?.headers.cookie, 'theme=dark');
    assert.ok(!JSON.stringify(got?.headers).includes(clientToken), 'the client token reached the upstream');
    assert.ok(!r.raw.includes(injected), 'the injected token reached the client');
    assert.equal(r.headers['x-echo-authorization'], undefined);
    // The next request reuses the exchanged token (no new exchange per request).
    await curl('/legacy/43', { headers: { authorization: `Bearer ${clientToken}` } });
    assert.equal(seenLegacy.at(-1)?.headers.authorization, auth);
  });

  it('static injection for an exception: HTTP Basic to the upstream, never to the client, the log or the audit', async () => {
    const me = await clientSvid('client', ALLOWED);
    const r = await curl('/static/7', { cert: me });
    assert.equal(r.status, 200, r.raw);
    const basic = `Basic ${Buffer.from(`svc:${STATIC_SECRET}`).toString('base64')}`;
    assert.equal(seenLegacy.at(-1)?.headers.authorization, basic);
    assert.ok(!r.raw.includes(STATIC_SECRET) && !r.raw.includes(basic.slice(6)));
    await until('the audit log to be written', async () => (readFileSync(f('audit.jsonl'), 'utf8').includes('"legacy-static"') ? true : undefined));
    const audit = readFileSync(f('audit.jsonl'), 'utf8');
    assert.ok(!audit.includes(STATIC_SECRET) && !audit.includes(basic.slice(6)));
    assert.ok(!out.includes(STATIC_SECRET));
  });

  it('audits every deny and sampled allows in a hash chain without credentials; metrics per route', async () => {
    await until('the deny records', async () => (readFileSync(f('audit.jsonl'), 'utf8').includes('ERR_ENFORCE_DPOP_INVALID') ? true : undefined));
    const lines = readFileSync(f('audit.jsonl'), 'utf8').trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, any>);
    let prev = GENESIS_HASH;
    lines.forEach((rec, i) => {
      const { seq, prevHash, hash, ...body } = rec;
      assert.equal(seq, i + 1);
      assert.equal(prevHash, prev);
      assert.equal(hash, chainHash(prev, seq, canonicalJson(body)));
      prev = hash;
    });
    const denied = lines.filter((l) => l.action === 'request.denied');
    const codes = new Set(denied.map((l) => l.details.code));
    for (const c of ['ERR_ENFORCE_UNAUTHENTICATED', 'ERR_ENFORCE_CREDENTIAL_INVALID', 'ERR_ENFORCE_DENIED', 'ERR_ENFORCE_ROUTE_NOT_FOUND', 'ERR_ENFORCE_DPOP_INVALID']) assert.ok(codes.has(c), c);
    assert.ok(denied.every((l) => l.outcome === 'denied' && l.reasons.length === 1));
    const allowed = lines.filter((l) => l.action === 'request.allowed');
    assert.ok(allowed.some((l) => l.target.id === 'hello' && l.actor.id === ALLOWED));
    // The legacy route samples allows at 0: none of its allows is audited.
    assert.ok(!allowed.some((l) => l.target.id === 'legacy'));
    const text = readFileSync(f('audit.jsonl'), 'utf8');
    assert.ok(!/eyJ[A-Za-z0-9_-]{10,}\./.test(text), 'a JWT reached the audit log');

    const m = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    assert.match(m, /writ_proxy_requests_total\{route="hello",outcome="allow",code=""\} [1-9]/);
    assert.match(m, /writ_proxy_requests_total\{route="legacy",outcome="allow",code=""\} [1-9]/);
    assert.match(m, /writ_proxy_requests_total\{route="admin",outcome="deny",code="ERR_ENFORCE_DENIED"\} [1-9]/);
    assert.match(m, /writ_proxy_request_duration_seconds_count\{route="hello"\} [1-9]/);
    assert.match(m, /writ_proxy_cache_lookups\{cache="decision",result="hit"\} [1-9]/);
  });

  it('rotates its serving SVID without a restart', async () => {
    const serial = () => new Promise<string>((ok, fail) => {
      const s = tlsConnect({ host: '127.0.0.1', port, servername: 'localhost', ca: readFileSync(f('bundle.pem')) }, () => {
        const c = s.getPeerX509Certificate();
        s.end();
        ok(c?.serialNumber.toLowerCase() ?? '');
      });
      s.on('error', fail);
    });
    const first = await serial();
    assert.equal(first, proxySvid.serial.toLowerCase());
    await issueProxySvid();
    for (const l of listeners) l();
    await until('the new serving SVID', async () => ((await serial()) === proxySvid.serial.toLowerCase() ? true : undefined));
    const me = await clientSvid('client', ALLOWED);
    assert.equal((await curl('/hello', { cert: me })).status, 200);
  });

  it('a revoked subject is denied at once and its keep-alive connection is closed', async () => {
    const token = await jwt(REVOKEE, 'writ-proxy');
    const agent = new HttpsAgent({ keepAlive: true, maxSockets: 1, ca: readFileSync(f('bundle.pem')) });
    const get = () => keepAliveGet(agent, token);
    try {
      const first = await get();
      assert.equal(first.status, 200);
      const r = await w.s.call('POST', '/admin/v1/revocations', { body: { kind: 'subject-revoked', subject: REVOKEE, reason: 'owner-offboarded' } });
      assert.equal(r.status, 201, r.text);
      await first.socketClosed;
      const again = await get();
      assert.equal(again.status, 401);
      assert.equal(JSON.parse(again.body).code, 'ERR_ENFORCE_CREDENTIAL_REVOKED');
      const m = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      assert.match(m, /writ_proxy_connections_closed_total\{reason="revoked"\} [1-9]/);
    } finally {
      agent.destroy();
    }
  });

  it('a posture signal: re-evaluation revokes the caller\'s token and the proxy closes its keep-alive connection', async () => {
    const subject = 'spiffe://writ.local/posture-drop';
    const res = await fetch(`${w.s.url}/oauth2/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange', subject_token: await jwt(subject, issuer), subject_token_type: 'urn:ietf:params:oauth:token-type:jwt', audience: 'writ-proxy' }),
    });
    const tok = (await res.json()) as { access_token: string };
    assert.equal(res.status, 200, JSON.stringify(tok));
    const jti = String(decodeJwt(tok.access_token).jti);
    const agent = new HttpsAgent({ keepAlive: true, maxSockets: 1, ca: readFileSync(f('bundle.pem')) });
    const get = () => keepAliveGet(agent, tok.access_token);
    try {
      const first = await get();
      assert.equal(first.status, 200, first.body);
      const sig = await w.s.call('POST', '/admin/v1/signals', { body: { type: 'posture-changed', subject, score: 10, failingChecks: ['disk-encryption'] } });
      assert.equal(sig.status, 201, sig.text);
      const item = (sig.json.reevaluation.items as { id: string; outcome: string }[]).find((i) => i.id === jti);
      assert.equal(item?.outcome, 'revoked', JSON.stringify(sig.json.reevaluation));
      await first.socketClosed;
      const again = await get();
      assert.equal(again.status, 401, again.body);
      assert.equal(JSON.parse(again.body).code, 'ERR_ENFORCE_CREDENTIAL_REVOKED');
    } finally {
      agent.destroy();
    }
  });

  it('an access token\'s scope is policy input: without `reports:read` the reports page is 403 insufficient_scope, with it 200', async () => {
    const tokenWith = async (scope: string) => {
      const res = await fetch(`${w.s.url}/oauth2/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange', subject_token: await jwt(ALLOWED, issuer), subject_token_type: 'urn:ietf:params:oauth:token-type:jwt', audience: 'writ-proxy', scope }),
      });
      assert.equal(res.status, 200);
      return ((await res.json()) as { access_token: string }).access_token;
    };
    const narrow = await curl('/reports', { headers: { authorization: `Bearer ${await tokenWith('hello:read')}` } });
    assert.equal(narrow.status, 403, narrow.raw);
    assert.equal(JSON.parse(narrow.body).code, 'ERR_ENFORCE_DENIED');
    assert.equal(narrow.headers['www-authenticate'], 'Bearer realm="writ", error="insufficient_scope"');
    const wide = await curl('/reports', { headers: { authorization: `Bearer ${await tokenWith('hello:read reports:read')}` } });
    assert.equal(wide.status, 200, wide.raw);
  });

  it('a Writ access token revoked by its jti on the stream is refused', async () => {
    const res = await fetch(`${w.s.url}/oauth2/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange', subject_token: await jwt(ALLOWED, issuer), subject_token_type: 'urn:ietf:params:oauth:token-type:jwt', audience: 'writ-proxy' }),
    });
    const tok = (await res.json()) as { access_token: string; token_type: string };
    assert.equal(tok.token_type, 'Bearer');
    const ok = await curl('/hello', { headers: { authorization: `Bearer ${tok.access_token}` } });
    assert.equal(ok.status, 200, ok.raw);
    const jti = String(decodeJwt(tok.access_token).jti);
    const r = await w.s.call('POST', '/admin/v1/revocations', { body: { kind: 'token-revoked', tokenId: jti, reason: 'credential-compromised' } });
    assert.equal(r.status, 201, r.text);
    const refused = await until('the revocation to arrive', async () => {
      const x = await curl('/hello', { headers: { authorization: `Bearer ${tok.access_token}` } });
      return x.status === 200 ? undefined : x;
    });
    assert.equal(refused.status, 401);
    assert.equal(JSON.parse(refused.body).code, 'ERR_ENFORCE_CREDENTIAL_REVOKED');
    // The same caller with another credential is not affected.
    assert.equal((await curl('/hello', { headers: { authorization: `Bearer ${await jwt(ALLOWED, 'writ-proxy')}` } })).status, 200);
  });

  it('a policy-changed signal on the stream drops the decision cache', async () => {
    const me = await clientSvid('client', ALLOWED);
    const misses = async () => Number(/writ_proxy_cache_lookups\{cache="decision",result="miss"\} (\d+)/.exec(await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text())?.[1]);
    assert.equal((await curl('/hello', { cert: me })).status, 200);
    const m0 = await misses();
    assert.equal((await curl('/hello', { cert: me })).status, 200);
    assert.equal(await misses(), m0, 'the repeat came from the decision cache');
    const r = await w.s.call('POST', '/admin/v1/signals', { body: { type: 'policy-changed', subject: 'enforcement-tests', policyVersion: 'v2' } });
    assert.equal(r.status < 300, true, r.text);
    await until('the decision cache to be dropped', async () => {
      assert.equal((await curl('/hello', { cert: me })).status, 200);
      return (await misses()) > m0 ? true : undefined;
    });
  });

  it('fails closed with the server down: a cold decision is denied, then everything once the revocation view is stale', async () => {
    const me = await clientSvid('client', ALLOWED);
    const before = seenHello.length + seenLegacy.length;
    await w.s.stop();
    // Never asked before (new resource path): the PDP cannot be reached.
    const cold = await curl('/legacy/never-asked', { cert: me });
    assert.equal(cold.status, 403, cold.raw);
    // Usually the PDP's absence; on a slow machine the revocation bound may already have passed.
    assert.ok(['ERR_ENFORCE_PDP_UNAVAILABLE', 'ERR_ENFORCE_REVOCATION_STALE'].includes(JSON.parse(cold.body).code), cold.body);
    assert.equal(seenHello.length + seenLegacy.length, before, 'the cold request reached an upstream');
    // Even a cached allow stops once the revocation stream has been silent past its bound.
    const stale = await until('the revocation view to go stale', async () => {
      const r = await curl('/hello', { cert: me });
      return r.status === 200 ? undefined : r;
    });
    assert.equal(stale.status, 403);
    assert.equal(JSON.parse(stale.body).code, 'ERR_ENFORCE_REVOCATION_STALE');
  });
});

describe('writ proxy with the bundle missing', () => {
  it('denies every caller when no trust bundle could ever be fetched', async () => {
    const w = await startWrit();
    const dead = w.s.url;
    const jwtToken = await w.jwt(ALLOWED, 'writ-proxy');
    await w.stop();
    const up = createServer((_q, s) => s.end('reached'));
    const upPort = await listen(up);
    const c = spawn(process.execPath, [WRIT, 'proxy', '--server', dead, '--listen', '127.0.0.1:0', '--upstream', `http://127.0.0.1:${upPort}`], { stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: process.env.PATH ?? '/usr/bin:/bin', WRIT_TOKEN: w.pep } });
    let o = '';
    c.stderr?.on('data', (d: Buffer) => (o += d.toString()));
    try {
      await until('writ proxy to listen', async () => (/listening on [^\s]+:(\d+)/.test(o) ? true : undefined));
      const p = Number(/listening on [^\s]+:(\d+)/.exec(o)?.[1]);
      const res = await fetch(`http://127.0.0.1:${p}/hello`, { headers: { host: 'hello.test', authorization: `Bearer ${jwtToken}` } });
      const body = (await res.json()) as { code: string; message: string };
      assert.equal(res.status, 401);
      assert.equal(body.code, 'ERR_ENFORCE_BUNDLE_UNAVAILABLE');
      assert.equal(body.message, 'the trust bundle could not be fetched from the server');
    } finally {
      c.kill('SIGTERM');
      await new Promise((r) => c.once('exit', r));
      await new Promise<void>((r) => up.close(() => r()));
    }
  });
});

describe('writ proxy with its serving SVID in files', () => {
  it('serves the files and picks up rewritten ones without a restart', async () => {
    const w = await startWrit({ policies: POLICIES });
    const dir = mkdtempSync(join(tmpdir(), 'writ-proxy-files-'));
    const up = createServer((_q, s) => s.end('ok'));
    const upPort = await listen(up);
    let c: ChildProcess | undefined;
    const writeSvid = async (): Promise<string> => {
      const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      const s = await w.s.server.identity.ca.issueX509Svid({ spiffeId: PROXY_ID, publicKey: publicKey.export({ format: 'pem', type: 'spki' }).toString(), dnsNames: ['localhost'], ttlMs: 600_000 });
      // As `writ svid fetch --watch` does: the key first, then the certificate.
      writeFileSync(join(dir, 'svid_key.pem'), privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(), { mode: 0o600 });
      writeFileSync(join(dir, 'svid.pem'), certificatesToPem(s.chain));
      return s.serialNumber.toLowerCase();
    };
    try {
      writeFileSync(join(dir, 'bundle.pem'), (await w.s.call('GET', '/bundle.pem', { token: null })).text);
      const first = await writeSvid();
      writeFileSync(join(dir, 'proxy.json'), JSON.stringify({
        listen: '127.0.0.1:0',
        tls: { svid: { source: 'files', certFile: join(dir, 'svid.pem'), keyFile: join(dir, 'svid_key.pem') }, clientCert: 'require' },
        upstreams: { up: { url: `http://127.0.0.1:${upPort}` } },
        routes: [{ name: 'hello', methods: ['GET'], path: '/hello', resource: 'hello.test{path}', upstream: 'up', auth: ['mtls'] }],
      }));
      c = spawn(process.execPath, [WRIT, 'proxy', '--config', join(dir, 'proxy.json'), '--server', w.s.url, '--token-file', w.tokenFile], { stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } });
      let o = '';
      c.stderr?.on('data', (d: Buffer) => (o += d.toString()));
      const p = await until('writ proxy to listen', async () => {
        const m = /listening on [^\s]+:(\d+)/.exec(o);
        return m === null ? undefined : Number(m[1]);
      });
      const serial = () => new Promise<string>((ok, fail) => {
        const s = tlsConnect({ host: '127.0.0.1', port: p, servername: 'localhost', ca: readFileSync(join(dir, 'bundle.pem')) }, () => {
          ok(s.getPeerX509Certificate()?.serialNumber.toLowerCase() ?? '');
          s.end();
        });
        s.on('error', fail);
      });
      assert.equal(await serial(), first);
      // clientCert `require`: a bearer-less, certificate-less request is refused before any route logic.
      const { stdout } = await run('curl', ['-sS', '--cacert', join(dir, 'bundle.pem'), `https://localhost:${p}/hello`]);
      assert.equal(JSON.parse(stdout).message, 'this listener requires an X.509-SVID (mTLS)');
      const next = await writeSvid();
      await until('the rewritten SVID to be served', async () => ((await serial()) === next ? true : undefined));
      assert.match(o, /"updated":"serving SVID files changed"/);
    } finally {
      if (c !== undefined && c.exitCode === null) {
        const gone = new Promise((r) => c?.once('exit', r));
        c.kill('SIGTERM');
        await gone;
      }
      await new Promise<void>((r) => up.close(() => r()));
      await w.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
