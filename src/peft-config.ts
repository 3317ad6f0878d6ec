/**
 * PEFT `LoraConfig` (adapter_config.json): parsing as PEFT writes it, and PEFT's own rules for which
 * modules are targeted and what rank, alpha and scale each module gets.
 */
import type { Code } from './codes.js';
import { CodiError } from './errors.js';
import { parseJson, StrictJsonError } from './formats/strict-json.js';
import { formatViolation, validateAgainst } from './schemas.js';
import { finding, type Finding } from './findings.js';

import { CONFIG_FILE } from './layout.js';
export { CONFIG_FILE };

export type TargetModules =
  | { kind: 'list'; names: string[] }
  | { kind: 'regex'; pattern: string; regex: RegExp }
  | { kind: 'all-linear' };

export interface LoraConfig {
  r: number;
  loraAlpha: number;
  useRslora: boolean;
  targets: TargetModules;
  /** PEFT keys (module-name suffixes or regexes), in file order: the first match wins, as in PEFT */
  rankPattern: [string, number][];
  alphaPattern: [string, number][];
  /** null also for an empty list, which PEFT reads as "every layer" */
  layersToTransform: number[] | null;
  /** null also for an empty one: any numbered segment then counts */
  layersPattern: string[] | null;
  /** how the layer index is found: by `peft_version`, else both rules (null) */
  layerRules: LayerRules | null;
  excludeModules: { kind: 'list'; names: string[] } | { kind: 'regex'; regex: RegExp } | null;
  baseModel: string | null;
  /** `peft_version` as PEFT (0.18 and later) records it, e.g. `0.18.0`; null when absent */
  peftVersion: string | null;
  /** how rank_pattern/alpha_pattern keys are matched: by `peft_version`, else current PEFT's rules */
  patternRules: PatternRules;
  /**
   * Activated LoRA (PEFT 0.18 and later): the token ids after whose last occurrence in the input, from
   * its first token on, the adapter applies; null for an ordinary LoRA
   */
  aloraInvocationTokens: number[] | null;
  /** the parsed JSON as written */
  raw: Record<string, unknown>;
}

export interface ParsedConfig {
  config: LoraConfig | null;
  findings: Finding[];
}

function err(code: Code, message: string, pointer?: string): Finding {
  return finding(code, message, CONFIG_FILE, pointer === undefined ? {} : { pointer });
}

/**
 * Parses adapter_config.json text. Schema problems and features llama.cpp cannot serve become
 * findings; the config is returned whenever it is usable for the tensor checks.
 */
export function parseLoraConfig(text: string): ParsedConfig {
  let data: unknown;
  try {
    data = parseJson(text);
  } catch (e) {
    if (!(e instanceof StrictJsonError)) throw e;
    return { config: null, findings: [err('CONFIG_JSON', `not valid JSON: ${e.message}`)] };
  }
  const findings: Finding[] = validateAgainst('adapter-config', data).map((v) =>
    err('CONFIG_INVALID', formatViolation(v), v.pointer),
  );
  if (findings.length > 0) return { config: null, findings };
  const raw = data as Record<string, unknown>;

  if (raw.peft_type !== 'LORA') {
    findings.push(
      err(
        'CONFIG_UNSUPPORTED',
        `peft_type is ${JSON.stringify(raw.peft_type)}: only LoRA adapters (peft_type "LORA") can be served by llama.cpp`,
        '/peft_type',
      ),
    );
  }
  for (const f of unsupportedFeatures(raw)) findings.push(f);
  for (const f of baseBoundFeatures(raw)) findings.push(f);

  const targets = targetModulesOf(raw, findings);
  if (!targets) return { config: null, findings };

  const rankPattern = Object.entries((raw.rank_pattern ?? {}) as Record<string, number>);
  const alphaPattern = Object.entries((raw.alpha_pattern ?? {}) as Record<string, number>);
  for (const [key] of [...rankPattern, ...alphaPattern]) {
    if (!patternRegex(key)) {
      findings.push(
        err('CONFIG_INVALID', `pattern key ${JSON.stringify(key)} is not a valid regular expression`),
      );
    }
  }

  const ltt = raw.layers_to_transform as number | number[] | null | undefined;
  const lp = raw.layers_pattern as string | string[] | null | undefined;
  const excludeModules = excludeModulesOf(raw, findings);

  const peftVersion = typeof raw.peft_version === 'string' ? raw.peft_version : null;
  const config: LoraConfig = {
    r: raw.r as number,
    loraAlpha: raw.lora_alpha as number,
    useRslora: raw.use_rslora === true,
    targets,
    rankPattern,
    alphaPattern,
    layersToTransform: ltt === null || ltt === undefined ? null : Array.isArray(ltt) ? nonEmpty(ltt) : [ltt],
    layersPattern: lp === null || lp === undefined || lp.length === 0 ? null : Array.isArray(lp) ? lp : [lp],
    layerRules: layerRulesOf(peftVersion),
    excludeModules,
    baseModel: typeof raw.base_model_name_or_path === 'string' ? raw.base_model_name_or_path : null,
    peftVersion,
    patternRules: patternRulesOf(peftVersion),
    aloraInvocationTokens: Array.isArray(raw.alora_invocation_tokens)
      ? (raw.alora_invocation_tokens as number[])
      : null,
    raw,
  };
  return { config, findings };
}

