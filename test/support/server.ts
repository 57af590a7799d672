/**
 * Start a real Writ server in this process on a temporary data folder.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { startServer } from '../../src/server/index.ts';
import type { RunningServer } from '../../src/server/index.ts';
import { PG_URL, scratchSchema, dropSchema } from './services.ts';

export interface TestServer {
  readonly server: RunningServer;
  readonly url: string;
  readonly dataDir: string;
  /** The bootstrap admin credential. */
  readonly token: string;
  /** Everything the server logged. */
  logs(): string;
  call(method: string, path: string, opts?: { token?: string | null; body?: unknown; rawBody?: string; headers?: Record<string, string> }): Promise<{ status: number; json: any; text: string; headers: Headers }>;
  stop(): Promise<void>;
}

export async function startTestServer(opts: { postgres?: boolean; flags?: Record<string, string | number | boolean>; dataDir?: string; pgSchema?: string; env?: Record<string, string> } = {}): Promise<TestServer> {
  const dataDir = opts.dataDir ?? mkdtempSync(join(tmpdir(), 'writ-test-'));
  const pgSchema = opts.postgres === true ? (opts.pgSchema ?? scratchSchema()) : undefined;
  const logChunks: string[] = [];
  const logStream = new PassThrough();
  logStream.on('data', (c: Buffer) => logChunks.push(c.toString('utf8')));
  const server = await startServer({
    env: opts.env ?? {},
    // A loaded test machine can stall the event loop past the 200 ms production decision budget,
    // which would turn an expected allow into a `decision-timeout` deny. Tests give decisions a
    // generous budget; the budget itself is tested in src/policy/decide.test.ts.
    flags: { listen: '127.0.0.1:0', dataDir, logLevel: 'info', 'policy.timeoutMs': 10_000, ...(opts.postgres === true ? { store: PG_URL } : {}), ...opts.flags },
    logStream,
    ...(pgSchema === undefined ? {} : { pgSchema }),
  });
  const token = readFileSync(join(dataDir, 'admin.token'), 'utf8').trim();
  const url = server.url;
  return {
    server,
    url,
    dataDir,
    token,
    logs: () => logChunks.join(''),
    async call(method, path, o = {}) {
      const headers: Record<string, string> = { ...(o.headers ?? {}) };
      const tok = o.token === undefined ? token : o.token;
      if (tok !== null) headers.authorization = `Bearer ${tok}`;
      let body: string | undefined;
      if (o.rawBody !== undefined) body = o.rawBody;
      else if (o.body !== undefined) {
        body = JSON.stringify(o.body);
        headers['content-type'] ??= 'application/json';
      }
      const res = await fetch(`${url}${path}`, { method, headers, ...(body === undefined ? {} : { body }) });
      const text = await res.text();
      let json: unknown;
      try {
        json = text === '' ? undefined : JSON.parse(text);
      } catch {
        json = undefined;
      }
      return { status: res.status, json, text, headers: res.headers };
    },
    async stop() {
      await server.close();
      if (opts.dataDir === undefined) rmSync(dataDir, { recursive: true, force: true });
      if (pgSchema !== undefined && opts.pgSchema === undefined) await dropSchema(pgSchema);
    },
  };
}
