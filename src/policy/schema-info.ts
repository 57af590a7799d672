/**
 * What the PDP needs to know about a Cedar schema at request time: the
 * declared attributes of each entity type and of each action's context (so
 * caller-supplied data is allow-listed to them: AuthZEN 1.0 says unknown
 * fields are ignored), and the action hierarchy (so policies can be sliced).
 */
import type { CedarType, SchemaJson } from './cedar.ts';

/**
 * Declared attributes of a record: each name maps to the shape of its value
 * when that value is itself a record, else to `null`. The whole shape is
 * `null` when the schema leaves the record open.
 */
export type AttributeNames = ReadonlyMap<string, AttributeNames> | null;

/** Facts about one schema, indexed for the hot path. */
export interface SchemaInfo {
  /** Fully qualified entity type names (`Writ::Workload`) → declared attributes. */
  readonly entityTypes: ReadonlyMap<string, AttributeNames>;
  /** Action uid key (`Writ::Action::"tools/call"`) → declared context attributes. */
  readonly actionContexts: ReadonlyMap<string, AttributeNames>;
  /** Action uid key → every action uid key that is it or a descendant of it. */
  readonly actionDescendants: ReadonlyMap<string, ReadonlySet<string>>;
  /** The namespaces declared (`''` for the empty one). */
  readonly namespaces: readonly string[];
  /**
   * Action uid key → the principal and resource types it applies to (fully
   * qualified). Only actions with an `appliesTo` are here: groups are not.
   */
  readonly actionAppliesTo: ReadonlyMap<string, ActionAppliesTo>;
}

/** The entity types one action applies to. */
export interface ActionAppliesTo {
  /** The action's id (`tools/call`), what AuthZEN calls its `name`. */
  readonly id: string;
  readonly principals: ReadonlySet<string>;
  readonly resources: ReadonlySet<string>;
}

/** The key of an entity uid: `Type::"id"` with the id JSON-quoted. */
export function uidKey(type: string, id: string): string {
  return `${type}::${JSON.stringify(id)}`;
}

function qualify(ns: string, name: string): string {
  if (name.includes('::') || ns === '') return name;
  return `${ns}::${name}`;
}

/** The type names Cedar's JSON schema format reserves; any other `type` names a common type. */
const BUILTIN_TYPES: ReadonlySet<string> = new Set(['Record', 'Set', 'Long', 'String', 'Boolean', 'Bool', 'Entity', 'Extension', 'EntityOrCommon']);

function recordAttributes(
  t: CedarType<string> | undefined,
  ns: string,
  common: ReadonlyMap<string, CedarType<string>>,
  depth = 0,
): AttributeNames {
  if (t === undefined || depth > 8) return null;
  if (t.type === 'Record' && 'attributes' in t) {
    if (t.additionalAttributes === true) return null;
    const out = new Map<string, AttributeNames>();
    for (const [k, v] of Object.entries(t.attributes)) out.set(k, recordAttributes(v, ns, common, depth + 1));
    return out;
  }
  if (t.type === 'EntityOrCommon' && 'name' in t) {
    const ref = common.get(qualify(ns, t.name)) ?? common.get(t.name);
    return recordAttributes(ref, ns, common, depth + 1);
  }
  // A common type named directly (`{"type": "RequestContext"}`), as `schemaToJson` writes an
  // action's `context: RequestContext`. Built-in type names never collide with common ones.
  if (!BUILTIN_TYPES.has(t.type)) {
    const ref = common.get(qualify(ns, t.type)) ?? common.get(t.type);
    return recordAttributes(ref, ns, common, depth + 1);
  }
  return null;
}

/**
 * Index a schema given in Cedar's JSON form (from `schemaToJson`).
 *
 * @example
 * const info = buildSchemaInfo(json);
 * info.entityTypes.get('Writ::Workload'); // Map { 'spiffeId' => null, 'labels' => null, … }
 */
