/**
 * The policy decision point, served: the policy folder loaded at start and
 * reloaded on change (a failed load keeps the previous set serving), the
 * OpenID AuthZEN Authorization API 1.0 over HTTP for enforcement points, and
 * the admin routes to inspect, reload and explain.
 *
 * Auditing (decided once, here): every AuthZEN evaluation is recorded exactly
 * once, as the `decision.made` event the Decider writes (with `requestedBy`,
 * the calling enforcement point, and the request's correlation id). The
 * AuthZEN routes therefore carry no `permission` config, so the admin
 * `api.called` hook does not add a second record per call; a refused caller
 * (401/403) is recorded as `api.called` with outcome `denied` by this file.
 */
import { watch } from 'node:fs';
import type { FSWatcher } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { Gauge } from 'prom-client';
import type { Registry } from 'prom-client';
import type { AuditSink, Clock, WritConfig } from '../kernel/index.ts';
import { WritError } from '../kernel/index.ts';
import { serverErrors } from './errors.ts';
import {
  Decider,
  PolicyEngine,
  ShadowEvaluator,
  authzenMetadata,
  clockContextSource,
  registryEntityLoader,
  signalContextSources,
  evaluate,
  evaluations,
  parseAuthzenBody,
  parseEvaluationRequest,
  policyErrors,
  readPolicyFolder,
  readWritSchema,
  resolveEntityType,
  analyzeAccess,
  search,
  toDecisionRequest,
} from '../policy/index.ts';
import type { ContextSource, Decision, EntityLoader, IdentityDirectory, LoadReport, PolicySource, RegistryEntityLoader, ShadowStats, SignalReader } from '../policy/index.ts';
import { governanceErrors, roleAllows } from '../governance/index.ts';
import type { AdminPrincipals } from '../governance/index.ts';

/** Readiness of the PDP, for `/readyz`. */
export interface PolicyReadiness {
  /** `ok` while a set serves (the empty deny-all set included); `no-valid-set` when none ever loaded. */
  readonly check: 'ok' | 'no-valid-set';
  readonly detail: {
    readonly dir: string | null;
    readonly activeVersion: string | null;
    readonly policyCount: number;
    readonly note?: string;
    readonly lastLoad: { readonly ok: boolean; readonly at: string; readonly problems: readonly string[] } | null;
  };
}

/** The shadow candidate, as `GET /admin/v1/policy/shadow` shows it. */
export interface ShadowStatus {
  readonly active: boolean;
  readonly dir: string | null;
  readonly version: string | null;
  readonly since: string | null;
  readonly stats: ShadowStats | null;
}

/** The served PDP: engine, decider, folder watch. */
export interface PolicyService {
  readonly engine: PolicyEngine;
  readonly decider: Decider;
  /** Entity loaders that feed the PDP (registered identities), also the candidates of AuthZEN search. */
  readonly loaders: readonly EntityLoader[];
  /**
   * A change the revocation bus reported (a signal accepted, an entry
   * deleted, a node evicted): posture and risk caches move on, registered
   * identities are re-read.
   */
  noteChange(): void;
  /** Load `dir` as the shadow candidate; throws `ERR_POLICY_SET_INVALID` (nothing changes) when it does not compile. */
  setShadow(dir: string): Promise<ShadowStatus>;
  /** Stop shadowing; false when there was no shadow. */
  clearShadow(): boolean;
  shadowStatus(): ShadowStatus;
  /** Comparisons since start, by result (for `/metrics`). */
  shadowTotals(): Readonly<Record<'agree' | 'disagree' | 'error', number>>;
  /** Absolute policy folder, or undefined when `policy.dir` is empty. */
  readonly dir: string | undefined;
  /** Reload the folder now (serialized with watch reloads). */
  reload(): Promise<LoadReport>;
  readiness(): PolicyReadiness;
  /** Base URL the AuthZEN metadata names; set once the server listens. */
  baseUrl(): string;
  setBaseUrl(url: string): void;
  /** Where watch reloads report (the app's logger once it exists). */
  setLogger(log: PolicyLogger): void;
  /**
   * The source the active set was compiled from (schema, policy files,
   * entities file) with its version, for enforcement points that decide
   * locally; undefined while no set is active.
   */
  bundle(): PolicyBundle | undefined;
  /** Stop watching. */
  close(): void;
}

