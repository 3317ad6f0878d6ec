// Shared helpers for the on-demand benchmarks: run a command several times, read wall time and peak
// RSS from GNU time, report medians and ratios against a reference measured in the same run.
import { Buffer } from 'node:buffer';
import { spawnSync } from 'node:child_process';
import { createHash, randomFillSync } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = fileURLToPath(new URL('../', import.meta.url));
export const BIN = fileURLToPath(new URL('../bin/run.js', import.meta.url));

export function requireBuilt() {
  if (!existsSync(new URL('../dist/index.js', import.meta.url))) {
    console.error('bench: run `npm run build` first');
    process.exit(3);
  }
  if (!existsSync('/usr/bin/time')) {
    console.error('bench: GNU time (/usr/bin/time) is needed for peak RSS: apt-get install time');
    process.exit(3);
  }
}

/** Runs `cmd args` under /usr/bin/time -v; returns wall seconds and peak RSS in MiB. */
export function measure(cmd, args, options = {}) {
  const started = process.hrtime.bigint();
  // the wall clock of bash's `time` (milliseconds; GNU time's is in centiseconds, too coarse for a
  // 40 ms reference), taken in a small process: a parent with a large heap spawns slowly, which is
  // not the child's cost; GNU time reports the peak RSS
  const r = spawnSync(
    'bash',
    [
      '-c',
      'TIMEFORMAT="CODI_BENCH_WALL %3R"; time /usr/bin/time -f "CODI_BENCH_MAXRSS %M" "$@"',
      'bash',
      cmd,
      ...args,
    ],
    { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, ...options },
  );
  const elapsed = [...r.stderr.matchAll(/^CODI_BENCH_WALL ([\d.]+)$/gmu)].pop();
  const wall = elapsed ? Number(elapsed[1]) : Number(process.hrtime.bigint() - started) / 1e9;
  const rss = [...r.stderr.matchAll(/^CODI_BENCH_MAXRSS (\d+)$/gmu)].pop();
  if (options.expectStatus !== undefined ? r.status !== options.expectStatus : r.status !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}:\n${r.stdout}\n${r.stderr}`);
  }
  return { wall, rssMiB: rss ? Number(rss[1]) / 1024 : NaN, stdout: r.stdout };
}

export function median(values) {
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/**
 * Alternates the commands `trials` times (so both see the same machine state); medians. Before each
 * run, `sync` (untimed) writes back what the previous one left dirty: `cp` leaves its 74 MB for the
 * kernel to write later, which would otherwise land in the next command's time.
 */
export function compare(trials, commands) {
  const results = Object.fromEntries(Object.keys(commands).map((k) => [k, []]));
  for (let i = 0; i < trials; i++) {
    for (const [name, run] of Object.entries(commands)) {
      spawnSync('sync');
      results[name].push(run());
    }
  }
  return Object.fromEntries(
    Object.entries(results).map(([k, rs]) => [
      k,
      {
        wall: median(rs.map((r) => r.wall)),
        rssMiB: Math.max(...rs.map((r) => r.rssMiB)),
        all: rs.map((r) => r.wall),
      },
    ]),
  );
}

export function verdict(ok) {
  return ok ? 'PASS' : 'FAIL';
}

/** Qwen2.5-1.5B's projection shapes: what a production adapter for qwen2.5-coder-1.5b adapts. */
export const QWEN15B_DIMS = { layers: 28, hidden: 1536, intermediate: 8960, kvDim: 256 };

/** A Qwen2.5-1.5B-shaped PEFT adapter (r 16, all 7 projections, 392 tensors), for writePeftAdapter. */
export async function qwen15bAdapterSpec(id, extra = {}) {
  const { ALL_PROJECTIONS, decoderTargets } = await import('../dist/testkit/peft-adapter.js');
  return {
    id,
    version: '0.1.0',
    baseModel: 'qwen2.5-coder-1.5b',
    r: 16,
    alpha: 32,
    targetModules: ALL_PROJECTIONS,
    modules: decoderTargets(QWEN15B_DIMS),
    seed: 7,
    ...extra,
  };
}

/**
 * A Qwen2 base GGUF of real shapes whose tensor data is a sparse hole (only its header is read by
 * convert), with a byte-level BPE vocabulary of the real size in its header (the base reader walks
 * it): `dims` as QWEN15B_DIMS, plus `heads`, `kvHeads`, `vocab`, `merges` and `tied`.
 */
export async function writeSparseQwen2Base(path, name, dims) {
  const { GgmlType, gv } = await import('../dist/formats/ggml-types.js');
  const { GgufWriter } = await import('../dist/files/gguf-writer.js');
  const tensors = [{ name: 'token_embd.weight', ne: [dims.hidden, dims.vocab], type: GgmlType.F16 }];
  for (let l = 0; l < dims.layers; l++) {
    const b = `blk.${l}`;
    tensors.push(
      { name: `${b}.attn_norm.weight`, ne: [dims.hidden], type: GgmlType.F32 },
      { name: `${b}.attn_q.weight`, ne: [dims.hidden, dims.hidden], type: GgmlType.F16 },
      { name: `${b}.attn_q.bias`, ne: [dims.hidden], type: GgmlType.F32 },
      { name: `${b}.attn_k.weight`, ne: [dims.hidden, dims.kvDim], type: GgmlType.F16 },
      { name: `${b}.attn_k.bias`, ne: [dims.kvDim], type: GgmlType.F32 },
      { name: `${b}.attn_v.weight`, ne: [dims.hidden, dims.kvDim], type: GgmlType.F16 },
      { name: `${b}.attn_v.bias`, ne: [dims.kvDim], type: GgmlType.F32 },
      { name: `${b}.attn_output.weight`, ne: [dims.hidden, dims.hidden], type: GgmlType.F16 },
      { name: `${b}.ffn_norm.weight`, ne: [dims.hidden], type: GgmlType.F32 },
      { name: `${b}.ffn_gate.weight`, ne: [dims.hidden, dims.intermediate], type: GgmlType.F16 },
      { name: `${b}.ffn_up.weight`, ne: [dims.hidden, dims.intermediate], type: GgmlType.F16 },
      { name: `${b}.ffn_down.weight`, ne: [dims.intermediate, dims.hidden], type: GgmlType.F16 },
    );
  }
  tensors.push({ name: 'output_norm.weight', ne: [dims.hidden], type: GgmlType.F32 });
  if (!dims.tied) tensors.push({ name: 'output.weight', ne: [dims.hidden, dims.vocab], type: GgmlType.F16 });
  // tokens and merges of typical lengths
  const tokens = Array.from({ length: dims.vocab }, (_, i) =>
    i < 256 ? `<0x${i.toString(16)}>` : `Ġ${i.toString(36)}er`,
  );
  const merges = Array.from({ length: dims.merges }, (_, i) => `Ġ${i.toString(36)} er`);
  const writer = await GgufWriter.create(path, {
    metadata: [
      ['general.architecture', gv.str('qwen2')],
      ['general.name', gv.str(name)],
      ['qwen2.block_count', gv.u32(dims.layers)],
      ['qwen2.embedding_length', gv.u32(dims.hidden)],
      ['qwen2.feed_forward_length', gv.u32(dims.intermediate)],
      ['qwen2.attention.head_count', gv.u32(dims.heads)],
      ['qwen2.attention.head_count_kv', gv.u32(dims.kvHeads)],
      ['tokenizer.ggml.model', gv.str('gpt2')],
      ['tokenizer.ggml.pre', gv.str('qwen2')],
      ['tokenizer.ggml.tokens', gv.strings(tokens)],
      ['tokenizer.ggml.token_type', gv.i32s(new Int32Array(dims.vocab).fill(1))],
      ['tokenizer.ggml.merges', gv.strings(merges)],
    ],
    tensors,
  });
  for (const t of tensors) await writer.skipTensor(t.name);
  await writer.finish();
}

/** Qwen2.5-1.5B's real shapes with tied embeddings, its vocabulary and merges: writeSparseQwen2Base. */
export function writeQwen15bShapesBase(path) {
  return writeSparseQwen2Base(path, 'Qwen2.5 1.5B shapes (sparse)', {
    ...QWEN15B_DIMS,
    heads: 12,
    kvHeads: 2,
    vocab: 151936,
    merges: 151387,
    tied: true,
  });
}

/**
 * Medians of the CODI_TRACE=1 phases of `args` (run `trials` times), printed with the time and page
 * faults each added: where a command's time goes.
 */
export function printTracePhases(args, trials, env = {}) {
  const traces = [];
  for (let i = 0; i < trials; i++) {
    const r = spawnSync(process.execPath, args, {
      encoding: 'utf8',
      env: { ...process.env, ...env, CODI_TRACE: '1' },
    });
    traces.push(
      [...r.stderr.matchAll(/^\[trace\]\s+([\d.]+) ms\s+(\d+) faults {2}(.*)$/gmu)].map((m) => [
        m[3],
        Number(m[1]),
        Number(m[2]),
      ]),
    );
  }
  const labels = traces[0].map(([label]) => label);
  let previous = 0;
  let previousFaults = 0;
  for (const [i, label] of labels.entries()) {
    const at = median(traces.map((t) => t[i]?.[1] ?? NaN));
    const faults = median(traces.map((t) => t[i]?.[2] ?? NaN));
    console.log(
      `  ${at.toFixed(0).padStart(5)} ms (+${(at - previous).toFixed(0).padStart(3)})  ${String(faults).padStart(5)} page faults (+${String(faults - previousFaults).padStart(4)})  ${label.slice(0, 80)}`,
    );
    previous = at;
    previousFaults = faults;
  }
}

/**
 * A valid adapter of about `sizeGiB` GiB in `<root>/bench-adapter`: q_proj LoRAs of r=256 on
 * 8192-wide layers (16 MiB per layer, F32 A + B), its metadata.json listing the weights' and the
 * config's sha256. Returns the folder and the weights file.
 */
export function writeBigAdapter(root, sizeGiB) {
  const r = 256;
  const width = 8192;
  const perTensor = r * width * 4;
  const layers = Math.round((sizeGiB * 1024 ** 3) / (2 * perTensor));
  const dir = join(root, 'bench-adapter');
  mkdirSync(dir);
  console.log(
    `generating a ${((layers * 2 * perTensor) / 1024 ** 3).toFixed(2)} GiB adapter (${layers} layers) in ${dir}`,
  );
  const header = {};
  let offset = 0;
  for (let l = 0; l < layers; l++) {
    const p = `base_model.model.model.layers.${l}.self_attn.q_proj`;
    header[`${p}.lora_A.weight`] = {
      dtype: 'F32',
      shape: [r, width],
      data_offsets: [offset, offset + perTensor],
    };
    offset += perTensor;
    header[`${p}.lora_B.weight`] = {
      dtype: 'F32',
      shape: [width, r],
      data_offsets: [offset, offset + perTensor],
    };
    offset += perTensor;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const prefix = Buffer.alloc(8 + json.length);
  prefix.writeBigUInt64LE(BigInt(json.length), 0);
  prefix.write(json, 8, 'utf8');
  const weights = join(dir, 'adapter_model.safetensors');
  const hash = createHash('sha256').update(prefix);
  const fd = openSync(weights, 'w');
  writeSync(fd, prefix);
  const block = Buffer.alloc(perTensor);
  for (let i = 0; i < layers * 2; i++) {
    randomFillSync(block, 0, 4096);
    hash.update(block);
    writeSync(fd, block);
  }
  closeSync(fd);
  const config = JSON.stringify({ peft_type: 'LORA', r, lora_alpha: 2 * r, target_modules: ['q_proj'] });
  writeFileSync(join(dir, 'adapter_config.json'), config);
  writeFileSync(
    join(dir, 'metadata.json'),
    JSON.stringify({
      schema_version: 1,
      id: 'bench-adapter',
      version: '1.0.0',
      base_model: 'bench',
      created_at: '2026-11-27T00:00:00Z',
      training: { dataset: 'bench' },
      checksum: {
        algorithm: 'sha256',
        files: {
          'adapter_model.safetensors': hash.digest('hex'),
          'adapter_config.json': createHash('sha256').update(config).digest('hex'),
        },
      },
    }),
  );
  return { dir, weights };
}
