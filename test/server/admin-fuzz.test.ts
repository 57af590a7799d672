/**
 * Property: no input to the authenticated API produces a 5xx or takes the
 * server down, and every error answer carries a code `ERR_…`.
 *
 * The operations are read at run time from the server's own `/openapi.json`:
 * every operation under `/admin/` and every other one that declares the admin
 * credential (`/access/v1`, `/v1`, `/ssf`). A route added later is fuzzed
 * without editing this file. Inputs are shaped by each operation's schema
 * (path parameters, documented query names, body property names, types and
 * enums), so most requests get past validation to the handler, and are
 * sometimes wrong on purpose; raw junk bodies, odd content types, odd
 * headers and seven kinds of credential (the bootstrap admin, an auditor, a
 * pep, a revoked admin, none, garbage, a wrong scheme) are mixed in. Ids seen
 * in earlier answers are reused, so by-id routes reach things that exist.
 * Streams (SSE) are judged on their status and then closed.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import fc from 'fast-check';
import { startTestServer } from '../support/server.ts';
import type { TestServer } from '../support/server.ts';

/** Runs per operation: about 75 operations, so about 1,500 requests; `WRIT_FUZZ_RUNS=400` digs deeper locally. */
const RUNS_PER_OPERATION = Number(process.env.WRIT_FUZZ_RUNS ?? 20);
/** A request that has not answered by then is a hang, reported as a failure. */
const REQUEST_TIMEOUT_MS = 20_000;
const ERROR_CODE = /^ERR_[A-Z0-9_]+$/;

interface JsonSchema {
  readonly type?: string | readonly string[];
  readonly enum?: readonly unknown[];
  readonly const?: unknown;
  readonly properties?: Readonly<Record<string, JsonSchema>>;
  readonly required?: readonly string[];
  readonly items?: JsonSchema;
  readonly oneOf?: readonly JsonSchema[];
  readonly anyOf?: readonly JsonSchema[];
  readonly allOf?: readonly JsonSchema[];
  readonly minLength?: number;
  readonly maxLength?: number;
  readonly minimum?: number;
  readonly maximum?: number;
  readonly minItems?: number;
  readonly maxItems?: number;
  readonly pattern?: string;
  readonly format?: string;
}

interface Parameter {
  readonly name: string;
  readonly in: string;
  readonly required?: boolean;
  readonly schema?: JsonSchema;
}

interface Operation {
  readonly method: string;
  readonly path: string;
  readonly parameters: readonly Parameter[];
  readonly body: JsonSchema | undefined;
}

type Credential = 'admin' | 'auditor' | 'pep' | 'revoked' | 'none' | 'garbage' | 'wrong-scheme';

const ABSENT = Symbol('absent');

/** Property names of a schema, its combinators' branches included. */
function propertiesOf(s: JsonSchema): Map<string, { schema: JsonSchema; required: boolean }> {
  const out = new Map<string, { schema: JsonSchema; required: boolean }>();
  for (const branch of [s, ...(s.allOf ?? []), ...(s.oneOf ?? []), ...(s.anyOf ?? [])]) {
    for (const [k, v] of Object.entries(branch.properties ?? {})) if (!out.has(k)) out.set(k, { schema: v, required: false });
  }
  for (const k of s.required ?? []) out.set(k, { schema: out.get(k)?.schema ?? {}, required: true });
  return out;
}

function typesOf(s: JsonSchema): readonly string[] {
  if (Array.isArray(s.type)) return s.type as readonly string[];
  if (typeof s.type === 'string') return [s.type];
  if (s.properties !== undefined || s.oneOf !== undefined || s.anyOf !== undefined || s.allOf !== undefined) return ['object'];
  return ['string', 'integer', 'boolean', 'object', 'array'];
}

/** Strings that mean something to some handler: ids seen in earlier answers, SPIFFE IDs, dates, URLs. */
function meaningfulString(pool: readonly string[]): fc.Arbitrary<string> {
  return fc.oneof(
    fc.constantFrom('spiffe://writ.local/fuzz', 'spiffe://writ.local/ns/prod/sa/api', 'spiffe://other.example/x', '2030-01-01T00:00:00Z', '1970-01-01', 'https://127.0.0.1:1/jwks', 'admin', 'postgres', 'x'),
    fc.nat().map((i) => (pool.length === 0 ? 'none-yet' : (pool[i % pool.length] ?? 'none'))),
  );
}

