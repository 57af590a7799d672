/**
 * `writ` — the command line. Every command but `up` is a client of the
 * server's admin API. Exit codes: 0 success, 1 failure (including a failed
 * verification), 2 usage error.
 */
import { parseArgs } from 'node:util';
import { readFileSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { startServer, writVersion } from '../server/index.ts';
import { openStore } from '../storage/index.ts';
import { verifyChain } from '../audit/index.ts';
import { CONFIG_SCHEMA, envName, WritError } from '../kernel/index.ts';
import type { OptionSpec } from '../kernel/index.ts';
import { call, CliError } from './client.ts';
import { CLIENT_OPTIONS, CLIENT_HELP, client, table } from './command.ts';
import type { Command, Io, Values } from './command.ts';
import { IDENTITY_COMMANDS } from './identity.ts';
import { AGENT_COMMANDS } from './agent.ts';
import { WORKLOAD_COMMANDS } from './workload.ts';
import { CREDENTIAL_COMMANDS } from './credentials.ts';
import { POLICY_COMMANDS } from './policy.ts';
import { ENFORCEMENT_COMMANDS } from './enforcement.ts';
import { SIGNAL_COMMANDS } from './signals.ts';
import { OAUTH_COMMANDS } from './oauth.ts';

// ---- commands ---------------------------------------------------------------

const up: Command = {
  name: 'up',
  summary: 'start the Writ control plane server',
  usage: 'writ up [--listen HOST:PORT] [--tls-listen HOST:PORT] [--data-dir DIR] [--store URL] [--config FILE] [--policies DIR]',
  options: {
    listen: { type: 'string' },
    'tls-listen': { type: 'string' },
    'data-dir': { type: 'string' },
    store: { type: 'string' },
    config: { type: 'string' },
    'log-level': { type: 'string' },
    mode: { type: 'string' },
    policies: { type: 'string' },
  },
  help: {
    '--listen HOST:PORT': 'listen address (default 127.0.0.1:7400)',
    '--tls-listen HOST:PORT': 'also listen with mutual TLS, presenting the server\'s own X.509-SVID (env WRIT_TLS_LISTEN; default off)',
    '--data-dir DIR': 'local state: embedded SQLite store, bootstrap admin token (default ./.writ)',
    '--store URL': 'postgres://user@host:port/db to use PostgreSQL instead of the embedded SQLite',
    '--config FILE': 'JSON config file (env WRIT_CONFIG); see `writ config`',
    '--log-level LEVEL': 'fatal, error, warn, info, debug, trace or silent',
    '--mode MODE': 'development or production',
    '--policies DIR': 'policy folder (`.cedar` files), watched and reloaded on change (env WRIT_POLICY_DIR); without it every decision is a deny',
  },
  async run(v, _p, io) {
    const configFile = (v.config as string | undefined) ?? io.env.WRIT_CONFIG;
    let file: unknown;
    if (configFile !== undefined) {
      try {
        file = JSON.parse(readFileSync(configFile, 'utf8'));
      } catch (e) {
        throw new CliError(`cannot read config file ${configFile}: ${(e as Error).message}`, 'ERR_CLI_CONFIG_FILE');
      }
    }
    const flags = {
      ...(v.listen === undefined ? {} : { listen: v.listen as string }),
      ...(v['tls-listen'] === undefined ? {} : { 'tls.listen': v['tls-listen'] as string }),
      ...(v['data-dir'] === undefined ? {} : { dataDir: v['data-dir'] as string }),
      ...(v.store === undefined ? {} : { store: v.store as string }),
      ...(v['log-level'] === undefined ? {} : { logLevel: v['log-level'] as string }),
      ...(v.mode === undefined ? {} : { mode: v.mode as string }),
      ...(v.policies === undefined ? {} : { 'policy.dir': v.policies as string }),
    };
    const server = await startServer({ file, env: io.env, flags });
    io.err(`writ ${writVersion()} listening on ${server.url} (store ${server.store.location})`);
    if (server.tls !== undefined) io.err(`writ: mutual TLS on ${server.tls.url} as ${server.tls.current().spiffeId.toString()}`);
    if (server.bootstrapTokenFile !== undefined) io.err(`bootstrap admin credential written to ${server.bootstrapTokenFile} (mode 0600); it is shown nowhere else`);
    await new Promise<void>((resolveStop) => {
      const stop = (signal: string) => {
        io.err(`writ: ${signal} received, draining requests and flushing the audit log`);
        server.close().then(resolveStop, (e: unknown) => {
          io.err(`writ: shutdown failed: ${(e as Error).message}`);
          resolveStop();
        });
      };
      process.once('SIGTERM', () => stop('SIGTERM'));
      process.once('SIGINT', () => stop('SIGINT'));
    });
    return 0;
  },
};

const status: Command = {
  name: 'status',
  summary: 'show the server\'s version, store, audit head and configuration',
  usage: 'writ status [--server URL] [--json]',
  options: CLIENT_OPTIONS,
  help: CLIENT_HELP,
  async run(v, _p, io) {
    const r = await call(client(v, io), 'GET', '/admin/v1/status');
    const s = r.json as { version: string; uptimeSeconds: number; store: { kind: string; location: string }; audit: { headSeq: number; appended: number; queued: number } };
    if (v.json === true) io.out(JSON.stringify(s, null, 2));
    else io.out(table([['version', s.version], ['uptime', `${s.uptimeSeconds}s`], ['store', `${s.store.kind} ${s.store.location}`], ['audit head', String(s.audit.headSeq)], ['audit queued', String(s.audit.queued)]]));
    return 0;
  },
};

const auditVerify: Command = {
  name: 'audit verify',
  summary: 'verify the audit hash chain; names the first bad sequence number',
  usage: 'writ audit verify [--server URL] [--json] | writ audit verify --offline [--data-dir DIR | --store URL]',
  options: { ...CLIENT_OPTIONS, offline: { type: 'boolean' }, 'data-dir': { type: 'string' }, store: { type: 'string' } },
  help: {
    ...CLIENT_HELP,
    '--offline': 'read the store directly instead of asking the server (for forensics, or when the server refuses to run on a broken chain)',
    '--data-dir DIR': 'with --offline: the data folder of an embedded store (default ./.writ)',
    '--store URL': 'with --offline: a postgres:// store URL (env WRIT_STORE)',
  },
  async run(v, _p, io) {
    let res: { ok: boolean; checked: number; headSeq?: number; headHash?: string; firstBadSeq?: number; reason?: string; message?: string };
    if (v.offline === true) {
      const store = await openStore({ url: (v.store as string | undefined) ?? io.env.WRIT_STORE ?? '', dataDir: (v['data-dir'] as string | undefined) ?? io.env.WRIT_DATA_DIR ?? './.writ', readOnly: true });
      try {
        res = await verifyChain(store, { onProgress: (n) => { if (v.json !== true && n % 100_000 === 0) io.err(`verified ${n} events`); } });
      } finally {
        await store.close();
      }
    } else {
      res = (await call(client(v, io), 'GET', '/admin/v1/audit/verify')).json as typeof res;
    }
    if (v.json === true) io.out(JSON.stringify(res, null, 2));
    else if (res.ok) io.out(`audit chain ok: ${res.checked} events, head ${res.headSeq ?? 0} ${res.headHash ?? ''}`);
    else io.err(`audit chain broken at seq ${res.firstBadSeq ?? '?'}: ${res.message ?? res.reason ?? ''} (${res.checked} events before it verified)`);
    return res.ok ? 0 : 1;
  },
};

function printEvents(events: { seq: number; time: string; action: string; outcome: string; actor: { type: string; id: string; name?: string }; correlationId: string }[], json: boolean, io: Io): void {
  for (const e of events) {
    if (json) io.out(JSON.stringify(e));
    else io.out(`${String(e.seq).padStart(8)}  ${e.time}  ${e.action.padEnd(26)} ${e.outcome.padEnd(8)} ${e.actor.type}:${e.actor.name ?? e.actor.id}  ${e.correlationId}`);
  }
}

const auditTail: Command = {
  name: 'audit tail',
  summary: 'print the latest audit events; --follow keeps printing new ones',
  usage: 'writ audit tail [-n N] [--follow] [--action ACTION] [--server URL] [--json]',
  options: { ...CLIENT_OPTIONS, lines: { type: 'string', short: 'n' }, follow: { type: 'boolean', short: 'f' }, action: { type: 'string' }, interval: { type: 'string' } },
  help: { '-n, --lines N': 'how many of the latest events to show first (default 20)', '-f, --follow': 'keep printing events as they are written (Ctrl-C stops)', '--action ACTION': 'only events with this action', '--interval MS': 'poll interval with --follow (default 500)', ...CLIENT_HELP },
  async run(v, _p, io) {
    const c = client(v, io);
    const n = Number(v.lines ?? '20');
    if (!Number.isInteger(n) || n < 0 || n > 10000) throw new CliError('--lines must be an integer from 0 to 10000', 'ERR_CLI_USAGE', 2);
    const interval = Number(v.interval ?? '500');
    if (!Number.isInteger(interval) || interval < 50) throw new CliError('--interval must be an integer of at least 50', 'ERR_CLI_USAGE', 2);
    const action = v.action === undefined ? '' : `&action=${encodeURIComponent(v.action as string)}`;
    // Every call of this tail shares one W3C trace id, so the tail can leave
    // out the audit events its own polling causes.
    const ownTrace = randomBytes(16).toString('hex');
    const get = (path: string) => call(c, 'GET', path, undefined, { traceparent: `00-${ownTrace}-${randomBytes(8).toString('hex')}-01` });
    type Ev = { seq: number; time: string; action: string; outcome: string; actor: { type: string; id: string }; correlationId: string };
    const st = (await get('/admin/v1/status')).json as { audit: { headSeq: number } };
    let after = Math.max(0, st.audit.headSeq - n);
    const fetchNew = async (): Promise<Ev[]> => {
      const got: Ev[] = [];
      for (;;) {
        const body = (await get(`/admin/v1/audit/events?after=${after}&limit=1000${action}`)).json as { events: Ev[] };
        const last = body.events[body.events.length - 1];
        if (last !== undefined) after = last.seq;
        got.push(...body.events.filter((e) => e.correlationId !== ownTrace));
        if (body.events.length < 1000) return got;
      }
    };
    const first = await fetchNew();
    printEvents(first.slice(Math.max(0, first.length - n)), v.json === true, io);
    if (v.follow !== true) return 0;
    let stopped = false;
    process.once('SIGINT', () => {
      stopped = true;
    });
    while (!stopped) {
      await new Promise((r) => setTimeout(r, interval));
      if (!stopped) printEvents(await fetchNew(), v.json === true, io);
    }
    return 0;
  },
};

const auditExport: Command = {
  name: 'audit export',
  summary: 'export the audit log as newline-delimited JSON (Writ records or OCSF 1.8.0 events)',
  usage: 'writ audit export [--format ocsf|jsonl] [--output FILE] [--server URL]',
  options: { ...CLIENT_OPTIONS, format: { type: 'string' }, output: { type: 'string', short: 'o' } },
  help: { '--format FORMAT': 'jsonl (default: Writ records with their hashes) or ocsf', '-o, --output FILE': 'write to FILE (mode 0600) instead of standard output', ...CLIENT_HELP },
  async run(v, _p, io) {
    const format = (v.format as string | undefined) ?? 'jsonl';
    if (format !== 'jsonl' && format !== 'ocsf') throw new CliError(`--format must be ocsf or jsonl, not \`${format}\``, 'ERR_CLI_USAGE', 2);
    const c = client(v, io);
    // Pin the end first: each export call is itself audited, so an open-ended
    // export would chase its own events.
    const head = ((await call(c, 'GET', '/admin/v1/status')).json as { audit: { headSeq: number } }).audit.headSeq;
    let after = 0;
    const parts: string[] = [];
    while (after < head) {
      const r = await call(c, 'GET', `/admin/v1/audit/export?format=${format}&after=${after}&through=${head}`);
      if (r.text === '') break;
      parts.push(r.text);
      const next = Number(r.headers.get('x-writ-next-after') ?? after);
      if (next === after) break;
      after = next;
      if (v.output !== undefined) io.err(`exported through seq ${after}`);
    }
    const text = parts.join('');
    if (v.output !== undefined) writeFileSync(v.output as string, text, { mode: 0o600 });
    else if (text !== '') io.out(text.replace(/\n$/, ''));
    return 0;
  },
};

const principalList: Command = {
  name: 'principal list',
  summary: 'list admin principals',
  usage: 'writ principal list [--server URL] [--json]',
  options: CLIENT_OPTIONS,
  help: CLIENT_HELP,
  async run(v, _p, io) {
    const r = await call(client(v, io), 'GET', '/admin/v1/principals');
    const ps = (r.json as { principals: { id: string; name: string; role: string; createdAt: string; revokedAt: string | null }[] }).principals;
    if (v.json === true) io.out(JSON.stringify(ps, null, 2));
    else io.out(table([['ID', 'NAME', 'ROLE', 'CREATED', 'STATE'], ...ps.map((p) => [p.id, p.name, p.role, p.createdAt, p.revokedAt === null ? 'active' : `revoked ${p.revokedAt}`])]));
    return 0;
  },
};

const principalCreate: Command = {
  name: 'principal create',
  summary: 'create an admin principal and print its credential once',
  usage: 'writ principal create --name NAME --role admin|operator|approver|auditor|pep [--output FILE]',
  options: { ...CLIENT_OPTIONS, name: { type: 'string' }, role: { type: 'string' }, output: { type: 'string', short: 'o' } },
  help: { '--name NAME': 'a-z, 0-9, dot, dash, underscore', '--role ROLE': 'admin, operator, approver, auditor or pep (an enforcement point: it may only ask for decisions)', '-o, --output FILE': 'write the credential to FILE with mode 0600 instead of printing it', ...CLIENT_HELP },
  async run(v, _p, io) {
    if (v.name === undefined || v.role === undefined) throw new CliError('--name and --role are required', 'ERR_CLI_USAGE', 2);
    const r = await call(client(v, io), 'POST', '/admin/v1/principals', { name: v.name, role: v.role });
    const body = r.json as { principal: { id: string; name: string; role: string }; token: string };
    if (v.output !== undefined) {
      writeFileSync(v.output as string, `${body.token}\n`, { mode: 0o600, flag: 'wx' });
      io.err(`created ${body.principal.role} ${body.principal.name} (${body.principal.id}); credential written to ${v.output as string}`);
    } else if (v.json === true) io.out(JSON.stringify(body, null, 2));
    else {
      io.err(`created ${body.principal.role} ${body.principal.name} (${body.principal.id}); its credential follows and is not shown again`);
      io.out(body.token);
    }
    return 0;
  },
};

const principalRevoke: Command = {
  name: 'principal revoke',
  summary: 'revoke an admin principal (the last admin cannot be revoked)',
  usage: 'writ principal revoke ID [--server URL]',
  options: CLIENT_OPTIONS,
  help: CLIENT_HELP,
  positionals: 1,
  async run(v, p, io) {
    await call(client(v, io), 'DELETE', `/admin/v1/principals/${encodeURIComponent(p[0] ?? '')}`);
    io.err(`revoked ${p[0] ?? ''}`);
    return 0;
  },
};

const principalRotate: Command = {
  name: 'principal rotate',
  summary: 'issue a new credential for an admin principal; the old one stops working',
  usage: 'writ principal rotate ID [--output FILE] [--server URL]',
  options: { ...CLIENT_OPTIONS, output: { type: 'string', short: 'o' } },
  help: { '-o, --output FILE': 'write the credential to FILE with mode 0600 instead of printing it', ...CLIENT_HELP },
  positionals: 1,
  async run(v, p, io) {
    const r = await call(client(v, io), 'POST', `/admin/v1/principals/${encodeURIComponent(p[0] ?? '')}/rotate`);
    const body = r.json as { token: string };
    if (v.output !== undefined) writeFileSync(v.output as string, `${body.token}\n`, { mode: 0o600 });
    else io.out(body.token);
    return 0;
  },
};

const configDoc: Command = {
  name: 'config',
  summary: 'list every configuration option with its default and environment variable',
  usage: 'writ config [--json]',
  options: { json: { type: 'boolean' } },
  help: { '--json': 'machine-readable output' },
  async run(v, _p, io) {
    const rows = (Object.entries(CONFIG_SCHEMA) as [string, OptionSpec][]).map(([k, s]) => ({ key: k, env: envName(k), default: s.default, doc: s.doc }));
    if (v.json === true) io.out(JSON.stringify(rows, null, 2));
    else io.out(table([['KEY', 'ENV', 'DEFAULT', 'MEANING'], ...rows.map((r) => [r.key, r.env, JSON.stringify(r.default), r.doc])]));
    return 0;
  },
};

/**
 * Every command. A command group lives in its own file (`cli/<group>.ts`)
 * exporting its commands; add them here.
 */
const COMMANDS: readonly Command[] = [up, status, auditVerify, auditTail, auditExport, principalList, principalCreate, principalRevoke, principalRotate, configDoc, ...IDENTITY_COMMANDS, ...AGENT_COMMANDS, ...WORKLOAD_COMMANDS, ...POLICY_COMMANDS, ...ENFORCEMENT_COMMANDS, ...SIGNAL_COMMANDS, ...OAUTH_COMMANDS, ...CREDENTIAL_COMMANDS];

function topHelp(): string {
  return [
    'writ — Zero Trust control plane for non-human identities',
    '',
    'usage: writ <command> [options]',
    '',
    'commands:',
    table(COMMANDS.map((c) => [`  ${c.name}`, c.summary])),
    '',
    'Run `writ <command> --help` for a command\'s options. `writ --version` prints the version.',
  ].join('\n');
}

function commandHelp(c: Command): string {
  return [`${c.summary}`, '', `usage: ${c.usage}`, '', 'options:', table([...Object.entries(c.help), ['-h, --help', 'show this help']].map(([k, d]) => [`  ${k ?? ''}`, d ?? '']))].join('\n');
}

/**
 * Run the CLI; returns the exit code.
 *
 * @example
 * process.exitCode = await main(['status', '--json']);
 */
export async function main(argv: string[], io: Io = { out: (s) => process.stdout.write(`${s}\n`), err: (s) => process.stderr.write(`${s}\n`), env: process.env }): Promise<number> {
  if (argv.length === 0 || argv[0] === '--help' || argv[0] === '-h' || argv[0] === 'help') {
    io.out(topHelp());
    return argv.length === 0 ? 2 : 0;
  }
  if (argv[0] === '--version' || argv[0] === '-v') {
    io.out(writVersion());
    return 0;
  }
  const two = `${argv[0] ?? ''} ${argv[1] ?? ''}`;
  const cmd = COMMANDS.find((c) => c.name === two) ?? COMMANDS.find((c) => c.name === argv[0]);
  if (cmd === undefined) {
    const group = COMMANDS.filter((c) => c.name.startsWith(`${argv[0] ?? ''} `));
    if (group.length > 0) {
      io.err(`writ ${argv[0] ?? ''}: needs a subcommand: ${group.map((c) => c.name.split(' ')[1]).join(', ')}`);
      return 2;
    }
    io.err(`writ: unknown command \`${argv[0] ?? ''}\`; see \`writ --help\``);
    return 2;
  }
  const rest = argv.slice(cmd.name.split(' ').length);
  let parsed: { values: Values; positionals: string[] };
  try {
    parsed = parseArgs({ args: rest, options: { ...cmd.options, help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true }) as { values: Values; positionals: string[] };
  } catch (e) {
    io.err(`writ ${cmd.name}: ${(e as Error).message}; see \`writ ${cmd.name} --help\``);
    return 2;
  }
  if (parsed.values.help === true) {
    io.out(commandHelp(cmd));
    return 0;
  }
  if (parsed.positionals.length !== (cmd.positionals ?? 0)) {
    io.err(`writ ${cmd.name}: expected ${cmd.positionals ?? 0} argument(s); usage: ${cmd.usage}`);
    return 2;
  }
  try {
    return await cmd.run(parsed.values, parsed.positionals, io);
  } catch (e) {
    if (e instanceof CliError) {
      io.err(`writ ${cmd.name}: ${e.message} (${e.code})`);
      return e.exitCode;
    }
    if (e instanceof WritError) {
      io.err(`writ ${cmd.name}: ${e.expose ? e.message : 'internal error'} (${e.code})`);
      const cause = e.cause as { message?: string } | undefined;
      if (!e.expose && cause?.message !== undefined) io.err(`  cause: ${cause.message}`);
      return 1;
    }
    io.err(`writ ${cmd.name}: ${(e as Error).message}`);
    return 1;
  }
}
