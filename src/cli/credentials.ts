/**
 * `writ task|creds|lease|exception|engine`: tasks, dynamic database
 * credentials, leases, legacy exceptions and the rotation of engine admin
 * secrets, through the admin API. A credential is printed once (or written
 * to a file with mode 0600); the server keeps no copy of a dynamic one.
 */
import { existsSync, writeFileSync } from 'node:fs';
import { call, CliError } from './client.ts';
import { CLIENT_OPTIONS, CLIENT_HELP, client, table } from './command.ts';
import type { Command, Values } from './command.ts';

interface LeaseJson {
  id: string;
  kind: string;
  subject: string;
  taskId: string | null;
  audience: string | null;
  state: string;
  createdAt: string;
  expiresAt: string;
  maxExpiresAt: string;
  revokedAt: string | null;
  revokeReason: string | null;
  handle: Record<string, string>;
}

interface TaskJson {
  id: string;
  owner: string;
  description: string;
  scopes: string[];
  state: string;
  createdAt: string;
  deadline: string;
  endedAt: string | null;
  endedBy: string | null;
  leases?: LeaseJson[];
}

function seconds(v: Values, name: string): number | undefined {
  const raw = v[name];
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n <= 0) throw new CliError(`--${name} must be a positive whole number of seconds`, 'ERR_CLI_USAGE', 2);
  return n;
}

function required(v: Values, name: string): string {
  const raw = v[name];
  if (typeof raw !== 'string' || raw === '') throw new CliError(`--${name} is required`, 'ERR_CLI_USAGE', 2);
  return raw;
}

function leaseRows(leases: readonly LeaseJson[]): string {
  return table([['LEASE', 'KIND', 'STATE', 'SUBJECT', 'TASK', 'EXPIRES', 'ACCOUNT'], ...leases.map((l) => [l.id, l.kind, l.state, l.subject, l.taskId ?? '-', l.expiresAt, l.handle.username ?? '-'])]);
}

// ---- task ------------------------------------------------------------------------

const taskStart: Command = {
  name: 'task start',
  summary: 'start a task that credentials can be bound to (completing it revokes them)',
  usage: 'writ task start --owner ID --ttl SECONDS [--scope S…] [--description TEXT] [--json]',
  options: { ...CLIENT_OPTIONS, owner: { type: 'string' }, ttl: { type: 'string' }, scope: { type: 'string', multiple: true }, description: { type: 'string' } },
  help: { '--owner ID': 'who owns the task: a SPIFFE ID or principal', '--ttl SECONDS': 'time until the deadline; credentials bound to it never outlive it', '--scope S': 'scope credentials of this task may carry (repeat)', '--description TEXT': 'what the task is (a CI run, a deployment …)', ...CLIENT_HELP },
  async run(v, _p, io) {
    const ttl = seconds(v, 'ttl');
    if (ttl === undefined) throw new CliError('--ttl is required', 'ERR_CLI_USAGE', 2);
    const scopes = (v as Record<string, unknown>).scope;
    const body = { owner: required(v, 'owner'), ttlSeconds: ttl, ...(Array.isArray(scopes) ? { scopes: scopes.map(String) } : {}), ...(v.description === undefined ? {} : { description: v.description }) };
    const t = (await call(client(v, io), 'POST', '/admin/v1/tasks', body)).json as TaskJson;
    if (v.json === true) io.out(JSON.stringify(t, null, 2));
    else io.out(`task ${t.id} started; deadline ${t.deadline}`);
    return 0;
  },
};

const taskComplete: Command = {
  name: 'task complete',
  summary: 'complete a task: every lease bound to it is revoked; prints the revocation receipt',
  usage: 'writ task complete TASK_ID [--json]',
  options: { ...CLIENT_OPTIONS },
  help: { ...CLIENT_HELP },
  positionals: 1,
  async run(v, p, io) {
    const id = p[0] ?? '';
    const r = (await call(client(v, io), 'POST', `/admin/v1/tasks/${encodeURIComponent(id)}/complete`)).json as { task: TaskJson; revoked: { leaseId: string; kind: string; subject: string; revokedAt: string | null }[] };
    if (v.json === true) io.out(JSON.stringify(r, null, 2));
    else {
      io.out(`task ${r.task.id} completed at ${r.task.endedAt ?? '?'} by ${r.task.endedBy ?? '?'}; ${r.revoked.length} lease(s) revoked`);
      if (r.revoked.length > 0) io.out(table([['LEASE', 'KIND', 'SUBJECT', 'REVOKED'], ...r.revoked.map((x) => [x.leaseId, x.kind, x.subject, x.revokedAt ?? '-'])]));
    }
    return 0;
  },
};

