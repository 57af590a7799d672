import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { canonicalJson } from './canonical-json.ts';
import { SpiffeId } from './spiffe-id.ts';

/** `n` arrays nested around 0: nestArrays(2) is [[0]]. */
function nestArrays(n: number): unknown {
  let v: unknown = 0;
  for (let i = 0; i < n; i++) v = [v];
  return v;
}

function nestObjects(n: number): unknown {
  let v: unknown = 0;
  for (let i = 0; i < n; i++) v = { k: v };
  return v;
}

/** Small deterministic PRNG (mulberry32) so shuffles are reproducible from a fast-check seed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Deep copy with every object's keys inserted in a random order. */
function shuffleKeys(value: unknown, rand: () => number): unknown {
  if (Array.isArray(value)) return value.map((v) => shuffleKeys(v, rand));
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value);
    for (let i = entries.length - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      const a = entries[i];
      const b = entries[j];
      if (a !== undefined && b !== undefined) {
        entries[i] = b;
        entries[j] = a;
      }
    }
    return Object.fromEntries(entries.map(([k, v]) => [k, shuffleKeys(v, rand)]));
  }
  return value;
}

describe('canonicalJson', () => {
  test('key order does not change the output', () => {
    const a = canonicalJson({ b: 1, a: 2, c: { y: true, x: null } });
    const b = canonicalJson({ c: { x: null, y: true }, a: 2, b: 1 });
    assert.equal(a, '{"a":2,"b":1,"c":{"x":null,"y":true}}');
    assert.equal(b, a);
  });

  test('keys sort by UTF-16 code units (RFC 8785 §3.2.3)', () => {
    // '1' < '9' < 'A' < 'a' < 'z' < U+00E9 < U+20AC < U+D83D (high surrogate of 😀) < U+FB33
    const value = { '\uFB33': 8, '😀': 7, '€': 6, 'é': 5, z: 4, a: 3, A: 2, '9': 1, '10': 0 };
    assert.equal(canonicalJson(value), '{"10":0,"9":1,"A":2,"a":3,"z":4,"é":5,"€":6,"😀":7,"\uFB33":8}');
  });

  test('nested arrays and objects keep array order and sort every object', () => {
    const value = { z: [{ b: 1, a: [3, { d: null, c: true }] }, [], {}], a: {} };
    assert.equal(canonicalJson(value), '{"a":{},"z":[{"a":[3,{"c":true,"d":null}],"b":1},[],{}]}');
  });

  test('scalars print as ECMAScript JSON does', () => {
    const rows: readonly [unknown, string][] = [
      [null, 'null'],
      [true, 'true'],
      [false, 'false'],
      [0, '0'],
      [-0, '0'],
      [1e21, '1e+21'],
      [5e-7, '5e-7'],
      [0.1 + 0.2, '0.30000000000000004'],
      [-12.5, '-12.5'],
      ['', '""'],
      ['a"b\\c\n\u0001', '"a\\"b\\\\c\\n\\u0001"'],
      ['\uD800', '"\\ud800"'],
    ];
    for (const [value, expected] of rows) assert.equal(canonicalJson(value), expected, String(expected));
  });

  test('undefined members are dropped; undefined in arrays becomes null', () => {
    assert.equal(canonicalJson({ a: undefined, b: 1, c: { d: undefined } }), '{"b":1,"c":{}}');
    assert.equal(canonicalJson([undefined, 1]), '[null,1]');
  });

  test('toJSON is honoured, and its result is canonicalised too', () => {
    assert.equal(canonicalJson({ at: new Date(Date.UTC(2026, 0, 2, 3, 4, 5, 6)) }), '{"at":"2026-01-02T03:04:05.006Z"}');
    assert.equal(canonicalJson({ id: SpiffeId.parse('spiffe://example.org/api') }), '{"id":"spiffe://example.org/api"}');
    assert.equal(canonicalJson({ x: { toJSON: () => ({ b: 2, a: 1 }) } }), '{"x":{"a":1,"b":2}}');
  });

  test('a member whose toJSON gives undefined is dropped, as JSON.stringify does', () => {
    assert.equal(canonicalJson({ x: { toJSON: () => undefined }, y: 1 }), '{"y":1}');
  });

  test('non-finite numbers are refused (TypeError)', () => {
    for (const value of [NaN, Infinity, -Infinity, { a: NaN }, [1, Infinity]]) {
      assert.throws(() => canonicalJson(value), { name: 'TypeError', message: 'non-finite numbers have no JSON form' });
    }
  });

  test('functions and symbols are refused (TypeError), wherever they are', () => {
    for (const value of [() => 1, { f: () => 1 }, [function named() {}]]) {
      assert.throws(() => canonicalJson(value), { name: 'TypeError', message: 'function has no JSON form' });
    }
    for (const value of [Symbol('s'), { s: Symbol('s') }]) {
      assert.throws(() => canonicalJson(value), { name: 'TypeError', message: 'symbol has no JSON form' });
    }
  });

  test('a top-level undefined is refused (TypeError)', () => {
    assert.throws(() => canonicalJson(undefined), { name: 'TypeError', message: 'undefined has no JSON form' });
  });

  test('nesting is limited to 64 levels', () => {
    assert.equal(canonicalJson(nestArrays(64)), `${'['.repeat(64)}0${']'.repeat(64)}`);
    assert.equal(canonicalJson(nestObjects(64)), `${'{"k":'.repeat(64)}0${'}'.repeat(64)}`);
    assert.throws(() => canonicalJson(nestArrays(65)), { name: 'TypeError', message: 'value nests deeper than 64 levels' });
    assert.throws(() => canonicalJson(nestObjects(65)), { name: 'TypeError', message: 'value nests deeper than 64 levels' });
  });

  test('a cycle is refused by the depth limit, not a stack overflow', () => {
    const cyclic: Record<string, unknown> = { a: 1 };
    cyclic.self = cyclic;
    assert.throws(() => canonicalJson(cyclic), { name: 'TypeError', message: 'value nests deeper than 64 levels' });
  });

  test('holes in sparse arrays print as null, as JSON.stringify does', () => {
    const sparse = [, 1];
    assert.equal(canonicalJson(sparse), '[null,1]');
    assert.equal(canonicalJson(new Array(2)), '[null,null]');
  });
});

