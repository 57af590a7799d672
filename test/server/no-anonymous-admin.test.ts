/**
 * No anonymous admin access, over every admin route the server serves:
 * each operation under /admin/ in the OpenAPI document answers 401 to a
 * caller without a credential, and the app refuses to register an admin
 * route that names no permission.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startTestServer } from '../support/server.ts';
import type { TestServer } from '../support/server.ts';

describe('no anonymous admin access', () => {
  let s: TestServer;
  before(async () => {
    s = await startTestServer({ flags: { logLevel: 'warn' } });
  });
  after(async () => {
    await s.stop();
  });

  it('every /admin/ operation in the OpenAPI document answers 401 without a credential', async () => {
    const api = (await s.call('GET', '/openapi.json', { token: null })).json as { paths: Record<string, Record<string, unknown>> };
    const ops: [string, string][] = [];
    for (const [path, methods] of Object.entries(api.paths)) {
      if (!path.startsWith('/admin/')) continue;
      for (const m of Object.keys(methods)) if (['get', 'post', 'put', 'patch', 'delete'].includes(m)) ops.push([m.toUpperCase(), path]);
    }
    assert.ok(ops.length >= 20, `only ${ops.length} admin operations documented`);
    for (const [method, path] of ops) {
      const url = path.replace(/\{[^}]+\}/g, '0123456789abcdef');
      const r = await s.call(method, url, { token: null, ...(method === 'GET' || method === 'DELETE' ? {} : { body: {} }) });
      assert.equal(r.status, 401, `${method} ${url} answered ${r.status} without a credential`);
      assert.equal(r.json.code, 'ERR_GOV_UNAUTHENTICATED', `${method} ${url}`);
    }
  });

  it('an admin route that names no permission is refused at registration', async () => {
    const { default: Fastify } = await import('fastify');
    const { requireAdminPermission } = await import('../../src/server/index.ts');
    const app = Fastify();
    app.addHook('onRoute', requireAdminPermission);
    assert.throws(() => app.get('/admin/v1/forgot', async () => ({})), { name: 'TypeError', message: 'admin route GET /admin/v1/forgot declares no permission' });
    app.get('/admin/v1/named', { config: { permission: 'status.read' } }, async () => ({}));
    app.get('/healthz-like', async () => ({}));
    await app.close();
  });
});
