/**
 * Composition root: load → validate → freeze config, open and migrate the
 * store, start the audit writer, bootstrap the first admin, build the app and
 * listen. `close()` drains requests, flushes the audit log and closes the store.
 */
import { readFileSync } from 'node:fs';
import { loadConfig, newCorrelationId, systemClock } from '../kernel/index.ts';
import type { WritConfig, ConfigSources } from '../kernel/index.ts';
import { AuditWriter } from '../audit/index.ts';
import { AdminPrincipals } from '../governance/index.ts';
import { openStore } from '../storage/index.ts';
import type { Store } from '../storage/index.ts';
import { buildApp } from './app.ts';
import { bootstrapAdmin, tokenFilePath } from './bootstrap.ts';
import { startPolicyService } from './policy-routes.ts';
import type { PolicyService } from './policy-routes.ts';
import { startIdentity, svidIssuanceGate } from './identity-routes.ts';
import type { NodeApiWiring, ServedIdentity } from './identity-routes.ts';
import { startOAuth, taskLookup } from './oauth-routes.ts';
import type { ServedOAuth } from './oauth-routes.ts';
import { KeyEncryptionKey } from '../identity/index.ts';
import type { IdentityIssuer } from '../identity/index.ts';
import type { FastifyInstance } from 'fastify';
import { startCredentials } from './credentials-routes.ts';
import type { ServedCredentials } from './credentials-routes.ts';
import { kekSealer, startSignals } from './signals-routes.ts';
import type { ServedSignals, SsfDeliveryLog } from './signals-routes.ts';
import { Reevaluator, RevocationDrill } from '../signals/index.ts';
import type { DeliveryReport } from '../signals/index.ts';
import { startTlsListener } from './tls-listener.ts';
import type { TlsListener } from './tls-listener.ts';
import type { IdentityDirectory } from '../policy/index.ts';
import { reevaluationPort, drillTarget, invalidateDecisionsOnRevocations, publishLeaseRevocations, publishPolicyChanges } from './signals-reevaluation.ts';

/** The running server. */
export interface RunningServer {
  readonly url: string;
  readonly config: WritConfig;
  readonly store: Store;
  readonly app: FastifyInstance;
  /** Set when this start created the bootstrap admin. */
  readonly bootstrapTokenFile: string | undefined;
  /** Workload identity (CA, bundle, entries). */
  readonly identity: IdentityIssuer;
  /** The OAuth authorization server. */
  readonly oauth: ServedOAuth;
  /** Leases, tasks, dynamic secret engines and the reaper. */
  readonly credentials: ServedCredentials;
  /** The mutual-TLS listener, when `tls.listen` is set. */
  readonly tls: TlsListener | undefined;
  /** Drain, flush the audit log, close the store. Safe to call twice. */
  close(): Promise<void>;
}

/** Registration entries and live nodes, as the PDP reads them. */
function identityDirectory(store: Store): IdentityDirectory {
  return {
    workloads: async () =>
      (await store.identity.listEntries()).map((e) => ({
        spiffeId: e.spiffeId,
        selectors: e.selectors,
        ...(typeof e.environment === 'string' ? { environment: e.environment } : {}),
        ...(typeof e.owner !== 'object' || e.owner === null ? {} : { owner: { team: e.owner.team, contact: e.owner.contact } }),
        ...(typeof e.parentId === 'string' ? { nodeSpiffeId: e.parentId } : {}),
      })),
    nodes: async () => (await store.identity.listNodes()).filter((n) => n.evictedAt === null).map((n) => ({ spiffeId: n.spiffeId, attestationMethod: n.attestationType, selectors: n.selectors })),
    offboardedOwners: async () => new Set((await store.signals.listSignals({ type: 'owner-offboarded', limit: 100_000 })).map((s) => s.subject.toLowerCase())),
  };
}

/** Package version, read once. */
export function writVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: string };
  return pkg.version ?? '0.0.0';
}

function splitListen(listen: string): { host: string; port: number } {
  const i = listen.lastIndexOf(':');
  const host = listen.slice(0, i).replace(/^\[|\]$/g, '');
  return { host, port: Number(listen.slice(i + 1)) };
}

/**
 * Start Writ.
 *
 * @example
 * const server = await startServer({ env: process.env });
 * console.log(server.url);
 * await server.close();
 */
