/**
 * Policy sets: a folder of `.cedar` files, a schema and an optional entities
 * file for data the PDP owns, compiled into an immutable, pre-parsed
 * {@link CompiledPolicySet}; and the {@link PolicyEngine} that holds the active
 * set and swaps a new one in atomically.
 *
 * Compilation is all-or-nothing: every file is parsed and validated against
 * the schema (strict mode), every problem is reported with file, line and
 * column, and only a set with no problem is ever activated. A failed load
 * keeps the previous set serving.
 */
import { createHash } from 'node:crypto';
import type { AuditSink, Clock } from '../kernel/index.ts';
import { newCorrelationId } from '../kernel/index.ts';
import {
  checkParseEntities,
  checkParsePolicySet,
  policySetTextToParts,
  policyToJson,
  preparsePolicySet,
  preparseSchema,
  schemaToJson,
  statefulIsAuthorized,
  validate,
} from './cedar.ts';
import type { DetailedError, EntityJson, PolicyJson } from './cedar.ts';
import { readPolicyHead } from './policy-head.ts';
import { policyErrors } from './errors.ts';
import { buildSchemaInfo, uidKey } from './schema-info.ts';
import type { SchemaInfo } from './schema-info.ts';
import { ScopeIndex, scopeOf } from './slice.ts';
import type { EntityScope, PolicyScope, SliceRequest } from './slice.ts';

/** A text file of a policy source, with the path it is reported under. */
export interface SourceFile {
  readonly path: string;
  readonly text: string;
}

/** Everything a policy set is built from. */
export interface PolicySource {
  /** `.cedar` files, in any order (they are sorted by path). */
  readonly files: readonly SourceFile[];
  /** The Cedar schema (human form). */
  readonly schema: SourceFile;
  /** Optional Cedar entity JSON (an array) for data the PDP owns. */
  readonly entities?: SourceFile;
}

/** One problem found while compiling, located in its file. */
export interface LoadProblem {
  readonly file: string;
  /** 1-based; 0 when the engine gave no location. */
  readonly line: number;
  readonly column: number;
  readonly message: string;
}

/** One policy of a compiled set. */
export interface PolicyInfo {
  /** `@id("…")` when annotated, else `<file>:<line>`. */
  readonly id: string;
  readonly effect: 'permit' | 'forbid';
  readonly file: string;
  readonly line: number;
  readonly text: string;
  /** Kebab-case `@reason("…")` annotation: the reason this policy gives when it determines a decision. */
  readonly reason?: string;
  readonly scope: PolicyScope;
}

/** A preparsed slice: the id cedar-wasm knows it by and the policy ids in it. */
export interface Slice {
  readonly preparsedId: string;
  readonly policyIds: readonly string[];
}

const KEBAB = /^[a-z0-9]+(?:-[a-z0-9]+)*$/;
const MAX_SLICE_MEMO = 50_000;

// Preparsed policy sets live in the wasm instance for the life of the process;
// content-addressed ids let unchanged slices be shared across reloads.
const preparsed = new Set<string>();

function sha256(parts: readonly string[]): string {
  const h = createHash('sha256');
  for (const p of parts) {
    h.update(String(p.length));
    h.update(':');
    h.update(p);
  }
  return h.digest('hex');
}

function lineCol(text: string, offset: number): { line: number; column: number } {
  let line = 1;
  let last = -1;
  for (let i = 0; i < offset && i < text.length; i++) {
    if (text.charCodeAt(i) === 10) {
      line++;
      last = i;
    }
  }
  return { line, column: offset - last };
}

function countNewlines(text: string, from: number, to: number): number {
  let n = 0;
  for (let i = text.indexOf('\n', from); i >= 0 && i < to; i = text.indexOf('\n', i + 1)) n++;
  return n;
}

function problemsFrom(file: string, text: string, errors: readonly DetailedError[]): LoadProblem[] {
  return errors.map((e) => {
    const at = e.sourceLocations?.[0];
    const pos = at === undefined ? { line: 0, column: 0 } : lineCol(text, at.start);
    const help = e.help === null || e.help === undefined ? '' : ` (${e.help})`;
    return { file, line: pos.line, column: pos.column, message: `${e.message}${help}` };
  });
}

