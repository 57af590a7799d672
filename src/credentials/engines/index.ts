/**
 * The engine plugins Writ ships, and building engines from definitions.
 */
import { invalid } from './engine.ts';
import type { AdminSecretSource, EnginePlugin, SecretEngine } from './engine.ts';
import { postgresPlugin } from './postgres.ts';
import { redisPlugin } from './redis.ts';

const PLUGINS: readonly EnginePlugin<unknown>[] = [postgresPlugin as EnginePlugin<unknown>, redisPlugin as EnginePlugin<unknown>];

/**
 * Validate every definition (all of them, before any connection opens), then
 * create the engines. `adminSecret(name)` gives each engine the source of its
 * rotated admin secret.
 *
 * @example
 * const engines = buildEngines(JSON.parse(config['credentials.engines']), (name) => rotator.source(name));
 */
export function buildEngines(defs: unknown, adminSecret?: (engine: string) => AdminSecretSource): SecretEngine[] {
  if (!Array.isArray(defs)) invalid('?', 'engine definitions must be a JSON array');
  const valid = defs.map((d: unknown) => {
    const type = typeof d === 'object' && d !== null ? (d as { type?: unknown }).type : undefined;
    const plugin = PLUGINS.find((p) => p.type === type);
    if (plugin === undefined) invalid(String((d as { name?: unknown } | null)?.name ?? '?'), `\`type\` must be one of ${PLUGINS.map((p) => p.type).join(', ')}`);
    return { plugin, config: plugin.validate(d) };
  });
  const names = new Set<string>();
  for (const v of valid) {
    const name = (v.config as { name: string }).name;
    if (names.has(name)) invalid(name, 'two engines have this name');
    names.add(name);
  }
  return valid.map((v) => v.plugin.create(v.config, adminSecret?.((v.config as { name: string }).name)));
}

export { postgresPlugin, redisPlugin };
export { generatePassword } from './engine.ts';
export type { AdminSecretSource, DynamicAccount, EnginePlugin, SecretEngine } from './engine.ts';
export { scramSha256Verifier } from './scram.ts';
export type { PostgresEngineConfig } from './postgres.ts';
export type { RedisEngineConfig } from './redis.ts';
