import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { CONFIG_SCHEMA, CLIENT_ENV, loadConfig, describeConfig, envName } from './config.ts';
import type { ConfigKey, ConfigSources, OptionSpec } from './config.ts';
import { WritError } from './errors.ts';

const CODE = 'ERR_KERNEL_CONFIG_INVALID';
const ENTRIES = Object.entries(CONFIG_SCHEMA) as [ConfigKey, OptionSpec][];

function assertInvalid(sources: ConfigSources, message: string): void {
  assert.throws(() => loadConfig(sources), (e: unknown) => {
    assert.ok(e instanceof WritError, `expected a WritError, got ${String(e)}`);
    assert.equal(e.code, CODE);
    assert.equal(e.message, message);
    assert.equal(e.status, 400);
    return true;
  });
}

/** Nest a dotted key the way the config file spells it: `a.b` → `{a: {b: v}}`. */
function nested(key: string, value: unknown): Record<string, unknown> {
  const parts = key.split('.');
  let out: unknown = value;
  for (let i = parts.length - 1; i >= 0; i--) out = { [parts[i] ?? '']: out };
  return out as Record<string, unknown>;
}

describe('defaults', () => {
  test('every key equals its CONFIG_SCHEMA default', () => {
    const config = loadConfig();
    assert.deepEqual(Object.keys(config).sort(), Object.keys(CONFIG_SCHEMA).sort());
    for (const [key, spec] of ENTRIES) assert.equal(config[key], spec.default, key);
  });

  test('empty sources give the defaults too', () => {
    assert.deepEqual(loadConfig({ file: {}, env: {}, flags: {} }), loadConfig());
  });

  test('every default passes its own check', () => {
    for (const [key, spec] of ENTRIES) {
      if (spec.envOnly === true) {
        assert.equal(loadConfig({ env: { [envName(key)]: String(spec.default) } })[key], spec.default, key);
        continue;
      }
      const config = loadConfig({ file: nested(key, spec.default), env: { [envName(key)]: String(spec.default) }, flags: { [key]: spec.default } });
      assert.equal(config[key], spec.default, key);
    }
  });
});

describe('precedence: defaults < file < env < flags', () => {
  const key = 'audit.flushEvents';
  const env = envName(key);

  test('each later source wins over the earlier ones', () => {
    assert.equal(loadConfig({})[key], 100);
    assert.equal(loadConfig({ file: { audit: { flushEvents: 200 } } })[key], 200);
    assert.equal(loadConfig({ file: { audit: { flushEvents: 200 } }, env: { [env]: '300' } })[key], 300);
    assert.equal(loadConfig({ file: { audit: { flushEvents: 200 } }, env: { [env]: '300' }, flags: { [key]: 400 } })[key], 400);
    assert.equal(loadConfig({ env: { [env]: '300' }, flags: { [key]: 400 } })[key], 400);
    assert.equal(loadConfig({ file: { audit: { flushEvents: 200 } }, flags: { [key]: 400 } })[key], 400);
  });

  test('sources only override the keys they set', () => {
    const config = loadConfig({
      file: { mode: 'production', audit: { flushEvents: 7 } },
      env: { WRIT_LOG_LEVEL: 'debug', WRIT_MODE: 'development' },
      flags: { 'http.trustProxy': true },
    });
    assert.equal(config.mode, 'development');
    assert.equal(config['audit.flushEvents'], 7);
    assert.equal(config.logLevel, 'debug');
    assert.equal(config['http.trustProxy'], true);
    assert.equal(config.listen, CONFIG_SCHEMA.listen.default);
  });

  test('an undefined env value or flag does not override', () => {
    const config = loadConfig({ file: { mode: 'production' }, env: { WRIT_MODE: undefined }, flags: { mode: undefined } });
    assert.equal(config.mode, 'production');
  });
});

