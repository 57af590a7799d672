/**
 * A fast reader of a policy's head: its annotations, effect and scope
 * (`permit (principal …, action …, resource …)`), in Cedar's JSON shape, for
 * policies that already parsed. cedar-wasm's `policyToJson` costs about a
 * millisecond per policy in JS↔wasm conversions, which made a 10,000-policy
 * set take tens of seconds to compile; the head is all Writ needs from it.
 *
 * INVARIANT: anything this reader does not fully understand returns
 * `undefined`, and the caller falls back to `policyToJson`; a test checks
 * that both agree on every policy of the examples and on tricky heads.
 */
import type { ActionConstraint, EntityUidJson, PrincipalConstraint, ResourceConstraint } from './cedar.ts';

type Tok =
  | { readonly t: 'id'; readonly v: string }
  | { readonly t: 'str'; readonly v: string }
  | { readonly t: 'p'; readonly v: string };

/** The head of a policy, shaped like the matching parts of Cedar's PolicyJson. */
export interface PolicyHead {
  readonly effect: 'permit' | 'forbid';
  readonly annotations: Readonly<Record<string, string>>;
  readonly principal: PrincipalConstraint;
  readonly action: ActionConstraint;
  readonly resource: ResourceConstraint;
}

type EntityConstraint = PrincipalConstraint & ResourceConstraint;

const IDENT = /[A-Za-z_][A-Za-z0-9_]*/y;
const ESCAPES: Readonly<Record<string, string>> = { n: '\n', r: '\r', t: '\t', '\\': '\\', '0': '\0', "'": "'", '"': '"' };

/** Tokens up to the closing parenthesis of the scope; undefined on anything unexpected. */
function tokens(text: string): Tok[] | undefined {
  const out: Tok[] = [];
  let i = 0;
  let depth = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === ' ' || c === '\n' || c === '\t' || c === '\r') {
      i++;
      continue;
    }
    if (c === '/' && text[i + 1] === '/') {
      const nl = text.indexOf('\n', i);
      i = nl < 0 ? text.length : nl + 1;
      continue;
    }
    if (c === '"') {
      let v = '';
      let j = i + 1;
      for (;;) {
        const d = text[j];
        if (d === undefined) return undefined;
        if (d === '"') break;
        if (d === '\\') {
          const e = text[j + 1];
          if (e === undefined) return undefined;
          const mapped = ESCAPES[e];
          if (mapped !== undefined) {
            v += mapped;
            j += 2;
            continue;
          }
          if (e === 'u' && text[j + 2] === '{') {
            const close = text.indexOf('}', j + 3);
            const hex = close < 0 ? '' : text.slice(j + 3, close);
            if (!/^[0-9a-fA-F]{1,6}$/.test(hex)) return undefined;
            const cp = Number.parseInt(hex, 16);
            if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return undefined;
            v += String.fromCodePoint(cp);
            j = close + 1;
            continue;
          }
          return undefined;
        }
        v += d;
        j++;
      }
      out.push({ t: 'str', v });
      i = j + 1;
      continue;
    }
    if (c === ':' && text[i + 1] === ':') {
      out.push({ t: 'p', v: '::' });
      i += 2;
      continue;
    }
    if (c === '=' && text[i + 1] === '=') {
      out.push({ t: 'p', v: '==' });
      i += 2;
      continue;
    }
    if (c === '@' || c === '(' || c === ')' || c === ',' || c === '[' || c === ']') {
      out.push({ t: 'p', v: c });
      i++;
      if (c === '(') depth++;
      if (c === ')') {
        depth--;
        // The scope's closing parenthesis ends the head (annotation parentheses close at depth 0 too, before the effect).
        if (depth === 0 && out.some((x) => x.t === 'id' && (x.v === 'permit' || x.v === 'forbid'))) return out;
      }
      continue;
    }
    IDENT.lastIndex = i;
    const m = IDENT.exec(text);
    if (m === null) return undefined;
    out.push({ t: 'id', v: m[0] });
    i += m[0].length;
  }
  return undefined;
}

/**
 * Read the head of one policy (text as `policySetTextToParts` returns it).
 *
 * @example
 * readPolicyHead('@id("a")\npermit (principal is Writ::Agent, action, resource);');
 * // { effect: 'permit', annotations: { id: 'a' }, principal: { op: 'is', entity_type: 'Writ::Agent' }, … }
 */
