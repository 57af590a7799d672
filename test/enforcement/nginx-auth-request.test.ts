// Debian's nginx, a real reverse proxy, in front of a test upstream with
// `auth_request` to `writ ext-authz`'s HTTP mode, backed by a real `writ up`;
// real curl as the client. Allowed JWT-SVID → the upstream's 200 (with the
// identity headers, without the caller's token); denied → 403; none → 401.
// Denied requests never reach the upstream.
import { describe, it, before, after } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { IN_CI } from '../support/services.ts';
import { ALLOWED, DENIED, startWrit, spawnExtAuthz } from './support.ts';
import type { ExtAuthzProcess, Writ } from './support.ts';

const run = promisify(execFile);
const NGINX = ['/usr/sbin/nginx', '/usr/bin/nginx'].find((p) => existsSync(p));

function skipWithoutNginx(t: TestContext): boolean {
  if (NGINX !== undefined) return false;
  const problem = 'nginx is not installed (apt-get install nginx-light)';
  if (IN_CI) throw new Error(`${problem}; CI=true forbids skipping`);
  t.skip(problem);
  return true;
}

async function freePort(): Promise<number> {
  const s = createNetServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const a = s.address();
  await new Promise<void>((r) => s.close(() => r()));
  if (typeof a !== 'object' || a === null) throw new Error('no port');
  return a.port;
}

function nginxConfig(dir: string, port: number, authzPort: number, upstreamPort: number): string {
  return `daemon off;
master_process off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log info;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path ${dir}/tmp/body;
  proxy_temp_path ${dir}/tmp/proxy;
  fastcgi_temp_path ${dir}/tmp/fastcgi;
  uwsgi_temp_path ${dir}/tmp/uwsgi;
  scgi_temp_path ${dir}/tmp/scgi;
  server {
    listen 127.0.0.1:${port};
    location = /_writ_authz {
      internal;
      proxy_pass http://127.0.0.1:${authzPort};
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URI $request_uri;
      proxy_set_header X-Original-Method $request_method;
      proxy_set_header X-Forwarded-Host $host;
    }
    location / {
      auth_request /_writ_authz;
      auth_request_set $writ_spiffe_id $upstream_http_x_writ_spiffe_id;
      auth_request_set $writ_decision_id $upstream_http_x_writ_decision_id;
      proxy_set_header X-Writ-Spiffe-Id $writ_spiffe_id;
      proxy_set_header X-Writ-Decision-Id $writ_decision_id;
      proxy_set_header Authorization "";
      proxy_pass http://127.0.0.1:${upstreamPort};
    }
  }
}
`;
}

async function curl(port: number, path: string, token?: string): Promise<{ status: number; body: string; headers: string }> {
  const args = ['-sS', '-D', '-', '-H', 'Host: hello.test', ...(token === undefined ? [] : ['-H', `Authorization: Bearer ${token}`]), `http://127.0.0.1:${port}${path}`];
  const { stdout } = await run('curl', args);
  const split = stdout.indexOf('\r\n\r\n');
  const headers = stdout.slice(0, split);
  const status = Number(/^HTTP\/[\d.]+ (\d{3})/.exec(headers)?.[1]);
  return { status, headers, body: stdout.slice(split + 4) };
}

describe('nginx auth_request through writ ext-authz (HTTP mode)', () => {
  let w: Writ | undefined;
  let p: ExtAuthzProcess | undefined;
  let nginx: ChildProcess | undefined;
  let upstream: Server | undefined;
  let dir = '';
  let port = 0;
  const seen: Record<string, string | string[] | undefined>[] = [];

  before(async () => {
    if (NGINX === undefined) return;
    w = await startWrit();
    p = await spawnExtAuthz(w.s.url, w.tokenFile, [], { http: true });
    upstream = createServer((req, res) => {
      seen.push(req.headers);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ hello: 'world', headers: req.headers }));
    });
    await new Promise<void>((r) => upstream?.listen(0, '127.0.0.1', () => r()));
    const ua = upstream.address();
    if (typeof ua !== 'object' || ua === null || p.httpPort === undefined) throw new Error('no ports');
    dir = mkdtempSync(join(tmpdir(), 'writ-nginx-'));
    mkdirSync(join(dir, 'tmp'));
    port = await freePort();
    writeFileSync(join(dir, 'nginx.conf'), nginxConfig(dir, port, p.httpPort, ua.port));
    nginx = spawn(NGINX, ['-p', dir, '-c', join(dir, 'nginx.conf')], { stdio: ['ignore', 'pipe', 'pipe'] });
    const deadline = Date.now() + 10_000;
    for (;;) {
      try {
        await run('curl', ['-s', '-o', '/dev/null', `http://127.0.0.1:${port}/`]);
        break;
      } catch {
        if (nginx.exitCode !== null || Date.now() > deadline) throw new Error(`nginx did not start: ${existsSync(join(dir, 'error.log')) ? readFileSync(join(dir, 'error.log'), 'utf8') : ''}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  });
  after(async () => {
    if (nginx !== undefined && nginx.exitCode === null) {
      const gone = new Promise((r) => nginx?.once('exit', r));
      nginx.kill('SIGQUIT');
      await gone;
    }
    await new Promise<void>((r) => (upstream === undefined ? r() : upstream.close(() => r())));
    await p?.stop();
    await w?.stop();
    if (dir !== '') rmSync(dir, { recursive: true, force: true });
  });

  it('nginx -V lists the auth_request module', async (t) => {
    if (skipWithoutNginx(t) || NGINX === undefined) return;
    const { stderr } = await run(NGINX, ['-V']);
    assert.match(stderr, /--with-http_auth_request_module/);
  });

  it('an allowed JWT-SVID gets the upstream\'s 200; the upstream sees the identity headers and not the token', async (t) => {
    if (skipWithoutNginx(t) || w === undefined) return;
    const jwt = await w.jwt(ALLOWED);
    const before = seen.length;
    const r = await curl(port, '/hello', jwt);
    assert.equal(r.status, 200, r.headers + r.body);
    const body = JSON.parse(r.body);
    assert.equal(body.hello, 'world');
    assert.equal(seen.length, before + 1);
    assert.equal(body.headers['x-writ-spiffe-id'], ALLOWED);
    assert.match(body.headers['x-writ-decision-id'], /^[0-9a-f]{32}$/);
    assert.equal(body.headers.authorization, undefined);
    assert.ok(!r.body.includes(jwt));
  });

  it('a denied JWT-SVID gets 403 and never reaches the upstream', async (t) => {
    if (skipWithoutNginx(t) || w === undefined) return;
    const before = seen.length;
    const r = await curl(port, '/hello', await w.jwt(DENIED));
    assert.equal(r.status, 403);
    const admin = await curl(port, '/admin', await w.jwt(ALLOWED));
    assert.equal(admin.status, 403);
    assert.equal(seen.length, before);
  });

  it('no identity gets 401 with the Bearer challenge and never reaches the upstream', async (t) => {
    if (skipWithoutNginx(t) || w === undefined) return;
    const before = seen.length;
    const r = await curl(port, '/hello');
    assert.equal(r.status, 401);
    assert.match(r.headers, /^www-authenticate: Bearer realm="writ"\r?$/im);
    const bad = await curl(port, '/hello', 'not.a.jwt');
    assert.equal(bad.status, 401);
    assert.equal(seen.length, before);
  });
});
