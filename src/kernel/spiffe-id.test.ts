import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { SpiffeId, TrustDomain, SPIFFE_ID_RULES, MAX_SPIFFE_ID_BYTES, MAX_TRUST_DOMAIN_BYTES } from './spiffe-id.ts';
import { WritError } from './errors.ts';

const ID_CODE = 'ERR_KERNEL_SPIFFE_ID_INVALID';
const TD_CODE = 'ERR_KERNEL_TRUST_DOMAIN_INVALID';

/** Assert `fn` throws a WritError with exactly this code and message. */
function assertWritError(fn: () => unknown, code: string, message: string): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof WritError, `expected a WritError, got ${String(e)}`);
    assert.equal(e.code, code);
    assert.equal(e.message, message);
    assert.equal(e.status, 400);
    assert.equal(e.expose, true);
    return true;
  });
}

const idMessage = (input: string, rule: string): string => `invalid SPIFFE ID \`${input}\`: ${rule}`;
const tdMessage = (input: string, rule: string): string => `invalid trust domain \`${input}\`: ${rule}`;

/** An ID of exactly `bytes` bytes in trust domain example.org. */
function idOfBytes(bytes: number): string {
  const prefix = 'spiffe://example.org/';
  return prefix + 'a'.repeat(bytes - prefix.length);
}