export function readPolicyHead(text: string): PolicyHead | undefined {
  const toks = tokens(text);
  if (toks === undefined) return undefined;
  let k = 0;
  const peek = (): Tok | undefined => toks[k];
  const isP = (v: string): boolean => {
    const t = toks[k];
    return t !== undefined && t.t === 'p' && t.v === v;
  };
  const isId = (v: string): boolean => {
    const t = toks[k];
    return t !== undefined && t.t === 'id' && t.v === v;
  };
  const ident = (): string | undefined => {
    const t = toks[k];
    if (t === undefined || t.t !== 'id') return undefined;
    k++;
    return t.v;
  };
  const str = (): string | undefined => {
    const t = toks[k];
    if (t === undefined || t.t !== 'str') return undefined;
    k++;
    return t.v;
  };
  // path :: "id"  or  path (a type) when `typeOnly`.
  const path = (): string | undefined => {
    const first = ident();
    if (first === undefined) return undefined;
    const parts = [first];
    while (isP('::') && toks[k + 1]?.t === 'id') {
      k++;
      const next = ident();
      if (next === undefined) return undefined;
      parts.push(next);
    }
    return parts.join('::');
  };
  const uid = (): EntityUidJson | undefined => {
    const type = path();
    if (type === undefined || !isP('::')) return undefined;
    k++;
    const id = str();
    return id === undefined ? undefined : { type, id };
  };

  const annotations: Record<string, string> = {};
  while (isP('@')) {
    k++;
    const name = ident();
    if (name === undefined || Object.hasOwn(annotations, name)) return undefined;
    // A value-less annotation (`@flag`) is left to cedar-wasm, which gives it `null`.
    if (!isP('(')) return undefined;
    k++;
    const value = str();
    if (value === undefined || !isP(')')) return undefined;
    k++;
    annotations[name] = value;
  }
  const effect = peek();
  if (effect === undefined || effect.t !== 'id' || (effect.v !== 'permit' && effect.v !== 'forbid')) return undefined;
  k++;
  if (!isP('(')) return undefined;
  k++;

  const entityPart = (word: 'principal' | 'resource'): EntityConstraint | undefined => {
    if (!isId(word)) return undefined;
    k++;
    if (isP(',') || isP(')')) return { op: 'All' };
    if (isP('==')) {
      k++;
      const e = uid();
      return e === undefined ? undefined : { op: '==', entity: e };
    }
    if (isId('in')) {
      k++;
      const e = uid();
      return e === undefined ? undefined : { op: 'in', entity: e };
    }
    if (isId('is')) {
      k++;
      const type = path();
      if (type === undefined) return undefined;
      if (isId('in')) {
        k++;
        const e = uid();
        return e === undefined ? undefined : { op: 'is', entity_type: type, in: { entity: e } };
      }
      return { op: 'is', entity_type: type };
    }
    return undefined;
  };

  const principal = entityPart('principal');
  if (principal === undefined || !isP(',')) return undefined;
  k++;

  if (!isId('action')) return undefined;
  k++;
  let action: ActionConstraint;
  if (isP(',')) action = { op: 'All' };
  else if (isP('==')) {
    k++;
    const e = uid();
    if (e === undefined) return undefined;
    action = { op: '==', entity: e };
  } else if (isId('in')) {
    k++;
    if (isP('[')) {
      k++;
      const list: EntityUidJson[] = [];
      while (!isP(']')) {
        const e = uid();
        if (e === undefined) return undefined;
        list.push(e);
        if (isP(',')) k++;
        else if (!isP(']')) return undefined;
      }
      k++;
      action = { op: 'in', entities: list };
    } else {
      const e = uid();
      if (e === undefined) return undefined;
      action = { op: 'in', entity: e };
    }
  } else return undefined;
  if (!isP(',')) return undefined;
  k++;

  const resource = entityPart('resource');
  if (resource === undefined) return undefined;
  // A trailing comma before `)` is allowed by the grammar.
  if (isP(',')) k++;
  if (!isP(')') || k !== toks.length - 1) return undefined;
  return { effect: effect.v, annotations, principal, action, resource };
}
