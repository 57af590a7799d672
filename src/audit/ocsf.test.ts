import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Secret } from '../kernel/index.ts';
import type { AuditRecord } from '../kernel/index.ts';
import { loadOcsfSchema } from '../../test/support/ocsf-schema.ts';
import {
  ACCOUNT_CHANGE, API_ACTIVITY, AUTHENTICATION, AUTHORIZE_SESSION, ENTITY_MANAGEMENT, OCSF_MAPPINGS,
  OCSF_VERSION, WEB_RESOURCE_ACCESS, ocsfMappingFor, toOcsf,
} from './ocsf.ts';
import type { OcsfEvent } from './ocsf.ts';

const schema = loadOcsfSchema();
const PRODUCT = { name: 'writ', version: '0.1.0' };
const ADMIN = { type: 'admin', id: 'adm-alice', name: 'alice', role: 'owner', ip: '192.0.2.10' } as const;
const WORKLOAD = 'spiffe://example.org/ns/prod/sa/api';

function record(over: Partial<AuditRecord> & Pick<AuditRecord, 'action'>): AuditRecord {
  return {
    seq: 42,
    time: '2025-05-01T12:00:00.000Z',
    actor: ADMIN,
    outcome: 'success',
    reasons: [],
    correlationId: '4bf92f3577b34da6a3ce929d0e0e4736',
    details: {},
    prevHash: 'a'.repeat(64),
    hash: 'b'.repeat(64),
    ...over,
  };
}

/** Map and validate; fail with the violations when there are any. */
function mapped(r: AuditRecord): OcsfEvent {
  const event = toOcsf(r, PRODUCT);
  assert.deepEqual(schema.validate(event), [], `${r.action}: ${JSON.stringify(event)}`);
  return event;
}

/** A deep-mutable copy of an event, for breaking it on purpose. */
function copy(event: OcsfEvent): Record<string, unknown> {
  return JSON.parse(JSON.stringify(event)) as Record<string, unknown>;
}

