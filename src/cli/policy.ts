/**
 * `writ policy …`: policy tooling. `validate` and `test` run locally on a
 * folder (no server); `explain`, `show` and `reload` ask the server.
 */
import { resolve } from 'node:path';
import { systemClock } from '../kernel/index.ts';
import {
  Decider,
  PolicyEngine,
  analyzeAccess,
  clockContextSource,
  compilePolicySet,
  readPolicyCases,
  readPolicyFolder,
  recordingAuditSink,
  replayDecisions,
  resolveEntityType,
  runPolicyCases,
} from '../policy/index.ts';
import type { AnalysisReport, LoadProblem, RecordedDecision } from '../policy/index.ts';
import { call, CliError } from './client.ts';
import { CLIENT_OPTIONS, CLIENT_HELP, client, table } from './command.ts';
import type { Command, Io } from './command.ts';

function problemLine(p: LoadProblem): string {
  return `${p.file}:${p.line}:${p.column}: ${p.message}`;
}

/** Compile a folder; print its problems and return undefined when it does not compile. */
async function compileFolder(dir: string, io: Io, json: boolean): Promise<ReturnType<typeof compilePolicySet>> {
  const r = compilePolicySet(await readPolicyFolder(dir));
  if (!r.ok && !json) {
    for (const p of r.problems) io.out(problemLine(p));
    io.err(`${dir}: ${r.problems.length} problem(s)`);
  }
  return r;
}

const validate: Command = {
  name: 'policy validate',
  summary: 'parse and validate a policy folder against its schema (local, no server)',
  usage: 'writ policy validate DIR [--json]',
  options: { json: { type: 'boolean' } },
  help: { '--json': 'machine-readable output' },
  positionals: 1,
  async run(v, p, io) {
    const dir = p[0] ?? '';
    const r = await compileFolder(dir, io, v.json === true);
    if (v.json === true) {
      io.out(JSON.stringify(r.ok ? { ok: true, version: r.set.version, policies: r.set.policies.length, problems: [] } : { ok: false, problems: r.problems.map(problemLine) }, null, 2));
    } else if (r.ok) {
      io.out(`${dir}: ${r.set.policies.length} policies, version ${r.set.version}`);
    }
    return r.ok ? 0 : 1;
  },
};

const testCmd: Command = {
  name: 'policy test',
  summary: 'run the policy test cases (`*.case.json`) of a folder against its policies (local, no server)',
  usage: 'writ policy test DIR [--cases DIR] [--json]',
  options: { cases: { type: 'string' }, json: { type: 'boolean' } },
  help: { '--cases DIR': 'where the `*.case.json` files are (default: DIR itself, sub-folders included)', '--json': 'machine-readable output' },
  positionals: 1,
  async run(v, p, io) {
    const dir = p[0] ?? '';
    const compiled = await compileFolder(dir, io, v.json === true);
    if (!compiled.ok) {
      if (v.json === true) io.out(JSON.stringify({ ok: false, problems: compiled.problems.map(problemLine), cases: [] }, null, 2));
      return 1;
    }
    const cases = await readPolicyCases(resolve((v.cases as string | undefined) ?? dir));
    if (cases.length === 0) throw new CliError(`no \`*.case.json\` files under ${(v.cases as string | undefined) ?? dir}`, 'ERR_CLI_NO_CASES');
    const engine = new PolicyEngine({ clock: systemClock });
    await engine.load(await readPolicyFolder(dir));
    const results = await runPolicyCases(engine, cases, { clock: systemClock });
    const failed = results.filter((r) => !r.pass);
    if (v.json === true) {
      io.out(JSON.stringify({ ok: failed.length === 0, version: compiled.set.version, cases: results.map((r) => ({ name: r.name, pass: r.pass, decision: r.got.decision, reasons: r.got.reasons, ...(r.mismatch === undefined ? {} : { mismatch: r.mismatch }) })) }, null, 2));
    } else {
      for (const r of results) io.out(r.pass ? `ok    ${r.name}` : `FAIL  ${r.name}: ${r.mismatch ?? ''}`);
      io.out(`${results.length - failed.length} passed, ${failed.length} failed (version ${compiled.set.version})`);
    }
    return failed.length === 0 ? 0 : 1;
  },
};

