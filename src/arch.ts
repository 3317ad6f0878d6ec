/**
 * The base architectures codi-adapter supports, one row each: everything that differs between them
 * for the compatibility plan (base-model.ts), the PEFT → llama.cpp tensor names (gguf-names.ts), the
 * converter (convert.ts) and the tiny test models (testkit/tiny-model.ts). Adding an architecture is
 * adding a row, plus the tests listed in docs/ARCHITECTURE.md.
 *
 * Facts from llama.cpp: the tensor names of src/llama-arch.cpp (`LLM_TENSOR_NAMES`) and gguf-py's
 * `TensorNameMap` (the Hugging Face names), the keys of `llama_model::load_hparams`, the RoPE type of
 * `llama_model_rope_type`, and convert_hf_to_gguf.py for what its converter does to the weights.
 *
 * How the rows take the shapes of the architectures still to come:
 * - fused projections (phi3's `qkv_proj`, `gate_up_proj`): a tensor of their own, with its own shape;
 * - a head size that is not hidden / heads (qwen3, gemma): shapes are written with `headDim`, and
 *   the row's keys include `attention.key_length`;
 * - q/k norms (qwen3, olmo2, gemma3): more `norm` tensors in `layer`;
 * - another prefix for the decoder (gemma3's `model.language_model.`): `hfLayers` and the model-level
 *   Hugging Face names;
 * - experts (qwen2moe, qwen3moe): tensors of three dimensions, whose LoRA mapping needs a rule of
 *   its own in the compatibility plan before such a row can be added.
 */

/** A model's hyper-parameters, as tensor shapes and GGUF keys need them. */
export interface ArchHparams {
  readonly nEmbd: number;
  readonly nHead: number;
  readonly nHeadKv: number;
  /** the size of one attention head, which need not be nEmbd / nHead */
  readonly headDim: number;
  readonly nFf: number;
  readonly nVocab: number;
  readonly nLayer: number;
  readonly nCtxTrain: number;
  readonly ropeFreqBase: number;
  readonly rmsEps: number;
}

/**
 * What a tensor is to the model: a weight a LoRA can adapt (`linear`, the token `embedding`, the
 * `output` head), or one it cannot (`norm`, `bias`).
 */
export type TensorRole = 'linear' | 'embedding' | 'output' | 'norm' | 'bias';

export interface ArchTensor {
  /** llama.cpp's name: inside a block for a layer tensor (`attn_q.weight`), else the whole name */
  readonly gguf: string;
  /**
   * The Hugging Face name: inside a layer for a layer tensor (`self_attn.q_proj.weight`), else the
   * whole name (`model.embed_tokens.weight`). Without `.weight`, it is the module a LoRA targets.
   */
  readonly hf: string;
  readonly role: TensorRole;
  /** PyTorch order: [out, in] for a linear weight */
  readonly shape: (h: ArchHparams) => number[];
  /** the q or k projection: rows in RoPE heads of `head_count` (q) or `head_count_kv` (kv) */
  readonly heads?: 'q' | 'kv';
}

/** A `<arch>.<key>` metadata key llama.cpp reads, and the hyper-parameter it holds. */
export interface ArchKey {
  readonly key: string;
  readonly value: keyof ArchHparams;
  readonly type: 'u32' | 'f32';
}

export interface Arch {
  /** `general.architecture` */
  readonly name: string;
  /** where the decoder layers are among the Hugging Face names: `<hfLayers>.<n>.<tensor hf>` */
  readonly hfLayers: string;
  /**
   * llama.cpp's NORM RoPE rotates interleaved pairs, so its converter permutes the rows of the q and
   * k projections within each head (and a LoRA's lora_b, whose rows are output rows, needs the same);
   * NEOX RoPE keeps the Hugging Face order.
   */
  readonly permutesQk: boolean;
  /** the tensors of one layer, in the order a GGUF of this architecture lists them */
  readonly layer: readonly ArchTensor[];
  /** the tensors before the layers (the embedding) */
  readonly head: readonly ArchTensor[];
  /** the tensors after the layers; `output` is absent when the output head is tied to the embedding */
  readonly tail: readonly ArchTensor[];
  /** the `<arch>.*` keys llama.cpp's loader needs for it */
  readonly keys: readonly ArchKey[];
}

const q = (h: ArchHparams): number[] => [h.nHead * h.headDim, h.nEmbd];
const kv = (h: ArchHparams): number[] => [h.nHeadKv * h.headDim, h.nEmbd];
const embd = (h: ArchHparams): number[] => [h.nEmbd];

