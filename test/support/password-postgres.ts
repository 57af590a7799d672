/**
 * A PostgreSQL server that checks passwords. The shared test server trusts
 * every local login, so a test that must see an old password refused needs
 * its own: WRIT_TEST_PG_PASSWORD_URL (a superuser URL with its password) when
 * set, else a throwaway cluster this helper creates with `initdb
 * --auth=scram-sha-256` from the installed PostgreSQL binaries (as the
 * `postgres` user when running as root) and removes on stop.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { TestContext } from 'node:test';
import { IN_CI } from './services.ts';

const run = promisify(execFile);

export interface PasswordPostgres {
  /** Superuser URL, password included. */
  readonly url: string;
  readonly host: string;
  readonly port: number;
  stop(): Promise<void>;
}

function binDir(): string | undefined {
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return undefined;
  const versions = readdirSync(root).filter((v) => /^\d+$/.test(v)).sort((a, b) => Number(b) - Number(a));
  for (const v of versions) if (existsSync(join(root, v, 'bin', 'initdb'))) return join(root, v, 'bin');
  return undefined;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => (typeof a === 'object' && a !== null ? resolve(a.port) : reject(new Error('no port'))));
    });
  });
}

/** Start (or find) a password-checking PostgreSQL; a string says why there is none. */
export async function startPasswordPostgres(): Promise<PasswordPostgres | string> {
  const given = process.env.WRIT_TEST_PG_PASSWORD_URL;
  if (given !== undefined && given !== '') {
    const u = new URL(given);
    return { url: given, host: u.hostname, port: Number(u.port === '' ? 5432 : u.port), stop: async () => undefined };
  }
  const bin = binDir();
  if (bin === undefined) return 'no PostgreSQL server binaries (initdb) under /usr/lib/postgresql and WRIT_TEST_PG_PASSWORD_URL is not set';
  const asRoot = process.getuid?.() === 0;
  let uid: number | undefined;
  let gid: number | undefined;
  if (asRoot) {
    try {
      uid = Number((await run('id', ['-u', 'postgres'])).stdout.trim());
      gid = Number((await run('id', ['-g', 'postgres'])).stdout.trim());
    } catch {
      return 'running as root and there is no `postgres` user to run initdb as';
    }
  }
  const dir = mkdtempSync(join(tmpdir(), 'writ-pgpw-'));
  const password = randomBytes(18).toString('base64url');
  writeFileSync(join(dir, 'pw'), `${password}\n`, { mode: 0o600 });
  if (uid !== undefined && gid !== undefined) {
    chownSync(dir, uid, gid);
    chownSync(join(dir, 'pw'), uid, gid);
  }
  const exec = (cmd: string, args: string[]) => (asRoot ? run('runuser', ['-u', 'postgres', '--', join(bin, cmd), ...args]) : run(join(bin, cmd), args));
  const port = await freePort();
  try {
    await exec('initdb', ['-D', join(dir, 'data'), '-U', 'postgres', '--auth=scram-sha-256', `--pwfile=${join(dir, 'pw')}`, '-E', 'UTF8', '--no-sync', '--no-instructions']);
    await exec('pg_ctl', ['-D', join(dir, 'data'), '-o', `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=60`, '-w', '-t', '60', '-l', join(dir, 'log'), 'start']);
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    return `could not start a password-checking PostgreSQL (${(e as Error).message.split('\n')[0] ?? ''})`;
  }
  return {
    url: `postgres://postgres:${password}@127.0.0.1:${port}/postgres`,
    host: '127.0.0.1',
    port,
    async stop() {
      await exec('pg_ctl', ['-D', join(dir, 'data'), '-m', 'immediate', '-w', 'stop']).catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** True when the test must stop (skipped); under CI=true a missing server fails instead. */
export function skipWithoutPasswordPostgres(t: TestContext, pp: PasswordPostgres | string | undefined): pp is string | undefined {
  if (typeof pp === 'object') return false;
  const why = pp ?? 'the password-checking PostgreSQL did not start';
  if (IN_CI) throw new Error(`${why}; CI=true forbids skipping`);
  t.skip(why);
  return true;
}
