/**
 * `writ signal …` sends a typed signal to the server (`POST /admin/v1/signals`);
 * `writ signal list` and `writ signal context` read them back;
 * `writ revocation publish` puts a revocation on the bus and
 * `writ revocation watch` follows the revocation stream as a PEP would;
 * `writ drill revoke` runs a revocation drill and prints its report.
 */
import { call, CliError } from './client.ts';
import { CLIENT_OPTIONS, CLIENT_HELP, client, table } from './command.ts';
import type { Command, Io, Options, Values } from './command.ts';

const REASON: Options = { reason: { type: 'string' }, 'occurred-at': { type: 'string' } };
const REASON_HELP = { '--reason R': 'kebab-case reason (e.g. scan-failed)', '--occurred-at TIME': 'when it happened (ISO-8601; default now)' };

interface SignalJson {
  id: string;
  type: string;
  subject: string;
  receivedAt: string;
  source: string;
  reason?: string;
  signal: Record<string, unknown>;
}

function str(v: Values, k: string): string | undefined {
  const x = v[k];
  return typeof x === 'string' ? x : undefined;
}

function common(v: Values): Record<string, unknown> {
  return { ...(str(v, 'reason') === undefined ? {} : { reason: str(v, 'reason') }), ...(str(v, 'occurred-at') === undefined ? {} : { occurredAt: str(v, 'occurred-at') }) };
}

async function send(v: Values, io: Io, body: Record<string, unknown>): Promise<number> {
  const r = (await call(client(v, io), 'POST', '/admin/v1/signals', { ...body, ...common(v) })).json as { signal: SignalJson; cursor: number; reevaluation?: { revoked: number; kept: number; items: { type: string; id: string; outcome: string; cutAt?: string }[] } };
  if (v.json === true) io.out(JSON.stringify(r, null, 2));
  else {
    io.out(`${r.signal.type} ${r.signal.subject} accepted as ${r.signal.id} (bus cursor ${r.cursor})`);
    const rx = r.reevaluation;
    if (rx !== undefined) {
      io.out(`re-evaluated: ${rx.revoked} revoked, ${rx.kept} kept`);
      for (const i of rx.items) if (i.outcome === 'revoked' || i.outcome === 'cut-failed') io.out(`  ${i.outcome}\t${i.type}\t${i.id}\t${i.cutAt ?? '-'}`);
    }
  }
  return 0;
}

function signalCommand(name: string, summary: string, usage: string, options: Options, help: Record<string, string>, body: (v: Values, subject: string) => Record<string, unknown>, positionals = 1): Command {
  return {
    name: `signal ${name}`,
    summary,
    usage,
    options: { ...CLIENT_OPTIONS, ...REASON, ...options },
    help: { ...help, ...REASON_HELP, ...CLIENT_HELP },
    positionals,
    run: (v, p, io) => send(v, io, body(v, p[0] ?? '')),
  };
}

const posture = signalCommand(
  'posture',
  'report a posture change of a workload or node (score 0-100, failing checks)',
  'writ signal posture SPIFFE_ID --score N [--node] [--failing CHECK]… [--reason R]',
  { score: { type: 'string' }, node: { type: 'boolean' }, failing: { type: 'string', multiple: true } },
  { '--score N': 'posture score, 0 (worst) to 100', '--node': 'the subject is a node, not a workload', '--failing CHECK': 'a failing check, kebab-case (repeat)' },
  (v, subject) => {
    const raw = str(v, 'score');
    if (raw === undefined || !/^\d{1,3}$/.test(raw)) throw new CliError('--score must be a whole number from 0 to 100', 'ERR_CLI_USAGE', 2);
    const failing = (v as Record<string, unknown>).failing;
    return { type: 'posture-changed', subject, subjectKind: v.node === true ? 'node' : 'workload', score: Number(raw), failingChecks: Array.isArray(failing) ? failing.map(String) : [] };
  },
);

const risk = signalCommand('risk', 'report a risk level change (none, low, medium, high, critical)', 'writ signal risk SPIFFE_ID --level LEVEL', { level: { type: 'string' } }, { '--level LEVEL': 'none, low, medium, high or critical' }, (v, subject) => ({ type: 'risk-changed', subject, level: str(v, 'level') }));

