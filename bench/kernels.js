#!/usr/bin/env node
// The two inner loops of conversion that start cold: f32 → f16 over a tensor (the WebAssembly SIMD
// kernel against the scalar loop it replaces, same process), and walking a base model's vocabulary
// (151,936 tokens and 151,387 merges, `arrays: 'skip'`) in a fresh process each time, as `convert`
// does once. Usage: node bench/kernels.js [--trials 11]
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { GgmlType, gv } from '../dist/formats/ggml-types.js';
import { writeGguf } from '../dist/files/gguf-writer.js';
import { f32ToF16 } from '../dist/formats/numeric.js';
import { median, requireBuilt } from './lib.js';

requireBuilt();
const trialsArg = process.argv.indexOf('--trials');
const trials = trialsArg > 0 ? Number(process.argv[trialsArg + 1]) : 11;

// f16: 16 Mi elements; the scalar loop is what f32ToF16 runs on arrays too short for the kernel
const n = 16 << 20;
const src = new Float32Array(n).map((_, i) => Math.sin(i) * 1000);
const dst = new Uint16Array(n);
const SCALAR_RUN = 255;
const scalar = () => {
  for (let i = 0; i < n; i += SCALAR_RUN) {
    const end = Math.min(n, i + SCALAR_RUN);
    f32ToF16(src.subarray(i, end), dst.subarray(i, end));
  }
};
const simd = () => f32ToF16(src, dst);
const time = (fn) => {
  const t = performance.now();
  fn();
  return performance.now() - t;
};
const f16 = { scalar: [], simd: [] };
for (let i = 0; i < trials; i++) {
  f16.scalar.push(time(scalar));
  f16.simd.push(time(simd));
}
const s = median(f16.scalar);
const k = median(f16.simd);
console.log(
  `f32 → f16, ${n / (1 << 20)} Mi elements: scalar ${s.toFixed(1)} ms, SIMD ${k.toFixed(1)} ms (${(s / k).toFixed(1)}× faster)`,
);

// vocabulary walk
const root = mkdtempSync(join(tmpdir(), 'codi-bench-kernels-'));
const vocab = join(root, 'vocab.gguf');
const tokens = Array.from({ length: 151936 }, (_, i) => `tok${i}Ġ`);
const merges = Array.from({ length: 151387 }, (_, i) => `a${i % 5000} b${i}`);
await writeGguf(
  vocab,
  {
    metadata: [
      ['general.architecture', gv.str('qwen2')],
      ['tokenizer.ggml.tokens', gv.strings(tokens)],
      ['tokenizer.ggml.token_type', gv.i32s(new Int32Array(tokens.length).fill(1))],
      ['tokenizer.ggml.merges', gv.strings(merges)],
    ],
    tensors: [{ name: 't', ne: [4], type: GgmlType.F32 }],
  },
  () => new Float32Array(4),
);
const gguf = fileURLToPath(new URL('../dist/files/gguf.js', import.meta.url));
const program = `const { readGgufHeader } = await import(${JSON.stringify(gguf)});
const t = performance.now();
await readGgufHeader(${JSON.stringify(vocab)}, {}, { arrays: 'skip' });
console.log(performance.now() - t);`;
const walks = [];
for (let i = 0; i < trials; i++) {
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', program], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(r.stderr);
  walks.push(Number(r.stdout));
}
const sorted = [...walks].sort((a, b) => a - b);
console.log(
  `GGUF header with a 151,936-token vocabulary, arrays skipped, cold: median ${median(walks).toFixed(1)} ms, fastest ${sorted[0].toFixed(1)} ms (${trials} processes)`,
);
rmSync(root, { recursive: true, force: true });
