/**
 * The demo's MCP server: an `@modelcontextprotocol/sdk` `McpServer` over
 * Streamable HTTP with two tools, `lookup_order` (read-only) and
 * `refund_order`. It sits behind `writ mcp-gateway` and is an OAuth protected
 * resource of its own: every request must carry a Writ access token for
 * `--audience` (the token the gateway exchanges for it, never the agent's),
 * verified against Writ's JWKS.
 *
 *   node examples/demo/mcp-server.ts --port 8931 --issuer http://127.0.0.1:7400 --audience orders-mcp
 */
import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { parseArgs } from 'node:util';
import { createRemoteJWKSet, jwtVerify } from 'jose';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import type { AuthInfo } from '@modelcontextprotocol/sdk/server/auth/types.js';
import { z } from 'zod';

const { values } = parseArgs({ options: { port: { type: 'string' }, host: { type: 'string', default: '127.0.0.1' }, issuer: { type: 'string' }, audience: { type: 'string', default: 'orders-mcp' } } });
if (values.port === undefined || values.issuer === undefined) {
  process.stderr.write('usage: mcp-server.ts --port N --issuer WRIT_URL [--audience AUD] [--host H]\n');
  process.exit(2);
}
const issuer = values.issuer.replace(/\/+$/, '');
const audience = values.audience;
const jwks = createRemoteJWKSet(new URL(`${issuer}/oauth2/jwks`));

const ORDERS: Readonly<Record<string, string>> = { '1001': 'shipped, 2 items, 49.90 EUR', '1002': 'delayed, 1 item, 12.50 EUR' };

function tools(): McpServer {
  const mcp = new McpServer({ name: 'orders-mcp', version: '1.0.0' });
  mcp.registerTool('lookup_order', { description: 'look an order up', inputSchema: { order_id: z.string() }, annotations: { readOnlyHint: true } }, async ({ order_id }, extra) => {
    const who = typeof extra.authInfo?.extra?.sub === 'string' ? extra.authInfo.extra.sub : 'unknown';
    const found = ORDERS[order_id];
    return { content: [{ type: 'text', text: found === undefined ? `no order ${order_id}` : `order ${order_id}: ${found} (for ${who})` }] };
  });
  mcp.registerTool('refund_order', { description: 'refund an order', inputSchema: { order_id: z.string(), amount: z.number().int().optional() }, annotations: { readOnlyHint: false, destructiveHint: true } }, async ({ order_id }) => {
    return { content: [{ type: 'text', text: `refunded order ${order_id}` }] };
  });
  return mcp;
}

/** The bearer token, verified: Writ's `at+jwt` for this server's audience. */
async function authenticate(req: IncomingMessage): Promise<AuthInfo | undefined> {
  const h = req.headers.authorization;
  if (typeof h !== 'string' || !h.startsWith('Bearer ')) return undefined;
  const token = h.slice('Bearer '.length);
  try {
    const { payload } = await jwtVerify(token, jwks, { issuer, audience, typ: 'at+jwt' });
    return {
      token,
      clientId: typeof payload.client_id === 'string' ? payload.client_id : '',
      scopes: typeof payload.scope === 'string' ? payload.scope.split(' ') : [],
      ...(payload.exp === undefined ? {} : { expiresAt: payload.exp }),
      extra: { sub: payload.sub, task: payload.task, act: payload.act },
    };
  } catch {
    return undefined;
  }
}

const transports = new Map<string, StreamableHTTPServerTransport>();

async function handle(req: IncomingMessage & { auth?: AuthInfo }, res: ServerResponse): Promise<void> {
  const auth = await authenticate(req);
  if (auth === undefined) {
    res.writeHead(401, { 'www-authenticate': 'Bearer realm="orders-mcp", error="invalid_token"' }).end();
    return;
  }
  req.auth = auth;
  const sid = req.headers['mcp-session-id'];
  let transport = typeof sid === 'string' ? transports.get(sid) : undefined;
  if (transport === undefined) {
    if (typeof sid === 'string') {
      res.writeHead(404).end();
      return;
    }
    const t: StreamableHTTPServerTransport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      onsessioninitialized: (id) => {
        transports.set(id, t);
      },
    });
    t.onclose = () => {
      if (t.sessionId !== undefined) transports.delete(t.sessionId);
    };
    await tools().connect(t);
    transport = t;
  }
  await transport.handleRequest(req, res);
}

const server = createServer((req, res) => {
  handle(req, res).catch(() => {
    if (!res.headersSent) res.writeHead(500).end();
  });
});
server.listen(Number(values.port), values.host, () => {
  const a = server.address();
  process.stdout.write(`orders-mcp listening on ${values.host}:${typeof a === 'object' && a !== null ? a.port : values.port}\n`);
});
for (const sig of ['SIGTERM', 'SIGINT'] as const) {
  process.once(sig, () => {
    for (const t of transports.values()) void t.close().catch(() => undefined);
    server.close(() => process.exit(0));
    server.closeAllConnections();
  });
}
