/**
 * `convert`: a PEFT LoRA (safetensors, or a `.bin` read without unpickling) → a llama.cpp GGUF LoRA
 * adapter, natively and air-gapped. The architecture and shapes come from the base GGUF; the adapter
 * is verified first (fail closed).
 */
import { createHash } from 'node:crypto';
import { beginSha256 } from './checksum.js';
import { BinPass } from './bin-pass.js';
import { PassHash, sourceChanged, WeightsPass } from './convert-pass.js';
import type { Stats } from 'node:fs';
import { access, constants, lstat, mkdir, readdir, realpath, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve, sep } from 'node:path';
import { removeDeadTemps } from './atomic.js';
import {
  checkCompatibility,
  permuteRopeRows,
  readBaseModel,
  type BaseModel,
  type PlannedModule,
} from './base-model.js';
import { identityAt, type FileIdentity } from './byte-source.js';
import { checkBaseIdentity } from './base-identity.js';
import { CodiError } from './errors.js';
import {
  GGML_TYPE_OF_DTYPE,
  GgmlType,
  GgufValueType,
  gv,
  type GgufTypedValue,
} from './formats/ggml-types.js';
import { neFromTorchShape } from './formats/gguf.js';
import { writeGguf, type FileRange, type GgufTensorSpec, type TensorPayload } from './files/gguf-writer.js';
import { decodeToF32 } from './formats/numeric.js';
import type { PickleTensor } from './formats/pickle.js';
import type { SafetensorsDtype, SafetensorsHeader, SafetensorsTensorInfo } from './formats/safetensors.js';
import type { TorchBinScan } from './formats/torch-bin.js';
import { safetensorsOrder } from './formats/torch-tensor.js';
import { LORA_A_SUFFIX, LORA_B_SUFFIX } from './gguf-names.js';
import { ALORA_INVOCATION_KEY, servedInvocationTokens } from './alora.js';
import { BIN_FILE, SAFETENSORS_FILE } from './layout.js';
import type { TrustedKeys } from './signing/keys.js';
import {
  inspectAdapter,
  requireValid,
  type Inspection,
  type VerifiedAdapter,
  type VerifyProgress,
} from './verify.js';
import type { Finding } from './findings.js';
import { pausePoint } from './test-hooks.js';
import { trace } from './trace.js';
import { VERSION } from './version.js';

export { OUTTYPES, type OutType } from './constants.js';
import type { OutType } from './constants.js';
import { nowMs } from './clock.js';

/**
 * f32 by default: llama.cpp rounds the activations to the weight type inside the LoRA matmuls
 * (f16/bf16/q8_0 weights mean f16/bf16/q8_0 activations), so only f32 reproduces PEFT closely.
 * Adapters are small; the exact one is worth the bytes.
 */
export const DEFAULT_OUTTYPE: OutType = 'f32';

/** Bumped whenever the converter's output for the same input changes; part of the cache key. */
export const CONVERTER_FORMAT = 2;

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
  /** where the base model's sha256 is cached (default: CODI_STATE_DIR, else run's default) */
  stateDir?: string;
  onHashProgress?: (p: VerifyProgress) => void;
  /** the adapter must be signed by one of these keys (run's ADAPTER_TRUST_KEYS) */
  trust?: TrustedKeys;
}

export interface ConvertResult {
  output: string;
  cached: boolean;
  adapter: {
    id: string | null;
    version: string | null;
    path: string;
    /** the weights file converted: adapter_model.safetensors or adapter_model.bin */
    weightsFile: string;
    weightsSha256: string;
  };
  base: { path: string; arch: string; name: string | null };
  outtype: OutType;
  alpha: number;
  tensors: number;
  /** modules whose PEFT scale differs from llama.cpp's alpha/rank, and was folded into lora_b */
  folded: { module: string; scale: number; factor: number }[];
  /** tensors written as f16 because their rows are not a multiple of 32 (q8_0 only) */
  f16Fallback: string[];
  /**
   * An activated LoRA: its invocation tokens, and the ones written to the GGUF so that llama-server
   * starts applying it where PEFT does (src/alora.ts)
   */
  alora: { invocation_tokens: number[]; written: number[] } | null;
  /** verification's warnings (e.g. CONFIG_PATTERN_AMBIGUOUS): converted all the same */
  warnings: Finding[];
  /** the trusted key whose model.sig was verified (with `trust`) */
  signedBy: string | null;
  bytes: number;
  durationMs: number;
}