describe('toOcsf: every mapping row yields a schema-valid event', () => {
  const cases: ReadonlyArray<{ name: string; record: AuditRecord; classUid: number; activityId: number }> = [
    ...(['POST', 'GET', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'BREW'] as const).map((method, i) => ({
      name: `admin API ${method}`,
      record: record({ action: 'api.called', details: { method, route: '/v1/entries/:id', path: '/v1/entries/e1', status: 200, decision: 'allow', policyIds: ['admin-rbac'], policyVersion: 'v3' } }),
      classUid: 6003,
      activityId: [1, 2, 3, 3, 4, 99, 99][i] ?? -1,
    })),
    { name: 'principal created', record: record({ action: 'admin.principal.created', target: { type: 'principal', id: 'adm-bob', name: 'bob' } }), classUid: 3001, activityId: 1 },
    { name: 'principal deleted', record: record({ action: 'admin.principal.deleted', target: { type: 'principal', id: 'adm-bob' } }), classUid: 3001, activityId: 6 },
    { name: 'principal rotated by itself', record: record({ action: 'admin.principal.rotated', target: { type: 'principal', id: 'adm-alice' }, details: { keyId: 'k-2' } }), classUid: 3001, activityId: 3 },
    { name: 'principal rotated by another', record: record({ action: 'admin.principal.rotated', target: { type: 'principal', id: 'adm-bob' } }), classUid: 3001, activityId: 4 },
    {
      name: 'x509 svid issued',
      record: record({ action: 'svid.issued', actor: { type: 'agent', id: 'spiffe://example.org/writ/agent/n1' }, target: { type: 'workload', id: WORKLOAD }, details: { serial: '3f9a01', expiresAt: '2025-05-01T13:00:00.000Z' } }),
      classUid: 3002, activityId: 3,
    },
    {
      name: 'x509 svid issued with subject and validity',
      record: record({ action: 'svid.issued', target: { type: 'workload', id: WORKLOAD }, details: { serialNumber: '3f9a02', issuer: 'O=Writ, CN=example.org', subject: 'O=SPIRE', notBefore: '2025-05-01T12:00:00Z', notAfter: '2025-05-01T13:00:00Z' } }),
      classUid: 3002, activityId: 3,
    },
    { name: 'jwt svid issued', record: record({ action: 'jwt.issued', actor: { type: 'workload', id: WORKLOAD }, details: { jti: 'j-1', audience: 'db', issuer: 'https://writ.example.org', issuedAt: '2025-05-01T12:00:00Z', expiresAt: '2025-05-01T12:05:00Z' } }), classUid: 3002, activityId: 4 },
    { name: 'access token issued', record: record({ action: 'token.issued', actor: { type: 'workload', id: WORKLOAD, ip: '10.0.0.5' }, details: { scope: 'read write' } }), classUid: 3002, activityId: 4 },
    { name: 'node attested', record: record({ action: 'node.attested', actor: { type: 'node', id: 'spiffe://example.org/writ/node/n1' }, details: { attestor: 'join_token' } }), classUid: 3002, activityId: 1 },
    { name: 'entry created', record: record({ action: 'entry.created', target: { type: 'entry', id: 'e1' } }), classUid: 3004, activityId: 1 },
    { name: 'policy updated', record: record({ action: 'policy.updated', target: { type: 'policy', id: 'payments' }, details: { version: 'v7' } }), classUid: 3004, activityId: 3 },
    { name: 'ca key activated', record: record({ action: 'ca.activated', actor: { type: 'system', id: 'writ' }, details: { slot: 'B' } }), classUid: 3004, activityId: 10 },
    { name: 'ca key proved (no schema activity)', record: record({ action: 'ca.proved', actor: { type: 'system', id: 'writ' } }), classUid: 3004, activityId: 99 },
    {
      name: 'decision allow',
      record: record({ action: 'decision.made', actor: { type: 'workload', id: WORKLOAD }, target: { type: 'route', id: 'orders-api' }, details: { decision: 'allow', method: 'GET', path: '/orders/1?access_token=abc', policyIds: ['p1'] } }),
      classUid: 6004, activityId: 1,
    },
    {
      name: 'decision deny',
      record: record({ action: 'decision.made', actor: { type: 'agent', id: WORKLOAD }, outcome: 'denied', reasons: ['tool-not-in-task-scope'], details: { decision: 'deny', resource: 'mcp:tool/delete_db' } }),
      classUid: 6004, activityId: 2,
    },
    { name: 'decision error', record: record({ action: 'decision.made', actor: { type: 'workload', id: WORKLOAD }, outcome: 'failure', reasons: ['pdp-timeout'] }), classUid: 6004, activityId: 4 },
    { name: 'lease issued with scopes', record: record({ action: 'lease.issued', actor: { type: 'workload', id: WORKLOAD }, target: { type: 'lease', id: 'l-1' }, details: { scopes: ['orders:read'], expiresAt: '2025-05-01T12:15:00Z' } }), classUid: 3003, activityId: 1 },
    { name: 'lease issued with a role', record: record({ action: 'lease.issued', actor: { type: 'workload', id: WORKLOAD }, details: { role: 'orders_ro', leaseId: 'l-2' } }), classUid: 3003, activityId: 1 },
    { name: 'lease issued naming neither', record: record({ action: 'lease.issued', actor: { type: 'workload', id: WORKLOAD }, target: { type: 'postgres', id: 'orders-db' } }), classUid: 3003, activityId: 1 },
    { name: 'lease revoked', record: record({ action: 'lease.revoked', actor: { type: 'system', id: 'writ' }, target: { type: 'lease', id: 'l-1' }, details: { username: 'v_orders_8f2' } }), classUid: 3001, activityId: 6 },
    { name: 'credential rotated', record: record({ action: 'credential.rotated', target: { type: 'credential', id: 'c-9' } }), classUid: 3001, activityId: 4 },
    {
      name: 'MCP tool call allowed',
      record: record({ action: 'mcp.call.decided', actor: { type: 'agent', id: WORKLOAD }, target: { type: 'tool', id: 'search_tickets' }, details: { decision: 'allow', decisionId: 'd-1', operation: 'tools/call search_tickets', method: 'POST', path: '/mcp', server: 'support', agent: WORKLOAD, onBehalfOf: WORKLOAD, delegation: [], clientId: 'c-1' } }),
      classUid: 6004, activityId: 1,
    },
    {
      name: 'MCP tool call denied',
      record: record({ action: 'mcp.call.decided', actor: { type: 'agent', id: WORKLOAD }, target: { type: 'tool', id: 'drop_table' }, outcome: 'denied', reasons: ['denied'], details: { decision: 'deny', operation: 'tools/call drop_table', method: 'POST', path: '/mcp', code: 'ERR_ENFORCE_DENIED' } }),
      classUid: 6004, activityId: 2,
    },
    {
      name: 'token request refused',
      record: record({ action: 'token.refused', actor: { type: 'workload', id: WORKLOAD, ip: '10.0.0.5' }, outcome: 'denied', reasons: ['invalid-target'], details: { error: 'invalid_target', code: 'ERR_OAUTH_INVALID_TARGET', grantType: 'urn:ietf:params:oauth:grant-type:token-exchange', audience: 'db', decisionIds: ['d-2'] } }),
      classUid: 3002, activityId: 4,
    },
    { name: 'access token revoked', record: record({ action: 'token.revoked', actor: { type: 'workload', id: WORKLOAD }, target: { type: 'access_token', id: 'jti-1' }, details: { clientId: 'c-1', subject: WORKLOAD, leaseId: 'jti-1', leaseState: 'revoked' } }), classUid: 3001, activityId: 6 },
    { name: 'legacy exception created', record: record({ action: 'exception.created', target: { type: 'legacy_exception', id: 'exc_1' }, details: { id: 'exc_1', name: 'billing-sa', account: 'billing_app', system: 'billing-db', engine: 'main' } }), classUid: 3001, activityId: 1 },
    { name: 'legacy exception password rotated by Writ', record: record({ action: 'exception.secret.rotated', actor: { type: 'system', id: 'writ' }, target: { type: 'legacy_exception', id: 'exc_1' }, details: { account: 'billing_app' } }), classUid: 3001, activityId: 4 },
    { name: 'legacy exception expired', record: record({ action: 'exception.expired', actor: { type: 'system', id: 'writ' }, target: { type: 'legacy_exception', id: 'exc_1' }, details: { account: 'billing_app' } }), classUid: 3001, activityId: 6 },
    { name: 'legacy exception password revealed (no schema activity)', record: record({ action: 'exception.secret.revealed', target: { type: 'legacy_exception', id: 'exc_1' }, details: { account: 'billing_app' } }), classUid: 3001, activityId: 99 },
    { name: 'engine admin password rotated', record: record({ action: 'engine.secret.rotated', target: { type: 'secret_engine', id: 'main' }, details: { engine: 'main', type: 'postgres', account: 'writ_admin', trigger: 'manual' } }), classUid: 3001, activityId: 4 },
    { name: 'node evicted', record: record({ action: 'node.evicted', target: { type: 'node', id: 'n-1', name: 'spiffe://example.org/writ/node/n1' }, details: { spiffeId: 'spiffe://example.org/writ/node/n1' } }), classUid: 3004, activityId: 7 },
    {
      name: 'proxy request denied',
      record: record({ action: 'request.denied', actor: { type: 'workload', id: WORKLOAD, ip: '10.0.0.7' }, target: { type: 'route', id: 'orders' }, outcome: 'denied', reasons: ['denied'], correlationId: 'd-3', details: { enforcementPoint: 'writ-proxy', method: 'DELETE', path: '/orders/1', host: 'orders.internal', code: 'ERR_ENFORCE_DENIED', status: 403, decisionCached: false } }),
      classUid: 6004, activityId: 2,
    },
    { name: 'proxy request allowed', record: record({ action: 'request.allowed', actor: { type: 'workload', id: WORKLOAD }, target: { type: 'route', id: 'orders' }, details: { enforcementPoint: 'writ-proxy', method: 'GET', path: '/orders/1', status: 200 } }), classUid: 6004, activityId: 1 },
    { name: 'policy set activated', record: record({ action: 'policy-set.activated', actor: { type: 'system', id: 'writ' }, details: { version: 'pv-1' } }), classUid: 3004, activityId: 10 },
    { name: 'join token created', record: record({ action: 'join_token.created', target: { type: 'join_token', id: 'jt-1' } }), classUid: 3004, activityId: 1 },
    { name: 'unknown action', record: record({ action: 'signal.received', actor: { type: 'system', id: 'writ' } }), classUid: 6003, activityId: 99 },
  ];

  for (const c of cases) {
    it(`${c.name} → ${c.classUid} activity ${c.activityId}`, () => {
      const e = mapped(c.record);
      assert.equal(e.class_uid, c.classUid);
      assert.equal(e.activity_id, c.activityId);
      assert.equal(e.type_uid, c.classUid * 100 + c.activityId);
      assert.equal(e.category_uid, Math.floor(c.classUid / 1000));
    });
  }

  it('maps an admin API call to actor, api, src_endpoint and http_request', () => {
    const e = mapped(cases[0]?.record ?? record({ action: 'x' }));
    assert.deepEqual(e.actor, {
      user: { uid: 'adm-alice', name: 'alice', type_id: 2, type: 'Admin' },
      authorizations: [{ decision: 'allow', policy: { uid: 'admin-rbac', name: 'admin-rbac', version: 'v3' } }],
    });
    assert.deepEqual(e.api, { operation: 'POST /v1/entries/:id', request: { uid: '4bf92f3577b34da6a3ce929d0e0e4736' }, response: { code: 200 } });
    assert.deepEqual(e.src_endpoint, { ip: '192.0.2.10' });
    assert.deepEqual(e.http_request, { http_method: 'POST', url: { path: '/v1/entries/e1' }, uid: '4bf92f3577b34da6a3ce929d0e0e4736' });
    assert.equal(e.status_code, '200');
  });

  it('fills the base attributes, metadata and unmapped chain fields', () => {
    const e = mapped(record({ action: 'entry.created', seq: 7, target: { type: 'entry', id: 'e1' }, reasons: ['operator-request'] }));
    assert.equal(e.time, Date.UTC(2025, 4, 1, 12));
    assert.equal(e.severity_id, 1);
    assert.equal(e.status_id, 1);
    assert.equal(e.status, 'Success');
    assert.equal(e.type_name, 'Entity Management: Create');
    assert.equal(e.message, 'entry.created by admin adm-alice on entry e1: success');
    assert.deepEqual(e.metadata, {
      product: { name: 'writ', vendor_name: 'Writ', version: '0.1.0' },
      version: '1.8.0',
      uid: '7',
      correlation_uid: '4bf92f3577b34da6a3ce929d0e0e4736',
      log_name: 'writ-audit',
      sequence: 7,
      original_time: '2025-05-01T12:00:00.000Z',
    });
    assert.equal(OCSF_VERSION, '1.8.0');
    assert.deepEqual(e.unmapped, {
      action: 'entry.created', outcome: 'success', reasons: ['operator-request'], actor_type: 'admin', actor_role: 'owner',
      target_type: 'entry', prev_hash: 'a'.repeat(64), hash: 'b'.repeat(64), details: {},
    });
  });

  it('maps denied to Failure with Medium severity and failure to High, with a status_detail', () => {
    const denied = mapped(record({ action: 'api.called', outcome: 'denied', reasons: ['role-not-allowed'], details: { method: 'DELETE', route: '/v1/policies/:id', status: 403 } }));
    assert.deepEqual([denied.status_id, denied.status, denied.severity_id, denied.severity], [2, 'Failure', 3, 'Medium']);
    assert.equal(denied.status_detail, 'denied: role-not-allowed');
    const failed = mapped(record({ action: 'svid.issued', outcome: 'failure', reasons: ['ca-unavailable'], target: { type: 'workload', id: WORKLOAD } }));
    assert.deepEqual([failed.status_id, failed.status, failed.severity_id, failed.severity], [2, 'Failure', 4, 'High']);
    assert.equal(failed.status_detail, 'failure: ca-unavailable');
  });

  it('maps an X.509-SVID issuance to the workload as a Service user with its certificate', () => {
    const e = mapped(cases.find((c) => c.name === 'x509 svid issued')?.record ?? record({ action: 'x' }));
    assert.deepEqual(e.user, { uid: WORKLOAD, name: WORKLOAD, type_id: 4, type: 'Service' });
    assert.deepEqual(e.certificate, {
      serial_number: '3f9a01', issuer: 'spiffe://example.org', expiration_time: Date.UTC(2025, 4, 1, 13),
      sans: [{ name: WORKLOAD, type: 'URI' }],
    });
    assert.deepEqual(e.service, { name: 'writ' });
  });

  it('marks access tokens as OAuth 2.0 (auth_protocol_id 6)', () => {
    const e = mapped(record({ action: 'token.issued', actor: { type: 'workload', id: WORKLOAD } }));
    assert.equal(e.auth_protocol_id, 6);
    assert.equal(e.auth_protocol, 'OAUTH 2.0');
  });

  it('maps decisions with the security_control and host profiles', () => {
    const deny = mapped(record({ action: 'decision.made', actor: { type: 'agent', id: WORKLOAD }, outcome: 'denied', details: { decision: 'deny', resource: 'mcp:tool/delete_db' } }));
    assert.deepEqual(deny.metadata.profiles, ['host', 'security_control']);
    assert.deepEqual([deny.action_id, deny.disposition_id], [2, 2]);
    assert.deepEqual(deny.web_resources, [{ uid: 'mcp:tool/delete_db', name: 'mcp:tool/delete_db' }]);
    assert.deepEqual(deny.authorizations, [{ decision: 'deny' }]);
  });

  it('keeps the source label in activity_name for an unknown action', () => {
    const e = mapped(record({ action: 'signal.received', actor: { type: 'system', id: 'writ' } }));
    assert.equal(e.activity_name, 'signal.received');
    assert.deepEqual(e.api, { operation: 'signal.received', request: { uid: '4bf92f3577b34da6a3ce929d0e0e4736' } });
    assert.deepEqual(e.src_endpoint, { name: 'writ', svc_name: 'writ' });
  });

  it('yields a valid event for every row of the table, with empty details and every outcome', () => {
    for (const row of OCSF_MAPPINGS) {
      const action = row.action === '*' ? 'anything.happened' : row.action.replace('*', 'changed');
      for (const outcome of ['success', 'denied', 'failure'] as const) {
        const e = mapped(record({ action, outcome }));
        assert.equal(e.class_uid, row.class.uid, action);
      }
      mapped(record({ action, actor: { type: 'anonymous', id: 'anonymous' } }));
    }
  });

  it('throws TypeError on a record whose time is not a date', () => {
    assert.throws(() => toOcsf(record({ action: 'entry.created', time: 'yesterday' }), PRODUCT), {
      name: 'TypeError',
      message: 'audit record 42 has an invalid time `yesterday`',
    });
  });
});