const taskShow: Command = {
  name: 'task show',
  summary: 'a task and the leases bound to it',
  usage: 'writ task show TASK_ID [--json]',
  options: { ...CLIENT_OPTIONS },
  help: { ...CLIENT_HELP },
  positionals: 1,
  async run(v, p, io) {
    const t = (await call(client(v, io), 'GET', `/admin/v1/tasks/${encodeURIComponent(p[0] ?? '')}`)).json as TaskJson;
    if (v.json === true) io.out(JSON.stringify(t, null, 2));
    else {
      io.out(`task ${t.id}  ${t.state}  owner ${t.owner}  deadline ${t.deadline}${t.scopes.length > 0 ? `  scopes ${t.scopes.join(' ')}` : ''}`);
      if (t.endedAt !== null) io.out(`ended ${t.endedAt} by ${t.endedBy ?? '?'}`);
      if ((t.leases ?? []).length > 0) io.out(leaseRows(t.leases ?? []));
    }
    return 0;
  },
};

// ---- creds ------------------------------------------------------------------------

function credsCommand(type: 'postgres' | 'redis'): Command {
  return {
    name: `creds ${type}`,
    summary: `issue a dynamic ${type === 'postgres' ? 'PostgreSQL role' : 'Redis ACL user'} under a lease (the credential is shown once)`,
    usage: `writ creds ${type} --role ROLE [--engine NAME] [--subject ID] [--task TASK_ID] [--ttl SECONDS] [--output FILE] [--json]`,
    options: { ...CLIENT_OPTIONS, role: { type: 'string' }, engine: { type: 'string' }, subject: { type: 'string' }, task: { type: 'string' }, ttl: { type: 'string' }, output: { type: 'string', short: 'o' } },
    help: {
      '--role ROLE': 'role of the engine definition (grant template)',
      '--engine NAME': `engine name in credentials.engines (default: ${type})`,
      '--subject ID': 'who holds the credential (default: you, admin:<id>)',
      '--task TASK_ID': 'bind it to a task: completing the task revokes it',
      '--ttl SECONDS': 'lease lifetime (default: the server\'s credentials.dynamicTtlSeconds)',
      '-o, --output FILE': 'write the connection URL with the password to FILE (mode 0600, must not exist) instead of printing it',
      ...CLIENT_HELP,
    },
    async run(v, _p, io) {
      const ttl = seconds(v, 'ttl');
      // Refuse before issuing: a credential whose file cannot be written would be lost but live.
      if (typeof v.output === 'string' && existsSync(v.output)) throw new CliError(`${v.output} exists; the credential file must be new`, 'ERR_CLI_USAGE', 2);
      const engine = typeof v.engine === 'string' ? v.engine : type;
      const body = { role: required(v, 'role'), ...(v.subject === undefined ? {} : { subject: v.subject }), ...(v.task === undefined ? {} : { taskId: v.task }), ...(ttl === undefined ? {} : { ttlSeconds: ttl }) };
      const r = (await call(client(v, io), 'POST', `/admin/v1/creds/${encodeURIComponent(engine)}`, body)).json as { lease: LeaseJson; username: string; password: string; connection: { host: string; port: number; database?: string } };
      const c = r.connection;
      const url = type === 'postgres' ? `postgres://${r.username}:${r.password}@${c.host}:${c.port}/${encodeURIComponent(c.database ?? '')}` : `redis://${r.username}:${r.password}@${c.host}:${c.port}`;
      const about = `lease ${r.lease.id}: ${r.username} expires ${r.lease.expiresAt} (renewable to ${r.lease.maxExpiresAt})`;
      if (v.output !== undefined) {
        writeFileSync(v.output as string, v.json === true ? `${JSON.stringify({ ...r, url }, null, 2)}\n` : `${url}\n`, { mode: 0o600, flag: 'wx' });
        io.err(`${about}; credential written to ${v.output as string}`);
      } else if (v.json === true) io.out(JSON.stringify({ ...r, url }, null, 2));
      else {
        io.err(`${about}; the password is not shown again`);
        io.out(url);
      }
      return 0;
    },
  };
}