export async function convertAdapter(dir: string, options: ConvertOptions): Promise<ConvertResult> {
  const started = nowMs();
  trace('convert: start');
  if (options.out) await refuseOutOverInputs(resolve(options.out), resolve(options.base), resolve(dir));
  // the weights file as it is before anything reads it (which of the two it is, verification says):
  // the pass checks it is the same file after
  const before = {
    [SAFETENSORS_FILE]: await identityAt(join(resolve(dir), SAFETENSORS_FILE)),
    [BIN_FILE]: await identityAt(join(resolve(dir), BIN_FILE)),
  };
  const base = await readBaseModel(resolve(options.base));
  trace('convert: base model read');
  let plan: PlannedModule[] = [];
  let ggufAlpha = 0;
  // the weights are hashed by the conversion pass, from the bytes it converts
  const passHash = new PassHash();
  const inspection = await inspectAdapter(dir, {
    ...(options.onHashProgress ? { onHashProgress: options.onHashProgress } : {}),
    ...(options.trust ? { trust: options.trust } : {}),
    weightsHash: (path, size, onProgress) =>
      basename(path) === SAFETENSORS_FILE || basename(path) === BIN_FILE
        ? passHash.adopt(path, size, onProgress)
        : beginSha256(path, size, onProgress),
    baseCheck: async (adapter) => {
      if (!adapter.config) return { findings: [], summary: 'not checked' };
      const compat = checkCompatibility(
        base,
        adapter.config,
        adapter.modules,
        adapter.layout.weightsFile ?? SAFETENSORS_FILE,
      );
      plan = compat.plan;
      ggufAlpha = compat.ggufAlpha;
      // the base must be the one the adapter records, when it records one
      const identity = await checkBaseIdentity(
        base.path,
        adapter.metadata,
        options.stateDir === undefined ? {} : { stateDir: options.stateDir },
      );
      return {
        findings: [...compat.findings, ...identity.findings],
        summary: `${base.arch}, ${compat.plan.length} tensors mapped`,
      };
    },
  });
  trace('convert: adapter inspected');
  try {
    return await convertInspected(inspection, passHash, before, base, plan, ggufAlpha, options, started);
  } finally {
    inspection.cancel();
    passHash.cancel();
  }
}

/**
 * The conversion proper. It reads the weights once, hashing every byte as it converts, and only the
 * commit waits for the checksums: a mismatch aborts the write, so an adapter that fails verification
 * never produces a GGUF.
 */
async function convertInspected(
  inspection: Inspection,
  passHash: PassHash,
  /** the weights files before they were hashed */
  before: Readonly<Record<string, FileIdentity | null>>,
  base: BaseModel,
  plan: PlannedModule[],
  ggufAlpha: number,
  options: ConvertOptions,
  started: number,
): Promise<ConvertResult> {
  let warnings: Finding[] = [];
  const verifiedReport = async (): Promise<VerifiedAdapter> => {
    // outside the pass (or before it ends), the weights are hashed by themselves
    passHash.elsewhere();
    const report = await inspection.finish();
    requireValid(report);
    warnings = report.findings.filter((f) => f.level === 'warning');
    return report.verified;
  };
  // anything wrong beyond the checksums: wait for the full report and fail with it
  if (inspection.errors.length > 0) await verifiedReport();
  const adapter = inspection.verified;
  const weightsFile = adapter.layout.weightsFile;
  // with no error before the checksums, the weights were read: a header, or a scanned .bin
  const weights = adapter.safetensors ?? adapter.bin;
  if (!weightsFile || !weights) throw new CodiError('INTERNAL', 'verified weights without a header');
  // metadata.json must list the weights (else verification has failed above); the cache is keyed by
  // that checksum, which the finished verification then confirms
  const weightsSha256 = inspection.expectedWeightsSha256 ?? '';
  const outtype = options.outtype ?? DEFAULT_OUTTYPE;
  const key = cacheKey(adapter, weightsSha256, outtype, base, plan, ggufAlpha);
  const output = options.out
    ? resolve(options.out)
    : await defaultOutput(adapter, weightsSha256, key, outtype);
  // the GGUF's tensors follow from the plan alone, so a cached result reports what a rebuild would
  const tensors = plannedTensors(plan, outtype);

  const about = described(adapter, weightsSha256, base, plan);
  const result = (cached: boolean, bytes: number): ConvertResult => ({
    output,
    cached,
    adapter: about.adapter,
    base: about.base,
    outtype,
    alpha: ggufAlpha,
    tensors: tensors.specs.length,
    folded: about.folded,
    alora: aloraOf(adapter),
    f16Fallback: tensors.f16Fallback,
    warnings,
    // set once the verification is finished, which every result waits for
    signedBy: adapter.signature?.ok ? (adapter.signature.signer?.fingerprint ?? null) : null,
    bytes,
    durationMs: Math.round(nowMs() - started),
  });

  if (!options.out && !options.force) {
    const hit = await stat(output).catch(() => null);
    if (hit?.isFile()) {
      await verifiedReport();
      return result(true, hit.size);
    }
  }

  // temp files of conversions to this target that were killed (SIGKILL, power loss) go first
  await removeDeadTemps(dirname(output), [basename(output)]);
  const written = await writeAdapterGguf(
    { path: join(adapter.layout.dir, weightsFile), weights, before: before[weightsFile] ?? null },
    output,
    { base, tensors, ggufAlpha, metadata: adapter, weightsSha256 },
    passHash,
    verifiedReport,
  );
  return result(false, written.bytes);
}

