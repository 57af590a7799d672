/**
 * Helpers for the MCP gateway tests: an upstream SDK `McpServer` over
 * Streamable HTTP that records the credentials it was sent, a Writ server
 * with the gateway test policy, and an SDK OAuth provider that obtains the
 * agent's token from Writ by token exchange (subject = the task owner, actor
 * = the agent, bound to a task).
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import type { OAuthClientProvider } from '@modelcontextprotocol/sdk/client/auth.js';
import type { OAuthClientInformationMixed, OAuthClientMetadata, OAuthTokens } from '@modelcontextprotocol/sdk/shared/auth.js';
import { z } from 'zod';
import { readWritSchema } from '../../src/policy/index.ts';
import { startTestServer } from '../support/server.ts';
import type { TestServer } from '../support/server.ts';
import { WRIT } from './support.ts';

export const TD = 'writ.local';
export const OWNER = `spiffe://${TD}/team/owner`;
export const AGENT = `spiffe://${TD}/agent/triage`;
export const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
export const TT_JWT = 'urn:ietf:params:oauth:token-type:jwt';

/**
 * The task's declared tools are its scopes (`tools:search`, `tools:read`);
 * `read_file` is limited to `/docs/`; `delete_repo` has no permit.
 */
export const GATEWAY_POLICIES = `
@id("owner-may-delegate")
permit(principal == Writ::Workload::"${OWNER}", action == Writ::Action::"token/exchange", resource);

@id("search-in-task")
permit(principal is Writ::Agent, action == Writ::Action::"tools/call", resource == Writ::Tool::"search")
  when { context has mcp && context.mcp has task && context.mcp.task.scopes.contains("tools:search") };

@id("read-in-task")
permit(principal is Writ::Agent, action == Writ::Action::"tools/call", resource == Writ::Tool::"read_file")
  when { context has mcp && context.mcp has task && context.mcp.task.scopes.contains("tools:read") };

@id("posture-floor")
forbid(principal, action, resource) when { context has posture && context.posture.score < 50 };

@id("read-docs-only")
forbid(principal, action == Writ::Action::"tools/call", resource == Writ::Tool::"read_file")
  when { context has mcp && context.mcp has arguments && !(context.mcp.arguments has path && context.mcp.arguments.path like "/docs/*") };
`;

/** Writ's schema with the `arguments` of the test tools declared in `context.mcp`. */
export async function gatewaySchema(): Promise<string> {
  const { text } = await readWritSchema();
  const line = 'mcp?: { server: String, tool: String, uri?: String, prompt?: String, task?: { id: String, scopes: Set<String> } },';
  if (!text.includes(line)) throw new Error('writ.cedarschema no longer declares context.mcp as expected');
  return text.replace(line, 'mcp?: { server: String, tool: String, uri?: String, prompt?: String, arguments?: { path?: String, query?: String, name?: String }, task?: { id: String, scopes: Set<String> } },');
}

/** Start Writ with the gateway policy folder (`dir`) and a PEP principal. */
export async function startGatewayWrit(): Promise<{ ts: TestServer; pep: string; dir: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'writ-mcp-policy-'));
  writeFileSync(join(dir, 'gateway.cedar'), GATEWAY_POLICIES);
  writeFileSync(join(dir, 'schema.cedarschema'), await gatewaySchema());
  const ts = await startTestServer({ flags: { 'policy.dir': dir } });
  const r = await ts.call('POST', '/admin/v1/principals', { body: { name: 'mcp-gateway', role: 'pep' } });
  if (r.status !== 201) throw new Error(`pep principal: ${r.text}`);
  return { ts, pep: r.json.token as string, dir };
}

/** A JWT-SVID signed by the server's CA, for the issuer. */
export async function svid(ts: TestServer, spiffeId: string, audience: string = ts.url): Promise<string> {
  return (await ts.server.identity.ca.signJwtSvid({ spiffeId, audience })).token;
}

/** Start a task owned by OWNER allowing `scopes`. */
export async function startTask(ts: TestServer, scopes: string[]): Promise<string> {
  const r = await ts.call('POST', '/admin/v1/tasks', { body: { owner: OWNER, ttlSeconds: 600, scopes, description: 'triage the docs issues' } });
  if (r.status !== 201) throw new Error(`task: ${r.text}`);
  return r.json.id as string;
}

export interface UpstreamMcp {
  readonly url: string;
  /** Every `Authorization` header the upstream received, in order. */
  readonly authorizations: string[];
  /** Tool calls the upstream executed. */
  readonly calls: { name: string; args: unknown }[];
  /** A server without any check in front (for the bench baseline). */
  readonly server: Server;
  stop(): Promise<void>;
}

function tools(calls: UpstreamMcp['calls']): McpServer {
  const mcp = new McpServer({ name: 'docs-tools', version: '1.0.0' });
  mcp.registerTool('search', { description: 'search the docs', inputSchema: { query: z.string() }, annotations: { readOnlyHint: true } }, async ({ query }) => {
    calls.push({ name: 'search', args: { query } });
    return { content: [{ type: 'text', text: `results for ${query}` }] };
  });
  mcp.registerTool('read_file', { description: 'read a file', inputSchema: { path: z.string() }, annotations: { readOnlyHint: true } }, async ({ path }) => {
    calls.push({ name: 'read_file', args: { path } });
    return { content: [{ type: 'text', text: `contents of ${path}` }] };
  });
  mcp.registerTool('delete_repo', { description: 'delete a repository', inputSchema: { name: z.string() } }, async ({ name }) => {
    calls.push({ name: 'delete_repo', args: { name } });
    return { content: [{ type: 'text', text: `deleted ${name}` }] };
  });
  return mcp;
}

