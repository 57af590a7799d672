/**
 * A small DER reader for the parts of a certificate X.509-SVID validation
 * needs: the extensions (RFC 5280 §4.1, §4.2) and whether the subject is
 * empty. Parsing a certificate with @peculiar/x509 costs milliseconds; this
 * costs microseconds, which matters on the peer-authentication path.
 *
 * Anything that is not well-formed DER throws a TypeError, which the
 * validator turns into `ERR_IDENTITY_X509_SVID_MALFORMED`.
 */

interface Tlv {
  readonly tag: number;
  /** First byte of the contents. */
  readonly start: number;
  /** One past the last byte of the contents. */
  readonly end: number;
}

function readTlv(buf: Uint8Array, pos: number, limit: number): Tlv {
  if (pos + 2 > limit) throw new TypeError('truncated DER');
  const tag = buf[pos] ?? 0;
  if ((tag & 0x1f) === 0x1f) throw new TypeError('high tag numbers are not used in certificates');
  let len = buf[pos + 1] ?? 0;
  let start = pos + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4) throw new TypeError('unsupported DER length');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + (buf[start + i] ?? 0);
    start += n;
  }
  const end = start + len;
  if (end > limit) throw new TypeError('DER length exceeds its container');
  return { tag, start, end };
}

function children(buf: Uint8Array, parent: Tlv): Tlv[] {
  const out: Tlv[] = [];
  for (let pos = parent.start; pos < parent.end; ) {
    const t = readTlv(buf, pos, parent.end);
    out.push(t);
    pos = t.end;
  }
  return out;
}

function oidString(buf: Uint8Array, t: Tlv): string {
  if (t.tag !== 0x06 || t.end === t.start) throw new TypeError('expected an OBJECT IDENTIFIER');
  const parts: number[] = [];
  let value = 0;
  for (let i = t.start; i < t.end; i++) {
    const b = buf[i] ?? 0;
    value = value * 128 + (b & 0x7f);
    if ((b & 0x80) === 0) {
      if (parts.length === 0) {
        const first = value < 80 ? Math.floor(value / 40) : 2;
        parts.push(first, value - first * 40);
      } else {
        parts.push(value);
      }
      value = 0;
    }
  }
  return parts.join('.');
}

/** One extension as it is encoded. */
export interface RawExtension {
  readonly oid: string;
  readonly critical: boolean;
  readonly value: Uint8Array;
}

/** What the validator reads from a certificate. */
export interface CertificateFacts {
  readonly subjectEmpty: boolean;
  readonly extensions: readonly RawExtension[];
}

/**
 * Read the subject emptiness and the extensions of a DER certificate.
 *
 * @example
 * readCertificateFacts(der).extensions.map((e) => e.oid); // ['2.5.29.19', …]
 */
export function readCertificateFacts(der: Uint8Array): CertificateFacts {
  const cert = readTlv(der, 0, der.length);
  if (cert.tag !== 0x30 || cert.end !== der.length) throw new TypeError('not a certificate');
  const [tbs] = children(der, cert);
  if (tbs === undefined || tbs.tag !== 0x30) throw new TypeError('no tbsCertificate');
  const fields = children(der, tbs);
  let i = 0;
  if (fields[i]?.tag === 0xa0) i++; // [0] version
  // serial, signature, issuer, validity, subject, subjectPublicKeyInfo
  const subject = fields[i + 4];
  if (subject === undefined || subject.tag !== 0x30 || fields[i + 5] === undefined) throw new TypeError('truncated tbsCertificate');
  const extensions: RawExtension[] = [];
  for (const f of fields.slice(i + 6)) {
    if (f.tag !== 0xa3) continue; // [1] issuerUniqueID, [2] subjectUniqueID
    const [seq] = children(der, f);
    if (seq === undefined || seq.tag !== 0x30) throw new TypeError('bad extensions');
    for (const ext of children(der, seq)) {
      const parts = children(der, ext);
      const [oid, second, third] = parts;
      if (oid === undefined || second === undefined) throw new TypeError('bad extension');
      const critical = second.tag === 0x01 ? der[second.start] !== 0 : false;
      const value = second.tag === 0x01 ? third : second;
      if (value === undefined || value.tag !== 0x04) throw new TypeError('bad extension value');
      extensions.push({ oid: oidString(der, oid), critical, value: der.subarray(value.start, value.end) });
    }
  }
  return { subjectEmpty: subject.end === subject.start, extensions };
}

/** basicConstraints (RFC 5280 §4.2.1.9). */
export function readBasicConstraints(value: Uint8Array): { ca: boolean; pathLength: number | undefined } {
  const seq = readTlv(value, 0, value.length);
  if (seq.tag !== 0x30) throw new TypeError('bad basicConstraints');
  let ca = false;
  let pathLength: number | undefined;
  for (const c of children(value, seq)) {
    if (c.tag === 0x01) ca = value[c.start] !== 0;
    else if (c.tag === 0x02) {
      let n = 0;
      for (let i = c.start; i < c.end; i++) n = n * 256 + (value[i] ?? 0);
      pathLength = n;
    }
  }
  return { ca, pathLength };
}

/**
 * keyUsage (RFC 5280 §4.2.1.3) as flags where bit `i` of the BIT STRING is
 * `1 << i` (digitalSignature = 1, keyEncipherment = 4, keyAgreement = 16,
 * keyCertSign = 32, cRLSign = 64), the numbering @peculiar/x509 uses.
 */
export function readKeyUsage(value: Uint8Array): number {
  const bits = readTlv(value, 0, value.length);
  if (bits.tag !== 0x03 || bits.end <= bits.start) throw new TypeError('bad keyUsage');
  let flags = 0;
  for (let i = 0; i < (bits.end - bits.start - 1) * 8 && i < 16; i++) {
    const byte = value[bits.start + 1 + (i >> 3)] ?? 0;
    if (byte & (0x80 >> (i & 7))) flags |= 1 << i;
  }
  return flags;
}

/** extKeyUsage (RFC 5280 §4.2.1.12): the purpose OIDs. */
export function readExtKeyUsage(value: Uint8Array): string[] {
  const seq = readTlv(value, 0, value.length);
  if (seq.tag !== 0x30) throw new TypeError('bad extKeyUsage');
  return children(value, seq).map((c) => oidString(value, c));
}

/** subjectAltName (RFC 5280 §4.2.1.6): the URI names and the DNS names. */
export function readSubjectAltName(value: Uint8Array): { uris: string[]; dnsNames: string[] } {
  const seq = readTlv(value, 0, value.length);
  if (seq.tag !== 0x30) throw new TypeError('bad subjectAltName');
  const uris: string[] = [];
  const dnsNames: string[] = [];
  for (const c of children(value, seq)) {
    const text = Buffer.from(value.subarray(c.start, c.end)).toString('latin1');
    if (c.tag === 0x86) uris.push(text);
    else if (c.tag === 0x82) dnsNames.push(text);
  }
  return { uris, dnsNames };
}
