/**
 * PEFT LoRA tensors against their config: names, pairing, shapes, ranks and targets. Works on
 * names/dtypes/shapes only, so the same checks serve safetensors headers and scanned `.bin` pickles.
 */
import type { Code } from './codes.js';
import { CappedFindings, finding, type Finding } from './findings.js';
import {
  ALL_LINEAR,
  CONFIG_FILE,
  isEmbeddingLayer,
  layerIndexOf,
  matchingTargets,
  patternMatches,
  patternRuleConflicts,
  rankFor,
  targetsModule,
  type LoraConfig,
  type PatternRuleConflict,
  type PatternRules,
} from './peft-config.js';

export interface TensorDescriptor {
  name: string;
  dtype: string;
  shape: number[];
}

export interface LoraModule {
  /** base-model module path, e.g. `model.layers.0.self_attn.q_proj` */
  module: string;
  kind: 'linear' | 'embedding';
  a: TensorDescriptor;
  b: TensorDescriptor;
  rank: number;
  /** in_features (linear) or num_embeddings (embedding) */
  inFeatures: number;
  /** out_features (linear) or embedding_dim (embedding) */
  outFeatures: number;
}

export interface TensorStats {
  count: number;
  parameters: number;
  /** tensors per dtype */
  dtypes: Record<string, number>;
  /** modules per rank */
  ranks: Record<string, number>;
  /** distinct module kinds, e.g. q_proj */
  modules: string[];
  layers: number[];
}

export interface TensorAnalysis {
  /** the modules whose A/B pair is complete and well-shaped */
  modules: LoraModule[];
  /** LoRA modules named in the file, paired or not (what the summary and the stats describe) */
  found: number;
  stats: TensorStats;
  findings: Finding[];
}

export const PEFT_PREFIX = 'base_model.model.';
const FLOAT_DTYPES = new Set(['F32', 'F16', 'BF16']);

type Role = 'A' | 'B';
const SUFFIXES: [suffix: string, kind: LoraModule['kind'], role: Role][] = [
  ['.lora_A.weight', 'linear', 'A'],
  ['.lora_B.weight', 'linear', 'B'],
  ['.lora_embedding_A', 'embedding', 'A'],
  ['.lora_embedding_B', 'embedding', 'B'],
];

/** Splits a PEFT tensor name into module, kind and role; null when it is not a LoRA A/B tensor. */
export function parsePeftName(name: string): { module: string; kind: LoraModule['kind']; role: Role } | null {
  if (!name.startsWith(PEFT_PREFIX)) return null;
  for (const [suffix, kind, role] of SUFFIXES) {
    if (name.endsWith(suffix) && name.length > PEFT_PREFIX.length + suffix.length) {
      return { module: name.slice(PEFT_PREFIX.length, -suffix.length), kind, role };
    }
  }
  return null;
}

