/**
 * Profile helper for the proxy hot path: the upstream and one `writ proxy`
 * (the bench's configuration) in this process, load from proxy-load.ts in
 * another. Run with `npx node --cpu-prof --cpu-prof-dir=DIR bench/proxy-profile.ts [cacheTtlMs]`.
 */
import { execFile } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { createServer } from 'node:http';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { systemClock } from '../src/kernel/index.ts';
import { TrustBundle, signJwtSvid } from '../src/identity/index.ts';
import { Decider, PolicyEngine, readPolicyFolder, recordingAuditSink } from '../src/policy/index.ts';
import { IdentityProxy, LocalPdp, ProxyAuthenticator, StaticBundleSource, parseProxyConfig } from '../src/enforcement/index.ts';

const run = promisify(execFile);
const LOAD = fileURLToPath(new URL('./proxy-load.ts', import.meta.url));
const POLICIES = fileURLToPath(new URL('../test/enforcement/fixtures/policies', import.meta.url));
const cacheTtlMs = Number(process.argv[2] ?? '0');

const upstream = createServer((_req, res) => {
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end('{"hello":"world"}');
});
await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', () => r()));
const ua = upstream.address();
const upPort = typeof ua === 'object' && ua !== null ? ua.port : 0;
const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const bundle = new TrustBundle({ trustDomain: 'writ.local', jwtAuthorities: [{ kid: 'k', publicJwk: publicKey.export({ format: 'jwk' }), alg: 'ES256' }] });
const key = await crypto.subtle.importKey('pkcs8', privateKey.export({ format: 'der', type: 'pkcs8' }), { name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign']);
const svid = await signJwtSvid({ kid: 'k', alg: 'ES256', privateKey: key, notAfter: new Date(Date.now() + 3_600_000) }, { spiffeId: 'spiffe://writ.local/hello-client', audience: 'writ-proxy', ttlMs: 3_000_000 }, systemClock, { defaultTtlMs: 300_000, maxTtlMs: 3_600_000 });
const audit = recordingAuditSink(systemClock, false);
const engine = new PolicyEngine({ clock: systemClock, audit });
await engine.loadFrom(() => readPolicyFolder(POLICIES));
const decider = new Decider({ engine, audit, clock: systemClock });
const proxy = new IdentityProxy({
  config: parseProxyConfig({ listen: '127.0.0.1:0', pdp: { cacheTtlMs }, upstreams: { hello: { url: `http://127.0.0.1:${upPort}` } }, routes: [{ name: 'hello', methods: ['GET'], path: '/hello', upstream: 'hello', auth: ['jwt-svid'], auditAllowSampleRate: 0.01 }] }),
  authenticator: new ProxyAuthenticator({ bundles: new StaticBundleSource(bundle), clock: systemClock, audience: 'writ-proxy' }),
  pdp: new LocalPdp({ decider, schemaInfo: () => engine.active?.schemaInfo }),
  clock: systemClock,
  revocations: { check: () => 'clear', staleness: () => 0 },
  audit: recordingAuditSink(systemClock, false),
});
const port = await proxy.listen(0, '127.0.0.1');
const { stdout } = await run(process.execPath, [LOAD, JSON.stringify({ port, path: '/hello', conns: 50, ms: Number(process.env.WRIT_BENCH_PROXY_MS ?? '5000'), headers: { host: 'hello.test', authorization: `Bearer ${svid.token}` } })]);
process.stdout.write(`${stdout}\n`);
await proxy.close();
upstream.close();
