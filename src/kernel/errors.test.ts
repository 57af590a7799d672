import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { defineErrorCatalog, WritError, ERROR_CODE_PATTERN, kernelErrors } from './errors.ts';

const auditErrors = defineErrorCatalog('AUDIT', {
  ERR_AUDIT_CHAIN_BROKEN: { status: 500, description: 'the chain failed verification' },
  ERR_AUDIT_QUEUE_FULL: { status: 503, description: 'too many events wait' },
  ERR_AUDIT_BAD_QUERY: { status: 400, description: 'a query parameter is invalid' },
  ERR_AUDIT_NOT_FOUND: { status: 404, description: 'no such event' },
  ERR_AUDIT_V2_X9: { status: 499, description: 'digits are allowed' },
});

describe('defineErrorCatalog', () => {
  test('refuses a code of another context (TypeError)', () => {
    for (const code of ['ERR_KERNEL_X', 'ERR_AUDITX_Y', 'ERR_AUDI_X', 'ERR_X_AUDIT_Y']) {
      assert.throws(() => defineErrorCatalog('AUDIT', { [code]: { status: 400, description: 'd' } }), {
        name: 'TypeError',
        message: `error code ${code} must look like ERR_AUDIT_<WHAT>`,
      });
    }
  });

  test('refuses a code of the wrong shape (TypeError)', () => {
    for (const code of ['ERR_AUDIT', 'ERR_AUDIT_', 'ERR_AUDIT__X', 'err_audit_x', 'ERR_AUDIT_chain', 'ERR_AUDIT_CHAIN-BROKEN', 'ERR_AUDIT_X ', 'XERR_AUDIT_X', 'AUDIT_X', '']) {
      assert.throws(() => defineErrorCatalog('AUDIT', { [code]: { status: 400, description: 'd' } }), {
        name: 'TypeError',
        message: `error code ${code} must look like ERR_AUDIT_<WHAT>`,
      });
    }
  });

  test('a single bad code refuses the whole catalogue', () => {
    assert.throws(
      () => defineErrorCatalog('AUDIT', { ERR_AUDIT_OK: { status: 400, description: 'd' }, ERR_AUDIT_bad: { status: 400, description: 'd' } }),
      { name: 'TypeError', message: 'error code ERR_AUDIT_bad must look like ERR_AUDIT_<WHAT>' },
    );
  });

  test('the pattern is ERR_ + upper snake case with at least two words', () => {
    for (const ok of ['ERR_A_B', 'ERR_KERNEL_CONFIG_INVALID', 'ERR_X1_Y2']) assert.match(ok, ERROR_CODE_PATTERN);
    for (const bad of ['ERR_A', 'ERR_a_B', 'ERR_A__B', 'ERR_A_B_', 'E_A_B']) assert.doesNotMatch(bad, ERROR_CODE_PATTERN);
  });

  test('the catalogue is frozen and keeps its context and specs', () => {
    assert.equal(auditErrors.context, 'AUDIT');
    assert.ok(Object.isFrozen(auditErrors));
    assert.ok(Object.isFrozen(auditErrors.specs));
    assert.deepEqual(auditErrors.specs.ERR_AUDIT_QUEUE_FULL, { status: 503, description: 'too many events wait' });
  });

  test('adding to the source object later does not change the catalogue', () => {
    const specs: Record<string, { status: number; description: string }> = { ERR_LATE_A: { status: 400, description: 'd' } };
    const catalog = defineErrorCatalog('LATE', specs);
    specs.ERR_LATE_B = { status: 400, description: 'd' };
    assert.deepEqual(Object.keys(catalog.specs), ['ERR_LATE_A']);
    assert.throws(() => catalog.error('ERR_LATE_B', 'x'), { name: 'TypeError', message: 'unknown error code ERR_LATE_B' });
  });
});

