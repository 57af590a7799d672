/**
 * The CLI's client of the server's admin API.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';

/** A failed call, with the server's error code when there was one. */
export class CliError extends Error {
  readonly code: string;
  readonly exitCode: number;
  constructor(message: string, code = 'ERR_CLI', exitCode = 1) {
    super(message);
    this.code = code;
    this.exitCode = exitCode;
  }
}

export interface ClientOptions {
  readonly server: string;
  readonly token: string | undefined;
}

/** Resolve server and credential from flags, then environment, then defaults. */
export function clientOptions(flags: { server?: string | undefined; 'token-file'?: string | undefined; 'data-dir'?: string | undefined }, env: NodeJS.ProcessEnv): ClientOptions {
  const server = (flags.server ?? env.WRIT_SERVER ?? 'http://127.0.0.1:7400').replace(/\/+$/, '');
  let token = env.WRIT_TOKEN;
  const file = flags['token-file'] ?? env.WRIT_TOKEN_FILE ?? (token === undefined ? resolve(flags['data-dir'] ?? env.WRIT_DATA_DIR ?? './.writ', 'admin.token') : undefined);
  if (file !== undefined) {
    try {
      token = readFileSync(file, 'utf8').trim();
    } catch {
      if (flags['token-file'] !== undefined || env.WRIT_TOKEN_FILE !== undefined) throw new CliError(`cannot read the admin token file ${file}`, 'ERR_CLI_TOKEN_FILE');
      token = undefined;
    }
  }
  return { server, token };
}

/**
 * Call the admin API; returns parsed JSON (or text for NDJSON). Throws CliError
 * with the server's code and message on an error status.
 */
export async function call(opts: ClientOptions, method: string, path: string, body?: unknown, extraHeaders: Record<string, string> = {}): Promise<{ status: number; json: unknown; text: string; headers: Headers }> {
  const headers: Record<string, string> = { accept: 'application/json', ...extraHeaders };
  if (opts.token !== undefined) headers.authorization = `Bearer ${opts.token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  let res: Response;
  try {
    res = await fetch(`${opts.server}${path}`, { method, headers, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
  } catch (e) {
    throw new CliError(`cannot reach writ at ${opts.server} (${(e as { cause?: { code?: string } }).cause?.code ?? (e as Error).message}); is \`writ up\` running?`, 'ERR_CLI_UNREACHABLE');
  }
  const text = await res.text();
  let json: unknown;
  const ct = res.headers.get('content-type') ?? '';
  if (ct.includes('application/json') && text !== '') {
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
  }
  if (res.status >= 400) {
    const err = (json ?? {}) as { code?: string; message?: string };
    const hint = res.status === 401 && opts.token === undefined ? ' (no admin token: pass --token-file, or set WRIT_TOKEN_FILE or WRIT_TOKEN)' : '';
    throw new CliError(`${err.message ?? `server answered ${res.status}`}${hint}`, err.code ?? `HTTP_${res.status}`);
  }
  return { status: res.status, json, text, headers: res.headers };
}