const compromised = signalCommand(
  'compromised',
  'report a compromised credential of a workload (optionally one lease or token)',
  'writ signal compromised SPIFFE_ID [--lease ID] [--token JTI]',
  { lease: { type: 'string' }, token: { type: 'string' } },
  { '--lease ID': 'the compromised lease', '--token JTI': 'the compromised token id' },
  (v, subject) => ({ type: 'credential-compromised', subject, ...(str(v, 'lease') === undefined ? {} : { leaseId: str(v, 'lease') }), ...(str(v, 'token') === undefined ? {} : { tokenId: str(v, 'token') }) }),
);

const offboarded = signalCommand('offboarded', 'report that an owner left (their workloads lose their sponsor)', 'writ signal offboarded OWNER', {}, {}, (_v, subject) => ({ type: 'owner-offboarded', subject }));

const taskCompleted = signalCommand('task-completed', 'report that a task ended (its task-bound credentials must go)', 'writ signal task-completed TASK_ID [--workload SPIFFE_ID]', { workload: { type: 'string' } }, { '--workload ID': 'the workload that ran it' }, (v, subject) => ({ type: 'task-completed', subject, ...(str(v, 'workload') === undefined ? {} : { workload: str(v, 'workload') }) }));

const entryDeleted = signalCommand('entry-deleted', 'report that a registration entry was deleted', 'writ signal entry-deleted SPIFFE_ID --entry ID', { entry: { type: 'string' } }, { '--entry ID': 'the deleted entry id' }, (v, subject) => ({ type: 'entry-deleted', subject, entryId: str(v, 'entry') }));

const nodeEvicted = signalCommand('node-evicted', 'report that a node was evicted', 'writ signal node-evicted NODE_SPIFFE_ID [--node-id ID]', { 'node-id': { type: 'string' } }, { '--node-id ID': 'the node id' }, (v, subject) => ({ type: 'node-evicted', subject, ...(str(v, 'node-id') === undefined ? {} : { nodeId: str(v, 'node-id') }) }));

const policyChanged = signalCommand('policy-changed', 'report a policy change (decision caches must drop)', 'writ signal policy-changed --version V', { version: { type: 'string' } }, { '--version V': 'the new policy version' }, (v) => ({ type: 'policy-changed', policyVersion: str(v, 'version') }), 0);

const signalList: Command = {
  name: 'signal list',
  summary: 'signals received, newest first',
  usage: 'writ signal list [--subject S] [--type T] [--limit N] [--json]',
  options: { ...CLIENT_OPTIONS, subject: { type: 'string' }, type: { type: 'string' }, limit: { type: 'string' } },
  help: { '--subject S': 'only this subject', '--type T': 'only this signal type', '--limit N': 'at most N (default 100)', ...CLIENT_HELP },
  async run(v, _p, io) {
    const q = new URLSearchParams();
    for (const k of ['subject', 'type', 'limit']) if (str(v, k) !== undefined) q.set(k, str(v, k) ?? '');
    const { signals } = (await call(client(v, io), 'GET', `/admin/v1/signals${q.size === 0 ? '' : `?${q}`}`)).json as { signals: SignalJson[] };
    if (v.json === true) io.out(JSON.stringify(signals, null, 2));
    else io.out(table([['ID', 'TYPE', 'SUBJECT', 'RECEIVED', 'SOURCE', 'REASON'], ...signals.map((s) => [s.id, s.type, s.subject, s.receivedAt, s.source, s.reason ?? ''])]));
    return 0;
  },
};

