/**
 * Workload identity, served: the key-encryption key, the CA of the trust
 * domain with its rotation timer, and the HTTP routes — the public SPIFFE
 * bundle endpoint and OIDC discovery + JWKS, the node API the agent uses
 * (docs/identity-api.md), and the admin routes for entries, join tokens,
 * nodes and the CA.
 */
import { chmodSync, existsSync, readFileSync, statSync, writeFileSync, mkdirSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join, resolve } from 'node:path';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { systemClock } from '../kernel/index.ts';
import type { AuditActor, AuditSink, Clock, WritConfig } from '../kernel/index.ts';
import { CaManager, IdentityIssuer, OidcAttestor, attestationErrors, decodeKek, kekErrors, kekModeIsInsecure, nodeIdOf, parseOidcIssuers } from '../identity/index.ts';
import type { CaKeyKind, IdentityStore, IssuerContext, NodeRecord, RegistrationEntry, SvidIssuanceGate, X509Svid } from '../identity/index.ts';
import type { RevocationBus, RevocationEvent } from '../signals/index.ts';
import type { CompiledPolicySet, Decider } from '../policy/index.ts';
import { openEventStream } from './sse.ts';

declare module 'fastify' {
  interface FastifyRequest {
    /** The exact body text of a node API request (its signature covers it). */
    rawBody: string | undefined;
  }
}

/** Where the KEK came from, for the startup log (never the key). */
export interface KekSource {
  readonly kek: Uint8Array;
  readonly source: 'env' | 'file' | 'generated';
  readonly file?: string;
  readonly warning?: string;
}

/**
 * Load the key-encryption key: `WRIT_KEK`, else `identity.kekFile` (mode
 * 0600), else in development mode `<dataDir>/kek` (created 0600 with a
 * warning); production mode without a KEK refuses to start.
 *
 * @example
 * const { kek } = loadKek(config);
 */
export function loadKek(config: WritConfig): KekSource {
  if (config.kek !== '') return { kek: decodeKek(config.kek, 'WRIT_KEK'), source: 'env' };
  const readFile = (file: string): Uint8Array => {
    let st;
    try {
      st = statSync(file);
    } catch (cause) {
      throw kekErrors.error('ERR_KEK_FILE_UNREADABLE', `cannot read the key-encryption key file ${file}`, { cause });
    }
    if (kekModeIsInsecure(st.mode)) throw kekErrors.error('ERR_KEK_FILE_INSECURE', `key-encryption key file ${file} has mode ${(st.mode & 0o777).toString(8)}; it must be 0600`);
    return decodeKek(readFileSync(file), `file ${file}`);
  };
  if (config['identity.kekFile'] !== '') {
    const file = resolve(config['identity.kekFile']);
    return { kek: readFile(file), source: 'file', file };
  }
  if (config.mode === 'production') {
    throw kekErrors.error('ERR_KEK_MISSING', 'production mode needs a key-encryption key: set WRIT_KEK (base64 of 32 bytes) or `identity.kekFile`');
  }
  mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  const file = join(resolve(config.dataDir), 'kek');
  if (existsSync(file)) return { kek: readFile(file), source: 'file', file };
  writeFileSync(file, `${randomBytes(32).toString('base64')}\n`, { mode: 0o600, flag: 'wx' });
  chmodSync(file, 0o600);
  return { kek: readFile(file), source: 'generated', file, warning: 'development mode generated a key-encryption key; keep it with the store (without it the CA keys cannot be read) and set WRIT_KEK or identity.kekFile in production' };
}

/** The identity part of the running server. */
export interface ServedIdentity {
  readonly issuer: IdentityIssuer;
  readonly kek: KekSource;
  /** Stop the rotation timer. */
  close(): void;
}

/**
 * Open the CA of the configured trust domain and start its rotation timer.
 *
 * @example
 * const identity = await startIdentity(config, store.identity, audit, (e) => log.error(e));
 */