// ---- lease ------------------------------------------------------------------------

const leaseList: Command = {
  name: 'lease list',
  summary: 'list leases by subject, subject prefix, task or state',
  usage: 'writ lease list [--subject ID | --prefix P] [--task TASK_ID] [--state pending|active|revoked|expired|live] [--limit N] [--json]',
  options: { ...CLIENT_OPTIONS, subject: { type: 'string' }, prefix: { type: 'string' }, task: { type: 'string' }, state: { type: 'string' }, limit: { type: 'string' } },
  help: { '--subject ID': 'leases of this holder', '--prefix P': 'leases whose holder starts with P', '--task TASK_ID': 'leases bound to this task', '--state S': 'pending, active, revoked, expired, or live (pending or active)', '--limit N': 'at most N (default 1000)', ...CLIENT_HELP },
  async run(v, _p, io) {
    const q = new URLSearchParams();
    if (typeof v.subject === 'string') q.set('subject', v.subject);
    if (typeof v.prefix === 'string') q.set('prefix', v.prefix);
    if (typeof v.task === 'string') q.set('taskId', v.task);
    if (typeof v.state === 'string') q.set('state', v.state);
    if (typeof v.limit === 'string') q.set('limit', v.limit);
    const r = (await call(client(v, io), 'GET', `/admin/v1/leases${q.size > 0 ? `?${q.toString()}` : ''}`)).json as { leases: LeaseJson[] };
    if (v.json === true) io.out(JSON.stringify(r.leases, null, 2));
    else io.out(r.leases.length === 0 ? 'no leases' : leaseRows(r.leases));
    return 0;
  },
};

const leaseRenew: Command = {
  name: 'lease renew',
  summary: 'renew a lease (never past its maximum lifetime)',
  usage: 'writ lease renew LEASE_ID --ttl SECONDS [--json]',
  options: { ...CLIENT_OPTIONS, ttl: { type: 'string' } },
  help: { '--ttl SECONDS': 'new lifetime from now', ...CLIENT_HELP },
  positionals: 1,
  async run(v, p, io) {
    const ttl = seconds(v, 'ttl');
    if (ttl === undefined) throw new CliError('--ttl is required', 'ERR_CLI_USAGE', 2);
    const l = (await call(client(v, io), 'POST', `/admin/v1/leases/${encodeURIComponent(p[0] ?? '')}/renew`, { ttlSeconds: ttl })).json as LeaseJson;
    if (v.json === true) io.out(JSON.stringify(l, null, 2));
    else io.out(`lease ${l.id} renewed; expires ${l.expiresAt} (maximum ${l.maxExpiresAt})`);
    return 0;
  },
};

const leaseRevoke: Command = {
  name: 'lease revoke',
  summary: 'revoke a lease now: its credential stops working and its sessions end',
  usage: 'writ lease revoke LEASE_ID [--reason TEXT] [--json]',
  options: { ...CLIENT_OPTIONS, reason: { type: 'string' } },
  help: { '--reason TEXT': 'recorded in the lease and the audit log', ...CLIENT_HELP },
  positionals: 1,
  async run(v, p, io) {
    const reason = typeof v.reason === 'string' ? { reason: v.reason } : {};
    const r = (await call(client(v, io), 'POST', `/admin/v1/leases/${encodeURIComponent(p[0] ?? '')}/revoke`, reason)).json as { revoked: boolean; lease: LeaseJson };
    if (v.json === true) io.out(JSON.stringify(r, null, 2));
    else io.out(r.revoked ? `lease ${r.lease.id} revoked` : `lease ${r.lease.id} was already ${r.lease.state}`);
    return 0;
  },
};

