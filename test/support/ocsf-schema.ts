/**
 * A small validator of OCSF events against the OCSF schema source data kept in
 * `../shared/conformance/ocsf` (ocsf/ocsf-schema, Apache-2.0). There is no npm
 * validator for OCSF, so tests check exported events against the schema files
 * themselves.
 *
 * What it resolves, as the schema source defines it:
 * - a class's attributes are its own merged over those of the class it
 *   `extends`, up to `base_event`; an object's likewise up to `object`;
 * - `$include` pulls a profile's attributes in, tagged with the profile's name;
 *   an attribute that says `"profile": null` is the class's own again;
 * - each attribute's definition is the `dictionary.json` entry with the
 *   class's or object's overrides on top (enums merge value by value).
 *
 * What it checks, returning one string per violation (empty when valid):
 * - `class_uid` names a known class; `category_uid` is that class's category;
 *   `type_uid` = `class_uid * 100 + activity_id`;
 * - every `required` attribute is present, in the event and in every nested
 *   object of a known object type (profile attributes only when the profile is
 *   listed in `metadata.profiles`);
 * - every attribute exists in the resolved class or object (profile attributes
 *   only when their profile is applied);
 * - enum attributes (`*_id`, `http_method`, …) hold an enum value, and a
 *   sibling label (`status`, `activity_name`, `type`, …) present beside an enum
 *   value other than 99 equals that value's caption; `class_name`,
 *   `category_name` and `type_name` match the class;
 * - scalar types (string, integer, float, boolean), objects and arrays match;
 * - `at_least_one` / `just_one` constraints of classes and objects.
 *
 * @example
 * const schema = loadOcsfSchema();
 * assert.deepEqual(schema.validate(event), []);
 */
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';

/** The repository root (`test/support/` is two levels below it). */
export const REPO_ROOT = path.resolve(import.meta.dirname, '..', '..');

/** Where the OCSF schema data lives, beside the repository. */
export const OCSF_SCHEMA_DIR = path.resolve(REPO_ROOT, '..', 'shared', 'conformance', 'ocsf');

interface EnumValue {
  readonly caption?: string;
}

/** One attribute's definition after merging dictionary, parents and overrides. */
export interface AttributeSpec {
  readonly requirement?: string;
  readonly type?: string;
  readonly is_array?: boolean;
  readonly enum?: Readonly<Record<string, EnumValue>>;
  readonly sibling?: string;
  /** The profile that contributed the attribute; `null`/absent when the class owns it. */
  readonly profile?: string | null;
}

interface Constraints {
  readonly at_least_one?: readonly string[];
  readonly just_one?: readonly string[];
}

/** A class or object with its attributes resolved. */
export interface ResolvedType {
  readonly name: string;
  readonly caption: string;
  readonly attributes: ReadonlyMap<string, AttributeSpec>;
  readonly constraints: Constraints | undefined;
}

/** A concrete event class. */
export interface ResolvedClass extends ResolvedType {
  /** Full `class_uid`: category uid × 1000 + the class's own uid. */
  readonly uid: number;
  readonly categoryUid: number;
  readonly categoryCaption: string;
  /** Captions of `activity_id` values (merged enum). */
  readonly activities: ReadonlyMap<number, string>;
}

interface SchemaFile {
  readonly name: string;
  readonly caption?: string;
  readonly uid?: number;
  readonly category?: string;
  readonly extends?: string;
  readonly attributes?: Record<string, unknown>;
  readonly constraints?: Constraints;
}

type Json = Record<string, unknown>;

function isRecord(v: unknown): v is Json {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function readJson(file: string): SchemaFile {
  const parsed: unknown = JSON.parse(readFileSync(file, 'utf8'));
  if (!isRecord(parsed) || typeof parsed.name !== 'string') {
    throw new TypeError(`schema file \`${file}\` has no name`);
  }
  return parsed as unknown as SchemaFile;
}

function listJson(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...listJson(full));
    else if (entry.name.endsWith('.json')) out.push(full);
  }
  return out;
}