/** `policy0`, `policy1`, … in the byte order cedar-wasm sorts them in. */
function cedarPartOrder(n: number): number[] {
  const ids = Array.from({ length: n }, (_, i) => i);
  return ids.sort((a, b) => {
    const x = `policy${a}`;
    const y = `policy${b}`;
    return x < y ? -1 : x > y ? 1 : 0;
  });
}

/**
 * An immutable, validated, pre-parsed policy set. Build it with
 * {@link compilePolicySet}.
 */
export class CompiledPolicySet {
  /** Content hash of schema, policies and entities: `pv-<hex>`. */
  readonly version: string;
  readonly policies: readonly PolicyInfo[];
  readonly policyById: ReadonlyMap<string, PolicyInfo>;
  readonly schemaInfo: SchemaInfo;
  /** The preparsed schema name to pass to `statefulIsAuthorized`. */
  readonly schemaId: string;

  /** Entities the PDP owns, by uid key. */
  readonly entities: ReadonlyMap<string, EntityJson>;
  readonly #index: ScopeIndex;
  readonly #memo = new Map<string, Slice>();
  readonly #forbidMemo = new Map<string, boolean>();

  constructor(init: {
    version: string;
    policies: PolicyInfo[];
    schemaInfo: SchemaInfo;
    schemaId: string;
    entities: Map<string, EntityJson>;
  }) {
    this.version = init.version;
    this.policies = Object.freeze(init.policies);
    this.policyById = new Map(init.policies.map((p) => [p.id, p]));
    this.schemaInfo = init.schemaInfo;
    this.schemaId = init.schemaId;
    this.entities = init.entities;
    this.#index = new ScopeIndex(init.policies.map((p) => p.scope));
  }

  /**
   * The id of the whole set, preparsed on first use (for the unsliced path
   * and for comparisons); throws only if the engine fails on a set that
   * already parsed.
   */
  get fullSetId(): string {
    const id = `set:${this.version}`;
    if (!preparsed.has(id)) {
      const full = preparsePolicySet(id, { staticPolicies: Object.fromEntries(this.policies.map((p) => [p.id, p.text])) });
      if (full.type !== 'success') throw new Error(`cedar could not preparse the whole set: ${full.errors[0]?.message ?? 'unknown'}`);
      preparsed.add(id);
    }
    return id;
  }

  /**
   * Whether some `forbid` policy's scope can match a request of this action
   * with a principal and a resource of these types. False means no request of
   * that shape can be forbidden by this set: a caller that only needs to know
   * "is it forbidden?" need not ask Cedar. `principalKey`/`resourceKey` are
   * not known here, so an `==` scope on the type counts as a possible match.
   *
   * @example
   * set.mayForbid({ principalType: 'Writ::Workload', actionKey: 'Writ::Action::"credential/issue"', resourceType: 'Writ::Workload' });
   */
  mayForbid(q: { readonly principalType: string; readonly actionKey: string; readonly resourceType: string }): boolean {
    const key = `${q.principalType}|${q.actionKey}|${q.resourceType}`;
    let v = this.#forbidMemo.get(key);
    if (v === undefined) {
      const fits = (e: EntityScope, type: string) => e.kind === 'any' || e.type === type;
      v = this.policies.some((p) => p.effect === 'forbid' && fits(p.scope.principal, q.principalType) && fits(p.scope.resource, q.resourceType) && (p.scope.action.kind === 'any' || p.scope.action.keys.has(q.actionKey)));
      this.#forbidMemo.set(key, v);
    }
    return v;
  }