/** A string the schema accepts (pattern, format, length), or a meaningful one. */
function stringFor(s: JsonSchema | undefined, ctx: Ctx): fc.Arbitrary<string> {
  if (s?.enum !== undefined && s.enum.length > 0) return fc.constantFrom(...s.enum.map(String));
  const shaped: fc.Arbitrary<string>[] = [];
  if (s?.pattern !== undefined) shaped.push(fc.stringMatching(new RegExp(s.pattern)));
  if (s?.format === 'date-time') shaped.push(fc.date({ min: new Date(0), max: new Date(4e12), noInvalidDate: true }).map((d) => d.toISOString()));
  if (shaped.length === 0) {
    const min = s?.minLength ?? 0;
    shaped.push(fc.string({ minLength: min, maxLength: Math.max(min, Math.min(s?.maxLength ?? 40, 40)) }));
  }
  return fc.oneof({ weight: 3, arbitrary: fc.oneof(...shaped) }, { weight: 2, arbitrary: meaningfulString(ctx.pool) });
}

function wrongValue(): fc.Arbitrary<unknown> {
  return fc.oneof(fc.string({ maxLength: 20 }), fc.integer(), fc.double(), fc.boolean(), fc.constant(null), fc.array(fc.integer(), { maxLength: 3 }), fc.dictionary(fc.string({ maxLength: 8 }), fc.string({ maxLength: 8 }), { maxKeys: 2 }));
}

function rightValue(s: JsonSchema, depth: number, ctx: Ctx, strict: boolean): fc.Arbitrary<unknown> {
  if (s.enum !== undefined && s.enum.length > 0) return fc.constantFrom(...s.enum);
  if (s.const !== undefined) return fc.constant(s.const);
  const arbs = typesOf(s).map((t): fc.Arbitrary<unknown> => {
    switch (t) {
      case 'string':
        return stringFor(s, ctx);
      case 'integer':
        return fc.oneof(fc.integer({ min: s.minimum ?? -5, max: s.maximum ?? 5000 }), fc.integer());
      case 'number':
        return fc.oneof(fc.double({ noNaN: true, noDefaultInfinity: true }), fc.integer({ min: -5, max: 5000 }));
      case 'boolean':
        return fc.boolean();
      case 'null':
        return fc.constant(null);
      case 'array':
        return fc.array(s.items === undefined ? wrongValue() : valueFor(s.items, depth + 1, ctx, strict), { minLength: Math.min(s.minItems ?? 0, 3), maxLength: Math.max(Math.min(s.minItems ?? 0, 3), Math.min(s.maxItems ?? 3, 3)) });
      default:
        return depth > 3 ? fc.constant({}) : objectFor(s, depth + 1, ctx, strict);
    }
  });
  return arbs.length === 1 ? (arbs[0] as fc.Arbitrary<unknown>) : fc.oneof(...arbs);
}

/** Strict: a value of the right type. Otherwise mostly one of the right type, sometimes one of the wrong type. */
function valueFor(s: JsonSchema, depth: number, ctx: Ctx, strict: boolean): fc.Arbitrary<unknown> {
  if (strict) return rightValue(s, depth, ctx, strict);
  return fc.oneof({ weight: 5, arbitrary: rightValue(s, depth, ctx, strict) }, { weight: 1, arbitrary: wrongValue() });
}

/**
 * An object with the schema's keys: optional ones half the time; required ones always when
 * strict, mostly otherwise, and then sometimes an extra key.
 */
