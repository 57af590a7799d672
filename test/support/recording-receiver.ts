/**
 * A local HTTP receiver that answers 202 and records what it was sent (path
 * and `Authorization`), for tests of push delivery.
 */
import { createServer } from 'node:http';
import type { Server } from 'node:http';

export interface RecordingReceiver {
  readonly server: Server;
  /** `http://127.0.0.1:<port>` */
  readonly base: string;
  /** Every request, in arrival order. */
  readonly got: { path: string; auth: string | undefined }[];
  close(): Promise<void>;
}

/**
 * @example
 * const rx = await startRecordingReceiver();
 * // … push to `${rx.base}/events` …
 * assert.equal(rx.got[0]?.auth, 'Bearer rx-given');
 * await rx.close();
 */
export async function startRecordingReceiver(): Promise<RecordingReceiver> {
  const got: { path: string; auth: string | undefined }[] = [];
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      got.push({ path: req.url ?? '', auth: req.headers.authorization });
      res.writeHead(202).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const addr = server.address();
  const base = `http://127.0.0.1:${typeof addr === 'object' && addr !== null ? addr.port : 0}`;
  return {
    server,
    base,
    got,
    close: () => new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    }),
  };
}