  /**
   * The preparsed slice of policies whose scope can match `r`; `undefined`
   * when no policy can (the decision is then a deny without asking Cedar).
   *
   * @example
   * const s = set.slice({ principalType: 'Writ::Agent', principalKey, actionKey, resourceType, resourceKey });
   */
  slice(r: SliceRequest): Slice | undefined {
    const memoKey = `${r.principalKey}|${r.actionKey}|${r.resourceKey}`;
    const hit = this.#memo.get(memoKey);
    if (hit !== undefined) return hit.policyIds.length === 0 ? undefined : hit;
    const picked = this.#index.select(r).flatMap((i) => {
      const p = this.policies[i];
      return p === undefined ? [] : [p];
    });
    const slice = picked.length === 0 ? { preparsedId: '', policyIds: [] } : preparseSlice(picked);
    if (this.#memo.size >= MAX_SLICE_MEMO) this.#memo.clear();
    this.#memo.set(memoKey, slice);
    return slice.policyIds.length === 0 ? undefined : slice;
  }
}

function preparseSlice(policies: readonly PolicyInfo[]): Slice {
  const id = `slice:${sha256(policies.flatMap((p) => [p.id, p.text]))}`;
  if (!preparsed.has(id)) {
    const answer = preparsePolicySet(id, { staticPolicies: Object.fromEntries(policies.map((p) => [p.id, p.text])) });
    // The policies already parsed as a whole set; a failure here is an engine fault.
    if (answer.type !== 'success') throw new Error(`cedar could not preparse a slice: ${answer.errors[0]?.message ?? 'unknown'}`);
    preparsed.add(id);
  }
  return { preparsedId: id, policyIds: policies.map((p) => p.id) };
}

/** What one file compiles to (before ids are checked across files). */
interface FileResult {
  readonly problems: readonly LoadProblem[];
  readonly policies: readonly PolicyInfo[];
}

const MAX_FILE_MEMO = 4096;
// Compiled files by content (schema, path, text): a reload re-validates only
// the files that changed. Strict validation is most of a large set's compile time.
const fileMemo = new Map<string, FileResult>();

function compileFileMemo(file: SourceFile, schemaText: string, schemaInfo: SchemaInfo): FileResult {
  const key = sha256([schemaText, file.path, file.text]);
  const hit = fileMemo.get(key);
  if (hit !== undefined) return hit;
  const r = compileFile(file, schemaText, schemaInfo);
  if (fileMemo.size >= MAX_FILE_MEMO) {
    const oldest = fileMemo.keys().next();
    if (oldest.done !== true) fileMemo.delete(oldest.value);
  }
  fileMemo.set(key, r);
  return r;
}

/** Parse, validate (strict) and read the policies of one file. */
function compileFile(file: SourceFile, schemaText: string, schemaInfo: SchemaInfo): FileResult {
  const problems: LoadProblem[] = [];
  const policies: PolicyInfo[] = [];
  const parsed = checkParsePolicySet({ staticPolicies: file.text });
  if (parsed.type !== 'success') {
    problems.push(...problemsFrom(file.path, file.text, parsed.errors));
    return { problems, policies };
  }
  const validated = validate({ schema: schemaText, policies: { staticPolicies: file.text }, validationSettings: { mode: 'strict' } });
  if (validated.type !== 'success') {
    problems.push(...problemsFrom(file.path, file.text, validated.errors));
    return { problems, policies };
  }
  if (validated.validationErrors.length > 0) {
    problems.push(...problemsFrom(file.path, file.text, validated.validationErrors.map((v) => v.error)));
    return { problems, policies };
  }
  const parts = policySetTextToParts(file.text);
  if (parts.type !== 'success') {
    problems.push(...problemsFrom(file.path, file.text, parts.errors));
    return { problems, policies };
  }
  if (parts.policy_templates.length > 0) {
    problems.push({ file: file.path, line: 0, column: 0, message: 'templates are not supported yet: write static policies' });
    return { problems, policies };
  }
  // Parts come back sorted by their generated ids; put them in file order.
  const order = cedarPartOrder(parts.policies.length);
  const inFileOrder: string[] = new Array<string>(parts.policies.length);
  order.forEach((fileIndex, k) => {
    inFileOrder[fileIndex] = parts.policies[k] ?? '';
  });
  // Lines are counted from the previous policy on, not from the top of the
  // file each time: a 10,000-policy file compiled in minutes the other way.
  let cursor = 0;
  let cursorLine = 1;
  for (const text of inFileOrder) {
    const at = file.text.indexOf(text, cursor);
    let line = 0;
    if (at >= 0) {
      cursorLine += countNewlines(file.text, cursor, at);
      line = cursorLine;
      cursorLine += countNewlines(file.text, at, at + text.length);
      cursor = at + text.length;
    }
    let head: Pick<PolicyJson, 'effect' | 'annotations' | 'principal' | 'action' | 'resource'> | undefined = readPolicyHead(text);
    if (head === undefined) {
      const json = policyToJson(text);
      if (json.type !== 'success') {
        problems.push(...problemsFrom(file.path, file.text, json.errors));
        continue;
      }
      head = json.json;
    }
    const ann = head.annotations ?? {};
    const id = ann.id ?? `${file.path}:${line}`;
    const reason = ann.reason;
    if (reason !== undefined && !KEBAB.test(reason)) {
      problems.push({ file: file.path, line, column: 1, message: `@reason \`${reason}\` is not kebab-case` });
      continue;
    }
    policies.push({
      id,
      effect: head.effect,
      file: file.path,
      line,
      text,
      ...(reason === undefined ? {} : { reason }),
      scope: scopeOf(head, schemaInfo.actionDescendants),
    });
  }
  return { problems, policies };
}