function aloraOf(adapter: VerifiedAdapter): ConvertResult['alora'] {
  const tokens = adapter.config?.aloraInvocationTokens;
  return tokens ? { invocation_tokens: [...tokens], written: servedInvocationTokens(tokens) } : null;
}

/** What a conversion result says of its inputs: the adapter, the base and the folded scales. */
function described(
  adapter: VerifiedAdapter,
  weightsSha256: string,
  base: BaseModel,
  plan: readonly PlannedModule[],
): Pick<ConvertResult, 'adapter' | 'base' | 'folded'> {
  return {
    adapter: {
      id: adapter.metadata?.id ?? null,
      version: adapter.metadata?.version ?? null,
      path: adapter.layout.dir,
      weightsFile: adapter.layout.weightsFile ?? SAFETENSORS_FILE,
      weightsSha256,
    },
    base: { path: base.path, arch: base.arch, name: base.name },
    folded: plan
      .filter((p) => p.fold !== 1)
      .map((p) => ({ module: p.module.module, scale: p.scale, factor: p.fold })),
  };
}

/**
 * Refuses an --out that names the base model (by path, or the same file through a symlink or a hard
 * link) or a file in the adapter folder: committing the GGUF there would replace the base model or
 * an adapter file with the converted adapter.
 */
async function refuseOutOverInputs(out: string, basePath: string, adapterDir: string): Promise<void> {
  const real = (p: string): Promise<string | null> => realpath(p).catch(() => null);
  const sameFile = (a: Stats | null, b: Stats | null): boolean =>
    a !== null && b !== null && a.dev === b.dev && a.ino === b.ino;
  // a file that does not exist yet lands in its folder as that folder really is
  const outReal = (await real(out)) ?? join((await real(dirname(out))) ?? dirname(out), basename(out));
  const outStat = await stat(out).catch(() => null);
  if (outReal === (await real(basePath)) || sameFile(outStat, await stat(basePath).catch(() => null))) {
    throw new CodiError(
      'OUT_IS_BASE',
      `--out ${out} is the base model ${basePath}: the converted adapter would replace the base model`,
      { file: out },
    );
  }
  const dirReal = (await real(adapterDir)) ?? adapterDir;
  let inside = outReal === dirReal || outReal.startsWith(`${dirReal}${sep}`);
  if (!inside && outStat?.isFile()) {
    // a hard link to one of the adapter's files, from elsewhere
    for (const entry of await readdir(dirReal).catch(() => [])) {
      inside = sameFile(outStat, await lstat(join(dirReal, entry)).catch(() => null));
      if (inside) break;
    }
  }
  if (inside) {
    throw new CodiError(
      'OUT_IN_ADAPTER',
      `--out ${out} is inside the adapter folder ${adapterDir}: the GGUF would replace or be added to the adapter's own files`,
      { file: out },
    );
  }
}