/** Merge `over` onto `base`: plain keys replace, enum values merge one by one. */
function mergeSpec(base: AttributeSpec | undefined, over: AttributeSpec): AttributeSpec {
  if (base === undefined) return over;
  const merged: Record<string, unknown> = { ...base, ...over };
  if (base.enum !== undefined || over.enum !== undefined) {
    const values: Record<string, EnumValue> = { ...base.enum };
    for (const [k, v] of Object.entries(over.enum ?? {})) values[k] = { ...values[k], ...v };
    merged.enum = values;
  }
  return merged as AttributeSpec;
}

function mergeMaps(base: ReadonlyMap<string, AttributeSpec>, over: ReadonlyMap<string, AttributeSpec>): Map<string, AttributeSpec> {
  const out = new Map(base);
  for (const [k, v] of over) out.set(k, mergeSpec(out.get(k), v));
  return out;
}

const BASE_SCALARS = new Set(['string_t', 'integer_t', 'long_t', 'float_t', 'boolean_t', 'json_t']);

/** The OCSF schema loaded from disk, with classes and objects resolved on demand. */
export class OcsfSchema {
  readonly version: string;
  readonly #dir: string;
  readonly #dictionary: ReadonlyMap<string, AttributeSpec>;
  readonly #types: ReadonlyMap<string, string | undefined>;
  readonly #categories: ReadonlyMap<string, { uid: number; caption: string }>;
  readonly #eventFiles = new Map<string, SchemaFile>();
  readonly #objectFiles = new Map<string, SchemaFile>();
  readonly #classesByUid = new Map<number, string>();
  readonly #resolvedEvents = new Map<string, { attributes: Map<string, AttributeSpec>; constraints: Constraints | undefined; category: string | undefined }>();
  readonly #resolvedObjects = new Map<string, ResolvedType>();

  constructor(dir: string = OCSF_SCHEMA_DIR) {
    this.#dir = dir;
    const version: unknown = JSON.parse(readFileSync(path.join(dir, 'version.json'), 'utf8'));
    this.version = isRecord(version) && typeof version.version === 'string' ? version.version : 'unknown';

    const dict: unknown = JSON.parse(readFileSync(path.join(dir, 'dictionary.json'), 'utf8'));
    if (!isRecord(dict) || !isRecord(dict.attributes) || !isRecord(dict.types) || !isRecord(dict.types.attributes)) {
      throw new TypeError(`\`${dir}/dictionary.json\` is not an OCSF dictionary`);
    }
    this.#dictionary = new Map(Object.entries(dict.attributes as Record<string, AttributeSpec>));
    this.#types = new Map(
      Object.entries(dict.types.attributes).map(([k, v]) => [k, isRecord(v) && typeof v.type === 'string' ? v.type : undefined]),
    );

    const cats: unknown = JSON.parse(readFileSync(path.join(dir, 'categories.json'), 'utf8'));
    const categories = new Map<string, { uid: number; caption: string }>();
    if (isRecord(cats) && isRecord(cats.attributes)) {
      for (const [k, v] of Object.entries(cats.attributes)) {
        if (isRecord(v) && typeof v.uid === 'number') categories.set(k, { uid: v.uid, caption: String(v.caption) });
      }
    }
    this.#categories = categories;