const leaseRevokeAll: Command = {
  name: 'lease revoke-all',
  summary: 'revoke every live lease of a task, a subject or a subject prefix',
  usage: 'writ lease revoke-all (--task TASK_ID | --subject ID | --prefix P) [--reason TEXT] [--json]',
  options: { ...CLIENT_OPTIONS, task: { type: 'string' }, subject: { type: 'string' }, prefix: { type: 'string' }, reason: { type: 'string' } },
  help: { '--task TASK_ID': 'every live lease bound to the task', '--subject ID': 'every live lease of the holder', '--prefix P': 'every live lease whose holder starts with P', '--reason TEXT': 'recorded in the leases and the audit log', ...CLIENT_HELP },
  async run(v, _p, io) {
    if ([v.task, v.subject, v.prefix].filter((x) => x !== undefined).length !== 1) throw new CliError('name exactly one of --task, --subject or --prefix', 'ERR_CLI_USAGE', 2);
    const body = { ...(typeof v.task === 'string' ? { taskId: v.task } : {}), ...(typeof v.subject === 'string' ? { subject: v.subject } : {}), ...(typeof v.prefix === 'string' ? { prefix: v.prefix } : {}), ...(typeof v.reason === 'string' ? { reason: v.reason } : {}) };
    const r = (await call(client(v, io), 'POST', '/admin/v1/leases/revoke', body)).json as { revoked: LeaseJson[] };
    if (v.json === true) io.out(JSON.stringify(r.revoked, null, 2));
    else io.out(`${r.revoked.length} lease(s) revoked${r.revoked.length > 0 ? `\n${leaseRows(r.revoked)}` : ''}`);
    return 0;
  },
};

// ---- exception ----------------------------------------------------------------------

interface ExceptionJson {
  id: string;
  name: string;
  account: string;
  system: string;
  engine: string | null;
  rotateEverySeconds: number | null;
  owner: { team: string; contact: string };
  justification: string;
  compensatingControls: string[];
  risks: { id: string; name: string }[];
  expiresAt: string;
  createdAt: string;
  createdBy: string;
  lastRotatedAt: string | null;
  nextRotationAt: string | null;
  lastRotationError: string | null;
  expiredFindingAt: string | null;
  hasSecret: boolean;
  rotationPending: boolean;
}

interface FindingJson {
  id: string;
  type: string;
  severity: string;
  exceptionId: string;
  name: string;
  account: string;
  owner: { team: string; contact: string };
  risks: string[];
  since: string;
  detail: string;
}

function list(v: Values, name: string): string[] | undefined {
  const raw = (v as Record<string, unknown>)[name];
  if (!Array.isArray(raw)) return undefined;
  return raw.flatMap((x) => String(x).split(',')).map((x) => x.trim()).filter((x) => x !== '');
}

/** `--expires` as given: an ISO date or time, or `+N` days from now. */
function expiry(v: Values): string {
  const raw = required(v, 'expires');
  const rel = /^\+(\d{1,3})d?$/.exec(raw);
  if (rel !== null) return new Date(Date.now() + Number(rel[1]) * 86_400_000).toISOString();
  return raw;
}

function exceptionState(e: ExceptionJson): string {
  return Date.parse(e.expiresAt) <= Date.now() ? 'expired' : 'active';
}

function exceptionRows(xs: readonly ExceptionJson[]): string {
  return table([['ID', 'NAME', 'ACCOUNT', 'ENGINE', 'OWNER', 'RISKS', 'EXPIRES', 'STATE', 'ROTATED'], ...xs.map((e) => [e.id, e.name, e.account, e.engine ?? '-', `${e.owner.team} <${e.owner.contact}>`, e.risks.map((r) => r.id).join(','), e.expiresAt, exceptionState(e), e.lastRotatedAt ?? 'never'])]);
}

function exceptionText(e: ExceptionJson): string {
  return [
    `exception ${e.id}  ${e.name}  ${exceptionState(e)}`,
    `account       ${e.account} (${e.system})`,
    `owner         ${e.owner.team} <${e.owner.contact}>`,
    `justification ${e.justification}`,
    `controls      ${e.compensatingControls.join('; ')}`,
    `risks         ${e.risks.map((r) => `${r.id} ${r.name}`).join(', ')}`,
    `expires       ${e.expiresAt}`,
    `rotation      ${e.engine === null ? 'none (writ cannot rotate this secret)' : `every ${e.rotateEverySeconds ?? '?'} s through engine ${e.engine}; last ${e.lastRotatedAt ?? 'never'}, next ${e.nextRotationAt ?? '-'}${e.lastRotationError === null ? '' : `; last attempt failed (${e.lastRotationError})`}`}`,
  ].join('\n');
}

