/**
 * Canonical JSON: object keys sorted by UTF-16 code units, no insignificant
 * white space, `undefined` members dropped (RFC 8785 key ordering; numbers as
 * ECMAScript serializes them). The audit chain hashes this form, so the same
 * event always hashes the same, whatever order its fields were built in.
 *
 * @example
 * canonicalJson({ b: 1, a: [true, null] }); // '{"a":[true,null],"b":1}'
 */
export function canonicalJson(value: unknown): string {
  return write(value, 0);
}

function write(value: unknown, depth: number): string {
  if (depth > 64) throw new TypeError('value nests deeper than 64 levels');
  if (value === null) return 'null';
  switch (typeof value) {
    case 'string':
      return JSON.stringify(value);
    case 'boolean':
      return value ? 'true' : 'false';
    case 'number':
      if (!Number.isFinite(value)) throw new TypeError('non-finite numbers have no JSON form');
      return JSON.stringify(value);
    case 'bigint':
      return value.toString();
    case 'object': {
      const withJson = value as { toJSON?: () => unknown };
      if (typeof withJson.toJSON === 'function') return write(withJson.toJSON(), depth + 1);
      // Built by concatenation (no intermediate arrays): the audit chain canonicalizes every event.
      if (Array.isArray(value)) {
        let out = '[';
        // An index loop visits holes of sparse arrays (as undefined → null), as JSON.stringify does.
        for (let i = 0; i < value.length; i++) {
          const j = unwrap(value[i]);
          if (i > 0) out += ',';
          out += j === undefined ? 'null' : write(j, depth + 1);
        }
        return `${out}]`;
      }
      const obj = value as Record<string, unknown>;
      const keys = Object.keys(obj);
      if (keys.length > 1) keys.sort();
      let out = '{';
      let first = true;
      for (const k of keys) {
        // Drop a member that is undefined after toJSON, as JSON.stringify does.
        const j = unwrap(obj[k]);
        if (j === undefined) continue;
        out += first ? JSON.stringify(k) : `,${JSON.stringify(k)}`;
        out += `:${write(j, depth + 1)}`;
        first = false;
      }
      return `${out}}`;
    }
    default:
      throw new TypeError(`${typeof value} has no JSON form`);
  }
}

/** The value JSON.stringify would serialize: the result of `toJSON` when there is one. */
function unwrap(v: unknown): unknown {
  if (v !== null && typeof v === 'object' && typeof (v as { toJSON?: unknown }).toJSON === 'function') {
    return (v as { toJSON: () => unknown }).toJSON();
  }
  return v;
}
