/**
 * `convert`: a PEFT safetensors LoRA → a llama.cpp GGUF LoRA adapter, natively and air-gapped. The
 * architecture and shapes come from the base GGUF; the adapter is verified first (fail closed).
 */
import { createHash } from 'node:crypto';
import { adoptEarly, beginEarlyHash, type EarlyHash } from './checksum.js';
import type { Stats } from 'node:fs';
import { access, constants, lstat, mkdir, stat } from 'node:fs/promises';
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
import { type SafetensorsHeader, type SafetensorsTensorInfo } from './formats/safetensors.js';
import { SequentialReader } from './formats/sequential-reader.js';
import { LORA_A_SUFFIX, LORA_B_SUFFIX } from './gguf-names.js';
import { SAFETENSORS_FILE } from './layout.js';
import {
  inspectAdapter,
  requireValid,
  type Inspection,
  type VerifiedAdapter,
  type VerifyProgress,
} from './verify.js';
import { pausePoint } from './test-hooks.js';
import { trace } from './trace.js';
import { VERSION } from './version.js';

export { OUTTYPES, type OutType } from './constants.js';
import type { OutType } from './constants.js';

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
  /** the weights' hash, begun by the caller before it loaded this module (`beginEarlyHash`) */
  earlyHash?: EarlyHash | null;
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
  // the weights are hashed from the start, in a worker on the other core, while the base and the
  // rest of the adapter are read here; the conversion pass later checks the file did not change since
  const early =
    options.earlyHash !== undefined
      ? options.earlyHash
      : options.onHashProgress
        ? null
        : beginEarlyHash(dir, SAFETENSORS_FILE);
  trace('convert: start');
  let base: BaseModel;
  try {
    base = await readBaseModel(resolve(options.base));
    trace('convert: base model read');
  } catch (e) {
    early?.hash.cancel();
    throw e;
  }
  const weightsPath = join(resolve(dir), SAFETENSORS_FILE);
  const before = early?.stats ?? (await lstat(weightsPath).catch(() => null));
  let plan: PlannedModule[] = [];
  let ggufAlpha = 0;
  const inspection = await inspectAdapter(dir, {
    ...(options.onHashProgress ? { onHashProgress: options.onHashProgress } : {}),
    weightsHash: adoptEarly(early),
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
  }).catch((e: unknown) => {
    early?.hash.cancel();
    throw e;
  });
  trace('convert: adapter inspected');
  try {
    return await convertInspected(inspection, before, base, plan, ggufAlpha, options, started);
  } finally {
    inspection.cancel();
    early?.hash.cancel();
  }
}

/**
 * The conversion proper. It reads the weights once, hashing every byte as it converts, and only the
 * commit waits for the checksums: a mismatch aborts the write, so an adapter that fails verification
 * never produces a GGUF.
 */
async function convertInspected(
  inspection: Inspection,
  /** the weights file before it was hashed */
  before: Stats | null,
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
    before,
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
  /** the weights file before verification hashed it: it must be the same file when this pass ends */
  before: Stats | null,
  /** resolves once the adapter is fully verified (throws if not): the commit waits for it */
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
  const jobs: ConvertJob[] = [];
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
  // GGUF tensors in the order their data lies in the safetensors file: one sequential read does it
  jobs.sort((x, y) => x.info.begin - y.info.begin);

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

  if (jobs.length === 0) await gate();
  // one scratch buffer for every tensor: the writer has encoded a payload before it asks for the next
  const largest = Math.max(0, ...jobs.map((j) => j.info.end - j.info.begin));
  const scratch = new Float32Array(
    Math.max(0, ...jobs.map((j) => (j.info.end - j.info.begin) / (j.info.dtype === 'F32' ? 4 : 2))),
  );
  const held = new Uint8Array(largest);
  let reader: SequentialReader | null = null;
  try {
    trace('convert: writing');
    await pausePoint('convert:before-pass');
    reader = await SequentialReader.open(weightsPath);
    const source = reader;
    await source.take(header.dataOffset);
    const result = await writeGguf(
      output,
      { metadata: kv, tensors: jobs.map((j) => j.spec) },
      async (_spec, i) => {
        const job = jobs[i];
        if (!job) throw new CodiError('INTERNAL', `no job for tensor ${i}`);
        const at = source.position - header.dataOffset;
        if (job.info.begin < at) throw new CodiError('INTERNAL', `${job.info.name} overlaps another tensor`);
        await source.take(job.info.begin - at);
        let bytes = await source.take(job.info.end - job.info.begin);
        if (bytes.length < job.info.end - job.info.begin) throw sourceChanged(weightsPath, 'shrank');
        if (i === jobs.length - 1) {
          held.set(bytes);
          bytes = held.subarray(0, bytes.length);
          // the bytes converted are the bytes verified: the same file, unchanged since it was hashed
          if ((await source.skipToEnd()) > 0 || source.position !== header.fileSize) {
            throw sourceChanged(weightsPath, 'grew');
          }
          if (before && !sameFile(before, await source.stat())) throw sourceChanged(weightsPath, 'changed');
          // then the checksums: the GGUF is committed only for a verified adapter
          trace('convert: all read, waiting for the checksums');
          await gate();
          trace('convert: verified');
        }
        return convertTensor(job, bytes, scratch);
      },
    );
    trace('convert: committed');
    return { bytes: result.bytes, tensors: jobs.length, f16Fallback };
  } finally {
    await reader?.close();
  }
}

/** Same inode, size and change time: nothing wrote to the file in between. */
function sameFile(a: Stats, b: Stats): boolean {
  return (
    a.dev === b.dev &&
    a.ino === b.ino &&
    a.size === b.size &&
    a.ctimeMs === b.ctimeMs &&
    a.mtimeMs === b.mtimeMs
  );
}

interface ConvertJob {
  spec: GgufTensorSpec;
  info: SafetensorsTensorInfo;
  transpose: boolean;
  factor: number;
  permuteHeads: number | null;
}

/** One tensor's safetensors bytes as the GGUF tensor `job.spec` wants them. */
function convertTensor(job: ConvertJob, bytes: Uint8Array, scratch: Float32Array): Uint8Array | Float32Array {
  const type = GGML_TYPE_OF_DTYPE[job.info.dtype];
  if (type === undefined)
    throw new CodiError('TENSOR_DTYPE', `${job.info.name} is ${job.info.dtype}: cannot convert`);
  const plain = !job.transpose && job.permuteHeads === null && job.factor === 1;
  // F32 in, F32 out, nothing to change: the bytes go through as they are
  if (plain && type === GgmlType.F32 && job.spec.type === GgmlType.F32) return bytes;
  let values = decodeToF32(type, bytes, scratch.subarray(0, bytes.length / (type === GgmlType.F32 ? 4 : 2)));
  const [rows = 0, cols = 0] = job.info.shape;
  if (job.transpose) values = transpose(values, rows, cols);
  if (job.permuteHeads !== null) values = permuteRopeRows(values, rows, cols, job.permuteHeads);
  if (job.factor !== 1) {
    const f = job.factor;
    for (let k = 0; k < values.length; k++) values[k] = (values[k] ?? 0) * f;
  }
  return values;
}

function sourceChanged(path: string, how: string): CodiError {
  return new CodiError(
    'SOURCE_CHANGED',
    `${basename(path)} ${how} while it was being converted; nothing was written`,
    { file: basename(path), hint: 'convert again once the adapter files are no longer being written' },
  );
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