const excPath = (id: string): string => `/admin/v1/exceptions/${encodeURIComponent(id)}`;

const exceptionCreate: Command = {
  name: 'exception create',
  summary: 'register a legacy exception: a static secret writ cannot replace, with owner, justification, compensating controls, expiry and the OWASP NHI risks it accepts',
  usage: 'writ exception create --name NAME --account ACCOUNT (--engine PG_ENGINE [--rotate-every SECONDS] | --system TEXT) --owner-team TEAM --owner-contact EMAIL --justification TEXT --control TEXT… --risk NHIn… --expires DATE|+DAYS [--json]',
  options: { ...CLIENT_OPTIONS, name: { type: 'string' }, account: { type: 'string' }, system: { type: 'string' }, engine: { type: 'string' }, 'rotate-every': { type: 'string' }, 'owner-team': { type: 'string' }, 'owner-contact': { type: 'string' }, justification: { type: 'string' }, control: { type: 'string', multiple: true }, risk: { type: 'string', multiple: true }, expires: { type: 'string' } },
  help: {
    '--name NAME': 'a short unique name (lowercase, digits, . _ -)',
    '--account ACCOUNT': 'the account whose static secret this is (a PostgreSQL role with --engine)',
    '--engine PG_ENGINE': 'PostgreSQL engine through which writ rotates the account\'s password',
    '--rotate-every SECONDS': 'rotation interval with --engine (default 30 days)',
    '--system TEXT': 'where the account lives, when writ cannot rotate it (default postgres:<engine>)',
    '--owner-team TEAM': 'the team accountable for the exception',
    '--owner-contact EMAIL': 'a person who answers for it',
    '--justification TEXT': 'why the secret cannot be replaced by a workload identity',
    '--control TEXT': 'a compensating control (repeat)',
    '--risk NHIn': 'an OWASP NHI Top 10 (2025) risk it accepts, NHI1 … NHI10 (repeat or comma-separate)',
    '--expires DATE|+DAYS': 'when the acceptance ends (ISO date, or +90 for 90 days; at most 366 days)',
    ...CLIENT_HELP,
  },
  async run(v, _p, io) {
    const every = seconds(v, 'rotate-every');
    const body = {
      name: required(v, 'name'),
      account: required(v, 'account'),
      ...(typeof v.engine === 'string' ? { engine: v.engine } : {}),
      ...(every === undefined ? {} : { rotateEverySeconds: every }),
      ...(typeof v.system === 'string' ? { system: v.system } : {}),
      owner: { team: required(v, 'owner-team'), contact: required(v, 'owner-contact') },
      justification: required(v, 'justification'),
      compensatingControls: list(v, 'control') ?? [],
      risks: list(v, 'risk') ?? [],
      expiresAt: expiry(v),
    };
    if (body.compensatingControls.length === 0) throw new CliError('--control is required (at least one compensating control)', 'ERR_CLI_USAGE', 2);
    if (body.risks.length === 0) throw new CliError('--risk is required (the OWASP NHI risks the exception accepts, e.g. NHI2,NHI7)', 'ERR_CLI_USAGE', 2);
    const e = (await call(client(v, io), 'POST', '/admin/v1/exceptions', body)).json as ExceptionJson;
    if (v.json === true) io.out(JSON.stringify(e, null, 2));
    else io.out(`exception ${e.id} registered; expires ${e.expiresAt}${e.engine === null ? '' : `; password rotated every ${e.rotateEverySeconds ?? '?'} s, first at ${e.nextRotationAt ?? '?'}`}`);
    return 0;
  },
};

const exceptionList: Command = {
  name: 'exception list',
  summary: 'list legacy exceptions (never a secret)',
  usage: 'writ exception list [--json]',
  options: { ...CLIENT_OPTIONS },
  help: { ...CLIENT_HELP },
  async run(v, _p, io) {
    const r = (await call(client(v, io), 'GET', '/admin/v1/exceptions')).json as { exceptions: ExceptionJson[] };
    if (v.json === true) io.out(JSON.stringify(r.exceptions, null, 2));
    else io.out(r.exceptions.length === 0 ? 'no exceptions' : exceptionRows(r.exceptions));
    return 0;
  },
};