/** An SDK McpServer over Streamable HTTP, stateful (one transport per `Mcp-Session-Id`). */
export async function startUpstream(): Promise<UpstreamMcp> {
  const authorizations: string[] = [];
  const calls: UpstreamMcp['calls'] = [];
  const transports = new Map<string, StreamableHTTPServerTransport>();
  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    if (typeof req.headers.authorization === 'string') authorizations.push(req.headers.authorization);
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
      await tools(calls).connect(t);
      transport = t;
    }
    await transport.handleRequest(req, res);
  };
  const server = createServer((req, res) => {
    handle(req, res).catch(() => {
      if (!res.headersSent) res.writeHead(500).end();
    });
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', () => ok()));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/mcp`,
    authorizations,
    calls,
    server,
    async stop() {
      for (const t of transports.values()) await t.close().catch(() => undefined);
      server.closeAllConnections();
      await new Promise<void>((ok) => server.close(() => ok()));
    },
  };
}

/**
 * An MCP SDK OAuth provider for an agent: non-interactive, its token request
 * is an RFC 8693 exchange at Writ (subject = the owner's JWT-SVID, actor = the
 * agent's JWT-SVID, `task` and `scope`); the SDK adds `resource` from the
 * gateway's protected resource metadata.
 */
export class AgentTokenProvider implements OAuthClientProvider {
  #tokens: OAuthTokens | undefined;
  #info: OAuthClientInformationMixed;
  readonly #ts: TestServer;
  readonly #task: string;
  readonly #scope: string;
  /** How many token requests the SDK made through this provider. */
  tokenRequests = 0;

  constructor(ts: TestServer, task: string, scope: string) {
    this.#ts = ts;
    this.#task = task;
    this.#scope = scope;
    this.#info = { client_id: AGENT };
  }

  get redirectUrl(): undefined {
    return undefined;
  }

  get clientMetadata(): OAuthClientMetadata {
    return { client_name: 'triage-agent', redirect_uris: [], grant_types: [TOKEN_EXCHANGE], token_endpoint_auth_method: 'none', scope: this.#scope };
  }

  clientInformation(): OAuthClientInformationMixed {
    return this.#info;
  }

  saveClientInformation(info: OAuthClientInformationMixed): void {
    this.#info = info;
  }

  tokens(): OAuthTokens | undefined {
    return this.#tokens;
  }

  saveTokens(tokens: OAuthTokens): void {
    this.#tokens = tokens;
  }

  redirectToAuthorization(): void {
    throw new Error('no browser flow for an agent');
  }

  saveCodeVerifier(): void {}

  codeVerifier(): string {
    throw new Error('no authorization code flow for an agent');
  }

  async prepareTokenRequest(scope?: string): Promise<URLSearchParams> {
    this.tokenRequests++;
    return new URLSearchParams({
      grant_type: TOKEN_EXCHANGE,
      subject_token: await svid(this.#ts, OWNER),
      subject_token_type: TT_JWT,
      actor_token: await svid(this.#ts, AGENT),
      actor_token_type: TT_JWT,
      task: this.#task,
      scope: scope ?? this.#scope,
    });
  }
}

export function decodePayload(jwt: string): Record<string, any> {
  return JSON.parse(Buffer.from(jwt.split('.')[1] ?? '', 'base64url').toString('utf8'));
}

export function decodeHeader(jwt: string): Record<string, any> {
  return JSON.parse(Buffer.from(jwt.split('.')[0] ?? '', 'base64url').toString('utf8'));
}

export interface GatewayProcess {
  readonly child: ChildProcess;
  /** The gateway's MCP URL (its `resource`). */
  readonly url: string;
  /** Everything the process wrote to stdout and stderr. */
  output(): string;
  stop(): Promise<void>;
}

/** Spawn `writ mcp-gateway` on a free loopback port and wait until it names its resource. */
export async function spawnGateway(server: string, tokenFile: string, upstream: string, extra: string[] = []): Promise<GatewayProcess> {
  const child = spawn(process.execPath, [WRIT, 'mcp-gateway', '--server', server, '--token-file', tokenFile, '--listen', '127.0.0.1:0', '--upstream', upstream, ...extra], { stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise((r) => child.once('exit', r));
  const deadline = Date.now() + 20_000;
  while (!/deciding (through|locally)/.test(out)) {
    if (child.exitCode !== null) throw new Error(`writ mcp-gateway exited ${child.exitCode}: ${out}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`writ mcp-gateway did not start: ${out}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  const m = /resource (http:\/\/\S+),/.exec(out);
  if (m?.[1] === undefined) throw new Error(`no resource URL in: ${out}`);
  return {
    child,
    url: m[1],
    output: () => out,
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}
