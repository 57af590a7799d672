import { CONFIG_SCHEMA, envName } from '../src/kernel/index.ts';
import type { OptionSpec } from '../src/kernel/index.ts';

function kind(s: OptionSpec): string {
  switch (s.kind) {
    case 'integer':
      return `integer ${s.min}–${s.max}`;
    case 'enum':
      return s.values.join(' \\| ');
    default:
      return s.kind;
  }
}

/** The Markdown of docs/configuration.md. */
export function renderConfigDoc(): string {
  const lines = [
    '# Configuration',
    '',
    'Every option, its default and how to set it. Sources, lowest precedence first:',
    'defaults, a JSON config file (`writ up --config FILE` or `WRIT_CONFIG`, nested by',
    'the dotted key: `{"audit": {"flushEvents": 100}}`), environment variables, then',
    'command-line flags. Unknown keys and unknown `WRIT_*` variables are refused, so a',
    'typo never silently falls back to a default. The loaded configuration is frozen.',
    '',
    'The CLI as a client also reads `WRIT_SERVER` (server URL), `WRIT_TOKEN_FILE` or',
    '`WRIT_TOKEN` (admin credential).',
    '',
    'Generated from the schema in `src/kernel/config.ts` by `npm run docs`.',
    '',
    '| key | environment | type | default | meaning |',
    '|---|---|---|---|---|',
  ];
  for (const [k, s] of Object.entries(CONFIG_SCHEMA) as [string, OptionSpec][]) {
    lines.push(`| \`${k}\` | \`${envName(k)}\` | ${kind(s)} | \`${JSON.stringify(s.default)}\` | ${s.doc.replace(/\|/g, '\\|')} |`);
  }
  return `${lines.join('\n')}\n`;
}
