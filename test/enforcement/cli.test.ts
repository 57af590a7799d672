// `writ ext-authz` and `writ proxy` usage (`writ mcp-gateway`'s is in mcp-gateway-cli.test.ts): --help, usage errors exit 2 with one line.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writ as writProcess } from '../agent/process-support.ts';

function writ(args: string[], env: Record<string, string> = {}): ReturnType<typeof writProcess> {
  return writProcess(args, { env });
}

describe('enforcement CLI usage', () => {
  it('writ ext-authz --help lists its options', async () => {
    const r = await writ(['ext-authz', '--help']);
    assert.equal(r.code, 0);
    for (const o of ['--grpc HOST:PORT', '--http HOST:PORT', '--audience AUD', '--cache-ttl-ms MS', '--trust-client-cert-header', '--pdp-mode MODE']) assert.ok(r.stdout.includes(o), o);
  });

  it('writ ext-authz --pdp-mode is `remote` or `local`: anything else exits 2 with one line naming the option', async () => {
    const r = await writ(['ext-authz', '--server', 'http://127.0.0.1:1', '--http', '127.0.0.1:0', '--pdp-mode', 'bogus'], { WRIT_TOKEN: 'x' });
    assert.equal(r.code, 2);
    assert.equal(r.stderr.trim(), 'writ ext-authz: --pdp-mode must be `remote` or `local`, not `bogus` (ERR_CLI_USAGE)');
  });

  it('writ ext-authz without a listener is a usage error', async () => {
    const r = await writ(['ext-authz', '--server', 'http://127.0.0.1:1']);
    assert.equal(r.code, 2);
    assert.equal(r.stderr.trim().split('\n').length, 1);
    assert.match(r.stderr, /give --grpc HOST:PORT, --http HOST:PORT or both/);
  });

  it('writ ext-authz with a bad address or no credential is a usage error', async () => {
    const bad = await writ(['ext-authz', '--grpc', 'nope', '--token-file', '/dev/null']);
    assert.equal(bad.code, 2);
    const none = await writ(['ext-authz', '--grpc', '127.0.0.1:0'], { WRIT_TOKEN: '' });
    assert.equal(none.code, 2);
    assert.match(none.stderr, /no PEP credential/);
  });

  it('writ proxy needs --config or --listen and --upstream, and an http upstream', async () => {
    const r = await writ(['proxy', '--server', 'http://127.0.0.1:1'], { WRIT_TOKEN: 'x' });
    assert.equal(r.code, 2);
    assert.equal(r.stderr.trim(), 'writ proxy: give --config FILE, or --listen and --upstream (ERR_CLI_USAGE)');
    const https = await writ(['proxy', '--listen', '127.0.0.1:0', '--upstream', 'https://x'], { WRIT_TOKEN: 'x' });
    assert.equal(https.code, 2);
    assert.match(https.stderr, /proxy config `upstreams.default.url`: must be `http:\/\/host:port` without path, query or credentials/);
  });

  it('writ proxy --config names the bad field and exits 2', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'writ-proxy-cli-'));
    try {
      const file = join(dir, 'proxy.json');
      writeFileSync(file, JSON.stringify({ listen: '127.0.0.1:0', upstreams: { a: { url: 'http://127.0.0.1:1' } }, routes: [{ name: 'r', path: '/x', upstream: 'a', auth: ['mtls'] }] }));
      const r = await writ(['proxy', '--config', file], { WRIT_TOKEN: 'x' });
      assert.equal(r.code, 2);
      assert.equal(r.stderr.trim().split('\n').length, 1);
      assert.match(r.stderr, /proxy config `routes\[0\]\.auth`: `mtls` needs the top-level `tls` section/);
      writeFileSync(file, '{"listen":');
      const bad = await writ(['proxy', '--config', file], { WRIT_TOKEN: 'x' });
      assert.equal(bad.code, 2);
      assert.match(bad.stderr, /is not JSON/);
      const help = await writ(['proxy', '--help']);
      assert.equal(help.code, 0);
      for (const o of ['--config FILE', '--audit-log FILE', '--listen HOST:PORT']) assert.ok(help.stdout.includes(o), o);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
