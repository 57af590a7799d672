import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { credContext, T0 } from './support.ts';

const admin = { type: 'admin' as const, id: 'adm1', name: 'ops' };
const SUBJ = 'spiffe://example.org/ns/ci/runner';

function rejectsWith(code: string, message: string) {
  return (e: { code?: string; message?: string; status?: number }) => {
    assert.equal(e.code, code);
    assert.equal(e.message, message);
    return true;
  };
}

describe('lease manager', () => {
  it('writes the lease row before open resolves, caps it by policy max, and activates once', async () => {
    const c = await credContext({ limits: { maxTtlMs: 600_000 } });
    try {
      const l = await c.leases.open({ kind: 'access_token', subject: SUBJ, ttlMs: 3_600_000, correlationId: 'c1' });
      assert.equal(l.state, 'pending');
      assert.deepEqual(await c.store.credentials.getLease(l.id), l, 'durable row');
      assert.equal(l.expiresAt, new Date(T0 + 600_000).toISOString());
      assert.equal(l.maxExpiresAt, new Date(T0 + 600_000).toISOString());
      assert.equal(await c.leases.isLive(l.id), false, 'pending is not live');
      const a = await c.leases.activate(l.id, 'c1');
      assert.equal(a.state, 'active');
      assert.equal(await c.leases.isLive(l.id), true);
      await assert.rejects(c.leases.activate(l.id), rejectsWith('ERR_CRED_LEASE_NOT_PENDING', `lease \`${l.id}\` is active`));
      await assert.rejects(c.leases.activate('ffffffffffffffffffffffff'), rejectsWith('ERR_CRED_LEASE_NOT_FOUND', 'no lease `ffffffffffffffffffffffff`'));
      c.clock.advance(600_000);
      assert.equal(await c.leases.isLive(l.id), false, 'expired at the clock');
      assert.deepEqual(c.audit.actions(), ['lease.opened', 'lease.activated']);
    } finally {
      await c.close();
    }
  });

  it('tells onRevoked listeners of each revocation, single and by subject, never of an expiry; a failing listener does not undo it', async () => {
    const c = await credContext();
    try {
      const heard: string[] = [];
      const failed: string[] = [];
      const stop = c.leases.onRevoked(async (l) => {
        heard.push(`${l.id}:${l.state}:${l.revokeReason ?? ''}`);
      });
      c.leases.onRevokedListenerError = (l) => failed.push(l.id);
      const one = await c.leases.open({ kind: 'access_token', subject: SUBJ, ttlMs: 60_000, correlationId: 'c' });
      const two = await c.leases.open({ kind: 'access_token', subject: SUBJ, ttlMs: 60_000, correlationId: 'c' });
      const three = await c.leases.open({ kind: 'access_token', subject: SUBJ, ttlMs: 60_000, correlationId: 'c' });
      const gone = await c.leases.open({ kind: 'access_token', subject: 'spiffe://example.org/other', ttlMs: 1_000, correlationId: 'c' });
      await c.leases.revoke(one.id, 'admin-revoked', 'c', admin);
      assert.deepEqual(heard, [`${one.id}:revoked:admin-revoked`], 'heard before revoke returned');
      await c.leases.revokeBySubject(SUBJ, 'posture-failed', 'c', admin);
      assert.deepEqual(heard.slice(1).sort(), [`${two.id}:revoked:posture-failed`, `${three.id}:revoked:posture-failed`].sort());
      c.clock.advance(2_000);
      await c.leases.expire(gone.id, 'c');
      assert.equal(heard.length, 3, 'an expiry is not announced');
      stop();
      c.leases.onRevoked(async () => {
        throw new Error('bus down');
      });
      const four = await c.leases.open({ kind: 'access_token', subject: SUBJ, ttlMs: 60_000, correlationId: 'c' });
      const r = await c.leases.revoke(four.id, 'admin-revoked', 'c', admin);
      assert.equal(r?.state, 'revoked');
      assert.equal((await c.leases.get(four.id))?.state, 'revoked', 'the revocation stands');
      assert.deepEqual(failed, [four.id]);
      assert.equal(heard.length, 3, 'an unsubscribed listener hears nothing');
    } finally {
      await c.close();
    }
  });

  it('refuses a non-positive lifetime', async () => {
    const c = await credContext();
    try {
      await assert.rejects(c.leases.open({ kind: 'postgres', subject: SUBJ, ttlMs: 0, correlationId: 'c' }), rejectsWith('ERR_CRED_TTL_INVALID', 'lease lifetime `0` ms is not a positive integer'));
    } finally {
      await c.close();
    }
  });

  it('renews up to the maximum and no further', async () => {
    const c = await credContext();
    try {
      const l = await c.leases.open({ kind: 'access_token', subject: SUBJ, ttlMs: 60_000, maxTtlMs: 150_000, correlationId: 'c' });
      await c.leases.activate(l.id);
      c.clock.advance(50_000);
      const r1 = await c.leases.renew(l.id, 60_000, 'c', admin);
      assert.equal(r1.expiresAt, new Date(T0 + 110_000).toISOString());
      c.clock.advance(50_000);
      const r2 = await c.leases.renew(l.id, 60_000, 'c');
      assert.equal(r2.expiresAt, new Date(T0 + 150_000).toISOString(), 'capped at the maximum');
      await assert.rejects(c.leases.renew(l.id, 60_000, 'c'), rejectsWith('ERR_CRED_LEASE_NOT_RENEWABLE', `lease \`${l.id}\` already reached its maximum lifetime`));
      c.clock.advance(60_000);
      await assert.rejects(c.leases.renew(l.id, 60_000, 'c'), rejectsWith('ERR_CRED_LEASE_NOT_RENEWABLE', `lease \`${l.id}\` is expired`));
      const renewed = c.audit.events.filter((e) => e.action === 'lease.renewed');
      assert.equal(renewed.length, 2);
      assert.deepEqual(renewed[0]?.actor, admin);
      assert.equal(renewed[0]?.details?.previousExpiresAt, new Date(T0 + 60_000).toISOString());
    } finally {
      await c.close();
    }
  });

  it('enforces the per-identity and per-task quotas with a 429', async () => {
    const c = await credContext({ limits: { maxPerIdentity: 3, maxPerTask: 2 } });
    try {
      for (let i = 0; i < 3; i++) await c.leases.open({ kind: 'access_token', subject: SUBJ, ttlMs: 60_000, correlationId: 'c' });
      const err = await c.leases.open({ kind: 'access_token', subject: SUBJ, ttlMs: 60_000, correlationId: 'c' }).catch((e: unknown) => e);
      assert.equal((err as { status?: number }).status, 429);
      assert.equal((err as { code?: string }).code, 'ERR_CRED_QUOTA_EXCEEDED');
      assert.equal((err as Error).message, `\`${SUBJ}\` holds 3 live leases; the quota is 3`);
      // Revoking frees a slot; expired leases do not count.
      const [first] = await c.leases.list({ subject: SUBJ });
      assert.ok(first);
      await c.leases.revoke(first.id, 'test', 'c');
      await c.leases.open({ kind: 'access_token', subject: SUBJ, ttlMs: 60_000, correlationId: 'c' });

      const task = await c.tasks.start({ owner: SUBJ, ttlMs: 3_600_000 }, admin, 'c');
      await c.leases.open({ kind: 'access_token', subject: 'a', taskId: task.id, ttlMs: 60_000, correlationId: 'c' });
      await c.leases.open({ kind: 'access_token', subject: 'b', taskId: task.id, ttlMs: 60_000, correlationId: 'c' });
      await assert.rejects(c.leases.open({ kind: 'access_token', subject: 'c', taskId: task.id, ttlMs: 60_000, correlationId: 'c' }), rejectsWith('ERR_CRED_QUOTA_EXCEEDED', `task \`${task.id}\` holds 2 live leases; the quota is 2`));
    } finally {
      await c.close();
    }
  });

  it('binds leases to a task: capped by its deadline, refused once it ended', async () => {
    const c = await credContext();
    try {
      await assert.rejects(c.leases.open({ kind: 'postgres', subject: SUBJ, taskId: 'task_nope', ttlMs: 60_000, correlationId: 'c' }), rejectsWith('ERR_CRED_TASK_NOT_FOUND', 'no task `task_nope`'));
      const task = await c.tasks.start({ owner: SUBJ, ttlMs: 30_000, scopes: ['db:read'] }, admin, 'c');
      const l = await c.leases.open({ kind: 'access_token', subject: SUBJ, taskId: task.id, ttlMs: 600_000, correlationId: 'c' });
      assert.equal(l.expiresAt, task.deadline, 'never outlives the task');
      assert.equal(l.maxExpiresAt, task.deadline);
      c.clock.advance(30_000);
      await assert.rejects(c.leases.open({ kind: 'access_token', subject: SUBJ, taskId: task.id, ttlMs: 1000, correlationId: 'c' }), rejectsWith('ERR_CRED_TASK_NOT_ACTIVE', `task \`${task.id}\` is past its deadline`));
    } finally {
      await c.close();
    }
  });

  it('revokes by id, subject and subject prefix; a second revoke is a no-op', async () => {
    const c = await credContext();
    try {
      const open = async (subject: string) => {
        const l = await c.leases.open({ kind: 'access_token', subject, ttlMs: 60_000, correlationId: 'c' });
        return c.leases.activate(l.id);
      };
      const a = await open('spiffe://example.org/ns/a/one');
      const b = await open('spiffe://example.org/ns/a/two');
      const b2 = await open('spiffe://example.org/ns/a/two');
      const x = await open('spiffe://example.org/ns/b/one');
      const r = await c.leases.revoke(a.id, 'compromised', 'c', admin);
      assert.equal(r?.state, 'revoked');
      assert.equal(r?.revokeReason, 'compromised');
      assert.equal(await c.leases.revoke(a.id, 'again', 'c'), undefined);
      assert.deepEqual((await c.leases.revokeBySubject('spiffe://example.org/ns/a/two', 'owner-left', 'c')).map((l) => l.id).sort(), [b.id, b2.id].sort());
      const y = await open('spiffe://example.org/ns/a/three');
      assert.deepEqual((await c.leases.revokeByPrefix('spiffe://example.org/ns/a/', 'ns-quarantined', 'c')).map((l) => l.id), [y.id]);
      await assert.rejects(c.leases.revokeByPrefix('', 'x', 'c'), rejectsWith('ERR_CRED_REVOKE_SELECTOR_INVALID', 'a revocation prefix must not be empty'));
      assert.equal(await c.leases.isLive(x.id), true);
      const revoked = c.audit.events.filter((e) => e.action === 'lease.revoked');
      assert.equal(revoked.length, 4);
      assert.deepEqual(revoked[0]?.actor, admin);
      assert.deepEqual(revoked[0]?.target, { type: 'lease', id: a.id });
      assert.equal(revoked[0]?.details?.reason, 'compromised');
    } finally {
      await c.close();
    }
  });
});

