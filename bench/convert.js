#!/usr/bin/env node
// convert on a Qwen2.5-1.5B-shaped adapter (28 layers, hidden 1536, intermediate 8960, KV dim 256,
// r 16, all 7 projections, F32 ≈ 74 MB) against a base GGUF of the real shapes whose data is a
// sparse hole (only its header is read), with a vocabulary of the real size in its header (151,936
// tokens, 151,387 merges: the base reader must walk it). Same run: `codi-adapter --version` (start-up) and `cp` of the
// weights (read-and-write floor). Conversion work = convert wall − start-up.
// Targets, f32 and f16 output: work ≤ 4× cp, peak RSS ≤ 150 MiB.
// Usage: node bench/convert.js [--trials 5] [--keep]
import { performance } from 'node:perf_hooks';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writePeftAdapter } from '../dist/testkit/peft-adapter.js';
import {
  BIN,
  compare,
  measure,
  printTracePhases,
  qwen15bAdapterSpec,
  requireBuilt,
  verdict,
  writeQwen15bShapesBase,
} from './lib.js';

requireBuilt();
const trialsArg = process.argv.indexOf('--trials');
const trials = trialsArg > 0 ? Number(process.argv[trialsArg + 1]) : 5;

const root = mkdtempSync(join(tmpdir(), 'codi-bench-convert-'));
const adapter = join(root, 'qwen15b-lora-bench');
const base = join(root, 'qwen2.5-1.5b-shapes.gguf');

console.log(`generating the adapter and a sparse base in ${root}`);
await writePeftAdapter(adapter, await qwen15bAdapterSpec('qwen15b-lora-bench'));

// the base: real Qwen2.5-1.5B tensor shapes (ggml ne order), F16 2-D weights, tied embeddings
await writeQwen15bShapesBase(base);

const weights = join(adapter, 'adapter_model.safetensors');
const out = (type) => join(root, `out-${type}.gguf`);
// warm the page cache and the conversion path once
measure('cp', [weights, join(root, 'copy')]);
measure(process.execPath, [BIN, 'convert', adapter, '--base', base, '--out', out('f32'), '--force']);

const convert = (type) =>
  measure(process.execPath, [BIN, 'convert', adapter, '--base', base, '--out', out(type), '--outtype', type]);
const floor = fileURLToPath(new URL('./floor.js', import.meta.url));
const res = compare(trials, {
  version: () => measure(process.execPath, [BIN, '--version']),
  cp: () => measure('cp', [weights, join(root, 'copy')]),
  floor: () => measure(process.execPath, [floor, weights, join(root, 'floor-out')]),
  f32: () => convert('f32'),
  f16: () => convert('f16'),
});

console.log('');
console.log(
  `cp of the 74 MB weights: ${(res.cp.wall * 1000).toFixed(0)} ms; start-up (--version): ${(res.version.wall * 1000).toFixed(0)} ms`,
);
const floorWork = res.floor.wall - res.version.wall;
console.log(
  `floor (plain Node: read, sha256, write, fdatasync, rename; bench/floor.js): ${(res.floor.wall * 1000).toFixed(0)} ms wall, work ${(floorWork * 1000).toFixed(0)} ms = ${(floorWork / res.cp.wall).toFixed(2)}× cp`,
);
for (const type of ['f32', 'f16']) {
  const work = res[type].wall - res.version.wall;
  const ratio = work / res.cp.wall;
  console.log(
    `convert --outtype ${type}: ${(res[type].wall * 1000).toFixed(0)} ms wall, work ${(work * 1000).toFixed(0)} ms = ${ratio.toFixed(2)}× cp (target ≤ 4) ${verdict(ratio <= 4)}, ${(work / floorWork).toFixed(2)}× the floor; peak RSS ${res[type].rssMiB.toFixed(1)} MiB (target ≤ 150) ${verdict(res[type].rssMiB <= 150)}`,
  );
}
console.log('');
// what memory touched for the first time costs on this machine (on some VMs, far more than zeroing it)
const fresh = new Uint8Array(32 << 20);
const touchStart = performance.now();
fresh.fill(1);
const faultMicros = ((performance.now() - touchStart) * 1000) / (fresh.length / 4096);
console.log(
  `where the time goes: CODI_TRACE=1 phases of convert --outtype f32, medians of ${trials} runs; a page touched for the first time costs ${faultMicros.toFixed(1)} µs here`,
);
printTracePhases([BIN, 'convert', adapter, '--base', base, '--out', out('f32')], trials);
console.log(
  `  (node itself starts in ~${(res.version.wall * 1000).toFixed(0)} ms with --version; the rest is the process ending)`,
);
if (!process.argv.includes('--keep')) rmSync(root, { recursive: true, force: true });
