#!/usr/bin/env node
// verify on a generated 2 GiB adapter against `openssl dgst -sha256` over the same files.
// Targets: wall ≤ 1.15× openssl, peak RSS ≤ 100 MiB. Also `codi-adapter --version` against
// `node -e 0`: ≤ 3×. Usage: node bench/verify.js [--size-gib 2] [--trials 3] [--keep]
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, compare, measure, requireBuilt, verdict, writeBigAdapter } from './lib.js';

requireBuilt();
const arg = (name, dflt) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const sizeGiB = arg('--size-gib', 2);
const trials = arg('--trials', 3);

const root = mkdtempSync(join(tmpdir(), 'codi-bench-verify-'));
const { dir, weights } = writeBigAdapter(root, sizeGiB);

// warm the page cache for both sides
measure('openssl', ['dgst', '-sha256', weights]);
const res = compare(trials, {
  openssl: () => measure('openssl', ['dgst', '-sha256', weights, join(dir, 'adapter_config.json')]),
  verify: () => measure(process.execPath, [BIN, 'verify', dir, '--json']),
});
const startup = compare(Math.max(trials, 5), {
  node: () => measure(process.execPath, ['-e', '0']),
  version: () => measure(process.execPath, [BIN, '--version']),
});

const ratio = res.verify.wall / res.openssl.wall;
const sRatio = startup.version.wall / startup.node.wall;
console.log('');
console.log(
  `verify ${sizeGiB} GiB:  ${res.verify.wall.toFixed(3)} s (median of ${trials}), peak RSS ${res.verify.rssMiB.toFixed(1)} MiB`,
);
console.log(`openssl dgst:    ${res.openssl.wall.toFixed(3)} s`);
console.log(`ratio verify/openssl = ${ratio.toFixed(3)} (target ≤ 1.15) ${verdict(ratio <= 1.15)}`);
console.log(
  `peak RSS ${res.verify.rssMiB.toFixed(1)} MiB (target ≤ 100) ${verdict(res.verify.rssMiB <= 100)}`,
);
console.log(
  `--version: ${(startup.version.wall * 1000).toFixed(1)} ms vs node -e 0: ${(startup.node.wall * 1000).toFixed(1)} ms, ratio ${sRatio.toFixed(2)} (target ≤ 3) ${verdict(sRatio <= 3)}`,
);
if (!process.argv.includes('--keep')) rmSync(root, { recursive: true, force: true });