describe('toOcsf: credentials and accounts behind the newer rows', () => {
  it('a revoked access token is a deleted programmatic credential of the workload it was issued to', () => {
    const e = mapped(record({ action: 'token.revoked', actor: { type: 'workload', id: WORKLOAD }, target: { type: 'access_token', id: 'jti-1' }, details: { subject: WORKLOAD, leaseId: 'jti-1' } }));
    assert.deepEqual(e.user, { uid: WORKLOAD, name: WORKLOAD, type_id: 4, type: 'Service', programmatic_credentials: [{ uid: 'jti-1', type: 'OAuth 2.0 Access Token' }] });
  });
  it('a legacy exception names its account and its password credential', () => {
    const e = mapped(record({ action: 'exception.secret.rotated', actor: { type: 'system', id: 'writ' }, target: { type: 'legacy_exception', id: 'exc_1' }, details: { account: 'billing_app' } }));
    assert.deepEqual(e.user, { uid: 'billing_app', name: 'billing_app', type_id: 4, type: 'Service', programmatic_credentials: [{ uid: 'exc_1', type: 'Password' }] });
    assert.equal(e.type_name, 'Account Change: Password Reset');
  });
  it('a denied MCP tool call carries the verdict in the security_control fields', () => {
    const e = mapped(record({ action: 'mcp.call.decided', actor: { type: 'agent', id: WORKLOAD }, target: { type: 'tool', id: 'drop_table' }, outcome: 'denied', details: { decision: 'deny', method: 'POST', path: '/mcp' } }));
    assert.deepEqual([e.action_id, e.disposition_id, e.web_resources], [2, 2, [{ uid: 'drop_table', name: 'drop_table', type: 'tool' }]]);
  });
});