/** `target_modules`: a list, `all-linear`, or a regex; null (with a finding) for one that does not compile. */
function targetModulesOf(raw: Record<string, unknown>, findings: Finding[]): TargetModules | null {
  const tm = raw.target_modules as string | string[];
  if (Array.isArray(tm)) return { kind: 'list', names: tm };
  // PEFT compares the shorthand case-insensitively
  if (tm.toLowerCase() === ALL_LINEAR) return { kind: 'all-linear' };
  const regex = pythonFullMatch(tm);
  if (!regex) {
    findings.push(
      err('CONFIG_INVALID', `target_modules regex ${JSON.stringify(tm)} does not compile`, '/target_modules'),
    );
    return null;
  }
  return { kind: 'regex', pattern: tm, regex };
}

function excludeModulesOf(raw: Record<string, unknown>, findings: Finding[]): LoraConfig['excludeModules'] {
  const ex = raw.exclude_modules as string | string[] | null | undefined;
  if (typeof ex === 'string') {
    const regex = pythonFullMatch(ex);
    if (regex) return { kind: 'regex', regex };
    findings.push(err('CONFIG_INVALID', `exclude_modules regex ${JSON.stringify(ex)} does not compile`));
    return null;
  }
  return Array.isArray(ex) && ex.length > 0 ? { kind: 'list', names: ex } : null;
}

/** Config options that change the computation in ways a llama.cpp LoRA cannot express. */
function unsupportedFeatures(raw: Record<string, unknown>): Finding[] {
  const out: Finding[] = [];
  const unsupported = (pointer: string, message: string): void => {
    out.push(err('CONFIG_UNSUPPORTED', message, pointer));
  };
  if (raw.use_dora === true) {
    unsupported(
      '/use_dora',
      'use_dora is true: DoRA rescales every weight column by a learned magnitude vector, which a llama.cpp LoRA (W + s·B·A) cannot express',
    );
  }
  if (Array.isArray(raw.modules_to_save) && raw.modules_to_save.length > 0) {
    unsupported(
      '/modules_to_save',
      `modules_to_save lists ${raw.modules_to_save.map((m) => JSON.stringify(m)).join(', ')}: those are full replacement weights, not low-rank deltas, and a llama.cpp LoRA adapter cannot carry them`,
    );
  }
  if (raw.bias !== undefined && raw.bias !== null && raw.bias !== 'none') {
    unsupported(
      '/bias',
      `bias is ${JSON.stringify(raw.bias)}: trained bias vectors replace the base model's biases, and a llama.cpp LoRA adapter has no place for them`,
    );
  }
  if (raw.lora_bias === true) {
    unsupported('/lora_bias', 'lora_bias is true: llama.cpp LoRA adapters have no bias term on lora_B');
  }
  if (raw.fan_in_fan_out === true) {
    unsupported(
      '/fan_in_fan_out',
      'fan_in_fan_out is true (GPT-2 style Conv1D weights): the supported architectures use nn.Linear',
    );
  }
  if (Array.isArray(raw.layer_replication) && raw.layer_replication.length > 0) {
    unsupported(
      '/layer_replication',
      'layer_replication changes the model depth, which llama.cpp adapters cannot do',
    );
  }
  if (Array.isArray(raw.target_parameters) && raw.target_parameters.length > 0) {
    unsupported(
      '/target_parameters',
      'target_parameters (LoRA on raw parameters, e.g. MoE experts) is not supported',
    );
  }
  for (const [key, what] of VARIANTS) {
    const value = raw[key];
    if (value === undefined || value === null || value === false) continue;
    if (typeof value === 'object' && Object.keys(value).length === 0) continue;
    unsupported(`/${key}`, `${key} is set: ${what}, which a llama.cpp LoRA (W + s·B·A) cannot express`);
  }
  const init = raw.init_lora_weights;
  if (typeof init === 'string' && !PLAIN_INITS.has(init.toLowerCase()) && modifiedBaseInit(init) === null) {
    unsupported(
      '/init_lora_weights',
      `init_lora_weights is ${JSON.stringify(init)}, an initialisation codi-adapter does not know: it cannot tell whether the adapter needs a modified base model (as pissa and olora do)`,
    );
  }
  return out;
}