const ATTENTION: readonly ArchTensor[] = [
  { gguf: 'attn_norm.weight', hf: 'input_layernorm.weight', role: 'norm', shape: embd },
  { gguf: 'attn_q.weight', hf: 'self_attn.q_proj.weight', role: 'linear', shape: q, heads: 'q' },
  { gguf: 'attn_k.weight', hf: 'self_attn.k_proj.weight', role: 'linear', shape: kv, heads: 'kv' },
  { gguf: 'attn_v.weight', hf: 'self_attn.v_proj.weight', role: 'linear', shape: kv },
];

const QKV_BIASES: readonly ArchTensor[] = [
  { gguf: 'attn_q.bias', hf: 'self_attn.q_proj.bias', role: 'bias', shape: (h) => [h.nHead * h.headDim] },
  { gguf: 'attn_k.bias', hf: 'self_attn.k_proj.bias', role: 'bias', shape: (h) => [h.nHeadKv * h.headDim] },
  { gguf: 'attn_v.bias', hf: 'self_attn.v_proj.bias', role: 'bias', shape: (h) => [h.nHeadKv * h.headDim] },
];

const OUTPUT_AND_FFN: readonly ArchTensor[] = [
  {
    gguf: 'attn_output.weight',
    hf: 'self_attn.o_proj.weight',
    role: 'linear',
    shape: (h) => [h.nEmbd, h.nHead * h.headDim],
  },
  { gguf: 'ffn_norm.weight', hf: 'post_attention_layernorm.weight', role: 'norm', shape: embd },
  { gguf: 'ffn_gate.weight', hf: 'mlp.gate_proj.weight', role: 'linear', shape: (h) => [h.nFf, h.nEmbd] },
  { gguf: 'ffn_up.weight', hf: 'mlp.up_proj.weight', role: 'linear', shape: (h) => [h.nFf, h.nEmbd] },
  { gguf: 'ffn_down.weight', hf: 'mlp.down_proj.weight', role: 'linear', shape: (h) => [h.nEmbd, h.nFf] },
];

const EMBEDDING: readonly ArchTensor[] = [
  {
    gguf: 'token_embd.weight',
    hf: 'model.embed_tokens.weight',
    role: 'embedding',
    shape: (h) => [h.nVocab, h.nEmbd],
  },
];

const NORM_AND_OUTPUT: readonly ArchTensor[] = [
  { gguf: 'output_norm.weight', hf: 'model.norm.weight', role: 'norm', shape: embd },
  { gguf: 'output.weight', hf: 'lm_head.weight', role: 'output', shape: (h) => [h.nVocab, h.nEmbd] },
];

/** the keys every llama-style architecture has */
const COMMON_KEYS: readonly ArchKey[] = [
  { key: 'context_length', value: 'nCtxTrain', type: 'u32' },
  { key: 'embedding_length', value: 'nEmbd', type: 'u32' },
  { key: 'block_count', value: 'nLayer', type: 'u32' },
  { key: 'feed_forward_length', value: 'nFf', type: 'u32' },
  { key: 'attention.head_count', value: 'nHead', type: 'u32' },
  { key: 'attention.head_count_kv', value: 'nHeadKv', type: 'u32' },
  { key: 'rope.freq_base', value: 'ropeFreqBase', type: 'f32' },
  { key: 'attention.layer_norm_rms_epsilon', value: 'rmsEps', type: 'f32' },
];

export const ARCHS = [
  {
    // Qwen2 and Qwen2.5: q/k/v biases, NEOX RoPE
    name: 'qwen2',
    hfLayers: 'model.layers',
    permutesQk: false,
    layer: [...ATTENTION, ...QKV_BIASES, ...OUTPUT_AND_FFN],
    head: EMBEDDING,
    tail: NORM_AND_OUTPUT,
    keys: COMMON_KEYS,
  },
  {
    // Llama and the models shaped like it (Mistral): no biases, NORM RoPE
    name: 'llama',
    hfLayers: 'model.layers',
    permutesQk: true,
    layer: [...ATTENTION, ...OUTPUT_AND_FFN],
    head: EMBEDDING,
    tail: NORM_AND_OUTPUT,
    keys: [
      ...COMMON_KEYS,
      { key: 'rope.dimension_count', value: 'headDim', type: 'u32' },
      { key: 'vocab_size', value: 'nVocab', type: 'u32' },
    ],
  },
] as const satisfies readonly Arch[];

export type ArchName = (typeof ARCHS)[number]['name'];

export const ARCH_NAMES: readonly ArchName[] = ARCHS.map((a) => a.name);

export function isArchName(name: string): name is ArchName {
  return (ARCH_NAMES as readonly string[]).includes(name);
}

export function archOf(name: ArchName): Arch {
  const arch = ARCHS.find((a) => a.name === name);
  if (arch === undefined) throw new RangeError(`no architecture ${name}`);
  return arch;
}

/** `<arch>.<key>`, the name of an architecture's metadata key in a GGUF file. */
export function archKey(arch: ArchName, key: string): string {
  return `${arch}.${key}`;
}