/** The outcome of compiling a source. */
export type CompileResult =
  | { readonly ok: true; readonly set: CompiledPolicySet }
  | { readonly ok: false; readonly problems: readonly LoadProblem[] };

/**
 * Parse, validate (Cedar strict mode) and pre-parse a policy source.
 * Never throws for bad input: problems come back located by file and line.
 *
 * @example
 * const r = compilePolicySet({ schema, files: [{ path: 'base.cedar', text }] });
 * if (!r.ok) for (const p of r.problems) console.error(`${p.file}:${p.line}: ${p.message}`);
 */
export function compilePolicySet(source: PolicySource): CompileResult {
  const problems: LoadProblem[] = [];
  const schemaText = source.schema.text;
  const schemaJson = schemaToJson(schemaText);
  if (schemaJson.type !== 'success') {
    return { ok: false, problems: problemsFrom(source.schema.path, schemaText, schemaJson.errors) };
  }
  const schemaInfo = buildSchemaInfo(schemaJson.json);
  const files = [...source.files].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  const policies: PolicyInfo[] = [];
  const seen = new Map<string, string>();

  for (const file of files) {
    const r = compileFileMemo(file, schemaText, schemaInfo);
    problems.push(...r.problems);
    for (const p of r.policies) {
      const dup = seen.get(p.id);
      if (dup !== undefined) {
        problems.push({ file: file.path, line: p.line, column: 1, message: `policy id \`${p.id}\` is already used at ${dup}` });
        continue;
      }
      seen.set(p.id, `${file.path}:${p.line}`);
      policies.push(p);
    }
  }

  const entities = new Map<string, EntityJson>();
  if (source.entities !== undefined) {
    const { path, text } = source.entities;
    let data: unknown;
    try {
      data = JSON.parse(text);
    } catch (e) {
      problems.push({ file: path, line: 0, column: 0, message: `not JSON: ${e instanceof Error ? e.message : 'parse error'}` });
    }
    if (data !== undefined) {
      if (!Array.isArray(data)) {
        problems.push({ file: path, line: 0, column: 0, message: 'entities file must hold a JSON array of Cedar entities' });
      } else {
        const list = data as EntityJson[];
        const check = checkParseEntities({ entities: list, schema: schemaText });
        if (check.type !== 'success') problems.push(...problemsFrom(path, text, check.errors));
        else for (const e of list) {
          const u = '__entity' in e.uid ? e.uid.__entity : e.uid;
          entities.set(uidKey(u.type, u.id), e);
        }
      }
    }
  }

  if (problems.length > 0) return { ok: false, problems };

  const version = `pv-${sha256([schemaText, ...files.flatMap((f) => [f.path, f.text]), source.entities?.text ?? '']).slice(0, 24)}`;
  const schemaId = `schema:${sha256([schemaText]).slice(0, 32)}`;
  if (!preparsed.has(schemaId)) {
    const s = preparseSchema(schemaId, schemaText);
    if (s.type !== 'success') return { ok: false, problems: problemsFrom(source.schema.path, schemaText, s.errors) };
    preparsed.add(schemaId);
  }
  // The whole set is preparsed on first use (explain, the unsliced path); the
  // warm-up runs on a slice of at most one policy, so a large set compiles faster.
  const warm = preparseSlice(policies.slice(0, 1));
  warmUp(schemaInfo, schemaId, warm.preparsedId);
  return { ok: true, set: new CompiledPolicySet({ version, policies, schemaInfo, schemaId, entities }) };
}