/** PEFT's LoRA variants (and Megatron layers) whose forward pass is not `W·x + s·B·A·x`. */
const VARIANTS: readonly [key: string, what: string][] = [
  ['use_qalora', 'QALoRA pools the input features in groups before lora_A'],
  ['use_bdlora', 'BD-LoRA makes lora_A or lora_B block-diagonal'],
  ['arrow_config', 'Arrow routes every token among several adapters'],
  ['monteclora_config', 'MonteCLoRA samples its LoRA weights'],
  ['megatron_config', "Megatron's parallel layers have module names llama.cpp does not know"],
];

export const ALL_LINEAR = 'all-linear';

/**
 * `init_lora_weights` values that only initialise the LoRA and leave the base weights as they are
 * (PEFT's `update_layer`): the trained adapter is an ordinary LoRA on the original base.
 */
const PLAIN_INITS = new Set(['gaussian', 'eva', 'orthogonal', 'mica']);

/**
 * The name of the method when `init_lora_weights` makes PEFT change the base weights themselves
 * (`W ← W − s·B₀A₀`, or LoftQ's quantised residual), matched as PEFT's `update_layer` matches them;
 * null otherwise.
 */
function modifiedBaseInit(init: string): string | null {
  if (init.startsWith('pissa')) return 'PiSSA';
  if (init.startsWith('corda')) return 'CorDA';
  if (init.toLowerCase() === 'olora') return 'OLoRA';
  if (init === 'loftq') return 'LoftQ';
  if (init === 'lora_ga') return 'LoRA-GA';
  return null;
}

/**
 * Configs whose adapter is right only against weights other than the base model's own, or that
 * carry weights a llama.cpp LoRA has no place for: a modified base (PiSSA, OLoRA, CorDA, LoftQ,
 * LoRA-GA, KaSA), trained token rows, and an activated LoRA known only by its invocation text.
 */
function baseBoundFeatures(raw: Record<string, unknown>): Finding[] {
  const out: Finding[] = [];
  const init = raw.init_lora_weights;
  const method = typeof init === 'string' ? modifiedBaseInit(init) : null;
  if (method !== null) {
    out.push(
      err(
        'CONFIG_BASE_MODIFIED',
        `init_lora_weights is ${JSON.stringify(init)}: ${method} trains the adapter against base weights it changed itself (W − s·B₀A₀${method === 'LoftQ' ? ', quantised' : ''}), so on the original base model it computes something else`,
        '/init_lora_weights',
      ),
    );
  }
  const kasa = raw.kasa_config;
  if (kasa !== undefined && kasa !== null) {
    out.push(
      err(
        'CONFIG_BASE_MODIFIED',
        'kasa_config is set: KaSA truncates the base weights to their largest singular values and trains a diagonal between lora_A and lora_B',
        '/kasa_config',
      ),
    );
  }
  const trained = raw.trainable_token_indices;
  if (trained !== undefined && trained !== null) {
    out.push(
      err(
        'CONFIG_TRAINABLE_TOKENS',
        'trainable_token_indices is set: the trained token rows replace rows of the embedding (and a tied output head), which a llama.cpp LoRA adapter cannot carry',
        '/trainable_token_indices',
      ),
    );
  }
  const tokens = raw.alora_invocation_tokens;
  if (Array.isArray(tokens) && tokens.length === 1) {
    out.push(
      err(
        'CONFIG_ALORA_ONE_TOKEN',
        `alora_invocation_tokens is one token (${String(tokens[0])}): llama-server applies the adapter from the token before it, PEFT from the token itself, so the log-probs differ slightly from PEFT's`,
        '/alora_invocation_tokens',
      ),
    );
  }
  const invocation = raw.invocation_string;
  if (typeof invocation === 'string' && !Array.isArray(raw.alora_invocation_tokens)) {
    out.push(
      err(
        'CONFIG_ALORA_STRING',
        `invocation_string is ${JSON.stringify(invocation)} but there is no alora_invocation_tokens: an activated LoRA applies from token ids, and those depend on the base model's tokenizer`,
        '/invocation_string',
      ),
    );
  }
  return out;
}

