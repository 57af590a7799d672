/**
 * Helpers for the enforcement tests: a real `writ up` with the test policy,
 * a PEP credential, JWT-SVIDs issued by the server through the node API, and
 * `writ ext-authz` as a child process.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import type { Server } from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startTestServer } from '../support/server.ts';
import type { TestServer } from '../support/server.ts';
import { attestWithJoinToken, newKey, nodeCall } from '../identity/support.ts';
import { certificatesToPem, pemToCertificates } from '../../src/identity/index.ts';
import type { X509SvidHandle } from '../../src/enforcement/sdk/index.ts';
import type { TestNode } from '../identity/support.ts';

export const WRIT = fileURLToPath(new URL('../../bin/writ.js', import.meta.url));
export const POLICIES = fileURLToPath(new URL('./fixtures/policies', import.meta.url));
export const ALLOWED = 'spiffe://writ.local/hello-client';
export const DENIED = 'spiffe://writ.local/other-client';
export const AUDIENCE = 'writ-ext-authz';

export interface Writ {
  readonly s: TestServer;
  readonly pep: string;
  readonly tokenFile: string;
  /** A JWT-SVID for `spiffeId` (entries are created on first use) for `audience`. */
  jwt(spiffeId: string, audience?: string): Promise<string>;
  /** An X.509-SVID chain (leaf, signing CA) for `spiffeId`, as PEM. */
  x509(spiffeId: string): Promise<string>;
  /** An X.509-SVID with its key and the server's X.509 authorities, as the SDK holds one. */
  svid(spiffeId: string): Promise<X509SvidHandle>;
  stop(): Promise<void>;
}