const exceptionShow: Command = {
  name: 'exception show',
  summary: 'one legacy exception: owner, justification, controls, risks, expiry, rotation',
  usage: 'writ exception show EXCEPTION_ID [--json]',
  options: { ...CLIENT_OPTIONS },
  help: { ...CLIENT_HELP },
  positionals: 1,
  async run(v, p, io) {
    const e = (await call(client(v, io), 'GET', excPath(p[0] ?? ''))).json as ExceptionJson;
    io.out(v.json === true ? JSON.stringify(e, null, 2) : exceptionText(e));
    return 0;
  },
};

const exceptionRenew: Command = {
  name: 'exception renew',
  summary: 'extend a legacy exception to a new expiry (optionally re-justified); clears its expiry finding',
  usage: 'writ exception renew EXCEPTION_ID --expires DATE|+DAYS [--justification TEXT] [--control TEXT…] [--json]',
  options: { ...CLIENT_OPTIONS, expires: { type: 'string' }, justification: { type: 'string' }, control: { type: 'string', multiple: true } },
  help: { '--expires DATE|+DAYS': 'the new end of the acceptance (at most 366 days away)', '--justification TEXT': 'a fresh justification', '--control TEXT': 'replace the compensating controls (repeat)', ...CLIENT_HELP },
  positionals: 1,
  async run(v, p, io) {
    const controlsGiven = list(v, 'control');
    const body = { expiresAt: expiry(v), ...(typeof v.justification === 'string' ? { justification: v.justification } : {}), ...(controlsGiven === undefined ? {} : { compensatingControls: controlsGiven }) };
    const e = (await call(client(v, io), 'POST', `${excPath(p[0] ?? '')}/renew`, body)).json as ExceptionJson;
    io.out(v.json === true ? JSON.stringify(e, null, 2) : `exception ${e.id} renewed; expires ${e.expiresAt}`);
    return 0;
  },
};

const exceptionRotate: Command = {
  name: 'exception rotate',
  summary: 'rotate the exception account\'s PostgreSQL password now (fetch the new one with `writ exception secret`)',
  usage: 'writ exception rotate EXCEPTION_ID [--json]',
  options: { ...CLIENT_OPTIONS },
  help: { ...CLIENT_HELP },
  positionals: 1,
  async run(v, p, io) {
    const e = (await call(client(v, io), 'POST', `${excPath(p[0] ?? '')}/rotate`)).json as ExceptionJson;
    io.out(v.json === true ? JSON.stringify(e, null, 2) : `exception ${e.id}: password of ${e.account} rotated at ${e.lastRotatedAt ?? '?'}; next rotation ${e.nextRotationAt ?? '-'}`);
    return 0;
  },
};

const exceptionSecret: Command = {
  name: 'exception secret',
  summary: 'the current password writ set for an exception account, for its owner to install (audited)',
  usage: 'writ exception secret EXCEPTION_ID [--output FILE] [--json]',
  options: { ...CLIENT_OPTIONS, output: { type: 'string', short: 'o' } },
  help: { '-o, --output FILE': 'write the password to FILE (mode 0600, must not exist) instead of printing it', ...CLIENT_HELP },
  positionals: 1,
  async run(v, p, io) {
    if (typeof v.output === 'string' && existsSync(v.output)) throw new CliError(`${v.output} exists; the secret file must be new`, 'ERR_CLI_USAGE', 2);
    const r = (await call(client(v, io), 'POST', `${excPath(p[0] ?? '')}/secret`)).json as { id: string; account: string; lastRotatedAt: string | null; password: string };
    const about = `exception ${r.id}: password of ${r.account}, set ${r.lastRotatedAt ?? '?'}`;
    if (typeof v.output === 'string') {
      writeFileSync(v.output, v.json === true ? `${JSON.stringify(r, null, 2)}\n` : `${r.password}\n`, { mode: 0o600, flag: 'wx' });
      io.err(`${about}; written to ${v.output}`);
    } else if (v.json === true) io.out(JSON.stringify(r, null, 2));
    else {
      io.err(about);
      io.out(r.password);
    }
    return 0;
  },
};