/** Python's `re.fullmatch(pattern, key)` for the common subset of regex syntax both engines share. */
function pythonFullMatch(pattern: string): RegExp | null {
  try {
    return new RegExp(`^(?:${pattern})$`, 'u');
  } catch {
    return null;
  }
}

/** PEFT ≥ 0.15 matches rank/alpha pattern keys with `re.match(rf"(.*\.)?({key})$", module)`. */
function patternRegex(key: string): RegExp | null {
  try {
    return new RegExp(`^(.*\\.)?(?:${key})$`, 'u');
  } catch {
    return null;
  }
}

/**
 * PEFT ≤ 0.14 matched them with `re.match(rf".*\.{key}$", module)`: the key pasted in ungrouped (so
 * `a|b` means `.*\.a` or `b$`) and a dot required before it (a full module name matched only through
 * the exact-name fallback).
 */
function legacyPatternRegex(key: string): RegExp | null {
  try {
    return new RegExp(`^(?:.*\\.${key}$)`, 'u');
  } catch {
    return null;
  }
}

function nonEmpty<T>(list: T[]): T[] | null {
  return list.length > 0 ? list : null;
}

/**
 * How PEFT finds a module's layer index for layers_to_transform (tuners_utils.py
 * `check_target_module_exists`, `re.match` of the module name):
 * - `peft-0.20` (0.20 and later): the *first* `.<segment>.<digits>.`, lazily (`.*?\.[^.]*\.(\d+)\.`),
 *   or with layers_pattern the first `.<pattern>.<digits>.` (`.*?\.{pattern}\.(\d+)\.`);
 * - `peft-0.19` (before 0.20): the same greedily, so the *last* one: in an MoE module name such as
 *   `model.layers.1.mlp.experts.0.gate_proj`, the expert's index.
 */
export type LayerRules = 'peft-0.20' | 'peft-0.19';

/** The layer rules of the PEFT release `version` names; null when the config does not say. */
export function layerRulesOf(version: string | null): LayerRules | null {
  const m = version === null ? null : /^v?(\d+)\.(\d+)/u.exec(version.trim());
  if (!m) return null;
  return Number(m[1]) > 0 || Number(m[2]) >= 20 ? 'peft-0.20' : 'peft-0.19';
}

/** The layer index of a module name, as the PEFT release of `rules` finds it for layers_to_transform. */
export function layerIndexOf(
  moduleName: string,
  layersPattern: string[] | null = null,
  rules: LayerRules = 'peft-0.20',
): number | null {
  const any = rules === 'peft-0.20' ? '.*?' : '.*';
  const patterns = layersPattern ?? ['[^.]*'];
  for (const p of patterns) {
    let m: RegExpExecArray | null;
    try {
      // the pattern goes in as PEFT pastes it: a regular expression
      m = new RegExp(`^${any}\\.(?:${p})\\.(\\d+)\\.`, 'u').exec(moduleName);
    } catch {
      // a pattern that is no regular expression matches nothing
      m = null;
    }
    if (m?.[1] !== undefined) return Number(m[1]);
  }
  return null;
}

/** PEFT's `EMBEDDING_LAYER_NAMES`: the input embedding and the output head. */
export const EMBEDDING_LAYER_NAMES = ['embed_tokens', 'lm_head'] as const;

/** Whether a module is the token embedding or the output head, by its last name segment. */
export function isEmbeddingLayer(moduleName: string): boolean {
  const last = moduleName.slice(moduleName.lastIndexOf('.') + 1);
  return (EMBEDDING_LAYER_NAMES as readonly string[]).includes(last);
}

/**
 * Whether PEFT would put a LoRA on `moduleName` (a base-model module path such as
 * `model.layers.0.self_attn.q_proj`). `all-linear` selects every linear layer but the output head,
 * and an embedding is not a linear layer: without the model, a module counts as linear unless it is
 * named as one of those (or its LoRA is an embedding LoRA).
 */