/** Start `writ up` with the enforcement test policy (or `policies`) and a PEP credential in a 0600 file. */
export async function startWrit(o: { policies?: string; flags?: Record<string, string | number | boolean> } = {}): Promise<Writ> {
  const s = await startTestServer({ flags: { 'policy.dir': o.policies ?? POLICIES, ...o.flags } });
  const r = await s.call('POST', '/admin/v1/principals', { body: { name: 'ext-authz', role: 'pep' } });
  if (r.status !== 201) throw new Error(`pep principal: ${r.text}`);
  const pep = r.json.token as string;
  const dir = mkdtempSync(join(tmpdir(), 'writ-pep-'));
  const tokenFile = join(dir, 'pep.token');
  writeFileSync(tokenFile, `${pep}\n`, { mode: 0o600 });
  let node: TestNode | undefined;
  const entries = new Map<string, string>();
  const entry = async (spiffeId: string): Promise<{ n: TestNode; entryId: string }> => {
    node ??= await attestWithJoinToken(s);
    let entryId = entries.get(spiffeId);
    if (entryId === undefined) {
      const e = await s.call('POST', '/admin/v1/entries', { body: { spiffeId, parentId: node.spiffeId, selectors: ['unix:uid:4242'], owner: { team: 'enforcement-tests', contact: 'tests@example.com' } } });
      if (e.status !== 201) throw new Error(`entry: ${e.text}`);
      entryId = e.json.id as string;
      entries.set(spiffeId, entryId);
    }
    return { n: node, entryId };
  };
  return {
    s,
    pep,
    tokenFile,
    async jwt(spiffeId, audience = AUDIENCE) {
      const { n, entryId } = await entry(spiffeId);
      const j = await nodeCall(s, n, 'POST', '/node/v1/svid/jwt', { entryId, audience: [audience] });
      if (j.status !== 200) throw new Error(`jwt-svid: ${j.text}`);
      return j.json.token as string;
    },
    async svid(spiffeId) {
      const { n, entryId } = await entry(spiffeId);
      const key = newKey();
      const j = await nodeCall(s, n, 'POST', '/node/v1/svid/x509', { entryId, publicKey: key.publicKeyPem });
      if (j.status !== 200) throw new Error(`x509-svid: ${j.text}`);
      const chain = (j.json.svid.certChain as string[]).map((c) => new Uint8Array(Buffer.from(c, 'base64')));
      const bundle = pemToCertificates((await s.call('GET', '/bundle.pem', { token: null })).text);
      return { spiffeId, chain, privateKey: key.privateKey, bundle, expiresAt: new Date(j.json.svid.notAfter as string) };
    },
    async x509(spiffeId) {
      const { n, entryId } = await entry(spiffeId);
      const j = await nodeCall(s, n, 'POST', '/node/v1/svid/x509', { entryId, publicKey: newKey().publicKeyPem });
      if (j.status !== 200) throw new Error(`x509-svid: ${j.text}`);
      return certificatesToPem((j.json.svid.certChain as string[]).map((c) => new Uint8Array(Buffer.from(c, 'base64'))));
    },
    async stop() {
      await s.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface ExtAuthzProcess {
  readonly child: ChildProcess;
  readonly grpcPort: number | undefined;
  readonly httpPort: number | undefined;
  /** Everything the process wrote to stdout and stderr. */
  output(): string;
  stop(): Promise<void>;
}

/** Spawn `writ ext-authz` and wait until it names its listening ports. */
export async function spawnExtAuthz(server: string, tokenFile: string, extra: string[] = [], modes: { grpc?: boolean; http?: boolean } = { grpc: true, http: true }): Promise<ExtAuthzProcess> {
  const args = [WRIT, 'ext-authz', '--server', server, '--token-file', tokenFile, ...(modes.grpc === true ? ['--grpc', '127.0.0.1:0'] : []), ...(modes.http === true ? ['--http', '127.0.0.1:0'] : []), ...extra];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  const deadline = Date.now() + 15_000;
  while (!/deciding (through|locally)/.test(out)) {
    if (child.exitCode !== null) throw new Error(`writ ext-authz exited ${child.exitCode}: ${out}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`writ ext-authz did not start: ${out}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  const port = (mode: string) => {
    const m = new RegExp(`${mode} listening on [^\\s]+:(\\d+)`).exec(out);
    return m?.[1] === undefined ? undefined : Number(m[1]);
  };
  return {
    child,
    grpcPort: port('grpc'),
    httpPort: port('http'),
    output: () => out,
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

/** A Cedar policy letting `other-client` (DENIED by the fixture policy) GET the hello service's /hello. */
export const OTHER_READS_HELLO = [
  '@id("other-client-reads-hello")',
  'permit (principal == Writ::Workload::"spiffe://writ.local/other-client", action == Writ::Action::"http:GET", resource in Writ::Service::"hello")',
  'when { context has http && context.http.path == "/hello" };',
  '',
].join('\n');

/** An answer of the HTTP-mode authorizer: status, headers and the JSON deny body (empty on allow). */
export interface AuthAnswer {
  status: number;
  headers: Headers;
  body: { code?: string; message?: string };
}

/** One nginx-style auth_request subrequest to the HTTP-mode authorizer: the original method and URI in headers. */
export async function authRequest(port: number | undefined, method: string, uri: string, token: string): Promise<AuthAnswer> {
  const res = await fetch(`http://127.0.0.1:${port}/_writ_authz`, { headers: { 'x-original-method': method, 'x-original-uri': uri, 'x-forwarded-host': 'hello.test', authorization: `Bearer ${token}` } });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text === '' ? {} : (JSON.parse(text) as AuthAnswer['body']) };
}

/** Poll `f` until it answers (not `undefined`); a bound on waiting, not on speed. */
export async function until<T>(what: string, f: () => Promise<T | undefined>, ms = 60_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Listen on a free loopback port; resolves with the port. */
export function listen(s: Server): Promise<number> {
  return new Promise((ok) => s.listen(0, '127.0.0.1', () => {
    const a = s.address();
    ok(typeof a === 'object' && a !== null ? a.port : 0);
  }));
}
