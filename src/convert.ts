/**
 * `convert`: a PEFT LoRA (safetensors, or a `.bin` read without unpickling) → a llama.cpp GGUF LoRA
 * adapter, natively and air-gapped. The architecture and shapes come from the base GGUF; the adapter
 * is verified first (fail closed).
 */
import { createHash } from 'node:crypto';
import { beginSha256 } from './checksum.js';
import { PassHash } from './convert-pass.js';
import type { Stats } from 'node:fs';
import { lstat, readdir, realpath, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve, sep } from 'node:path';
import { checkCompatibility, readBaseModel, type BaseModel, type PlannedModule } from './base-model.js';
import { identityAt, type FileIdentity } from './byte-source.js';
import {
  cachedOrWritten,
  passes,
  writeEntry,
  type GgufProof,
  type PassResult,
  type PassTarget,
} from './convert-cache.js';
import { checkBaseIdentity } from './base-identity.js';
import { CodiError } from './errors.js';
import { GgufValueType, gv, type GgufTypedValue } from './formats/ggml-types.js';
import { compareGguf, writeGguf, type GgufTensorSpec, type TensorPayload } from './files/gguf-writer.js';
import { cacheFileName, defaultCacheLocations, type CacheLocations } from './gguf-cache.js';
import type { SafetensorsHeader } from './formats/safetensors.js';
import type { TorchBinScan } from './formats/torch-bin.js';
import { openReader, orderedJobs } from './convert-reader.js';
import { largestDecoded, payloadOf, plannedTensors, type PlannedTensor } from './convert-tensors.js';
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

export interface ConvertOptions {
  base: string;
  out?: string;
  outtype?: OutType;
  /** rebuild even when the cache has this conversion */
  force?: boolean;
  /** where the base model's sha256 is cached (default: CODI_STATE_DIR, else run's default) */
  stateDir?: string;
  onHashProgress?: (p: VerifyProgress) => void;
  /** where cached GGUFs are looked for and written (default: `defaultCacheLocations`) */
  cache?: CacheLocations;
  /** stops the conversion between tensors; nothing is committed */
  signal?: AbortSignal;
  /**
   * fsync a new cache entry before it is renamed into place (mount --base: the volume may be served
   * after a crash or on another machine). Otherwise a cache entry is left for the kernel to write back:
   * every use proves it by content first, so one a crash left short is rebuilt. --out is always fsynced.
   */
  durable?: boolean;
  /** the adapter must be signed by one of these keys (run's ADAPTER_TRUST_KEYS) */
  trust?: TrustedKeys;
}

export type { GgufProof } from './convert-cache.js';

export interface ConvertResult {
  output: string;
  /** a cache entry was used: proven by content, not written */
  cached: boolean;
  proof: GgufProof;
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
 * never produces a GGUF. Without --out, a cache entry found anywhere is used only once a pass has
 * proven it is exactly what this conversion writes (the same pass verifies the weights).
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
  // the GGUF's tensors follow from the plan alone, so a cached result reports what a rebuild would
  const tensors = plannedTensors(plan, outtype);

  const about = described(adapter, weightsSha256, base, plan);
  const cacheFindings: Finding[] = [];
  const result = (output: string, bytes: number, proof: GgufProof): ConvertResult => ({
    output,
    cached: proof.kind === 'compared',
    proof,
    adapter: about.adapter,
    base: about.base,
    outtype,
    alpha: ggufAlpha,
    tensors: tensors.specs.length,
    folded: about.folded,
    alora: aloraOf(adapter),
    f16Fallback: tensors.f16Fallback,
    warnings: [...warnings, ...cacheFindings],
    // set once the verification is finished, which every result waits for
    signedBy: adapter.signature?.ok ? (adapter.signature.signer?.fingerprint ?? null) : null,
    bytes,
    durationMs: Math.round(nowMs() - started),
  });
  const source = {
    path: join(adapter.layout.dir, weightsFile),
    weights,
    before: before[weightsFile] ?? null,
  };
  const input = { base, tensors, ggufAlpha, metadata: adapter, weightsSha256 };
  const pass = passes(
    (target, hash) => adapterPass(source, target, input, hash, verifiedReport, options.signal),
    passHash,
    weightsSha256,
    source.path,
  );
  if (options.out) {
    const written = await writeEntry(resolve(options.out), pass, true);
    return result(written.path, written.bytes, { kind: 'written', identity: written.identity });
  }
  const name = cacheFileName(adapter.layout.dir, weightsSha256, key, outtype);
  const locations = options.cache ?? defaultCacheLocations(adapter.layout.dir);
  const entry = await cachedOrWritten(name, locations, pass, cacheFindings, {
    force: options.force === true,
    durable: options.durable === true,
  });
  return result(entry.path, entry.bytes, entry.proof);
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
      p.tensorRank,
      p.fold,
      p.permuteHeads,
      p.expert,
    ]),
  };
  return createHash('sha256').update(JSON.stringify(parts)).digest('hex');
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

/**
 * One pass over the weights producing the GGUF: written at `target.path`, or compared with
 * `target.file` (the proof that a cached file is this conversion). Either way every byte of the
 * weights is hashed once, the file must be unchanged at the end, and the last tensor waits for the
 * verification (`gate`): a GGUF is committed, or a cached one proven, only for a verified adapter.
 */
async function adapterPass<T extends PassTarget>(
  source: WeightsSource,
  target: T,
  input: WriteInput,
  /** fed every byte of the weights file, in order */
  hash: PassHash,
  /** resolves once the adapter is fully verified (throws if not): the commit waits for it */
  gate: () => Promise<unknown>,
  /** stops the pass between tensors (nothing is committed) */
  signal: AbortSignal | undefined,
): Promise<PassResult<T>> {
  const jobs = await orderedJobs(input.tensors.specs, source.weights);
  if (jobs.length === 0) await gate();
  // one buffer for every tensor that needs converting: the writer has encoded a payload before it
  // asks for the next
  const scratch = new Float32Array(Math.max(0, ...jobs.map(largestDecoded)));
  trace(target.kind === 'write' ? 'convert: writing' : 'convert: comparing with the cache');
  await pausePoint('convert:before-pass');
  const reader = await openReader(source.path, source.weights, hash, jobs);
  const options = {
    metadata: adapterKv(input),
    tensors: jobs.map((j) => j.spec),
    ...(target.kind === 'write' ? { durable: target.durable } : {}),
  };
  const data = async (_spec: GgufTensorSpec, i: number): Promise<TensorPayload> => {
    signal?.throwIfAborted();
    const job = jobs[i];
    if (!job) throw new CodiError('INTERNAL', `no job for tensor ${i}`);
    // crash-safety tests stop here: the temp file exists, half of the tensors are handed over
    if (i === jobs.length >> 1) await pausePoint('convert:writing');
    if (i < jobs.length - 1) return payloadOf(job, reader, scratch);
    const payload = await payloadOf(job, reader, scratch, true);
    await reader.finish(source.before);
    // then the checksums: the GGUF is committed only for a verified adapter
    trace('convert: all read, waiting for the checksums');
    await gate();
    trace('convert: verified');
    return payload;
  };
  try {
    const result =
      target.kind === 'write'
        ? await writeGguf(target.path, options, data)
        : await compareGguf(target.file, options, data);
    trace(target.kind === 'write' ? 'convert: committed' : 'convert: compared');
    return result as PassResult<T>;
  } finally {
    await reader.close();
  }
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
