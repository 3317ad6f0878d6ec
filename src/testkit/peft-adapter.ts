/**
 * Generates real PEFT LoRA adapter directories (adapter_config.json as PEFT writes it, safetensors
 * weights with PEFT tensor names, metadata.json with checksums) from a fixed seed. Used by tests, the
 * examples and the benchmarks; the same spec gives the same bytes.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { sha256Bytes } from '../checksum.js';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../formats/numeric.js';
import { writeSafetensors } from '../files/safetensors.js';
import { patternMatches } from '../peft-config.js';
import { Rng } from './rng.js';

export interface LoraTargetSpec {
  /** base-model module path, e.g. `model.layers.0.self_attn.q_proj` */
  module: string;
  /** in_features (linear) or num_embeddings (embedding) */
  inFeatures: number;
  /** out_features (linear) or embedding_dim (embedding) */
  outFeatures: number;
  kind?: 'linear' | 'embedding';
}

export type WeightDtype = 'F32' | 'F16' | 'BF16';

export interface AdapterSpec {
  id: string;
  version?: string;
  baseModel?: string;
  /** base_model_name_or_path in adapter_config.json */
  baseModelPath?: string;
  r: number;
  alpha: number;
  useRslora?: boolean;
  rankPattern?: Record<string, number>;
  alphaPattern?: Record<string, number>;
  /** target_modules as written to the config */
  targetModules: string[] | string;
  modules: LoraTargetSpec[];
  dtype?: WeightDtype;
  seed: number;
  /** keys merged over the PEFT defaults in adapter_config.json */
  extraConfig?: Record<string, unknown>;
  /** a README.md is written when given */
  readme?: string;
  /**
   * More tensors, with seeded values, written after the LoRA ones: what PEFT saves beside them in some
   * configurations (e.g. `…embed_tokens.base_layer.weight`, the copy save_embedding_layers writes)
   */
  extraTensors?: { name: string; shape: number[] }[];
  /** metadata.json `base`: the base model GGUF the adapter is bound to */
  base?: { sha256: string; name?: string; file?: string };
}

export const FIXED_CREATED_AT = '2026-11-20T10:00:00Z';

/** adapter_config.json the way PEFT 0.13 writes it: every option present, unset ones null. */
export function peftConfigJson(spec: AdapterSpec): Record<string, unknown> {
  return {
    alpha_pattern: spec.alphaPattern ?? {},
    auto_mapping: null,
    base_model_name_or_path: spec.baseModelPath ?? 'Qwen/Qwen2.5-Coder-1.5B',
    bias: 'none',
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    layer_replication: null,
    layers_pattern: null,
    layers_to_transform: null,
    loftq_config: {},
    lora_alpha: spec.alpha,
    lora_dropout: 0.05,
    megatron_config: null,
    megatron_core: 'megatron.core',
    modules_to_save: null,
    peft_type: 'LORA',
    r: spec.r,
    rank_pattern: spec.rankPattern ?? {},
    revision: null,
    target_modules: spec.targetModules,
    task_type: 'CAUSAL_LM',
    use_dora: false,
    use_rslora: spec.useRslora ?? false,
    ...spec.extraConfig,
  };
}

/** The rank PEFT would give `module` under `spec` (rank_pattern keys are suffix regexes). */
function rankOf(spec: AdapterSpec, module: string): number {
  for (const [key, r] of Object.entries(spec.rankPattern ?? {})) {
    if (patternMatches(key, module)) return r;
  }
  return spec.r;
}

export interface GeneratedTensor {
  name: string;
  dtype: WeightDtype;
  shape: number[];
  /** the values as float32, after rounding to `dtype` */
  values: Float32Array;
  data: Uint8Array;
}

