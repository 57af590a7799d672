import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { policySetTextToParts, policyToJson } from './cedar.ts';
import { readPolicyHead } from './policy-head.ts';

const EXAMPLES = fileURLToPath(new URL('../../examples', import.meta.url));

function viaCedar(text: string): unknown {
  const j = policyToJson(text);
  assert.equal(j.type, 'success', text);
  if (j.type !== 'success') return undefined;
  return { effect: j.json.effect, annotations: j.json.annotations ?? {}, principal: j.json.principal, action: j.json.action, resource: j.json.resource };
}

function partsOf(text: string): string[] {
  const p = policySetTextToParts(text);
  assert.equal(p.type, 'success');
  return p.type === 'success' ? p.policies : [];
}

const TRICKY = [
  'permit (principal, action, resource);',
  'forbid(principal,action,resource)when{true};',
  '@id("a")\n@reason("why-not")\npermit (principal == Writ::Workload::"spiffe://td/x", action == Writ::Action::"http:GET", resource is Writ::Service);',
  '// leading comment\n@id("b") // trailing\npermit (\n  principal is Writ::Agent in Writ::Team::"t", // the team\n  action in [Writ::Action::"http:GET", Writ::Action::"http:HEAD",],\n  resource in Writ::Environment::"prod"\n) when { principal.labels.contains("x") };',
  '@id("esc\\"aped \\u{1F600} \\n tab\\t")\npermit (principal == User::"a\\\\b\\"c", action in Action::"read", resource == Record::"r,(1)");',
  'permit (principal, action == Action::"r", resource,);',
  '@id("ns")\npermit (principal is A::B::C, action == A::B::Action::"x", resource is A::B::D in A::B::D::"::(");',
];

test('the head reader agrees with cedar-wasm on every example policy', async () => {
  let n = 0;
  for (const ex of await readdir(EXAMPLES)) {
    for (const f of (await readdir(join(EXAMPLES, ex), { recursive: true })).map(String).filter((x) => x.endsWith('.cedar'))) {
      for (const p of partsOf(await readFile(join(EXAMPLES, ex, f), 'utf8'))) {
        assert.deepEqual(readPolicyHead(p), viaCedar(p), p);
        n++;
      }
    }
  }
  assert.ok(n >= 15, `only ${n} policies checked`);
});

test('the head reader agrees with cedar-wasm on tricky heads (comments, escapes, lists, is-in, trailing comma)', () => {
  for (const text of TRICKY) {
    const [p] = partsOf(text);
    assert.ok(p !== undefined);
    const head = readPolicyHead(p);
    assert.notEqual(head, undefined, p);
    assert.deepEqual(head, viaCedar(p), p);
  }
});

test('heads it does not understand are left to cedar-wasm (undefined)', () => {
  for (const text of [
    'permit (principal == ?principal, action, resource);',
    'permit (principal, action, resource in ?resource);',
    '@id("a") @id("b") permit (principal, action, resource);',
    '@flag permit (principal, action, resource);',
    'permit (principal, action, resource',
    '@id("bad \\q escape") permit (principal, action, resource);',
  ]) {
    assert.equal(readPolicyHead(text), undefined, text);
  }
});