export function targetsModule(
  config: LoraConfig,
  moduleName: string,
  kind: 'linear' | 'embedding' = 'linear',
): boolean {
  if (config.excludeModules) {
    const ex = config.excludeModules;
    const excluded =
      ex.kind === 'regex'
        ? ex.regex.test(moduleName)
        : ex.names.some((n) => moduleName === n || moduleName.endsWith(`.${n}`));
    if (excluded) return false;
  }
  const t = config.targets;
  if (t.kind === 'regex') return t.regex.test(moduleName);
  if (t.kind === 'all-linear') return kind === 'linear' && !isEmbeddingLayer(moduleName);
  // a module named whole is targeted whatever its layer, as in PEFT
  if (t.names.includes(moduleName)) return true;
  if (!t.names.some((n) => moduleName.endsWith(`.${n}`))) return false;
  const layers = config.layersToTransform;
  if (!layers) return true;
  // without peft_version, the module counts as targeted when either release's rule selects it
  const rules: readonly LayerRules[] = config.layerRules ? [config.layerRules] : ['peft-0.20', 'peft-0.19'];
  return rules.some((r) => {
    const layer = layerIndexOf(moduleName, config.layersPattern, r);
    return layer !== null && layers.includes(layer);
  });
}

/** Which entry of target_modules a module matched (for "every target matched a tensor"). */
export function matchingTargets(
  config: LoraConfig,
  moduleName: string,
  kind: 'linear' | 'embedding' = 'linear',
): string[] {
  const t = config.targets;
  if (t.kind === 'list') return t.names.filter((n) => moduleName === n || moduleName.endsWith(`.${n}`));
  if (t.kind === 'regex') return t.regex.test(moduleName) ? [t.pattern] : [];
  return kind === 'linear' && !isEmbeddingLayer(moduleName) ? [ALL_LINEAR] : [];
}

/** Whether a rank/alpha pattern key selects this module (current PEFT's matching). */
export function patternMatches(key: string, moduleName: string): boolean {
  return patternRegex(key)?.test(moduleName) ?? false;
}

/**
 * How a PEFT release finds a module's rank_pattern and alpha_pattern entries (peft/tuners/lora/model.py
 * `_create_and_replace`, peft/utils/other.py `get_pattern_key`):
 * - `peft-0.13` (0.13 and earlier): ONE key for both, the first of the rank keys then the alpha keys
 *   that matches `.*\.{key}$`, else the module name; rank and alpha are both looked up under it, so a
 *   module matching a rank key gets the default alpha even when an alpha key matches it too;
 * - `peft-0.14`: a key per pattern, the same matching;
 * - `peft-0.15` (0.15 and later, current): a key per pattern, matched with `(.*\.)?({key})$`.
 * In every release the first matching key in file order wins, and an exact module name is found too.
 */
export type PatternRules = 'peft-0.13' | 'peft-0.14' | 'peft-0.15';
export const CURRENT_PATTERN_RULES: PatternRules = 'peft-0.15';

/** The rules of the PEFT release `version` names (`0.13.2`, `0.18.0.dev0@abc…`); current PEFT's otherwise. */
export function patternRulesOf(version: string | null): PatternRules {
  const m = version === null ? null : /^v?(\d+)\.(\d+)/u.exec(version.trim());
  if (!m) return CURRENT_PATTERN_RULES;
  const major = Number(m[1]);
  const minor = Number(m[2]);
  if (major > 0 || minor >= 15) return 'peft-0.15';
  return minor === 14 ? 'peft-0.14' : 'peft-0.13';
}

/** PEFT's `get_pattern_key`: the first key of `pattern` that selects `moduleName`, else the name itself. */
function patternKey(keys: readonly string[], moduleName: string, rules: PatternRules): string {
  const regexOf = rules === 'peft-0.15' ? patternRegex : legacyPatternRegex;
  return keys.find((key) => regexOf(key)?.test(moduleName) ?? false) ?? moduleName;
}

/** Python's `dict.get(key, fallback)` on a pattern. */
function lookup(pattern: [string, number][], key: string, fallback: number): number {
  return pattern.find(([k]) => k === key)?.[1] ?? fallback;
}

/** The rank and alpha PEFT (of the release `rules` names) gives this module. */
export function rankAndAlpha(
  config: LoraConfig,
  moduleName: string,
  rules: PatternRules = config.patternRules,
): { rank: number; alpha: number } {
  const rankKeys = config.rankPattern.map(([k]) => k);
  const alphaKeys = config.alphaPattern.map(([k]) => k);
  if (rules === 'peft-0.13') {
    const key = patternKey([...rankKeys, ...alphaKeys], moduleName, rules);
    return {
      rank: lookup(config.rankPattern, key, config.r),
      alpha: lookup(config.alphaPattern, key, config.loraAlpha),
    };
  }
  return {
    rank: lookup(config.rankPattern, patternKey(rankKeys, moduleName, rules), config.r),
    alpha: lookup(config.alphaPattern, patternKey(alphaKeys, moduleName, rules), config.loraAlpha),
  };
}

