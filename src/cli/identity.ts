/**
 * `writ entry|token|node|ca`: registration entries, join tokens, nodes and
 * the CA, through the admin API (docs/identity-api.md).
 */
import { writeFileSync } from 'node:fs';
import { call, CliError } from './client.ts';
import { CLIENT_OPTIONS, CLIENT_HELP, client, table } from './command.ts';
import type { Command, Options, Values } from './command.ts';

interface EntryJson {
  id: string;
  spiffeId: string;
  parentId?: string;
  nodeSelectors?: string[];
  selectors: string[];
  x509SvidTtlSeconds?: number;
  jwtSvidTtlSeconds?: number;
  dnsNames: string[];
  environment?: string;
  owner: { team: string; contact: string };
  revision: number;
  createdAt: string;
  updatedAt: string;
}

const ENTRY_OPTIONS: Options = {
  ...CLIENT_OPTIONS,
  'spiffe-id': { type: 'string' },
  'parent-id': { type: 'string' },
  'node-selector': { type: 'string', multiple: true },
  selector: { type: 'string', multiple: true, short: 's' },
  'x509-ttl': { type: 'string' },
  'jwt-ttl': { type: 'string' },
  dns: { type: 'string', multiple: true },
  environment: { type: 'string' },
  'owner-team': { type: 'string' },
  'owner-contact': { type: 'string' },
};

const ENTRY_HELP = {
  '--spiffe-id ID': 'the workload\'s SPIFFE ID, spiffe://<trust domain>/<path>',
  '--parent-id ID': 'the node that serves it, spiffe://<td>/writ/node/<node id> (or use --node-selector)',
  '--node-selector S': 'parent as node selectors (repeat): every node holding all of them serves it, e.g. oidc:repo:org/app',
  '-s, --selector S': 'workload selector (repeat; all must match): unix:uid:1000, unix:path:/usr/bin/app, k8s:ns:payments …',
  '--x509-ttl SECONDS': 'X.509-SVID lifetime (default: the server\'s, 900)',
  '--jwt-ttl SECONDS': 'JWT-SVID lifetime (default: the server\'s, 300)',
  '--dns NAME': 'DNS SAN of the X.509-SVID (repeat)',
  '--environment ENV': 'environment label (prod, staging …)',
  '--owner-team TEAM': 'owning team (required on create)',
  '--owner-contact WHO': 'a human contact: e-mail, chat handle or URL (required on create)',
  ...CLIENT_HELP,
};

function list(v: Values, name: string): string[] | undefined {
  const raw = (v as Record<string, unknown>)[name];
  return Array.isArray(raw) ? raw.map(String) : undefined;
}

function seconds(v: Values, name: string): number | undefined {
  const raw = v[name];
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n <= 0) throw new CliError(`--${name} must be a positive whole number of seconds`, 'ERR_CLI_USAGE', 2);
  return n;
}

/** The entry fields the flags set (only those given). */
function entryBody(v: Values): Record<string, unknown> {
  const body: Record<string, unknown> = {};
  if (v['spiffe-id'] !== undefined) body.spiffeId = v['spiffe-id'];
  if (v['parent-id'] !== undefined) body.parentId = v['parent-id'];
  const nodeSelectors = list(v, 'node-selector');
  if (nodeSelectors !== undefined) body.nodeSelectors = nodeSelectors;
  const selectors = list(v, 'selector');
  if (selectors !== undefined) body.selectors = selectors;
  const x509 = seconds(v, 'x509-ttl');
  if (x509 !== undefined) body.x509SvidTtlSeconds = x509;
  const jwt = seconds(v, 'jwt-ttl');
  if (jwt !== undefined) body.jwtSvidTtlSeconds = jwt;
  const dns = list(v, 'dns');
  if (dns !== undefined) body.dnsNames = dns;
  if (v.environment !== undefined) body.environment = v.environment;
  if (v['owner-team'] !== undefined || v['owner-contact'] !== undefined) body.owner = { team: v['owner-team'] ?? '', contact: v['owner-contact'] ?? '' };
  return body;
}

function entryRows(e: EntryJson): string[][] {
  return [
    ['id', e.id],
    ['spiffe id', e.spiffeId],
    ['parent', e.parentId ?? `node selectors ${(e.nodeSelectors ?? []).join(' ')}`],
    ['selectors', e.selectors.join(' ')],
    ['x509 ttl', e.x509SvidTtlSeconds === undefined ? 'server default' : `${e.x509SvidTtlSeconds}s`],
    ['jwt ttl', e.jwtSvidTtlSeconds === undefined ? 'server default' : `${e.jwtSvidTtlSeconds}s`],
    ['dns names', e.dnsNames.join(' ')],
    ['environment', e.environment ?? ''],
    ['owner', `${e.owner.team} (${e.owner.contact})`],
    ['revision', String(e.revision)],
    ['updated', e.updatedAt],
  ];
}

