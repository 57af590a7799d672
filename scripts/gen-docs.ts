/**
 * Regenerate the docs that are derived from code: docs/errors.md from the
 * error catalogues and docs/configuration.md from the config schema.
 * `npm run docs`; a test fails when they are out of date.
 */
import { writeFileSync } from 'node:fs';
import { renderErrorsDoc } from '../src/server/index.ts';
import { renderConfigDoc } from './config-doc.ts';

const root = new URL('../', import.meta.url);
writeFileSync(new URL('docs/errors.md', root), renderErrorsDoc());
writeFileSync(new URL('docs/configuration.md', root), renderConfigDoc());
process.stdout.write('wrote docs/errors.md and docs/configuration.md\n');
