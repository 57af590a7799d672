import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { compilePathTemplate, matchPath, parseProxyConfig } from './proxy-config.ts';
import { enforcementErrors } from './errors.ts';

/** A configuration document as a test edits it: plain JSON. */
type Doc = { [k: string]: unknown };
type RouteDoc = Doc & { auth?: unknown; methods?: unknown; path?: unknown; resource?: unknown; upstream?: unknown; inject?: unknown; stripCookies?: unknown; auditAllowSampleRate?: unknown };
type ConfigDoc = Doc & { upstreams: { orders: Doc }; routes: RouteDoc[] };

const base = (): ConfigDoc => ({
  listen: '127.0.0.1:8443',
  upstreams: { orders: { url: 'http://127.0.0.1:8080' } },
  routes: [{ name: 'orders-read', methods: ['GET'], path: '/orders/{id}', resource: 'orders/{id}', upstream: 'orders', auth: ['jwt-svid'] }],
});

function rejects(mutate: (c: ConfigDoc, route: RouteDoc) => void, message: string): void {
  const c = base();
  const route = c.routes[0];
  if (route === undefined) throw new TypeError('the base config has a route');
  mutate(c, route);
  assert.throws(() => parseProxyConfig(c), (e: unknown) => {
    assert.ok(enforcementErrors.is(e, 'ERR_ENFORCE_PROXY_CONFIG'), String(e));
    assert.equal((e as Error).message, message);
    return true;
  });
}