describe('coercion of text values (env and flags)', () => {
  test('booleans: true/1/false/0', () => {
    for (const [raw, expected] of [['true', true], ['1', true], ['false', false], ['0', false]] as const) {
      assert.equal(loadConfig({ env: { WRIT_METRICS_ENABLED: raw } })['metrics.enabled'], expected, raw);
      assert.equal(loadConfig({ flags: { 'metrics.enabled': raw } })['metrics.enabled'], expected, raw);
    }
  });

  test('integers: decimal text, surrounding space trimmed', () => {
    assert.equal(loadConfig({ env: { WRIT_AUDIT_FLUSH_EVENTS: ' 42 ' } })['audit.flushEvents'], 42);
    assert.equal(loadConfig({ flags: { 'audit.flushEvents': '43' } })['audit.flushEvents'], 43);
  });

  test('strings pass through', () => {
    const config = loadConfig({ env: { WRIT_DATA_DIR: '/var/lib/writ', WRIT_LISTEN: '[::1]:7400' } });
    assert.equal(config.dataDir, '/var/lib/writ');
    assert.equal(config.listen, '[::1]:7400');
  });
});

describe('refusals name the key (ERR_KERNEL_CONFIG_INVALID)', () => {
  test('config file that is not an object', () => {
    for (const file of [[], 'mode=production', 42, null, true]) assertInvalid({ file }, 'config file must be a JSON object');
  });

  test('unknown file key, at top level and nested', () => {
    assertInvalid({ file: { mdoe: 'production' } }, 'config file has unknown key `mdoe`');
    assertInvalid({ file: { audit: { flushEvent: 1 } } }, 'config file has unknown key `audit.flushEvent`');
    assertInvalid({ file: { audit: [1, 2] } }, 'config file has unknown key `audit`');
    assertInvalid({ file: { http: null } }, 'config file has unknown key `http`');
    assertInvalid({ file: JSON.parse('{"__proto__": {"mode": "production"}}') }, 'config file has unknown key `__proto__.mode`');
    assertInvalid({ file: { constructor: 1 } }, 'config file has unknown key `constructor`');
  });

  test('unknown WRIT_* variable', () => {
    assertInvalid({ env: { WRIT_MDOE: 'production' } }, 'environment has unknown variable `WRIT_MDOE`');
    assertInvalid({ env: { WRIT_AUDIT_FLUSHEVENTS: '1' } }, 'environment has unknown variable `WRIT_AUDIT_FLUSHEVENTS`');
    assertInvalid({ env: { WRIT_: '1' } }, 'environment has unknown variable `WRIT_`');
  });

  test('client variables, non-WRIT variables and lowercase writ_ are ignored', () => {
    assert.deepEqual([...CLIENT_ENV].sort(), ['WRIT_CONFIG', 'WRIT_SERVER', 'WRIT_TOKEN', 'WRIT_TOKEN_FILE']);
    const config = loadConfig({
      env: { WRIT_SERVER: 'http://x', WRIT_TOKEN: 'tok', WRIT_TOKEN_FILE: '/t', WRIT_CONFIG: '/c.json', PATH: '/bin', HOME: '/root', writ_mode: 'nope', WRIT_UNSET: undefined },
    });
    assert.deepEqual(config, loadConfig());
  });

  test('unknown flag', () => {
    assertInvalid({ flags: { mdoe: 'production' } as ConfigSources['flags'] }, 'unknown option `mdoe`');
  });

  test('wrong types', () => {
    assertInvalid({ file: { audit: { flushEvents: true } } }, 'config file `audit.flushEvents` must be an integer, got `true`');
    assertInvalid({ file: { audit: { flushEvents: 1.5 } } }, 'config file `audit.flushEvents` must be an integer, got `1.5`');
    assertInvalid({ file: { audit: { flushEvents: '1e3' } } }, 'config file `audit.flushEvents` must be an integer, got `1e3`');
    assertInvalid({ file: { audit: { flushEvents: 2 ** 60 } } }, `config file \`audit.flushEvents\` must be an integer, got \`${2 ** 60}\``);
    assertInvalid({ env: { WRIT_AUDIT_FLUSH_EVENTS: 'abc' } }, 'environment WRIT_AUDIT_FLUSH_EVENTS for `audit.flushEvents` must be an integer, got `abc`');
    assertInvalid({ env: { WRIT_AUDIT_FLUSH_EVENTS: '' } }, 'environment WRIT_AUDIT_FLUSH_EVENTS for `audit.flushEvents` must be an integer, got ``');
    assertInvalid({ flags: { 'audit.flushEvents': 0.5 } }, 'option `audit.flushEvents` must be an integer, got `0.5`');
    assertInvalid({ file: { http: { trustProxy: 'yes' } } }, 'config file `http.trustProxy` must be true or false, got `yes`');
    assertInvalid({ env: { WRIT_HTTP_TRUST_PROXY: 'TRUE' } }, 'environment WRIT_HTTP_TRUST_PROXY for `http.trustProxy` must be true or false, got `TRUE`');
    assertInvalid({ flags: { 'metrics.enabled': 2 } }, 'option `metrics.enabled` must be true or false, got `2`');
    assertInvalid({ file: { dataDir: 5 } }, 'config file `dataDir` must be a string');
    assertInvalid({ file: { dataDir: ['a'] } }, 'config file `dataDir` must be a string');
    assertInvalid({ flags: { dataDir: false } }, 'option `dataDir` must be a string');
  });

  test('bad enum values', () => {
    assertInvalid({ env: { WRIT_MODE: 'prod' } }, 'environment WRIT_MODE for `mode` must be one of development, production, got `prod`');
    assertInvalid({ file: { mode: 'Production' } }, 'config file `mode` must be one of development, production, got `Production`');
    assertInvalid({ file: { mode: 1 } }, 'config file `mode` must be one of development, production, got `1`');
    assertInvalid({ flags: { logLevel: 'verbose' } }, 'option `logLevel` must be one of fatal, error, warn, info, debug, trace, silent, got `verbose`');
  });

  describe('integer ranges: min and max accepted, one beyond refused', () => {
    for (const [key, spec] of ENTRIES) {
      if (spec.kind !== 'integer') continue;
      test(key, () => {
        assert.equal(loadConfig({ file: nested(key, spec.min) })[key], spec.min);
        assert.equal(loadConfig({ env: { [envName(key)]: String(spec.max) } })[key], spec.max);
        const range = `must be between ${spec.min} and ${spec.max}`;
        assertInvalid({ file: nested(key, spec.min - 1) }, `config file \`${key}\` ${range}, got ${spec.min - 1}`);
        assertInvalid({ env: { [envName(key)]: String(spec.max + 1) } }, `environment ${envName(key)} for \`${key}\` ${range}, got ${spec.max + 1}`);
        assertInvalid({ flags: { [key]: spec.max + 1 } }, `option \`${key}\` ${range}, got ${spec.max + 1}`);
      });
    }
  });

  test('listen accepts host:port forms', () => {
    for (const listen of ['127.0.0.1:0', '0.0.0.0:65535', 'localhost:8080', 'writ.example.org:443', '[::1]:7400', '[::]:7400']) {
      assert.equal(loadConfig({ flags: { listen } }).listen, listen);
    }
  });

  test('listen refuses what is not host:port', () => {
    for (const listen of ['localhost', ':7400', '127.0.0.1:', 'http://127.0.0.1:7400', '127.0.0.1:7400/x', '::1:7400', '127.0.0.1:123456', 'a b:80']) {
      assertInvalid({ env: { WRIT_LISTEN: listen } }, `environment WRIT_LISTEN for \`listen\` must look like host:port, got \`${listen}\``);
    }
  });

  test('listen refuses a port above 65535', () => {
    for (const listen of ['127.0.0.1:65536', '127.0.0.1:99999']) {
      assertInvalid({ flags: { listen } }, `option \`listen\` must look like host:port, got \`${listen}\``);
    }
  });

  test('the first bad source aborts: nothing partial is returned', () => {
    assertInvalid({ file: { mode: 'production' }, env: { WRIT_MODE: 'x' }, flags: { mode: 'development' } }, 'environment WRIT_MODE for `mode` must be one of development, production, got `x`');
  });

  test('messages echo values without control characters and bounded', () => {
    assert.throws(() => loadConfig({ env: { WRIT_MODE: '\u001b[2Jprod\nuction' } }), (e: unknown) => {
      assert.ok(e instanceof WritError);
      assert.doesNotMatch(e.message, /\p{Cc}/u);
      return true;
    });
    assert.throws(() => loadConfig({ env: { WRIT_LOG_LEVEL: 'x'.repeat(100_000) } }), (e: unknown) => {
      assert.ok(e instanceof WritError);
      assert.ok(e.message.length < 400, `message is ${e.message.length} characters`);
      return true;
    });
  });
});