const exceptionDelete: Command = {
  name: 'exception delete',
  summary: 'delete a legacy exception (its rotation stops; the audit log keeps its history)',
  usage: 'writ exception delete EXCEPTION_ID [--json]',
  options: { ...CLIENT_OPTIONS },
  help: { ...CLIENT_HELP },
  positionals: 1,
  async run(v, p, io) {
    const r = (await call(client(v, io), 'DELETE', excPath(p[0] ?? ''))).json as { exception: ExceptionJson };
    io.out(v.json === true ? JSON.stringify(r, null, 2) : `exception ${r.exception.id} (${r.exception.name}) deleted`);
    return 0;
  },
};

const exceptionFindings: Command = {
  name: 'exception findings',
  summary: 'findings: expired legacy exceptions and exceptions whose password rotation fails',
  usage: 'writ exception findings [--json]',
  options: { ...CLIENT_OPTIONS },
  help: { ...CLIENT_HELP },
  async run(v, _p, io) {
    const r = (await call(client(v, io), 'GET', '/admin/v1/exceptions/findings')).json as { findings: FindingJson[] };
    if (v.json === true) io.out(JSON.stringify(r.findings, null, 2));
    else io.out(r.findings.length === 0 ? 'no findings' : table([['SEVERITY', 'TYPE', 'EXCEPTION', 'ACCOUNT', 'OWNER', 'RISKS', 'SINCE'], ...r.findings.map((f) => [f.severity, f.type, `${f.exceptionId} (${f.name})`, f.account, `${f.owner.team} <${f.owner.contact}>`, f.risks.join(','), f.since])]));
    return 0;
  },
};

// ---- engine ---------------------------------------------------------------------------

interface EngineStatusJson {
  engine: string;
  type: string;
  account: string;
  rotatedAt: string | null;
  rotateEverySeconds: number | null;
  nextRotationAt: string | null;
  rotationPending: boolean;
}

const engineList: Command = {
  name: 'engine list',
  summary: 'secret engines and the rotation of their own admin secrets',
  usage: 'writ engine list [--json]',
  options: { ...CLIENT_OPTIONS },
  help: { ...CLIENT_HELP },
  async run(v, _p, io) {
    const r = (await call(client(v, io), 'GET', '/admin/v1/engines')).json as { engines: EngineStatusJson[] };
    if (v.json === true) io.out(JSON.stringify(r.engines, null, 2));
    else io.out(r.engines.length === 0 ? 'no engines' : table([['ENGINE', 'TYPE', 'ADMIN', 'ROTATED', 'EVERY', 'NEXT'], ...r.engines.map((e) => [e.engine, e.type, e.account, e.rotatedAt ?? 'never', e.rotateEverySeconds === null ? 'on demand' : `${e.rotateEverySeconds} s`, e.rotationPending ? 'in progress' : (e.nextRotationAt ?? '-')])]));
    return 0;
  },
};

const engineRotate: Command = {
  name: 'engine rotate',
  summary: 'rotate a secret engine\'s own admin secret now (the new one is sealed in the store, never shown); issuance in flight continues',
  usage: 'writ engine rotate ENGINE [--json]',
  options: { ...CLIENT_OPTIONS },
  help: { ...CLIENT_HELP },
  positionals: 1,
  async run(v, p, io) {
    const r = (await call(client(v, io), 'POST', `/admin/v1/engines/${encodeURIComponent(p[0] ?? '')}/rotate`)).json as { engine: string; type: string; account: string; rotatedAt: string };
    io.out(v.json === true ? JSON.stringify(r, null, 2) : `engine ${r.engine}: admin secret of ${r.account} rotated at ${r.rotatedAt}`);
    return 0;
  },
};

/** Every task, creds, lease, exception and engine command. */
export const CREDENTIAL_COMMANDS: readonly Command[] = [
  taskStart, taskComplete, taskShow, credsCommand('postgres'), credsCommand('redis'), leaseList, leaseRenew, leaseRevoke, leaseRevokeAll,
  exceptionCreate, exceptionList, exceptionShow, exceptionRenew, exceptionRotate, exceptionSecret, exceptionDelete, exceptionFindings,
  engineList, engineRotate,
];
