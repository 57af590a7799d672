// `writ ext-authz` as a child process, backed by a real `writ up`, asked by a
// @grpc/grpc-js client built from the Envoy-shaped protos under proto/envoy:
// OK with identity headers for the permitted caller, PERMISSION_DENIED for a
// denied one, UNAUTHENTICATED without (or with a bad) identity; each decision
// audited by the PDP under the decision id the authorizer returns.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { ALLOWED, DENIED, startWrit, spawnExtAuthz } from './support.ts';
import type { ExtAuthzProcess, Writ } from './support.ts';

type Msg = Record<string, any>;
const PROTO_ROOT = fileURLToPath(new URL('../../proto/', import.meta.url));

function envoyClient(port: number): { check(req: Msg): Promise<Msg>; close(): void } {
  const def = protoLoader.loadSync('envoy/service/auth/v3/external_auth.proto', { includeDirs: [PROTO_ROOT], keepCase: true, longs: String, enums: String, defaults: false, oneofs: true });
  const pkg = grpc.loadPackageDefinition(def) as any;
  const client = new pkg.envoy.service.auth.v3.Authorization(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  return {
    check: (req) => new Promise((ok, fail) => client.Check(req, { deadline: Date.now() + 10_000 }, (err: Error | null, res: Msg) => (err === null ? ok(res) : fail(err)))),
    close: () => client.close(),
  };
}

function checkRequest(o: { path: string; method?: string; host?: string; headers?: Record<string, string>; certificate?: string }): Msg {
  return {
    attributes: {
      source: { address: { socket_address: { address: '10.0.0.7', port_value: 40000 } }, ...(o.certificate === undefined ? {} : { certificate: o.certificate }) },
      destination: { address: { socket_address: { address: '10.0.0.8', port_value: 8080 } } },
      request: { http: { id: 'req-1', method: o.method ?? 'GET', path: o.path, host: o.host ?? 'hello.test', scheme: 'http', protocol: 'HTTP/1.1', headers: { ':authority': 'hello.test', ...(o.headers ?? {}) } } },
      context_extensions: { route: 'hello' },
    },
  };
}

function headersOf(list: Msg[] | undefined): Record<string, string> {
  return Object.fromEntries((list ?? []).map((h) => [h.header.key, h.header.value]));
}

describe('writ ext-authz over gRPC (envoy.service.auth.v3.Authorization/Check)', () => {
  let w: Writ;
  let p: ExtAuthzProcess;
  let c: ReturnType<typeof envoyClient>;
  const tokens: string[] = [];
  before(async () => {
    w = await startWrit();
    p = await spawnExtAuthz(w.s.url, w.tokenFile, [], { grpc: true });
    assert.ok(p.grpcPort !== undefined, p.output());
    c = envoyClient(p.grpcPort);
  });
  after(async () => {
    c?.close();
    await p?.stop();
    await w?.stop();
  });

  it('the permitted workload with a JWT-SVID gets OK with x-writ-spiffe-id and x-writ-decision-id, audited under that id', async () => {
    const jwt = await w.jwt(ALLOWED);
    tokens.push(jwt);
    const res = await c.check(checkRequest({ path: '/hello?x=1', headers: { authorization: `Bearer ${jwt}` } }));
    assert.equal(res.status.code, 0);
    assert.equal(res.http_response, 'ok_response');
    const h = headersOf(res.ok_response.headers);
    assert.equal(h['x-writ-spiffe-id'], ALLOWED);
    assert.match(h['x-writ-decision-id'] ?? '', /^[0-9a-f]{32}$/);
    assert.deepEqual(res.ok_response.headers_to_remove, ['authorization']);
    const events = await w.s.call('GET', '/admin/v1/audit/events?action=decision.made&limit=1000');
    assert.equal(events.status, 200, events.text);
    const mine = (events.json.events as Msg[]).filter((e) => e.correlationId === h['x-writ-decision-id']);
    assert.equal(mine.length, 1);
    assert.equal(mine[0]?.outcome, 'success');
  });

  it('the same workload on a route the policy does not permit gets PERMISSION_DENIED (403, ERR_ENFORCE_DENIED)', async () => {
    const jwt = await w.jwt(ALLOWED);
    const res = await c.check(checkRequest({ path: '/admin', headers: { authorization: `Bearer ${jwt}` } }));
    assert.equal(res.status.code, 7);
    assert.equal(res.status.message, 'ERR_ENFORCE_DENIED');
    assert.equal(res.denied_response.status.code, 'Forbidden');
    assert.deepEqual(JSON.parse(res.denied_response.body).code, 'ERR_ENFORCE_DENIED');
  });

  it('a dot-segment path is decided as the path it resolves to', async () => {
    const jwt = await w.jwt(ALLOWED);
    const res = await c.check(checkRequest({ path: '/hello/../admin', headers: { authorization: `Bearer ${jwt}` } }));
    assert.equal(res.status.code, 7);
  });

  it('another workload of the trust domain gets PERMISSION_DENIED', async () => {
    const jwt = await w.jwt(DENIED);
    tokens.push(jwt);
    const res = await c.check(checkRequest({ path: '/hello', headers: { authorization: `Bearer ${jwt}` } }));
    assert.equal(res.status.code, 7);
    const body = JSON.parse(res.denied_response.body);
    assert.equal(body.code, 'ERR_ENFORCE_DENIED');
    assert.equal(body.message, 'denied by policy');
    assert.equal(headersOf(res.denied_response.headers)['content-type'], 'application/json');
  });

  it('no identity gets UNAUTHENTICATED (401 with a Bearer challenge)', async () => {
    const res = await c.check(checkRequest({ path: '/hello' }));
    assert.equal(res.status.code, 16);
    assert.equal(res.denied_response.status.code, 'Unauthorized');
    const body = JSON.parse(res.denied_response.body);
    assert.equal(body.code, 'ERR_ENFORCE_UNAUTHENTICATED');
    assert.equal(body.message, 'no caller identity: send a JWT-SVID bearer or an X.509-SVID');
    assert.equal(headersOf(res.denied_response.headers)['www-authenticate'], 'Bearer realm="writ"');
  });

  it('a JWT-SVID for another audience gets UNAUTHENTICATED with invalid_token', async () => {
    const jwt = await w.jwt(ALLOWED, 'some-other-service');
    const res = await c.check(checkRequest({ path: '/hello', headers: { authorization: `Bearer ${jwt}` } }));
    assert.equal(res.status.code, 16);
    const body = JSON.parse(res.denied_response.body);
    assert.equal(body.code, 'ERR_ENFORCE_CREDENTIAL_INVALID');
    assert.equal(body.message, 'JWT-SVID rejected: JWT-SVID is not for audience `writ-ext-authz`');
    assert.equal(headersOf(res.denied_response.headers)['www-authenticate'], 'Bearer realm="writ", error="invalid_token"');
  });

  it('a tampered JWT-SVID gets UNAUTHENTICATED', async () => {
    const jwt = await w.jwt(ALLOWED);
    const [h, , s] = jwt.split('.');
    const forged = `${h}.${Buffer.from(JSON.stringify({ sub: ALLOWED, aud: ['writ-ext-authz'], exp: 9999999999 })).toString('base64url')}.${s}`;
    const res = await c.check(checkRequest({ path: '/hello', headers: { authorization: `Bearer ${forged}` } }));
    assert.equal(res.status.code, 16);
    assert.equal(JSON.parse(res.denied_response.body).message, 'JWT-SVID rejected: JWT-SVID signature does not verify');
  });

  it('an X.509-SVID in source.certificate (URL-encoded PEM) authenticates the caller', async () => {
    const allowed = encodeURIComponent(await w.x509(ALLOWED));
    const ok = await c.check(checkRequest({ path: '/hello', certificate: allowed }));
    assert.equal(ok.status.code, 0, ok.denied_response?.body);
    assert.equal(headersOf(ok.ok_response.headers)['x-writ-spiffe-id'], ALLOWED);
    const denied = await c.check(checkRequest({ path: '/hello', certificate: encodeURIComponent(await w.x509(DENIED)) }));
    assert.equal(denied.status.code, 7);
  });

  it('a certificate that is not an SVID of the bundle gets UNAUTHENTICATED', async () => {
    const pem = await w.x509(ALLOWED);
    // The signing CA alone is not a leaf SVID.
    const ca = pem.slice(pem.indexOf('-----END CERTIFICATE-----') + '-----END CERTIFICATE-----'.length).trim();
    const res = await c.check(checkRequest({ path: '/hello', certificate: encodeURIComponent(ca) }));
    assert.equal(res.status.code, 16);
    assert.equal(JSON.parse(res.denied_response.body).code, 'ERR_ENFORCE_CREDENTIAL_INVALID');
  });

  it('logs one line per decision and never a token', () => {
    const out = p.output();
    assert.ok(out.includes('"msg":"decision"'));
    for (const t of [...tokens, w.pep]) assert.ok(!out.includes(t), 'a credential reached the log');
  });
});
