/**
 * The demo's two HTTP services, `orders` and `inventory`: plain node:http
 * apps with no security of their own, reachable only through `writ proxy`
 * in the story. They read the caller's identity from the `x-writ-spiffe-id`
 * header the proxy sets (and strips from callers).
 *
 *   node examples/demo/service.ts orders --port 8081
 *   node examples/demo/service.ts inventory --port 8082
 */
import { createServer } from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { parseArgs } from 'node:util';

const ORDERS: Readonly<Record<string, { status: string; items: number; total: number }>> = {
  '1001': { status: 'shipped', items: 2, total: 4990 },
  '1002': { status: 'delayed', items: 1, total: 1250 },
};

const STOCK: Record<string, number> = { 'SKU-1': 40, 'SKU-2': 3 };

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function orders(req: IncomingMessage, res: ServerResponse, caller: string): void {
  const m = /^\/orders\/([A-Za-z0-9-]{1,32})$/.exec(req.url ?? '');
  if (req.method !== 'GET' || m?.[1] === undefined) return send(res, 404, { error: 'not found' });
  const order = ORDERS[m[1]];
  if (order === undefined) return send(res, 404, { error: `no order ${m[1]}` });
  send(res, 200, { id: m[1], ...order, servedTo: caller });
}

function inventory(req: IncomingMessage, res: ServerResponse, caller: string): void {
  const url = req.url ?? '';
  const read = /^\/inventory\/(SKU-[0-9]{1,6})$/.exec(url);
  if (req.method === 'GET' && read?.[1] !== undefined) {
    const onHand = STOCK[read[1]];
    return onHand === undefined ? send(res, 404, { error: `no sku ${read[1]}` }) : send(res, 200, { sku: read[1], onHand, servedTo: caller });
  }
  const write = /^\/inventory\/(prod|stage)\/(SKU-[0-9]{1,6})\/adjust$/.exec(url);
  if (req.method === 'POST' && write?.[2] !== undefined) {
    // Only reached when policy allows a write (never in the demo story).
    STOCK[write[2]] = 0;
    return send(res, 200, { sku: write[2], onHand: 0, adjustedBy: caller });
  }
  send(res, 404, { error: 'not found' });
}

const { values, positionals } = parseArgs({ allowPositionals: true, options: { port: { type: 'string' }, host: { type: 'string', default: '127.0.0.1' } } });
const name = positionals[0];
if ((name !== 'orders' && name !== 'inventory') || values.port === undefined) {
  process.stderr.write('usage: service.ts orders|inventory --port N [--host H]\n');
  process.exit(2);
}
const handler = name === 'orders' ? orders : inventory;
const server = createServer((req, res) => {
  const caller = typeof req.headers['x-writ-spiffe-id'] === 'string' ? req.headers['x-writ-spiffe-id'] : 'unknown';
  handler(req, res, caller);
});
server.listen(Number(values.port), values.host, () => {
  const a = server.address();
  process.stdout.write(`${name} listening on ${values.host}:${typeof a === 'object' && a !== null ? a.port : values.port}\n`);
});
for (const sig of ['SIGTERM', 'SIGINT'] as const) process.once(sig, () => {
  server.close(() => process.exit(0));
  server.closeAllConnections();
});