describe('the sensitive store value', () => {
  const url = 'postgres://writ:hunter2-s3cret@db.internal:5432/writ';

  test('is accepted from every source', () => {
    assert.equal(loadConfig({ file: { store: url } }).store, url);
    assert.equal(loadConfig({ env: { WRIT_STORE: url } }).store, url);
    assert.equal(loadConfig({ flags: { store: url } }).store, url);
  });

  test('never appears in an error message', () => {
    const cases: readonly [ConfigSources, string][] = [
      [{ file: { store: [url] } }, 'config file `store` must be a string'],
      [{ file: { store: { url } } }, 'config file has unknown key `store.url`'],
      [{ flags: { store: { toString: () => url } as unknown as string } }, 'option `store` must be a string'],
      [{ env: { WRIT_STORE: url, WRIT_MODE: 'bad' } }, 'environment WRIT_MODE for `mode` must be one of development, production, got `bad`'],
    ];
    for (const [sources, message] of cases) {
      assertInvalid(sources, message);
      try {
        loadConfig(sources);
      } catch (e) {
        assert.ok(e instanceof Error);
        assert.ok(!e.message.includes('hunter2'));
        assert.ok(!String(e.stack).includes('hunter2'));
      }
    }
  });

  test('describeConfig hides it and shows everything else', () => {
    const config = loadConfig({ env: { WRIT_STORE: url, WRIT_MODE: 'production' } });
    const described = describeConfig(config);
    assert.equal(described.store, '[redacted]');
    assert.ok(!JSON.stringify(described).includes('hunter2'));
    for (const [key, spec] of ENTRIES) {
      if (spec.sensitive !== true) assert.equal(described[key], config[key], key);
    }
    assert.deepEqual(Object.keys(described).sort(), Object.keys(CONFIG_SCHEMA).sort());
  });

  test('describeConfig shows an empty store as empty (nothing to hide)', () => {
    assert.equal(describeConfig(loadConfig()).store, '');
  });

  test('store, the key-encryption key and the secret engine definitions (admin connection URLs) are the only sensitive options, so no other value is hidden', () => {
    assert.deepEqual(ENTRIES.filter(([, s]) => s.sensitive === true).map(([k]) => k), ['store', 'kek', 'credentials.engines']);
  });
});