describe('SpiffeId.parse refuses every rule break (SPIFFE-ID §2)', () => {
  const rows: readonly { readonly name: string; readonly input: string; readonly rule: string }[] = [
    // §2: non-empty, scheme `spiffe`
    { name: 'empty', input: '', rule: SPIFFE_ID_RULES.empty },
    { name: 'http scheme', input: 'http://example.org/workload', rule: SPIFFE_ID_RULES.scheme },
    { name: 'https scheme', input: 'https://example.org/workload', rule: SPIFFE_ID_RULES.scheme },
    { name: 'single slash after scheme', input: 'spiffe:/example.org/workload', rule: SPIFFE_ID_RULES.scheme },
    { name: 'no slashes after scheme', input: 'spiffe:example.org/workload', rule: SPIFFE_ID_RULES.scheme },
    { name: 'uppercase scheme (not normal form)', input: 'SPIFFE://example.org/workload', rule: SPIFFE_ID_RULES.scheme },
    { name: 'mixed-case scheme', input: 'Spiffe://example.org/workload', rule: SPIFFE_ID_RULES.scheme },
    { name: 'missing scheme', input: 'example.org/workload', rule: SPIFFE_ID_RULES.scheme },
    { name: 'scheme-relative', input: '//example.org/workload', rule: SPIFFE_ID_RULES.scheme },
    { name: 'leading space', input: ' spiffe://example.org/workload', rule: SPIFFE_ID_RULES.scheme },
    // §2.1: trust domain present
    { name: 'no trust domain, with path', input: 'spiffe:///path', rule: SPIFFE_ID_RULES.missingTrustDomain },
    { name: 'no trust domain, no path', input: 'spiffe://', rule: SPIFFE_ID_RULES.missingTrustDomain },
    // §2.1: trust domain characters
    { name: 'uppercase trust domain (not normal form)', input: 'spiffe://Example.org/workload', rule: SPIFFE_ID_RULES.trustDomainChars },
    { name: 'percent-encoded trust domain', input: 'spiffe://ex%61mple.org/workload', rule: SPIFFE_ID_RULES.trustDomainChars },
    { name: 'userinfo', input: 'spiffe://user@example.org/workload', rule: SPIFFE_ID_RULES.trustDomainChars },
    { name: 'userinfo with password', input: 'spiffe://user:pw@example.org/workload', rule: SPIFFE_ID_RULES.trustDomainChars },
    { name: 'port', input: 'spiffe://example.org:80/workload', rule: SPIFFE_ID_RULES.trustDomainChars },
    { name: 'IPv6 literal', input: 'spiffe://[::1]/workload', rule: SPIFFE_ID_RULES.trustDomainChars },
    { name: 'unicode trust domain', input: 'spiffe://exämple.org/workload', rule: SPIFFE_ID_RULES.trustDomainChars },
    { name: 'space in trust domain', input: 'spiffe://exa mple.org', rule: SPIFFE_ID_RULES.trustDomainChars },
    { name: 'query on trust domain', input: 'spiffe://example.org?x=1', rule: SPIFFE_ID_RULES.trustDomainChars },
    { name: 'fragment on trust domain', input: 'spiffe://example.org#frag', rule: SPIFFE_ID_RULES.trustDomainChars },
    { name: 'backslash in trust domain', input: 'spiffe://example.org\\workload', rule: SPIFFE_ID_RULES.trustDomainChars },
    // §2.1: at most 255 bytes
    { name: 'trust domain of 256 bytes', input: `spiffe://${'a'.repeat(256)}/workload`, rule: SPIFFE_ID_RULES.trustDomainTooLong },
    { name: 'trust domain of 128 two-byte chars (bytes, not chars, count)', input: `spiffe://${'ä'.repeat(128)}`, rule: SPIFFE_ID_RULES.trustDomainTooLong },
    // §2.2: path segment characters; no query, fragment or percent-encoding
    { name: 'space in path', input: 'spiffe://example.org/work load', rule: SPIFFE_ID_RULES.pathChars },
    { name: 'percent-encoded slash', input: 'spiffe://example.org/a%2Fb', rule: SPIFFE_ID_RULES.pathChars },
    { name: 'query', input: 'spiffe://example.org/workload?x=1', rule: SPIFFE_ID_RULES.pathChars },
    { name: 'fragment', input: 'spiffe://example.org/workload#frag', rule: SPIFFE_ID_RULES.pathChars },
    { name: 'unicode in path', input: 'spiffe://example.org/wörkload', rule: SPIFFE_ID_RULES.pathChars },
    { name: 'colon in path', input: 'spiffe://example.org/ns:prod', rule: SPIFFE_ID_RULES.pathChars },
    { name: 'at sign in path', input: 'spiffe://example.org/a@b', rule: SPIFFE_ID_RULES.pathChars },
    { name: 'plus in path', input: 'spiffe://example.org/a+b', rule: SPIFFE_ID_RULES.pathChars },
    // §2.2: no empty segments
    { name: 'empty segment', input: 'spiffe://example.org/ns//sa', rule: SPIFFE_ID_RULES.emptySegment },
    { name: 'double slash after trust domain', input: 'spiffe://example.org//workload', rule: SPIFFE_ID_RULES.emptySegment },
    { name: 'only two slashes', input: 'spiffe://example.org//', rule: SPIFFE_ID_RULES.emptySegment },
    // §2.2: no dot segments
    { name: 'leading dot segment', input: 'spiffe://example.org/./workload', rule: SPIFFE_ID_RULES.dotSegment },
    { name: 'trailing dot segment', input: 'spiffe://example.org/workload/.', rule: SPIFFE_ID_RULES.dotSegment },
    { name: 'leading dot-dot segment', input: 'spiffe://example.org/../workload', rule: SPIFFE_ID_RULES.dotSegment },
    { name: 'inner dot-dot segment', input: 'spiffe://example.org/ns/../workload', rule: SPIFFE_ID_RULES.dotSegment },
    // §2.2: no trailing slash
    { name: 'trailing slash', input: 'spiffe://example.org/workload/', rule: SPIFFE_ID_RULES.trailingSlash },
    { name: 'root path only', input: 'spiffe://example.org/', rule: SPIFFE_ID_RULES.trailingSlash },
    // §2.3: 2048 bytes
    { name: 'ID of 2049 bytes', input: idOfBytes(MAX_SPIFFE_ID_BYTES + 1), rule: SPIFFE_ID_RULES.tooLong },
  ];

  for (const row of rows) {
    test(row.name, () => {
      // Messages echo at most 128 characters of the input.
      const shown = row.input.length > 128 ? `${row.input.slice(0, 128)}…` : row.input;
      assertWritError(() => SpiffeId.parse(row.input), ID_CODE, idMessage(shown, row.rule));
      assert.equal(SpiffeId.tryParse(row.input), undefined);
    });
  }

  test('every rule reachable from parse has at least one row', () => {
    const covered = new Set(rows.map((r) => r.rule));
    // pathNoLeadingSlash is unreachable from a whole ID: the path is whatever follows the first `/`.
    const expected = Object.entries(SPIFFE_ID_RULES).filter(([k]) => k !== 'pathNoLeadingSlash');
    for (const [key, rule] of expected) assert.ok(covered.has(rule), `no row for rule ${key}`);
  });

  test('a non-string is programmer misuse (TypeError)', () => {
    assert.throws(() => SpiffeId.parse(42 as unknown as string), { name: 'TypeError', message: 'SPIFFE ID must be a string' });
    assert.throws(() => TrustDomain.parse(null as unknown as string), { name: 'TypeError', message: 'trust domain must be a string' });
  });
});