export async function startIdentity(config: WritConfig, store: IdentityStore, audit: AuditSink, onRotationError: (err: unknown) => void, clock: Clock = systemClock): Promise<ServedIdentity> {
  const kek = loadKek(config);
  const ca = await CaManager.open({
    trustDomain: config['identity.trustDomain'],
    clock,
    audit,
    store,
    kek: kek.kek,
    rootTtlMs: config['identity.rootTtlSeconds'] * 1000,
    x509CaTtlMs: config['identity.x509CaTtlSeconds'] * 1000,
    jwtKeyTtlMs: config['identity.jwtKeyTtlSeconds'] * 1000,
    x509SvidDefaultTtlMs: config['identity.x509SvidTtlSeconds'] * 1000,
    x509SvidMaxTtlMs: config['identity.x509SvidMaxTtlSeconds'] * 1000,
    jwtSvidDefaultTtlMs: config['identity.jwtSvidTtlSeconds'] * 1000,
    jwtSvidMaxTtlMs: config['identity.jwtSvidMaxTtlSeconds'] * 1000,
    refreshHintSeconds: config['identity.bundleRefreshHintSeconds'],
  });
  const issuers = parseOidcIssuers(config['identity.oidcIssuers']);
  const issuer = new IdentityIssuer({
    ca,
    store,
    audit,
    clock,
    ...(issuers.length === 0 ? {} : { oidc: new OidcAttestor(issuers, clock, store) }),
    x509SvidTtlSeconds: config['identity.x509SvidTtlSeconds'],
    x509SvidMaxTtlSeconds: config['identity.x509SvidMaxTtlSeconds'],
    jwtSvidTtlSeconds: config['identity.jwtSvidTtlSeconds'],
    jwtSvidMaxTtlSeconds: config['identity.jwtSvidMaxTtlSeconds'],
    nodeSvidTtlSeconds: Math.min(config['identity.nodeSvidTtlSeconds'], config['identity.x509SvidMaxTtlSeconds']),
    joinTokenTtlSeconds: config['identity.joinTokenTtlSeconds'],
  });
  let timer: NodeJS.Timeout | undefined;
  const every = config['identity.rotationCheckSeconds'];
  if (every > 0) {
    let running = false;
    timer = setInterval(() => {
      if (running) return;
      running = true;
      issuer.runDue().catch(onRotationError).finally(() => {
        running = false;
      });
    }, every * 1000);
    timer.unref();
  }
  return { issuer, kek, close: () => { if (timer !== undefined) clearInterval(timer); } };
}

// ---------------------------------------------------------------- SVID issuance and policy

/** Deny reasons that are an answer of the policies, not a failure of the PDP. */
const NO_PERMIT = 'no-matching-permit';

/**
 * The PDP check asked before a workload SVID is signed (IdentityIssuer's
 * issuance gate): `credential/issue` with the workload as principal and as
 * resource, the question signal re-evaluation asks of an SVID
 * (signals-reevaluation.ts), so what re-evaluation cut is not re-issued at
 * the next sync. Only a matched `forbid` refuses: SVIDs are identity, issued
 * on registration, so a permit is not required and a server without policies
 * keeps issuing. A deny the policies did not determine (engine error,
 * timeout, no policy set, audit down) is a PDP failure: refused, fail closed.
 *
 * @example
 * identity.issuer.setIssuanceGate(svidIssuanceGate(policy.decider));
 */
export function svidIssuanceGate(decider: Decider, engine?: { readonly active: CompiledPolicySet | undefined }): SvidIssuanceGate {
  return async ({ spiffeId, correlationId }) => {
    // Only a forbid refuses: when the active set has no forbid whose scope can match this
    // question, the answer is known without asking Cedar (and issuance stays near the raw
    // signing rate). Any set with such a forbid is asked, and its decision is audited.
    const active = engine?.active;
    if (active !== undefined && !active.mayForbid({ principalType: 'Writ::Workload', actionKey: 'Writ::Action::"credential/issue"', resourceType: 'Writ::Workload' })) {
      return { verdict: 'issue', reasons: ['no-applicable-forbid'], policies: [] };
    }
    const principal = { type: 'Writ::Workload', id: spiffeId };
    const d = await decider.decide({
      principal,
      action: 'credential/issue',
      resource: principal,
      entities: [{ uid: principal, attrs: { spiffeId, labels: [], legacy: false } }],
      correlationId,
      requestedBy: 'svid-issuance',
    });
    if (d.decision === 'allow') return { verdict: 'issue', reasons: d.reasons, policies: [] };
    if (d.determiningPolicies.length > 0) return { verdict: 'forbidden', reasons: d.reasons, policies: d.determiningPolicies };
    if (d.reasons.length === 1 && d.reasons[0] === NO_PERMIT) return { verdict: 'issue', reasons: d.reasons, policies: [] };
    return { verdict: 'unavailable', reasons: d.reasons, policies: [] };
  };
}

