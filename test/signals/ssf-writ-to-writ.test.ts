/**
 * Writ to Writ over Shared Signals: one server's transmitter (a poll stream)
 * feeds another server's receiver (its poll client). A revocation on the
 * first becomes a CAEP session-revoked SET, which the second verifies against
 * the first's JWKS and turns into a credential-compromised signal.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startTestServer } from '../support/server.ts';

test('a revocation on one Writ becomes a signal on another through SSF poll delivery', async () => {
  const a = await startTestServer();
  let b: Awaited<ReturnType<typeof startTestServer>> | undefined;
  try {
    const rx = await a.call('POST', '/admin/v1/principals', { body: { name: 'writ-b', role: 'pep' } });
    assert.equal(rx.status, 201, rx.text);
    const stream = await a.call('POST', '/ssf/stream', { token: rx.json.token, body: { delivery: { method: 'urn:ietf:rfc:8936' } } });
    assert.equal(stream.status, 201, stream.text);
    const aud = stream.json.aud as string;
    b = await startTestServer({
      flags: { 'ssf.transmitters': JSON.stringify([{ issuer: a.url, jwksUri: `${a.url}/ssf/jwks`, audience: aud, push: false, pollUrl: stream.json.delivery.endpoint_url, pollAuthorizationEnv: 'PEER_POLL_AUTH', pollIntervalMs: 100 }]) },
      env: { PEER_POLL_AUTH: `Bearer ${rx.json.token}` },
    });
    const subject = 'spiffe://writ.local/svc/shared';
    const rev = await a.call('POST', '/admin/v1/revocations', { body: { kind: 'subject-revoked', subject, reason: 'posture-failed' } });
    assert.equal(rev.status, 201, rev.text);
    const srv = b;
    const end = Date.now() + 20_000;
    let signals: { type: string; source: string; reason: string }[] = [];
    while (Date.now() < end) {
      signals = (await srv.call('GET', `/admin/v1/signals?subject=${encodeURIComponent(subject)}`)).json.signals;
      if (signals.length > 0) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.deepEqual(signals.map((x) => [x.type, x.source, x.reason]), [['credential-compromised', `ssf:${a.url}`, 'ssf-session-revoked']]);
    // The second server acknowledged it: the first's queue drains.
    const drained = Date.now() + 20_000;
    for (;;) {
      const left = await a.call('POST', stream.json.delivery.endpoint_url.slice(a.url.length), { token: rx.json.token, body: { returnImmediately: true, maxEvents: 10 } });
      if (Object.keys(left.json.sets).length === 0) break;
      if (Date.now() > drained) throw new Error('the SET was never acknowledged');
      await new Promise((r) => setTimeout(r, 50));
    }
  } finally {
    await b?.stop();
    await a.stop();
  }
});
