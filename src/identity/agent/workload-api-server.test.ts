import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { X509Certificate, createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, sign, verify, webcrypto, type KeyObject } from 'node:crypto';
import type { webcrypto as WebCryptoTypes } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as x509 from '../x509-lib.ts';
import { importSPKI, jwtVerify } from 'jose';
import { agentErrors } from './errors.ts';
import { PeerAttestor } from './peer-credentials.ts';
import { matchesSelectors, type Selector } from './selectors.ts';
import { WORKLOAD_API_HEADER, WORKLOAD_API_PROTO_PATH, WorkloadApiServer, loadWorkloadApiDefinition, toStruct } from './workload-api-server.ts';
import type {
  JwtSvidMaterial,
  ValidatedJwtSvid,
  WorkloadCaller,
  WorkloadIdentitySource,
  X509BundlesState,
  X509SvidState,
} from './workload-identity-source.ts';

const NOBODY = 65534;
const TD = 'spiffe://example.org';
const ROOT_WORKLOAD = `${TD}/workload/root-tests`;
const REPO_PACKAGE_JSON = fileURLToPath(new URL('../../../package.json', import.meta.url));
const DEBIAN_PYTHON = '/usr/bin/python3';
const isRoot = process.getuid?.() === 0;

const EC = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

interface Entry {
  readonly spiffeId: string;
  readonly selectors: readonly Selector[];
}

/**
 * A Workload API source for tests: one self-signed EC CA, leaf X.509-SVIDs it
 * signs, ES256 JWT-SVIDs signed with node:crypto. `rotate()` re-issues every
 * leaf and tells subscribers.
 */
class TestSource implements WorkloadIdentitySource {
  readonly entries: readonly Entry[];
  readonly #listeners = new Set<() => void>();
  #ca: x509.X509Certificate | undefined;
  #caKeys: WebCryptoTypes.CryptoKeyPair | undefined;
  readonly #leaves = new Map<string, { cert: x509.X509Certificate; keyDer: Uint8Array }>();
  readonly jwtKey: { privateKey: KeyObject; publicKey: KeyObject } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  rotations = 0;

  constructor(entries: readonly Entry[]) {
    this.entries = entries;
  }

