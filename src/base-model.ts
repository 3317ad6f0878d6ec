/**
 * The base model GGUF as the converter and `verify --base` need it: architecture, tensor shapes,
 * tied embeddings. Only the header is read, so a multi-GB base costs nothing.
 */
import { stat } from 'node:fs/promises';
import type { Code } from './codes.js';
import { CodiError, environmentError, ExitCode, isCodiError, lifted } from './errors.js';
import { finding, findingFromError, type Finding } from './findings.js';
import { getNumber, getString, torchShape, type GgufFile } from './formats/gguf.js';
import { readGgufHeader } from './files/gguf.js';
import { ARCH_NAMES, archKey, archOf, isArchName, type ArchName, type ArchTensor } from './arch.js';
import { adaptedTensor, isOtherTower, type AdaptedTensor } from './gguf-names.js';
import { CONFIG_FILE, rankAndAlpha, scaleFor, type LoraConfig } from './peft-config.js';
import type { LoraModule } from './peft-tensors.js';
import type { AdapterMetadata } from './metadata.js';
import { checkBaseIdentity } from './base-identity.js';

export interface BaseModel {
  path: string;
  arch: ArchName;
  name: string | null;
  /** tensor name → PyTorch-order shape */
  shapes: Map<string, number[]>;
  /** no `output.weight`: the output head reuses `token_embd.weight` */
  tiedEmbeddings: boolean;
  headCount: number;
  headCountKv: number;
}

/**
 * Reads the base GGUF. A missing or unreadable file is an environment error (exit 3); a file that is
 * not a usable base model is an invalid-input error with a GGUF_* or BASE_* code.
 */
export async function readBaseModel(path: string): Promise<BaseModel> {
  try {
    const st = await stat(path);
    if (!st.isFile())
      throw new CodiError('PATH_NOT_FILE', `base model ${path} is not a file`, { file: path });
  } catch (e) {
    if (isCodiError(e)) throw e;
    throw environmentError(e, path, 'read');
  }
  let gguf;
  try {
    // the vocabulary (hundreds of thousands of strings in a real model) is not needed here
    gguf = await readGgufHeader(path, {}, { arrays: 'skip' });
  } catch (e) {
    if (isCodiError(e)) throw e.withFile(path);
    throw e;
  }
  return lifted(() => baseModelOf(path, gguf), path);
}

/** What the base's header says, or why it is not a base model codi-adapter can use. */
function baseModelOf(path: string, gguf: GgufFile): BaseModel {
  const type = getString(gguf, 'general.type');
  if (type === 'adapter') {
    throw new CodiError(
      'BASE_NOT_MODEL',
      `${path} is a ${getString(gguf, 'adapter.type') ?? ''} adapter GGUF, not a base model`,
      {
        file: path,
        hint: 'pass the base model GGUF (e.g. qwen2.5-coder-1.5b.gguf) as --base',
      },
    );
  }
  const arch = getString(gguf, 'general.architecture');
  if (arch === undefined) {
    throw new CodiError('BASE_NOT_MODEL', `${path} has no general.architecture: not a llama.cpp model`, {
      file: path,
    });
  }
  if (!isArchName(arch)) {
    throw new CodiError(
      'BASE_ARCH_UNSUPPORTED',
      `base architecture ${JSON.stringify(arch)} is not supported (supported: ${ARCH_NAMES.join(', ')})`,
      { file: path },
    );
  }
  const shapes = new Map(gguf.tensors.map((t) => [t.name, torchShape(t)]));
  if (!shapes.has('token_embd.weight')) {
    throw new CodiError(
      'BASE_NOT_MODEL',
      `${path} has no token_embd.weight: not a complete model (vocab-only GGUF?)`,
      {
        file: path,
      },
    );
  }
  const headCountKey = archKey(arch, HEAD_COUNT);
  const headCount = getNumber(gguf, headCountKey);
  if (headCount === undefined || headCount <= 0) {
    throw new CodiError('BASE_NOT_MODEL', `${path} has no ${headCountKey}`, { file: path });
  }
  const output = archOf(arch).output;
  const hasOutput = shapes.has(OUTPUT);
  // llama.cpp refuses both at load time, whatever the adapter
  if (output === 'required' && !hasOutput) {
    throw new CodiError(
      'BASE_NOT_MODEL',
      `${path} has no ${OUTPUT}, which llama.cpp's ${arch} architecture requires`,
      { file: path },
    );
  }
  if (output === 'tied' && hasOutput) {
    throw new CodiError(
      'BASE_NOT_MODEL',
      `${path} has an ${OUTPUT}, which llama.cpp's ${arch} architecture never loads (its output head is token_embd.weight)`,
      { file: path },
    );
  }
  return {
    path,
    arch,
    name: getString(gguf, 'general.name') ?? null,
    shapes,
    tiedEmbeddings: !hasOutput,
    headCount,
    headCountKv: getNumber(gguf, archKey(arch, HEAD_COUNT_KV)) ?? headCount,
  };
}