const signalContext: Command = {
  name: 'signal context',
  summary: 'the latest posture and risk of a subject, as the PDP sees them',
  usage: 'writ signal context SPIFFE_ID [--json]',
  options: CLIENT_OPTIONS,
  help: CLIENT_HELP,
  positionals: 1,
  async run(v, p, io) {
    const r = (await call(client(v, io), 'GET', `/admin/v1/signals/context?subject=${encodeURIComponent(p[0] ?? '')}`)).json as { subject: string; posture: { score: number; failingChecks: string[]; at: string } | null; risk: { level: string; at: string } | null };
    if (v.json === true) io.out(JSON.stringify(r, null, 2));
    else
      io.out(table([
        ['subject', r.subject],
        ['posture', r.posture === null ? '(no signal)' : `${r.posture.score}${r.posture.failingChecks.length === 0 ? '' : ` failing: ${r.posture.failingChecks.join(', ')}`} at ${r.posture.at}`],
        ['risk', r.risk === null ? '(no signal)' : `${r.risk.level} at ${r.risk.at}`],
      ]));
    return 0;
  },
};

const revocationPublish: Command = {
  name: 'revocation publish',
  summary: 'publish a revocation on the bus (every replica and enforcement point hears it)',
  usage: 'writ revocation publish --kind subject-revoked|lease-revoked|token-revoked|policy-changed [--subject ID] [--lease ID] [--token JTI] [--reason R]',
  options: { ...CLIENT_OPTIONS, kind: { type: 'string' }, subject: { type: 'string' }, lease: { type: 'string' }, token: { type: 'string' }, reason: { type: 'string' } },
  help: { '--kind K': 'what is revoked', '--subject ID': 'SPIFFE ID (subject-revoked)', '--lease ID': 'lease id (lease-revoked)', '--token JTI': 'token id (token-revoked)', '--reason R': 'kebab-case reason (default admin-revoked)', ...CLIENT_HELP },
  async run(v, _p, io) {
    if (str(v, 'kind') === undefined) throw new CliError('--kind is required', 'ERR_CLI_USAGE', 2);
    const body = { kind: str(v, 'kind'), ...(str(v, 'subject') === undefined ? {} : { subject: str(v, 'subject') }), ...(str(v, 'lease') === undefined ? {} : { leaseId: str(v, 'lease') }), ...(str(v, 'token') === undefined ? {} : { tokenId: str(v, 'token') }), ...(str(v, 'reason') === undefined ? {} : { reason: str(v, 'reason') }) };
    const e = (await call(client(v, io), 'POST', '/admin/v1/revocations', body)).json as { id: string; cursor: number; kind: string };
    if (v.json === true) io.out(JSON.stringify(e, null, 2));
    else io.out(`${e.kind} published as ${e.id} (cursor ${e.cursor})`);
    return 0;
  },
};

const revocationWatch: Command = {
  name: 'revocation watch',
  summary: 'follow the revocation stream (as an enforcement point does) and print each event',
  usage: 'writ revocation watch [--after CURSOR] [--count N] [--json]',
  options: { ...CLIENT_OPTIONS, after: { type: 'string' }, count: { type: 'string' } },
  help: { '--after CURSOR': 'replay events after this cursor first (default: from now)', '--count N': 'stop after N events', ...CLIENT_HELP },
  async run(v, _p, io) {
    const opts = client(v, io);
    const after = str(v, 'after');
    if (after !== undefined && !/^\d{1,16}$/.test(after)) throw new CliError('--after must be a cursor (a whole number)', 'ERR_CLI_USAGE', 2);
    const count = str(v, 'count') === undefined ? Infinity : Number(str(v, 'count'));
    if (!(count > 0)) throw new CliError('--count must be a positive whole number', 'ERR_CLI_USAGE', 2);
    let res: Response;
    try {
      res = await fetch(`${opts.server}/v1/revocations/stream${after === undefined ? '' : `?after=${after}`}`, { headers: { accept: 'text/event-stream', ...(opts.token === undefined ? {} : { authorization: `Bearer ${opts.token}` }) } });
    } catch (e) {
      throw new CliError(`cannot reach writ at ${opts.server} (${(e as Error).message})`, 'ERR_CLI_UNREACHABLE');
    }
    if (res.status !== 200 || res.body === null) {
      const j = (await res.json().catch(() => ({}))) as { code?: string; message?: string };
      throw new CliError(j.message ?? `server answered ${res.status}`, j.code ?? `HTTP_${res.status}`);
    }
    let seen = 0;
    let buf = '';
    const dec = new TextDecoder();
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      buf += dec.decode(chunk, { stream: true });
      let i = buf.indexOf('\n\n');
      while (i !== -1) {
        const frame = buf.slice(0, i);
        buf = buf.slice(i + 2);
        i = buf.indexOf('\n\n');
        const data = /^data: (.*)$/m.exec(frame)?.[1];
        if (!frame.includes('event: revocation') || data === undefined) continue;
        const e = JSON.parse(data) as { cursor: number; kind: string; subject?: string; leaseId?: string; tokenId?: string; reason: string; at: string };
        io.out(v.json === true ? data : `${e.cursor}\t${e.at}\t${e.kind}\t${e.subject ?? e.leaseId ?? e.tokenId ?? '-'}\t${e.reason}`);
        seen += 1;
        if (seen >= count) {
          await res.body.cancel().catch(() => undefined);
          return 0;
        }
      }
    }
    return 0;
  },
};

