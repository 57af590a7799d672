import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { inspect, format } from 'node:util';
import { Secret, redact, isSecretKey, constantTimeEqual, REDACTED_VALUE } from './secret.ts';
import { SpiffeId } from './spiffe-id.ts';

const VALUE = 'hunter2-do-not-print';

describe('Secret', () => {
  test('reveal() gives the value back, of any type', () => {
    assert.equal(new Secret(VALUE).reveal(), VALUE);
    const bytes = new Uint8Array([1, 2, 3]);
    assert.equal(new Secret(bytes).reveal(), bytes);
  });

  test('never shows through string conversion', () => {
    const s = new Secret(VALUE);
    assert.equal(REDACTED_VALUE, '[redacted]');
    assert.equal(String(s), '[redacted]');
    assert.equal(`${s}`, '[redacted]');
    assert.equal(`token=${s}`, 'token=[redacted]');
    assert.equal(s.toString(), '[redacted]');
    // `+` with a string uses the default hint (valueOf, then toString).
    assert.equal('' + (s as unknown as string), '[redacted]');
    assert.equal(new Error(`bad ${s}`).message, 'bad [redacted]');
  });

  test('never shows through JSON.stringify', () => {
    const s = new Secret(VALUE);
    assert.equal(JSON.stringify(s), '"[redacted]"');
    assert.equal(JSON.stringify({ s, list: [s] }), '{"s":"[redacted]","list":["[redacted]"]}');
    assert.equal(JSON.stringify(new Secret({ password: VALUE })), '"[redacted]"');
  });

  test('never shows through util.inspect or util.format (console.log)', () => {
    const s = new Secret(VALUE);
    assert.equal(inspect(s), '[redacted]');
    assert.equal(inspect({ deep: { deeper: [s] } }, { depth: 10 }), '{ deep: { deeper: [ [redacted] ] } }');
    for (const out of [
      inspect(s, { customInspect: false, showHidden: true, depth: Infinity }),
      format('%s %o %O %j', s, s, s, s),
      format(s),
      format({ s }),
    ]) {
      assert.ok(!out.includes(VALUE), out);
    }
  });

  test('has no own enumerable data and is frozen', () => {
    const s = new Secret(VALUE);
    assert.deepEqual(Object.keys(s), []);
    assert.deepEqual(Object.getOwnPropertyNames(s), []);
    assert.deepEqual({ ...s }, {});
    assert.ok(Object.isFrozen(s));
    assert.ok(!JSON.stringify(structuredClone(s)).includes(VALUE));
  });
});

describe('isSecretKey', () => {
  test('matches secret names whatever their case, dashes and underscores', () => {
    for (const key of [
      'password', 'Password', 'PASSWORD', 'passwd', 'secret', 'client_secret', 'clientSecret', 'Client-Secret',
      'token', 'access_token', 'refreshToken', 'id_token', 'subject_token', 'actor_token', 'assertion', 'client_assertion',
      'Authorization', 'cookie', 'Set-Cookie', 'private_key', 'privateKey', 'key', 'api_key', 'apiKey', 'kek',
      'credential', 'credentials', 'svid_key', 'x509_svid_key', 'dsn', 'connection_string',
    ]) {
      assert.equal(isSecretKey(key), true, key);
    }
  });

  test('does not match other names, even ones that contain a secret word', () => {
    for (const key of ['user', 'name', 'kid', 'keyId', 'tokenType', 'token_type', 'expires_in', 'passwordPolicy', 'secretName', 'tokens', 'publicKey', 'issuer']) {
      assert.equal(isSecretKey(key), false, key);
    }
  });
});