describe('SpiffeId.parse accepts valid IDs (SPIFFE-ID §2)', () => {
  const valid: readonly { readonly input: string; readonly td: string; readonly path: string }[] = [
    { input: 'spiffe://example.org', td: 'example.org', path: '' },
    { input: 'spiffe://example.org/ns/prod/sa/api', td: 'example.org', path: '/ns/prod/sa/api' },
    { input: 'spiffe://192.168.1.10/workload', td: '192.168.1.10', path: '/workload' },
    { input: 'spiffe://my_td-1.example/Upper/CASE/path', td: 'my_td-1.example', path: '/Upper/CASE/path' },
    { input: 'spiffe://example.org/a.b/_c-/...', td: 'example.org', path: '/a.b/_c-/...' },
    { input: 'spiffe://example.org/.hidden/..x', td: 'example.org', path: '/.hidden/..x' },
    { input: `spiffe://${'a'.repeat(MAX_TRUST_DOMAIN_BYTES)}/x`, td: 'a'.repeat(MAX_TRUST_DOMAIN_BYTES), path: '/x' },
    { input: idOfBytes(MAX_SPIFFE_ID_BYTES), td: 'example.org', path: idOfBytes(MAX_SPIFFE_ID_BYTES).slice('spiffe://example.org'.length) },
  ];

  for (const row of valid) {
    test(`accepts ${row.input.length > 60 ? `${row.input.slice(0, 60)}… (${Buffer.byteLength(row.input)} bytes)` : row.input}`, () => {
      const id = SpiffeId.parse(row.input);
      assert.equal(id.trustDomain.name, row.td);
      assert.equal(id.path, row.path);
      assert.equal(id.toString(), row.input);
      assert.equal(`${id}`, row.input);
      assert.equal(JSON.stringify({ id }), JSON.stringify({ id: row.input }));
      assert.equal(id.isTrustDomainId(), row.path === '');
      assert.ok(id.memberOf(TrustDomain.parse(row.td)));
      assert.ok(id.equals(SpiffeId.parse(row.input)));
      assert.ok(SpiffeId.tryParse(row.input)?.equals(id));
      assert.ok(Object.isFrozen(id));
    });
  }

  test('exactly 2048 bytes is accepted and 2049 refused', () => {
    assert.equal(Buffer.byteLength(idOfBytes(MAX_SPIFFE_ID_BYTES)), 2048);
    assert.equal(SpiffeId.parse(idOfBytes(2048)).toString().length, 2048);
    assertWritError(() => SpiffeId.parse(idOfBytes(2049)), ID_CODE, idMessage(`${idOfBytes(2049).slice(0, 128)}…`, SPIFFE_ID_RULES.tooLong));
  });

  test('equals compares trust domain and case-sensitive path', () => {
    const a = SpiffeId.parse('spiffe://example.org/ns/Prod');
    assert.equal(a.equals(SpiffeId.parse('spiffe://example.org/ns/prod')), false);
    assert.equal(a.equals(SpiffeId.parse('spiffe://example.com/ns/Prod')), false);
    assert.equal(a.equals(SpiffeId.parse('spiffe://example.org/ns')), false);
    assert.equal(a.equals(SpiffeId.parse('spiffe://example.org/ns/Prod')), true);
  });

  test('memberOf is false for another trust domain, including a suffix or prefix of it', () => {
    const id = SpiffeId.parse('spiffe://prod.example.org/api');
    assert.equal(id.memberOf(TrustDomain.parse('prod.example.org')), true);
    assert.equal(id.memberOf(TrustDomain.parse('example.org')), false);
    assert.equal(id.memberOf(TrustDomain.parse('prod.example.or')), false);
  });
});