const entryCreate: Command = {
  name: 'entry create',
  summary: 'register a workload identity (owner required)',
  usage: 'writ entry create --spiffe-id ID (--parent-id NODE_ID | --node-selector S…) -s SELECTOR… --owner-team TEAM --owner-contact WHO [--x509-ttl S] [--jwt-ttl S] [--dns NAME…] [--environment ENV]',
  options: ENTRY_OPTIONS,
  help: ENTRY_HELP,
  async run(v, _p, io) {
    const e = (await call(client(v, io), 'POST', '/admin/v1/entries', entryBody(v))).json as EntryJson;
    if (v.json === true) io.out(JSON.stringify(e, null, 2));
    else io.out(table(entryRows(e)));
    return 0;
  },
};

const entryList: Command = {
  name: 'entry list',
  summary: 'list registration entries',
  usage: 'writ entry list [--json]',
  options: CLIENT_OPTIONS,
  help: CLIENT_HELP,
  async run(v, _p, io) {
    const { entries } = (await call(client(v, io), 'GET', '/admin/v1/entries')).json as { entries: EntryJson[] };
    if (v.json === true) io.out(JSON.stringify(entries, null, 2));
    else io.out(table([['ID', 'SPIFFE ID', 'PARENT', 'SELECTORS', 'OWNER'], ...entries.map((e) => [e.id, e.spiffeId, e.parentId ?? (e.nodeSelectors ?? []).join(','), e.selectors.join(','), e.owner.team])]));
    return 0;
  },
};

const entryShow: Command = {
  name: 'entry show',
  summary: 'show one registration entry',
  usage: 'writ entry show ID [--json]',
  options: CLIENT_OPTIONS,
  help: CLIENT_HELP,
  positionals: 1,
  async run(v, p, io) {
    const e = (await call(client(v, io), 'GET', `/admin/v1/entries/${encodeURIComponent(p[0] ?? '')}`)).json as EntryJson;
    if (v.json === true) io.out(JSON.stringify(e, null, 2));
    else io.out(table(entryRows(e)));
    return 0;
  },
};

const entryUpdate: Command = {
  name: 'entry update',
  summary: 'change a registration entry (only the fields given change)',
  usage: 'writ entry update ID [--spiffe-id ID] [--parent-id NODE_ID | --node-selector S…] [-s SELECTOR…] [--x509-ttl S] [--jwt-ttl S] [--dns NAME…] [--environment ENV] [--owner-team TEAM --owner-contact WHO] [--revision N]',
  options: { ...ENTRY_OPTIONS, revision: { type: 'string' } },
  help: { ...ENTRY_HELP, '--revision N': 'refuse the change if the entry is no longer at revision N' },
  positionals: 1,
  async run(v, p, io) {
    const body = entryBody(v);
    const rev = v.revision === undefined ? undefined : Number(v.revision);
    if (rev !== undefined && !(Number.isSafeInteger(rev) && rev > 0)) throw new CliError('--revision must be a positive integer', 'ERR_CLI_USAGE', 2);
    if (rev !== undefined) body.revision = rev;
    if (Object.keys(body).length === 0) throw new CliError('nothing to change: give at least one field flag', 'ERR_CLI_USAGE', 2);
    const e = (await call(client(v, io), 'PATCH', `/admin/v1/entries/${encodeURIComponent(p[0] ?? '')}`, body)).json as EntryJson;
    if (v.json === true) io.out(JSON.stringify(e, null, 2));
    else io.out(table(entryRows(e)));
    return 0;
  },
};

const entryDelete: Command = {
  name: 'entry delete',
  summary: 'delete a registration entry',
  usage: 'writ entry delete ID',
  options: CLIENT_OPTIONS,
  help: CLIENT_HELP,
  positionals: 1,
  async run(v, p, io) {
    await call(client(v, io), 'DELETE', `/admin/v1/entries/${encodeURIComponent(p[0] ?? '')}`);
    io.err(`deleted entry ${p[0] ?? ''}`);
    return 0;
  },
};

