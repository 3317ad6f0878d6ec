#!/usr/bin/env node
// `npm run bench`: every benchmark in turn (each prints its figures and ratios against a reference
// measured in the same run). Needs `npm run build`; the run benchmark needs llama-server
// (scripts/build-llama-server.sh). Pass names to run some: npm run bench -- verify convert
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const all = [
  'verify',
  'signing',
  'bin-scan',
  'fuzz',
  'convert',
  'convert-7b',
  'convert-bin',
  'gguf-proof',
  'run-signals',
  'kernels',
  'list',
  'promote',
  'run-startup',
  'base-hash',
  'gateway',
];
const chosen = process.argv.slice(2).length > 0 ? process.argv.slice(2) : all;
let failed = 0;
for (const name of chosen) {
  if (!all.includes(name)) {
    console.error(`unknown benchmark ${name} (one of ${all.join(', ')})`);
    process.exit(2);
  }
  console.log(`\n=== bench/${name}.js`);
  const r = spawnSync(process.execPath, [fileURLToPath(new URL(`./${name}.js`, import.meta.url))], {
    stdio: 'inherit',
  });
  if (r.status !== 0) failed++;
}
process.exit(failed > 0 ? 1 : 0);
