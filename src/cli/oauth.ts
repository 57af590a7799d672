/**
 * `writ oauth exchange`: RFC 8693 token exchange at a Writ server's token
 * endpoint. (`writ token` is taken by join tokens.) Tokens are read from
 * files or stdin, never from the command line, where `ps` would show them.
 */
import { readFileSync } from 'node:fs';
import { CliError } from './client.ts';
import type { Command, Io, Values } from './command.ts';

const TOKEN_TYPES: Readonly<Record<string, string>> = {
  jwt: 'urn:ietf:params:oauth:token-type:jwt',
  access_token: 'urn:ietf:params:oauth:token-type:access_token',
};

function readToken(file: string, what: string): string {
  let text: string;
  try {
    text = file === '-' ? readFileSync(0, 'utf8') : readFileSync(file, 'utf8');
  } catch {
    throw new CliError(`cannot read the ${what} from ${file === '-' ? 'stdin' : file}`, 'ERR_CLI_USAGE', 2);
  }
  const t = text.trim();
  if (t === '') throw new CliError(`the ${what} in ${file === '-' ? 'stdin' : file} is empty`, 'ERR_CLI_USAGE', 2);
  return t;
}

function list(v: Values, name: string): string[] {
  return (v[name] as unknown as string[] | undefined) ?? [];
}

const exchange: Command = {
  name: 'oauth exchange',
  summary: 'exchange a JWT-SVID (or a Writ access token) for an audience-bound access token (RFC 8693)',
  usage: 'writ oauth exchange --subject-token-file FILE|- --audience AUD [--scope "a b"] [--actor-token-file FILE] [--task ID] [--expires-in S] [--client-svid-file FILE] [--server URL] [--json]',
  options: {
    server: { type: 'string' },
    'subject-token-file': { type: 'string' },
    'subject-token-type': { type: 'string' },
    'actor-token-file': { type: 'string' },
    audience: { type: 'string', multiple: true, short: 'a' },
    resource: { type: 'string', multiple: true },
    scope: { type: 'string' },
    task: { type: 'string' },
    'expires-in': { type: 'string' },
    'client-svid-file': { type: 'string' },
    json: { type: 'boolean' },
  },
  help: {
    '--subject-token-file FILE': 'the subject token: a JWT-SVID whose audience is the server, or a Writ access token (`-` reads stdin)',
    '--subject-token-type TYPE': 'jwt (default) or access_token',
    '--actor-token-file FILE': 'a JWT-SVID of the actor, for delegation (the new token carries an `act` claim)',
    '-a, --audience AUD': 'audience of the new token (repeat for several; at least one audience or resource)',
    '--resource URI': 'RFC 8707 resource of the new token (repeatable)',
    '--scope "A B"': 'space-separated scope; within a delegation, a subset of the subject token\'s',
    '--task ID': 'bind the token to a task (its deadline caps the lifetime; completing it revokes the token)',
    '--expires-in S': 'requested lifetime in seconds (capped by the server maximum, the subject token and the task)',
    '--client-svid-file FILE': 'authenticate as a client with this JWT-SVID (SPIFFE client authentication)',
    '--server URL': 'Writ server (env WRIT_SERVER; default http://127.0.0.1:7400)',
    '--json': 'print the whole token response instead of the bare access token',
  },
  async run(v: Values, _p: string[], io: Io) {
    const file = v['subject-token-file'] as string | undefined;
    if (file === undefined) throw new CliError('--subject-token-file is required', 'ERR_CLI_USAGE', 2);
    const typeName = (v['subject-token-type'] as string | undefined) ?? 'jwt';
    const subjectType = TOKEN_TYPES[typeName];
    if (subjectType === undefined) throw new CliError(`--subject-token-type must be jwt or access_token, not \`${typeName}\``, 'ERR_CLI_USAGE', 2);
    const audiences = list(v, 'audience');
    const resources = list(v, 'resource');
    if (audiences.length === 0 && resources.length === 0) throw new CliError('--audience or --resource is required', 'ERR_CLI_USAGE', 2);
    const expiresIn = v['expires-in'] as string | undefined;
    if (expiresIn !== undefined && !/^[1-9]\d{0,8}$/.test(expiresIn)) throw new CliError('--expires-in must be a positive number of seconds', 'ERR_CLI_USAGE', 2);
    const body = new URLSearchParams({ grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange', subject_token: readToken(file, 'subject token'), subject_token_type: subjectType });
    for (const a of audiences) body.append('audience', a);
    for (const r of resources) body.append('resource', r);
    const actorFile = v['actor-token-file'] as string | undefined;
    if (actorFile !== undefined) {
      body.set('actor_token', readToken(actorFile, 'actor token'));
      body.set('actor_token_type', TOKEN_TYPES.jwt ?? '');
    }
    const clientFile = v['client-svid-file'] as string | undefined;
    if (clientFile !== undefined) {
      body.set('client_assertion_type', 'urn:ietf:params:oauth:client-assertion-type:jwt-spiffe');
      body.set('client_assertion', readToken(clientFile, 'client JWT-SVID'));
    }
    if (typeof v.scope === 'string') body.set('scope', v.scope);
    if (typeof v.task === 'string') body.set('task', v.task);
    if (expiresIn !== undefined) body.set('requested_expires_in', expiresIn);
    const server = ((v.server as string | undefined) ?? io.env.WRIT_SERVER ?? 'http://127.0.0.1:7400').replace(/\/+$/, '');
    let res: Response;
    try {
      res = await fetch(`${server}/oauth2/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body });
    } catch {
      throw new CliError(`cannot reach the Writ server at ${server}`, 'ERR_CLI_UNREACHABLE');
    }
    const text = await res.text();
    let json: Record<string, unknown>;
    try {
      json = JSON.parse(text) as Record<string, unknown>;
    } catch {
      throw new CliError(`the server answered ${res.status} without a JSON body`, 'ERR_CLI_SERVER');
    }
    if (!res.ok) throw new CliError(`${String(json.error)}: ${String(json.error_description ?? '')}`, 'ERR_CLI_OAUTH');
    if (v.json === true) io.out(JSON.stringify(json));
    else io.out(String(json.access_token));
    return 0;
  },
};

/** The `writ oauth …` commands. */
/** `writ token exchange`: the same command under the name the rest of the token commands use. */
const tokenExchange: Command = {
  ...exchange,
  name: 'token exchange',
  summary: `${exchange.summary}; the same as \`writ oauth exchange\``,
  usage: exchange.usage.replace('writ oauth exchange', 'writ token exchange'),
};

export const OAUTH_COMMANDS: readonly Command[] = [exchange, tokenExchange];