/** The LoRA tensors of a spec, in PEFT's naming and layout. */
export function generateLoraTensors(spec: AdapterSpec): GeneratedTensor[] {
  const rng = new Rng(spec.seed);
  const dtype = spec.dtype ?? 'F32';
  const out: GeneratedTensor[] = [];
  for (const m of spec.modules) {
    const r = rankOf(spec, m.module);
    const embedding = m.kind === 'embedding';
    // trained adapters have both halves non-zero; scales keep B·A comparable to the base weights
    const a = rng.normals(r * m.inFeatures, 1 / Math.sqrt(m.inFeatures));
    const b = rng.normals(m.outFeatures * r, 0.5 / Math.sqrt(r));
    const prefix = `base_model.model.${m.module}`;
    out.push(
      encode(`${prefix}${embedding ? '.lora_embedding_A' : '.lora_A.weight'}`, [r, m.inFeatures], a, dtype),
    );
    out.push(
      encode(`${prefix}${embedding ? '.lora_embedding_B' : '.lora_B.weight'}`, [m.outFeatures, r], b, dtype),
    );
  }
  for (const t of spec.extraTensors ?? []) {
    out.push(
      encode(
        t.name,
        t.shape,
        rng.normals(
          t.shape.reduce((x, y) => x * y, 1),
          0.1,
        ),
        dtype,
      ),
    );
  }
  return out;
}

function encode(name: string, shape: number[], values: Float32Array, dtype: WeightDtype): GeneratedTensor {
  if (dtype === 'F32') return { name, dtype, shape, values, data: new Uint8Array(values.buffer) };
  const bits = dtype === 'F16' ? f32ToF16(values) : f32ToBf16(values);
  const rounded = dtype === 'F16' ? f16ToF32(bits) : bf16ToF32(bits);
  return { name, dtype, shape, values: rounded, data: new Uint8Array(bits.buffer) };
}

/** Writes the adapter directory; returns the sha256 of every file metadata.json covers. */
export async function writePeftAdapter(dir: string, spec: AdapterSpec): Promise<Record<string, string>> {
  await mkdir(dir, { recursive: true });
  const tensors = generateLoraTensors(spec);
  const weights = join(dir, 'adapter_model.safetensors');
  await writeSafetensors(
    weights,
    tensors.map(({ name, dtype, shape, data }) => ({ name, dtype, shape, data })),
    { format: 'pt' },
  );
  const configText = `${JSON.stringify(peftConfigJson(spec), null, 2)}\n`;
  await writeFile(join(dir, 'adapter_config.json'), configText);
  if (spec.readme !== undefined) await writeFile(join(dir, 'README.md'), spec.readme);
  const files = {
    'adapter_config.json': sha256Bytes(Buffer.from(configText)),
    'adapter_model.safetensors': sha256Bytes(await readFile(weights)),
  };
  await writeMetadata(dir, spec, files);
  return files;
}

export async function writeMetadata(
  dir: string,
  spec: AdapterSpec,
  files: Record<string, string>,
): Promise<void> {
  const metadata = {
    schema_version: 1,
    id: spec.id,
    version: spec.version ?? '0.1.0',
    base_model: spec.baseModel ?? 'qwen2.5-coder-1.5b',
    ...(spec.base ? { base: spec.base } : {}),
    created_at: FIXED_CREATED_AT,
    training: {
      dataset: 'codi-rationales-2026-10',
      epochs: 3,
      learning_rate: 0.0002,
      framework: 'peft 0.13.2',
    },
    checksum: { algorithm: 'sha256', files },
    evaluations: [],
  };
  await writeFile(join(dir, 'metadata.json'), `${JSON.stringify(metadata, null, 2)}\n`);
}

/** The seven projections of every layer of a Llama/Qwen2-style model, as LoRA targets. */
export function decoderTargets(dims: {
  layers: number;
  hidden: number;
  intermediate: number;
  kvDim: number;
}): LoraTargetSpec[] {
  const out: LoraTargetSpec[] = [];
  for (let l = 0; l < dims.layers; l++) {
    const p = `model.layers.${l}`;
    out.push(
      { module: `${p}.self_attn.q_proj`, inFeatures: dims.hidden, outFeatures: dims.hidden },
      { module: `${p}.self_attn.k_proj`, inFeatures: dims.hidden, outFeatures: dims.kvDim },
      { module: `${p}.self_attn.v_proj`, inFeatures: dims.hidden, outFeatures: dims.kvDim },
      { module: `${p}.self_attn.o_proj`, inFeatures: dims.hidden, outFeatures: dims.hidden },
      { module: `${p}.mlp.gate_proj`, inFeatures: dims.hidden, outFeatures: dims.intermediate },
      { module: `${p}.mlp.up_proj`, inFeatures: dims.hidden, outFeatures: dims.intermediate },
      { module: `${p}.mlp.down_proj`, inFeatures: dims.intermediate, outFeatures: dims.hidden },
    );
  }
  return out;
}

export const ALL_PROJECTIONS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];
