// Layering of src/ (see ARCHITECTURE.md): a module imports only from its own
// context or a lower layer, and reaches another context only through its index.ts.
const LAYERS = [
  ['kernel'],
  ['identity', 'policy', 'signals', 'audit'],
  ['credentials'],
  ['enforcement', 'governance'],
  // L4 in ARCHITECTURE.md holds storage and server; server is the composition
  // root that wires the storage adapters into the contexts, so it sits just
  // above storage here (server may import storage; storage never imports server).
  ['storage'],
  ['server'],
  ['cli', 'console'],
];

const layerOf = new Map(LAYERS.flatMap((names, level) => names.map((n) => [n, level])));
const all = [...layerOf.keys()];

const layerRules = all.map((ctx) => {
  const level = layerOf.get(ctx);
  const notAllowed = all.filter((other) => other !== ctx && layerOf.get(other) >= level);
  return {
    name: `layer-${ctx}`,
    comment: `${ctx} (layer ${level}) may import only lower layers: not ${notAllowed.join(', ') || 'anything above it'}`,
    severity: 'error',
    from: { path: `^src/${ctx}/` },
    to: { path: notAllowed.length ? `^src/(${notAllowed.join('|')})/` : '^$' },
  };
});

module.exports = {
  forbidden: [
    ...layerRules,
    {
      name: 'only-through-index',
      comment: 'another context is reached only through its index.ts',
      severity: 'error',
      from: { path: '^src/([^/]+)/' },
      to: { path: '^src/[^/]+/', pathNot: ['^src/$1/', '^src/[^/]+/index\\.ts$'] },
    },
    {
      name: 'unknown-context',
      comment: 'every folder under src/ is a context named in ARCHITECTURE.md',
      severity: 'error',
      from: { path: `^src/(?!(${all.join('|')})/)` },
      to: {},
    },
    {
      name: 'no-circular',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
    {
      name: 'tests-stay-out-of-production',
      comment: 'production code never imports a test file',
      severity: 'error',
      from: { pathNot: '\\.test\\.ts$' },
      to: { path: '\\.test\\.ts$' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { extensions: ['.ts', '.js'] },
  },
};