describe('the mapping table covers what Writ records', () => {
  // Every action Writ's contexts record, with the class it exports as. Writ's own lifecycle and signal
  // plumbing (the 6003 rows) have no closer IAM or access class and fall back to API Activity 99 Other.
  const EXPECTED: Readonly<Record<number, readonly string[]>> = {
    3001: ['admin.principal.created', 'admin.principal.deleted', 'admin.principal.revoked', 'admin.principal.rotated', 'credential.orphan.removed', 'credential.rotated', 'engine.secret.recovered', 'engine.secret.rotated', 'engine.secret.rotation-failed', 'exception.created', 'exception.deleted', 'exception.expired', 'exception.renewed', 'exception.secret.revealed', 'exception.secret.rotated', 'exception.secret.rotation-failed', 'lease.activated', 'lease.expired', 'lease.opened', 'lease.revoked', 'token.revoked'],
    3002: ['jwt.issued', 'node.attested', 'svid.issued', 'svid.renewed', 'token.issued', 'token.refused'],
    3003: ['credential.issued', 'lease.created', 'lease.issued', 'lease.renewed'],
    3004: ['ca.activated', 'ca.key.activated', 'ca.key.dropped', 'ca.key.prepared', 'ca.key.proved', 'ca.key.retired', 'ca.proved', 'entry.created', 'entry.deleted', 'entry.updated', 'join_token.created', 'node.evicted', 'policy-set.activated', 'policy-set.rejected', 'policy.shadow.disabled', 'policy.shadow.disagreed', 'policy.shadow.enabled', 'policy.updated'],
    6003: ['api.called', 'api.refusals.suppressed', 'drill.completed', 'revocation.published', 'server.started', 'server.stopped', 'signal.reevaluated', 'signal.received', 'ssf.set.received', 'ssf.set.rejected', 'ssf.subject.added', 'ssf.subject.removed', 'task.completed', 'task.expired', 'task.started'],
    6004: ['decision.made', 'mcp.call.decided', 'request.allowed', 'request.denied'],
  };
  for (const [uid, actions] of Object.entries(EXPECTED)) {
    it(`export as class ${uid}: ${actions.length} actions`, () => {
      for (const a of actions) assert.equal(ocsfMappingFor(a).class.uid, Number(uid), a);
    });
  }
  it('only the api.* actions reach API Activity through their own row; the rest of 6003 is the catch-all', () => {
    assert.deepEqual((EXPECTED[6003] ?? []).filter((a) => ocsfMappingFor(a).action !== '*'), ['api.called', 'api.refusals.suppressed']);
  });
});

