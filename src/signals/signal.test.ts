import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseSignal, SIGNAL_TYPES } from './signal.ts';
import { parseRevocation } from './revocation.ts';

const ID = 'spiffe://writ.local/ns/prod/sa/api';

function refused(input: unknown, message: string, code = 'ERR_SIGNALS_INVALID', parse: (i: unknown) => unknown = parseSignal): void {
  assert.throws(() => parse(input), (e: { code?: string; message?: string; status?: number }) => {
    assert.equal(e.code, code);
    assert.equal(e.status, 400);
    assert.equal(e.message, message);
    return true;
  });
}

test('every signal type parses in its minimal form', () => {
  const minimal: Record<(typeof SIGNAL_TYPES)[number], Record<string, unknown>> = {
    'posture-changed': { subject: ID, score: 55 },
    'risk-changed': { subject: ID, level: 'high' },
    'credential-compromised': { subject: ID, leaseId: 'lease-1' },
    'owner-offboarded': { subject: 'alice@example.com' },
    'task-completed': { subject: 'task-42', workload: ID },
    'entry-deleted': { subject: ID, entryId: 'e-1' },
    'node-evicted': { subject: 'spiffe://writ.local/spire/agent/join_token/n1', nodeId: 'n1' },
    'policy-changed': { policyVersion: 'v7' },
  };
  for (const type of SIGNAL_TYPES) {
    const p = parseSignal({ type, ...minimal[type] });
    assert.equal(p.signal.type, type);
  }
  assert.deepEqual(parseSignal({ type: 'posture-changed', subject: ID, score: 55 }).signal, { type: 'posture-changed', subject: ID, subjectKind: 'workload', score: 55, failingChecks: [] });
  assert.deepEqual(parseSignal({ type: 'policy-changed', policyVersion: 'v7' }).signal, { type: 'policy-changed', subject: 'policy', policyVersion: 'v7' });
});

test('posture: node subjects, failing checks, reason and occurredAt are kept; the time is normalized', () => {
  const p = parseSignal({ type: 'posture-changed', subject: ID, subjectKind: 'node', score: 0, failingChecks: ['disk-encryption', 'edr-running'], reason: 'scan-failed', occurredAt: '2026-11-22T10:00:00+01:00' });
  assert.deepEqual(p, { signal: { type: 'posture-changed', subject: ID, subjectKind: 'node', score: 0, failingChecks: ['disk-encryption', 'edr-running'] }, reason: 'scan-failed', occurredAt: '2026-11-22T09:00:00.000Z' });
});

test('hostile or malformed signals are refused with one message each', () => {
  refused('x', 'a signal must be a JSON object');
  refused({ type: 'posture-dropped', subject: ID }, 'unknown signal type `posture-dropped`; one of posture-changed, risk-changed, credential-compromised, owner-offboarded, task-completed, entry-deleted, node-evicted, policy-changed');
  refused({ type: 'posture-changed', subject: ID, score: 1, level: 'high' }, 'field `level` is not allowed in a `posture-changed` signal');
  refused({ type: 'posture-changed', subject: 'spiffe://Writ.Local/x', score: 1 }, '`subject` `spiffe://Writ.Local/x` is not a valid SPIFFE ID');
  refused({ type: 'posture-changed', subject: 'spiffe://writ.local/a/../b', score: 1 }, '`subject` `spiffe://writ.local/a/../b` is not a valid SPIFFE ID');
  refused({ type: 'posture-changed', subject: 42, score: 1 }, '`subject` must be a SPIFFE ID string');
  refused({ type: 'posture-changed', subject: ID, score: 101 }, '`score` must be an integer from 0 to 100');
  refused({ type: 'posture-changed', subject: ID, score: 2.5 }, '`score` must be an integer from 0 to 100');
  refused({ type: 'posture-changed', subject: ID, score: 5, subjectKind: 'pod' }, '`subjectKind` must be `workload` or `node`');
  refused({ type: 'posture-changed', subject: ID, score: 5, failingChecks: ['Disk Encryption'] }, 'failing check `Disk Encryption` must be kebab-case, at most 64 characters');
  refused({ type: 'posture-changed', subject: ID, score: 5, failingChecks: Array.from({ length: 65 }, () => 'x') }, '`failingChecks` must be an array of at most 64 check names');
  refused({ type: 'risk-changed', subject: ID, level: 'severe' }, '`level` must be one of none, low, medium, high, critical');
  refused({ type: 'owner-offboarded', subject: 'alice smith' }, '`subject` must be 1-200 characters of letters, digits and . _ : @ / + -');
  refused({ type: 'entry-deleted', subject: ID }, '`entryId` must be 1-200 characters of letters, digits and . _ : @ / + -');
  refused({ type: 'risk-changed', subject: ID, level: 'low', reason: 'Because' }, '`reason` must be kebab-case, at most 64 characters');
  refused({ type: 'risk-changed', subject: ID, level: 'low', occurredAt: 'yesterday' }, '`occurredAt` must be an ISO-8601 date-time');
});

test('revocations: each kind needs what it names; subjects are SPIFFE IDs', () => {
  assert.deepEqual(parseRevocation({ kind: 'subject-revoked', subject: ID }), { kind: 'subject-revoked', subject: ID, reason: 'admin-revoked' });
  assert.deepEqual(parseRevocation({ kind: 'lease-revoked', leaseId: 'l-1', reason: 'task-completed', id: 'r1' }), { kind: 'lease-revoked', leaseId: 'l-1', reason: 'task-completed', id: 'r1' });
  const P = (i: unknown) => parseRevocation(i);
  refused({ kind: 'revoke-all' }, 'unknown revocation kind; one of subject-revoked, lease-revoked, token-revoked, policy-changed, signal', 'ERR_SIGNALS_REVOCATION_INVALID', P);
  refused({ kind: 'lease-revoked' }, '`lease-revoked` needs a `leaseId`', 'ERR_SIGNALS_REVOCATION_INVALID', P);
  refused({ kind: 'token-revoked', subject: ID }, '`token-revoked` needs a `tokenId`', 'ERR_SIGNALS_REVOCATION_INVALID', P);
  refused({ kind: 'subject-revoked', subject: 'https://x' }, '`subject` must be a valid SPIFFE ID', 'ERR_SIGNALS_REVOCATION_INVALID', P);
  refused({ kind: 'subject-revoked', subject: ID, cursor: 5 }, 'field `cursor` is not allowed in a revocation', 'ERR_SIGNALS_REVOCATION_INVALID', P);
});
