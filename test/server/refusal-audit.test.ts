/**
 * Anonymous refusals are audited within a per-source budget: a flood of
 * unauthenticated calls cannot fill the audit log, yet its size is on record
 * (`api.refusals.suppressed`). Authenticated callers are never limited.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startTestServer } from '../support/server.ts';
import { openStore } from '../../src/storage/index.ts';
import { toRecord, verifyChain } from '../../src/audit/index.ts';

describe('audit of anonymous refusals', () => {
  it('audits a burst per source, counts the rest into one event, and never limits authenticated callers', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'writ-refusals-'));
    try {
      const s = await startTestServer({ dataDir, flags: { 'audit.anonymousRefusalBurst': 5, 'audit.anonymousRefusalsPerMinute': 0, logLevel: 'warn' } });
      try {
        for (let i = 0; i < 40; i++) {
          const r = await s.call('GET', '/admin/v1/whoami', { token: i % 2 === 0 ? null : 'writ.garbage' });
          assert.equal(r.status, 401, 'every refusal is still answered');
          assert.equal(r.json.code, 'ERR_GOV_UNAUTHENTICATED');
        }
        // Anonymous token requests share the source's budget, already spent; naming a `client_id` without proof does not make a caller known.
        for (let i = 0; i < 10; i++) {
          const r = await s.call('POST', '/oauth2/token', { token: null, rawBody: i % 2 === 0 ? 'grant_type=client_credentials' : `grant_type=client_credentials&client_id=claimed-${i}`, headers: { 'content-type': 'application/x-www-form-urlencoded' } });
          assert.equal(r.status, 401, r.text);
        }
        // An authenticated caller, refused or not, is always audited.
        const auditor = await s.call('POST', '/admin/v1/principals', { body: { name: 'aud', role: 'auditor' } });
        for (let i = 0; i < 20; i++) assert.equal((await s.call('GET', '/admin/v1/whoami')).status, 200);
        for (let i = 0; i < 20; i++) assert.equal((await s.call('POST', '/admin/v1/principals', { token: auditor.json.token, body: { name: `x${i}`, role: 'auditor' } })).status, 403);
        const metrics = await s.call('GET', '/metrics', { token: null });
        assert.match(metrics.text, /^writ_audit_refusals_suppressed_total 45$/m);
      } finally {
        await s.stop();
      }
      const store = await openStore({ url: '', dataDir });
      try {
        const rows = (await store.query({ afterSeq: 0, limit: 10_000 })).map(toRecord);
        const anonymous = rows.filter((r) => r.action === 'api.called' && r.actor.type === 'anonymous');
        assert.equal(anonymous.length, 5, 'the burst, one by one');
        assert.equal(rows.filter((r) => r.action === 'token.refused').length, 0);
        assert.equal(rows.filter((r) => r.action === 'api.called' && r.actor.type === 'admin' && r.outcome === 'success' && r.details.route === '/admin/v1/whoami').length, 20);
        assert.equal(rows.filter((r) => r.action === 'api.called' && r.outcome === 'denied' && r.reasons.includes('role-not-permitted')).length, 20);
        const suppressed = rows.filter((r) => r.action === 'api.refusals.suppressed').map((r) => [r.details.kind, r.details.source, r.details.count, r.actor.ip, r.outcome, r.reasons]);
        assert.deepEqual(suppressed, [
          ['admin-api', '127.0.0.1', 35, '127.0.0.1', 'denied', ['unauthenticated', 'rate-limited']],
          ['oauth', '127.0.0.1', 10, '127.0.0.1', 'denied', ['unauthenticated', 'rate-limited']],
        ]);
        // Written at shutdown, before the audit log closed.
        assert.equal(rows[rows.length - 1]?.action, 'server.stopped');
        assert.equal((await verifyChain(store)).ok, true);
      } finally {
        await store.close();
      }
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
