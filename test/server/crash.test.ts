/**
 * Crash safety: a real server process takes a burst of audited admin calls,
 * is killed with SIGKILL in the middle, and restarted. Every call that got a
 * 2xx must be in the audit log, and the chain must verify.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { once } from 'node:events';
import { skipWithoutPostgres, PG_URL, scratchSchema, dropSchema } from '../support/services.ts';
import { openStore } from '../../src/storage/index.ts';
import { verifyChain } from '../../src/audit/index.ts';
import { main as cli } from '../../src/cli/main.ts';

const BIN = resolve(import.meta.dirname, '../../bin/writ.js');
const TOTAL = 10_000;
const CONCURRENCY = 32;

function startChild(dataDir: string, env: Record<string, string>): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(process.execPath, [BIN, 'up', '--data-dir', dataDir, '--listen', '127.0.0.1:0', '--log-level', 'info'], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return new Promise((resolveUrl, reject) => {
    let out = '';
    let errOut = '';
    const onData = (c: Buffer) => {
      out += c.toString();
      const m = /"url":"(http:\/\/127\.0\.0\.1:\d+)".*"msg":"writ listening"/.exec(out);
      if (m?.[1] !== undefined) {
        child.stdout?.off('data', onData);
        child.stdout?.resume();
        resolveUrl({ child, url: m[1] });
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', (c: Buffer) => {
      errOut = (errOut + c.toString()).slice(-2000);
    });
    child.once('exit', (code) => reject(new Error(`writ up exited early with ${code}: ${out.slice(-500)} ${errOut.slice(-500)}`)));
  });
}

async function burst(url: string, token: string, child: ChildProcess): Promise<{ acked: string[]; created: string[]; sent: number }> {
  const acked: string[] = [];
  const created: string[] = [];
  let next = 0;
  let killed = false;
  const worker = async () => {
    while (next < TOTAL) {
      const i = next++;
      if (i === Math.floor(TOTAL / 2) && !killed) {
        killed = true;
        child.kill('SIGKILL');
      }
      try {
        const isWrite = i % 10 === 0;
        const res = await fetch(`${url}${isWrite ? '/admin/v1/principals' : '/admin/v1/whoami'}`, {
          method: isWrite ? 'POST' : 'GET',
          headers: { authorization: `Bearer ${token}`, ...(isWrite ? { 'content-type': 'application/json' } : {}) },
          ...(isWrite ? { body: JSON.stringify({ name: `crash-${i}`, role: 'auditor' }) } : {}),
          signal: AbortSignal.timeout(10_000),
        });
        await res.arrayBuffer();
        if (res.status >= 200 && res.status < 300) {
          acked.push(res.headers.get('x-correlation-id') ?? '');
          if (isWrite) created.push(`crash-${i}`);
        }
      } catch {
        // Refused or reset after the kill: not acknowledged, so nothing is owed.
      }
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  return { acked, created, sent: next };
}

async function runCrash(opts: { env: Record<string, string>; storeUrl: string; pgSchema?: string }) {
  const dataDir = mkdtempSync(join(tmpdir(), 'writ-crash-'));
  try {
    const first = await startChild(dataDir, opts.env);
    const exited = once(first.child, 'exit');
    const token = readFileSync(join(dataDir, 'admin.token'), 'utf8').trim();
    const { acked, created } = await burst(first.url, token, first.child);
    const [, signal] = (await exited) as [number | null, string | null];
    assert.equal(signal, 'SIGKILL');
    assert.ok(acked.length > 100, `only ${acked.length} calls were acknowledged before the kill`);
    assert.ok(acked.length < TOTAL, 'the kill happened mid-burst');

    // Restart on the same store: the server comes back and keeps chaining.
    const second = await startChild(dataDir, opts.env);
    try {
      const store = await openStore({ url: opts.storeUrl, dataDir, ...(opts.pgSchema === undefined ? {} : { pgSchema: opts.pgSchema }) });
      try {
        const inLog = new Set<string>();
        for (let after = 0; ; ) {
          const rows = await store.query({ afterSeq: after, limit: 5000, action: 'api.called' });
          if (rows.length === 0) break;
          for (const r of rows) inLog.add(r.correlationId);
          after = rows[rows.length - 1]?.seq ?? after;
        }
        const missing = acked.filter((c) => !inLog.has(c));
        assert.deepEqual(missing, [], `${missing.length} of ${acked.length} acknowledged calls are not in the audit log`);
        const v = await verifyChain(store);
        assert.equal(v.ok, true, JSON.stringify(v));
        // The writes themselves, not only their audit events: every principal whose creation was acknowledged exists.
        const names = new Set((await store.listPrincipals()).map((p) => p.name));
        const lost = created.filter((n) => !names.has(n));
        assert.ok(created.length > 10, `only ${created.length} creations were acknowledged before the kill`);
        assert.deepEqual(lost, [], `${lost.length} of ${created.length} acknowledged principal creations were lost`);
      } finally {
        await store.close();
      }
      // And the operator's own check, through the CLI against the restarted server.
      const out: string[] = [];
      const code = await cli(['audit', 'verify', '--server', second.url, '--token-file', join(dataDir, 'admin.token')], { out: (s) => out.push(s), err: (s) => out.push(s), env: {} });
      assert.equal(code, 0, out.join('\n'));
      assert.match(out.join('\n'), /^audit chain ok: \d+ events, head \d+ [0-9a-f]{64}$/);
    } finally {
      second.child.kill('SIGTERM');
      await once(second.child, 'exit');
    }
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
}

describe('crash safety under SIGKILL', () => {
  it(`SQLite: every acknowledged call of a ${TOTAL}-call burst survives kill -9 and the chain verifies`, async () => {
    await runCrash({ env: {}, storeUrl: '' });
  });

  it(`PostgreSQL: the same`, async (t) => {
    if (await skipWithoutPostgres(t)) return;
    const schema = scratchSchema('writ_crash');
    // The child process gets the schema through the connection string's options.
    const url = `${PG_URL}?options=${encodeURIComponent(`-c search_path=${schema}`)}`;
    const { default: pg } = await import('pg');
    const c = new pg.Client({ connectionString: PG_URL });
    await c.connect();
    await c.query(`create schema ${schema}`);
    await c.end();
    try {
      await runCrash({ env: { WRIT_STORE: url }, storeUrl: PG_URL, pgSchema: schema });
    } finally {
      await dropSchema(schema);
    }
  });
});

describe('graceful shutdown', () => {
  it('SIGTERM drains in-flight calls, flushes the audit log and exits 0', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'writ-term-'));
    try {
      const { child, url } = await startChild(dataDir, {});
      const token = readFileSync(join(dataDir, 'admin.token'), 'utf8').trim();
      const exited = once(child, 'exit');
      const acked: string[] = [];
      const calls = Array.from({ length: 400 }, async (_, i) => {
        if (i === 200) child.kill('SIGTERM');
        try {
          const res = await fetch(`${url}/admin/v1/whoami`, { headers: { authorization: `Bearer ${token}` } });
          await res.arrayBuffer();
          if (res.status === 200) acked.push(res.headers.get('x-correlation-id') ?? '');
          else assert.equal(res.status, 503, 'a call during shutdown is refused, not half-served');
        } catch {
          // connection refused once the listener closed
        }
      });
      await Promise.all(calls);
      const [code] = (await exited) as [number | null];
      assert.equal(code, 0);
      const store = await openStore({ url: '', dataDir });
      try {
        const rows = await store.query({ afterSeq: 0, limit: 100_000 });
        const inLog = new Set(rows.map((r) => r.correlationId));
        assert.deepEqual(acked.filter((c) => !inLog.has(c)), []);
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
