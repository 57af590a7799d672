/**
 * Where the key-encryption key comes from at startup, and the identity
 * commands of the CLI against a real server.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { startServer } from '../../src/server/index.ts';
import { main } from '../../src/cli/main.ts';
import { startTestServer } from '../support/server.ts';
import { attestWithJoinToken } from './support.ts';

async function start(dataDir: string, env: Record<string, string>, flags: Record<string, string> = {}) {
  const logs: string[] = [];
  const logStream = new PassThrough();
  logStream.on('data', (c: Buffer) => logs.push(c.toString('utf8')));
  const server = await startServer({ env, flags: { listen: '127.0.0.1:0', dataDir, logLevel: 'info', ...flags }, logStream });
  return { server, logs };
}

async function rejectsWith(p: Promise<unknown>, code: string, message: string | RegExp): Promise<void> {
  await assert.rejects(p, (e: { code?: string; message?: string }) => {
    assert.equal(e.code, code);
    if (typeof message === 'string') assert.equal(e.message, message);
    else assert.match(e.message ?? '', message);
    return true;
  });
}

describe('key-encryption key at startup', () => {
  test('production mode without a KEK refuses to start with ERR_KEK_MISSING', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'writ-kek-'));
    try {
      await rejectsWith(start(dir, {}, { mode: 'production' }), 'ERR_KEK_MISSING', 'production mode needs a key-encryption key: set WRIT_KEK (base64 of 32 bytes) or `identity.kekFile`');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('development mode generates <dataDir>/kek with mode 0600 and warns; a restart reuses it and keeps the CA', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'writ-kek-'));
    try {
      const a = await start(dir, {});
      const bundle = await (await fetch(`${a.server.url}/bundle`)).json() as { keys: { use: string; x5c?: string[] }[] };
      await a.server.close();
      assert.equal(statSync(join(dir, 'kek')).mode & 0o777, 0o600);
      assert.match(a.logs.join(''), /development mode generated a key-encryption key/);
      assert.ok(!a.logs.join('').includes(readFileSync(join(dir, 'kek'), 'utf8').trim()), 'the key is never logged');
      const b = await start(dir, {});
      const again = await (await fetch(`${b.server.url}/bundle`)).json() as { keys: { use: string; x5c?: string[] }[] };
      await b.server.close();
      assert.deepEqual(again.keys.filter((k) => k.use === 'x509-svid').map((k) => k.x5c), bundle.keys.filter((k) => k.use === 'x509-svid').map((k) => k.x5c));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('WRIT_KEK is used in production; another KEK cannot open the stored CA keys', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'writ-kek-'));
    try {
      const kek = randomBytes(32).toString('base64');
      const a = await start(dir, { WRIT_KEK: kek }, { mode: 'production' });
      await a.server.close();
      await rejectsWith(start(dir, { WRIT_KEK: randomBytes(32).toString('base64') }, { mode: 'production' }), 'ERR_IDENTITY_KEY_UNWRAP_FAILED', /.+/);
      await rejectsWith(start(dir, { WRIT_KEK: 'dG9vIHNob3J0' }), 'ERR_KEK_INVALID', 'the key-encryption key from WRIT_KEK is not base64 of 32 bytes');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a key file readable by others is refused with ERR_KEK_FILE_INSECURE', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'writ-kek-'));
    try {
      const file = join(dir, 'kek.b64');
      writeFileSync(file, randomBytes(32).toString('base64'), { mode: 0o644 });
      await rejectsWith(start(dir, {}, { 'identity.kekFile': file }), 'ERR_KEK_FILE_INSECURE', `key-encryption key file ${file} has mode 644; it must be 0600`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('writ entry|token|node|ca', () => {
  test('create, list, show, update, delete an entry; token create; node list/evict; ca show/rotate; errors are one line with the code', async () => {
    const s = await startTestServer();
    try {
      const base = ['--server', s.url, '--token-file', join(s.dataDir, 'admin.token')];
      const run = async (args: string[]) => {
        const out: string[] = [];
        const err: string[] = [];
        const code = await main([...args, ...base], { out: (x) => out.push(x), err: (x) => err.push(x), env: {} });
        return { code, out: out.join('\n'), err: err.join('\n') };
      };
      const noOwner = await run(['entry', 'create', '--spiffe-id', 'spiffe://writ.local/cli', '--parent-id', 'spiffe://writ.local/writ/node/n1', '-s', 'unix:uid:1000']);
      assert.equal(noOwner.code, 1);
      assert.equal(noOwner.err, 'writ entry create: an entry needs an owner `{team, contact}`: an identity without an owner cannot be registered (ERR_ENTRY_OWNER_REQUIRED)');
      const made = await run(['entry', 'create', '--spiffe-id', 'spiffe://writ.local/cli', '--parent-id', 'spiffe://writ.local/writ/node/n1', '-s', 'unix:uid:1000', '-s', 'unix:gid:1000', '--owner-team', 'platform', '--owner-contact', 'ops@example.com', '--json']);
      assert.equal(made.code, 0, made.err);
      const entry = JSON.parse(made.out) as { id: string; selectors: string[] };
      assert.deepEqual(entry.selectors, ['unix:gid:1000', 'unix:uid:1000']);
      const listed = await run(['entry', 'list']);
      assert.match(listed.out, new RegExp(`^${entry.id}\\s+spiffe://writ\\.local/cli\\s+spiffe://writ\\.local/writ/node/n1\\s+unix:gid:1000,unix:uid:1000\\s+platform$`, 'm'));
      const upd = await run(['entry', 'update', entry.id, '--x509-ttl', '600', '--json']);
      assert.equal(JSON.parse(upd.out).x509SvidTtlSeconds, 600);
      const shown = await run(['entry', 'show', entry.id]);
      assert.match(shown.out, /^x509 ttl\s+600s$/m);
      assert.equal((await run(['entry', 'update', entry.id])).code, 2, 'nothing to change is a usage error');
      assert.equal((await run(['entry', 'delete', entry.id])).code, 0);
      const gone = await run(['entry', 'show', entry.id]);
      assert.equal(gone.code, 1);
      assert.equal(gone.err, `writ entry show: no entry \`${entry.id}\` (ERR_ENTRY_NOT_FOUND)`);

      const tok = await run(['token', 'create', '--ttl', '120']);
      assert.equal(tok.code, 0);
      assert.match(tok.out, /^wjt\.[0-9a-f]{16}\.[A-Za-z0-9_-]{43}$/);
      assert.match(tok.err, /single use, expires/);

      const node = await attestWithJoinToken(s);
      assert.match((await run(['node', 'list'])).out, new RegExp(`^${node.id}\\s+${node.spiffeId.replace(/[./]/g, '\\$&')}\\s+join_token\\s+.+\\s+active$`, 'm'));
      assert.equal((await run(['node', 'evict', node.id])).code, 0);
      assert.match((await run(['node', 'list'])).out, new RegExp(`^${node.id}\\s.+evicted `, 'm'));

      type Ca = { bundleSequence: number; keys: { id: string; kind: string; state: string }[] };
      const activeX509 = (ca: Ca) => ca.keys.find((k) => k.kind === 'x509' && k.state === 'active')?.id;
      const before = JSON.parse((await run(['ca', 'show', '--json'])).out) as Ca;
      const rotated = await run(['ca', 'rotate', '--kind', 'x509', '--json']);
      assert.equal(rotated.code, 0, rotated.err);
      const after = JSON.parse(rotated.out) as Ca;
      assert.notEqual(activeX509(after), activeX509(before), 'a new signing CA is active');
      // The bundle publishes the root, which signs the new signing CA too: the bundle did not change.
      assert.equal(after.bundleSequence, before.bundleSequence);
      const jwt = JSON.parse((await run(['ca', 'rotate', '--kind', 'jwt', '--json'])).out) as Ca;
      assert.equal(jwt.bundleSequence, before.bundleSequence + 1, 'a new JWT key changes the bundle');
      assert.match((await run(['ca', 'show'])).out, /^trust domain writ\.local, bundle sequence \d+$/m);
      assert.equal((await run(['ca', 'rotate', '--kind', 'rsa'])).code, 2);
    } finally {
      await s.stop();
    }
  });
});
