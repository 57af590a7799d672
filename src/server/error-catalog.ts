/**
 * Every error code Writ can return, from every context's catalogue. The list
 * `docs/errors.md` is checked against (see error-catalog.test.ts).
 */
import { kernelErrors } from '../kernel/index.ts';
import type { ErrorSpec } from '../kernel/index.ts';
import { auditErrors } from '../audit/index.ts';
import { governanceErrors } from '../governance/index.ts';
import { identityErrors, agentErrors, entryErrors, attestationErrors, kekErrors } from '../identity/index.ts';
import { policyErrors } from '../policy/index.ts';
import { storageErrors } from '../storage/index.ts';
import { credentialErrors, oauthErrors } from '../credentials/index.ts';
import { enforcementErrors } from '../enforcement/index.ts';
import { serverErrors } from './errors.ts';
import { signalsErrors } from '../signals/index.ts';

/** All catalogues, by context. */
export const ERROR_CATALOGS = [kernelErrors, identityErrors, agentErrors, entryErrors, attestationErrors, kekErrors, policyErrors, credentialErrors, oauthErrors, enforcementErrors, auditErrors, governanceErrors, storageErrors, serverErrors, signalsErrors] as const;

/** Every code with its spec, sorted by code. */
export function allErrorCodes(): { code: string; context: string; spec: ErrorSpec }[] {
  const out: { code: string; context: string; spec: ErrorSpec }[] = [];
  for (const cat of ERROR_CATALOGS) {
    for (const [code, spec] of Object.entries(cat.specs as Record<string, ErrorSpec>)) out.push({ code, context: cat.context, spec });
  }
  return out.sort((a, b) => a.code.localeCompare(b.code));
}

/** The Markdown of `docs/errors.md`, generated from the catalogues. */
export function renderErrorsDoc(): string {
  const lines = [
    '# Error codes',
    '',
    'Every error Writ returns carries one of these codes. Responses look like',
    '`{"code": "ERR_…", "message": "…", "correlationId": "…"}`; errors with a status',
    'of 500 or more say only a generic message, and the detail is in the server log',
    'under the same correlation id.',
    '',
    'This file is generated from the error catalogues (`npm run docs`) and a',
    'test fails when it is out of date.',
    '',
    '| code | status | when |',
    '|---|---|---|',
  ];
  for (const { code, spec } of allErrorCodes()) lines.push(`| \`${code}\` | ${spec.status} | ${spec.description.replace(/\|/g, '\\|')} |`);
  return `${lines.join('\n')}\n`;
}
