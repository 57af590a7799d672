import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { correlationIdFrom, newCorrelationId } from './correlation.ts';

const TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736';
const PARENT_ID = '00f067aa0ba902b7';
const ID_SHAPE = /^[0-9a-f]{32}$/;

/** A fresh id: 32 lowercase hex digits, not all zero, not the trace id found in the input. */
function assertFresh(id: string, notThis = TRACE_ID): void {
  assert.match(id, ID_SHAPE);
  assert.notEqual(id, notThis);
  assert.doesNotMatch(id, /^0+$/);
}

describe('correlationIdFrom (W3C Trace Context §3.2)', () => {
  test('a valid traceparent gives its trace id', () => {
    assert.equal(correlationIdFrom(`00-${TRACE_ID}-${PARENT_ID}-01`), TRACE_ID);
    assert.equal(correlationIdFrom(`00-${TRACE_ID}-${PARENT_ID}-00`), TRACE_ID);
    assert.equal(correlationIdFrom(`00-${TRACE_ID}-${PARENT_ID}-ff`), TRACE_ID);
  });

  test('surrounding optional white space is tolerated', () => {
    assert.equal(correlationIdFrom(` 00-${TRACE_ID}-${PARENT_ID}-01\t`), TRACE_ID);
  });

  test('no header gives a fresh id', () => {
    assertFresh(correlationIdFrom(undefined));
  });

  const malformed: readonly [string, string][] = [
    ['empty', ''],
    ['garbage', 'not-a-traceparent'],
    ['uppercase hex', `00-${TRACE_ID.toUpperCase()}-${PARENT_ID}-01`],
    ['short trace id', `00-${TRACE_ID.slice(1)}-${PARENT_ID}-01`],
    ['long trace id', `00-${TRACE_ID}0-${PARENT_ID}-01`],
    ['non-hex trace id', `00-${TRACE_ID.slice(0, 31)}g-${PARENT_ID}-01`],
    ['short parent id', `00-${TRACE_ID}-${PARENT_ID.slice(1)}-01`],
    ['missing flags', `00-${TRACE_ID}-${PARENT_ID}`],
    ['one-digit flags', `00-${TRACE_ID}-${PARENT_ID}-1`],
    ['version 00 with extra field', `00-${TRACE_ID}-${PARENT_ID}-01-extra`],
    ['wrong separators', `00_${TRACE_ID}_${PARENT_ID}_01`],
    ['trace id alone', TRACE_ID],
    ['all-zero trace id (§3.2.2.3)', `00-${'0'.repeat(32)}-${PARENT_ID}-01`],
    ['forbidden version ff (§3.2.2.2)', `ff-${TRACE_ID}-${PARENT_ID}-01`],
    ['malformed version', `0-${TRACE_ID}-${PARENT_ID}-01`],
    ['non-hex version', `0g-${TRACE_ID}-${PARENT_ID}-01`],
  ];
  for (const [name, header] of malformed) {
    test(`${name} gives a fresh id`, () => {
      assertFresh(correlationIdFrom(header));
    });
  }

  test('an all-zero parent id gives a fresh id (§3.2.2.4)', () => {
    assertFresh(correlationIdFrom(`00-${TRACE_ID}-${'0'.repeat(16)}-01`));
  });
});

describe('newCorrelationId', () => {
  test('is 32 lowercase hex digits', () => {
    assert.match(newCorrelationId(), ID_SHAPE);
  });

  test('two fresh ids differ', () => {
    assert.notEqual(newCorrelationId(), newCorrelationId());
    assert.notEqual(correlationIdFrom(undefined), correlationIdFrom(undefined));
    assert.notEqual(correlationIdFrom('bad'), correlationIdFrom('bad'));
    // Many times the 256 ids one pool of random bytes serves: refills never repeat an id.
    const many = new Set(Array.from({ length: 5000 }, () => newCorrelationId()));
    assert.equal(many.size, 5000);
    for (const id of many) assert.match(id, ID_SHAPE);
  });
});