/**
 * What the GGUF depends on besides the weights: the config as written, outtype, converter format,
 * the metadata written into it, and everything taken from the base: arch, head counts (the llama q/k
 * permutation), the adapted tensors' shapes, and the plan made from them (targets, ranks, folded
 * scales, permutations, the file's alpha). Two bases that would give another GGUF never share a key.
 */
function cacheKey(
  adapter: VerifiedAdapter,
  weightsSha256: string,
  outtype: OutType,
  base: BaseModel,
  plan: readonly PlannedModule[],
  ggufAlpha: number,
): string {
  const m = adapter.metadata;
  const parts = {
    weightsSha256,
    config: adapter.config?.raw ?? {},
    outtype,
    format: CONVERTER_FORMAT,
    metadata: [m?.id ?? null, m?.version ?? null, m?.base_model ?? null, basename(adapter.layout.dir)],
    base: { arch: base.arch, headCount: base.headCount, headCountKv: base.headCountKv },
    ggufAlpha,
    plan: plan.map((p) => [
      p.module.a.name,
      p.module.b.name,
      p.target,
      base.shapes.get(p.target) ?? null,
      p.rank,
      p.fold,
      p.permuteHeads,
    ]),
  };
  return createHash('sha256').update(JSON.stringify(parts)).digest('hex');
}

/**
 * The cache file for this conversion, next to the adapter: `<parent>/.gguf-cache/`, named by the
 * weights checksum and `cacheKey`. Falls back to the user cache when the adapter's parent is read-only.
 */
async function defaultOutput(
  adapter: VerifiedAdapter,
  weightsSha256: string,
  key: string,
  outtype: OutType,
): Promise<string> {
  const name = `${basename(adapter.layout.dir)}.${weightsSha256.slice(0, 12)}.${key.slice(0, 16)}.${outtype}.gguf`;
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
  );
}

/** One tensor of the GGUF: its spec, the safetensors tensor it comes from, and what is done to it. */
interface PlannedTensor {
  spec: GgufTensorSpec;
  /** the safetensors tensor name */
  source: string;
  transpose: boolean;
  factor: number;
  permuteHeads: number | null;
}

/**
 * The GGUF's tensors, from the plan alone (no file is read): a cache hit reports the same names, types
 * and q8_0 fallbacks that writing it did.
 */
export function plannedTensors(
  plan: readonly PlannedModule[],
  outtype: OutType,
): { specs: PlannedTensor[]; f16Fallback: string[] } {
  const f16Fallback: string[] = [];
  const typeFor = (name: string, ne: number[]): GgmlType => {
    if (outtype !== 'q8_0') return GGML_OF[outtype];
    if ((ne[0] ?? 0) % Q8_0_BLOCK === 0) return GgmlType.Q8_0;
    f16Fallback.push(name);
    return GgmlType.F16;
  };
  // llama.cpp layouts (src/llama-adapter.cpp): lora_a ne = [in, r] and lora_b ne = [r, out], i.e. the
  // PEFT matrices as they are; for token embeddings lora_a is [r, n_vocab] (rows fetched per token),
  // so PEFT's [r, n_vocab] lora_embedding_A is transposed, and lora_b stays [n_embd, r].
  const specs: PlannedTensor[] = [];
  for (const p of plan) {
    const embedding = p.module.kind === 'embedding';
    const aShape = embedding ? [p.module.inFeatures, p.rank] : [p.rank, p.module.inFeatures];
    const aName = `${p.target}${LORA_A_SUFFIX}`;
    const bName = `${p.target}${LORA_B_SUFFIX}`;
    const aNe = neFromTorchShape(aShape);
    const bNe = neFromTorchShape(p.module.b.shape);
    specs.push({
      spec: { name: aName, ne: aNe, type: typeFor(aName, aNe) },
      source: p.module.a.name,
      transpose: embedding,
      factor: 1,
      permuteHeads: null,
    });
    specs.push({
      spec: { name: bName, ne: bNe, type: typeFor(bName, bNe) },
      source: p.module.b.name,
      transpose: false,
      factor: p.fold,
      permuteHeads: p.permuteHeads,
    });
  }
  return { specs, f16Fallback };
}