// ---------------------------------------------------------------- routes

/**
 * What the node API needs from the rest of the server. `url` is set once the
 * mutual-TLS listener is up (advertised to agents); `revocations` serves
 * `GET /node/v1/revocations/stream` when present.
 */
export interface NodeApiWiring {
  readonly url: string | undefined;
  readonly revocations?: { readonly bus: RevocationBus; readonly heartbeatMs: number; readonly audit: AuditSink };
}

const CURSOR = /^(0|[1-9][0-9]{0,15})$/;
/** How long a node's served SPIFFE IDs are reused by its revocation stream (ms). */
const SERVED_IDS_MS = 1000;

const errorResponse = {
  type: 'object',
  properties: { code: { type: 'string' }, message: { type: 'string' }, correlationId: { type: 'string' } },
  required: ['code', 'message', 'correlationId'],
} as const;

const selectorsSchema = { type: 'array', maxItems: 64, items: { type: 'string', maxLength: 4096 } } as const;
const publicKeySchema = { type: 'string', minLength: 1, maxLength: 16384 } as const;

/** Entry fields; nothing is `required` here, so the domain answers with its own codes (owner, SPIFFE ID). */
const entryProperties = {
  spiffeId: { type: 'string', maxLength: 2048 },
  parentId: { type: ['string', 'null'], maxLength: 2048 },
  nodeSelectors: { type: ['array', 'null'], maxItems: 64, items: { type: 'string', maxLength: 4096 } },
  selectors: selectorsSchema,
  x509SvidTtlSeconds: { type: ['integer', 'null'] },
  jwtSvidTtlSeconds: { type: ['integer', 'null'] },
  dnsNames: { type: 'array', maxItems: 32, items: { type: 'string', maxLength: 253 } },
  environment: { type: ['string', 'null'], maxLength: 63 },
  owner: { type: ['object', 'null'], additionalProperties: true, properties: { team: { type: 'string', maxLength: 128 }, contact: { type: 'string', maxLength: 256 } } },
} as const;

const entryIdParams = { type: 'object', properties: { id: { type: 'string', maxLength: 64 } }, required: ['id'], additionalProperties: false } as const;

function adminCtx(req: FastifyRequest): IssuerContext {
  const p = req.principal;
  if (p === undefined) throw new TypeError('admin route reached without a principal');
  return { actor: { type: 'admin', id: p.id, name: p.name, role: p.role, ip: req.ip }, correlationId: req.correlationId };
}

function nodeCtx(req: FastifyRequest, node: NodeRecord): IssuerContext {
  const actor: AuditActor = { type: 'node', id: node.spiffeId, ip: req.ip };
  // `authenticate` prefers the TLS client certificate when it is this node's SVID.
  const mtls = req.clientCert?.status === 'valid' && req.clientCert.svid.spiffeId.toString() === node.spiffeId;
  return { actor, correlationId: req.correlationId, nodeAuth: mtls ? 'mtls' : 'signed-request' };
}

function svidJson(svid: X509Svid): Record<string, unknown> {
  return {
    spiffeId: svid.spiffeId.toString(),
    certChain: svid.chain.map((d) => Buffer.from(d).toString('base64')),
    serialNumber: svid.serialNumber.toLowerCase(),
    notBefore: svid.notBefore.toISOString(),
    notAfter: svid.notAfter.toISOString(),
  };
}

function nodeEntryJson(e: RegistrationEntry): Record<string, unknown> {
  return {
    id: e.id,
    spiffeId: e.spiffeId,
    selectors: e.selectors,
    dnsNames: e.dnsNames,
    revision: e.revision,
    ...(e.x509SvidTtlSeconds === undefined ? {} : { x509SvidTtlSeconds: e.x509SvidTtlSeconds }),
    ...(e.jwtSvidTtlSeconds === undefined ? {} : { jwtSvidTtlSeconds: e.jwtSvidTtlSeconds }),
    ...(e.environment === undefined ? {} : { environment: e.environment }),
  };
}

function baseUrl(req: FastifyRequest): string {
  return `${req.protocol}://${req.host}`;
}

/**
 * Register the identity routes.
 *
 * @example
 * await registerIdentityRoutes(app, identity.issuer);
 */
