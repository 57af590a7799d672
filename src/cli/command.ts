/**
 * The shape of a CLI command and helpers shared by every command file.
 */
import type { ParseArgsConfig } from 'node:util';
import { clientOptions } from './client.ts';
import type { ClientOptions } from './client.ts';

export type Options = NonNullable<ParseArgsConfig['options']>;
export type Values = Record<string, string | boolean | undefined>;

export interface Command {
  readonly name: string;
  readonly summary: string;
  readonly usage: string;
  readonly options: Options;
  readonly help: Record<string, string>;
  readonly positionals?: number;
  run(values: Values, positionals: string[], io: Io): Promise<number>;
}

export interface Io {
  out(s: string): void;
  err(s: string): void;
  env: NodeJS.ProcessEnv;
}

export const CLIENT_OPTIONS: Options = {
  server: { type: 'string' },
  'token-file': { type: 'string' },
  json: { type: 'boolean' },
};
export const CLIENT_HELP = {
  '--server URL': 'Writ server (env WRIT_SERVER; default http://127.0.0.1:7400)',
  '--token-file FILE': 'admin credential file (env WRIT_TOKEN_FILE, or the credential itself in WRIT_TOKEN; default ./.writ/admin.token)',
  '--json': 'machine-readable output',
};

export function client(values: Values, io: Io): ClientOptions {
  return clientOptions({ server: values.server as string | undefined, 'token-file': values['token-file'] as string | undefined }, io.env);
}

export function table(rows: string[][]): string {
  const widths = rows.reduce<number[]>((w, r) => r.map((c, i) => Math.max(w[i] ?? 0, c.length)), []);
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd()).join('\n');
}

