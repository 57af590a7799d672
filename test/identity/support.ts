/**
 * Helpers for the identity tests over real HTTP: node keys, signed node API
 * calls, and openssl verification of issued chains.
 */
import { execFile } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { systemClock } from '../../src/kernel/index.ts';
import { signNodeRequest } from '../../src/identity/index.ts';
import type { TestServer } from '../support/server.ts';

const run = promisify(execFile);

export interface KeyPair {
  readonly privateKey: KeyObject;
  readonly publicKeyPem: string;
}

export function newKey(): KeyPair {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { privateKey, publicKeyPem: publicKey.export({ format: 'pem', type: 'spki' }).toString() };
}

export interface SvidJson {
  spiffeId: string;
  certChain: string[];
  serialNumber: string;
  notBefore: string;
  notAfter: string;
}

/** An attested node as a test holds it. */
export interface TestNode {
  id: string;
  spiffeId: string;
  key: KeyPair;
  chain: Uint8Array[];
}

export function derChain(svid: SvidJson): Uint8Array[] {
  return svid.certChain.map((c) => new Uint8Array(Buffer.from(c, 'base64')));
}

/** Attest with a join token created through the admin API. */
export async function attestWithJoinToken(s: TestServer, selectors: string[] = []): Promise<TestNode> {
  const t = await s.call('POST', '/admin/v1/join-tokens', { body: { selectors } });
  if (t.status !== 201) throw new Error(`join token: ${t.text}`);
  const key = newKey();
  const r = await s.call('POST', '/node/v1/attest', { token: null, body: { method: 'join_token', token: t.json.token, publicKey: key.publicKeyPem } });
  if (r.status !== 200) throw new Error(`attest: ${r.text}`);
  return { id: r.json.node.id, spiffeId: r.json.node.spiffeId, key, chain: derChain(r.json.svid) };
}

/** A node API call signed with the node's SVID key. */
export async function nodeCall(s: TestServer, node: TestNode, method: string, path: string, body?: unknown, opts: { authorization?: string } = {}): Promise<{ status: number; json: any; text: string; authorization: string }> {
  const text = body === undefined ? undefined : JSON.stringify(body);
  const authorization = opts.authorization ?? (await signNodeRequest({ chain: node.chain, privateKey: node.key.privateKey }, { method, path, ...(text === undefined ? {} : { body: text }) }, systemClock));
  const headers: Record<string, string> = { authorization };
  if (text !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(`${s.url}${path}`, { method, headers, ...(text === undefined ? {} : { body: text }) });
  const out = await res.text();
  let json: unknown;
  try {
    json = out === '' ? undefined : JSON.parse(out);
  } catch {
    json = undefined;
  }
  return { status: res.status, json, text: out, authorization };
}

function pem(der: Uint8Array): string {
  const b64 = Buffer.from(der).toString('base64').match(/.{1,64}/g) ?? [];
  return `-----BEGIN CERTIFICATE-----\n${b64.join('\n')}\n-----END CERTIFICATE-----\n`;
}

/** `openssl verify -CAfile <bundle> -untrusted <intermediates> -purpose <p> <leaf>`; returns the exit code and output. */
export async function opensslVerify(bundlePem: string, chain: readonly Uint8Array[], purpose: 'sslclient' | 'sslserver'): Promise<{ code: number; out: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'writ-ossl-'));
  try {
    const [leaf, ...rest] = chain;
    if (leaf === undefined) throw new Error('empty chain');
    writeFileSync(join(dir, 'bundle.pem'), bundlePem);
    writeFileSync(join(dir, 'leaf.pem'), pem(leaf));
    writeFileSync(join(dir, 'inter.pem'), rest.map(pem).join(''));
    const args = ['verify', '-CAfile', join(dir, 'bundle.pem'), ...(rest.length > 0 ? ['-untrusted', join(dir, 'inter.pem')] : []), '-purpose', purpose, join(dir, 'leaf.pem')];
    try {
      const { stdout, stderr } = await run('openssl', args);
      return { code: 0, out: stdout + stderr };
    } catch (e) {
      const err = e as { code?: number; stdout?: string; stderr?: string };
      return { code: typeof err.code === 'number' ? err.code : 1, out: `${err.stdout ?? ''}${err.stderr ?? ''}` };
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Read one extension of a certificate with openssl. */
export async function opensslText(der: Uint8Array): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'writ-ossl-'));
  try {
    writeFileSync(join(dir, 'c.pem'), pem(der));
    const { stdout } = await run('openssl', ['x509', '-noout', '-ext', 'subjectAltName,basicConstraints,keyUsage,extendedKeyUsage', '-in', join(dir, 'c.pem')]);
    return stdout;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** An entry body with an owner. */
export function entryBody(spiffeId: string, parent: { parentId: string } | { nodeSelectors: string[] }, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { spiffeId, ...parent, selectors: ['unix:uid:1000'], owner: { team: 'payments', contact: 'ana@example.com' }, ...extra };
}
