#!/usr/bin/env node
// Bundles the fast path (dist/fast-path.js and what its commands import) into a few files: loading
// ~40 modules one by one costs a command ~15 ms of its start-up. bin/run.js loads the bundle when it
// is there. The chunks sit in dist/ itself, so paths taken relative to a module (../schemas/,
// ../package.json, ./schemas.validators.cjs) resolve as they do from the unbundled modules.
import { readdirSync, rmSync } from 'node:fs';
import { build } from 'esbuild';

const dist = new URL('../dist/', import.meta.url);
for (const name of readdirSync(dist)) {
  if (/^fast-path\.bundle\.js$|^fast-chunk-.*\.js$/.test(name)) rmSync(new URL(name, dist));
}
await build({
  entryPoints: [new URL('fast-path.js', dist).pathname],
  outdir: dist.pathname,
  entryNames: '[name].bundle',
  chunkNames: 'fast-chunk-[hash]',
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  // dependencies stay in node_modules; the prebuilt validators are loaded by path at run time
  packages: 'external',
  external: ['./schemas.validators.cjs'],
  logLevel: 'warning',
});
