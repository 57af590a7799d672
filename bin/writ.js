#!/usr/bin/env node
// Entry point of the `writ` command. Node >= 22.13 runs the TypeScript sources
// directly (type stripping); the package pins Node 24 for npm scripts and npx.
const [major, minor] = process.versions.node.split('.').map(Number);
if (major < 22 || (major === 22 && minor < 13)) {
  process.stderr.write(`writ: needs Node >= 22.13 (this is ${process.version}); run it through \`npx writ\` or an npm script, which use the pinned Node 24\n`);
  process.exit(1);
}
const { main } = await import('../src/cli/main.ts');
process.exitCode = await main(process.argv.slice(2));