// `TYPE:ID` where TYPE may be namespaced (`Writ::Workload`) and ID may hold colons (`spiffe://…`).
const ENTITY = /^((?:[A-Za-z_][A-Za-z0-9_]*::)*[A-Za-z_][A-Za-z0-9_]*):(.+)$/;

function entityArg(flag: string, value: unknown, props: unknown): { type: string; id: string; properties?: Record<string, unknown> } {
  if (typeof value !== 'string') throw new CliError(`--${flag} is required`, 'ERR_CLI_USAGE', 2);
  const m = ENTITY.exec(value);
  if (m === null || m[1] === undefined || m[2] === undefined) throw new CliError(`--${flag} must look like TYPE:ID, not \`${value}\``, 'ERR_CLI_USAGE', 2);
  const properties = jsonObjectArg(`${flag}-properties`, props);
  return properties === undefined ? { type: m[1], id: m[2] } : { type: m[1], id: m[2], properties };
}

function jsonObjectArg(flag: string, value: unknown): Record<string, unknown> | undefined {
  if (value === undefined) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(String(value));
  } catch {
    throw new CliError(`--${flag} must be a JSON object`, 'ERR_CLI_USAGE', 2);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new CliError(`--${flag} must be a JSON object`, 'ERR_CLI_USAGE', 2);
  return parsed as Record<string, unknown>;
}

const explain: Command = {
  name: 'policy explain',
  summary: 'ask the server for one decision and explain it: decision, reasons, determining policies, version',
  usage: 'writ policy explain --subject TYPE:ID --action NAME --resource TYPE:ID [--context JSON] [--server URL] [--json]',
  options: {
    ...CLIENT_OPTIONS,
    subject: { type: 'string' },
    action: { type: 'string' },
    resource: { type: 'string' },
    context: { type: 'string' },
    'subject-properties': { type: 'string' },
    'resource-properties': { type: 'string' },
    'action-properties': { type: 'string' },
  },
  help: {
    '--subject TYPE:ID': 'the principal, in AuthZEN terms (`user:alice`, `workload:spiffe://td/api`)',
    '--action NAME': 'the action (`read`, `http:GET`, `tools/call`)',
    '--resource TYPE:ID': 'the resource (`record:record-1`)',
    '--context JSON': 'request context, a JSON object',
    '--subject-properties JSON': 'attributes the caller supplies for the subject',
    '--resource-properties JSON': 'attributes the caller supplies for the resource',
    '--action-properties JSON': 'action properties (arrive as `context.action`)',
    ...CLIENT_HELP,
  },
  async run(v, _p, io) {
    if (typeof v.action !== 'string' || v.action === '') throw new CliError('--action is required', 'ERR_CLI_USAGE', 2);
    const subject = entityArg('subject', v.subject, v['subject-properties']);
    const resource = entityArg('resource', v.resource, v['resource-properties']);
    const actionProps = jsonObjectArg('action-properties', v['action-properties']);
    const context = jsonObjectArg('context', v.context);
    const body = {
      subject,
      action: actionProps === undefined ? { name: v.action } : { name: v.action, properties: actionProps },
      resource,
      ...(context === undefined ? {} : { context }),
    };
    const r = await call(client(v, io), 'POST', '/admin/v1/policy/explain', body);
    const d = r.json as { decision: string; reasons: string[]; determiningPolicies: string[]; policyVersion: string | null; decisionId: string; diagnostics: string[] };
    if (v.json === true) {
      io.out(JSON.stringify(d, null, 2));
      return 0;
    }
    const rows = [
      ['decision', d.decision],
      ['reasons', d.reasons.join(', ')],
      ['policies', d.determiningPolicies.length === 0 ? '-' : d.determiningPolicies.join(', ')],
      ['version', d.policyVersion ?? '(no policy set)'],
      ['decision id', d.decisionId],
      ...d.diagnostics.map((x) => ['diagnostic', x]),
    ];
    io.out(table(rows));
    return 0;
  },
};

interface PolicyStatus {
  dir: string | null;
  activeVersion: string | null;
  policyCount: number;
  policies: { id: string; effect: string; file: string; line: number; reason?: string }[];
  lastLoad: { ok: boolean; at: string; problems: string[] } | null;
}