  async init(): Promise<void> {
    this.#caKeys = await webcrypto.subtle.generateKey(EC, true, ['sign', 'verify']);
    this.#ca = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: '01',
      name: 'O=Writ test CA',
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + 3_600_000),
      keys: this.#caKeys,
      signingAlgorithm: EC,
      extensions: [
        new x509.BasicConstraintsExtension(true, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        new x509.SubjectAlternativeNameExtension([{ type: 'url', value: TD }]),
      ],
    });
    await this.#issueAll();
  }

  get caDer(): Buffer {
    return Buffer.from(this.#requireCa().rawData);
  }

  leafDer(spiffeId: string): Buffer | undefined {
    const leaf = this.#leaves.get(spiffeId);
    return leaf === undefined ? undefined : Buffer.from(leaf.cert.rawData);
  }

  async rotate(): Promise<void> {
    await this.#issueAll();
    this.rotations++;
    for (const l of this.#listeners) l();
  }

  #requireCa(): x509.X509Certificate {
    if (this.#ca === undefined) throw new TypeError('call init() first');
    return this.#ca;
  }

  async #issueAll(): Promise<void> {
    const ca = this.#requireCa();
    const caKeys = this.#caKeys;
    if (caKeys === undefined) throw new TypeError('call init() first');
    for (const e of this.entries) {
      const keys = await webcrypto.subtle.generateKey(EC, true, ['sign', 'verify']);
      const cert = await x509.X509CertificateGenerator.create({
        serialNumber: randomBytes(8).toString('hex').replace(/^[89a-f]/, '1'),
        subject: '',
        issuer: ca.subject,
        notBefore: new Date(Date.now() - 60_000),
        notAfter: new Date(Date.now() + 900_000),
        publicKey: keys.publicKey,
        signingKey: caKeys.privateKey,
        signingAlgorithm: EC,
        extensions: [
          new x509.BasicConstraintsExtension(false, undefined, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
          new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
          new x509.SubjectAlternativeNameExtension([{ type: 'url', value: e.spiffeId }], true),
        ],
      });
      const keyDer = new Uint8Array(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
      this.#leaves.set(e.spiffeId, { cert, keyDer });
    }
  }

  /** Every caller the server attested and asked about, in order. */
  readonly callers: WorkloadCaller[] = [];

  #matching(caller: WorkloadCaller): Entry[] {
    this.callers.push(caller);
    return this.entries.filter((e) => matchesSelectors(e.selectors, caller.selectors));
  }

  async x509Svids(caller: WorkloadCaller): Promise<X509SvidState | null> {
    const mine = this.#matching(caller);
    if (mine.length === 0) return null;
    const svids = [];
    for (const e of mine) {
      const leaf = this.#leaves.get(e.spiffeId);
      if (leaf === undefined) continue;
      svids.push({ spiffeId: e.spiffeId, certChainDer: [new Uint8Array(leaf.cert.rawData)], privateKeyPkcs8Der: leaf.keyDer, bundleDer: [this.caDer], hint: e.spiffeId });
    }
    return { svids, federatedBundles: new Map() };
  }

  async x509Bundles(caller: WorkloadCaller): Promise<X509BundlesState | null> {
    if (this.#matching(caller).length === 0) return null;
    return { bundles: new Map([[TD, [this.caDer]]]) };
  }

  async jwtSvids(caller: WorkloadCaller, audience: readonly string[], spiffeId: string | undefined): Promise<readonly JwtSvidMaterial[] | null> {
    const mine = this.#matching(caller).filter((e) => spiffeId === undefined || e.spiffeId === spiffeId);
    if (mine.length === 0) return null;
    const now = Math.floor(Date.now() / 1000);
    return mine.map((e) => ({ spiffeId: e.spiffeId, token: this.#signJwt({ sub: e.spiffeId, aud: [...audience], iat: now, exp: now + 300 }) }));
  }

  async jwtBundles(caller: WorkloadCaller): Promise<ReadonlyMap<string, Uint8Array> | null> {
    if (this.#matching(caller).length === 0) return null;
    const jwk = { ...this.jwtKey.publicKey.export({ format: 'jwk' }), use: 'jwt-svid', kid: 'k1' };
    return new Map([[TD, Buffer.from(JSON.stringify({ keys: [jwk] }))]]);
  }

  async validateJwtSvid(_caller: WorkloadCaller, token: string, audience: string): Promise<ValidatedJwtSvid | null> {
    const parts = token.split('.');
    const [h, p, s] = parts;
    if (parts.length !== 3 || h === undefined || p === undefined || s === undefined) {
      throw agentErrors.error('ERR_IDENTITY_SELECTOR_INVALID', 'test source: malformed token');
    }
    const ok = verify('sha256', Buffer.from(`${h}.${p}`), { key: this.jwtKey.publicKey, dsaEncoding: 'ieee-p1363' }, Buffer.from(s, 'base64url'));
    const claims = JSON.parse(Buffer.from(p, 'base64url').toString()) as Record<string, unknown>;
    const aud = claims.aud;
    if (!ok || !Array.isArray(aud) || !aud.includes(audience)) {
      throw agentErrors.error('ERR_IDENTITY_SELECTOR_INVALID', 'test source: token rejected');
    }
    return { spiffeId: String(claims.sub), claims };
  }

  subscribe(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #signJwt(claims: Record<string, unknown>): string {
    const h = Buffer.from(JSON.stringify({ alg: 'ES256', kid: 'k1', typ: 'JWT' })).toString('base64url');
    const p = Buffer.from(JSON.stringify(claims)).toString('base64url');
    const s = sign('sha256', Buffer.from(`${h}.${p}`), { key: this.jwtKey.privateKey, dsaEncoding: 'ieee-p1363' });
    return `${h}.${p}.${s.toString('base64url')}`;
  }
}

// ---- a grpc-js client built from the same proto -------------------------------------------

type Msg = Record<string, unknown>;
const def = loadWorkloadApiDefinition();
const methods = def.SpiffeWorkloadAPI as unknown as Record<string, grpc.MethodDefinition<Msg, Msg>>;

function method(name: string): grpc.MethodDefinition<Msg, Msg> {
  const m = methods[name];
  if (m === undefined) throw new TypeError(`no method ${name}`);
  return m;
}

function withHeader(): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set(WORKLOAD_API_HEADER, 'true');
  return md;
}

function unary(client: grpc.Client, name: string, request: Msg, md: grpc.Metadata): Promise<Msg> {
  const m = method(name);
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(m.path, m.requestSerialize, m.responseDeserialize, request, md, (err, res) => {
      if (err !== null) reject(err);
      else if (res === undefined) reject(new Error('no response'));
      else resolve(res);
    });
  });
}

function stream(client: grpc.Client, name: string, md: grpc.Metadata): grpc.ClientReadableStream<Msg> {
  const m = method(name);
  return client.makeServerStreamRequest(m.path, m.requestSerialize, m.responseDeserialize, {}, md);
}

/** The next message, or the error that ended the stream. */
function next(s: grpc.ClientReadableStream<Msg>): Promise<Msg> {
  return new Promise((resolve, reject) => {
    const onData = (d: Msg): void => {
      s.off('error', onError);
      resolve(d);
    };
    const onError = (e: Error): void => {
      s.off('data', onData);
      reject(e);
    };
    s.once('data', onData);
    s.once('error', onError);
  });
}

/** Cancel a stream; its CANCELLED status is expected and swallowed. */
function cancel(s: grpc.ClientReadableStream<Msg>): void {
  s.on('error', () => undefined);
  s.cancel();
}

function firstSvid(msg: Msg): Msg {
  const svids = msg.svids;
  assert.ok(Array.isArray(svids) && svids.length === 1);
  const first: unknown = svids[0];
  assert.ok(typeof first === 'object' && first !== null);
  return first as Msg;
}

function assertStatus(code: grpc.status, details: string): (e: unknown) => boolean {
  return (e: unknown) => {
    assert.ok(typeof e === 'object' && e !== null && 'code' in e && 'details' in e);
    assert.equal(e.code, code);
    assert.equal(e.details, details);
    return true;
  };
}

function pem(der: Buffer, label: string): string {
  return `-----BEGIN ${label}-----\n${der.toString('base64').replace(/(.{64})/g, '$1\n')}\n-----END ${label}-----\n`;
}

/** Run `file` as a child, optionally as another user, and collect its stdout. */
function runChild(file: string, args: string[], opts: { uid?: number; gid?: number } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const cp = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
    let stdout = '';
    let stderr = '';
    cp.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    cp.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    cp.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('Workload API server over a Unix socket', { skip: process.platform !== 'linux' ? 'caller attestation is Linux-only' : false }, () => {
  let dir: string;
  let socketPath: string;
  let source: TestSource;
  let server: WorkloadApiServer;
  let client: grpc.Client;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'writ-wlapi-'));
    chmodSync(dir, 0o755); // callers running as other users must reach the socket
    socketPath = join(dir, 'agent.sock');
    source = new TestSource([{ spiffeId: ROOT_WORKLOAD, selectors: [`unix:uid:${process.geteuid?.() ?? 0}`] }]);
    await source.init();
    server = new WorkloadApiServer({ socketPath, source, attestor: new PeerAttestor() });
    await server.start();
    client = new grpc.Client(`unix://${socketPath}`, grpc.credentials.createInsecure());
  });

  after(async () => {
    client.close();
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('serves the caller its X.509-SVID: chain, PKCS#8 key and bundle that openssl verifies', async () => {
    const s = stream(client, 'FetchX509SVID', withHeader());
    const msg = await next(s);
    cancel(s);
    const svid = firstSvid(msg);
    assert.equal(svid.spiffe_id, ROOT_WORKLOAD);
    assert.equal(svid.hint, ROOT_WORKLOAD);
    assert.ok(Buffer.isBuffer(svid.x509_svid) && Buffer.isBuffer(svid.x509_svid_key) && Buffer.isBuffer(svid.bundle));
    assert.deepEqual(svid.x509_svid, source.leafDer(ROOT_WORKLOAD));
    assert.deepEqual(svid.bundle, source.caDer);
    const leaf = new X509Certificate(svid.x509_svid);
    assert.equal(leaf.subjectAltName, `URI:${ROOT_WORKLOAD}`);
    // The key is the leaf's key.
    const key = createPrivateKey({ key: svid.x509_svid_key, format: 'der', type: 'pkcs8' });
    assert.ok(createPublicKey(key).equals(leaf.publicKey));
    // An independent verifier: openssl chains the leaf to the bundle for both TLS roles.
    writeFileSync(join(dir, 'leaf.pem'), pem(svid.x509_svid, 'CERTIFICATE'));
    writeFileSync(join(dir, 'bundle.pem'), pem(svid.bundle, 'CERTIFICATE'));
    for (const purpose of ['sslclient', 'sslserver']) {
      const out = execFileSync('openssl', ['verify', '-purpose', purpose, '-CAfile', join(dir, 'bundle.pem'), join(dir, 'leaf.pem')]).toString();
      assert.equal(out.trim(), `${join(dir, 'leaf.pem')}: OK`);
    }
  });

  it('serves a JWT-SVID for the audience that jose verifies, and validates it back', async () => {
    const res = await unary(client, 'FetchJWTSVID', { audience: ['https://api.example.org'] }, withHeader());
    const svid = firstSvid(res);
    assert.equal(svid.spiffe_id, ROOT_WORKLOAD);
    assert.equal(typeof svid.svid, 'string');
    const token = String(svid.svid);
    const pub = await importSPKI(source.jwtKey.publicKey.export({ format: 'pem', type: 'spki' }).toString(), 'ES256');
    const { payload, protectedHeader } = await jwtVerify(token, pub, { audience: 'https://api.example.org' });
    assert.equal(payload.sub, ROOT_WORKLOAD);
    assert.deepEqual(protectedHeader, { alg: 'ES256', kid: 'k1', typ: 'JWT' });

    const v = await unary(client, 'ValidateJWTSVID', { audience: 'https://api.example.org', svid: token }, withHeader());
    assert.equal(v.spiffe_id, ROOT_WORKLOAD);
    const claims = v.claims as { fields: Record<string, Msg> };
    assert.deepEqual(claims.fields.sub, { stringValue: ROOT_WORKLOAD, kind: 'stringValue' });
    assert.deepEqual(claims.fields.aud, { listValue: { values: [{ stringValue: 'https://api.example.org', kind: 'stringValue' }] }, kind: 'listValue' });

    await assert.rejects(
      unary(client, 'ValidateJWTSVID', { audience: 'https://other.example.org', svid: token }, withHeader()),
      assertStatus(grpc.status.INVALID_ARGUMENT, 'test source: token rejected'),
    );
  });

  it('serves the X.509 and JWT bundles keyed by trust domain ID', async () => {
    const xs = stream(client, 'FetchX509Bundles', withHeader());
    const xb = await next(xs);
    cancel(xs);
    assert.deepEqual(xb.bundles, { [TD]: source.caDer });
    const js = stream(client, 'FetchJWTBundles', withHeader());
    const jb = await next(js);
    cancel(js);
    const bundles = jb.bundles as Record<string, Buffer>;
    const jwks = JSON.parse(String(bundles[TD])) as { keys: Array<{ kid: string; use: string }> };
    assert.equal(jwks.keys.length, 1);
    assert.equal(jwks.keys[0]?.kid, 'k1');
    assert.equal(jwks.keys[0]?.use, 'jwt-svid');
  });

  it('refuses every request without the security header with InvalidArgument', async () => {
    const noHeader = new grpc.Metadata();
    const wrongValue = new grpc.Metadata();
    wrongValue.set(WORKLOAD_API_HEADER, 'True');
    for (const md of [noHeader, wrongValue]) {
      await assert.rejects(next(stream(client, 'FetchX509SVID', md)), assertStatus(grpc.status.INVALID_ARGUMENT, 'security header missing from request'));
      await assert.rejects(next(stream(client, 'FetchJWTBundles', md)), assertStatus(grpc.status.INVALID_ARGUMENT, 'security header missing from request'));
      await assert.rejects(
        unary(client, 'FetchJWTSVID', { audience: ['a'] }, md),
        assertStatus(grpc.status.INVALID_ARGUMENT, 'security header missing from request'),
      );
    }
  });

  it('refuses a JWT-SVID request without an audience, and a malformed spiffe_id, with InvalidArgument', async () => {
    await assert.rejects(unary(client, 'FetchJWTSVID', {}, withHeader()), assertStatus(grpc.status.INVALID_ARGUMENT, 'audience must be specified'));
    await assert.rejects(
      unary(client, 'FetchJWTSVID', { audience: ['a'], spiffe_id: 'spiffe://Example.org/x' }, withHeader()),
      assertStatus(grpc.status.INVALID_ARGUMENT, 'invalid SPIFFE ID `spiffe://Example.org/x`: trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores'),
    );
    await assert.rejects(
      unary(client, 'FetchJWTSVID', { audience: ['a'], spiffe_id: `${TD}/someone-else` }, withHeader()),
      assertStatus(grpc.status.PERMISSION_DENIED, 'no identity issued'),
    );
  });

  it('sends a rotated SVID on the open stream', async () => {
    const s = stream(client, 'FetchX509SVID', withHeader());
    const first = firstSvid(await next(s));
    const rotated = next(s);
    await source.rotate();
    const second = firstSvid(await rotated);
    cancel(s);
    assert.notDeepEqual(second.x509_svid, first.x509_svid);
    assert.deepEqual(second.x509_svid, source.leafDer(ROOT_WORKLOAD));
    const a = new X509Certificate(first.x509_svid as Buffer);
    const b = new X509Certificate(second.x509_svid as Buffer);
    assert.notEqual(a.serialNumber, b.serialNumber);
    // The new one arrives while the old one is still valid.
    assert.ok(Date.parse(a.validTo) > Date.now());
  });

  it('answers PermissionDenied to a process whose uid (nobody) matches no entry', { skip: isRoot ? false : 'needs root to run a client as nobody' }, async () => {
    const script = join(dir, 'nobody-client.mjs');
    writeFileSync(
      script,
      `import { createRequire } from 'node:module';
const require = createRequire(process.argv[2]);
const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');
const def = loader.loadSync(process.argv[3], { keepCase: true });
const Api = grpc.loadPackageDefinition(def).SpiffeWorkloadAPI;
const client = new Api('unix://' + process.argv[4], grpc.credentials.createInsecure());
const md = new grpc.Metadata();
md.set('workload.spiffe.io', 'true');
const s = client.FetchX509SVID({}, md);
s.on('data', () => { console.log(JSON.stringify({ got: 'svid', uid: process.getuid() })); process.exit(0); });
s.on('error', (e) => { console.log(JSON.stringify({ code: e.code, details: e.details, uid: process.getuid() })); process.exit(0); });
`,
    );
    chmodSync(script, 0o644);
    const r = await runChild(process.execPath, [script, REPO_PACKAGE_JSON, WORKLOAD_API_PROTO_PATH, socketPath], { uid: NOBODY, gid: NOBODY });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), { code: grpc.status.PERMISSION_DENIED, details: 'no identity issued', uid: NOBODY });
    // The server asked the source on behalf of the kernel-attested child, not of this process.
    const seen = source.callers.at(-1);
    assert.ok(seen !== undefined);
    assert.equal(seen.credentials.uid, NOBODY);
    assert.notEqual(seen.credentials.pid, process.pid);
    assert.deepEqual(seen.selectors.slice(0, 2), [`unix:uid:${NOBODY}`, `unix:gid:${NOBODY}`]);
  });

  it('serves an X.509-SVID to the Python gRPC client from Debian (python3-grpcio)', async (t: TestContext) => {
    const missing = pythonGrpcMissing();
    if (missing !== undefined) {
      const reason = `${missing}; install Debian packages python3-grpcio and protobuf-compiler`;
      if (process.env.CI === 'true') assert.fail(reason);
      t.skip(reason);
      return;
    }
    const out = join(dir, 'py');
    execFileSync('mkdir', ['-p', out]);
    execFileSync('protoc', [`-I${join(WORKLOAD_API_PROTO_PATH, '..')}`, '-I/usr/include', `--python_out=${out}`, WORKLOAD_API_PROTO_PATH]);
    const script = join(out, 'fetch.py');
    writeFileSync(
      script,
      `import base64, json, sys
import grpc
import workloadapi_pb2 as pb

channel = grpc.insecure_channel('unix://' + sys.argv[1])
fetch = channel.unary_stream('/SpiffeWorkloadAPI/FetchX509SVID',
                             request_serializer=pb.X509SVIDRequest.SerializeToString,
                             response_deserializer=pb.X509SVIDResponse.FromString)
result = {}
try:
    next(fetch(pb.X509SVIDRequest(), timeout=10))
except grpc.RpcError as e:
    result['no_header'] = e.code().name
call = fetch(pb.X509SVIDRequest(), metadata=[('workload.spiffe.io', 'true')], timeout=10)
resp = next(call)
call.cancel()
svid = resp.svids[0]
result.update(spiffe_id=svid.spiffe_id,
              x509_svid=base64.b64encode(svid.x509_svid).decode(),
              x509_svid_key=base64.b64encode(svid.x509_svid_key).decode(),
              bundle=base64.b64encode(svid.bundle).decode())
print(json.dumps(result))
`,
    );
    const r = await runChild(DEBIAN_PYTHON, [script, socketPath]);
    assert.equal(r.code, 0, r.stderr);
    const got = JSON.parse(r.stdout) as Record<string, string>;
    assert.equal(got.no_header, 'INVALID_ARGUMENT');
    assert.equal(got.spiffe_id, ROOT_WORKLOAD);
    assert.deepEqual(Buffer.from(got.x509_svid ?? '', 'base64'), source.leafDer(ROOT_WORKLOAD));
    assert.deepEqual(Buffer.from(got.bundle ?? '', 'base64'), source.caDer);
    const key = createPrivateKey({ key: Buffer.from(got.x509_svid_key ?? '', 'base64'), format: 'der', type: 'pkcs8' });
    assert.ok(createPublicKey(key).equals(new X509Certificate(Buffer.from(got.x509_svid ?? '', 'base64')).publicKey));
  });
});