export async function startServer(sources: ConfigSources & { logStream?: NodeJS.WritableStream; pgSchema?: string }): Promise<RunningServer> {
  const config = loadConfig(sources);
  const store = await openStore({ url: config.store, dataDir: config.dataDir, ...(sources.pgSchema === undefined ? {} : { pgSchema: sources.pgSchema }) });
  let audit: AuditWriter | undefined;
  let policy: PolicyService | undefined;
  let identity: ServedIdentity | undefined;
  let signals: ServedSignals | undefined;
  let creds: ServedCredentials | undefined;
  let stopPolicyFeed: (() => Promise<void>) | undefined;
  try {
    await store.migrate();
    audit = new AuditWriter(store, systemClock, {
      flushEvents: config['audit.flushEvents'],
      flushDelayMs: config['audit.flushDelayMs'],
      maxBatchEvents: config['audit.maxBatchEvents'],
      queueLimit: config['audit.queueLimit'],
    });
    const admins = new AdminPrincipals(store, audit, systemClock);
    const version = writVersion();
    let rotationLog: ((err: unknown) => void) | undefined;
    let appLog: ((r: DeliveryReport) => void) | undefined;
    identity = await startIdentity(config, store.identity, audit, (err) => rotationLog?.(err));
    const ssfLog: SsfDeliveryLog = {};
    // Push streams' credentials are sealed under the KEK, as CA keys and engine passwords are.
    signals = await startSignals(config, store, audit, kekSealer(new KeyEncryptionKey(identity.kek.kek)), sources.pgSchema, sources.env ?? {}, (r) => {
      if (r.outcome !== 'delivered') appLog?.(r);
    }, ssfLog);
    const served1 = signals;
    // The PDP's PIP reads registered identities and the latest signals; every bus event moves its caches on.
    policy = await startPolicyService({ config, audit, clock: systemClock, directory: identityDirectory(store), signals: signals.service.context() });
    const pdpChanges = policy;
    stopPolicyFeed = await signals.bus.subscribe(undefined, () => pdpChanges.noteChange(), { onError: () => pdpChanges.noteChange() });
    creds = await startCredentials(config, store, audit, systemClock, identity.kek.kek);
    // Every accepted signal re-evaluates what is live for its subjects (docs/signals.md).
    signals.service.setReevaluator(new Reevaluator({ port: reevaluationPort({ leases: creds.leases, tasks: store.credentials, decider: policy.decider, clock: systemClock, entries: () => store.identity.listEntries(), refresh: () => pdpChanges.noteChange() }), bus: signals.bus, audit, clock: systemClock, context: signals.service.context() }));
    await invalidateDecisionsOnRevocations(signals.bus, policy.decider);
    // Revocations and policy swaps made here reach every enforcement point through the bus.
    let busLog: ((err: unknown, what: string) => void) | undefined;
    publishLeaseRevocations(creds.leases, signals.bus, { onGaveUp: (id, err) => busLog?.(err, `the revocation of lease ${id} could not be published on the revocation bus after retries; enforcement points honour it only until its expiry`) });
    creds.leases.onRevokedListenerError = (lease, err) => busLog?.(err, `the revocation of lease ${lease.id} was not published on the revocation bus; retrying`);
    publishPolicyChanges(policy.engine, signals.bus, (err) => busLog?.(err, 'a policy change was not published on the revocation bus'));
    signals.setDrill(new RevocationDrill({ bus: signals.bus, points: signals.points, target: drillTarget({ leases: creds.leases, tasks: store.credentials, clock: systemClock }), audit, clock: systemClock, livenessMs: Math.max(15_000, 3 * config['revocations.heartbeatMs']) }));
    const served0 = identity;
    const pdp0 = policy;
    const oauth = await startOAuth({ config, clock: systemClock, audit, decide: (r) => pdp0.decider.decide(r), bundles: () => served0.issuer.bundle(), jtis: store.identity, leases: creds.leases, tasks: taskLookup(store.credentials), clients: store.oauthClients, signingSecret: served0.kek.kek });
    // A workload SVID is not issued while a `forbid` policy matches its `credential/issue` (docs/identity-api.md).
    identity.issuer.setIssuanceGate(svidIssuanceGate(policy.decider, policy.engine));
    // Agents follow revocations of the workloads they serve on the node API (GET /node/v1/revocations/stream).
    // buildApp hands this object to registerIdentityRoutes as it is (NodeApiWiring); `url` is set once TLS listens.
    const tlsRef: { url: string | undefined } & NodeApiWiring = { url: undefined, revocations: { bus: signals.bus, heartbeatMs: config['revocations.heartbeatMs'], audit } };
    const app = await buildApp({ tls: tlsRef, signals: signals.service, signalsExtras: { ssf: served1.ssf, points: served1.points, drill: () => served1.drill() }, policy, config, store, audit, admins, version, startedAtMs: Date.now(), identity: identity.issuer, oauth, credentials: creds, ...(sources.logStream === undefined ? {} : { logStream: sources.logStream }) });
    creds.setLogger(app.log);
    rotationLog = (err) => app.log.error({ err }, 'scheduled CA rotation step failed; it is retried at the next check');
    busLog = (err, what) => app.log.error({ err }, what);
    ssfLog.stream = (r) => {
      if (r.outcome === 'rejected' || r.outcome === 'gave-up' || r.outcome === 'receiver-error' || r.outcome === 'credential-unreadable') app.log.warn({ streamId: r.streamId, jti: r.jti, outcome: r.outcome, status: r.status, err: r.err, attempts: r.attempts }, 'SSF stream delivery did not succeed');
    };
    ssfLog.poll = (issuer, err) => app.log.warn({ issuer, err }, 'SSF poll of a transmitter failed; it is retried with backoff');
    appLog = (r) => app.log.warn({ receiver: r.receiver, jti: r.jti, outcome: r.outcome, status: r.status, err: r.err, attempts: r.attempts }, 'SSF push delivery did not succeed');
    if (identity.kek.warning !== undefined) app.log.warn({ kekFile: identity.kek.file }, identity.kek.warning);
    const startId = newCorrelationId();
    const bootstrapTokenFile = await bootstrapAdmin(admins, tokenFilePath(config['admin.tokenFile'], config.dataDir), startId);
    const { host, port } = splitListen(config.listen);
    await app.listen({ host, port });
    const addr = app.server.address();
    const actualPort = typeof addr === 'object' && addr !== null ? addr.port : port;
    const url = `http://${host.includes(':') ? `[${host}]` : host}:${actualPort}`;
    policy.setBaseUrl(config.publicUrl === '' ? url : config.publicUrl.replace(/\/+$/, ''));
    await signals.listening(config.publicUrl === '' ? url : config.publicUrl.replace(/\/+$/, ''));
    oauth.setIssuer(url);
    let tls: TlsListener | undefined;
    if (config['tls.listen'] !== '') {
      try {
        tls = await startTlsListener({ app, issuer: identity.issuer, config, clock: systemClock, log: app.log });
      } catch (e) {
        await app.close().catch(() => undefined);
        throw e;
      }
      tlsRef.url = tls.url;
      oauth.setMtlsUrl(tls.url);
      app.log.info({ url: tls.url, spiffeId: tls.current().spiffeId.toString() }, 'writ listening with mutual TLS');
    }
    policy.setLogger(app.log);
    await audit.append({ action: 'server.started', actor: { type: 'system', id: 'writ' }, outcome: 'success', correlationId: startId, details: { version, url, ...(tls === undefined ? {} : { tlsUrl: tls.url }), store: store.location } });
    app.log.info({ url, store: store.location, version }, 'writ listening');
    if (bootstrapTokenFile !== undefined) app.log.warn({ tokenFile: bootstrapTokenFile }, 'created the bootstrap admin; its credential is in the token file (mode 0600) and nowhere else');

    let closing: Promise<void> | undefined;
    const writer = audit;
    const pdp = policy;
    const served = identity;
    const bus = signals;
    const credentials = creds;
    const tlsListener = tls;
    const close = (): Promise<void> => {
      closing ??= (async () => {
        pdp.close();
        await stopPolicyFeed?.().catch(() => undefined);
        served.close();
        const drain = config['shutdown.drainTimeoutMs'];
        let timer: NodeJS.Timeout | undefined;
        const timeout = new Promise<'timeout'>((r) => {
          timer = setTimeout(() => r('timeout'), drain);
        });
        const tlsClosed = tlsListener?.close(drain);
        const result = await Promise.race([app.close().then(() => 'closed' as const), timeout]);
        await tlsClosed;
        if (timer !== undefined) clearTimeout(timer);
        if (result === 'timeout') {
          app.log.warn({ drainTimeoutMs: drain }, 'requests still running at the drain timeout; closing connections');
          app.server.closeAllConnections();
        }
        await bus.close().catch(() => undefined);
        await credentials.close().catch(() => undefined);
        await writer.append({ action: 'server.stopped', actor: { type: 'system', id: 'writ' }, outcome: 'success', correlationId: newCorrelationId() }).catch(() => undefined);
        await writer.close();
        await store.close();
      })();
      return closing;
    };
    return { url, config, store, app, bootstrapTokenFile, identity: served.issuer, oauth, credentials, tls, close };
  } catch (e) {
    await stopPolicyFeed?.().catch(() => undefined);
    policy?.close();
    identity?.close();
    await signals?.close().catch(() => undefined);
    await creds?.close().catch(() => undefined);
    await audit?.close().catch(() => undefined);
    await store.close().catch(() => undefined);
    throw e;
  }
}