/**
 * One trial evaluation of a freshly compiled set. The first evaluation in a
 * process (and the first over a new schema) pays a one-off cost inside the
 * wasm engine — tens of milliseconds idle, several hundred under CPU load —
 * that would otherwise be charged to the first real decision's budget and
 * turn an allow into a `decision-timeout`. Paying it at load time keeps
 * decisions from flipping under load.
 *
 * NOTE: the answer is not used; an engine fault shows up in real decisions
 * as `engine-error`.
 */
function warmUp(info: SchemaInfo, schemaId: string, setId: string): void {
  const entityType = info.entityTypes.keys().next();
  const actionKey = info.actionContexts.keys().next();
  if (entityType.done === true || actionKey.done === true) return;
  // Action keys are `Type::"id"` (uidKey).
  const at = actionKey.value.indexOf('::"');
  if (at < 0) return;
  let actionId: unknown;
  try {
    actionId = JSON.parse(actionKey.value.slice(at + 2));
  } catch {
    return;
  }
  if (typeof actionId !== 'string') return;
  statefulIsAuthorized({
    principal: { type: entityType.value, id: '__warm-up' },
    action: { type: actionKey.value.slice(0, at), id: actionId },
    resource: { type: entityType.value, id: '__warm-up' },
    context: {},
    entities: [],
    preparsedPolicySetId: setId,
    preparsedSchemaName: schemaId,
    validateRequest: false,
  });
}

function compileSafely(source: PolicySource): CompileResult {
  try {
    return compilePolicySet(source);
  } catch (e) {
    return { ok: false, problems: [{ file: '(engine)', line: 0, column: 0, message: e instanceof Error ? e.message : 'compile failed' }] };
  }
}

/** A hash over every file of a source (paths and contents). */
export function sourceFingerprint(source: PolicySource): string {
  const files = [...source.files].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return sha256([source.schema.path, source.schema.text, ...files.flatMap((f) => [f.path, f.text]), source.entities?.path ?? '', source.entities?.text ?? '']);
}

/** What a load attempt did. */
export interface LoadReport {
  readonly ok: boolean;
  /** The version now serving (unchanged on failure; `null` if none ever loaded). */
  readonly activeVersion: string | null;
  /** The version of the candidate, when it compiled. */
  readonly candidateVersion?: string;
  readonly problems: readonly LoadProblem[];
  /** ISO time of the attempt. */
  readonly at: string;
}

/** Readiness detail for `/readyz`. */
export interface EngineStatus {
  readonly ready: boolean;
  readonly activeVersion: string | null;
  readonly policyCount: number;
  readonly lastLoad: LoadReport | null;
}

/**
 * Holds the active policy set. `load()` compiles a candidate completely
 * before swapping one reference, so a decision sees either the old set or
 * the new one, never a mix; a failed candidate leaves the old set serving and
 * is reported (status, audit event `policy-set.rejected`).
 *
 * @example
 * const engine = new PolicyEngine({ clock: systemClock, audit });
 * await engine.load(await readPolicyFolder('./policies'));
 * engine.active?.version; // 'pv-…'
 */
export class PolicyEngine {
  #active: CompiledPolicySet | undefined;
  #lastLoad: LoadReport | null = null;
  readonly #clock: Clock;
  readonly #audit: AuditSink | undefined;
  readonly #listeners = new Set<(set: CompiledPolicySet) => void>();

  constructor(options: { clock: Clock; audit?: AuditSink }) {
    this.#clock = options.clock;
    this.#audit = options.audit;
  }

  /** The set serving decisions now, if any ever loaded. */
  get active(): CompiledPolicySet | undefined {
    return this.#active;
  }

