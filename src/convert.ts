/**
 * `convert`: a PEFT safetensors LoRA → a llama.cpp GGUF LoRA adapter, natively and air-gapped. The
 * architecture and shapes come from the base GGUF; the adapter is verified first (fail closed).
 */
import { createHash } from 'node:crypto';
import { access, constants, mkdir, open, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import {
  checkCompatibility,
  permuteRopeRows,
  readBaseModel,
  type BaseModel,
  type PlannedModule,
} from './base-model.js';
import { CodiError, ExitCode } from './errors.js';
import { GGML_TYPE_OF_DTYPE, GgmlType, gv, type GgufTypedValue } from './formats/ggml-types.js';
import { neFromTorchShape } from './formats/gguf.js';
import { writeGguf, type GgufTensorSpec } from './formats/gguf-writer.js';
import { decodeToF32 } from './formats/numeric.js';
import {
  readTensorBytes,
  type SafetensorsHeader,
  type SafetensorsTensorInfo,
} from './formats/safetensors.js';
import { LORA_A_SUFFIX, LORA_B_SUFFIX } from './gguf-names.js';
import { SAFETENSORS_FILE } from './layout.js';
import {
  inspectAdapter,
  requireValid,
  type Inspection,
  type VerifiedAdapter,
  type VerifyProgress,
} from './verify.js';
import { VERSION } from './version.js';

export const OUTTYPES = ['f32', 'f16', 'bf16', 'q8_0'] as const;
export type OutType = (typeof OUTTYPES)[number];

/**
 * f32 by default: llama.cpp rounds the activations to the weight type inside the LoRA matmuls
 * (f16/bf16/q8_0 weights mean f16/bf16/q8_0 activations), so only f32 reproduces PEFT closely.
 * Adapters are small; the exact one is worth the bytes.
 */
export const DEFAULT_OUTTYPE: OutType = 'f32';

/** Bumped whenever the converter's output for the same input changes; part of the cache key. */
export const CONVERTER_FORMAT = 1;

const GGML_OF: Record<OutType, GgmlType> = {
  f32: GgmlType.F32,
  f16: GgmlType.F16,
  bf16: GgmlType.BF16,
  q8_0: GgmlType.Q8_0,
};
const Q8_0_BLOCK = 32;

export interface ConvertOptions {
  base: string;
  out?: string;
  outtype?: OutType;
  /** rebuild even when the cache has this conversion */
  force?: boolean;
  onHashProgress?: (p: VerifyProgress) => void;
}

export interface ConvertResult {
  output: string;
  cached: boolean;
  adapter: { id: string | null; version: string | null; path: string; weightsSha256: string };
  base: { path: string; arch: string; name: string | null };
  outtype: OutType;
  alpha: number;
  tensors: number;
  /** modules whose PEFT scale differs from llama.cpp's alpha/rank, and was folded into lora_b */
  folded: { module: string; scale: number; factor: number }[];
  /** tensors written as f16 because their rows are not a multiple of 32 (q8_0 only) */
  f16Fallback: string[];
  bytes: number;
  durationMs: number;
}

export async function convertAdapter(dir: string, options: ConvertOptions): Promise<ConvertResult> {
  const started = performance.now();
  const base = await readBaseModel(resolve(options.base));
  let plan: PlannedModule[] = [];
  let ggufAlpha = 0;
  const inspection = await inspectAdapter(dir, {
    ...(options.onHashProgress ? { onHashProgress: options.onHashProgress } : {}),
    baseCheck: (adapter) => {
      if (!adapter.config) return Promise.resolve({ findings: [], summary: 'not checked' });
      const compat = checkCompatibility(
        base,
        adapter.config,
        adapter.modules,
        adapter.layout.weightsFile ?? SAFETENSORS_FILE,
      );
      plan = compat.plan;
      ggufAlpha = compat.ggufAlpha;
      return Promise.resolve({
        findings: compat.findings,
        summary: `${base.arch}, ${compat.plan.length} tensors mapped`,
      });
    },
  });
  try {
    return await convertInspected(inspection, base, plan, ggufAlpha, options, started);
  } finally {
    inspection.cancel();
  }
}

/**
 * The conversion proper. It starts while the weights are still being hashed (in a worker thread)
 * and only the commit waits for the checksums: a mismatch aborts the write, so an adapter that
 * fails verification never produces a GGUF.
 */
async function convertInspected(
  inspection: Inspection,
  base: BaseModel,
  plan: PlannedModule[],
  ggufAlpha: number,
  options: ConvertOptions,
  started: number,
): Promise<ConvertResult> {
  const verifiedReport = async (): Promise<VerifiedAdapter> => {
    const report = await inspection.finish();
    requireValid(report);
    return report.verified;
  };
  // anything wrong beyond the checksums: wait for the full report and fail with it
  if (inspection.errors.length > 0) await verifiedReport();
  const adapter = inspection.verified;
  if (adapter.layout.weightsFile !== SAFETENSORS_FILE || !adapter.safetensors) {
    await verifiedReport();
    throw new CodiError(
      'CONVERT_NEEDS_SAFETENSORS',
      'convert reads safetensors weights only; this adapter has adapter_model.bin',
      {
        hint: 'convert the .bin to safetensors first (torch.load(weights_only=True), then safetensors.torch.save_file)',
      },
    );
  }
  // metadata.json must list the weights (else verification has failed above); the cache is keyed by
  // that checksum, which the finished verification then confirms
  const weightsSha256 = inspection.expectedWeightsSha256 ?? '';
  const outtype = options.outtype ?? DEFAULT_OUTTYPE;
  const output = options.out
    ? resolve(options.out)
    : await defaultOutput(adapter, weightsSha256, configHash(adapter), outtype, base.arch);

  const result = (cached: boolean, bytes: number, tensors: number, f16Fallback: string[]): ConvertResult => ({
    output,
    cached,
    adapter: {
      id: adapter.metadata?.id ?? null,
      version: adapter.metadata?.version ?? null,
      path: adapter.layout.dir,
      weightsSha256,
    },
    base: { path: base.path, arch: base.arch, name: base.name },
    outtype,
    alpha: ggufAlpha,
    tensors,
    folded: plan
      .filter((p) => p.fold !== 1)
      .map((p) => ({ module: p.module.module, scale: p.scale, factor: p.fold })),
    f16Fallback,
    bytes,
    durationMs: Math.round(performance.now() - started),
  });

  if (!options.out && !options.force) {
    const hit = await stat(output).catch(() => null);
    if (hit?.isFile()) {
      await verifiedReport();
      return result(true, hit.size, plan.length * 2, []);
    }
  }

  const written = await writeAdapterGguf(
    join(adapter.layout.dir, SAFETENSORS_FILE),
    adapter.safetensors,
    output,
    { base, plan, ggufAlpha, outtype, metadata: adapter, weightsSha256 },
    verifiedReport,
  );
  return result(false, written.bytes, written.tensors, written.f16Fallback);
}

function configHash(adapter: VerifiedAdapter): string {
  return createHash('sha256')
    .update(JSON.stringify(adapter.config?.raw ?? {}))
    .digest('hex');
}

/**
 * The cache file for this conversion, next to the adapter: `<parent>/.gguf-cache/`. Keyed by the
 * weights checksum, the config (alpha and patterns change the folded scales), outtype, arch and
 * converter format. Falls back to the user cache when the adapter's parent is read-only.
 */
async function defaultOutput(
  adapter: VerifiedAdapter,
  weightsSha256: string,
  cfgHash: string,
  outtype: OutType,
  arch: string,
): Promise<string> {
  const key = createHash('sha256')
    .update([weightsSha256, cfgHash, outtype, arch, String(CONVERTER_FORMAT)].join('\n'))
    .digest('hex')
    .slice(0, 16);
  const name = `${basename(adapter.layout.dir)}.${weightsSha256.slice(0, 12)}.${key}.${outtype}.gguf`;
  const candidates = [
    process.env.CODI_GGUF_CACHE,
    join(dirname(adapter.layout.dir), '.gguf-cache'),
    join(process.env.XDG_CACHE_HOME ?? join(process.env.HOME ?? '/tmp', '.cache'), 'codi-adapter', 'gguf'),
  ].filter((d): d is string => d !== undefined && d !== '');
  for (const dir of candidates) {
    try {
      await mkdir(dir, { recursive: true });
      await access(dir, constants.W_OK);
      return join(dir, name);
    } catch {
      // read-only volume: try the next place
    }
  }
  throw new CodiError(
    'CACHE_UNWRITABLE',
    `no writable place for the converted GGUF (tried ${candidates.join(', ')})`,
    {
      exitCode: ExitCode.ENVIRONMENT,
      hint: 'pass --out <file>, or set CODI_GGUF_CACHE to a writable directory',
    },
  );
}

interface WriteInput {
  base: BaseModel;
  plan: PlannedModule[];
  ggufAlpha: number;
  outtype: OutType;
  metadata: VerifiedAdapter;
  weightsSha256: string;
}

async function writeAdapterGguf(
  weightsPath: string,
  header: SafetensorsHeader,
  output: string,
  input: WriteInput,
  /** resolves once the adapter is fully verified (throws if not): the last tensor waits for it */
  gate: () => Promise<unknown>,
): Promise<{ bytes: number; tensors: number; f16Fallback: string[] }> {
  const infos = new Map(header.tensors.map((t) => [t.name, t]));
  const f16Fallback: string[] = [];
  const typeFor = (name: string, ne: number[]): GgmlType => {
    if (input.outtype !== 'q8_0') return GGML_OF[input.outtype];
    if ((ne[0] ?? 0) % Q8_0_BLOCK === 0) return GgmlType.Q8_0;
    f16Fallback.push(name);
    return GgmlType.F16;
  };

  // llama.cpp layouts (src/llama-adapter.cpp): lora_a ne = [in, r] and lora_b ne = [r, out], i.e. the
  // PEFT matrices as they are; for token embeddings lora_a is [r, n_vocab] (rows fetched per token),
  // so PEFT's [r, n_vocab] lora_embedding_A is transposed, and lora_b stays [n_embd, r].
  const jobs: {
    spec: GgufTensorSpec;
    info: SafetensorsTensorInfo;
    transpose: boolean;
    factor: number;
    permuteHeads: number | null;
  }[] = [];
  for (const p of input.plan) {
    const a = infoOf(infos, p.module.a.name);
    const b = infoOf(infos, p.module.b.name);
    const embedding = p.module.kind === 'embedding';
    const aShape = embedding ? [p.module.inFeatures, p.rank] : [p.rank, p.module.inFeatures];
    const aName = `${p.target}${LORA_A_SUFFIX}`;
    const bName = `${p.target}${LORA_B_SUFFIX}`;
    const aNe = neFromTorchShape(aShape);
    const bNe = neFromTorchShape(b.shape);
    jobs.push({
      spec: { name: aName, ne: aNe, type: typeFor(aName, aNe) },
      info: a,
      transpose: embedding,
      factor: 1,
      permuteHeads: null,
    });
    jobs.push({
      spec: { name: bName, ne: bNe, type: typeFor(bName, bNe) },
      info: b,
      transpose: false,
      factor: p.fold,
      permuteHeads: p.permuteHeads,
    });
  }

  const m = input.metadata.metadata;
  const kv: [string, GgufTypedValue][] = [
    ['general.architecture', gv.str(input.base.arch)],
    ['general.type', gv.str('adapter')],
    ['general.name', gv.str(m?.id ?? basename(input.metadata.layout.dir))],
    ['adapter.type', gv.str('lora')],
    ['adapter.lora.alpha', gv.f32(input.ggufAlpha)],
    ['codi.adapter.id', gv.str(m?.id ?? '')],
    ['codi.adapter.version', gv.str(m?.version ?? '')],
    ['codi.adapter.base_model', gv.str(m?.base_model ?? '')],
    ['codi.adapter.weights_sha256', gv.str(input.weightsSha256)],
    ['codi.converter', gv.str(`codi-adapter ${VERSION} (format ${CONVERTER_FORMAT})`)],
  ];
  if (m?.version) kv.push(['general.version', gv.str(m.version)]);

  // one scratch buffer for every tensor: the writer has encoded a payload before it asks for the next
  const largest = Math.max(
    0,
    ...jobs.map((j) => (j.info.end - j.info.begin) / (j.info.dtype === 'F32' ? 4 : 2)),
  );
  const scratch = new Float32Array(largest);
  const readBuffer = new Uint8Array(scratch.length * 4);
  if (jobs.length === 0) await gate();
  const handle = await open(weightsPath, 'r');
  try {
    const result = await writeGguf(
      output,
      { metadata: kv, tensors: jobs.map((j) => j.spec) },
      async (_spec, i) => {
        const job = jobs[i];
        if (!job) throw new CodiError('INTERNAL', `no job for tensor ${i}`);
        const bytes = await readTensorBytes(handle, header, job.info, readBuffer);
        // the GGUF is committed when the last tensor is written: not before verification has passed
        if (i === jobs.length - 1) await gate();
        const type = GGML_TYPE_OF_DTYPE[job.info.dtype];
        if (type === undefined)
          throw new CodiError('TENSOR_DTYPE', `${job.info.name} is ${job.info.dtype}: cannot convert`);
        const plain = !job.transpose && job.permuteHeads === null && job.factor === 1;
        // F32 in, F32 out, nothing to change: the bytes go through as they are
        if (plain && type === GgmlType.F32 && job.spec.type === GgmlType.F32) return bytes;
        let values = decodeToF32(
          type,
          bytes,
          scratch.subarray(0, bytes.length / (type === GgmlType.F32 ? 4 : 2)),
        );
        const [rows = 0, cols = 0] = job.info.shape;
        if (job.transpose) values = transpose(values, rows, cols);
        if (job.permuteHeads !== null) values = permuteRopeRows(values, rows, cols, job.permuteHeads);
        if (job.factor !== 1) {
          const f = job.factor;
          for (let k = 0; k < values.length; k++) values[k] = (values[k] ?? 0) * f;
        }
        return values;
      },
    );
    return { bytes: result.bytes, tensors: jobs.length, f16Fallback };
  } finally {
    await handle.close();
  }
}

function infoOf(infos: Map<string, SafetensorsTensorInfo>, name: string): SafetensorsTensorInfo {
  const info = infos.get(name);
  if (!info) throw new CodiError('INTERNAL', `tensor ${name} vanished from the header`);
  return info;
}

/** [rows, cols] row-major → [cols, rows] row-major. */
function transpose(src: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(src.length);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) out[c * rows + r] = src[r * cols + c] ?? 0;
  }
  return out;
}
