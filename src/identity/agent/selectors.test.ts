import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { WritError } from '../../kernel/index.ts';
import { matchesSelectors, parseSelector, selectorsFromPeer } from './selectors.ts';

const HASH = 'ab'.repeat(32);

describe('selectorsFromPeer', () => {
  it('turns peer credentials into the four unix selectors', () => {
    assert.deepEqual(selectorsFromPeer({ uid: 1000, gid: 100, exePath: '/usr/bin/app', exeSha256: HASH }), [
      'unix:uid:1000',
      'unix:gid:100',
      'unix:path:/usr/bin/app',
      `unix:sha256:${HASH}`,
    ]);
  });
});

describe('parseSelector', () => {
  it('splits at the first two colons, so paths may hold colons', () => {
    assert.deepEqual(parseSelector('unix:path:/opt/a:b'), { type: 'unix', key: 'path', value: '/opt/a:b' });
    assert.deepEqual(parseSelector('k8s:pod-label:app:web'), { type: 'k8s', key: 'pod-label', value: 'app:web' });
  });

  const refusals: Array<[string, string]> = [
    ['unix', 'expected `<type>:<key>:<value>`'],
    ['unix:uid', 'expected `<type>:<key>:<value>`'],
    ['unix:uid:', 'value is empty'],
    ['Unix:uid:1', 'type must be lowercase letters, digits, `_` or `-`'],
    ['unix:UID:1', 'key must be lowercase letters, digits, `_` or `-`'],
    ['unix:user:root', 'unix keys are uid, gid, path and sha256'],
    ['unix:uid:-1', 'malformed unix uid'],
    ['unix:gid:01', 'malformed unix gid'],
    ['unix:path:relative', 'malformed unix path'],
    ['unix:sha256:ABCD', 'malformed unix sha256'],
  ];
  for (const [input, why] of refusals) {
    it(`refuses \`${input}\``, () => {
      assert.throws(() => parseSelector(input), (e: unknown) => {
        assert.ok(e instanceof WritError);
        assert.equal(e.code, 'ERR_IDENTITY_SELECTOR_INVALID');
        assert.equal(e.message, `invalid selector \`${input}\`: ${why}`);
        return true;
      });
    });
  }
});

describe('matchesSelectors', () => {
  const caller = ['unix:uid:1000', 'unix:gid:100', 'unix:path:/usr/bin/app', `unix:sha256:${HASH}`];
  it('matches when every entry selector is in the caller set', () => {
    assert.equal(matchesSelectors(['unix:uid:1000'], caller), true);
    assert.equal(matchesSelectors(['unix:uid:1000', 'unix:path:/usr/bin/app'], caller), true);
    assert.equal(matchesSelectors(caller, caller), true);
  });
  it('does not match when one entry selector is missing', () => {
    assert.equal(matchesSelectors(['unix:uid:1000', 'unix:gid:0'], caller), false);
    assert.equal(matchesSelectors(['unix:uid:0'], caller), false);
  });
  it('an entry without selectors matches nobody', () => {
    assert.equal(matchesSelectors([], caller), false);
  });
});
