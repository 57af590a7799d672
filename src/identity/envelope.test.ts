import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Secret } from '../kernel/index.ts';
import { KeyEncryptionKey } from './envelope.ts';

test('a wrapped key opens only with its KEK and its record context', () => {
  const kek = new KeyEncryptionKey(randomBytes(32));
  const secret = randomBytes(100);
  const w = kek.wrap(secret, 'example.org/x509/a');
  assert.deepEqual(Buffer.from(kek.unwrap(w, 'example.org/x509/a')), secret);
  assert.ok(!Buffer.from(w.ciphertext, 'base64url').includes(secret.subarray(0, 16)));
  // Two wraps of the same key differ (fresh DEK and nonces).
  assert.notEqual(kek.wrap(secret, 'example.org/x509/a').ciphertext, w.ciphertext);
  assert.throws(() => kek.unwrap(w, 'example.org/x509/b'), { code: 'ERR_IDENTITY_KEY_UNWRAP_FAILED', message: 'key `example.org/x509/b` could not be decrypted' });
  const tampered = { ...w, ciphertext: `${w.ciphertext.slice(0, 20)}${w.ciphertext[20] === 'A' ? 'B' : 'A'}${w.ciphertext.slice(21)}` };
  assert.throws(() => kek.unwrap(tampered, 'example.org/x509/a'), { code: 'ERR_IDENTITY_KEY_UNWRAP_FAILED', message: 'key `example.org/x509/a` could not be decrypted' });
  const other = new KeyEncryptionKey(new Secret(randomBytes(32)));
  assert.throws(() => other.unwrap(w, 'example.org/x509/a'), {
    code: 'ERR_IDENTITY_KEY_UNWRAP_FAILED',
    message: `key \`example.org/x509/a\` was wrapped by another key-encryption key (\`${kek.id}\`)`,
  });
});

test('the KEK must be 32 bytes and never shows in output', () => {
  assert.throws(() => new KeyEncryptionKey(randomBytes(31)), { code: 'ERR_IDENTITY_KEK_INVALID', message: 'the key-encryption key must be 32 bytes, got 31' });
  const bytes = randomBytes(32);
  const kek = new KeyEncryptionKey(bytes);
  assert.match(kek.id, /^[0-9a-f]{16}$/);
  assert.ok(!JSON.stringify(kek).includes(bytes.toString('hex')));
  assert.ok(!JSON.stringify(kek).includes(bytes.toString('base64')));
});
