/**
 * Load generator for the proxy bench, run as its own process so it does not
 * share an event loop with the proxies: `conns` keep-alive connections each
 * send GET requests for `ms` milliseconds, either back to back (saturation:
 * the throughput figure) or, with `rate`, paced at `rate` requests per second
 * in total (the latency figure, as sidecar benchmarks measure it: below
 * saturation, so it shows the time the proxy adds, not queueing in front of a
 * saturated CPU). Latency is from sending a request to the end of its answer.
 * argv[2]: JSON {port, path, conns, ms, headers, rate?}. Prints {requests, rps, p50Ms, p99Ms, errors}.
 */
import { Agent, request } from 'node:http';

const o = JSON.parse(process.argv[2] ?? '{}') as { port: number; path: string; conns: number; ms: number; headers: Record<string, string>; rate?: number };
const agent = new Agent({ keepAlive: true, maxSockets: o.conns });
const lat: number[] = [];
let errors = 0;
const start = performance.now();
const end = start + o.ms;

function one(): Promise<void> {
  return new Promise((ok) => {
    const t0 = performance.now();
    const req = request({ host: '127.0.0.1', port: o.port, path: o.path, method: 'GET', headers: o.headers, agent }, (res) => {
      res.resume();
      res.on('end', () => {
        if (res.statusCode === 200) lat.push(performance.now() - t0);
        else errors++;
        ok();
      });
    });
    req.on('error', () => {
      errors++;
      ok();
    });
    req.end();
  });
}

async function worker(i: number): Promise<void> {
  if (o.rate === undefined) {
    while (performance.now() < end) await one();
    return;
  }
  const interval = (o.conns * 1000) / o.rate;
  let due = start + (i * interval) / o.conns;
  while (due < end) {
    const wait = due - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    await one();
    due += interval;
  }
}

await Promise.all(Array.from({ length: o.conns }, (_, i) => worker(i)));
const took = performance.now() - start;
lat.sort((a, b) => a - b);
const q = (p: number) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))] ?? 0;
process.stdout.write(JSON.stringify({ requests: lat.length, rps: (lat.length * 1000) / took, p50Ms: q(0.5), p99Ms: q(0.99), errors }));
agent.destroy();