export function buildSchemaInfo(json: SchemaJson<string>): SchemaInfo {
  const entityTypes = new Map<string, AttributeNames>();
  const actionContexts = new Map<string, AttributeNames>();
  const parents = new Map<string, string[]>();
  const actionAppliesTo = new Map<string, ActionAppliesTo>();
  const common = new Map<string, CedarType<string>>();
  const namespaces = Object.keys(json);

  for (const [ns, def] of Object.entries(json)) {
    for (const [name, t] of Object.entries(def.commonTypes ?? {})) common.set(qualify(ns, name), t);
  }
  for (const [ns, def] of Object.entries(json)) {
    for (const [name, et] of Object.entries(def.entityTypes)) {
      const shape = 'shape' in et ? et.shape : undefined;
      entityTypes.set(qualify(ns, name), shape === undefined ? new Map() : recordAttributes(shape, ns, common));
    }
    const actionType = qualify(ns, 'Action');
    for (const [id, action] of Object.entries(def.actions)) {
      const key = uidKey(actionType, id);
      const ctx = action.appliesTo?.context;
      actionContexts.set(key, ctx === undefined ? new Map() : recordAttributes(ctx, ns, common));
      const applies = action.appliesTo;
      if (applies !== undefined && applies !== null) {
        actionAppliesTo.set(key, {
          id,
          principals: new Set((applies.principalTypes ?? []).map((t) => qualify(ns, t))),
          resources: new Set((applies.resourceTypes ?? []).map((t) => qualify(ns, t))),
        });
      }
      parents.set(
        key,
        (action.memberOf ?? []).map((m) => uidKey(m.type === undefined ? actionType : qualify(ns, m.type), m.id)),
      );
    }
  }

  // Descendants: walk each action's ancestors and add the action under each.
  const actionDescendants = new Map<string, Set<string>>();
  for (const key of parents.keys()) {
    const seen = new Set<string>();
    const stack = [key];
    while (stack.length > 0) {
      const k = stack.pop();
      if (k === undefined || seen.has(k)) continue;
      seen.add(k);
      for (const p of parents.get(k) ?? []) stack.push(p);
    }
    for (const ancestor of seen) {
      let set = actionDescendants.get(ancestor);
      if (set === undefined) {
        set = new Set();
        actionDescendants.set(ancestor, set);
      }
      set.add(key);
    }
  }
  return { entityTypes, actionContexts, actionDescendants, namespaces, actionAppliesTo };
}

/**
 * Resolve a type name as a caller spells it (`workload`, `Workload`,
 * `Writ::Workload`) to a declared entity type: exact match first, then the
 * name in each namespace, then a case-insensitive match on the last segment.
 * Returns `undefined` when nothing (or more than one type) matches.
 *
 * @example
 * resolveEntityType(info, 'workload'); // 'Writ::Workload'
 */
export function resolveEntityType(info: SchemaInfo, name: string): string | undefined {
  if (info.entityTypes.has(name)) return name;
  for (const ns of info.namespaces) {
    const q = qualify(ns, name);
    if (info.entityTypes.has(q)) return q;
  }
  const lower = name.toLowerCase();
  const hits = [...info.entityTypes.keys()].filter((t) => (t.split('::').pop() ?? '').toLowerCase() === lower);
  return hits.length === 1 ? hits[0] : undefined;
}

/**
 * Resolve an action name (`tools/call`, `can_read_user`) to its uid in the
 * schema: `{type: 'Writ::Action', id}`. `undefined` when no namespace declares it.
 *
 * @example
 * resolveAction(info, 'tools/call'); // { type: 'Writ::Action', id: 'tools/call' }
 */
export function resolveAction(info: SchemaInfo, name: string): { type: string; id: string } | undefined {
  for (const ns of info.namespaces) {
    const type = qualify(ns, 'Action');
    if (info.actionContexts.has(uidKey(type, name))) return { type, id: name };
  }
  return undefined;
}