describe('canonicalJson properties', () => {
  // JSON-safe values plus the extras JSON.stringify also handles: undefined members and Dates.
  const jsonish = fc.oneof(
    fc.jsonValue(),
    fc.anything({
      maxDepth: 5,
      withDate: true,
      withBigInt: false,
      withBoxedValues: false,
      withMap: false,
      withSet: false,
      withTypedArray: false,
      withSparseArray: false,
      withNullPrototype: false,
      withObjectString: false,
      values: [fc.constant(undefined), fc.constant(null), fc.boolean(), fc.integer(), fc.double({ noNaN: true, noDefaultInfinity: true }), fc.string()],
    }).filter((v) => v !== undefined && !(v instanceof Date && Number.isNaN(v.getTime()))),
  );

  test('parses back to the same value JSON.stringify would give', () => {
    fc.assert(
      fc.property(jsonish, (value) => {
        assert.deepEqual(JSON.parse(canonicalJson(value)), JSON.parse(JSON.stringify(value)));
      }),
      { numRuns: 1000 },
    );
  });

  test('is invariant under key shuffling', () => {
    fc.assert(
      fc.property(fc.jsonValue(), fc.integer(), (value, seed) => {
        assert.equal(canonicalJson(shuffleKeys(value, prng(seed))), canonicalJson(value));
      }),
      { numRuns: 1000 },
    );
  });

  test('is a fixed point: canonicalising the parsed output gives the same text', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (value) => {
        const once = canonicalJson(value);
        assert.equal(canonicalJson(JSON.parse(once)), once);
      }),
      { numRuns: 500 },
    );
  });
});