const show: Command = {
  name: 'policy show',
  summary: 'show the policy set the server serves: version, policies, last load and its problems',
  usage: 'writ policy show [--server URL] [--json]',
  options: CLIENT_OPTIONS,
  help: CLIENT_HELP,
  async run(v, _p, io) {
    const s = (await call(client(v, io), 'GET', '/admin/v1/policy')).json as PolicyStatus;
    if (v.json === true) {
      io.out(JSON.stringify(s, null, 2));
      return 0;
    }
    const last = s.lastLoad === null ? 'never' : `${s.lastLoad.ok ? 'ok' : 'FAILED'} at ${s.lastLoad.at}`;
    io.out(table([
      ['folder', s.dir ?? '(none: every decision is a deny)'],
      ['version', s.activeVersion ?? '(no valid set: every decision is a deny)'],
      ['policies', String(s.policyCount)],
      ['last load', last],
    ]));
    for (const p of s.lastLoad?.problems ?? []) io.out(`  ${p}`);
    if (s.policies.length > 0) {
      io.out('');
      io.out(table([['ID', 'EFFECT', 'WHERE', 'REASON'], ...s.policies.map((p) => [p.id, p.effect, `${p.file}:${p.line}`, p.reason ?? '-'])]));
    }
    return 0;
  },
};

const reload: Command = {
  name: 'policy reload',
  summary: 'make the server reload its policy folder now; a failed load keeps the previous set serving',
  usage: 'writ policy reload [--server URL] [--json]',
  options: CLIENT_OPTIONS,
  help: CLIENT_HELP,
  async run(v, _p, io) {
    const r = (await call(client(v, io), 'POST', '/admin/v1/policy/reload')).json as { activeVersion: string | null; previousVersion: string | null; changed: boolean };
    if (v.json === true) io.out(JSON.stringify(r, null, 2));
    else io.out(r.changed ? `reloaded: ${r.previousVersion ?? '(none)'} -> ${r.activeVersion ?? '(none)'}` : `unchanged: ${r.activeVersion ?? '(none)'}`);
    return 0;
  },
};

const UNITS: Readonly<Record<string, number>> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `90s`, `30m`, `24h`, `7d` → milliseconds. */
function durationMs(flag: string, value: unknown): number {
  const m = typeof value === 'string' ? /^([1-9][0-9]{0,6})([smhd])$/.exec(value) : null;
  const unit = m?.[2] === undefined ? undefined : UNITS[m[2]];
  if (m === null || m[1] === undefined || unit === undefined) throw new CliError(`--${flag} must be a duration like 90s, 30m, 24h or 7d`, 'ERR_CLI_USAGE', 2);
  return Number(m[1]) * unit;
}

function refText(r: string | { type: string; id: string }): string {
  return typeof r === 'string' ? r : `${r.type}::${JSON.stringify(r.id)}`;
}

const replay: Command = {
  name: 'policy replay',
  summary: 're-decide recorded decisions with a candidate policy folder and list every decision that would flip',
  usage: 'writ policy replay --candidate DIR [--since DURATION] [--server URL] [--json]',
  options: { ...CLIENT_OPTIONS, candidate: { type: 'string' }, since: { type: 'string' } },
  help: {
    '--candidate DIR': 'the policy folder to try (compiled locally)',
    '--since DURATION': 'how far back to read `decision.made` events: 90s, 30m, 24h, 7d (default 24h)',
    ...CLIENT_HELP,
  },
  async run(v, _p, io) {
    if (typeof v.candidate !== 'string') throw new CliError('--candidate is required', 'ERR_CLI_USAGE', 2);
    const sinceMs = durationMs('since', v.since ?? '24h');
    const dir = v.candidate;
    const compiled = await compileFolder(dir, io, false);
    if (!compiled.ok) return 1;
    const engine = new PolicyEngine({ clock: systemClock });
    await engine.load(await readPolicyFolder(dir));
    const c = client(v, io);
    const since = new Date(systemClock.nowMs() - sinceMs).toISOString();
    const records: RecordedDecision[] = [];
    let after = 0;
    for (;;) {
      const page = (await call(c, 'GET', `/admin/v1/audit/events?action=decision.made&since=${encodeURIComponent(since)}&after=${after}&limit=1000`)).json as { events: RecordedDecision[]; next: number | null };
      records.push(...page.events);
      if (page.next === null) break;
      after = page.next;
    }
    const report = await replayDecisions(engine, records);
    const allowToDeny = report.flips.filter((f) => f.was === 'allow').length;
    if (v.json === true) {
      io.out(JSON.stringify({ candidateVersion: compiled.set.version, since, ...report }, null, 2));
    } else {
      for (const f of report.flips) {
        io.out(`${f.time}  ${f.decisionId}  ${refText(f.request.principal)} ${refText(f.request.action)} ${refText(f.request.resource)}: ${f.was} -> ${f.now} (${f.reasons.join(', ')})`);
      }
      io.out(`${report.replayed} decisions replayed since ${since}, ${report.flips.length} would flip (${allowToDeny} allow -> deny, ${report.flips.length - allowToDeny} deny -> allow), ${report.skipped} skipped; candidate ${compiled.set.version}`);
    }
    // Like diff(1): 1 when the candidate would change a decision.
    return report.flips.length === 0 ? 0 : 1;
  },
};

