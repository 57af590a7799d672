import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { ManualClock } from '../kernel/index.ts';
import { policyErrors } from './errors.ts';
import { PolicyEngine } from './policy-set.ts';
import { readPolicyFolder } from './policy-source.ts';
import { parsePolicyCase, readPolicyCases, runPolicyCases } from './policy-test.ts';

const EXAMPLE = fileURLToPath(new URL('../../examples/policies', import.meta.url));
const clock = new ManualClock(Date.parse('2026-01-01T00:00:00Z'));
const engine = new PolicyEngine({ clock });
const loaded = await engine.load(await readPolicyFolder(EXAMPLE));

test('the example NHI policy set validates against the Writ schema', () => {
  assert.equal(loaded.ok, true, JSON.stringify(loaded.problems));
});

test('every case of the example set passes, allows and denies alike', async () => {
  const cases = await readPolicyCases(`${EXAMPLE}/tests`);
  assert.equal(cases.length, 14);
  const results = await runPolicyCases(engine, cases, { clock });
  assert.deepEqual(results.filter((r) => !r.pass).map((r) => `${r.name}: ${r.mismatch}`), []);
  assert.deepEqual(
    results.map((r) => r.got.decision).sort(),
    [...Array<string>(5).fill('allow'), ...Array<string>(9).fill('deny')],
  );
});

test('a case whose expectation is wrong fails with a mismatch that says why', async () => {
  const [c] = (await readPolicyCases(`${EXAMPLE}/tests`)).filter((x) => x.name.startsWith('a stage workload'));
  assert.ok(c !== undefined);
  const wrongDecision = await runPolicyCases(engine, [{ ...c, want: { decision: 'allow' } }], { clock });
  assert.equal(wrongDecision[0]?.pass, false);
  assert.equal(wrongDecision[0]?.mismatch, 'decision deny, want allow (reasons: stage-to-prod-denied)');
  const wrongReason = await runPolicyCases(engine, [{ ...c, want: { decision: 'deny', reasons: ['posture-below-floor'] } }], { clock });
  assert.equal(wrongReason[0]?.mismatch, 'reasons [stage-to-prod-denied], want [posture-below-floor]');
});

test('a malformed case file is ERR_POLICY_CASE_INVALID naming the case and member', () => {
  const table: [unknown, string][] = [
    [[], 'case `x.case.json`: must be a JSON object'],
    [{ request: {}, want: {} }, 'case `x.case.json`: `entities` must be an array'],
    [{ name: 'n', entities: [], request: { principal: { type: 'T' } }, want: {} }, 'case `n`: `request.principal` must be {type, id}'],
    [{ entities: [], request: { principal: { type: 'T', id: 'p' }, resource: { type: 'T', id: 'r' }, action: 1 }, want: {} }, 'case `x.case.json`: `request.action` must be a string or {type, id}'],
    [{ entities: [], request: { principal: { type: 'T', id: 'p' }, resource: { type: 'T', id: 'r' }, action: 'a' }, want: { decision: 'maybe' } }, 'case `x.case.json`: `want.decision` must be `allow` or `deny`'],
  ];
  for (const [data, message] of table) {
    assert.throws(() => parsePolicyCase(data, 'x.case.json'), (e: unknown) => {
      assert.ok(policyErrors.is(e, 'ERR_POLICY_CASE_INVALID'));
      assert.equal(e.message, message);
      return true;
    });
  }
});