function objectFor(s: JsonSchema, depth: number, ctx: Ctx, strict: boolean): fc.Arbitrary<Record<string, unknown>> {
  const props = [...propertiesOf(s)];
  const fields = props.map(([k, p]) => (p.required && strict ? valueFor(p.schema, depth, ctx, strict) : fc.option(valueFor(p.schema, depth, ctx, strict), { nil: ABSENT, freq: p.required ? 12 : 2 })).map((v) => [k, v] as const));
  // An extra key is a property name of some other schema of the API, or an unknown one.
  const extra = strict ? fc.constant(undefined) : fc.oneof({ weight: 3, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: fc.tuple(fc.oneof(fc.constantFrom(...ctx.names), fc.string({ maxLength: 10 })), wrongValue()) });
  return fc.tuple(fc.tuple(...fields), extra).map(([fs, x]) => {
    const o: Record<string, unknown> = {};
    for (const [k, v] of fs) if (v !== ABSENT) o[k] = v;
    if (x !== undefined) o[x[0]] = x[1];
    return o;
  });
}

interface Ctx {
  /** Ids and names from earlier answers, so paths and bodies name things that exist. */
  readonly pool: string[];
  /** Every property name of every request schema of the API. */
  readonly names: string[];
}

interface Request {
  readonly method: string;
  readonly path: string;
  readonly headers: Record<string, string>;
  readonly body: string | undefined;
}

const CONTENT_TYPES = [undefined, 'application/json', 'application/json; charset=utf-8', 'text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/json; charset=latin1', '', ';;;', 'application/secevent+jwt'] as const;

function rawBody(): fc.Arbitrary<string> {
  return fc.oneof(
    fc.string({ maxLength: 200 }),
    fc.constantFrom('{', '{"a":', 'null', '[]', '""', '0', 'true', '{}', '[{}]', '\u0000', '{"__proto__":{"x":1}}', '{"constructor":{"prototype":{"x":1}}}'),
    fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)),
    fc.array(fc.jsonValue({ maxDepth: 1 }), { maxLength: 5 }).map((v) => JSON.stringify(v)),
    fc.constant('x'.repeat(5000)),
    fc.constant(JSON.stringify({ a: 'x'.repeat(5000) })),
  );
}

