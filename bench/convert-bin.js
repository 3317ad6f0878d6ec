#!/usr/bin/env node
// convert on a .bin adapter against convert on the same adapter in safetensors, in the same run: a
// Qwen2.5-1.5B-shaped LoRA (28 layers, r 16, all 7 projections, F32 ≈ 74 MB, 392 tensors) written as
// torch.save lays it out (one storage per tensor, storages sorted by key as strings, so the tensors
// lie in another order than the one they are converted in) and as the safetensors PEFT writes from
// the same state dict. Both are converted to the same GGUF (f32) on a base of the real shapes (sparse:
// only its header is read). Also mount --to-safetensors of the .bin against mount of the safetensors.
// Reports medians, the ratios .bin / safetensors, and peak RSS (the .bin is never read whole).
// Usage: node bench/convert-bin.js [--trials 5] [--keep]
import { mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writePeftBinAdapter, writeSafetensorsTwin } from '../dist/testkit/bin-adapter.js';
import { BIN, compare, measure, qwen15bAdapterSpec, requireBuilt, writeQwen15bShapesBase } from './lib.js';

requireBuilt();
const trialsArg = process.argv.indexOf('--trials');
const trials = trialsArg > 0 ? Number(process.argv[trialsArg + 1]) : 5;

const root = mkdtempSync(join(tmpdir(), 'codi-bench-convert-bin-'));
const st = join(root, 'st', 'qwen15b-lora');
const bin = join(root, 'bin', 'qwen15b-lora');
const base = join(root, 'qwen2.5-1.5b-shapes.gguf');

console.log(`generating the adapter (.bin and safetensors) and a sparse base in ${root}`);
const spec = await qwen15bAdapterSpec('qwen15b-lora');
await writeSafetensorsTwin(st, spec);
await writePeftBinAdapter(bin, spec);
await writeQwen15bShapesBase(base);
const mb = (p) => (statSync(p).size / 1e6).toFixed(1);
console.log(
  `adapter_model.safetensors ${mb(join(st, 'adapter_model.safetensors'))} MB, adapter_model.bin ${mb(join(bin, 'adapter_model.bin'))} MB`,
);

const convert = (dir, name) => () =>
  measure(process.execPath, [BIN, 'convert', dir, '--base', base, '--out', join(root, `${name}.gguf`)]);
let volume = 0;
/** mount into a fresh volume each time (a second mount of the same adapter would do nothing) */
const mount = (dir, extra) => () => {
  const models = join(root, `models-${volume++}`);
  mkdirSync(models);
  const r = measure(process.execPath, [BIN, 'mount', dir, '--root', models, ...extra]);
  rmSync(models, { recursive: true, force: true });
  return r;
};
// warm the page cache and both conversion paths once
convert(st, 'st')();
convert(bin, 'bin')();

const res = compare(trials, {
  version: () => measure(process.execPath, [BIN, '--version']),
  st: convert(st, 'st'),
  bin: convert(bin, 'bin'),
  mountSt: mount(st, []),
  mountBin: mount(bin, ['--to-safetensors']),
});

const ms = (s) => `${(s * 1000).toFixed(0)} ms`;
const work = (r) => r.wall - res.version.wall;
console.log('');
console.log(`start-up (--version): ${ms(res.version.wall)}; work = wall − start-up`);
console.log(
  `convert safetensors: ${ms(res.st.wall)} wall, work ${ms(work(res.st))}, peak RSS ${res.st.rssMiB.toFixed(1)} MiB`,
);
console.log(
  `convert .bin:        ${ms(res.bin.wall)} wall, work ${ms(work(res.bin))}, peak RSS ${res.bin.rssMiB.toFixed(1)} MiB`,
);
console.log(
  `  ratio .bin / safetensors: wall ${(res.bin.wall / res.st.wall).toFixed(2)}×, work ${(work(res.bin) / work(res.st)).toFixed(2)}×, peak RSS ${(res.bin.rssMiB / res.st.rssMiB).toFixed(2)}×`,
);
console.log(
  `mount (safetensors, copied):        ${ms(res.mountSt.wall)} wall, peak RSS ${res.mountSt.rssMiB.toFixed(1)} MiB`,
);
console.log(
  `mount --to-safetensors (.bin):      ${ms(res.mountBin.wall)} wall, peak RSS ${res.mountBin.rssMiB.toFixed(1)} MiB`,
);
console.log(`  ratio: wall ${(res.mountBin.wall / res.mountSt.wall).toFixed(2)}×`);
if (!process.argv.includes('--keep')) rmSync(root, { recursive: true, force: true });