export async function registerIdentityRoutes(app: FastifyInstance, issuer: IdentityIssuer, tls?: NodeApiWiring): Promise<void> {
  const security = [{ adminToken: [] }];
  const common = { 401: errorResponse, 403: errorResponse };

  // ---- public: SPIFFE bundle endpoint, OIDC discovery, JWKS --------------------
  app.get('/bundle', { schema: { summary: 'SPIFFE bundle endpoint: the trust bundle of this trust domain (no client authentication)', tags: ['identity'] } }, async (_req, reply) => {
    const b = issuer.bundle();
    // SPIFFE Trust Domain and Bundle §5.2: JSON, no client authentication; the hint says when to poll.
    return reply.header('content-type', 'application/json; charset=utf-8').header('cache-control', `public, max-age=${b.refreshHintSeconds ?? 300}`).send(b.toJson());
  });
  app.get('/bundle.pem', { schema: { summary: 'the X.509 authorities of the trust bundle as PEM', tags: ['identity'] } }, async (_req, reply) =>
    reply.header('content-type', 'application/x-pem-file').send(issuer.bundle().toPem()));
  app.get('/.well-known/openid-configuration', { schema: { summary: 'OIDC discovery for JWT-SVID verification', tags: ['identity'] } }, async (req) => {
    const base = baseUrl(req);
    const algs = [...new Set(issuer.bundle().toJwks().keys.map((k) => k.alg))];
    return { issuer: base, jwks_uri: `${base}/keys`, id_token_signing_alg_values_supported: algs.length > 0 ? algs : ['ES256'], response_types_supported: ['id_token'], subject_types_supported: ['public'] };
  });
  app.get('/keys', { schema: { summary: 'the JWT-SVID keys as an OIDC JWKS (`use:"sig"`, `alg`, `kid`)', tags: ['identity'] } }, async (_req, reply) =>
    reply.header('cache-control', `public, max-age=${issuer.bundle().refreshHintSeconds ?? 300}`).send(issuer.bundle().toJwks()));

  // ---- node API ------------------------------------------------------------------
  await app.register(async (scope) => {
    // The signature covers the exact body bytes: keep them.
    scope.removeContentTypeParser('application/json');
    scope.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => {
      req.rawBody = body as string;
      try {
        done(null, JSON.parse(body as string));
      } catch (e) {
        done(e as Error, undefined);
      }
    });
    scope.decorateRequest('rawBody', undefined);

    // Over mutual TLS the node SVID is the client certificate (the handshake proved the key);
    // otherwise, and for a client certificate that is not a node SVID, the request must be signed.
    const authenticate = (req: FastifyRequest): Promise<NodeRecord> => {
      const cert = req.clientCert;
      if (cert?.status === 'valid' && nodeIdOf(issuer.ca.trustDomain, cert.svid.spiffeId.toString()) !== undefined) return issuer.authenticateNodeSvid(cert.svid);
      return issuer.authenticateNode(req.headers.authorization, { method: req.method, path: req.url, body: req.rawBody });
    };
    // Where the node API is served over mutual TLS, and the SVID the server presents there.
    const mtls = (): Record<string, unknown> => (tls?.url === undefined ? {} : { mtls: { url: tls.url, serverSpiffeId: issuer.serverSpiffeId() } });

    scope.post('/node/v1/attest', {
      schema: {
        summary: 'attest a node with a join token or an OIDC/JWT token and get its node SVID',
        tags: ['node'],
        body: { type: 'object', properties: { method: { type: 'string', enum: ['join_token', 'oidc'] }, token: { type: 'string', minLength: 1, maxLength: 16384 }, publicKey: publicKeySchema }, required: ['method', 'token', 'publicKey'], additionalProperties: false },
      },
    }, async (req, reply) => {
      const body = req.body as { method: string; token: string; publicKey: string };
      const { node, svid } = await issuer.attestNode(body, { actor: { type: 'anonymous', id: 'anonymous', ip: req.ip }, correlationId: req.correlationId });
      void reply.header('cache-control', 'no-store');
      return { node: { id: node.id, spiffeId: node.spiffeId, selectors: node.selectors }, svid: svidJson(svid), bundle: issuer.bundle().toDocument(), ...mtls() };
    });

    scope.post('/node/v1/renew', {
      schema: { summary: 'renew the node SVID (node SVID as TLS client certificate, or a signed request)', tags: ['node'], body: { type: 'object', properties: { publicKey: publicKeySchema }, required: ['publicKey'], additionalProperties: false } },
    }, async (req, reply) => {
      const node = await authenticate(req);
      const r = await issuer.renewNode(node, (req.body as { publicKey: string }).publicKey, nodeCtx(req, node));
      void reply.header('cache-control', 'no-store');
      return { node: { id: r.node.id, spiffeId: r.node.spiffeId, selectors: r.node.selectors }, svid: svidJson(r.svid), bundle: issuer.bundle().toDocument(), ...mtls() };
    });

    scope.get('/node/v1/entries', { schema: { summary: 'the registration entries this node may serve (node SVID as TLS client certificate, or a signed request)', tags: ['node'] } }, async (req) => {
      const node = await authenticate(req);
      return { entries: (await issuer.entriesForNode(node)).map(nodeEntryJson), bundle: issuer.bundle().toDocument(), ...mtls() };
    });

    scope.post('/node/v1/svid/x509', {
      schema: { summary: 'issue a workload X.509-SVID of an entry this node may serve (mTLS or a signed request)', tags: ['node'], body: { type: 'object', properties: { entryId: { type: 'string', maxLength: 64 }, publicKey: publicKeySchema }, required: ['entryId', 'publicKey'], additionalProperties: false } },
    }, async (req, reply) => {
      const node = await authenticate(req);
      const body = req.body as { entryId: string; publicKey: string };
      const [issued] = await issuer.issueX509ForNode(node, [body], nodeCtx(req, node));
      if (issued === undefined) throw new TypeError('no SVID issued');
      void reply.header('cache-control', 'no-store');
      return { svid: svidJson(issued.svid), bundle: issuer.bundle().toDocument() };
    });

    scope.post('/node/v1/svid/jwt', {
      schema: {
        summary: 'sign a workload JWT-SVID of an entry this node may serve (mTLS or a signed request)',
        tags: ['node'],
        body: { type: 'object', properties: { entryId: { type: 'string', maxLength: 64 }, audience: { type: 'array', minItems: 1, maxItems: 16, items: { type: 'string', minLength: 1, maxLength: 2048 } } }, required: ['entryId', 'audience'], additionalProperties: false },
      },
    }, async (req, reply) => {
      const node = await authenticate(req);
      const body = req.body as { entryId: string; audience: string[] };
      const svid = await issuer.issueJwtForNode(node, body, nodeCtx(req, node));
      void reply.header('cache-control', 'no-store');
      return { spiffeId: svid.spiffeId.toString(), token: svid.token, issuedAt: svid.issuedAt.toISOString(), expiresAt: svid.expiresAt.toISOString() };
    });

    const revocations = tls?.revocations;
    if (revocations !== undefined) registerNodeRevocationStream(app, scope, issuer, authenticate, revocations);
  });

  // ---- admin: entries ------------------------------------------------------------
  app.post('/admin/v1/entries', {
    config: { permission: 'entries.manage' },
    schema: { summary: 'register a workload identity (owner required)', tags: ['identity'], security, body: { type: 'object', properties: entryProperties, additionalProperties: false }, response: { 400: errorResponse, 409: errorResponse, ...common } },
  }, async (req, reply) => reply.code(201).send(await issuer.createEntry(req.body, adminCtx(req))));

  app.get('/admin/v1/entries', {
    config: { permission: 'entries.read' },
    schema: { summary: 'list registration entries', tags: ['identity'], security, response: { ...common } },
  }, async () => ({ entries: await issuer.listEntries() }));

  app.get('/admin/v1/entries/:id', {
    config: { permission: 'entries.read' },
    schema: { summary: 'one registration entry', tags: ['identity'], security, params: entryIdParams, response: { 404: errorResponse, ...common } },
  }, async (req) => issuer.getEntry((req.params as { id: string }).id));

  app.patch('/admin/v1/entries/:id', {
    config: { permission: 'entries.manage' },
    schema: {
      summary: 'change a registration entry (merge patch; null clears a field)',
      tags: ['identity'],
      security,
      params: entryIdParams,
      body: { type: 'object', properties: { ...entryProperties, revision: { type: 'integer', minimum: 1 } }, additionalProperties: false },
      response: { 400: errorResponse, 404: errorResponse, 409: errorResponse, ...common },
    },
  }, async (req) => {
    const { revision, ...patch } = req.body as Record<string, unknown> & { revision?: number };
    return issuer.updateEntry((req.params as { id: string }).id, patch, adminCtx(req), revision);
  });

  app.delete('/admin/v1/entries/:id', {
    config: { permission: 'entries.manage' },
    schema: { summary: 'delete a registration entry', tags: ['identity'], security, params: entryIdParams, response: { 204: { type: 'null' }, 404: errorResponse, ...common } },
  }, async (req, reply) => {
    await issuer.deleteEntry((req.params as { id: string }).id, adminCtx(req));
    return reply.code(204).send();
  });

  // ---- admin: join tokens and nodes -------------------------------------------------
  app.post('/admin/v1/join-tokens', {
    config: { permission: 'nodes.manage' },
    schema: {
      summary: 'create a single-use join token; it is in the response and nowhere else',
      tags: ['identity'],
      security,
      body: { type: 'object', properties: { ttlSeconds: { type: 'integer', minimum: 1, maximum: 604800 }, selectors: selectorsSchema }, additionalProperties: false },
      response: { 201: { type: 'object', properties: { id: { type: 'string' }, token: { type: 'string' }, expiresAt: { type: 'string' }, selectors: { type: 'array', items: { type: 'string' } } }, required: ['id', 'token', 'expiresAt'] }, 400: errorResponse, ...common },
    },
  }, async (req, reply) => {
    const body = (req.body ?? {}) as { ttlSeconds?: number; selectors?: string[] };
    const { record, token } = await issuer.createJoinToken(body, adminCtx(req));
    void reply.header('cache-control', 'no-store');
    return reply.code(201).send({ id: record.id, token: token.reveal(), expiresAt: record.expiresAt, selectors: record.selectors });
  });

  app.get('/admin/v1/nodes', {
    config: { permission: 'nodes.read' },
    schema: { summary: 'list attested nodes (evicted ones included)', tags: ['identity'], security, response: { ...common } },
  }, async () => ({ nodes: await issuer.listNodes() }));

  app.post('/admin/v1/nodes/:id/evict', {
    config: { permission: 'nodes.manage' },
    schema: { summary: 'evict a node: it gets nothing more from the server', tags: ['identity'], security, params: entryIdParams, response: { 404: errorResponse, 409: errorResponse, ...common } },
  }, async (req) => issuer.evictNode((req.params as { id: string }).id, adminCtx(req)));

  // ---- admin: CA --------------------------------------------------------------------
  const caState = () => ({
    trustDomain: issuer.ca.trustDomain.name,
    bundleSequence: issuer.bundle().sequence ?? 0,
    keys: issuer.ca.keys().map((k) => ({
      id: k.id,
      kind: k.kind,
      state: k.state,
      alg: k.alg,
      createdAt: k.createdAt.toISOString(),
      notAfter: k.notAfter.toISOString(),
      ...(k.dropAfter === undefined ? {} : { dropAfter: k.dropAfter.toISOString() }),
      fingerprint: k.fingerprint,
    })),
  });

  app.get('/admin/v1/ca', {
    config: { permission: 'ca.read' },
    schema: { summary: 'the CA keys of the trust domain and the bundle sequence', tags: ['identity'], security, response: { ...common } },
  }, async () => caState());

  app.post('/admin/v1/ca/rotate', {
    config: { permission: 'ca.manage' },
    schema: {
      summary: 'rotate the X.509 signing CA and/or the JWT key now (prepare, prove, activate; each step audited)',
      tags: ['identity'],
      security,
      body: { type: 'object', properties: { kind: { type: 'string', enum: ['x509', 'jwt', 'all'] } }, additionalProperties: false },
      response: { ...common },
    },
  }, async (req) => {
    const kind = ((req.body ?? {}) as { kind?: string }).kind ?? 'all';
    const kinds: CaKeyKind[] = kind === 'all' ? ['x509', 'jwt'] : [kind as CaKeyKind];
    await issuer.rotate(kinds, adminCtx(req));
    return caState();
  });
}

