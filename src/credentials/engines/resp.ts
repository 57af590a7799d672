/**
 * A minimal Redis client (RESP2 over TCP): enough for the ACL and CLIENT
 * commands the Redis engine sends. Replies come back in order.
 */
import { connect } from 'node:net';
import type { Socket } from 'node:net';

/** A RESP reply. */
export type RespValue = string | number | null | RespValue[] | RespError;

/** An error reply (`-ERR …`). */
export class RespError extends Error {}

type Parsed = { value: RespValue; end: number } | undefined;

function parse(buf: Buffer, at: number): Parsed {
  const nl = buf.indexOf('\r\n', at);
  if (nl === -1) return undefined;
  const kind = String.fromCharCode(buf[at] ?? 0);
  const line = buf.toString('utf8', at + 1, nl);
  const next = nl + 2;
  switch (kind) {
    case '+':
      return { value: line, end: next };
    case '-':
      return { value: new RespError(line), end: next };
    case ':':
      return { value: Number(line), end: next };
    case '$': {
      const n = Number(line);
      if (n < 0) return { value: null, end: next };
      if (buf.length < next + n + 2) return undefined;
      return { value: buf.toString('utf8', next, next + n), end: next + n + 2 };
    }
    case '*': {
      const n = Number(line);
      if (n < 0) return { value: null, end: next };
      const items: RespValue[] = [];
      let pos = next;
      for (let i = 0; i < n; i++) {
        const p = parse(buf, pos);
        if (p === undefined) return undefined;
        items.push(p.value);
        pos = p.end;
      }
      return { value: items, end: pos };
    }
    default:
      throw new RespError(`unexpected reply type \`${kind}\``);
  }
}

function encode(args: readonly string[]): Buffer {
  const parts = [`*${args.length}\r\n`];
  for (const a of args) parts.push(`$${Buffer.byteLength(a)}\r\n${a}\r\n`);
  return Buffer.from(parts.join(''));
}

/**
 * @example
 * const r = await RespClient.connect('redis://127.0.0.1:6379');
 * await r.command(['PING']); // 'PONG'
 * r.close();
 */
export class RespClient {
  readonly #socket: Socket;
  #buf: Buffer = Buffer.alloc(0);
  readonly #waiting: { resolve: (v: RespValue) => void; reject: (e: Error) => void }[] = [];
  #failed: Error | undefined;

  private constructor(socket: Socket) {
    this.#socket = socket;
    socket.on('data', (chunk: Buffer) => {
      this.#buf = this.#buf.length === 0 ? chunk : Buffer.concat([this.#buf, chunk]);
      for (;;) {
        const p = parse(this.#buf, 0);
        if (p === undefined) break;
        this.#buf = this.#buf.subarray(p.end);
        this.#waiting.shift()?.resolve(p.value);
      }
    });
    const fail = (e: Error): void => {
      this.#failed ??= e;
      for (let w = this.#waiting.shift(); w !== undefined; w = this.#waiting.shift()) w.reject(e);
    };
    socket.on('error', fail);
    socket.on('close', () => fail(new Error('connection closed')));
  }

  /** Connect to `redis://[user:password@]host:port`; authenticates when the URL names a password. */
  static async connect(url: string, timeoutMs = 5000): Promise<RespClient> {
    const u = new URL(url);
    const socket = connect({ host: u.hostname, port: Number(u.port === '' ? 6379 : u.port) });
    socket.setTimeout(timeoutMs);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', () => resolve());
      socket.once('error', reject);
      socket.once('timeout', () => reject(new Error('connect timed out')));
    });
    socket.setTimeout(0);
    const c = new RespClient(socket);
    if (u.password !== '') {
      const args = u.username === '' ? ['AUTH', decodeURIComponent(u.password)] : ['AUTH', decodeURIComponent(u.username), decodeURIComponent(u.password)];
      await c.command(args);
    }
    return c;
  }

  /** Send one command; an error reply rejects with {@link RespError}. */
  command(args: readonly string[]): Promise<RespValue> {
    if (this.#failed !== undefined) return Promise.reject(this.#failed);
    return new Promise((resolve, reject) => {
      this.#waiting.push({ resolve: (v) => (v instanceof RespError ? reject(v) : resolve(v)), reject });
      this.#socket.write(encode(args));
    });
  }

  close(): void {
    this.#socket.destroy();
  }
}