  /** Call `fn` after each successful swap; returns an unsubscribe function. */
  onSwap(fn: (set: CompiledPolicySet) => void): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  /** Compile `source` and, if it is valid, make it the active set. */
  async load(source: PolicySource): Promise<LoadReport> {
    return this.#install(compileSafely(source));
  }

  /**
   * Read a source with `read` (a folder, usually), compile it and swap it in.
   * A read that throws is a failed load like any other (reported, audited,
   * the old set keeps serving). The source is read again after compiling and
   * must not have changed, so a folder caught half-written is never
   * installed: a changed folder is compiled again (up to 5 times).
   *
   * @example
   * await engine.loadFrom(() => readPolicyFolder('./policies'));
   */
  async loadFrom(read: () => Promise<PolicySource>): Promise<LoadReport> {
    const failed = (e: unknown): CompileResult => ({
      ok: false,
      problems: [{ file: '(folder)', line: 0, column: 0, message: e instanceof Error ? e.message : 'cannot read the policy source' }],
    });
    let source: PolicySource;
    try {
      source = await read();
    } catch (e) {
      return this.#install(failed(e));
    }
    for (let attempt = 0; attempt < 5; attempt++) {
      const result = compileSafely(source);
      let again: PolicySource;
      try {
        again = await read();
      } catch (e) {
        return this.#install(failed(e));
      }
      // INVARIANT: only a source that read the same before and after compiling is installed.
      if (sourceFingerprint(again) === sourceFingerprint(source)) return this.#install(result);
      source = again;
    }
    return this.#install({ ok: false, problems: [{ file: '(folder)', line: 0, column: 0, message: 'the policy folder kept changing while it was loading' }] });
  }

  async #install(result: CompileResult): Promise<LoadReport> {
    const at = this.#clock.now().toISOString();
    const previous = this.#active?.version ?? null;
    if (result.ok) {
      // INVARIANT: the only write of #active; the set is complete and preparsed.
      this.#active = result.set;
      for (const fn of this.#listeners) fn(result.set);
      this.#lastLoad = { ok: true, activeVersion: result.set.version, candidateVersion: result.set.version, problems: [], at };
    } else {
      this.#lastLoad = { ok: false, activeVersion: previous, problems: result.problems, at };
    }
    await this.#report(this.#lastLoad, previous);
    return this.#lastLoad;
  }

  /** Readiness: ready once a set is active, with the last load's outcome. */
  status(): EngineStatus {
    return {
      ready: this.#active !== undefined,
      activeVersion: this.#active?.version ?? null,
      policyCount: this.#active?.policies.length ?? 0,
      lastLoad: this.#lastLoad,
    };
  }

  async #report(r: LoadReport, previous: string | null): Promise<void> {
    if (this.#audit === undefined) return;
    await this.#audit.append({
      action: r.ok ? 'policy-set.activated' : 'policy-set.rejected',
      actor: { type: 'system', id: 'writ' },
      target: { type: 'policy-set', id: r.candidateVersion ?? previous ?? 'none' },
      outcome: r.ok ? 'success' : 'failure',
      reasons: r.ok ? [] : ['policy-set-invalid'],
      correlationId: newCorrelationId(),
      details: {
        previousVersion: previous,
        activeVersion: r.activeVersion,
        problems: r.problems.slice(0, 20).map((p) => `${p.file}:${p.line}:${p.column}: ${p.message}`),
      },
      time: r.at,
    });
  }
}

/**
 * Throwing form of {@link compilePolicySet} for tools: a typed error whose
 * message lists the first problems as `file:line:column: message`.
 *
 * @example
 * const set = compileOrThrow(source); // throws ERR_POLICY_SET_INVALID
 */
export function compileOrThrow(source: PolicySource): CompiledPolicySet {
  const r = compilePolicySet(source);
  if (r.ok) return r.set;
  const shown = r.problems.slice(0, 5).map((p) => `${p.file}:${p.line}:${p.column}: ${p.message}`);
  throw policyErrors.error('ERR_POLICY_SET_INVALID', `policy set has ${r.problems.length} problem(s): ${shown.join('; ')}`, {
    cause: r.problems,
  });
}