    for (const file of listJson(path.join(dir, 'events'))) {
      const f = readJson(file);
      this.#eventFiles.set(f.name, f);
    }
    for (const file of listJson(path.join(dir, 'objects'))) {
      const f = readJson(file);
      this.#objectFiles.set(f.name, f);
    }
    for (const name of this.#eventFiles.keys()) {
      const cls = this.classByName(name);
      if (cls !== undefined) this.#classesByUid.set(cls.uid, name);
    }
  }

  /** A file's own attributes: its `$include`d profiles first, then its own definitions over them. */
  #ownAttributes(file: SchemaFile): Map<string, AttributeSpec> {
    const out = new Map<string, AttributeSpec>();
    const attrs = file.attributes ?? {};
    const includes = attrs.$include;
    for (const inc of Array.isArray(includes) ? includes : []) {
      const included = readJson(path.join(this.#dir, String(inc)));
      for (const [k, v] of Object.entries(included.attributes ?? {})) {
        if (!isRecord(v)) continue;
        out.set(k, mergeSpec(out.get(k), { ...(v as AttributeSpec), profile: included.name }));
      }
    }
    for (const [k, v] of Object.entries(attrs)) {
      if (k === '$include' || !isRecord(v)) continue;
      out.set(k, mergeSpec(out.get(k), v as AttributeSpec));
    }
    return out;
  }

  #resolveEvent(name: string): { attributes: Map<string, AttributeSpec>; constraints: Constraints | undefined; category: string | undefined } {
    const cached = this.#resolvedEvents.get(name);
    if (cached !== undefined) return cached;
    const file = this.#eventFiles.get(name);
    if (file === undefined) throw new TypeError(`unknown event class \`${name}\``);
    const parent = file.extends !== undefined ? this.#resolveEvent(file.extends) : undefined;
    const resolved = {
      attributes: mergeMaps(parent?.attributes ?? new Map(), this.#ownAttributes(file)),
      constraints: file.constraints ?? parent?.constraints,
      category: file.category ?? parent?.category,
    };
    this.#resolvedEvents.set(name, resolved);
    return resolved;
  }

  /** The dictionary entry with the class's or object's definition on top. */
  #withDictionary(attrs: ReadonlyMap<string, AttributeSpec>): Map<string, AttributeSpec> {
    const out = new Map<string, AttributeSpec>();
    for (const [k, v] of attrs) out.set(k, mergeSpec(this.#dictionary.get(k), v));
    return out;
  }

  /** A concrete class by its `name` (e.g. `authentication`), or undefined. */
  classByName(name: string): ResolvedClass | undefined {
    const file = this.#eventFiles.get(name);
    if (file === undefined) return undefined;
    const resolved = this.#resolveEvent(name);
    const category = resolved.category !== undefined ? this.#categories.get(resolved.category) : undefined;
    const categoryUid = category?.uid ?? 0;
    if (file.uid === undefined && name !== 'base_event') return undefined;
    const attributes = this.#withDictionary(resolved.attributes);
    const activities = new Map<number, string>();
    for (const [k, v] of Object.entries(attributes.get('activity_id')?.enum ?? {})) activities.set(Number(k), v.caption ?? '');
    return {
      name,
      caption: file.caption ?? name,
      uid: categoryUid * 1000 + (file.uid ?? 0),
      categoryUid,
      categoryCaption: category?.caption ?? 'Uncategorized',
      attributes,
      constraints: resolved.constraints,
      activities,
    };
  }

  /** A concrete class by its full `class_uid` (e.g. 3002), or undefined. */
  classByUid(uid: number): ResolvedClass | undefined {
    const name = this.#classesByUid.get(uid);
    return name === undefined ? undefined : this.classByName(name);
  }

  /** An object type by name (e.g. `user`), resolved up its `extends` chain, or undefined. */
  object(name: string): ResolvedType | undefined {
    const cached = this.#resolvedObjects.get(name);
    if (cached !== undefined) return cached;
    const file = this.#objectFiles.get(name);
    if (file === undefined) return undefined;
    const parent = file.extends !== undefined ? this.object(file.extends) : undefined;
    const resolved: ResolvedType = {
      name,
      caption: file.caption ?? name,
      attributes: mergeMaps(parent?.attributes ?? new Map(), this.#withDictionary(this.#ownAttributes(file))),
      constraints: file.constraints ?? parent?.constraints,
    };
    this.#resolvedObjects.set(name, resolved);
    return resolved;
  }

  /** The base scalar type (`string_t`, `integer_t`, …) of a dictionary type, or undefined. */
  #baseScalar(type: string): string | undefined {
    let t: string | undefined = type;
    for (let i = 0; i < 8 && t !== undefined; i++) {
      if (BASE_SCALARS.has(t)) return t;
      if (!this.#types.has(t)) return undefined;
      t = this.#types.get(t);
    }
    return undefined;
  }

  /**
   * Every violation of the schema in `event`, as `<path>: <problem>` strings;
   * empty when the event is valid.
   */
  validate(event: unknown): string[] {
    const out: string[] = [];
    if (!isRecord(event)) return ['event: not an object'];
    const classUid = event.class_uid;
    const cls = typeof classUid === 'number' ? this.classByUid(classUid) : undefined;
    if (cls === undefined) return [`event.class_uid: unknown class \`${String(classUid)}\``];

    if (event.category_uid !== cls.categoryUid) {
      out.push(`event.category_uid: \`${String(event.category_uid)}\` is not the category of class ${cls.uid} (${cls.categoryUid})`);
    }
    const activity = event.activity_id;
    if (typeof activity === 'number' && event.type_uid !== cls.uid * 100 + activity) {
      out.push(`event.type_uid: \`${String(event.type_uid)}\` is not class_uid * 100 + activity_id (${cls.uid * 100 + activity})`);
    }
    if (event.class_name !== undefined && event.class_name !== cls.caption) {
      out.push(`event.class_name: \`${String(event.class_name)}\` is not \`${cls.caption}\``);
    }
    if (event.category_name !== undefined && event.category_name !== cls.categoryCaption) {
      out.push(`event.category_name: \`${String(event.category_name)}\` is not \`${cls.categoryCaption}\``);
    }
    if (event.type_name !== undefined && typeof activity === 'number' && activity !== 99) {
      const want = `${cls.caption}: ${cls.activities.get(activity) ?? ''}`;
      if (event.type_name !== want) out.push(`event.type_name: \`${String(event.type_name)}\` is not \`${want}\``);
    }

    const metadata = event.metadata;
    const profiles = new Set(
      isRecord(metadata) && Array.isArray(metadata.profiles) ? metadata.profiles.filter((p): p is string => typeof p === 'string') : [],
    );
    this.#checkAttributes('event', event, cls, profiles, out, new Set(['class_uid', 'category_uid', 'type_uid']));
    return out;
  }

  #checkAttributes(
    where: string,
    value: Json,
    type: ResolvedType,
    profiles: ReadonlySet<string>,
    out: string[],
    skipEnum: ReadonlySet<string> = new Set(),
  ): void {
    const active = (spec: AttributeSpec): boolean =>
      spec.profile === undefined || spec.profile === null || profiles.has(spec.profile);

    for (const [name, spec] of type.attributes) {
      if (spec.requirement === 'required' && active(spec) && (value[name] === undefined || value[name] === null)) {
        out.push(`${where}: missing required attribute \`${name}\``);
      }
    }

    for (const [key, v] of Object.entries(value)) {
      if (v === undefined) continue;
      const at = `${where}.${key}`;
      const spec = type.attributes.get(key);
      if (spec === undefined) {
        // The datetime profile adds a `<name>_dt` RFC 3339 sibling to every timestamp.
        const stem = key.endsWith('_dt') ? type.attributes.get(key.slice(0, -3)) : undefined;
        if (profiles.has('datetime') && stem?.type === 'timestamp_t') {
          if (typeof v !== 'string') out.push(`${at}: expected a string`);
          continue;
        }
        out.push(`${where}: unknown attribute \`${key}\` for \`${type.name}\``);
        continue;
      }
      if (!active(spec)) {
        out.push(`${where}: attribute \`${key}\` belongs to profile \`${String(spec.profile)}\`, which metadata.profiles does not list`);
        continue;
      }
      this.#checkValue(at, v, spec, profiles, out, skipEnum.has(key));
      if (spec.sibling !== undefined && spec.enum !== undefined && !skipEnum.has(key) && value[spec.sibling] !== undefined && v !== 99) {
        const caption = spec.enum[String(v)]?.caption;
        if (caption !== undefined && value[spec.sibling] !== caption) {
          out.push(`${where}.${spec.sibling}: \`${String(value[spec.sibling])}\` is not the caption of ${key} ${String(v)} (\`${caption}\`)`);
        }
      }
    }

    const present = (k: string): boolean => value[k] !== undefined && value[k] !== null;
    const atLeastOne = type.constraints?.at_least_one;
    if (atLeastOne !== undefined && !atLeastOne.some(present)) {
      out.push(`${where}: needs at least one of ${atLeastOne.map((k) => `\`${k}\``).join(', ')}`);
    }
    const justOne = type.constraints?.just_one;
    if (justOne !== undefined && justOne.filter(present).length !== 1) {
      out.push(`${where}: needs exactly one of ${justOne.map((k) => `\`${k}\``).join(', ')}`);
    }
  }

  #checkValue(at: string, v: unknown, spec: AttributeSpec, profiles: ReadonlySet<string>, out: string[], skipEnum: boolean): void {
    if (spec.is_array === true) {
      if (!Array.isArray(v)) {
        out.push(`${at}: expected an array`);
        return;
      }
      v.forEach((item, i) => this.#checkOne(`${at}[${i}]`, item, spec, profiles, out, skipEnum));
      return;
    }
    if (Array.isArray(v)) {
      out.push(`${at}: expected a single value, not an array`);
      return;
    }
    this.#checkOne(at, v, spec, profiles, out, skipEnum);
  }

  #checkOne(at: string, v: unknown, spec: AttributeSpec, profiles: ReadonlySet<string>, out: string[], skipEnum: boolean): void {
    const type = spec.type ?? 'string_t';
    if (type === 'object') {
      // Free-form (`unmapped`): any JSON object.
      if (!isRecord(v)) out.push(`${at}: expected an object`);
      return;
    }
    const objectType = this.object(type);
    if (objectType !== undefined) {
      if (!isRecord(v)) {
        out.push(`${at}: expected an object of type \`${type}\``);
        return;
      }
      this.#checkAttributes(at, v, objectType, profiles, out);
      return;
    }
    const scalar = this.#baseScalar(type);
    const ok =
      scalar === 'string_t' ? typeof v === 'string'
      : scalar === 'integer_t' || scalar === 'long_t' ? Number.isInteger(v)
      : scalar === 'float_t' ? typeof v === 'number' && Number.isFinite(v)
      : scalar === 'boolean_t' ? typeof v === 'boolean'
      : true;
    if (!ok) {
      out.push(`${at}: expected ${scalar ?? type}, got ${JSON.stringify(v)}`);
      return;
    }
    if (spec.enum !== undefined && !skipEnum && !Object.hasOwn(spec.enum, String(v))) {
      out.push(`${at}: \`${String(v)}\` is not in the enum (${Object.keys(spec.enum).join(', ')})`);
    }
  }
}

let cached: OcsfSchema | undefined;

/**
 * The schema from {@link OCSF_SCHEMA_DIR} (or the directory in the
 * `WRIT_OCSF_SCHEMA_DIR` environment variable, to check against another OCSF
 * release's schema source), loaded once per process.
 *
 * @example
 * assert.deepEqual(loadOcsfSchema().validate(toOcsf(record, product)), []);
 */
export function loadOcsfSchema(): OcsfSchema {
  cached ??= new OcsfSchema(process.env.WRIT_OCSF_SCHEMA_DIR ?? OCSF_SCHEMA_DIR);
  return cached;
}
