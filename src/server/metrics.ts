/**
 * Prometheus metrics. One registry per server instance (tests start many).
 */
import { Registry, collectDefaultMetrics, Counter, Histogram, Gauge } from 'prom-client';
import type { AuditWriterStats } from '../audit/index.ts';

export interface ServerMetrics {
  readonly registry: Registry;
  readonly httpRequests: Counter<'method' | 'route' | 'status'>;
  readonly httpDuration: Histogram<'method' | 'route'>;
  /** Count anonymous refusals that were counted instead of audited one by one. */
  registerRefusalsSuppressed(total: () => number): void;
}

/**
 * @example
 * const m = createMetrics(() => writer.stats);
 * m.httpRequests.inc({ method: 'GET', route: '/healthz', status: '200' });
 */
export function createMetrics(auditStats: () => AuditWriterStats): ServerMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'writ_process_' });
  const httpRequests = new Counter({ name: 'writ_http_requests_total', help: 'HTTP requests by method, route template and status', labelNames: ['method', 'route', 'status'] as const, registers: [registry] });
  const httpDuration = new Histogram({
    name: 'writ_http_request_duration_seconds',
    help: 'HTTP request duration by method and route template',
    labelNames: ['method', 'route'] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5],
    registers: [registry],
  });
  new Gauge({
    name: 'writ_audit_events_appended_total',
    help: 'audit events durably written by this process',
    registers: [registry],
    collect() {
      this.set(auditStats().appended);
    },
  });
  new Gauge({
    name: 'writ_audit_events_failed_total',
    help: 'audit events refused by the store',
    registers: [registry],
    collect() {
      this.set(auditStats().failed);
    },
  });
  new Gauge({
    name: 'writ_audit_queue_depth',
    help: 'audit events waiting to be written',
    registers: [registry],
    collect() {
      this.set(auditStats().queued);
    },
  });
  new Gauge({
    name: 'writ_audit_last_batch_size',
    help: 'events in the last group commit',
    registers: [registry],
    collect() {
      this.set(auditStats().lastBatchSize);
    },
  });
  return {
    registry,
    httpRequests,
    httpDuration,
    registerRefusalsSuppressed(total) {
      new Gauge({
        name: 'writ_audit_refusals_suppressed_total',
        help: 'refusals of callers without a valid credential beyond their source\'s audit budget: counted into `api.refusals.suppressed` events instead of audited one by one',
        registers: [registry],
        collect() {
          this.set(total());
        },
      });
    },
  };
}
