/**
 * Helpers for tests against the server's mutual-TLS listener: HTTPS calls
 * with or without a client certificate, keys and SVIDs from the server's CA,
 * a certificate from another trust domain (made by openssl), and the CLI
 * clients (openssl, curl) run as independent peers.
 */
import { execFile, spawn } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { request } from 'node:https';
import type { Agent } from 'node:https';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { promisify } from 'node:util';
import { certificatesToPem } from '../../src/identity/index.ts';
import type { TestServer } from './server.ts';

export const run = promisify(execFile);

/** Run a command with `input` on its stdin; resolves with its exit code and output. */
export function runWithInput(cmd: string, args: readonly string[], input: string, timeoutMs = 60_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const cp = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], timeout: timeoutMs });
    let stdout = '';
    let stderr = '';
    cp.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    cp.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    cp.on('error', reject);
    cp.on('close', (code) => resolve({ code, stdout, stderr }));
    cp.stdin.end(input);
  });
}

export interface ClientIdentity {
  /** PEM chain, leaf first. */
  readonly cert: string;
  /** PKCS#8 PEM. */
  readonly key: string;
  /** DER leaf. */
  readonly leafDer: Uint8Array;
}

export interface TlsAnswer {
  status: number;
  json: any;
  text: string;
  /** DER of the certificate the server presented, and its serial. */
  serverCertDer: Uint8Array;
  serverSerial: string;
}

export function pemKey(k: KeyObject): string {
  return k.export({ format: 'pem', type: 'pkcs8' }).toString();
}

/** An X.509-SVID for `spiffeId` signed by the server's own CA, with a fresh P-256 key. */
export async function svidFromServerCa(s: TestServer, spiffeId: string): Promise<ClientIdentity> {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const svid = await s.server.identity.ca.issueX509Svid({ spiffeId, publicKey: publicKey.export({ format: 'pem', type: 'spki' }).toString() });
  return { cert: certificatesToPem(svid.chain), key: pemKey(privateKey), leafDer: svid.certificate };
}

/** A self-signed SVID-shaped certificate of another trust domain, made by openssl. */
export async function foreignCert(dir: string, spiffeId = 'spiffe://other.example/w'): Promise<ClientIdentity & { certFile: string; keyFile: string }> {
  const keyFile = join(dir, 'foreign.key');
  const certFile = join(dir, 'foreign.pem');
  await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', keyFile, '-out', certFile, '-days', '1', '-subj', '/O=Other',
    '-addext', `subjectAltName=critical,URI:${spiffeId}`, '-addext', 'keyUsage=critical,digitalSignature', '-addext', 'extendedKeyUsage=serverAuth,clientAuth', '-addext', 'basicConstraints=CA:FALSE']);
  const cert = readFileSync(certFile, 'utf8');
  const der = Buffer.from(cert.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
  return { cert, key: readFileSync(keyFile, 'utf8'), leafDer: new Uint8Array(der), certFile, keyFile };
}

/** Write a client identity to files for curl/openssl. */
export function writeIdentity(dir: string, name: string, id: ClientIdentity): { certFile: string; keyFile: string } {
  const certFile = join(dir, `${name}.pem`);
  const keyFile = join(dir, `${name}.key`);
  writeFileSync(certFile, id.cert);
  writeFileSync(keyFile, id.key, { mode: 0o600 });
  return { certFile, keyFile };
}

export function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'writ-tls-'));
}

/**
 * One HTTPS request to the TLS listener at 127.0.0.1, verifying the server
 * against the served bundle with host name `localhost` (its DNS SAN).
 */
export function tlsCall(port: number, bundlePem: string, method: string, path: string, o: { client?: ClientIdentity; body?: string; headers?: Record<string, string>; agent?: Agent } = {}): Promise<TlsAnswer> {
  return new Promise((resolve, reject) => {
    const req = request({
      host: '127.0.0.1',
      port,
      servername: 'localhost',
      method,
      path,
      ca: bundlePem,
      ...(o.client === undefined ? {} : { cert: o.client.cert, key: o.client.key }),
      headers: { ...(o.body === undefined ? {} : { 'content-length': String(Buffer.byteLength(o.body)) }), ...(o.headers ?? {}) },
      ...(o.agent === undefined ? { agent: false } : { agent: o.agent }),
    }, (res) => {
      const peer = (res.socket as TLSSocket).getPeerCertificate();
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json: unknown;
        try {
          json = text === '' ? undefined : JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode ?? 0, json, text, serverCertDer: new Uint8Array(peer.raw), serverSerial: peer.serialNumber.toLowerCase() });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    if (o.body !== undefined) req.write(o.body);
    req.end();
  });
}
