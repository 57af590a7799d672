/**
 * Reading a policy folder from disk into a {@link PolicySource}. The folder
 * holds `*.cedar` files (in sub-folders too), optionally one `*.cedarschema`
 * (else Writ's own schema, `writ.cedarschema`, applies) and optionally
 * `entities.json` for data the PDP owns.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join, relative, sep } from 'node:path';
import { policyErrors } from './errors.ts';
import type { PolicySource, SourceFile } from './policy-set.ts';

/** Path of Writ's own schema, shipped beside this file. */
export const WRIT_SCHEMA_PATH = new URL('./writ.cedarschema', import.meta.url);

/**
 * Read Writ's schema text.
 *
 * @example
 * const schema = await readWritSchema();
 */
export async function readWritSchema(): Promise<SourceFile> {
  return { path: 'writ.cedarschema', text: await readFile(WRIT_SCHEMA_PATH, 'utf8') };
}

/**
 * Read a policy folder. File paths in the source are relative to `dir`, with
 * `/` separators, so problems read `team/payments.cedar:12`.
 *
 * @example
 * const source = await readPolicyFolder('./examples/authzen-todo');
 * const r = compilePolicySet(source);
 */
export async function readPolicyFolder(dir: string): Promise<PolicySource> {
  let names: string[];
  try {
    names = (await readdir(dir, { recursive: true })).map(String);
  } catch (e) {
    throw policyErrors.error('ERR_POLICY_FOLDER_UNREADABLE', `cannot read policy folder \`${dir}\``, { cause: e });
  }
  const files: SourceFile[] = [];
  const schemas: SourceFile[] = [];
  let entities: SourceFile | undefined;
  for (const name of names.sort()) {
    const full = join(dir, name);
    const path = relative(dir, full).split(sep).join('/');
    const isPolicy = name.endsWith('.cedar');
    const isSchema = name.endsWith('.cedarschema');
    const isEntities = path === 'entities.json';
    if (!isPolicy && !isSchema && !isEntities) continue;
    let text: string;
    try {
      text = await readFile(full, 'utf8');
    } catch (e) {
      throw policyErrors.error('ERR_POLICY_FOLDER_UNREADABLE', `cannot read \`${path}\``, { cause: e });
    }
    if (isPolicy) files.push({ path, text });
    else if (isSchema) schemas.push({ path, text });
    else entities = { path, text };
  }
  if (schemas.length > 1) {
    throw policyErrors.error('ERR_POLICY_SCHEMA_INVALID', `policy folder \`${dir}\` holds ${schemas.length} schemas; keep one`);
  }
  const schema = schemas[0] ?? (await readWritSchema());
  return entities === undefined ? { files, schema } : { files, schema, entities };
}