describe('toOcsf: secrets never reach the event', () => {
  const secrets = ['hunter2-pw', 'tok-3f9a', 'cs-77', 'ak-nested', 'Bearer eyJhbGci', 'wrapped-secret', 'qs-token-9'];
  const details = {
    method: 'POST', route: '/v1/x', path: '/v1/x?access_token=qs-token-9', status: 201,
    password: 'hunter2-pw', token: 'tok-3f9a', client_secret: 'cs-77', nested: { apiKey: 'ak-nested' },
    authorization: 'Bearer eyJhbGci', wrapped: new Secret('wrapped-secret'), scope: 'read',
  };

  for (const row of OCSF_MAPPINGS) {
    const action = row.action === '*' ? 'anything.happened' : row.action.replace('*', 'changed');
    it(`${action}: no secret value, and secret-named keys hold only [redacted]`, () => {
      const e = mapped(record({ action, details, target: { type: 'workload', id: WORKLOAD } }));
      const json = JSON.stringify(e);
      for (const s of secrets) assert.equal(json.includes(s), false, `${s} leaked: ${json}`);
      const seen: string[] = [];
      JSON.parse(json, (key: string, value: unknown) => {
        if (['password', 'token', 'client_secret', 'apiKey', 'authorization'].includes(key)) seen.push(`${key}=${String(value)}`);
        return value;
      });
      assert.ok(seen.length > 0, 'the redacted keys are kept in unmapped.details');
      for (const s of seen) assert.match(s, /=\[redacted\]$/);
    });
  }
});

