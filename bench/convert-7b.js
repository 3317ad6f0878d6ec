#!/usr/bin/env node
// convert on a Qwen2.5-Coder-7B-shaped adapter (28 layers, hidden 3584, intermediate 18944, 28 heads
// and 4 KV heads of 128, r 64 on all 7 projections, F32 ≈ 646 MB) against a base GGUF of the real
// shapes whose data is a sparse hole (a vocabulary of 152,064 tokens in its header), side by side in
// one run with llama.cpp's own convert_lora_to_gguf.py: the pinned source of the llama-server build
// cache, run as it is under the system's torch with the stand-ins of bench/python-reference/ (no
// transformers or safetensors package is needed). Same run: `codi-adapter --version` (start-up) and
// `cp` of the weights. Every command writes a new file (the last one is removed, untimed, before).
// Targets: convert into its cache (what `run` does) ≤ 0.15× the Python converter's wall time, peak
// RSS ≤ 150 MiB, conversion work (wall − start-up) ≤ 3× cp. Also shown: convert --out (fsynced).
// The two converters' outputs are compared tensor by tensor at the end.
// Usage: node bench/convert-7b.js [--trials 5] [--keep]
import { Buffer } from 'node:buffer';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readGgufHeader, readTensorData } from '../dist/files/gguf.js';
import { ALL_PROJECTIONS, decoderTargets, writePeftAdapter } from '../dist/testkit/peft-adapter.js';
import {
  BIN,
  compare,
  measure,
  printTracePhases,
  requireBuilt,
  verdict,
  writeSparseQwen2Base,
} from './lib.js';

requireBuilt();
const trialsArg = process.argv.indexOf('--trials');
const trials = trialsArg > 0 ? Number(process.argv[trialsArg + 1]) : 5;

/** Qwen2.5-Coder-7B */
const DIMS = { layers: 28, hidden: 3584, intermediate: 18944, heads: 28, kvHeads: 4, headDim: 128 };
const VOCAB = 152064;

const reference = pythonReference();
const root = mkdtempSync(join(tmpdir(), 'codi-bench-convert-7b-'));
const adapter = join(root, 'qwen7b-lora-bench');
const base = join(root, 'qwen2.5-coder-7b-shapes.gguf');
const baseConfig = join(root, 'base-config');
const weights = join(adapter, 'adapter_model.safetensors');

console.log(`generating the adapter (≈ 646 MB) and a sparse base in ${root}`);
await writePeftAdapter(adapter, {
  id: 'qwen7b-lora-bench',
  version: '0.1.0',
  baseModel: 'qwen2.5-coder-7b',
  baseModelPath: 'Qwen/Qwen2.5-Coder-7B',
  r: 64,
  alpha: 128,
  targetModules: ALL_PROJECTIONS,
  modules: decoderTargets({
    layers: DIMS.layers,
    hidden: DIMS.hidden,
    intermediate: DIMS.intermediate,
    kvDim: DIMS.kvHeads * DIMS.headDim,
  }),
  seed: 7,
});
await writeSparseQwen2Base(base, 'Qwen2.5-Coder-7B shapes (sparse)', {
  layers: DIMS.layers,
  hidden: DIMS.hidden,
  intermediate: DIMS.intermediate,
  kvDim: DIMS.kvHeads * DIMS.headDim,
  heads: DIMS.heads,
  kvHeads: DIMS.kvHeads,
  vocab: VOCAB,
  merges: 151387,
  tied: false,
});
// what the Python converter reads of the base: its config.json (the LoRA path needs no weights)
rmSync(baseConfig, { recursive: true, force: true });
await import('node:fs/promises').then((fs) => fs.mkdir(baseConfig));
writeFileSync(
  join(baseConfig, 'config.json'),
  `${JSON.stringify({
    architectures: ['Qwen2ForCausalLM'],
    model_type: 'qwen2',
    hidden_size: DIMS.hidden,
    num_hidden_layers: DIMS.layers,
    num_attention_heads: DIMS.heads,
    num_key_value_heads: DIMS.kvHeads,
    intermediate_size: DIMS.intermediate,
    vocab_size: VOCAB,
    rms_norm_eps: 1e-6,
    rope_theta: 1000000,
    tie_word_embeddings: false,
    torch_dtype: 'float32',
  })}\n`,
);

const cacheDir = join(root, 'cache');
const outFile = join(root, 'out.gguf');
const pyOut = join(root, 'python.gguf');
const copy = join(root, 'copy');
/** each command writes a file that does not exist yet, as a first conversion does */
const fresh = (path) => rmSync(path, { recursive: true, force: true });
const run = {
  version: () => measure(process.execPath, [BIN, '--version']),
  cp: () => {
    fresh(copy);
    return measure('cp', [weights, copy]);
  },
  cache: () => {
    fresh(cacheDir);
    return measure(process.execPath, [BIN, 'convert', adapter, '--base', base], {
      env: { ...process.env, CODI_GGUF_CACHE: cacheDir },
    });
  },
  out: () => {
    fresh(outFile);
    return measure(process.execPath, [BIN, 'convert', adapter, '--base', base, '--out', outFile]);
  },
};
if (reference) {
  run.python = () => {
    fresh(pyOut);
    return measure(reference.python, reference.args(baseConfig, pyOut, adapter), { env: reference.env });
  };
}
// warm the page cache and every path once
for (const warm of Object.values(run)) warm();

