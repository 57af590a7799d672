/**
 * Load generator for the proxy bench, run as its own process so it does not
 * share an event loop with the proxies: `conns` keep-alive connections each
 * send GET requests back to back for `ms` milliseconds.
 * argv[2]: JSON {port, path, conns, ms, headers}. Prints {requests, rps, p50Ms, p99Ms, errors}.
 */
import { Agent, request } from 'node:http';

const o = JSON.parse(process.argv[2] ?? '{}') as { port: number; path: string; conns: number; ms: number; headers: Record<string, string> };
const agent = new Agent({ keepAlive: true, maxSockets: o.conns });
const lat: number[] = [];
let errors = 0;
const end = performance.now() + o.ms;

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

async function worker(): Promise<void> {
  while (performance.now() < end) await one();
}

const start = performance.now();
await Promise.all(Array.from({ length: o.conns }, () => worker()));
const took = performance.now() - start;
lat.sort((a, b) => a - b);
const q = (p: number) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))] ?? 0;
process.stdout.write(JSON.stringify({ requests: lat.length, rps: (lat.length * 1000) / took, p50Ms: q(0.5), p99Ms: q(0.99), errors }));
agent.destroy();