interface DrillReportJson {
  drillId: string;
  subject: string;
  subjectKind: string;
  canary: boolean;
  revokedAt: string;
  events: { id: string; kind: string; cursor: number }[];
  revoked: { id: string; kind: string; revokedAt: string | null }[];
  peps: { id: string; name: string; status: string; timeToDenyMs?: number }[];
  failures: number;
  passed: boolean;
  maxTimeToDenyMs?: number;
}

const drillRevoke: Command = {
  name: 'drill revoke',
  summary: 'revocation drill: revoke a SPIFFE ID, task or token (or, with --canary, a credential minted for the drill) and measure until every registered enforcement point denies',
  usage: 'writ drill revoke --subject SPIFFE_ID|TASK_ID|TOKEN_ID [--canary] [--timeout-ms N] [--json]',
  options: { ...CLIENT_OPTIONS, subject: { type: 'string' }, canary: { type: 'boolean' }, 'timeout-ms': { type: 'string' } },
  help: {
    '--subject S': 'what to revoke: a SPIFFE ID (every live credential and its SVIDs), a task id (its credentials) or a token id (jti)',
    '--canary': 'do not touch the subject: mint a canary credential for it and revoke that',
    '--timeout-ms N': 'how long to wait for every enforcement point (default 10000)',
    ...CLIENT_HELP,
  },
  async run(v, _p, io) {
    const subject = str(v, 'subject');
    if (subject === undefined) throw new CliError('--subject is required', 'ERR_CLI_USAGE', 2);
    const t = str(v, 'timeout-ms');
    if (t !== undefined && !/^\d{3,6}$/.test(t)) throw new CliError('--timeout-ms must be a whole number of milliseconds (100 to 120000)', 'ERR_CLI_USAGE', 2);
    const r = (await call(client(v, io), 'POST', '/admin/v1/drills/revoke', { subject, canary: v.canary === true, ...(t === undefined ? {} : { timeoutMs: Number(t) }) })).json as DrillReportJson;
    if (v.json === true) io.out(JSON.stringify(r, null, 2));
    else {
      io.out(`drill ${r.drillId}: ${r.canary ? 'canary for' : 'revoked'} ${r.subjectKind} ${r.subject} at ${r.revokedAt}`);
      io.out(`events: ${r.events.map((e) => `${e.kind} (cursor ${e.cursor})`).join(', ')}; credentials cut: ${r.revoked.length}`);
      io.out(table([['ENFORCEMENT POINT', 'STATUS', 'TIME TO DENY'], ...r.peps.map((p) => [p.id, p.status, p.timeToDenyMs === undefined ? '-' : `${p.timeToDenyMs} ms`])]));
      io.out(r.passed ? `passed: ${r.peps.length} enforcement point(s) deny, slowest ${r.maxTimeToDenyMs ?? 0} ms` : r.peps.length === 0 ? 'FAILED: no enforcement point is registered' : `FAILED: ${r.failures} of ${r.peps.length} enforcement point(s) did not deny in time`);
    }
    return r.passed ? 0 : 1;
  },
};

/** The signal, revocation and drill commands. */
export const SIGNAL_COMMANDS: readonly Command[] = [posture, risk, compromised, offboarded, taskCompleted, entryDeleted, nodeEvicted, policyChanged, signalList, signalContext, revocationPublish, revocationWatch, drillRevoke];