const res = compare(trials, run);
const ms = (s) => `${(s * 1000).toFixed(0)} ms`;
console.log('');
console.log(`cp of the 646 MB weights: ${ms(res.cp.wall)}; start-up (--version): ${ms(res.version.wall)}`);
if (reference) {
  console.log(
    `llama.cpp convert_lora_to_gguf.py (torch ${reference.torch}): ${ms(res.python.wall)} wall, peak RSS ${res.python.rssMiB.toFixed(0)} MiB`,
  );
  // no Node CLI that reads and writes the weights can beat its own start-up plus a cp of them
  const floor = res.version.wall + res.cp.wall;
  console.log(
    `floor (start-up + cp): ${ms(floor)} = ${(floor / res.python.wall).toFixed(3)}× the Python converter`,
  );
}
for (const [name, label] of [
  ['cache', 'convert into its cache (as run does; not fsynced, proven by content at every use)'],
  ['out', 'convert --out (fsynced before the rename)'],
]) {
  const r = res[name];
  const work = r.wall - res.version.wall;
  const parts = [
    `${label}: ${ms(r.wall)} wall`,
    reference
      ? `${(r.wall / res.python.wall).toFixed(3)}× the Python converter${name === 'cache' ? ` (target ≤ 0.15) ${verdict(r.wall / res.python.wall <= 0.15)}` : ''}`
      : 'the Python converter: not measured',
    `work ${ms(work)} = ${(work / res.cp.wall).toFixed(2)}× cp${name === 'cache' ? ` (target ≤ 3) ${verdict(work / res.cp.wall <= 3)}` : ''}`,
    `peak RSS ${r.rssMiB.toFixed(1)} MiB (target ≤ 150) ${verdict(r.rssMiB <= 150)}`,
  ];
  console.log(parts.join('; '));
}
if (reference) {
  fresh(cacheDir);
  run.cache();
  run.python();
  const ours = join(cacheDir, readdirSync(cacheDir).find((f) => f.endsWith('.gguf')) ?? '');
  console.log(`outputs: ${await sameTensors(ours, pyOut)}`);
}
console.log('');
console.log(`where the time goes: CODI_TRACE=1 phases of convert into its cache, medians of ${trials} runs`);
printTracePhases([BIN, 'convert', adapter, '--base', base, '--force'], trials, { CODI_GGUF_CACHE: cacheDir });
if (!process.argv.includes('--keep')) rmSync(root, { recursive: true, force: true });

/**
 * llama.cpp's converter as this machine can run it: the pinned source in the llama-server build
 * cache, and a Python with torch, numpy, yaml and tqdm; null (with the reason printed) otherwise.
 */
function pythonReference() {
  const cache =
    process.env.CODI_LLAMA_CACHE ??
    join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'codi-adapter', 'llama.cpp');
  const sources = join(cache, 'src');
  const source = (existsSync(sources) ? readdirSync(sources) : [])
    .map((d) => join(sources, d, 'llama.cpp'))
    .find((d) => existsSync(join(d, 'convert_lora_to_gguf.py')));
  if (!source) {
    console.log(
      `skipped the Python converter: no llama.cpp source in ${sources} (scripts/build-llama-server.sh puts it there)`,
    );
    return null;
  }
  const candidates = [process.env.CODI_BENCH_PYTHON, '/usr/bin/python3', 'python3'].filter(Boolean);
  for (const python of candidates) {
    const r = spawnSync(python, ['-c', 'import torch, numpy, yaml, tqdm; print(torch.__version__)'], {
      encoding: 'utf8',
    });
    if (r.status !== 0) continue;
    const here = fileURLToPath(new URL('./python-reference/', import.meta.url));
    return {
      python,
      torch: r.stdout.trim(),
      env: {
        ...process.env,
        PYTHONPATH: [join(here, 'stand-ins'), join(source, 'gguf-py'), source].join(':'),
      },
      args: (config, out, dir) => [
        join(here, 'run_convert_lora.py'),
        source,
        '--base',
        config,
        '--outtype',
        'f32',
        '--outfile',
        out,
        dir,
      ],
    };
  }
  console.log(
    `skipped the Python converter: no Python with torch, numpy, yaml and tqdm (tried ${candidates.join(', ')}; on Debian: apt-get install python3-torch python3-yaml python3-tqdm)`,
  );
  return null;
}

/** Whether two GGUF files hold the same tensors: names, order, shapes, types and bytes. */
async function sameTensors(a, b) {
  const ga = await readGgufHeader(a);
  const gb = await readGgufHeader(b);
  if (ga.tensors.length !== gb.tensors.length) {
    return `DIFFERENT: ${ga.tensors.length} tensors against ${gb.tensors.length}`;
  }
  for (const [i, t] of ga.tensors.entries()) {
    const u = gb.tensors[i];
    if (t.name !== u.name || t.type !== u.type || t.ne.join() !== u.ne.join()) {
      return `DIFFERENT: tensor ${i} is ${t.name} [${t.ne.join(', ')}] against ${u.name} [${u.ne.join(', ')}]`;
    }
    const [da, db] = await Promise.all([readTensorData(a, ga, t.name), readTensorData(b, gb, u.name)]);
    if (Buffer.compare(da, db) !== 0) return `DIFFERENT: the data of ${t.name}`;
  }
  return `the same ${ga.tensors.length} tensors (names, order, shapes, types and data byte for byte)`;
}