const OUTPUT = 'output.weight';
const HEAD_COUNT = 'attention.head_count';
const HEAD_COUNT_KV = 'attention.head_count_kv';

/** One LoRA module as it will be written: where it goes and how its scale is made exact. */
export interface PlannedModule {
  module: LoraModule;
  /** the base tensor it adapts, e.g. `blk.0.attn_q.weight` */
  target: string;
  rank: number;
  alpha: number;
  /** PEFT's scale for this module */
  scale: number;
  /**
   * The rank llama.cpp sees (lora_b's first dimension): the module's own, or for experts stacked
   * into one tensor, the largest of theirs (the others are padded with zeros up to it).
   */
  tensorRank: number;
  /** factor folded into lora_b so that llama.cpp's alpha/rank gives exactly `scale` */
  fold: number;
  /** lora_b rows are permuted like the base weight was (llama q/k), with this many heads */
  permuteHeads: number | null;
  /** one expert of a stacked tensor: its place and the number of experts the tensor stacks */
  expert: { index: number; count: number } | null;
}

export interface CompatibilityResult {
  findings: Finding[];
  plan: PlannedModule[];
  /** the single `adapter.lora.alpha` written to the GGUF */
  ggufAlpha: number;
}

/**
 * Every check the converter makes against the base, as findings (`verify --base` writes nothing).
 * llama.cpp applies `alpha/rank` per tensor with one alpha for the whole file; we pick that alpha so
 * the common case needs no folding and fold the remaining ratio into lora_b.
 */
export function checkCompatibility(
  base: BaseModel,
  config: LoraConfig,
  modules: LoraModule[],
  file: string,
): CompatibilityResult {
  const findings: Finding[] = [];
  const rsFactor = config.useRslora ? Math.sqrt(config.r) : 1;
  let ggufAlpha = Math.fround(config.loraAlpha * rsFactor);
  // llama.cpp reads alpha 0 as "no scaling"; any other non-zero value works once the rest is folded
  if (ggufAlpha === 0 || !Number.isFinite(ggufAlpha)) ggufAlpha = config.r;

  const plan: PlannedModule[] = [];
  const skipped: string[] = [];
  for (const m of modules) {
    if (isOtherTower(base.arch, m.module)) {
      skipped.push(m.module);
      continue;
    }
    const placed = placeModule(base, m);
    if ('code' in placed) {
      const { code, message, hint } = placed;
      findings.push(finding(code, message, file, hint === undefined ? {} : { hint }));
      continue;
    }
    const scale = scaleFor(config, m.module);
    const { rank, alpha } = rankAndAlpha(config, m.module);
    plan.push({
      module: m,
      target: placed.target,
      rank,
      alpha,
      scale,
      tensorRank: m.rank,
      fold: 1,
      permuteHeads: placed.permuteHeads,
      expert: placed.expert,
    });
  }
  if (skipped.length > 0) {
    findings.push(
      finding(
        'BASE_OTHER_TOWER_SKIPPED',
        `${skipped.length} LoRA module${skipped.length === 1 ? '' : 's'} of another tower (${skipped.slice(0, 3).join(', ')}${skipped.length > 3 ? ', …' : ''}): the ${base.arch} GGUF is the text model only, so they are left out`,
        file,
      ),
    );
  }
  // experts stacked into one tensor share one rank: the largest of theirs
  const stackedRank = new Map<string, number>();
  for (const p of plan) {
    if (p.expert) stackedRank.set(p.target, Math.max(stackedRank.get(p.target) ?? 0, p.module.rank));
  }
  const embeddingFactor = unscaledEmbeddingFactor(base, config);
  for (const p of plan) {
    p.tensorRank = stackedRank.get(p.target) ?? p.module.rank;
    // llama.cpp divides by the rank it sees in lora_b, i.e. the tensor rank
    p.fold = p.scale / (ggufAlpha / p.tensorRank);
    if (p.module.kind === 'embedding') p.fold *= embeddingFactor;
  }
  const outside = invocationOutsideVocab(base, config);
  if (outside) findings.push(outside);
  return { findings, plan, ggufAlpha };
}

/**
 * What an embedding LoRA's delta is multiplied by so that llama.cpp, which scales the embedding's
 * output by sqrt(hidden) after adding the delta, gives what PEFT trained: 1, unless the architecture
 * scales inside the embedding module and a PEFT older than 0.18 added the delta unscaled (a config
 * without `peft_version` is older: PEFT writes it since 0.18).
 */
