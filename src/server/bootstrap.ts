/**
 * First start: create the bootstrap admin and hand its credential over in a
 * file only the owner can read.
 */
import { writeFileSync, renameSync, rmSync, mkdirSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import type { AdminPrincipals } from '../governance/index.ts';
import type { Secret } from '../kernel/index.ts';
import { serverErrors } from './errors.ts';

/** Where the bootstrap credential goes for this configuration. */
export function tokenFilePath(tokenFile: string, dataDir: string): string {
  return resolve(tokenFile === '' ? resolve(dataDir, 'admin.token') : tokenFile);
}

/**
 * Create the bootstrap admin when the store has no principal, writing its
 * credential to `path` with mode 0600 (atomically: temp file, then rename)
 * before the principal is stored.
 * Returns the path when a credential was written, undefined when the store
 * already had principals.
 *
 * @example
 * const written = await bootstrapAdmin(admins, '/var/lib/writ/admin.token', correlationId);
 */
export async function bootstrapAdmin(admins: AdminPrincipals, path: string, correlationId: string): Promise<string | undefined> {
  const persist = (token: Secret): void => {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    const tmp = `${path}.${process.pid}.tmp`;
    try {
      writeFileSync(tmp, `${token.reveal()}\n`, { mode: 0o600, flag: 'wx' });
      renameSync(tmp, path);
    } catch (cause) {
      rmSync(tmp, { force: true });
      throw serverErrors.error('ERR_SERVER_DATA_DIR_UNSAFE', `could not write the bootstrap admin credential to ${path}`, { cause });
    }
    const mode = statSync(path).mode & 0o777;
    if (mode !== 0o600) throw serverErrors.error('ERR_SERVER_DATA_DIR_UNSAFE', `bootstrap admin credential file ${path} has mode ${mode.toString(8)}, not 600`);
  };
  const unpersist = (): void => rmSync(path, { force: true });
  const created = await admins.bootstrap(correlationId, persist, unpersist);
  return created === undefined ? undefined : path;
}