function numel(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

export function analyzeTensors(
  tensors: TensorDescriptor[],
  config: LoraConfig | null,
  file: string,
): TensorAnalysis {
  // capped as they arrive: a hostile header can make one finding per tensor
  const findings = new CappedFindings();
  const report: Report = {
    raise: (code, message, hint) => {
      findings.push(finding(code, message, file, hint === undefined ? {} : { hint }));
    },
    finding: (f) => {
      findings.push(f);
    },
  };
  const halves = collectHalves(tensors, report);
  const modules = pairModules(halves, report);
  if (config) checkAgainstConfig(config, halves, modules, report);
  const stats = describeHalves(tensors, halves, config);
  if (tensors.length === 0) report.raise('TENSOR_NONE', 'the weights file holds no tensors');
  return { modules, found: halves.size, stats, findings: findings.list() };
}

interface Report {
  /** a finding of `code` about the weights file, at its code's level */
  raise(code: Code, message: string, hint?: string): void;
  finding(f: Finding): void;
}

type Halves = Map<string, { kind: LoraModule['kind']; A?: TensorDescriptor; B?: TensorDescriptor }>;

/** The LoRA A and B tensors of each module, in header order; every other tensor is an error. */
function collectHalves(tensors: readonly TensorDescriptor[], report: Report): Halves {
  const halves: Halves = new Map();
  for (const t of tensors) {
    if (!FLOAT_DTYPES.has(t.dtype)) {
      report.raise('TENSOR_DTYPE', `${t.name} is ${t.dtype}: LoRA weights must be F32, F16 or BF16`);
    }
    const parsed = parsePeftName(t.name);
    if (!parsed) {
      const copy = embeddingCopyOf(t.name);
      if (copy !== null) {
        report.raise(
          'TENSOR_EMBEDDING_COPY',
          `${t.name} is PEFT's copy of ${copy}'s base weight (saved because ${copy} is targeted): skipped, as llama.cpp's converter skips it; the base model's own weight is used`,
        );
        continue;
      }
      const { code, message, hint } = misnamed(t.name);
      report.raise(code, message, hint);
      continue;
    }
    const entry = halves.get(parsed.module) ?? { kind: parsed.kind };
    if (entry.kind !== parsed.kind) {
      report.raise('TENSOR_NAME', `${parsed.module} has both linear and embedding LoRA tensors`);
      continue;
    }
    if (entry[parsed.role]) {
      report.raise('TENSOR_DUPLICATE', `${parsed.module} has more than one lora_${parsed.role}`);
      continue;
    }
    entry[parsed.role] = t;
    halves.set(parsed.module, entry);
  }
  return halves;
}

const BASE_LAYER_WEIGHT = '.base_layer.weight';

/**
 * The module of a `<embedding layer>.base_layer.weight` tensor: the unchanged base weight of a
 * LoRA-wrapped embedding or output head, which PEFT's `save_embedding_layers` writes whenever one is
 * targeted. null for any other name.
 */
export function embeddingCopyOf(name: string): string | null {
  if (!name.startsWith(PEFT_PREFIX) || !name.endsWith(BASE_LAYER_WEIGHT)) return null;
  const module = name.slice(PEFT_PREFIX.length, -BASE_LAYER_WEIGHT.length);
  return module.length > 0 && isEmbeddingLayer(module) ? module : null;
}

/** Why a tensor that is not a LoRA A/B matrix is in the file, as far as its name tells. */
function misnamed(name: string): { code: Code; message: string; hint?: string } {
  if (name.endsWith('.trainable_tokens_delta')) {
    return {
      code: 'TENSOR_UNSUPPORTED',
      message: `${name} holds trained token rows (trainable_token_indices): they replace rows of the embedding, which a llama.cpp LoRA adapter cannot carry`,
    };
  }
  if (
    name.startsWith(PEFT_PREFIX) &&
    name.endsWith('.weight') &&
    isEmbeddingLayer(name.slice(PEFT_PREFIX.length, -'.weight'.length))
  ) {
    return {
      code: 'TENSOR_UNEXPECTED',
      message: `${name} is a full ${name.includes('lm_head') ? 'output head' : 'embedding'} weight (a resized vocabulary, or modules_to_save): a llama.cpp LoRA adapter cannot carry it`,
    };
  }
  if (name.includes('lora_magnitude_vector')) {
    return {
      code: 'TENSOR_UNSUPPORTED',
      message: `${name} is a DoRA magnitude vector: DoRA adapters cannot be served by llama.cpp`,
    };
  }
  if (/\.lora_[AB]\.bias$/u.test(name)) {
    return {
      code: 'TENSOR_UNSUPPORTED',
      message: `${name} is a lora_B bias (lora_bias): llama.cpp LoRA adapters have no bias term`,
    };
  }
  if (/\.lora_[AB]\.[^.]+\.weight$/u.test(name)) {
    return {
      code: 'TENSOR_NAME',
      message: `${name} carries an adapter name; PEFT's save_pretrained writes names without it`,
      hint: 'save the adapter with PeftModel.save_pretrained',
    };
  }
  if (!name.startsWith(PEFT_PREFIX)) {
    return {
      code: 'TENSOR_NAME',
      message: `${name} does not start with "${PEFT_PREFIX}": not a PEFT adapter tensor name`,
    };
  }
  return {
    code: 'TENSOR_UNEXPECTED',
    message: `${name} is not a LoRA A/B matrix (a full weight from modules_to_save, or a trained bias?)`,
  };
}

/** The modules whose A and B pair up into one LoRA, in code-point order of their names. */
function pairModules(halves: Halves, report: Report): LoraModule[] {
  const modules: LoraModule[] = [];
  for (const [module, h] of halves) {
    if (!h.A || !h.B) {
      const have = h.A ? 'lora_A' : 'lora_B';
      const missing = h.A ? 'lora_B' : 'lora_A';
      report.raise('TENSOR_UNPAIRED', `${module} has ${have} but no ${missing}`);
      continue;
    }
    const { A, B } = h;
    if (A.shape.length !== 2 || B.shape.length !== 2) {
      report.raise(
        'TENSOR_SHAPE',
        `${module}: lora_A ${fmt(A.shape)} and lora_B ${fmt(B.shape)} must both be 2-D`,
      );
      continue;
    }
    const [aRows = 0, aCols = 0] = A.shape;
    const [bRows = 0, bCols = 0] = B.shape;
    // linear: A [r, in], B [out, r]; embedding: A [r, num_embeddings], B [embedding_dim, r]
    if (aRows !== bCols) {
      report.raise(
        'TENSOR_SHAPE',
        `${module}: lora_A ${fmt(A.shape)} has rank ${aRows} but lora_B ${fmt(B.shape)} has rank ${bCols}`,
      );
      continue;
    }
    if (aRows === 0 || aCols === 0 || bRows === 0) {
      report.raise(
        'TENSOR_SHAPE',
        `${module}: empty LoRA matrix (lora_A ${fmt(A.shape)}, lora_B ${fmt(B.shape)})`,
      );
      continue;
    }
    modules.push({ module, kind: h.kind, a: A, b: B, rank: aRows, inFeatures: aCols, outFeatures: bRows });
  }
  // code-point order: `localeCompare(…, 'en')` builds an ICU collator per call, per module
  return modules.sort((x, y) => (x.module < y.module ? -1 : x.module > y.module ? 1 : 0));
}

/**
 * The tensors against the config: every module with a well-named LoRA tensor (`halves`, in header
 * order), paired or not, must be targeted; ranks as configured; every target and pattern used. A
 * module whose pair is broken is reported for that, not also as a target that matched nothing.
 */
function checkAgainstConfig(
  config: LoraConfig,
  halves: Halves,
  modules: readonly LoraModule[],
  report: Report,
): void {
  const matchedTargets = new Set<string>();
  for (const [module, { kind }] of halves) {
    if (!targetsModule(config, module, kind)) {
      const why =
        config.targets.kind === 'all-linear'
          ? 'target_modules is all-linear, which selects neither the output head nor embeddings (as in PEFT)'
          : 'target_modules does not select it';
      report.raise('TENSOR_UNTARGETED', `${module} has LoRA weights but ${why}: config and weights disagree`);
    }
    for (const t of matchingTargets(config, module, kind)) matchedTargets.add(t);
    if (kind === 'embedding' && config.aloraInvocationTokens) {
      report.raise(
        'TENSOR_ALORA_EMBEDDING',
        `${module} has an embedding LoRA in an activated LoRA: PEFT applies an embedding LoRA to every token, while llama-server applies the whole adapter only from the invocation on`,
      );
    }
  }
  for (const m of modules) {
    const expected = rankFor(config, m.module);
    if (m.rank !== expected) {
      report.raise(
        'TENSOR_RANK',
        `${m.module}: rank ${m.rank} (lora_A ${fmt(m.a.shape)}) but the config gives rank ${expected}` +
          (config.rankPattern.length > 0 ? ' (r and rank_pattern)' : ' (r)'),
      );
    }
  }
  const t = config.targets;
  const wanted = t.kind === 'list' ? t.names : t.kind === 'regex' ? [t.pattern] : [ALL_LINEAR];
  if (matchedTargets.size === 0 && halves.size > 0) {
    // what PEFT refuses too: not one module of the model would get this LoRA
    report.raise(
      'TARGET_NONE',
      `no entry of target_modules (${wanted.map((n) => JSON.stringify(n)).join(', ')}) matched any of the ${halves.size} LoRA modules in the file`,
    );
  } else {
    for (const name of wanted) {
      if (!matchedTargets.has(name)) {
        report.raise(
          'TARGET_UNMATCHED',
          `target module ${JSON.stringify(name)} matched no LoRA tensor: the adapter has no LoRA there (PEFT too lets an entry match nothing)`,
        );
      }
    }
  }
  for (const [key] of [...config.rankPattern, ...config.alphaPattern]) {
    let used = false;
    for (const module of halves.keys()) if ((used = patternMatches(key, module))) break;
    if (!used)
      report.raise('CONFIG_PATTERN_UNUSED', `rank/alpha pattern ${JSON.stringify(key)} matches no module`);
  }
  // config and module names alone decide it: verify says it with or without --base, and convert
  // passes it on among its warnings
  const conflict = patternConflictFinding(config, modules);
  if (conflict) report.finding(conflict);
}

/**
 * What the file holds, broken pairs included: the rank of a module is its lora_A's rows (its lora_B's
 * columns when it has no lora_A).
 */
function describeHalves(
  tensors: readonly TensorDescriptor[],
  halves: Halves,
  config: LoraConfig | null,
): TensorStats {
  const dtypes: Record<string, number> = {};
  let parameters = 0;
  for (const t of tensors) {
    dtypes[t.dtype] = (dtypes[t.dtype] ?? 0) + 1;
    parameters += numel(t.shape);
  }
  const ranks: Record<string, number> = {};
  const kinds = new Set<string>();
  const layers = new Set<number>();
  for (const [module, h] of halves) {
    const half = h.A ?? h.B;
    const rank = half?.shape.length === 2 ? half.shape[h.A ? 0 : 1] : undefined;
    if (rank !== undefined) ranks[String(rank)] = (ranks[String(rank)] ?? 0) + 1;
    kinds.add(module.slice(module.lastIndexOf('.') + 1));
    const layer = layerIndexOf(module, config?.layersPattern ?? null);
    if (layer !== null) layers.add(layer);
  }
  return {
    count: tensors.length,
    parameters,
    dtypes,
    ranks,
    modules: [...kinds].sort(),
    layers: [...layers].sort((a, b) => a - b),
  };
}

const RULES_NAME: Record<PatternRules, string> = {
  'peft-0.13': 'PEFT ≤ 0.13',
  'peft-0.14': 'PEFT 0.14',
  'peft-0.15': 'PEFT ≥ 0.15',
};

/**
 * A warning when the PEFT release that loads the adapter decides a module's scale (rank_pattern and
 * alpha_pattern keys that select it differently), and the config does not record that release: the
 * converted GGUF reproduces current PEFT, which is how every PEFT since 0.15 loads it. Only the
 * config and the modules' names and ranks decide it, so no base model is needed.
 */
function patternConflictFinding(config: LoraConfig, modules: readonly LoraModule[]): Finding | null {
  const conflicts = patternRuleConflicts(config, modules);
  const first = conflicts[0];
  if (!first) return null;
  const side = (s: PatternRuleConflict['used']): string =>
    `${RULES_NAME[s.rules]} gives rank ${s.rank}, alpha ${s.alpha}, scale ${s.scale}`;
  const more = conflicts.length > 1 ? ` (and ${conflicts.length - 1} more modules)` : '';
  return finding(
    'CONFIG_PATTERN_AMBIGUOUS',
    `${first.module}: ${side(first.used)}, but ${side(first.other)}${more}: rank_pattern and alpha_pattern select it differently across PEFT releases, and adapter_config.json has no peft_version; convert uses the ${RULES_NAME[first.used.rules]} scale`,
    CONFIG_FILE,
    { pointer: '/alpha_pattern' },
  );
}

function fmt(shape: number[]): string {
  return `[${shape.join(', ')}]`;
}