describe('tasks', () => {
  it('completing a task revokes every lease bound to it and audits a receipt', async () => {
    const c = await credContext();
    try {
      const task = await c.tasks.start({ owner: SUBJ, ttlMs: 3_600_000, scopes: ['deploy'], description: 'release 1.2' }, admin, 'c0');
      const ids: string[] = [];
      for (const s of ['w1', 'w2', 'w3']) {
        const l = await c.leases.open({ kind: 'access_token', subject: s, taskId: task.id, ttlMs: 60_000, correlationId: 'c' });
        ids.push(l.id);
        if (s !== 'w3') await c.leases.activate(l.id);
      }
      const other = await c.leases.open({ kind: 'access_token', subject: 'w1', ttlMs: 60_000, correlationId: 'c' });
      c.clock.advance(1000);
      const receipt = await c.tasks.complete(task.id, admin, 'c9');
      assert.equal(receipt.task.state, 'completed');
      assert.equal(receipt.task.endedBy, 'admin:adm1');
      assert.deepEqual(receipt.revoked.map((r) => r.leaseId).sort(), [...ids].sort());
      for (const id of ids) assert.equal((await c.leases.get(id))?.state, 'revoked');
      assert.equal((await c.leases.get(other.id))?.state, 'pending', 'unbound leases stay');
      const done = c.audit.events.find((e) => e.action === 'task.completed');
      assert.equal(done?.correlationId, 'c9');
      assert.deepEqual(done?.actor, admin);
      assert.equal(done?.details?.revokedCount, 3);
      assert.equal(done?.details?.endedAt, new Date(T0 + 1000).toISOString());
      assert.deepEqual(((done?.details?.revoked ?? []) as { leaseId: string }[]).map((r) => r.leaseId).sort(), [...ids].sort());
      assert.equal(c.audit.events.filter((e) => e.action === 'lease.revoked' && e.correlationId === 'c9').length, 3);
      await assert.rejects(c.tasks.complete(task.id, admin, 'c'), rejectsWith('ERR_CRED_TASK_NOT_ACTIVE', `task \`${task.id}\` is already completed`));
      await assert.rejects(c.tasks.get('task_x'), rejectsWith('ERR_CRED_TASK_NOT_FOUND', 'no task `task_x`'));
    } finally {
      await c.close();
    }
  });

  it('validates owner, deadline and scopes', async () => {
    const c = await credContext();
    try {
      await assert.rejects(c.tasks.start({ owner: ' ', ttlMs: 1000 }, admin, 'c'), rejectsWith('ERR_CRED_TASK_INVALID', 'a task needs an owner (a SPIFFE ID or principal) of at most 2048 characters'));
      await assert.rejects(c.tasks.start({ owner: 'o', ttlMs: 0 }, admin, 'c'), rejectsWith('ERR_CRED_TASK_INVALID', 'a task deadline must be in the future and at most 86400 s away'));
      await assert.rejects(c.tasks.start({ owner: 'o', ttlMs: 1000, scopes: ['bad scope'] }, admin, 'c'), rejectsWith('ERR_CRED_TASK_INVALID', 'scope `bad scope` is not an OAuth scope token'));
    } finally {
      await c.close();
    }
  });
});

