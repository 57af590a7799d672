/**
 * Docs that are derived from code stay in sync with it.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { renderErrorsDoc, allErrorCodes, ERROR_CATALOGS } from '../src/server/index.ts';
import { ERROR_CODE_PATTERN, CONFIG_SCHEMA, envName } from '../src/kernel/index.ts';
import { renderConfigDoc } from '../scripts/config-doc.ts';

const root = new URL('../', import.meta.url);
const read = (p: string) => readFileSync(new URL(p, root), 'utf8');

describe('derived docs', () => {
  it('docs/errors.md lists exactly the codes of the catalogues (run `npm run docs` after changing one)', () => {
    assert.equal(read('docs/errors.md'), renderErrorsDoc());
  });

  it('every code is unique, well-formed, prefixed by its context, with a 4xx/5xx status and a description', () => {
    const codes = allErrorCodes();
    assert.equal(new Set(codes.map((c) => c.code)).size, codes.length);
    for (const { code, context, spec } of codes) {
      assert.match(code, ERROR_CODE_PATTERN);
      assert.ok(code.startsWith(`ERR_${context}_`), code);
      assert.ok(spec.status >= 400 && spec.status <= 599, code);
      assert.ok(spec.description.length > 10, code);
    }
    assert.ok(ERROR_CATALOGS.length >= 5);
  });

  it('docs/configuration.md documents every option with its default and environment variable', () => {
    const doc = read('docs/configuration.md');
    assert.equal(doc, renderConfigDoc());
    for (const key of Object.keys(CONFIG_SCHEMA)) assert.ok(doc.includes(`\`${envName(key)}\``), key);
  });

  it('the README shows the two commands', () => {
    const readme = read('README.md');
    assert.match(readme, /npx writ up/);
    assert.match(readme, /npm test/);
  });
});