interface WriteInput {
  base: BaseModel;
  tensors: { specs: PlannedTensor[] };
  ggufAlpha: number;
  metadata: VerifiedAdapter;
  weightsSha256: string;
}

/** The weights a GGUF is written from: a safetensors header, or a scanned `.bin`. */
interface WeightsSource {
  path: string;
  weights: SafetensorsHeader | TorchBinScan;
  /** the file before the pass: it must be the same file when the pass ends */
  before: FileIdentity | null;
}

async function writeAdapterGguf(
  source: WeightsSource,
  output: string,
  input: WriteInput,
  /** fed every byte of the weights file, in order */
  hash: PassHash,
  /** resolves once the adapter is fully verified (throws if not): the commit waits for it */
  gate: () => Promise<unknown>,
): Promise<{ bytes: number }> {
  const jobs = orderedJobs(input.tensors.specs, source.weights);
  if (jobs.length === 0) await gate();
  // one buffer for every tensor that needs converting: the writer has encoded a payload before it
  // asks for the next
  const scratch = new Float32Array(Math.max(0, ...jobs.map((j) => j.numel)));
  trace('convert: writing');
  await pausePoint('convert:before-pass');
  const pass = await openPass(source, hash, jobs);
  try {
    const result = await writeGguf(
      output,
      { metadata: adapterKv(input), tensors: jobs.map((j) => j.spec) },
      async (_spec, i): Promise<TensorPayload> => {
        const job = jobs[i];
        if (!job) throw new CodiError('INTERNAL', `no job for tensor ${i}`);
        // crash-safety tests stop here: the temp file exists, half of the tensors are handed over
        if (i === jobs.length >> 1) await pausePoint('convert:writing');
        if (i < jobs.length - 1) {
          // the bytes as they are go from the file to the GGUF through the writer's buffers
          const range = isPassThrough(job) ? pass.range(job) : null;
          return range ?? convertTensor(job, await pass.read(job), scratch);
        }
        const bytes = await pass.read(job);
        await pass.finish(source.before);
        // then the checksums: the GGUF is committed only for a verified adapter
        trace('convert: all read, waiting for the checksums');
        await gate();
        trace('convert: verified');
        return convertTensor(job, bytes, scratch);
      },
    );
    trace('convert: committed');
    return { bytes: result.bytes };
  } finally {
    await pass.close();
  }
}

/**
 * The GGUF's tensors in the order their data is read. From safetensors, the order their data lies in
 * the file: one sequential read does it. From a `.bin`, the order the safetensors writer would lay the
 * same tensors out in (safetensorsOrder), whatever order torch.save put the storages in: the GGUF is
 * then the one the equivalent safetensors file gives, byte for byte.
 */
function orderedJobs(
  specs: readonly PlannedTensor[],
  weights: SafetensorsHeader | TorchBinScan,
): ConvertJob[] {
  if ('dataOffset' in weights) {
    const infos = new Map(weights.tensors.map((t) => [t.name, t]));
    const jobs = specs.map((t) => {
      const st = infoOf(infos, t.source);
      return jobOf(t, st, { st }, st.begin);
    });
    return jobs.sort((x, y) => x.begin - y.begin);
  }
  const byName = new Map(weights.tensors.map((t) => [t.name, t]));
  const rank = new Map(safetensorsOrder(weights.tensors).map((t, i) => [t.name, i]));
  const jobs = specs.map((t) => {
    const bin = byName.get(t.source);
    if (!bin) throw new CodiError('INTERNAL', `tensor ${t.source} vanished from the scan`);
    // verification let F32, F16 and BF16 through only: safetensors dtypes of the same names
    const info = { name: bin.name, dtype: bin.dtype as SafetensorsDtype, shape: bin.shape };
    return jobOf(t, info, { bin }, rank.get(t.source) ?? 0);
  });
  return jobs.sort((x, y) => x.begin - y.begin);
}

function jobOf(t: PlannedTensor, info: TensorInfo, from: ConvertJob['from'], begin: number): ConvertJob {
  return {
    spec: t.spec,
    transpose: t.transpose,
    factor: t.factor,
    permuteHeads: t.permuteHeads,
    info,
    from,
    begin,
    numel: info.shape.reduce((a, b) => a * b, 1),
  };
}

