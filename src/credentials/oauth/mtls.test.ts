import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { certificateThumbprint, checkCertificateBinding } from './mtls.ts';

describe('certificate-bound tokens (RFC 8705 §3)', () => {
  const der = new Uint8Array(randomBytes(300));
  const other = new Uint8Array(randomBytes(300));
  const bound = { cnf: { 'x5t#S256': certificateThumbprint(der) } };

  test('the thumbprint is base64url SHA-256 of the DER, without padding', () => {
    assert.equal(certificateThumbprint(der), createHash('sha256').update(der).digest('base64').replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, ''));
    assert.equal(certificateThumbprint(der).length, 43);
  });

  test('passes only with the bound certificate', () => {
    checkCertificateBinding(bound, der);
    const cases: { name: string; claims: Parameters<typeof checkCertificateBinding>[0]; cert: Uint8Array | undefined; required?: boolean; message: string }[] = [
      { name: 'another certificate', claims: bound, cert: other, message: 'access token is bound to another TLS client certificate (`cnf.x5t#S256` mismatch)' },
      { name: 'no certificate', claims: bound, cert: undefined, message: 'access token is bound to a TLS client certificate, and the request presented none' },
      { name: 'empty certificate', claims: bound, cert: new Uint8Array(), message: 'access token is bound to a TLS client certificate, and the request presented none' },
      { name: 'malformed thumbprint', claims: { cnf: { 'x5t#S256': 'short' } }, cert: der, message: 'access token has a malformed `cnf.x5t#S256`' },
      { name: 'unbound token where binding is required', claims: {}, cert: der, required: true, message: 'access token is not bound to a TLS client certificate (`cnf.x5t#S256`), and this resource requires one' },
      { name: 'DPoP-bound token where certificate binding is required', claims: { cnf: { jkt: 'x' } }, cert: der, required: true, message: 'access token is not bound to a TLS client certificate (`cnf.x5t#S256`), and this resource requires one' },
    ];
    for (const c of cases) {
      assert.throws(() => checkCertificateBinding(c.claims, c.cert, { required: c.required ?? false }), { code: 'ERR_OAUTH_INVALID_TOKEN', status: 401, message: c.message }, c.name);
    }
  });

  test('an unbound token passes when binding is not required', () => {
    checkCertificateBinding({}, undefined);
    checkCertificateBinding({ cnf: { jkt: 'x' } }, der);
  });
});