function unscaledEmbeddingFactor(base: BaseModel, config: LoraConfig): number {
  if (!archOf(base.arch).scaledEmbedding) return 1;
  // PEFT writes versions such as 0.18.0 and 0.20.1.dev0: major and minor decide
  const m = config.peftVersion === null ? null : /^v?(\d+)\.(\d+)/u.exec(config.peftVersion.trim());
  if (m && (Number(m[1]) > 0 || Number(m[2]) >= 18)) return 1;
  const hidden = base.shapes.get('token_embd.weight')?.[1] ?? 1;
  return 1 / Math.sqrt(hidden);
}

/** An activated LoRA whose invocation token ids the base's vocabulary lacks: it could never start. */
function invocationOutsideVocab(base: BaseModel, config: LoraConfig): Finding | null {
  const nVocab = base.shapes.get('token_embd.weight')?.[0];
  const outside = (config.aloraInvocationTokens ?? []).filter((t) => nVocab !== undefined && t >= nVocab);
  if (outside.length === 0) return null;
  return finding(
    'BASE_ALORA_TOKENS',
    `alora_invocation_tokens ${outside.join(', ')} ${outside.length === 1 ? 'is' : 'are'} not in the base model's vocabulary of ${String(nVocab)} tokens: the adapter would never activate`,
    CONFIG_FILE,
    { pointer: '/alora_invocation_tokens' },
  );
}

interface Refusal {
  code: Code;
  message: string;
  /** more specific than the code's own */
  hint?: string;
}

interface Placed {
  target: string;
  permuteHeads: number | null;
  expert: PlannedModule['expert'];
}

/** Where a LoRA module goes in the base (its tensor, and how its rows are permuted), or why it cannot. */
function placeModule(base: BaseModel, m: LoraModule): Placed | Refusal {
  const adapted = adaptedTensor(base.arch, m.module);
  if (!adapted) {
    return {
      code: 'BASE_UNMAPPED_MODULE',
      message: `${m.module}: llama.cpp's ${base.arch} architecture has no tensor this LoRA could adapt`,
    };
  }
  const target = adapted.name;
  if (adapted.tensor.role === 'output' && base.tiedEmbeddings) {
    return {
      code: 'BASE_TIED_LM_HEAD',
      message: `${m.module} has a LoRA but the base model ties its output head to token_embd.weight: llama.cpp has no separate output tensor to adapt`,
      hint: `train the adapter without ${m.module} in target_modules`,
    };
  }
  if (m.kind === 'embedding' && base.tiedEmbeddings) {
    return {
      code: 'BASE_TIED_EMBEDDINGS',
      message: `${m.module} has a LoRA but the base model ties its output head to token_embd.weight: llama.cpp would apply the embedding LoRA to the output head as well (and fails on it)`,
      hint: `train the adapter without ${m.module.split('.').at(-1) ?? m.module} in target_modules, or use a base with untied embeddings`,
    };
  }
  const shaped = shapeProblem(base, m, adapted);
  if (typeof shaped === 'string') return { code: 'BASE_INCOMPATIBLE', message: shaped };
  const permuteHeads = ropePermutedHeads(base, adapted.tensor);
  const split = permuteHeads === null ? null : headSplitProblem(m.outFeatures, permuteHeads);
  if (split !== null) {
    const key = archKey(base.arch, adapted.tensor.heads === 'kv' ? HEAD_COUNT_KV : HEAD_COUNT);
    return {
      code: 'BASE_INCOMPATIBLE',
      message: `${target} (for ${m.module}): llama.cpp permutes ${base.arch} q/k rows per RoPE head (${key} = ${permuteHeads}): ${split}`,
      hint: "check the base GGUF's attention head counts against its q/k weights",
    };
  }
  return { target, permuteHeads, expert: shaped };
}

/**
 * Why the base tensor does not fit the LoRA (a message), or, when it does, the expert's place in a
 * stacked tensor (null for any other tensor). llama.cpp checks an adapter's first two dimensions
 * only, so the number of experts is checked here: a LoRA for an expert the base does not have would
 * read past its tensors.
 */
