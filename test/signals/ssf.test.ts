/**
 * SSF push: revocations become CAEP SETs pushed to a receiver (RFC 8935) that
 * verifies them with jose against the transmitter's JWKS, and checks the SSF
 * SET rules: `typ` `secevent+jwt`, RS256, no `sub`/`exp`, `sub_id`, one event.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { IncomingMessage } from 'node:http';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { createRemoteJWKSet, jwtVerify, decodeProtectedHeader } from 'jose';
import type { JWTPayload } from 'jose';
import { startServer } from '../../src/server/index.ts';
import { CAEP_SESSION_REVOKED, CAEP_CREDENTIAL_CHANGE } from '../../src/signals/index.ts';

interface Received {
  readonly auth: string | undefined;
  readonly contentType: string | undefined;
  readonly jwt: string;
}

async function body(req: IncomingMessage): Promise<string> {
  let s = '';
  for await (const c of req) s += (c as Buffer).toString('utf8');
  return s;
}

test('SSF push: transmitter metadata, CAEP session-revoked and credential-change SETs verified with jose, retried after a 503, 202 accepted', async () => {
  const received: Received[] = [];
  let failFirst = true;
  const receiver = createServer((req, res) => {
    void body(req).then((jwt) => {
      if (failFirst) {
        failFirst = false;
        res.writeHead(503).end();
        return;
      }
      received.push({ auth: req.headers.authorization, contentType: req.headers['content-type'], jwt });
      res.writeHead(202).end();
    });
  });
  await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
  const addr = receiver.address();
  const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
  const dataDir = mkdtempSync(join(tmpdir(), 'writ-ssf-'));
  const receivers = JSON.stringify([{ endpointUrl: `http://127.0.0.1:${port}/events`, audience: 'https://receiver.example', authorizationHeaderEnv: 'SSF_TEST_RECEIVER_AUTH' }]);
  const server = await startServer({
    env: { SSF_TEST_RECEIVER_AUTH: 'Bearer receiver-given-secret' },
    flags: { listen: '127.0.0.1:0', dataDir, logLevel: 'warn', 'ssf.receivers': receivers },
    logStream: new Writable({ write: (_c, _e, cb) => cb() }),
  });
  const token = readFileSync(join(dataDir, 'admin.token'), 'utf8').trim();
  const post = async (b: unknown): Promise<{ id: string }> => {
    const r = await fetch(`${server.url}/admin/v1/revocations`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(b) });
    assert.equal(r.status, 201, await r.clone().text());
    return (await r.json()) as { id: string };
  };
  try {
    const meta = (await (await fetch(`${server.url}/.well-known/ssf-configuration`)).json()) as Record<string, unknown>;
    assert.equal(meta.issuer, server.url, 'issuer is the URL the metadata is served under');
    assert.equal(meta.spec_version, '1_0');
    assert.equal(meta.jwks_uri, `${server.url}/ssf/jwks`);
    assert.deepEqual(meta.delivery_methods_supported, ['urn:ietf:rfc:8935', 'urn:ietf:rfc:8936']);
    assert.equal(meta.configuration_endpoint, `${server.url}/ssf/stream`);
    assert.equal(meta.status_endpoint, `${server.url}/ssf/status`);
    assert.equal(meta.add_subject_endpoint, `${server.url}/ssf/subjects:add`);
    assert.equal(meta.remove_subject_endpoint, `${server.url}/ssf/subjects:remove`);
    assert.equal(meta.verification_endpoint, `${server.url}/ssf/verify`);
    assert.deepEqual(meta.authorization_schemes, [{ spec_urn: 'urn:ietf:rfc:6749' }]);

    const subjectRev = await post({ kind: 'subject-revoked', subject: 'spiffe://writ.local/ns/ci/sa/builder', reason: 'posture-failed' });
    const tokenRev = await post({ kind: 'token-revoked', tokenId: 'jti-123', reason: 'credential-compromised' });
    await post({ kind: 'policy-changed', reason: 'policy-reloaded' });
    const until = Date.now() + 10_000;
    while (received.length < 2 && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
    assert.equal(received.length, 2, 'both SETs delivered (the first after a retry)');

    const jwks = createRemoteJWKSet(new URL(`${server.url}/ssf/jwks`));
    const verified: JWTPayload[] = [];
    for (const r of received) {
      assert.equal(r.auth, 'Bearer receiver-given-secret', 'the receiver-supplied Authorization is sent');
      assert.equal(r.contentType, 'application/secevent+jwt');
      const header = decodeProtectedHeader(r.jwt);
      assert.equal(header.typ, 'secevent+jwt');
      assert.equal(header.alg, 'RS256');
      const { payload } = await jwtVerify(r.jwt, jwks, { issuer: server.url, audience: 'https://receiver.example', typ: 'secevent+jwt', algorithms: ['RS256'] });
      assert.equal('sub' in payload, false, 'no sub');
      assert.equal('exp' in payload, false, 'no exp');
      assert.equal(typeof payload.jti, 'string');
      assert.equal(typeof payload.iat, 'number');
      assert.equal(Object.keys(payload.events as object).length, 1, 'one event');
      verified.push(payload);
    }
    const byTxn = new Map(verified.map((p) => [p.txn, p]));
    const s = byTxn.get(subjectRev.id) as JWTPayload & { sub_id: unknown; events: Record<string, Record<string, unknown>> };
    assert.deepEqual(s.sub_id, { format: 'uri', uri: 'spiffe://writ.local/ns/ci/sa/builder' });
    assert.deepEqual(Object.keys(s.events), [CAEP_SESSION_REVOKED]);
    assert.deepEqual(s.events[CAEP_SESSION_REVOKED]?.reason_admin, { en: 'posture-failed' });
    const t = byTxn.get(tokenRev.id) as JWTPayload & { sub_id: unknown; events: Record<string, Record<string, unknown>> };
    assert.deepEqual(t.sub_id, { format: 'jwt_id', iss: server.url, jti: 'jti-123' });
    assert.equal(t.events[CAEP_CREDENTIAL_CHANGE]?.credential_type, 'app');
    assert.equal(t.events[CAEP_CREDENTIAL_CHANGE]?.change_type, 'revoke');

    // A SET with a flipped signature byte does not verify (what a receiver must reject).
    const first = received[0]?.jwt ?? '';
    const forged = `${first.slice(0, -4)}${first.slice(-4) === 'AAAA' ? 'BBBB' : 'AAAA'}`;
    await assert.rejects(jwtVerify(forged, jwks, { issuer: server.url, audience: 'https://receiver.example', typ: 'secevent+jwt' }), (e: { code?: string }) => e.code === 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED');
  } finally {
    await server.close();
    await new Promise<void>((r) => receiver.close(() => r()));
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test('ssf.receivers naming an unset environment variable refuses to start', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'writ-ssf-'));
  try {
    await assert.rejects(
      startServer({ env: {}, flags: { listen: '127.0.0.1:0', dataDir, logLevel: 'silent', 'ssf.receivers': JSON.stringify([{ endpointUrl: 'http://127.0.0.1:9/x', audience: 'a', authorizationHeaderEnv: 'SSF_NOT_SET' }]) } }),
      (e: { code?: string; message?: string }) => {
        assert.equal(e.code, 'ERR_SIGNALS_SSF_CONFIG');
        assert.equal(e.message, 'environment variable `SSF_NOT_SET` for `ssf.receivers[0]` is not set');
        return true;
      },
    );
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
});