/** The active policy set as enforcement points fetch it: everything `PolicyEngine` needs to compile the same set. */
export interface PolicyBundle {
  /** The active set's version (`pv-…`); the same source compiles to the same version anywhere. */
  readonly version: string;
  readonly source: PolicySource;
}

/** The bit of a logger the service uses. */
export interface PolicyLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

/**
 * Watches a folder and its sub-folders, one non-recursive watcher per folder.
 * NOTE: Node 24's `recursive: true` on Linux stops reporting a file once it
 * was replaced by a rename (the way deploy tools and editors write), so the
 * folder tree is walked instead and re-walked after each reload.
 */
class FolderWatch {
  readonly #root: string;
  readonly #onChange: () => void;
  readonly #onError: (err: unknown, dir: string) => void;
  readonly #watchers = new Map<string, FSWatcher>();
  #closed = false;

  constructor(root: string, onChange: () => void, onError: (err: unknown, dir: string) => void) {
    this.#root = root;
    this.#onChange = onChange;
    this.#onError = onError;
  }

  /** Watch every folder that exists now; stop watching the ones that are gone. */
  async refresh(): Promise<void> {
    const dirs = new Set<string>([this.#root]);
    try {
      for (const d of await readdir(this.#root, { recursive: true, withFileTypes: true })) {
        if (d.isDirectory()) dirs.add(join(d.parentPath, d.name));
      }
    } catch {
      // An unreadable root is reported by the load itself.
    }
    if (this.#closed) return;
    for (const [dir, w] of this.#watchers) {
      if (!dirs.has(dir)) {
        w.close();
        this.#watchers.delete(dir);
      }
    }
    for (const dir of dirs) {
      if (this.#watchers.has(dir)) continue;
      try {
        const w = watch(dir, { persistent: false }, () => this.#onChange());
        w.on('error', (err) => {
          w.close();
          this.#watchers.delete(dir);
          this.#onError(err, dir);
        });
        this.#watchers.set(dir, w);
      } catch (err) {
        this.#onError(err, dir);
      }
    }
  }

  close(): void {
    this.#closed = true;
    for (const w of this.#watchers.values()) w.close();
    this.#watchers.clear();
  }
}

function problemLines(r: LoadReport): string[] {
  return r.problems.slice(0, 20).map((p) => `${p.file}:${p.line}:${p.column}: ${p.message}`);
}

/**
 * Load the policy folder and start watching it.
 *
 * @example
 * const policy = await startPolicyService({ config, audit, clock: systemClock });
 * policy.setBaseUrl('https://writ.example.com');
 */
export async function startPolicyService(o: {
  config: WritConfig;
  audit: AuditSink;
  clock: Clock;
  /** Registered identities (entries, nodes): principal attributes. */
  directory?: IdentityDirectory;
  /** Latest posture and risk signals. */
  signals?: SignalReader;
}): Promise<PolicyService> {
  const { config, audit, clock } = o;
  const dir = config['policy.dir'] === '' ? undefined : resolve(config['policy.dir']);
  const engine = new PolicyEngine({ clock, audit });
  // The PIP: registered identities through a loader, posture and risk through context sources.
  let changes = 0;
  const registry: RegistryEntityLoader | undefined = o.directory === undefined ? undefined : registryEntityLoader(o.directory, { clock });
  const contextSources: ContextSource[] = [clockContextSource(clock), ...(o.signals === undefined ? [] : signalContextSources(o.signals, () => `signals-${changes}`))];
  const pip = { ...(registry === undefined ? {} : { entityLoader: registry }), contextSources, timeoutMs: config['policy.timeoutMs'] };
  const decider = new Decider({ engine, audit, clock, ...pip });
  let shadow: ShadowEvaluator | undefined;
  const totals = { agree: 0, disagree: 0, error: 0 };
  const shadowStatus = (): ShadowStatus =>
    shadow === undefined
      ? { active: false, dir: null, version: null, since: null, stats: null }
      : { active: true, dir: shadow.origin, version: shadow.version, since: shadow.since, stats: shadow.stats };
  let log: PolicyLogger = { info: () => undefined, warn: () => undefined };
  let base = config.publicUrl === '' ? `http://${config.listen}` : config.publicUrl;
  let chain: Promise<unknown> = Promise.resolve();

  // The source of each set that becomes active, for `GET /v1/policy/bundle`.
  // `reading` is the source of the load in progress (loads are serialized by
  // `chain`); `loadFrom` installs only a set compiled from a source that read
  // the same as the last read, so at swap time `reading` is that set's source.
  // This listener is registered before any other (the bus announcement of the
  // change included), so a PEP told of a change fetches the new bundle.
  let reading: PolicySource | undefined;
  let bundle: PolicyBundle | undefined;
  engine.onSwap((set) => {
    bundle = reading === undefined ? undefined : { version: set.version, source: reading };
  });

  let timer: NodeJS.Timeout | undefined;
  const watcher =
    dir === undefined
      ? undefined
      : new FolderWatch(
          dir,
          () => {
            if (timer !== undefined) clearTimeout(timer);
            timer = setTimeout(() => {
              timer = undefined;
              void reload().catch((err: unknown) => log.warn({ err }, 'policy reload failed'));
            }, config['policy.reloadDebounceMs']);
          },
          (err, at) => log.warn({ err, dir: at }, 'cannot watch a policy folder; reload with `writ policy reload`'),
        );

  const reload = (): Promise<LoadReport> => {
    const run = chain.then(async () => {
      // With no folder the PDP serves Writ's schema and no policy: every decision is a deny.
      let report: LoadReport;
      if (dir === undefined) {
        reading = { schema: await readWritSchema(), files: [] };
        report = await engine.load(reading);
      } else {
        report = await engine.loadFrom(async () => {
          reading = await readPolicyFolder(dir);
          return reading;
        });
      }
      await watcher?.refresh();
      if (report.ok) log.info({ policyVersion: report.activeVersion, dir }, 'policy set loaded');
      else log.warn({ activeVersion: report.activeVersion, problems: problemLines(report), dir }, 'policy set rejected; the previous set keeps serving');
      return report;
    });
    chain = run.catch(() => undefined);
    return run;
  };

  await reload();

  const setShadow = async (shadowDir: string): Promise<ShadowStatus> => {
    const abs = resolve(shadowDir);
    const candidate = new PolicyEngine({ clock });
    const r = await candidate.loadFrom(() => readPolicyFolder(abs));
    if (!r.ok) {
      const lines = problemLines(r);
      throw policyErrors.error('ERR_POLICY_SET_INVALID', `shadow candidate \`${abs}\` rejected, ${shadow === undefined ? 'no shadow' : 'the previous shadow'} stays: ${r.problems.length} problem(s): ${lines.slice(0, 5).join('; ')}`);
    }
    const next = new ShadowEvaluator({ engine: candidate, audit, clock, origin: abs, ...pip, onCompared: (result) => { totals[result] += 1; } });
    shadow = next;
    decider.observe((req, d) => next.compare(req, d));
    return shadowStatus();
  };

  // Logged once the app's logger is set (it does not exist yet at start).
  let startWarning: { err: unknown } | undefined;
  if (config['policy.shadowDir'] !== '') {
    try {
      await setShadow(config['policy.shadowDir']);
    } catch (err) {
      // A bad candidate never keeps the server (or the live set) from serving.
      startWarning = { err };
    }
  }

  return {
    engine,
    decider,
    dir,
    loaders: registry === undefined ? [] : [registry],
    noteChange: () => {
      changes += 1;
      registry?.refresh();
    },
    setShadow,
    clearShadow: () => {
      if (shadow === undefined) return false;
      shadow = undefined;
      decider.observe(undefined);
      return true;
    },
    shadowStatus,
    shadowTotals: () => ({ ...totals }),
    reload: () => {
      if (dir === undefined) return Promise.reject(policyErrors.error('ERR_POLICY_NO_FOLDER', 'no policy folder is configured; start with `--policies <dir>` or set `policy.dir`'));
      return reload();
    },
    readiness: () => {
      const s = engine.status();
      const last = s.lastLoad;
      return {
        check: s.ready ? 'ok' : 'no-valid-set',
        detail: {
          dir: dir ?? null,
          activeVersion: s.activeVersion,
          policyCount: s.policyCount,
          ...(dir === undefined ? { note: 'no policy folder configured (`policy.dir`): serving an empty set, every decision is a deny' } : {}),
          ...(s.ready ? {} : { note: 'no valid policy set has loaded: every decision is a deny with reason `policy-set-unavailable`' }),
          lastLoad: last === null ? null : { ok: last.ok, at: last.at, problems: problemLines(last) },
        },
      };
    },
    baseUrl: () => base,
    setBaseUrl: (url) => {
      base = url;
    },
    setLogger: (l) => {
      log = l;
      if (startWarning !== undefined) log.warn(startWarning, 'shadow policy candidate (`policy.shadowDir`) rejected; running without shadow');
      startWarning = undefined;
    },
    bundle: () => (bundle !== undefined && bundle.version === engine.active?.version ? bundle : undefined),
    close: () => {
      if (timer !== undefined) clearTimeout(timer);
      watcher?.close();
    },
  };
}

const errorResponse = {
  type: 'object',
  properties: { code: { type: 'string' }, message: { type: 'string' }, correlationId: { type: 'string' } },
  required: ['code', 'message', 'correlationId'],
} as const;

const entitySchema = {
  type: 'object',
  properties: { type: { type: 'string', minLength: 1 }, id: { type: 'string', minLength: 1 }, properties: { type: 'object' } },
  required: ['type', 'id'],
  additionalProperties: false,
} as const;

/**
 * Accept `Authorization: Bearer <credential>` and, because the OpenID AuthZEN
 * interop runner sends the configured value as is (STANDARDS.md §8, gotcha 5),
 * the bare credential too.
 */
function asBearer(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  const v = header.trim();
  if (/^bearer\s/i.test(v)) return v;
  return v === '' || /\s/.test(v) ? header : `Bearer ${v}`;
}

/**
 * RFC 9110 §13.1.2: `If-None-Match` is false (so 304) when a listed tag
 * matches the current one by weak comparison, or the field is `*`.
 */
function ifNoneMatchHits(header: string | undefined, etag: string): boolean {
  if (header === undefined) return false;
  const v = header.trim();
  if (v === '*') return true;
  return v.split(',').some((t) => t.trim().replace(/^W\//, '') === etag);
}

function statusOf(e: unknown): number {
  return e instanceof WritError ? e.status : 500;
}

/**
 * Register the AuthZEN endpoints (`/access/v1/evaluation`,
 * `/access/v1/evaluations`, `/.well-known/authzen-configuration`) and the
 * admin policy routes (`/admin/v1/policy`, `/admin/v1/policy/reload`,
 * `/admin/v1/policy/explain`).
 *
 * @example
 * await registerPolicyRoutes(app, { policy, admins, audit });
 */
export async function registerPolicyRoutes(app: FastifyInstance, deps: { policy: PolicyService; admins: AdminPrincipals; audit: AuditSink; metrics?: Registry }): Promise<void> {
  const { policy, admins, audit } = deps;
  if (deps.metrics !== undefined) {
    new Gauge({
      name: 'writ_policy_shadow_comparisons_total',
      help: 'live decisions compared with the shadow candidate policy set, by result (agree, disagree, error)',
      labelNames: ['result'] as const,
      registers: [deps.metrics],
      collect() {
        const t = policy.shadowTotals();
        for (const result of ['agree', 'disagree', 'error'] as const) this.set({ result }, t[result]);
      },
    });
    new Gauge({
      name: 'writ_policy_shadow_active',
      help: '1 while a shadow candidate policy set is being compared with live decisions',
      registers: [deps.metrics],
      collect() {
        this.set(policy.shadowStatus().active ? 1 : 0);
      },
    });
  }
  const decide = (r: Parameters<Decider['decide']>[0]): Promise<Decision> => policy.decider.decide(r);

  // Enforcement points authenticate with an admin-issued credential whose role grants `decisions.evaluate` (role `pep`).
  const authenticatePep = async (req: FastifyRequest): Promise<void> => {
    try {
      const principal = await admins.authenticate(asBearer(req.headers.authorization));
      req.principal = principal;
      if (roleAllows(principal.role, 'decisions.evaluate')) return;
      throw governanceErrors.error('ERR_GOV_FORBIDDEN', `role \`${principal.role}\` lacks permission \`decisions.evaluate\``);
    } catch (e) {
      const status = statusOf(e);
      const p = req.principal;
      await audit.append({
        action: 'api.called',
        actor: p === undefined ? { type: 'anonymous', id: 'anonymous', ip: req.ip } : { type: 'admin', id: p.id, name: p.name, role: p.role, ip: req.ip },
        target: { type: 'api_route', id: `${req.method} ${req.routeOptions.url ?? 'unmatched'}` },
        outcome: status === 401 || status === 403 ? 'denied' : 'failure',
        reasons: status === 401 ? ['unauthenticated'] : status === 403 ? ['role-not-permitted'] : [],
        correlationId: req.correlationId,
        details: { method: req.method, route: req.routeOptions.url ?? 'unmatched', status },
      });
      throw e;
    }
  };

  // AuthZEN routes read the raw body themselves: AuthZEN 1.0 §10.1 wants a 400
  // (not 415) for a non-JSON content type, and unknown fields are ignored, so
  // there is no body schema with `additionalProperties: false` here.
  await app.register(async (scope) => {
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', { parseAs: 'string' }, (_req, body, done) => done(null, body));
    const rawOf = (req: FastifyRequest): string => (typeof req.body === 'string' ? req.body : '');
    const requester = (req: FastifyRequest) => ({ correlationId: req.correlationId, requestedBy: req.principal?.id });

    scope.post('/access/v1/evaluation', {
      onRequest: authenticatePep,
      schema: { summary: 'AuthZEN 1.0 Access Evaluation (§6): one decision', tags: ['authzen'], security: [{ adminToken: [] }] },
    }, async (req) => {
      const body = parseAuthzenBody(req.headers['content-type'], rawOf(req));
      const who = requester(req);
      return evaluate((r) => decide({ ...r, ...(who.requestedBy === undefined ? {} : { requestedBy: who.requestedBy }) }), policy.engine.active?.schemaInfo, body, { correlationId: who.correlationId });
    });

    // AuthZEN 1.0 §8: search. Each candidate is decided with the same Decider, so search and evaluation agree.
    for (const kind of ['subject', 'resource', 'action'] as const) {
      scope.post(`/access/v1/search/${kind}`, {
        onRequest: authenticatePep,
        schema: { summary: `AuthZEN 1.0 ${kind[0]?.toUpperCase() ?? ''}${kind.slice(1)} Search (§8): the ${kind}s allowed, paged`, tags: ['authzen'], security: [{ adminToken: [] }] },
      }, async (req) => {
        const body = parseAuthzenBody(req.headers['content-type'], rawOf(req));
        const who = requester(req);
        return search(kind, { decide, set: policy.engine.active, loaders: policy.loaders }, body, {
          correlationId: who.correlationId,
          ...(who.requestedBy === undefined ? {} : { requestedBy: who.requestedBy }),
        });
      });
    }

    scope.post('/access/v1/evaluations', {
      onRequest: authenticatePep,
      schema: { summary: 'AuthZEN 1.0 Access Evaluations (§7): a batch of decisions', tags: ['authzen'], security: [{ adminToken: [] }] },
    }, async (req) => {
      const body = parseAuthzenBody(req.headers['content-type'], rawOf(req));
      const who = requester(req);
      return evaluations((r) => decide({ ...r, ...(who.requestedBy === undefined ? {} : { requestedBy: who.requestedBy }) }), policy.engine.active?.schemaInfo, body, { correlationId: who.correlationId });
    });
  });

  app.get('/.well-known/authzen-configuration', {
    schema: { summary: 'AuthZEN 1.0 PDP metadata (§9)', tags: ['authzen'] },
  }, async () => {
    try {
      return authzenMetadata(policy.baseUrl());
    } catch {
      throw policyErrors.error('ERR_POLICY_METADATA_UNAVAILABLE', `AuthZEN metadata needs an https \`publicUrl\`, not \`${policy.baseUrl()}\``);
    }
  });

  // ---- admin ----------------------------------------------------------------
  const security = [{ adminToken: [] }];
  const common = { 401: errorResponse, 403: errorResponse };

  // The policy bundle for enforcement points that decide locally (`writ proxy` with `pdp.mode: "local"`).
  // Same credential as the AuthZEN routes (`decisions.evaluate`: role `pep`); the route names its
  // permission, so the app's hooks authenticate it and record every call (304s and refusals too) as `api.called`.
  const sourceFile = { type: 'object', properties: { path: { type: 'string' }, text: { type: 'string' } }, required: ['path', 'text'] } as const;
  app.get('/v1/policy/bundle', {
    config: { permission: 'decisions.evaluate' },
    schema: {
      summary: 'the active policy set\'s source (version, schema, policy files, entities file) for an enforcement point that decides locally; `ETag` is the version, `If-None-Match` answers 304',
      tags: ['authzen'],
      security,
      response: {
        200: {
          type: 'object',
          properties: { version: { type: 'string' }, schema: sourceFile, files: { type: 'array', items: sourceFile }, entities: sourceFile },
          required: ['version', 'schema', 'files'],
        },
        304: { type: 'null', description: 'the version named in `If-None-Match` is still the active one' },
        ...common,
        503: errorResponse,
      },
    },
  }, async (req, reply) => {
    const b = policy.bundle();
    if (b === undefined) throw serverErrors.error('ERR_SERVER_UNAVAILABLE', 'no valid policy set is active, so there is no policy bundle to serve');
    // RFC 9110 §8.8.3: a strong entity tag; the version is a content hash of the whole source.
    const etag = `"${b.version}"`;
    void reply.header('etag', etag).header('cache-control', 'private, no-cache');
    if (ifNoneMatchHits(req.headers['if-none-match'], etag)) return reply.code(304).send();
    const { schema, files, entities } = b.source;
    return {
      version: b.version,
      schema: { path: schema.path, text: schema.text },
      files: files.map((f) => ({ path: f.path, text: f.text })),
      ...(entities === undefined ? {} : { entities: { path: entities.path, text: entities.text } }),
    };
  });

  app.get('/admin/v1/policy', {
    config: { permission: 'policy.read' },
    schema: {
      summary: 'the active policy set: version, policies, last load and its problems',
      tags: ['policy'],
      security,
      response: {
        200: {
          type: 'object',
          properties: {
            dir: { type: ['string', 'null'] },
            activeVersion: { type: ['string', 'null'] },
            policyCount: { type: 'integer' },
            policies: {
              type: 'array',
              items: { type: 'object', properties: { id: { type: 'string' }, effect: { type: 'string' }, file: { type: 'string' }, line: { type: 'integer' }, reason: { type: 'string' } }, required: ['id', 'effect', 'file', 'line'] },
            },
            lastLoad: {
              type: ['object', 'null'],
              properties: { ok: { type: 'boolean' }, at: { type: 'string' }, activeVersion: { type: ['string', 'null'] }, candidateVersion: { type: 'string' }, problems: { type: 'array', items: { type: 'string' } } },
            },
          },
          required: ['dir', 'activeVersion', 'policyCount', 'policies', 'lastLoad'],
        },
        ...common,
      },
    },
  }, async () => {
    const s = policy.engine.status();
    const set = policy.engine.active;
    const last = s.lastLoad;
    return {
      dir: policy.dir ?? null,
      activeVersion: s.activeVersion,
      policyCount: s.policyCount,
      policies: (set?.policies ?? []).map((p) => ({ id: p.id, effect: p.effect, file: p.file, line: p.line, ...(p.reason === undefined ? {} : { reason: p.reason }) })),
      lastLoad: last === null ? null : { ok: last.ok, at: last.at, activeVersion: last.activeVersion, ...(last.candidateVersion === undefined ? {} : { candidateVersion: last.candidateVersion }), problems: problemLines(last) },
    };
  });

  app.post('/admin/v1/policy/reload', {
    config: { permission: 'policy.manage' },
    schema: {
      summary: 'reload the policy folder now; a failed load keeps the previous set serving',
      tags: ['policy'],
      security,
      response: {
        200: { type: 'object', properties: { activeVersion: { type: ['string', 'null'] }, previousVersion: { type: ['string', 'null'] }, changed: { type: 'boolean' } }, required: ['activeVersion', 'previousVersion', 'changed'] },
        400: errorResponse,
        409: errorResponse,
        ...common,
      },
    },
  }, async () => {
    const previous = policy.engine.active?.version ?? null;
    const r = await policy.reload();
    if (!r.ok) {
      const lines = problemLines(r);
      throw policyErrors.error('ERR_POLICY_SET_INVALID', `policy set rejected, ${previous ?? 'no set'} keeps serving: ${r.problems.length} problem(s): ${lines.slice(0, 5).join('; ')}`);
    }
    return { activeVersion: r.activeVersion, previousVersion: previous, changed: r.activeVersion !== previous };
  });

  app.post('/admin/v1/policy/explain', {
    config: { permission: 'policy.read' },
    schema: {
      summary: 'decide one AuthZEN-shaped request and explain it: decision, reasons, determining policies, version',
      tags: ['policy'],
      security,
      body: {
        type: 'object',
        properties: {
          subject: entitySchema,
          action: { type: 'object', properties: { name: { type: 'string', minLength: 1 }, properties: { type: 'object' } }, required: ['name'], additionalProperties: false },
          resource: entitySchema,
          context: { type: 'object' },
        },
        required: ['subject', 'action', 'resource'],
        additionalProperties: false,
      },
      response: {
        200: {
          type: 'object',
          properties: {
            decision: { type: 'string' },
            reasons: { type: 'array', items: { type: 'string' } },
            determiningPolicies: { type: 'array', items: { type: 'string' } },
            policyVersion: { type: ['string', 'null'] },
            decisionId: { type: 'string' },
            diagnostics: { type: 'array', items: { type: 'string' } },
          },
          required: ['decision', 'reasons', 'determiningPolicies', 'policyVersion', 'decisionId', 'diagnostics'],
        },
        400: errorResponse,
        ...common,
      },
    },
  }, async (req) => {
    const e = parseEvaluationRequest(req.body);
    const d = await policy.decider.decide({
      ...toDecisionRequest(policy.engine.active?.schemaInfo, e, req.correlationId),
      ...(req.principal === undefined ? {} : { requestedBy: req.principal.id }),
      purpose: 'explain',
    });
    return { decision: d.decision, reasons: d.reasons, determiningPolicies: d.determiningPolicies, policyVersion: d.policyVersion, decisionId: d.decisionId, diagnostics: d.diagnostics };
  });

  const refSchema = { type: 'object', properties: { type: { type: 'string', minLength: 1, maxLength: 256 }, id: { type: 'string', minLength: 1, maxLength: 2048 } }, required: ['type', 'id'], additionalProperties: false } as const;
  const findingSchema = {
    type: 'object',
    properties: {
      principal: refSchema,
      action: { type: 'string' },
      resource: refSchema,
      determiningPolicies: { type: 'array', items: { type: 'string' } },
      reasons: { type: 'array', items: { type: 'string' } },
    },
    required: ['principal', 'action', 'resource', 'determiningPolicies', 'reasons'],
  } as const;

  app.post('/admin/v1/policy/analyze', {
    config: { permission: 'policy.read' },
    schema: {
      summary: 'blast radius: everything `principal` can reach, or everyone who can reach `resource`, each with the permits that allow it',
      tags: ['policy'],
      security,
      body: {
        type: 'object',
        properties: { principal: refSchema, resource: refSchema, context: { type: 'object' }, maxDecisions: { type: 'integer', minimum: 1, maximum: 100_000 } },
        additionalProperties: false,
      },
      response: {
        200: {
          type: 'object',
          properties: {
            policyVersion: { type: ['string', 'null'] },
            findings: { type: 'array', items: findingSchema },
            decided: { type: 'integer' },
            denied: { type: 'integer' },
            truncated: { type: 'boolean' },
          },
          required: ['policyVersion', 'findings', 'decided', 'denied', 'truncated'],
        },
        400: errorResponse,
        ...common,
      },
    },
  }, async (req) => {
    const b = req.body as { principal?: { type: string; id: string }; resource?: { type: string; id: string }; context?: Record<string, unknown>; maxDecisions?: number };
    if ((b.principal === undefined) === (b.resource === undefined)) throw policyErrors.error('ERR_POLICY_ANALYSIS_INVALID', 'name exactly one of `principal` and `resource`');
    const set = policy.engine.active;
    const given = b.principal ?? b.resource;
    if (given === undefined) throw policyErrors.error('ERR_POLICY_ANALYSIS_INVALID', 'name exactly one of `principal` and `resource`');
    const type = set === undefined ? undefined : resolveEntityType(set.schemaInfo, given.type);
    if (type === undefined) throw policyErrors.error('ERR_POLICY_ANALYSIS_INVALID', `type \`${given.type.slice(0, 100)}\` is not declared by the active policy schema`);
    const ref = { type, id: given.id };
    return analyzeAccess({ decide, set, loaders: policy.loaders }, b.principal === undefined ? { resource: ref } : { principal: ref }, {
      ...(b.context === undefined ? {} : { context: b.context }),
      ...(b.maxDecisions === undefined ? {} : { maxDecisions: b.maxDecisions }),
      correlationId: req.correlationId,
      ...(req.principal === undefined ? {} : { requestedBy: req.principal.id }),
    });
  });

  const shadowSchema = {
    type: 'object',
    properties: {
      active: { type: 'boolean' },
      dir: { type: ['string', 'null'] },
      version: { type: ['string', 'null'] },
      since: { type: ['string', 'null'] },
      stats: { type: ['object', 'null'], properties: { compared: { type: 'integer' }, disagreements: { type: 'integer' }, errors: { type: 'integer' } } },
    },
    required: ['active', 'dir', 'version', 'since', 'stats'],
  } as const;
  const adminActor = (req: FastifyRequest) => {
    const p = req.principal;
    return p === undefined ? { type: 'anonymous' as const, id: 'anonymous', ip: req.ip } : { type: 'admin' as const, id: p.id, name: p.name, role: p.role, ip: req.ip };
  };

  app.get('/admin/v1/policy/shadow', {
    config: { permission: 'policy.read' },
    schema: { summary: 'the shadow candidate policy set: folder, version, and how often it disagreed with live decisions', tags: ['policy'], security, response: { 200: shadowSchema, ...common } },
  }, async () => policy.shadowStatus());

  app.put('/admin/v1/policy/shadow', {
    config: { permission: 'policy.manage' },
    schema: {
      summary: 'decide live traffic with a candidate policy folder as well, recording disagreements without enforcing them; a folder that does not compile changes nothing',
      tags: ['policy'],
      security,
      body: { type: 'object', properties: { dir: { type: 'string', minLength: 1, maxLength: 4096 } }, required: ['dir'], additionalProperties: false },
      response: { 200: shadowSchema, 400: errorResponse, ...common },
    },
  }, async (req) => {
    const { dir: shadowDir } = req.body as { dir: string };
    const status = await policy.setShadow(shadowDir);
    await audit.append({
      action: 'policy.shadow.enabled',
      actor: adminActor(req),
      target: { type: 'policy_set', id: status.version ?? 'none', ...(status.dir === null ? {} : { name: status.dir }) },
      outcome: 'success',
      correlationId: req.correlationId,
      details: { dir: status.dir, policyVersion: status.version, activeVersion: policy.engine.active?.version ?? null },
    });
    return status;
  });

  app.delete('/admin/v1/policy/shadow', {
    config: { permission: 'policy.manage' },
    schema: {
      summary: 'stop the shadow comparison',
      tags: ['policy'],
      security,
      response: { 200: { type: 'object', properties: { cleared: { type: 'boolean' }, previous: shadowSchema }, required: ['cleared', 'previous'] }, ...common },
    },
  }, async (req) => {
    const previous = policy.shadowStatus();
    const cleared = policy.clearShadow();
    if (cleared) {
      await audit.append({
        action: 'policy.shadow.disabled',
        actor: adminActor(req),
        target: { type: 'policy_set', id: previous.version ?? 'none', ...(previous.dir === null ? {} : { name: previous.dir }) },
        outcome: 'success',
        correlationId: req.correlationId,
        details: { dir: previous.dir, policyVersion: previous.version, stats: previous.stats },
      });
    }
    return { cleared, previous };
  });
}