describe('the OCSF validator catches what it claims to', () => {
  const valid = (): Record<string, unknown> =>
    copy(toOcsf(record({ action: 'svid.issued', target: { type: 'workload', id: WORKLOAD }, details: { serial: '01' } }), PRODUCT));

  it('accepts the unbroken event', () => {
    assert.deepEqual(schema.validate(valid()), []);
  });

  it('reports a missing required attribute of the class', () => {
    const e = valid();
    delete e.user;
    assert.deepEqual(schema.validate(e), ['event: missing required attribute `user`']);
  });

  it('reports a missing required attribute inherited from base_event', () => {
    const e = valid();
    delete e.time;
    assert.deepEqual(schema.validate(e), ['event: missing required attribute `time`']);
  });

  it('reports a missing required attribute of a nested object', () => {
    const e = copy(toOcsf(record({ action: 'api.called', details: { method: 'GET' } }), PRODUCT));
    const api = e.api as Record<string, unknown>;
    delete api.operation;
    const meta = e.metadata as Record<string, unknown>;
    delete meta.version;
    assert.deepEqual(schema.validate(e), [
      'event.metadata: missing required attribute `version`',
      'event.api: missing required attribute `operation`',
    ]);
  });

  it('reports a value outside an enum, at the top and in a nested object', () => {
    const e = valid();
    e.severity_id = 7;
    (e.user as Record<string, unknown>).type_id = 5;
    assert.deepEqual(schema.validate(e), [
      'event.severity_id: `7` is not in the enum (0, 1, 2, 3, 4, 5, 6, 99)',
      'event.user.type_id: `5` is not in the enum (0, 1, 2, 3, 4, 99)',
    ]);
  });

  it('reports an activity_id the class does not define, which also breaks type_uid', () => {
    const e = valid();
    e.activity_id = 8;
    delete e.activity_name;
    delete e.type_name;
    assert.deepEqual(schema.validate(e), [
      'event.type_uid: `300203` is not class_uid * 100 + activity_id (300208)',
      'event.activity_id: `8` is not in the enum (0, 1, 2, 3, 4, 5, 6, 7, 99)',
    ]);
  });

  it('reports a wrong type_uid', () => {
    const e = valid();
    e.type_uid = 300201;
    assert.deepEqual(schema.validate(e), ['event.type_uid: `300201` is not class_uid * 100 + activity_id (300203)']);
  });

  it('reports a category_uid that is not the class category, and an unknown class', () => {
    const e = valid();
    e.category_uid = 6;
    assert.deepEqual(schema.validate(e), ['event.category_uid: `6` is not the category of class 3002 (3)']);
    assert.deepEqual(schema.validate({ ...valid(), class_uid: 3999 }), ['event.class_uid: unknown class `3999`']);
  });

  it('reports attributes the class does not have, and profile attributes without the profile', () => {
    const e = valid();
    e.writ_hash = 'x';
    e.action_id = 1;
    assert.deepEqual(schema.validate(e), [
      'event: unknown attribute `writ_hash` for `authentication`',
      'event: attribute `action_id` belongs to profile `security_control`, which metadata.profiles does not list',
    ]);
  });

  it('requires a profile\'s required attributes once metadata.profiles lists the profile', () => {
    const e = valid();
    (e.metadata as Record<string, unknown>).profiles = ['cloud'];
    assert.deepEqual(schema.validate(e), ['event: missing required attribute `cloud`']);
  });

  it('reports wrong scalar types, a label that is not the caption, and unmet constraints', () => {
    const e = valid();
    e.time = '2025-05-01T12:00:00Z';
    e.status = 'OK';
    delete e.service;
    assert.deepEqual(schema.validate(e), [
      'event.status: `OK` is not the caption of status_id 1 (`Success`)',
      'event.time: expected long_t, got "2025-05-01T12:00:00Z"',
      'event: needs at least one of `service`, `dst_endpoint`',
    ]);
  });

  it('knows the classes Writ emits with the captions ocsf.ts uses', () => {
    for (const cls of [ACCOUNT_CHANGE, AUTHENTICATION, AUTHORIZE_SESSION, ENTITY_MANAGEMENT, API_ACTIVITY, WEB_RESOURCE_ACCESS]) {
      const resolved = schema.classByUid(cls.uid);
      assert.ok(resolved, `class ${cls.uid} exists`);
      assert.equal(resolved.caption, cls.name);
      assert.equal(resolved.categoryUid, cls.categoryUid);
      assert.equal(resolved.categoryCaption, cls.categoryName);
      for (const [id, caption] of Object.entries(cls.activities)) assert.equal(resolved.activities.get(Number(id)), caption, `${cls.uid}/${id}`);
    }
  });
});