describe('environment-only secrets', () => {
  const kek = Buffer.alloc(32, 7).toString('base64');

  test('the key-encryption key is read from WRIT_KEK', () => {
    assert.equal(loadConfig({ env: { WRIT_KEK: kek } }).kek, kek);
    assert.equal(describeConfig(loadConfig({ env: { WRIT_KEK: kek } })).kek, '[redacted]');
  });

  test('is refused in a config file and as a flag, without echoing it', () => {
    assertInvalid({ file: { kek } }, '`kek` is a secret and is read only from the environment (WRIT_KEK), never from a config file');
    assertInvalid({ flags: { kek } }, '`kek` is a secret and is read only from the environment (WRIT_KEK), never from a flag');
  });
});

describe('json options', () => {
  const issuers = [{ issuer: 'https://issuer.example', jwksUrl: 'https://issuer.example/keys', audience: 'writ' }];

  test('accept an array from a file and JSON text from the environment, held as JSON text', () => {
    assert.equal(loadConfig({ file: { identity: { oidcIssuers: issuers } } })['identity.oidcIssuers'], JSON.stringify(issuers));
    assert.equal(loadConfig({ env: { WRIT_IDENTITY_OIDC_ISSUERS: JSON.stringify(issuers) } })['identity.oidcIssuers'], JSON.stringify(issuers));
  });

  test('refuse text that is not JSON and JSON scalars', () => {
    assertInvalid({ env: { WRIT_IDENTITY_OIDC_ISSUERS: '[{' } }, 'environment WRIT_IDENTITY_OIDC_ISSUERS for `identity.oidcIssuers` must be JSON');
    assertInvalid({ flags: { 'identity.oidcIssuers': '5' } }, 'option `identity.oidcIssuers` must be a JSON array or object');
  });
});

