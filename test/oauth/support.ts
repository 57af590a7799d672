/**
 * A real Writ server with a policy folder for the OAuth tests, and helpers
 * that mint JWT-SVIDs with the server's own CA and form-encoded calls.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startTestServer } from '../support/server.ts';
import type { TestServer } from '../support/server.ts';

export const API = 'https://api.example.com';
export const REPORTS = 'https://reports.example.com';
export const FORBIDDEN = 'https://forbidden.example.com';
export const TD = 'writ.local';

export const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
export const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
export const TT_JWT = 'urn:ietf:params:oauth:token-type:jwt';
export const TT_AT = 'urn:ietf:params:oauth:token-type:access_token';
export const JWT_SPIFFE = 'urn:ietf:params:oauth:client-assertion-type:jwt-spiffe';

const POLICIES = `
@id("exchange-api")
permit(principal, action == Writ::Action::"token/exchange", resource == Writ::Service::"${API}");
@id("exchange-reports")
permit(principal, action == Writ::Action::"token/exchange", resource == Writ::Service::"${REPORTS}");
@id("issue-api")
permit(principal, action == Writ::Action::"credential/issue", resource == Writ::Service::"${API}");
@id("no-deep-reports")
forbid(principal, action == Writ::Action::"token/exchange", resource == Writ::Service::"${REPORTS}") when { context has delegation && context.delegation.depth > 1 };
`;

export async function startOAuthServer(flags: Record<string, string | number | boolean> = {}): Promise<TestServer> {
  const dir = mkdtempSync(join(tmpdir(), 'writ-oauth-policy-'));
  writeFileSync(join(dir, 'oauth.cedar'), POLICIES);
  return startTestServer({ flags: { 'policy.dir': dir, ...flags } });
}

/** A JWT-SVID signed by the server's CA. */
export async function svid(ts: TestServer, path: string, audience: string | readonly string[] = ts.url): Promise<string> {
  const s = await ts.server.identity.ca.signJwtSvid({ spiffeId: `spiffe://${TD}${path}`, audience });
  return s.token;
}

/** POST a form to an OAuth endpoint. */
export async function form(ts: TestServer, path: string, params: Record<string, string | string[]>, headers: Record<string, string> = {}): Promise<{ status: number; json: any; headers: Headers }> {
  const body = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) for (const x of Array.isArray(v) ? v : [v]) body.append(k, x);
  const res = await fetch(`${ts.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers }, body });
  const text = await res.text();
  return { status: res.status, json: text === '' ? undefined : JSON.parse(text), headers: res.headers };
}

export function decodePayload(jwt: string): Record<string, any> {
  return JSON.parse(Buffer.from(jwt.split('.')[1] ?? '', 'base64url').toString('utf8'));
}

export function decodeHeader(jwt: string): Record<string, any> {
  return JSON.parse(Buffer.from(jwt.split('.')[0] ?? '', 'base64url').toString('utf8'));
}