/** The rank PEFT gives this module: its rank_pattern entry, else `r`. */
export function rankFor(config: LoraConfig, moduleName: string): number {
  return rankAndAlpha(config, moduleName).rank;
}

/** The alpha PEFT gives this module: its alpha_pattern entry, else `lora_alpha`. */
export function alphaFor(config: LoraConfig, moduleName: string): number {
  return rankAndAlpha(config, moduleName).alpha;
}

/** PEFT's scaling of one module: alpha/r, or alpha/sqrt(r) with use_rslora. */
export function scaleFor(
  config: LoraConfig,
  moduleName: string,
  rules: PatternRules = config.patternRules,
): number {
  return scaleOf(config, rankAndAlpha(config, moduleName, rules));
}

/** alpha/r, or alpha/sqrt(r) with use_rslora. */
function scaleOf(config: LoraConfig, { rank, alpha }: { rank: number; alpha: number }): number {
  return config.useRslora ? alpha / Math.sqrt(rank) : alpha / rank;
}

/** A module whose scale depends on which PEFT release loads the adapter. */
export interface PatternRuleConflict {
  module: string;
  /** what is used: the rules of `config.patternRules` */
  used: { rules: PatternRules; rank: number; alpha: number; scale: number };
  /** what an older PEFT release would give */
  other: { rules: PatternRules; rank: number; alpha: number; scale: number };
}

/**
 * Modules whose scale an older PEFT release would compute differently, when the config does not say
 * which release wrote it (`peft_version`, recorded since PEFT 0.18). A release whose rank differs from
 * the tensor's own rank cannot have made this adapter (its shapes would not load), so only the releases
 * consistent with the file are compared.
 */
export function patternRuleConflicts(
  config: LoraConfig,
  modules: readonly { module: string; rank: number }[],
): PatternRuleConflict[] {
  if (config.peftVersion !== null) return [];
  if (config.rankPattern.length === 0 && config.alphaPattern.length === 0) return [];
  const out: PatternRuleConflict[] = [];
  for (const m of modules) {
    const used = rankAndAlpha(config, m.module);
    const usedScale = scaleOf(config, used);
    for (const rules of ['peft-0.13', 'peft-0.14'] as const) {
      const other = rankAndAlpha(config, m.module, rules);
      const otherScale = scaleOf(config, other);
      if (other.rank !== m.rank || otherScale === usedScale) continue;
      out.push({
        module: m.module,
        used: { rules: config.patternRules, ...used, scale: usedScale },
        other: { rules, ...other, scale: otherScale },
      });
      break;
    }
  }
  return out;
}

/** A one-line description for the checklist. */
export function describeConfig(config: LoraConfig): string {
  const t = config.targets;
  const targets =
    t.kind === 'list'
      ? `${t.names.length} target modules`
      : t.kind === 'regex'
        ? 'regex targets'
        : 'all-linear';
  const extra = [
    config.aloraInvocationTokens ? `activated by ${plainCount(config.aloraInvocationTokens.length)}` : null,
    config.useRslora ? 'rsLoRA' : null,
    config.rankPattern.length > 0 ? `${config.rankPattern.length} rank patterns` : null,
    config.alphaPattern.length > 0 ? `${config.alphaPattern.length} alpha patterns` : null,
  ].filter((x): x is string => x !== null);
  return `LoRA r=${config.r} alpha=${config.loraAlpha}, ${targets}${extra.length > 0 ? `, ${extra.join(', ')}` : ''}`;
}

function plainCount(n: number): string {
  return n === 1 ? '1 token' : `${n} tokens`;
}

/** Throws if any finding is an error; for callers (convert) that need a usable config. */
export function requireConfig(parsed: ParsedConfig): LoraConfig {
  const first = parsed.findings.find((f) => f.level === 'error');
  if (first || !parsed.config) {
    const f = first ?? err('CONFIG_INVALID', 'adapter_config.json is not usable');
    throw new CodiError(f.code, `${CONFIG_FILE}: ${f.message}`, {
      file: CONFIG_FILE,
      ...(f.pointer ? { pointer: f.pointer } : {}),
    });
  }
  return parsed.config;
}