const tokenCreate: Command = {
  name: 'token create',
  summary: 'create a single-use join token for a new node (shown once)',
  usage: 'writ token create [--ttl SECONDS] [--node-selector S…] [--output FILE] [--json]',
  options: { ...CLIENT_OPTIONS, ttl: { type: 'string' }, 'node-selector': { type: 'string', multiple: true }, output: { type: 'string', short: 'o' } },
  help: { '--ttl SECONDS': 'lifetime (default: the server\'s, 600)', '--node-selector S': 'extra node selector the attested node gets (repeat)', '-o, --output FILE': 'write the token to FILE (mode 0600) instead of printing it', ...CLIENT_HELP },
  async run(v, _p, io) {
    const ttl = seconds(v, 'ttl');
    const selectors = list(v, 'node-selector');
    const body = { ...(ttl === undefined ? {} : { ttlSeconds: ttl }), ...(selectors === undefined ? {} : { selectors }) };
    const r = (await call(client(v, io), 'POST', '/admin/v1/join-tokens', body)).json as { id: string; token: string; expiresAt: string };
    if (v.output !== undefined) {
      writeFileSync(v.output as string, `${r.token}\n`, { mode: 0o600, flag: 'wx' });
      io.err(`join token ${r.id} written to ${v.output as string}; single use, expires ${r.expiresAt}`);
    } else if (v.json === true) io.out(JSON.stringify(r, null, 2));
    else {
      io.err(`join token ${r.id}: single use, expires ${r.expiresAt}; it is not shown again`);
      io.out(r.token);
    }
    return 0;
  },
};

interface NodeJson { id: string; spiffeId: string; attestationType: string; selectors: string[]; attestedAt: string; svidNotAfter: string; lastSeenAt: string | null; evictedAt: string | null }

const nodeList: Command = {
  name: 'node list',
  summary: 'list attested nodes',
  usage: 'writ node list [--json]',
  options: CLIENT_OPTIONS,
  help: CLIENT_HELP,
  async run(v, _p, io) {
    const { nodes } = (await call(client(v, io), 'GET', '/admin/v1/nodes')).json as { nodes: NodeJson[] };
    if (v.json === true) io.out(JSON.stringify(nodes, null, 2));
    else io.out(table([['ID', 'SPIFFE ID', 'ATTESTATION', 'ATTESTED', 'SVID EXPIRES', 'STATE'], ...nodes.map((n) => [n.id, n.spiffeId, n.attestationType, n.attestedAt, n.svidNotAfter, n.evictedAt === null ? 'active' : `evicted ${n.evictedAt}`])]));
    return 0;
  },
};

const nodeEvict: Command = {
  name: 'node evict',
  summary: 'evict a node: it gets nothing more from the server',
  usage: 'writ node evict ID',
  options: CLIENT_OPTIONS,
  help: CLIENT_HELP,
  positionals: 1,
  async run(v, p, io) {
    const n = (await call(client(v, io), 'POST', `/admin/v1/nodes/${encodeURIComponent(p[0] ?? '')}/evict`, {})).json as NodeJson;
    if (v.json === true) io.out(JSON.stringify(n, null, 2));
    else io.err(`evicted node ${n.id} (${n.spiffeId})`);
    return 0;
  },
};

interface CaJson { trustDomain: string; bundleSequence: number; keys: { id: string; kind: string; state: string; alg: string; notAfter: string; fingerprint: string }[] }

function printCa(ca: CaJson, json: boolean, out: (s: string) => void): void {
  if (json) out(JSON.stringify(ca, null, 2));
  else {
    out(`trust domain ${ca.trustDomain}, bundle sequence ${ca.bundleSequence}`);
    out(table([['KIND', 'STATE', 'ALG', 'ID', 'NOT AFTER', 'FINGERPRINT'], ...ca.keys.map((k) => [k.kind, k.state, k.alg, k.id, k.notAfter, k.fingerprint.slice(0, 16)])]));
  }
}

const caShow: Command = {
  name: 'ca show',
  summary: 'show the CA keys of the trust domain',
  usage: 'writ ca show [--json]',
  options: CLIENT_OPTIONS,
  help: CLIENT_HELP,
  async run(v, _p, io) {
    printCa((await call(client(v, io), 'GET', '/admin/v1/ca')).json as CaJson, v.json === true, io.out);
    return 0;
  },
};

const caRotate: Command = {
  name: 'ca rotate',
  summary: 'rotate the X.509 signing CA and/or the JWT-SVID key now (prepare, prove, activate)',
  usage: 'writ ca rotate [--kind x509|jwt|all] [--json]',
  options: { ...CLIENT_OPTIONS, kind: { type: 'string' } },
  help: { '--kind KIND': 'x509, jwt or all (default all)', ...CLIENT_HELP },
  async run(v, _p, io) {
    const kind = (v.kind as string | undefined) ?? 'all';
    if (!['x509', 'jwt', 'all'].includes(kind)) throw new CliError(`--kind must be x509, jwt or all, not \`${kind}\``, 'ERR_CLI_USAGE', 2);
    printCa((await call(client(v, io), 'POST', '/admin/v1/ca/rotate', { kind })).json as CaJson, v.json === true, io.out);
    return 0;
  },
};

/** Every identity admin command. */
export const IDENTITY_COMMANDS: readonly Command[] = [entryCreate, entryList, entryShow, entryUpdate, entryDelete, tokenCreate, nodeList, nodeEvict, caShow, caRotate];