/**
 * `GET /node/v1/revocations/stream`: the revocation bus as Server-Sent Events
 * (the framing, heartbeat and `Last-Event-ID` resumption of the enforcement
 * points' `GET /v1/revocations/stream`, docs/signals.md), authenticated by the
 * node SVID and filtered to `subject-revoked` events of the SPIFFE IDs of the
 * node's entries. Filtered-out events still move the cursor on, so a resumed
 * stream does not replay them. An evicted node's stream ends at the next
 * heartbeat.
 */
function registerNodeRevocationStream(
  app: FastifyInstance,
  scope: FastifyInstance,
  issuer: IdentityIssuer,
  authenticate: (req: FastifyRequest) => Promise<NodeRecord>,
  deps: NonNullable<NodeApiWiring['revocations']>,
): void {
  const open = new Set<() => void>();
  // Streams never go idle: end them before shutdown waits on them (agents resume from their cursor).
  app.addHook('preClose', async () => {
    for (const end of [...open]) end();
  });
  scope.get('/node/v1/revocations/stream', {
    schema: {
      summary: 'Server-Sent Events: `subject-revoked` events of the SPIFFE IDs this node serves, after `Last-Event-ID` (or `?after=`; none: from now), then live, with a `heartbeat` event every `revocations.heartbeatMs` (mTLS or a signed request)',
      tags: ['node'],
      querystring: { type: 'object', properties: { after: { type: 'string', pattern: CURSOR.source } }, additionalProperties: false },
    },
  }, async (req, reply) => {
    const node = await authenticate(req);
    const lastId = req.headers['last-event-id'];
    const raw = typeof lastId === 'string' ? lastId : (req.query as { after?: string }).after;
    if (raw !== undefined && !CURSOR.test(raw)) throw attestationErrors.error('ERR_ATTEST_REQUEST_INVALID', `cursor \`${raw.slice(0, 40)}\` is not a non-negative integer`);
    const from = raw === undefined ? undefined : Number(raw);
    const ctx = nodeCtx(req, node);
    // The stream never reaches onSend, so it is audited here, before the first byte.
    await deps.audit.append({
      action: 'api.called',
      actor: ctx.actor,
      target: { type: 'api_route', id: 'GET /node/v1/revocations/stream' },
      outcome: 'success',
      correlationId: req.correlationId,
      details: { method: 'GET', route: '/node/v1/revocations/stream', status: 200, fromCursor: from ?? null, nodeId: node.id, ...(ctx.nodeAuth === undefined ? {} : { nodeAuth: ctx.nodeAuth }) },
    });
    let served: { ids: Set<string>; until: number } | undefined;
    let evicted = false;
    const servedIds = async (): Promise<Set<string>> => {
      const now = Date.now();
      if (served !== undefined && served.until > now) return served.ids;
      const current = await issuer.getNode(node.id).catch(() => undefined);
      evicted = current === undefined || current.evictedAt !== null;
      const ids = evicted ? new Set<string>() : new Set((await issuer.entriesForNode(current ?? node)).map((e) => e.spiffeId));
      served = { ids, until: now + SERVED_IDS_MS };
      return ids;
    };
    await servedIds();
    const res = openEventStream(reply, req.correlationId);
    let last = from ?? (await deps.bus.head());
    res.write('retry: 1000\n\n');
    // Events are written in cursor order even though the entry lookup is asynchronous.
    let chain = Promise.resolve();
    const relay = (e: RevocationEvent): void => {
      chain = chain.then(async () => {
        if (e.kind === 'subject-revoked' && e.subject !== undefined && (await servedIds()).has(e.subject)) res.write(`id: ${e.cursor}\nevent: revocation\ndata: ${JSON.stringify(e)}\n\n`);
        last = Math.max(last, e.cursor);
      }).catch((err: unknown) => req.log.warn({ err }, 'node revocation stream: an event could not be filtered'));
    };
    const stop = await deps.bus.subscribe(last, relay, { onError: (err) => req.log.warn({ err }, 'node revocation stream subscription trouble; it keeps trying') });
    let timer: ReturnType<typeof setInterval> | undefined;
    const end = (): void => {
      if (!open.delete(end)) return;
      clearInterval(timer);
      void stop();
      res.end();
    };
    const heartbeat = (): void => {
      chain = chain.then(async () => {
        await servedIds();
        if (evicted) {
          end();
          return;
        }
        res.write(`event: heartbeat\ndata: {"cursor":${last}}\n\n`);
      }).catch((err: unknown) => req.log.warn({ err }, 'node revocation stream heartbeat failed'));
    };
    heartbeat();
    timer = setInterval(heartbeat, deps.heartbeatMs);
    open.add(end);
    res.once('close', end);
    req.raw.once('close', end);
  });
}