describe('TrustDomain', () => {
  test('parse from a name', () => {
    const td = TrustDomain.parse('example.org');
    assert.equal(td.name, 'example.org');
    assert.equal(td.toString(), 'example.org');
    assert.equal(JSON.stringify([td]), '["example.org"]');
    assert.equal(td.idString(), 'spiffe://example.org');
    assert.ok(td.equals(TrustDomain.parse('example.org')));
    assert.equal(td.equals(TrustDomain.parse('example.com')), false);
    assert.ok(Object.isFrozen(td));
  });

  test('parse from an ID keeps only the trust domain', () => {
    assert.equal(TrustDomain.parse('spiffe://example.org/ns/prod').name, 'example.org');
    assert.equal(TrustDomain.parse('spiffe://example.org').name, 'example.org');
    assert.equal(TrustDomain.parse('10.0.0.1').name, '10.0.0.1');
  });

  test('parse of an invalid ID reports the SPIFFE ID rule', () => {
    assertWritError(() => TrustDomain.parse('http://example.org'), ID_CODE, idMessage('http://example.org', SPIFFE_ID_RULES.scheme));
    assertWritError(() => TrustDomain.parse('spiffe://example.org/'), ID_CODE, idMessage('spiffe://example.org/', SPIFFE_ID_RULES.trailingSlash));
  });

  const rows: readonly { readonly name: string; readonly input: string; readonly rule: string }[] = [
    { name: 'empty', input: '', rule: SPIFFE_ID_RULES.missingTrustDomain },
    { name: 'uppercase', input: 'Example.org', rule: SPIFFE_ID_RULES.trustDomainChars },
    { name: 'percent-encoding', input: 'ex%61mple.org', rule: SPIFFE_ID_RULES.trustDomainChars },
    { name: 'userinfo', input: 'user@example.org', rule: SPIFFE_ID_RULES.trustDomainChars },
    { name: 'port', input: 'example.org:80', rule: SPIFFE_ID_RULES.trustDomainChars },
    { name: 'IPv6', input: '[::1]', rule: SPIFFE_ID_RULES.trustDomainChars },
    { name: 'unicode', input: 'exämple.org', rule: SPIFFE_ID_RULES.trustDomainChars },
    { name: 'path without scheme', input: 'example.org/ns', rule: SPIFFE_ID_RULES.trustDomainChars },
    { name: '256 bytes', input: 'a'.repeat(256), rule: SPIFFE_ID_RULES.trustDomainTooLong },
  ];
  for (const row of rows) {
    test(`parse refuses ${row.name}`, () => {
      const shown = row.input.length > 128 ? `${row.input.slice(0, 128)}…` : row.input;
      assertWritError(() => TrustDomain.parse(row.input), TD_CODE, tdMessage(shown, row.rule));
    });
  }

  test('255 bytes is accepted', () => {
    assert.equal(TrustDomain.parse('a'.repeat(255)).name.length, 255);
  });

  test('newId builds a member ID from a path', () => {
    const td = TrustDomain.parse('example.org');
    const id = td.newId('/ns/prod/sa/api');
    assert.equal(id.toString(), 'spiffe://example.org/ns/prod/sa/api');
    assert.ok(id.memberOf(td));
    assert.ok(td.newId('').isTrustDomainId());
    assertWritError(() => td.newId('/ns/../x'), ID_CODE, idMessage('spiffe://example.org/ns/../x', SPIFFE_ID_RULES.dotSegment));
    assertWritError(() => td.newId('/x/'), ID_CODE, idMessage('spiffe://example.org/x/', SPIFFE_ID_RULES.trailingSlash));
  });

  // BUG: newId concatenates without checking the leading slash, so a path that does
  // not start with `/` silently lands in another trust domain (`.evil.com/x` gives
  // `spiffe://example.org.evil.com/x`).
  test('newId refuses a path without a leading slash instead of changing trust domain', () => {
    const td = TrustDomain.parse('example.org');
    assertWritError(() => td.newId('ns/prod'), ID_CODE, idMessage('ns/prod', SPIFFE_ID_RULES.pathNoLeadingSlash));
    assertWritError(() => td.newId('.evil.com/x'), ID_CODE, idMessage('.evil.com/x', SPIFFE_ID_RULES.pathNoLeadingSlash));
  });
});

