/**
 * The layering rule can fail: a scratch file that breaks it makes the lint
 * (part of `npm test`) fail, and removing it makes the lint pass again.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../', import.meta.url));
const depcruise = fileURLToPath(new URL('../node_modules/dependency-cruiser/bin/dependency-cruise.mjs', import.meta.url));

function lint(): { status: number | null; out: string } {
  const r = spawnSync(process.execPath, [depcruise, 'src', '--config', '.dependency-cruiser.cjs'], { cwd: root, encoding: 'utf8' });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

const cases: [string, string, string, RegExp][] = [
  ['a lower layer imports a higher one', 'src/kernel/zz-scratch-layering.ts', "import { Store } from '../storage/index.ts';\nexport const x = Store;\n", /error layer-kernel: src\/kernel\/zz-scratch-layering\.ts → src\/storage\/index\.ts/],
  ['a context reaches past another\'s index.ts', 'src/governance/zz-scratch-layering.ts', "import { seal } from '../audit/chain.ts';\nexport const x = seal;\n", /error only-through-index: src\/governance\/zz-scratch-layering\.ts → src\/audit\/chain\.ts/],
  ['two contexts of one layer import each other', 'src/audit/zz-scratch-layering.ts', "import { policyErrors } from '../policy/index.ts';\nexport const x = policyErrors;\n", /error layer-audit: src\/audit\/zz-scratch-layering\.ts → src\/policy\/index\.ts/],
];

describe('layering lint', () => {
  for (const [name, file, code, expected] of cases) {
    it(`fails when ${name}`, () => {
      const path = `${root}${file}`;
      writeFileSync(path, code);
      try {
        const r = lint();
        assert.notEqual(r.status, 0, r.out);
        assert.match(r.out, expected);
      } finally {
        rmSync(path, { force: true });
      }
    });
  }
  it('passes on the tree as it is', () => {
    const r = lint();
    assert.equal(r.status, 0, r.out);
  });
});