describe('proxy config', () => {
  it('fills defaults and freezes the result', () => {
    const c = parseProxyConfig(base());
    assert.equal(c.trustDomain, 'writ.local');
    assert.equal(c.audience, 'writ-proxy');
    assert.deepEqual(c.pdp, { mode: 'remote', timeoutMs: 2000, cacheTtlMs: 1000, cacheMaxEntries: 10_000, pollIntervalMs: 30_000 });
    assert.equal(c.revocationMaxStalenessMs, 15_000);
    const r = c.routes[0];
    assert.equal(r?.auditAllowSampleRate, 1);
    assert.deepEqual(r?.stripCookies, []);
    assert.equal(c.upstreams.get('orders')?.url, 'http://127.0.0.1:8080');
    assert.ok(Object.isFrozen(c) && Object.isFrozen(r) && Object.isFrozen(c.upstreams.get('orders')));
  });

  it('accepts injection by exchange and by static secret', () => {
    const c = parseProxyConfig({
      ...base(),
      routes: [
        { name: 'a', path: '/a', upstream: 'orders', auth: ['access-token'], inject: { source: 'exchange', audience: 'legacy', scope: 'read' } },
        { name: 'b', path: '/b', upstream: 'orders', auth: ['jwt-svid'], inject: { source: 'static', secretFile: '/run/s', format: 'basic', username: 'svc' }, stripCookies: ['session'] },
      ],
    });
    assert.deepEqual(c.routes[0]?.inject, { source: 'exchange', audience: 'legacy', scope: 'read', header: 'authorization', format: 'bearer' });
    assert.deepEqual(c.routes[1]?.inject, { source: 'static', secretFile: '/run/s', header: 'authorization', format: 'basic', username: 'svc' });
  });

  it('names the field of every error', () => {
    rejects((c) => delete c.listen, 'proxy config `listen`: is required');
    rejects((c) => (c.listen = 'nowhere'), 'proxy config `listen`: must be HOST:PORT, not `nowhere`');
    rejects((c) => (c.extra = 1), 'proxy config `extra`: unknown key (allowed: listen, metricsListen, trustDomain, audience, publicUrl, workloadApiSocket, tls, pdp, tokenCache, revocations, dpop, upstreams, routes)');
    rejects((c) => (c.trustDomain = 'Bad Domain'), 'proxy config `trustDomain`: `Bad Domain` is not a SPIFFE trust domain name');
    rejects((c) => (c.upstreams.orders.url = 'http://127.0.0.1:8080/base'), 'proxy config `upstreams.orders.url`: must be `http://host:port` without path, query or credentials');
    rejects((c) => (c.pdp = { cacheTtlMs: -1 }), 'proxy config `pdp.cacheTtlMs`: must be a whole number from 0 to 300000');
    rejects((_c, r) => (r.upstream = 'billing'), 'proxy config `routes[0].upstream`: names no upstream (have: orders)');
    rejects((_c, r) => (r.auth = ['password']), 'proxy config `routes[0].auth[0]`: must be `mtls`, `jwt-svid` or `access-token`');
    rejects((_c, r) => (r.auth = ['mtls']), 'proxy config `routes[0].auth`: `mtls` needs the top-level `tls` section');
    rejects((_c, r) => (r.methods = ['get']), 'proxy config `routes[0].methods[0]`: must be an upper-case HTTP method');
    rejects((_c, r) => (r.path = '/orders/{id}/{id}'), 'proxy config `routes[0].path`: parameter `{id}` appears twice');
    rejects((_c, r) => (r.path = '/files/{rest*}/x'), 'proxy config `routes[0].path`: `{rest*}` must be the last segment');
    rejects((_c, r) => (r.path = '/a/../b'), 'proxy config `routes[0].path`: segment `..` is not a literal path segment or a `{name}` parameter');
    rejects((_c, r) => (r.resource = 'orders/{order}'), 'proxy config `routes[0].resource`: `{order}` is neither `{host}`, `{path}` nor a parameter of the path');
    rejects((_c, r) => (r.auditAllowSampleRate = 2), 'proxy config `routes[0].auditAllowSampleRate`: must be a number from 0 to 1');
    rejects((_c, r) => (r.inject = { source: 'vault' }), 'proxy config `routes[0].inject.source`: must be `exchange` (a short-lived token from the Writ broker) or `static` (an exception\'s secret)');
    rejects((_c, r) => (r.inject = { source: 'exchange' }), 'proxy config `routes[0].inject.audience`: is required');
    rejects((_c, r) => (r.inject = { source: 'static', secretFile: '/s', header: 'x-writ-spiffe-id' }), 'proxy config `routes[0].inject.header`: `x-writ-spiffe-id` carries identity or framing and cannot hold an injected credential');
    rejects((_c, r) => (r.inject = { source: 'static', secretFile: '/s', format: 'basic' }), 'proxy config `routes[0].inject.username`: is required with format `basic`');
    rejects((_c, r) => (r.stripCookies = ['a b']), 'proxy config `routes[0].stripCookies[0]`: is not a cookie name');
    rejects((c, r) => c.routes.push({ ...r }) as unknown as void, 'proxy config `routes[1].name`: `orders-read` is used by an earlier route');
    rejects((c) => (c.tls = { svid: { source: 'files', certFile: 'c.pem' } }), 'proxy config `tls.svid.keyFile`: is required');
  });

  it('matches path templates segment by segment', () => {
    const t = compilePathTemplate('/orders/{id}', 'p');
    assert.deepEqual(matchPath(t, '/orders/42'), { id: '42' });
    assert.equal(matchPath(t, '/orders/42/items'), undefined);
    assert.equal(matchPath(t, '/orders/'), undefined);
    assert.equal(matchPath(t, '/orders'), undefined);
    const rest = compilePathTemplate('/files/{rest*}', 'p');
    assert.deepEqual(matchPath(rest, '/files/a/b/c'), { rest: 'a/b/c' });
    assert.deepEqual(matchPath(rest, '/files'), { rest: '' });
    assert.deepEqual(matchPath(compilePathTemplate('/', 'p'), '/'), {});
    assert.equal(matchPath(compilePathTemplate('/', 'p'), '/x'), undefined);
  });

  it('takes pdp.mode `local` with its poll interval, and names the field of a bad mode', () => {
    const c = base();
    c.pdp = { mode: 'local', pollIntervalMs: 5000 };
    const parsed = parseProxyConfig(c);
    assert.equal(parsed.pdp.mode, 'local');
    assert.equal(parsed.pdp.pollIntervalMs, 5000);
    rejects((d) => (d.pdp = { mode: 'embedded' }), 'proxy config `pdp.mode`: must be `remote` (ask the server\'s AuthZEN PDP per request) or `local` (decide here with the server\'s policy bundle)');
    rejects((d) => (d.pdp = { mode: 7 }), 'proxy config `pdp.mode`: must be `remote` (ask the server\'s AuthZEN PDP per request) or `local` (decide here with the server\'s policy bundle)');
    rejects((d) => (d.pdp = { mode: 'local', pollIntervalMs: 10 }), 'proxy config `pdp.pollIntervalMs`: must be a whole number from 1000 to 3600000');
  });
});