function shapeProblem(
  base: BaseModel,
  m: LoraModule,
  adapted: AdaptedTensor,
): string | PlannedModule['expert'] {
  const target = adapted.name;
  const shape = base.shapes.get(target);
  // PyTorch orientation: linear weight [out, in]; embedding weight [num_embeddings, embedding_dim]
  const expected = m.kind === 'embedding' ? [m.inFeatures, m.outFeatures] : [m.outFeatures, m.inFeatures];
  const about = `${target} (for ${m.module})`;
  if (!shape) {
    return `${target} (for ${m.module}) does not exist in the base model; the adapter expects a tensor of shape [${expected.join(', ')}]`;
  }
  const stacked = adapted.expert !== null;
  // a weight of one output row may be stored as a vector (qwen2moe's shared expert gate): llama.cpp
  // reads [n] as [1, n]
  const own = stacked ? shape.slice(1) : shape.length === 1 ? [1, ...shape] : shape;
  if (own.length !== 2 || own[0] !== expected[0] || own[1] !== expected[1]) {
    const per = stacked ? ' per expert' : '';
    return `${about}: the adapter expects shape [${expected.join(', ')}]${per} but the base tensor is [${shape.join(', ')}]`;
  }
  if (adapted.expert === null) return null;
  const count = shape[0] ?? 0;
  if (adapted.expert >= count) {
    return `${about}: expert ${adapted.expert}, but the base has ${count} experts in this layer`;
  }
  return { index: adapted.expert, count };
}

/**
 * Why `rows` q/k rows cannot be split into `heads` RoPE heads of even size (llama.cpp's permutation
 * pairs the two halves of each head), or null when they can.
 */
export function headSplitProblem(rows: number, heads: number): string | null {
  if (!Number.isSafeInteger(heads) || heads <= 0) return `invalid head count ${heads}`;
  const headDim = rows / heads;
  if (!Number.isInteger(headDim)) return `cannot split ${rows} rows into ${heads} heads`;
  if (headDim % 2 !== 0) return `cannot split ${rows} rows into ${heads} heads of even size`;
  return null;
}

/**
 * The `--base` check for verify: a base that cannot be read as a model becomes a finding (exit 1);
 * a base path that does not exist was already an environment error (exit 3) before verify started.
 */
export function baseCheckFor(
  base: BaseModel | CodiError,
  /** `identity: false` leaves out the comparison with the recorded base (`mount --base --force` rebinds) */
  options: { stateDir?: string; identity?: boolean } = {},
): (adapter: {
  config: LoraConfig | null;
  modules: LoraModule[];
  layout: { weightsFile: string | null };
  metadata: AdapterMetadata | null;
}) => Promise<{ findings: Finding[]; summary: string }> {
  return async (adapter) => {
    if (base instanceof CodiError) {
      return { findings: [findingFromError(base, base.file ?? 'base')], summary: 'base model unusable' };
    }
    if (!adapter.config || !adapter.layout.weightsFile) {
      return { findings: [], summary: 'not checked: the adapter itself is unreadable' };
    }
    const compat = checkCompatibility(base, adapter.config, adapter.modules, adapter.layout.weightsFile);
    const identity =
      options.identity === false
        ? { findings: [], summary: '' }
        : await checkBaseIdentity(
            base.path,
            adapter.metadata,
            options.stateDir === undefined ? {} : { stateDir: options.stateDir },
          );
    return {
      findings: [...compat.findings, ...identity.findings],
      summary: `${base.arch}${base.name ? ` (${base.name})` : ''}: ${compat.plan.length}/${adapter.modules.length} modules map onto base tensors with matching shapes${identity.summary ? `; ${identity.summary}` : ''}`,
    };
  };
}

/** Reads the base for `--base`: environment errors are thrown, format errors are returned. */
export async function readBaseForCheck(path: string): Promise<BaseModel | CodiError> {
  try {
    return await readBaseModel(path);
  } catch (e) {
    if (e instanceof CodiError && e.exitCode !== ExitCode.ENVIRONMENT) return e;
    throw e;
  }
}

/**
 * How many RoPE heads the rows of `tensor` are permuted in, where the architecture's llama.cpp
 * converter permutes them (`Arch.permutesQk`); null where the rows keep the Hugging Face order.
 */
export function ropePermutedHeads(base: BaseModel, tensor: ArchTensor): number | null {
  if (!archOf(base.arch).permutesQk || tensor.heads === undefined) return null;
  return tensor.heads === 'q' ? base.headCount : base.headCountKv;
}

/**
 * HF → llama.cpp row order of a q/k projection: within each head, rows [first half | second half]
 * become interleaved pairs. `rows × cols` row-major; returns a new array.
 */
export function permuteRopeRows(src: Float32Array, rows: number, cols: number, heads: number): Float32Array {
  // the compatibility plan has refused such a base already; this guards other callers
  const problem = headSplitProblem(rows, heads);
  if (problem !== null) throw new CodiError('BASE_INCOMPATIBLE', problem);
  const headDim = rows / heads;
  const half = headDim / 2;
  const out = new Float32Array(src.length);
  for (let h = 0; h < heads; h++) {
    for (let j = 0; j < 2; j++) {
      for (let i = 0; i < half; i++) {
        const from = (h * headDim + j * half + i) * cols;
        const to = (h * headDim + 2 * i + j) * cols;
        out.set(src.subarray(from, from + cols), to);
      }
    }
  }
  return out;
}