function refArg(flag: string, value: string): { type: string; id: string } {
  const m = ENTITY.exec(value);
  if (m === null || m[1] === undefined || m[2] === undefined) throw new CliError(`--${flag} must look like TYPE:ID, not \`${value}\``, 'ERR_CLI_USAGE', 2);
  return { type: m[1], id: m[2] };
}

function printAnalysis(r: AnalysisReport, byPrincipal: boolean, subject: string, io: Io): void {
  if (r.findings.length > 0) {
    const rows = r.findings.map((f) => [f.action, byPrincipal ? refText(f.resource) : refText(f.principal), f.determiningPolicies.join(', ')]);
    io.out(table([['ACTION', byPrincipal ? 'RESOURCE' : 'PRINCIPAL', 'ALLOWED BY'], ...rows]));
  }
  const what = byPrincipal ? `${subject} can reach` : `can reach ${subject}`;
  io.out(`${r.findings.length} allowed (${what}) of ${r.decided} decided, ${r.denied} denied${r.truncated ? ', TRUNCATED at the decision limit' : ''}; version ${r.policyVersion ?? '(no policy set)'}`);
}

const analyze: Command = {
  name: 'policy analyze',
  summary: 'blast radius: what a principal can reach, or who can reach a resource, with the policies that allow each',
  usage: 'writ policy analyze --principal TYPE:ID | --resource TYPE:ID [--dir DIR] [--context JSON] [--max N] [--server URL] [--json]',
  options: { ...CLIENT_OPTIONS, principal: { type: 'string' }, resource: { type: 'string' }, dir: { type: 'string' }, context: { type: 'string' }, max: { type: 'string' } },
  help: {
    '--principal TYPE:ID': 'everything this principal can reach (`workload:spiffe://td/api`, `Writ::Agent:triage`)',
    '--resource TYPE:ID': 'everyone who can reach this resource (`service:payments-api`)',
    '--dir DIR': 'analyse a local policy folder over its entities file (no server); without it the server analyses its active set over every entity it knows',
    '--context JSON': 'context sent with every request, for a what-if (`{"posture":{"score":90,"compliant":true,"observedAt":0}}`); on the server, posture and risk come from signals',
    '--max N': 'stop after N decisions (default 10000); the answer then says TRUNCATED',
    ...CLIENT_HELP,
  },
  async run(v, _p, io) {
    const p = typeof v.principal === 'string' ? v.principal : undefined;
    const r = typeof v.resource === 'string' ? v.resource : undefined;
    if ((p === undefined) === (r === undefined)) throw new CliError('give exactly one of --principal and --resource', 'ERR_CLI_USAGE', 2);
    const given = refArg(p === undefined ? 'resource' : 'principal', p ?? r ?? '');
    const context = jsonObjectArg('context', v.context);
    let maxDecisions: number | undefined;
    if (v.max !== undefined) {
      maxDecisions = Number(v.max);
      if (!Number.isInteger(maxDecisions) || maxDecisions < 1 || maxDecisions > 100_000) throw new CliError('--max must be an integer from 1 to 100000', 'ERR_CLI_USAGE', 2);
    }
    let report: AnalysisReport;
    if (typeof v.dir === 'string') {
      const compiled = await compileFolder(v.dir, io, v.json === true);
      if (!compiled.ok) return 1;
      const set = compiled.set;
      const type = resolveEntityType(set.schemaInfo, given.type);
      if (type === undefined) throw new CliError(`type \`${given.type}\` is not declared by the schema of ${v.dir}`, 'ERR_CLI_USAGE', 2);
      const engine = new PolicyEngine({ clock: systemClock });
      await engine.load(await readPolicyFolder(v.dir));
      // Offline: decisions are not recorded and no budget applies.
      const pdp = new Decider({ engine, audit: recordingAuditSink(systemClock, false), clock: systemClock, timeoutMs: Infinity, contextSources: [clockContextSource(systemClock)] });
      const ref = { type, id: given.id };
      report = await analyzeAccess({ decide: (q) => pdp.decide(q), set: engine.active }, p === undefined ? { resource: ref } : { principal: ref }, {
        ...(context === undefined ? {} : { context }),
        ...(maxDecisions === undefined ? {} : { maxDecisions }),
      });
    } else {
      const body = { [p === undefined ? 'resource' : 'principal']: given, ...(context === undefined ? {} : { context }), ...(maxDecisions === undefined ? {} : { maxDecisions }) };
      report = (await call(client(v, io), 'POST', '/admin/v1/policy/analyze', body)).json as AnalysisReport;
    }
    if (v.json === true) io.out(JSON.stringify(report, null, 2));
    else printAnalysis(report, p !== undefined, p ?? r ?? '', io);
    return 0;
  },
};

