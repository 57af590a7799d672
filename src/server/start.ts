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
import { startIdentity } from './identity-routes.ts';
import type { ServedIdentity } from './identity-routes.ts';
import { startOAuth, taskLookup } from './oauth-routes.ts';
import type { ServedOAuth } from './oauth-routes.ts';
import type { IdentityIssuer } from '../identity/index.ts';
import type { FastifyInstance } from 'fastify';
import { startCredentials } from './credentials-routes.ts';
import type { ServedCredentials } from './credentials-routes.ts';
import { startSignals } from './signals-routes.ts';
import type { ServedSignals, SsfDeliveryLog } from './signals-routes.ts';
import { Reevaluator, RevocationDrill } from '../signals/index.ts';
import type { DeliveryReport } from '../signals/index.ts';
import { reevaluationPort, drillTarget, invalidateDecisionsOnRevocations } from './signals-reevaluation.ts';

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
  /** Drain, flush the audit log, close the store. Safe to call twice. */
  close(): Promise<void>;
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
    policy = await startPolicyService({ config, audit, clock: systemClock });
    let rotationLog: ((err: unknown) => void) | undefined;
    let appLog: ((r: DeliveryReport) => void) | undefined;
    identity = await startIdentity(config, store.identity, audit, (err) => rotationLog?.(err));
    const ssfLog: SsfDeliveryLog = {};
    signals = await startSignals(config, store, audit, sources.pgSchema, sources.env ?? {}, (r) => {
      if (r.outcome !== 'delivered') appLog?.(r);
    }, ssfLog);
    const served1 = signals;
    creds = await startCredentials(config, store, audit);
    // Every accepted signal re-evaluates what is live for its subjects (docs/signals.md).
    signals.service.setReevaluator(new Reevaluator({ port: reevaluationPort({ leases: creds.leases, tasks: store.credentials, decider: policy.decider, clock: systemClock, entries: () => store.identity.listEntries() }), bus: signals.bus, audit, clock: systemClock, context: signals.service.context() }));
    await invalidateDecisionsOnRevocations(signals.bus, policy.decider);
    signals.setDrill(new RevocationDrill({ bus: signals.bus, points: signals.points, target: drillTarget({ leases: creds.leases, tasks: store.credentials, clock: systemClock }), audit, clock: systemClock, livenessMs: Math.max(15_000, 3 * config['revocations.heartbeatMs']) }));
    const served0 = identity;
    const pdp0 = policy;
    const oauth = await startOAuth({ config, clock: systemClock, audit, decide: (r) => pdp0.decider.decide(r), bundles: () => served0.issuer.bundle(), jtis: store.identity, leases: creds.leases, tasks: taskLookup(store.credentials), signingSecret: served0.kek.kek });
    const app = await buildApp({ signals: signals.service, signalsExtras: { ssf: served1.ssf, points: served1.points, drill: () => served1.drill() }, policy, config, store, audit, admins, version, startedAtMs: Date.now(), identity: identity.issuer, oauth, credentials: creds, ...(sources.logStream === undefined ? {} : { logStream: sources.logStream }) });
    creds.setLogger(app.log);
    rotationLog = (err) => app.log.error({ err }, 'scheduled CA rotation step failed; it is retried at the next check');
    ssfLog.stream = (r) => {
      if (r.outcome === 'rejected' || r.outcome === 'gave-up' || r.outcome === 'receiver-error') app.log.warn({ streamId: r.streamId, jti: r.jti, outcome: r.outcome, status: r.status, err: r.err, attempts: r.attempts }, 'SSF stream delivery did not succeed');
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
    policy.setLogger(app.log);
    await audit.append({ action: 'server.started', actor: { type: 'system', id: 'writ' }, outcome: 'success', correlationId: startId, details: { version, url, store: store.location } });
    app.log.info({ url, store: store.location, version }, 'writ listening');
    if (bootstrapTokenFile !== undefined) app.log.warn({ tokenFile: bootstrapTokenFile }, 'created the bootstrap admin; its credential is in the token file (mode 0600) and nowhere else');

    let closing: Promise<void> | undefined;
    const writer = audit;
    const pdp = policy;
    const served = identity;
    const bus = signals;
    const credentials = creds;
    const close = (): Promise<void> => {
      closing ??= (async () => {
        pdp.close();
        served.close();
        const drain = config['shutdown.drainTimeoutMs'];
        let timer: NodeJS.Timeout | undefined;
        const timeout = new Promise<'timeout'>((r) => {
          timer = setTimeout(() => r('timeout'), drain);
        });
        const result = await Promise.race([app.close().then(() => 'closed' as const), timeout]);
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
    return { url, config, store, app, bootstrapTokenFile, identity: served.issuer, oauth, credentials, close };
  } catch (e) {
    policy?.close();
    identity?.close();
    await signals?.close().catch(() => undefined);
    await creds?.close().catch(() => undefined);
    await audit?.close().catch(() => undefined);
    await store.close().catch(() => undefined);
    throw e;
  }
}
