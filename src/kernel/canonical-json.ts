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
      if (Array.isArray(value)) {
        // Array.from visits holes of sparse arrays (map skips them).
        return `[${Array.from(value, (v) => {
          const j = unwrap(v);
          return j === undefined ? 'null' : write(j, depth + 1);
        }).join(',')}]`;
      }
      const obj = value as Record<string, unknown>;
      const parts: string[] = [];
      for (const k of Object.keys(obj).sort()) {
        // Drop a member that is undefined after toJSON, as JSON.stringify does.
        const j = unwrap(obj[k]);
        if (j !== undefined) parts.push(`${JSON.stringify(k)}:${write(j, depth + 1)}`);
      }
      return `{${parts.join(',')}}`;
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
