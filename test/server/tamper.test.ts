/**
 * Tamper evidence: change the stored log behind Writ's back — edit, delete,
 * insert or swap one row — and `writ audit verify` fails naming the first bad
 * sequence number.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { DatabaseSync } from 'node:sqlite';
import { join } from 'node:path';
import pg from 'pg';
import { startTestServer } from '../support/server.ts';
import type { TestServer } from '../support/server.ts';
import { main as cli } from '../../src/cli/main.ts';
import { skipWithoutPostgres, PG_URL, scratchSchema, dropSchema } from '../support/services.ts';

async function verifyWithCli(s: TestServer): Promise<{ code: number; text: string }> {
  const lines: string[] = [];
  const code = await cli(['audit', 'verify', '--server', s.url, '--token-file', join(s.dataDir, 'admin.token')], { out: (x) => lines.push(x), err: (x) => lines.push(x), env: {} });
  return { code, text: lines.join('\n') };
}

async function verifyOffline(args: string[], env: Record<string, string> = {}): Promise<{ code: number; text: string }> {
  const lines: string[] = [];
  const code = await cli(['audit', 'verify', '--offline', ...args], { out: (x) => lines.push(x), err: (x) => lines.push(x), env });
  return { code, text: lines.join('\n') };
}

async function fill(s: TestServer, n: number): Promise<void> {
  for (let i = 0; i < n; i++) await s.call('GET', '/admin/v1/whoami');
}

/** SQL that tampers with row 5 (or rows 5 and 6). `q` runs one statement. */
const TAMPERS: [string, string[], RegExp][] = [
  ['edit one row', [`update audit_events set event = replace(event, '"outcome":"success"', '"outcome":"denied"'), outcome = 'denied' where seq = 5`], /^audit chain broken at seq 5: row 5 was changed after it was written/],
  ['delete one row', ['delete from audit_events where seq = 5'], /^audit chain broken at seq 5: row 5 is missing \(next stored row is 6\)/],
  [
    'insert one row (shifting the rest up)',
    [
      'update audit_events set seq = -seq - 1 where seq >= 5',
      'update audit_events set seq = -seq where seq < 0',
      `insert into audit_events (seq, time, action, outcome, actor_id, correlation_id, event, prev_hash, hash) select 5, time, action, outcome, actor_id, 'forged', replace(event, correlation_id, 'forged'), prev_hash, hash from audit_events where seq = 4`,
    ],
    /^audit chain broken at seq 5: row 5 (was changed after it was written|does not link to row 4)/,
  ],
  [
    'swap two rows',
    [
      'update audit_events set seq = -5 where seq = 5',
      'update audit_events set seq = 5 where seq = 6',
      'update audit_events set seq = 6 where seq = -5',
    ],
    /^audit chain broken at seq 5: row 5 does not link to row 4/,
  ],
];

/**
 * Through the server: either verify answers and names the row, or — when the
 * tampering took the sequence number the next audit event needs — the server
 * refuses the call (503) rather than serve it unaudited.
 */
async function checkOnline(s: TestServer, expected: RegExp): Promise<void> {
  const r = await verifyWithCli(s);
  assert.equal(r.code, 1, r.text);
  if (/ERR_SERVER_UNAVAILABLE/.test(r.text)) assert.match(r.text, /^writ audit verify: internal error; see the server log for this correlation id \(ERR_SERVER_UNAVAILABLE\)$/);
  else assert.match(r.text, expected);
}

describe('tamper evidence (SQLite)', () => {
  for (const [name, statements, expected] of TAMPERS) {
    it(`${name}: verify fails and names seq 5`, async () => {
      const s = await startTestServer();
      try {
        await fill(s, 10);
        assert.equal((await verifyWithCli(s)).code, 0);
        const db = new DatabaseSync(join(s.dataDir, 'writ.db'));
        try {
          for (const sql of statements) db.exec(sql);
        } finally {
          db.close();
        }
        const r = await verifyOffline(['--data-dir', s.dataDir]);
        assert.equal(r.code, 1, r.text);
        assert.match(r.text, expected);
        await checkOnline(s, expected);
      } finally {
        await s.stop();
      }
    });
  }
});

describe('tamper evidence (PostgreSQL)', () => {
  for (const [name, statements, expected] of TAMPERS) {
    it(`${name}: verify fails and names seq 5`, async (t) => {
      if (await skipWithoutPostgres(t)) return;
      const schema = scratchSchema('writ_tamper');
      const s = await startTestServer({ postgres: true, pgSchema: schema });
      try {
        await fill(s, 10);
        assert.equal((await verifyWithCli(s)).code, 0);
        const c = new pg.Client({ connectionString: PG_URL, options: `-c search_path=${schema}` });
        await c.connect();
        try {
          for (const sql of statements) await c.query(sql);
        } finally {
          await c.end();
        }
        const r = await verifyOffline(['--store', `${PG_URL}?options=${encodeURIComponent(`-c search_path=${schema}`)}`]);
        assert.equal(r.code, 1, r.text);
        assert.match(r.text, expected);
        await checkOnline(s, expected);
      } finally {
        await s.stop();
        await dropSchema(schema);
      }
    });
  }
});