/** The one read of the weights: the safetensors pass, or the `.bin` pass, behind one face. */
interface Pass {
  read(job: ConvertJob): Promise<Uint8Array>;
  range(job: ConvertJob): FileRange | null;
  finish(before: FileIdentity | null): Promise<void>;
  close(): Promise<void>;
}

async function openPass(source: WeightsSource, hash: PassHash, jobs: readonly ConvertJob[]): Promise<Pass> {
  const { weights, path } = source;
  if ('dataOffset' in weights) {
    const pass = await WeightsPass.begin(path, weights, hash, Math.max(0, ...jobs.map(byteSize)));
    const st = (job: ConvertJob): SafetensorsTensorInfo => {
      if (!('st' in job.from))
        throw new CodiError('INTERNAL', `${job.info.name} is not a safetensors tensor`);
      return job.from.st;
    };
    return {
      read: (job) => Promise.resolve(pass.read(st(job))),
      range: (job) => pass.range(st(job)),
      finish: (before) => pass.finish(before),
      close: () => pass.close(),
    };
  }
  const pass = await BinPass.begin(path, weights, hash, (how) => sourceChanged(path, how));
  const buffer = new Uint8Array(Math.max(0, ...jobs.map(byteSize)));
  return {
    read: (job) => {
      if (!('bin' in job.from)) throw new CodiError('INTERNAL', `${job.info.name} is not a .bin tensor`);
      return pass.tensor(job.from.bin, buffer);
    },
    range: (job) => ('bin' in job.from ? pass.range(job.from.bin) : null),
    finish: async (before) => {
      await pass.finish(before);
      hash.finish();
    },
    close: () => pass.close(),
  };
}

function byteSize(job: ConvertJob): number {
  return job.numel * (job.info.dtype === 'F32' ? 4 : 2);
}

/** The GGUF's key/value pairs: an adapter of the base's architecture, and where it came from. */
function adapterKv(input: WriteInput): [string, GgufTypedValue][] {
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
  const alora = aloraOf(input.metadata);
  if (alora) {
    kv.push([ALORA_INVOCATION_KEY, gv.array(GgufValueType.UINT32, Uint32Array.from(alora.written))]);
  }
  return kv;
}

/** F32 in and F32 out with nothing to change: the bytes go through as they are. */
function isPassThrough(job: ConvertJob): boolean {
  return (
    !job.transpose &&
    job.permuteHeads === null &&
    job.factor === 1 &&
    job.info.dtype === 'F32' &&
    job.spec.type === GgmlType.F32
  );
}

/** What a job needs to know of its source tensor, whichever file holds it. */
interface TensorInfo {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
}

interface ConvertJob {
  spec: GgufTensorSpec;
  info: TensorInfo;
  /** the tensor as the weights file has it: a safetensors entry, or a `.bin` tensor */
  from: { st: SafetensorsTensorInfo } | { bin: PickleTensor };
  /** where its data is read in the pass: its offset in the file, or its rank in the read order */
  begin: number;
  numel: number;
  transpose: boolean;
  factor: number;
  permuteHeads: number | null;
}

/** One tensor's safetensors bytes as the GGUF tensor `job.spec` wants them. */
function convertTensor(job: ConvertJob, bytes: Uint8Array, scratch: Float32Array): Uint8Array | Float32Array {
  const type = GGML_TYPE_OF_DTYPE[job.info.dtype];
  if (type === undefined)
    throw new CodiError('TENSOR_DTYPE', `${job.info.name} is ${job.info.dtype}: cannot convert`);
  if (isPassThrough(job)) return bytes;
  // F32 is used where it lies (the bytes are the pass's own buffer, already hashed); others decode
  let values =
    type === GgmlType.F32 && bytes.byteOffset % 4 === 0
      ? new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4)
      : decodeToF32(type, bytes, scratch.subarray(0, bytes.length / (type === GgmlType.F32 ? 4 : 2)));
  const [rows = 0, cols = 0] = job.info.shape;
  if (job.transpose) values = transpose(values, rows, cols);
  if (job.permuteHeads !== null) values = permuteRopeRows(values, rows, cols, job.permuteHeads);
  if (job.factor !== 1) {
    const f = job.factor;
    for (let k = 0; k < values.length; k++) values[k] = (values[k] ?? 0) * f;
  }
  return values;
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
