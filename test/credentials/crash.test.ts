/**
 * Crash test (ARCHITECTURE invariant 2): a `writ up` process issuing 1,000
 * dynamic PostgreSQL credentials concurrently is killed with SIGKILL. After a
 * restart and its one reaper pass, every role Writ created either has a live
 * lease or is gone: zero orphans, checked against pg_roles.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { PG_URL, skipWithoutPostgres, scratchSchema, dropSchema } from '../support/services.ts';

const BIN = resolve(import.meta.dirname, '../../bin/writ.js');
const TOTAL = 1000;
const CONCURRENCY = 64;

async function pgQuery<T extends pg.QueryResultRow>(text: string, values: unknown[] = []): Promise<T[]> {
  const c = new pg.Client({ connectionString: PG_URL });
  await c.connect();
  try {
    return (await c.query<T>(text, values)).rows;
  } finally {
    await c.end();
  }
}

function startChild(dataDir: string, env: Record<string, string>): Promise<{ child: ChildProcess; url: string; out: () => string }> {
  const child = spawn(process.execPath, [BIN, 'up', '--data-dir', dataDir, '--listen', '127.0.0.1:0', '--log-level', 'info'], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout?.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr?.on('data', (c: Buffer) => (out += c.toString()));
  return new Promise((resolveUrl, reject) => {
    const timer = setInterval(() => {
      const m = /"url":"(http:\/\/127\.0\.0\.1:\d+)".*"msg":"writ listening"/.exec(out);
      if (m?.[1] !== undefined) {
        clearInterval(timer);
        resolveUrl({ child, url: m[1], out: () => out });
      }
    }, 20);
    child.once('exit', (code) => {
      clearInterval(timer);
      reject(new Error(`writ up exited early with ${code}: ${out.slice(-800)}`));
    });
  });
}

describe('crash safety of dynamic credentials', () => {
  it(`SIGKILL while ${TOTAL} PostgreSQL credentials are issued concurrently leaves zero orphan roles after restart and one reaper pass`, async (t) => {
    if (await skipWithoutPostgres(t)) return;
    const schema = scratchSchema('writ_ccrash');
    const prefix = `writ_c${randomBytes(4).toString('hex')}_`;
    const dataDir = mkdtempSync(join(tmpdir(), 'writ-ccrash-'));
    await pgQuery(`create schema ${schema}; create table ${schema}.items (id int)`);
    const env = {
      WRIT_CREDENTIALS_ENGINES: JSON.stringify([{ name: 'main', type: 'postgres', url: PG_URL, prefix, poolSize: 16, roles: { reader: { grants: [`grant usage on schema ${schema} to {{name}}`, `grant select on all tables in schema ${schema} to {{name}}`] } } }]),
      WRIT_CREDENTIALS_MAX_LEASES_PER_IDENTITY: '100000',
      WRIT_CREDENTIALS_PENDING_GRACE_SECONDS: '1',
      // One pass at start and no timer: the check below sees exactly that pass.
      WRIT_CREDENTIALS_REAPER_INTERVAL_SECONDS: '0',
    };
    let second: { child: ChildProcess; url: string; out: () => string } | undefined;
    try {
      const first = await startChild(dataDir, env);
      const exited = once(first.child, 'exit');
      const token = readFileSync(join(dataDir, 'admin.token'), 'utf8').trim();
      const acked: string[] = [];
      let next = 0;
      let killed = false;
      const worker = async (): Promise<void> => {
        while (next < TOTAL) {
          next++;
          try {
            const res = await fetch(`${first.url}/admin/v1/creds/main`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify({ role: 'reader', subject: 'spiffe://example.org/crash' }), signal: AbortSignal.timeout(30_000) });
            const body = (await res.json()) as { username?: string };
            if (res.status === 201 && body.username !== undefined) acked.push(body.username);
          } catch {
            // Reset by the kill: not acknowledged.
          }
          if (!killed && acked.length >= TOTAL * 0.3) {
            killed = true;
            first.child.kill('SIGKILL');
          }
        }
      };
      await Promise.all(Array.from({ length: CONCURRENCY }, worker));
      const [, signal] = (await exited) as [number | null, string | null];
      assert.equal(signal, 'SIGKILL');
      assert.ok(acked.length >= TOTAL * 0.3 && acked.length < TOTAL, `the kill happened mid-burst (${acked.length} acknowledged)`);
      const rolesAtKill = (await pgQuery<{ rolname: string }>('select rolname from pg_roles where starts_with(rolname, $1)', [prefix])).map((r) => r.rolname);
      assert.ok(rolesAtKill.length >= acked.length, 'every acknowledged credential has its role');

      // Let the interrupted issuances age past the grace period, then restart: the start pass reconciles.
      await new Promise((r) => setTimeout(r, 1500));
      second = await startChild(dataDir, env);
      const roles = new Set((await pgQuery<{ rolname: string }>('select rolname from pg_roles where starts_with(rolname, $1)', [prefix])).map((r) => r.rolname));
      const live = await fetch(`${second.url}/admin/v1/leases?state=active&limit=10000`, { headers: { authorization: `Bearer ${token}` } });
      const activeUsers = new Set(((await live.json()) as { leases: { handle: { username?: string } }[] }).leases.map((l) => l.handle.username ?? ''));
      const pending = (await (await fetch(`${second.url}/admin/v1/leases?state=pending&limit=10000`, { headers: { authorization: `Bearer ${token}` } })).json()) as { leases: unknown[] };

      const orphans = [...roles].filter((r) => !activeUsers.has(r));
      assert.deepEqual(orphans, [], `${orphans.length} roles have no live lease`);
      const missing = [...activeUsers].filter((u) => !roles.has(u));
      assert.deepEqual(missing, [], 'every active lease still has its role');
      assert.deepEqual(pending.leases, [], 'no lease is left pending');
      const lost = acked.filter((u) => !roles.has(u));
      assert.deepEqual(lost, [], 'an acknowledged credential keeps working after the restart');
      const pass = /"reaperPass":(\{[^}]*\})/.exec(second.out());
      assert.ok(pass?.[1] !== undefined, 'the restarted server logged its reaper pass');
      const p = JSON.parse(pass[1]) as { pendingRevoked: number; orphansRemoved: number };
      t.diagnostic(`acknowledged ${acked.length}, roles at kill ${rolesAtKill.length}, pending leases revoked ${p.pendingRevoked}, orphan roles removed ${p.orphansRemoved}, live after the reaper pass ${roles.size}`);
    } finally {
      if (second !== undefined) {
        second.child.kill('SIGTERM');
        await once(second.child, 'exit');
      }
      for (const r of await pgQuery<{ rolname: string }>('select rolname from pg_roles where starts_with(rolname, $1)', [prefix])) await pgQuery(`drop owned by "${r.rolname}"; drop role "${r.rolname}"`);
      await dropSchema(schema);
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