function requestFor(op: Operation, ctx: Ctx): fc.Arbitrary<Request & { credential: Credential }> {
  const pathParams = op.parameters.filter((p) => p.in === 'path');
  const queryParams = op.parameters.filter((p) => p.in === 'query');
  const idValue = (p: Parameter): fc.Arbitrary<string> => fc.oneof(
    { weight: 3, arbitrary: stringFor(p.schema, ctx).map(encodeURIComponent) },
    { weight: 2, arbitrary: fc.stringMatching(/^[0-9a-f]{16}$/) },
    { weight: 1, arbitrary: fc.string({ maxLength: 40 }).map(encodeURIComponent) },
    { weight: 1, arbitrary: fc.constantFrom('..', '%2e%2e', '%00', '%2F', '%', '%zz', '%E0%A4%A', 'a'.repeat(101), 'a'.repeat(300)) },
  );
  const path = fc.tuple(...pathParams.map(idValue)).map((vs) => pathParams.reduce((p, param, i) => p.replace(`{${param.name}}`, vs[i] ?? ''), op.path));
  const queryValue = (s: JsonSchema | undefined): fc.Arbitrary<string> => fc.oneof({ weight: 4, arbitrary: stringFor(s, ctx) }, { weight: 1, arbitrary: fc.oneof(fc.string({ maxLength: 30 }), fc.integer().map(String), fc.integer({ min: 0, max: 100 }).map(String)) });
  const query = fc.tuple(
    fc.tuple(...queryParams.map((p) => fc.option(queryValue(p.schema), { nil: undefined, freq: p.required === true ? 10 : 2 }).map((v) => [p.name, v] as const))),
    fc.oneof({ weight: 6, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: fc.tuple(fc.oneof(fc.constantFrom('x', 'token', 'limit', 'after', 'format', ...queryParams.map((p) => p.name)), fc.string({ maxLength: 8 })), fc.string({ maxLength: 20 })) }),
  ).map(([known, extra]) => {
    const q = new URLSearchParams();
    for (const [k, v] of known) if (v !== undefined) q.append(k, v);
    if (extra !== undefined) q.append(extra[0], extra[1]);
    const s = q.toString();
    return s === '' ? '' : `?${s}`;
  });
  // Half the shaped bodies satisfy the schema, so they reach the handler; the other half are off in one or more places.
  const shaped = op.body === undefined ? fc.jsonValue({ maxDepth: 2 }) : fc.oneof(valueFor(op.body, 0, ctx, true), valueFor(op.body, 0, ctx, false));
  const body = fc.oneof(
    { weight: op.body === undefined ? 2 : 8, arbitrary: shaped.map((v) => ({ body: JSON.stringify(v), contentType: 'application/json' as string | undefined })) },
    { weight: 2, arbitrary: fc.tuple(rawBody(), fc.constantFrom(...CONTENT_TYPES)).map(([b, ct]) => ({ body: b as string | undefined, contentType: ct as string | undefined })) },
    { weight: op.body === undefined ? 6 : 1, arbitrary: fc.constantFrom(undefined, undefined, undefined, ...CONTENT_TYPES).map((ct) => ({ body: undefined as string | undefined, contentType: ct as string | undefined })) },
  );
  // Mostly the documented method; sometimes another one on the same path.
  const method = fc.oneof({ weight: 9, arbitrary: fc.constant(op.method) }, { weight: 1, arbitrary: fc.constantFrom('GET', 'POST', 'PUT', 'PATCH', 'DELETE') });
  const credential = fc.oneof(
    { weight: 8, arbitrary: fc.constant<Credential>('admin') },
    { weight: 3, arbitrary: fc.constantFrom<Credential>('auditor', 'pep') },
    { weight: 2, arbitrary: fc.constantFrom<Credential>('none', 'garbage', 'wrong-scheme', 'revoked') },
  );
  // Headers some routes read: correlation, request id, stream resume, content negotiation.
  const header = fc.tuple(fc.constantFrom('traceparent', 'x-request-id', 'last-event-id', 'accept', 'if-none-match', 'x-forwarded-for'), fc.oneof(fc.string({ maxLength: 60 }).map((v) => v.replace(/[^\x20-\x7e]/g, '')), fc.constantFrom('00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', '-1', '99999999999999999999', 'text/event-stream', '*/*', '"x"')));
  const headerSet = fc.oneof({ weight: 3, arbitrary: fc.constant([] as [string, string][]) }, { weight: 1, arbitrary: fc.array(header, { maxLength: 2 }) });
  return fc.record({ method, path, query, body, credential, extra: headerSet }).map((r) => {
    const headers: Record<string, string> = Object.fromEntries(r.extra);
    if (r.body.contentType !== undefined) headers['content-type'] = r.body.contentType;
    const withBody = r.body.body !== undefined && r.method !== 'GET';
    return { method: r.method, path: r.path + r.query, headers, body: withBody ? r.body.body : undefined, credential: r.credential };
  });
}

/** Collect ids and names from an answer into the pool (never a protected principal's id). */
function harvest(v: unknown, pool: string[], protectedIds: ReadonlySet<string>, depth = 0): void {
  if (depth > 4 || v === null || typeof v !== 'object') return;
  for (const [k, x] of Object.entries(v)) {
    if (typeof x === 'string' && /^(id|name|[a-z]+Id|[a-z]+_id|subject|spiffeId|jti)$/.test(k) && x.length <= 200 && !protectedIds.has(x) && !pool.includes(x)) {
      if (pool.length >= 300) pool.shift();
      pool.push(x);
    } else harvest(x, pool, protectedIds, depth + 1);
  }
}