interface ShadowState {
  active: boolean;
  dir: string | null;
  version: string | null;
  since: string | null;
  stats: { compared: number; disagreements: number; errors: number } | null;
}

function shadowRows(s: ShadowState): string {
  if (!s.active) return 'shadow     off';
  return table([
    ['shadow', 'on'],
    ['folder', s.dir ?? '-'],
    ['version', s.version ?? '-'],
    ['since', s.since ?? '-'],
    ['compared', String(s.stats?.compared ?? 0)],
    ['disagreed', String(s.stats?.disagreements ?? 0)],
    ['errors', String(s.stats?.errors ?? 0)],
  ]);
}

const shadowCmd: Command = {
  name: 'policy shadow',
  summary: 'shadow mode: decide live traffic with a candidate folder too and record disagreements, never enforcing them',
  usage: 'writ policy shadow [--set DIR | --clear] [--server URL] [--json]',
  options: { ...CLIENT_OPTIONS, set: { type: 'string' }, clear: { type: 'boolean' } },
  help: {
    '--set DIR': 'the candidate folder, as the server sees its path; a folder that does not compile changes nothing (exit 1)',
    '--clear': 'stop shadowing',
    '(neither)': 'show the shadow: folder, version, decisions compared and disagreements',
    ...CLIENT_HELP,
  },
  async run(v, _p, io) {
    if (typeof v.set === 'string' && v.clear === true) throw new CliError('give at most one of --set and --clear', 'ERR_CLI_USAGE', 2);
    const c = client(v, io);
    if (v.clear === true) {
      const r = (await call(c, 'DELETE', '/admin/v1/policy/shadow')).json as { cleared: boolean; previous: ShadowState };
      if (v.json === true) io.out(JSON.stringify(r, null, 2));
      else io.out(r.cleared ? `shadow cleared (${r.previous.stats?.disagreements ?? 0} disagreements in ${r.previous.stats?.compared ?? 0} decisions)` : 'no shadow was set');
      return 0;
    }
    const s = (typeof v.set === 'string'
      ? await call(c, 'PUT', '/admin/v1/policy/shadow', { dir: resolve(v.set) })
      : await call(c, 'GET', '/admin/v1/policy/shadow')).json as ShadowState;
    io.out(v.json === true ? JSON.stringify(s, null, 2) : shadowRows(s));
    return 0;
  },
};

/** The `writ policy` commands. */
export const POLICY_COMMANDS: readonly Command[] = [validate, testCmd, explain, show, reload, replay, analyze, shadowCmd];