describe('toStruct (JWT claims as google.protobuf.Struct)', () => {
  it('maps every JSON type to its Value kind, nested', () => {
    assert.deepEqual(toStruct({ s: 'x', n: 1.5, b: false, z: null, l: [1, 'a'], o: { k: true } }), {
      fields: {
        s: { stringValue: 'x' },
        n: { numberValue: 1.5 },
        b: { boolValue: false },
        z: { nullValue: 'NULL_VALUE' },
        l: { listValue: { values: [{ numberValue: 1 }, { stringValue: 'a' }] } },
        o: { structValue: { fields: { k: { boolValue: true } } } },
      },
    });
  });
});

describe('WorkloadApiServer options', () => {
  it('refuses a socket path ss could not filter on unambiguously', () => {
    const source = new TestSource([]);
    assert.throws(() => new WorkloadApiServer({ socketPath: 'relative.sock', source }), TypeError);
    assert.throws(() => new WorkloadApiServer({ socketPath: '/tmp/with space.sock', source }), TypeError);
    assert.throws(() => new WorkloadApiServer({ socketPath: '/tmp/glob*.sock', source }), TypeError);
  });
});

/** Why the Debian Python gRPC client cannot run here, or undefined when it can. */
function pythonGrpcMissing(): string | undefined {
  const py = spawnSync(DEBIAN_PYTHON, ['-c', 'import grpc, google.protobuf'], { stdio: 'ignore' });
  if (py.error !== undefined || py.status !== 0) return `${DEBIAN_PYTHON} cannot import grpc (python3-grpcio missing)`;
  const protoc = spawnSync('protoc', ['--version'], { stdio: 'ignore' });
  if (protoc.error !== undefined || protoc.status !== 0) return 'protoc not found (protobuf-compiler missing)';
  return undefined;
}