describe('result', () => {
  test('is frozen: assignment and new keys throw in strict mode', () => {
    const config = loadConfig({ flags: { mode: 'production' } });
    assert.ok(Object.isFrozen(config));
    const writable = config as unknown as Record<string, unknown>;
    assert.throws(() => {
      writable.mode = 'development';
    }, TypeError);
    assert.throws(() => {
      writable.extra = 1;
    }, TypeError);
    assert.throws(() => {
      delete writable.mode;
    }, TypeError);
    assert.equal(config.mode, 'production');
  });

  test('each call builds its own object', () => {
    assert.notEqual(loadConfig(), loadConfig());
  });
});

describe('envName', () => {
  test('maps dotted camelCase keys to WRIT_ upper snake case', () => {
    const expected: Record<ConfigKey, string> = {
      mode: 'WRIT_MODE',
      listen: 'WRIT_LISTEN',
      dataDir: 'WRIT_DATA_DIR',
      store: 'WRIT_STORE',
      logLevel: 'WRIT_LOG_LEVEL',
      'http.bodyLimitBytes': 'WRIT_HTTP_BODY_LIMIT_BYTES',
      'http.requestTimeoutMs': 'WRIT_HTTP_REQUEST_TIMEOUT_MS',
      'http.trustProxy': 'WRIT_HTTP_TRUST_PROXY',
      'shutdown.drainTimeoutMs': 'WRIT_SHUTDOWN_DRAIN_TIMEOUT_MS',
      'audit.flushEvents': 'WRIT_AUDIT_FLUSH_EVENTS',
      'audit.flushDelayMs': 'WRIT_AUDIT_FLUSH_DELAY_MS',
      'audit.maxBatchEvents': 'WRIT_AUDIT_MAX_BATCH_EVENTS',
      'audit.anonymousRefusalBurst': 'WRIT_AUDIT_ANONYMOUS_REFUSAL_BURST',
      'audit.anonymousRefusalsPerMinute': 'WRIT_AUDIT_ANONYMOUS_REFUSALS_PER_MINUTE',
      'audit.queueLimit': 'WRIT_AUDIT_QUEUE_LIMIT',
      'admin.tokenFile': 'WRIT_ADMIN_TOKEN_FILE',
      'metrics.enabled': 'WRIT_METRICS_ENABLED',
      publicUrl: 'WRIT_PUBLIC_URL',
      'tls.listen': 'WRIT_TLS_LISTEN',
      'tls.dnsNames': 'WRIT_TLS_DNS_NAMES',
      'tls.publicUrl': 'WRIT_TLS_PUBLIC_URL',
      'policy.dir': 'WRIT_POLICY_DIR',
      'policy.reloadDebounceMs': 'WRIT_POLICY_RELOAD_DEBOUNCE_MS',
      'policy.shadowDir': 'WRIT_POLICY_SHADOW_DIR',
      'policy.timeoutMs': 'WRIT_POLICY_TIMEOUT_MS',
      'identity.trustDomain': 'WRIT_IDENTITY_TRUST_DOMAIN',
      kek: 'WRIT_KEK',
      'identity.kekFile': 'WRIT_IDENTITY_KEK_FILE',
      'identity.x509SvidTtlSeconds': 'WRIT_IDENTITY_X509_SVID_TTL_SECONDS',
      'identity.x509SvidMaxTtlSeconds': 'WRIT_IDENTITY_X509_SVID_MAX_TTL_SECONDS',
      'identity.jwtSvidTtlSeconds': 'WRIT_IDENTITY_JWT_SVID_TTL_SECONDS',
      'identity.jwtSvidMaxTtlSeconds': 'WRIT_IDENTITY_JWT_SVID_MAX_TTL_SECONDS',
      'identity.nodeSvidTtlSeconds': 'WRIT_IDENTITY_NODE_SVID_TTL_SECONDS',
      'identity.x509CaTtlSeconds': 'WRIT_IDENTITY_X509_CA_TTL_SECONDS',
      'identity.jwtKeyTtlSeconds': 'WRIT_IDENTITY_JWT_KEY_TTL_SECONDS',
      'identity.rootTtlSeconds': 'WRIT_IDENTITY_ROOT_TTL_SECONDS',
      'identity.bundleRefreshHintSeconds': 'WRIT_IDENTITY_BUNDLE_REFRESH_HINT_SECONDS',
      'identity.rotationCheckSeconds': 'WRIT_IDENTITY_ROTATION_CHECK_SECONDS',
      'identity.joinTokenTtlSeconds': 'WRIT_IDENTITY_JOIN_TOKEN_TTL_SECONDS',
      'identity.oidcIssuers': 'WRIT_IDENTITY_OIDC_ISSUERS',
      'credentials.engines': 'WRIT_CREDENTIALS_ENGINES',
      'credentials.dynamicTtlSeconds': 'WRIT_CREDENTIALS_DYNAMIC_TTL_SECONDS',
      'credentials.maxLeaseTtlSeconds': 'WRIT_CREDENTIALS_MAX_LEASE_TTL_SECONDS',
      'credentials.maxLeasesPerIdentity': 'WRIT_CREDENTIALS_MAX_LEASES_PER_IDENTITY',
      'credentials.maxLeasesPerTask': 'WRIT_CREDENTIALS_MAX_LEASES_PER_TASK',
      'credentials.maxTaskTtlSeconds': 'WRIT_CREDENTIALS_MAX_TASK_TTL_SECONDS',
      'credentials.reaperIntervalSeconds': 'WRIT_CREDENTIALS_REAPER_INTERVAL_SECONDS',
      'credentials.pendingGraceSeconds': 'WRIT_CREDENTIALS_PENDING_GRACE_SECONDS',
      'bus.kind': 'WRIT_BUS_KIND',
      'bus.natsUrl': 'WRIT_BUS_NATS_URL',
      'bus.natsStream': 'WRIT_BUS_NATS_STREAM',
      'revocations.heartbeatMs': 'WRIT_REVOCATIONS_HEARTBEAT_MS',
      'ssf.receivers': 'WRIT_SSF_RECEIVERS',
      'ssf.transmitters': 'WRIT_SSF_TRANSMITTERS',
      'oauth.accessTokenTtlSeconds': 'WRIT_OAUTH_ACCESS_TOKEN_TTL_SECONDS',
      'oauth.accessTokenMaxTtlSeconds': 'WRIT_OAUTH_ACCESS_TOKEN_MAX_TTL_SECONDS',
      'oauth.maxDelegationDepth': 'WRIT_OAUTH_MAX_DELEGATION_DEPTH',
      'oauth.dpopNonce': 'WRIT_OAUTH_DPOP_NONCE',
      'oauth.dpopNonceWindowSeconds': 'WRIT_OAUTH_DPOP_NONCE_WINDOW_SECONDS',
      'oauth.dpopIatWindowSeconds': 'WRIT_OAUTH_DPOP_IAT_WINDOW_SECONDS',
    };
    for (const key of Object.keys(CONFIG_SCHEMA) as ConfigKey[]) assert.equal(envName(key), expected[key], key);
  });

  test('names are distinct and none collides with a client variable', () => {
    const names = Object.keys(CONFIG_SCHEMA).map(envName);
    assert.equal(new Set(names).size, names.length);
    for (const n of names) assert.ok(!CLIENT_ENV.has(n), n);
  });
});