describe('error()', () => {
  test('builds a WritError with the code, status and message', () => {
    const e = auditErrors.error('ERR_AUDIT_BAD_QUERY', 'parameter `limit` must be an integer');
    assert.ok(e instanceof WritError);
    assert.ok(e instanceof Error);
    assert.equal(e.name, 'WritError');
    assert.equal(e.code, 'ERR_AUDIT_BAD_QUERY');
    assert.equal(e.status, 400);
    assert.equal(e.message, 'parameter `limit` must be an integer');
    assert.deepEqual(e.reasons, []);
    assert.equal(e.cause, undefined);
    assert.equal('cause' in e, false);
    assert.match(String(e.stack), /^WritError: parameter `limit` must be an integer\n/);
  });

  test('expose is true below 500 and false from 500', () => {
    const rows: readonly [Parameters<typeof auditErrors.error>[0], number, boolean][] = [
      ['ERR_AUDIT_BAD_QUERY', 400, true],
      ['ERR_AUDIT_NOT_FOUND', 404, true],
      ['ERR_AUDIT_V2_X9', 499, true],
      ['ERR_AUDIT_CHAIN_BROKEN', 500, false],
      ['ERR_AUDIT_QUEUE_FULL', 503, false],
    ];
    for (const [code, status, expose] of rows) {
      const e = auditErrors.error(code, 'm');
      assert.equal(e.status, status, code);
      assert.equal(e.expose, expose, code);
    }
  });

  test('carries cause and reasons', () => {
    const cause = new Error('disk full');
    const e = auditErrors.error('ERR_AUDIT_CHAIN_BROKEN', 'bad hash at seq 4', { cause, reasons: ['hash-mismatch'] });
    assert.equal(e.cause, cause);
    assert.deepEqual(e.reasons, ['hash-mismatch']);
  });

  test('an unknown code is programmer misuse (TypeError)', () => {
    // @ts-expect-error the code is not in the closed union
    assert.throws(() => auditErrors.error('ERR_AUDIT_NOPE', 'm'), { name: 'TypeError', message: 'unknown error code ERR_AUDIT_NOPE' });
  });

  test('a WritError built directly computes expose the same way', () => {
    assert.equal(new WritError('ERR_X_Y', 429, 'm').expose, true);
    assert.equal(new WritError('ERR_X_Y', 502, 'm').expose, false);
  });
});

describe('is()', () => {
  test('narrows to WritError for codes of the catalogue', () => {
    const caught: unknown = auditErrors.error('ERR_AUDIT_QUEUE_FULL', 'queue is full');
    if (!auditErrors.is(caught, 'ERR_AUDIT_QUEUE_FULL')) assert.fail('expected is() to be true');
    // Compiles only because is() narrowed `unknown` to WritError.
    const status: number = caught.status;
    assert.equal(status, 503);
  });

  test('with codes: true only for those codes', () => {
    const e = auditErrors.error('ERR_AUDIT_QUEUE_FULL', 'm');
    assert.equal(auditErrors.is(e, 'ERR_AUDIT_QUEUE_FULL'), true);
    assert.equal(auditErrors.is(e, 'ERR_AUDIT_CHAIN_BROKEN', 'ERR_AUDIT_QUEUE_FULL'), true);
    assert.equal(auditErrors.is(e, 'ERR_AUDIT_CHAIN_BROKEN'), false);
    // @ts-expect-error a code from another catalogue is refused at compile time
    assert.equal(auditErrors.is(e, 'ERR_KERNEL_CONFIG_INVALID'), false);
  });

  test('without codes: true for any code of this catalogue only', () => {
    assert.equal(auditErrors.is(auditErrors.error('ERR_AUDIT_BAD_QUERY', 'm')), true);
    assert.equal(auditErrors.is(kernelErrors.error('ERR_KERNEL_CONFIG_INVALID', 'm')), false);
    assert.equal(kernelErrors.is(auditErrors.error('ERR_AUDIT_BAD_QUERY', 'm')), false);
    assert.equal(auditErrors.is(new WritError('ERR_AUDIT_OTHER', 400, 'm')), false);
  });

  test('false for anything that is not a WritError', () => {
    const lookalike = { name: 'WritError', code: 'ERR_AUDIT_BAD_QUERY', status: 400, expose: true, message: 'm' };
    for (const v of [new Error('m'), new TypeError('m'), lookalike, 'ERR_AUDIT_BAD_QUERY', null, undefined, 0]) {
      assert.equal(auditErrors.is(v), false);
      assert.equal(auditErrors.is(v, 'ERR_AUDIT_BAD_QUERY'), false);
    }
  });

  test('does not treat Object.prototype names as codes', () => {
    for (const name of ['constructor', 'toString', '__proto__', 'hasOwnProperty']) {
      assert.equal(auditErrors.is(new WritError(name, 500, 'm')), false, name);
      assert.throws(() => auditErrors.error(name as 'ERR_AUDIT_BAD_QUERY', 'm'), { name: 'TypeError', message: `unknown error code ${name}` });
    }
  });
});

describe('kernelErrors', () => {
  test('declares the kernel codes, all client errors', () => {
    assert.deepEqual(Object.keys(kernelErrors.specs).sort(), ['ERR_KERNEL_CONFIG_INVALID', 'ERR_KERNEL_SPIFFE_ID_INVALID', 'ERR_KERNEL_TRUST_DOMAIN_INVALID']);
    for (const spec of Object.values(kernelErrors.specs)) {
      assert.equal(spec.status, 400);
      assert.ok(spec.description.length > 0);
      assert.ok(!spec.description.endsWith('.'));
    }
  });
});