describe('authenticated API under generated input', () => {
  let s: TestServer;
  let ops: Operation[] = [];
  const tokens: Partial<Record<Credential, string>> = {};
  const protectedIds = new Set<string>();
  const ctx: Ctx = { pool: [], names: [] };
  let shadowRoot = '';

  before(async () => {
    s = await startTestServer({ flags: { logLevel: 'warn', 'http.bodyLimitBytes': 4096 } });
    shadowRoot = join(s.dataDir, 'fuzz-shadow');
    tokens.admin = s.token;
    for (const role of ['auditor', 'pep'] as const) {
      const r = await s.call('POST', '/admin/v1/principals', { body: { name: `fuzz-${role}`, role } });
      assert.equal(r.status, 201);
      tokens[role] = r.json.token as string;
      protectedIds.add(r.json.principal.id as string);
    }
    const gone = await s.call('POST', '/admin/v1/principals', { body: { name: 'fuzz-revoked', role: 'admin' } });
    tokens.revoked = gone.json.token as string;
    assert.equal((await s.call('DELETE', `/admin/v1/principals/${gone.json.principal.id as string}`)).status, 204);
    protectedIds.add((await s.call('GET', '/admin/v1/whoami')).json.id as string);

    const spec = (await s.call('GET', '/openapi.json', { token: null })).json as { paths: Record<string, Record<string, { parameters?: Parameter[]; security?: unknown[]; requestBody?: { content?: Record<string, { schema?: JsonSchema }> } }>> };
    const names = new Set<string>();
    for (const [path, byMethod] of Object.entries(spec.paths)) {
      for (const [method, op] of Object.entries(byMethod)) {
        if (!path.startsWith('/admin/') && (op.security ?? []).length === 0) continue;
        const body = op.requestBody?.content?.['application/json']?.schema;
        const collect = (sc: JsonSchema | undefined, depth: number): void => {
          if (sc === undefined || depth > 4) return;
          for (const [k, p] of propertiesOf(sc)) {
            names.add(k);
            collect(p.schema, depth + 1);
            collect(p.schema.items, depth + 1);
          }
        };
        collect(body, 0);
        ops.push({ method: method.toUpperCase(), path, parameters: op.parameters ?? [], body });
      }
    }
    ctx.names.push(...names);
    // A few things that exist, so by-id routes also run on real ones (their ids join the pool).
    const seed: [string, string, unknown][] = [
      ['POST', '/admin/v1/entries', { spiffeId: 'spiffe://writ.local/fuzz/api', nodeSelectors: ['join_token:x:y'], selectors: ['unix:uid:1000'], owner: { team: 'fuzz', contact: 'fuzz@example.com' } }],
      ['POST', '/admin/v1/tasks', { owner: 'spiffe://writ.local/fuzz/api', ttlSeconds: 600, scopes: ['read'] }],
      ['POST', '/admin/v1/oauth/clients', { client_id: 'fuzz-client', spiffe_id: 'spiffe://writ.local/fuzz/api' }],
      ['POST', '/ssf/stream', {}],
      ['POST', '/admin/v1/signals', { type: 'risk-changed', subject: 'spiffe://writ.local/fuzz/api', level: 'high' }],
    ];
    for (const [method, path, body] of seed) {
      const r = await s.call(method, path, { body });
      assert.equal(r.status, 201, `${method} ${path}: ${r.text}`);
      harvest(r.json, ctx.pool, protectedIds);
    }
    ops = ops.sort((a, b) => `${a.path} ${a.method}`.localeCompare(`${b.path} ${b.method}`));
  });
  after(async () => {
    await s.stop();
  });

  /**
   * A few inputs are kept inside the test's sandbox, so the fuzzing neither reads the whole disk nor waits for minutes; they are still random within it.
   */
  function tame(op: Operation, body: string | undefined): string | undefined {
    if (body === undefined) return body;
    let v: unknown;
    try {
      v = JSON.parse(body);
    } catch {
      return body;
    }
    if (v === null || typeof v !== 'object' || Array.isArray(v)) return body;
    const o = v as Record<string, unknown>;
    // The shadow folder is read recursively: a generated `/` would walk the machine's whole disk.
    if (op.path === '/admin/v1/policy/shadow' && typeof o.dir === 'string') o.dir = join(shadowRoot, encodeURIComponent(o.dir));
    // A drill waits `timeoutMs` (default 10 s) for enforcement points the fuzzer registered but that never acknowledge.
    if (op.path === '/admin/v1/drills/revoke' && (o.timeoutMs === undefined || (typeof o.timeoutMs === 'number' && o.timeoutMs > 300))) o.timeoutMs = 150;
    return JSON.stringify(o);
  }

  function authorization(c: Credential): string | undefined {
    switch (c) {
      case 'none':
        return undefined;
      case 'garbage':
        return 'Bearer writ.zzz';
      case 'wrong-scheme':
        return `Basic ${tokens.admin ?? ''}`;
      default:
        return `Bearer ${tokens[c] ?? ''}`;
    }
  }

  const seen = { total: 0, ok: 0, byStatus: new Map<number, number>() };

  async function send(op: Operation, r: Request & { credential: Credential }): Promise<void> {
    const headers = { ...r.headers };
    const auth = authorization(r.credential);
    if (auth !== undefined) headers.authorization = auth;
    const body = tame(op, r.body);
    const what = `${r.method} ${r.path} as ${r.credential} (${r.headers['content-type'] ?? 'no content-type'}) ${body === undefined ? '' : body.slice(0, 300)}`;
    let res: Response;
    try {
      res = await fetch(`${s.url}${r.path}`, { method: r.method, headers, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS), ...(body === undefined ? {} : { body }) });
    } catch (err) {
      throw new Error(`${what} → no answer: ${String(err)}`);
    }
    seen.total += 1;
    seen.byStatus.set(res.status, (seen.byStatus.get(res.status) ?? 0) + 1);
    if (res.status < 300) seen.ok += 1;
    // A stream (SSE) never ends: its status and headers are the answer.
    if ((res.headers.get('content-type') ?? '').startsWith('text/event-stream')) {
      await res.body?.cancel();
      assert.ok(res.status < 400, `${what} → ${res.status} stream`);
      return;
    }
    const text = await res.text();
    assert.ok(res.status < 500, `${what} → ${res.status} ${text.slice(0, 500)}`);
    if (res.status >= 400) {
      let j: { code?: unknown };
      try {
        j = JSON.parse(text) as { code?: unknown };
      } catch {
        assert.fail(`${what} → ${res.status} is not JSON: ${text.slice(0, 300)}`);
      }
      assert.match(String(j.code), ERROR_CODE, `${what} → ${res.status} ${text.slice(0, 300)}`);
    } else if (text !== '') {
      try {
        harvest(JSON.parse(text), ctx.pool, protectedIds);
      } catch {
        // not JSON (an export, a PEM): nothing to harvest
      }
    }
  }

  it('a path parameter as long as its schema allows is routed to the handler, not refused by the router (414)', async () => {
    for (const op of ops) {
      const params = op.parameters.filter((p) => p.in === 'path' && p.schema?.maxLength !== undefined);
      if (params.length === 0) continue;
      const path = params.reduce((p, param) => p.replace(`{${param.name}}`, 'a'.repeat(param.schema?.maxLength ?? 0)), op.path);
      const body = op.body === undefined ? {} : { body: {} };
      const r = await s.call(op.method, path, body);
      assert.notEqual(r.status, 414, `${op.method} ${op.path} with a ${params.map((p) => p.schema?.maxLength).join('/')}-character id: ${r.text}`);
      assert.ok(r.status < 500, `${op.method} ${path} → ${r.status} ${r.text}`);
    }
  });

  it('every documented operation: never 5xx, every error has a code, and the server stays up', async (t) => {
    const admin = ops.filter((o) => o.path.startsWith('/admin/'));
    assert.ok(admin.length >= 50, `the admin API is enumerated from /openapi.json (${admin.length} operations)`);
    for (const op of ops) {
      await t.test(`${op.method} ${op.path}`, async () => {
        await fc.assert(
          fc.asyncProperty(requestFor(op, ctx), async (r) => send(op, r)),
          { numRuns: RUNS_PER_OPERATION },
        );
      });
    }
    const statuses = [...seen.byStatus].sort((a, b) => a[0] - b[0]).map(([k, v]) => `${k}×${v}`).join(' ');
    t.diagnostic(`${ops.length} operations, ${seen.total} requests, ${seen.ok} answered 2xx; ${statuses}`);
    // The inputs are shaped well enough to reach handlers, not only the validator and the auth hook.
    assert.ok(seen.ok >= seen.total / 10, `only ${seen.ok} of ${seen.total} requests were answered 2xx`);

    assert.equal((await s.call('GET', '/healthz', { token: null })).status, 200);
    const v = await s.call('GET', '/admin/v1/audit/verify');
    assert.equal(v.status, 200);
    assert.equal(v.json.ok, true, 'the chain survived the fuzzing');
    // Nothing the fuzzer sent made the server log an error (a refused request is logged at debug).
    const errors = s.logs().split('\n').filter((l) => /"level":(50|60)\b/.test(l));
    assert.deepEqual(errors, [], 'no error in the server log');
  });
});