describe('reaper', () => {
  it('expires overdue tasks and leases, and revokes pending leases past the grace', async () => {
    const c = await credContext({ pendingGraceMs: 10_000 });
    try {
      const task = await c.tasks.start({ owner: SUBJ, ttlMs: 100_000 }, admin, 'c');
      const bound = await c.leases.activate((await c.leases.open({ kind: 'access_token', subject: 'w', taskId: task.id, ttlMs: 100_000, correlationId: 'c' })).id);
      const short = await c.leases.activate((await c.leases.open({ kind: 'access_token', subject: 'w', ttlMs: 5_000, correlationId: 'c' })).id);
      const stuck = await c.leases.open({ kind: 'access_token', subject: 'w', ttlMs: 500_000, correlationId: 'c' });
      const fine = await c.leases.activate((await c.leases.open({ kind: 'access_token', subject: 'w', ttlMs: 500_000, correlationId: 'c' })).id);
      c.clock.advance(6_000);
      assert.deepEqual(await c.reaper.pass(), { tasksExpired: 0, leasesExpired: 1, pendingRevoked: 0, orphansRemoved: 0 });
      assert.equal((await c.leases.get(short.id))?.state, 'expired');
      c.clock.advance(5_000);
      assert.deepEqual(await c.reaper.pass(), { tasksExpired: 0, leasesExpired: 0, pendingRevoked: 1, orphansRemoved: 0 });
      assert.equal((await c.leases.get(stuck.id))?.revokeReason, 'pending-past-grace');
      c.clock.advance(100_000);
      const p = await c.reaper.pass();
      assert.equal(p.tasksExpired, 1);
      assert.equal((await c.leases.get(bound.id))?.revokeReason, 'task-expired');
      assert.equal((await c.tasks.get(task.id)).state, 'expired');
      assert.equal((await c.leases.get(fine.id))?.state, 'active');
      assert.ok(c.audit.actions().includes('task.expired'));
      assert.ok(c.audit.actions().includes('lease.expired'));
    } finally {
      await c.close();
    }
  });
});
