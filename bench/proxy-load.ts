/**
 * Load generator for the proxy bench, run as its own process so it does not
 * share an event loop with the proxies. `conns` workers send GET requests for
 * `ms` milliseconds:
 * - one `port`, back to back: saturation, the throughput figure;
 * - several `ports` with `rate`: each worker sends, per tick, one request to
 *   every port (in a rotating order), paced so each port gets `rate` req/s in
 *   total. The proxies are measured interleaved, under the same machine load
 *   at the same moments, below saturation — the added latency, as sidecar
 *   benchmarks report it. Latency is from sending a request to the end of its
 *   answer.
 * argv[2]: JSON {port | ports, path, conns, ms, headers, rate?}.
 * Prints {requests, rps, p50Ms, p99Ms, errors}, or an array of them per port
 * (paced runs add every latency, `latMs`, so runs can be pooled).
 */
import { Agent, request } from 'node:http';

const o = JSON.parse(process.argv[2] ?? '{}') as { port?: number; ports?: number[]; path: string; conns: number; ms: number; headers: Record<string, string>; rate?: number };
const ports = o.ports ?? (o.port === undefined ? [] : [o.port]);
const agents = ports.map(() => new Agent({ keepAlive: true, maxSockets: o.conns }));
const lat: number[][] = ports.map(() => []);
const errors = ports.map(() => 0);
const start = performance.now();
const end = start + o.ms;

function one(t: number): Promise<void> {
  return new Promise((ok) => {
    const t0 = performance.now();
    const req = request({ host: '127.0.0.1', port: ports[t], path: o.path, method: 'GET', headers: o.headers, agent: agents[t] }, (res) => {
      res.resume();
      res.on('end', () => {
        if (res.statusCode === 200) lat[t]?.push(performance.now() - t0);
        else errors[t] = (errors[t] ?? 0) + 1;
        ok();
      });
    });
    req.on('error', () => {
      errors[t] = (errors[t] ?? 0) + 1;
      ok();
    });
    req.end();
  });
}

async function worker(i: number): Promise<void> {
  if (o.rate === undefined) {
    while (performance.now() < end) await one(0);
    return;
  }
  const interval = (o.conns * 1000) / o.rate;
  let due = start + (i * interval) / o.conns;
  let tick = i;
  while (due < end) {
    const wait = due - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    for (let k = 0; k < ports.length; k++) await one((tick + k) % ports.length);
    tick++;
    due += interval;
  }
}

await Promise.all(Array.from({ length: o.conns }, (_, i) => worker(i)));
const took = performance.now() - start;
const stats = lat.map((l, t) => {
  l.sort((a, b) => a - b);
  const q = (p: number) => l[Math.min(l.length - 1, Math.floor(p * l.length))] ?? 0;
  return { requests: l.length, rps: (l.length * 1000) / took, p50Ms: q(0.5), p99Ms: q(0.99), errors: errors[t] ?? 0, ...(o.rate === undefined ? {} : { latMs: l.map((x) => Math.round(x * 100) / 100) }) };
});
process.stdout.write(JSON.stringify(o.ports === undefined ? stats[0] : stats));
for (const a of agents) a.destroy();