describe('error messages are safe to log', () => {
  test('C0 control characters, DEL and backticks are replaced', () => {
    const input = 'spiffe://example.org/a\nb\u001b[31m\u007f`\r\u0000';
    assertWritError(() => SpiffeId.parse(input), ID_CODE, idMessage('spiffe://example.org/a?b?[31m????', SPIFFE_ID_RULES.pathChars));
    assertWritError(() => TrustDomain.parse('ex\tample'), TD_CODE, tdMessage('ex?ample', SPIFFE_ID_RULES.trustDomainChars));
  });

  // Unicode category Cc also holds C1 controls U+0080–U+009F; U+009B is the 8-bit CSI
  // that starts a terminal escape sequence just as ESC [ does.
  test('no control character at all (\\p{Cc}, including C1) reaches a message', () => {
    for (const input of ['spiffe://example.org/a\u009b31mb', 'spiffe://example.org/a\u0085b', 'ex\u0090ample']) {
      try {
        if (input.startsWith('spiffe:')) SpiffeId.parse(input);
        else TrustDomain.parse(input);
        assert.fail('expected a refusal');
      } catch (e) {
        assert.ok(e instanceof WritError);
        assert.doesNotMatch(e.message, /\p{Cc}/u);
      }
    }
  });

  test('huge inputs give bounded messages', () => {
    const huge = `spiffe://example.org/${'a'.repeat(1_000_000)}`;
    assertWritError(() => SpiffeId.parse(huge), ID_CODE, idMessage(`${huge.slice(0, 128)}…`, SPIFFE_ID_RULES.tooLong));
    const hugeTd = 'A'.repeat(1_000_000);
    assertWritError(() => TrustDomain.parse(hugeTd), TD_CODE, tdMessage(`${'A'.repeat(128)}…`, SPIFFE_ID_RULES.trustDomainTooLong));
    const badChars = `spiffe://example.org/${'\n'.repeat(1500)}`;
    assertWritError(() => SpiffeId.parse(badChars), ID_CODE, idMessage(`${'spiffe://example.org/'}${'?'.repeat(128 - 21)}…`, SPIFFE_ID_RULES.pathChars));
  });

  test('messages are well-formed unicode even when the cut falls inside a surrogate pair', () => {
    const input = `spiffe://example.org/${'a'.repeat(106)}😀${'b'.repeat(10)}`;
    assert.equal(input.length > 128, true);
    assert.throws(() => SpiffeId.parse(input), (e: unknown) => {
      assert.ok(e instanceof WritError);
      assert.ok(e.message.isWellFormed(), 'message holds a lone surrogate');
      return true;
    });
  });
});

describe('properties', () => {
  const lower = 'abcdefghijklmnopqrstuvwxyz';
  const tdChars = [...`${lower}0123456789._-`];
  const segChars = [...`${lower}${lower.toUpperCase()}0123456789._-`];
  const trustDomain = fc.string({ unit: fc.constantFrom(...tdChars), minLength: 1, maxLength: 40 });
  const segment = fc.string({ unit: fc.constantFrom(...segChars), minLength: 1, maxLength: 20 }).filter((s) => s !== '.' && s !== '..');
  const path = fc.array(segment, { maxLength: 8 }).map((segs) => segs.map((s) => `/${s}`).join(''));

  test('any ID built from the allowed alphabets in the allowed shape parses and round-trips', () => {
    fc.assert(
      fc.property(trustDomain, path, (td, p) => {
        const input = `spiffe://${td}${p}`;
        const id = SpiffeId.parse(input);
        assert.equal(id.toString(), input);
        assert.equal(id.toJSON(), input);
        assert.equal(id.trustDomain.name, td);
        assert.equal(id.path, p);
        assert.equal(id.isTrustDomainId(), p === '');
        assert.ok(SpiffeId.parse(id.toString()).equals(id));
        const parsedTd = TrustDomain.parse(td);
        assert.ok(id.memberOf(parsedTd));
        assert.ok(parsedTd.newId(p).equals(id));
        assert.ok(TrustDomain.parse(input).equals(parsedTd));
      }),
      { numRuns: 500 },
    );
  });

  const allowedCodes = new Set([ID_CODE, TD_CODE]);
  function onlyWritErrors(parse: (s: string) => { toString(): string }, input: string): void {
    try {
      const value = parse(input);
      // Whatever is accepted is in normal form: it prints back as given.
      assert.ok(input === value.toString() || input.includes('://'));
    } catch (e) {
      assert.ok(e instanceof WritError, `threw ${String(e)}`);
      assert.ok(allowedCodes.has(e.code), `unexpected code ${e.code}`);
      assert.doesNotMatch(e.message, /[\u0000-\u001f\u007f]/);
      assert.ok(e.message.length < 400, 'message is bounded');
    }
  }

  // Random strings, and random strings after a valid prefix so deeper checks run too.
  const hostile = fc.oneof(
    fc.string({ unit: 'binary', maxLength: 300 }),
    fc.string({ unit: 'binary', maxLength: 300 }).map((s) => `spiffe://${s}`),
    fc.string({ unit: 'binary', maxLength: 300 }).map((s) => `spiffe://example.org/${s}`),
    fc.string({ unit: fc.constantFrom(...'spife:/.A%@[]?#a'), maxLength: 40 }),
    fc.string({ unit: fc.constantFrom(...'abc./-_'), maxLength: 3000 }).map((s) => `spiffe://${s}`),
  );

  test('random input never throws anything but a WritError with one of the two codes', () => {
    fc.assert(
      fc.property(hostile, (input) => {
        onlyWritErrors(SpiffeId.parse, input);
        onlyWritErrors(TrustDomain.parse, input);
        const id = SpiffeId.tryParse(input);
        if (id !== undefined) assert.equal(id.toString(), input);
      }),
      { numRuns: 2000 },
    );
  });
});