describe('redact', () => {
  test('replaces secret-named keys at any depth and keeps the rest', () => {
    const input = {
      user: 'alice',
      password: VALUE,
      nested: { deeper: { client_secret: VALUE, scope: 'read' } },
      list: [{ token: VALUE, id: 1 }, { Authorization: `Bearer ${VALUE}` }],
    };
    assert.deepEqual(redact(input), {
      user: 'alice',
      password: '[redacted]',
      nested: { deeper: { client_secret: '[redacted]', scope: 'read' } },
      list: [{ token: '[redacted]', id: 1 }, { Authorization: '[redacted]' }],
    });
  });

  test('redacts a secret-named key whatever its value is (objects, numbers)', () => {
    assert.deepEqual(redact({ credentials: { user: 'a', pw: 'b' }, key: 42 }), { credentials: '[redacted]', key: '[redacted]' });
  });

  test('keeps null and undefined under secret names (nothing to hide)', () => {
    assert.deepEqual(redact({ password: null, token: undefined }), { password: null, token: undefined });
  });

  test('replaces Secret values wherever they are', () => {
    const s = new Secret(VALUE);
    assert.deepEqual(redact({ note: s, list: [1, s], deep: { x: [s] } }), { note: '[redacted]', list: [1, '[redacted]'], deep: { x: ['[redacted]'] } });
    assert.equal(redact(s), '[redacted]');
  });

  test('turns Dates into ISO strings and keeps arrays as arrays', () => {
    const at = new Date(Date.UTC(2026, 0, 2, 3, 4, 5));
    const out = redact({ at, list: [at, 'x', null, true, 3] });
    assert.deepEqual(out, { at: '2026-01-02T03:04:05.000Z', list: ['2026-01-02T03:04:05.000Z', 'x', null, true, 3] });
    assert.ok(Array.isArray((out as { list: unknown }).list));
  });

  test('uses toJSON, then redacts what it returns', () => {
    const withJson = { toJSON: () => ({ token: VALUE, ok: true }) };
    assert.deepEqual(redact({ a: withJson, id: SpiffeId.parse('spiffe://example.org/api') }), { a: { token: '[redacted]', ok: true }, id: 'spiffe://example.org/api' });
  });

  test('returns primitives unchanged', () => {
    for (const v of ['text', 1, 0, true, false, null, undefined]) assert.equal(redact(v), v);
  });

  test('does not modify its input', () => {
    const input = { password: VALUE, nested: { token: VALUE } };
    redact(input);
    assert.deepEqual(input, { password: VALUE, nested: { token: VALUE } });
  });

  test('stops at depth 32 and redacts what lies deeper (and so survives cycles)', () => {
    const nest = (n: number): unknown => {
      let v: unknown = 'leaf';
      for (let i = 0; i < n; i++) v = { k: v };
      return v;
    };
    assert.deepEqual(redact(nest(32)), nest(32));
    let expected: unknown = '[redacted]';
    for (let i = 0; i < 33; i++) expected = { k: expected };
    assert.deepEqual(redact(nest(33)), expected);
    const cyclic: Record<string, unknown> = { name: 'x' };
    cyclic.self = cyclic;
    assert.ok(!JSON.stringify(redact(cyclic)).includes(VALUE));
  });
});

describe('constantTimeEqual', () => {
  test('true for equal inputs', () => {
    assert.equal(constantTimeEqual('abc', 'abc'), true);
    assert.equal(constantTimeEqual('', ''), true);
    assert.equal(constantTimeEqual(new Uint8Array([1, 2, 3]), new Uint8Array([1, 2, 3])), true);
    assert.equal(constantTimeEqual('é', new TextEncoder().encode('é')), true);
  });

  test('false for different inputs of the same length', () => {
    assert.equal(constantTimeEqual('abc', 'abd'), false);
    assert.equal(constantTimeEqual('abc', 'ABC'), false);
    assert.equal(constantTimeEqual(new Uint8Array([1, 2, 3]), new Uint8Array([1, 2, 4])), false);
  });

  test('false (no throw) for different lengths', () => {
    assert.equal(constantTimeEqual('abc', 'abcd'), false);
    assert.equal(constantTimeEqual('', 'a'), false);
    assert.equal(constantTimeEqual('a'.repeat(10_000), 'a'), false);
    assert.equal(constantTimeEqual(new Uint8Array(0), new Uint8Array(1)), false);
  });
});
