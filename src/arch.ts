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
 * How the rows take the shapes of the architectures:
 * - fused projections (phi3's `qkv_proj`, `gate_up_proj`): a tensor of their own, with its own shape;
 *   a LoRA on them maps onto the fused tensor as it is (its B rows are the fused rows);
 * - a head size that is not hidden / heads (qwen3, gemma, Devstral on llama): shapes are written with
 *   `headDim`, and the row's keys include `attention.key_length`;
 * - q/k norms (qwen3, olmo2, gemma3): more `norm` tensors in `layer`;
 * - another prefix for the decoder (gemma3's `model.language_model.`): `hfLayers`, the model-level
 *   Hugging Face names, and `hfStrip` for the names without it;
 * - experts (qwen2moe, qwen3moe): `experts` tensors of three dimensions, one module per expert on
 *   the Hugging Face side, stacked by the compatibility plan and the converter.
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
  /** experts per mixture-of-experts layer, and how many of them each token uses */
  readonly nExpert: number;
  readonly nExpertUsed: number;
  /** the feed-forward size of one expert, and of the shared expert (qwen2moe) */
  readonly nFfExp: number;
  readonly nFfShexp: number;
  /** granite's multipliers: logits are divided by the first, the others scale as their names say */
  readonly logitScale: number;
  readonly embeddingScale: number;
  readonly residualScale: number;
  readonly attentionScale: number;
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
   * For `experts`, the name without the expert's number (`mlp.experts.gate_proj.weight` for the
   * modules `mlp.experts.<e>.gate_proj`).
   */
  readonly hf: string;
  readonly role: TensorRole;
  /** PyTorch order: [out, in] for a linear weight, [experts, out, in] for `experts` */
  readonly shape: (h: ArchHparams) => number[];
  /** the q or k projection: rows in RoPE heads of `head_count` (q) or `head_count_kv` (kv) */
  readonly heads?: 'q' | 'kv';
  /**
   * One projection of every expert of a layer: Hugging Face has a module per expert, llama.cpp's
   * converter stacks their weights along a first dimension (and a LoRA's A and B the same way).
   */
  readonly experts?: true;
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
  /**
   * The output head: `optional` (absent when tied to the embedding), `required` (llama.cpp fails
   * to load a model without it) or `tied` (llama.cpp never loads one: the embedding serves).
   */
  readonly output: 'optional' | 'required' | 'tied';
  /**
   * A part of every Hugging Face name that llama.cpp's converter drops (gemma3's multimodal
   * checkpoints nest the text model under `language_model.`): module names match with or without it.
   */
  readonly hfStrip?: string;
  /**
   * Modules of another tower of the checkpoint (a vision encoder) that a LoRA may target but the
   * GGUF text model has no tensor for; llama.cpp's converter drops them, and so does convert, with
   * a warning.
   */
  readonly otherTowers?: RegExp;
  /**
   * The embedding scales its output by sqrt(hidden) inside its own module (gemma3): llama.cpp
   * scales an embedding LoRA's delta with it, PEFT only since 0.18 (before, it added the delta after).
   */
  readonly scaledEmbedding?: true;
  /** the tensors of one layer, in the order a GGUF of this architecture lists them */
  readonly layer: readonly ArchTensor[];
  /** the tensors before the layers (the embedding) */
  readonly head: readonly ArchTensor[];
  /** the tensors after the layers; `output` is absent when the output head is tied to the embedding */
  readonly tail: readonly ArchTensor[];
  /** the `<arch>.*` keys llama.cpp's loader needs for it */
  readonly keys: readonly ArchKey[];
}

/** Head size as llama.cpp's graphs that assume it take it: hidden size / heads. */
const impliedHead = (h: ArchHparams): number => h.nEmbd / h.nHead;

const q = (h: ArchHparams): number[] => [h.nHead * h.headDim, h.nEmbd];
const kv = (h: ArchHparams): number[] => [h.nHeadKv * h.headDim, h.nEmbd];
const o = (h: ArchHparams): number[] => [h.nEmbd, h.nHead * h.headDim];
const embd = (h: ArchHparams): number[] => [h.nEmbd];
const head = (h: ArchHparams): number[] => [h.headDim];

const norm = (gguf: string, hf: string, shape: (h: ArchHparams) => number[] = embd): ArchTensor => ({
  gguf,
  hf,
  role: 'norm',
  shape,
});
const linear = (gguf: string, hf: string, shape: (h: ArchHparams) => number[]): ArchTensor => ({
  gguf,
  hf,
  role: 'linear',
  shape,
});

const INPUT_NORM = norm('attn_norm.weight', 'input_layernorm.weight');

/** q, k, v with the head size of the row's hyper-parameters */
const QKV: readonly ArchTensor[] = [
  { ...linear('attn_q.weight', 'self_attn.q_proj.weight', q), heads: 'q' },
  { ...linear('attn_k.weight', 'self_attn.k_proj.weight', kv), heads: 'kv' },
  linear('attn_v.weight', 'self_attn.v_proj.weight', kv),
];

/** q, k, v where llama.cpp takes the head size to be hidden / heads (qwen2moe, olmo2) */
const QKV_IMPLIED: readonly ArchTensor[] = [
  { ...linear('attn_q.weight', 'self_attn.q_proj.weight', (h) => [h.nEmbd, h.nEmbd]), heads: 'q' },
  {
    ...linear('attn_k.weight', 'self_attn.k_proj.weight', (h) => [h.nHeadKv * impliedHead(h), h.nEmbd]),
    heads: 'kv',
  },
  linear('attn_v.weight', 'self_attn.v_proj.weight', (h) => [h.nHeadKv * impliedHead(h), h.nEmbd]),
];

const QKV_BIASES: readonly ArchTensor[] = [
  { gguf: 'attn_q.bias', hf: 'self_attn.q_proj.bias', role: 'bias', shape: (h) => [h.nHead * h.headDim] },
  { gguf: 'attn_k.bias', hf: 'self_attn.k_proj.bias', role: 'bias', shape: (h) => [h.nHeadKv * h.headDim] },
  { gguf: 'attn_v.bias', hf: 'self_attn.v_proj.bias', role: 'bias', shape: (h) => [h.nHeadKv * h.headDim] },
];

/** per-head q/k RMS norms (qwen3, gemma3) */
const QK_HEAD_NORMS: readonly ArchTensor[] = [
  norm('attn_q_norm.weight', 'self_attn.q_norm.weight', head),
  norm('attn_k_norm.weight', 'self_attn.k_norm.weight', head),
];

const ATTN_OUTPUT = linear('attn_output.weight', 'self_attn.o_proj.weight', o);

const GATE_UP_DOWN: readonly ArchTensor[] = [
  linear('ffn_gate.weight', 'mlp.gate_proj.weight', (h) => [h.nFf, h.nEmbd]),
  linear('ffn_up.weight', 'mlp.up_proj.weight', (h) => [h.nFf, h.nEmbd]),
  linear('ffn_down.weight', 'mlp.down_proj.weight', (h) => [h.nEmbd, h.nFf]),
];

const FFN_NORM = norm('ffn_norm.weight', 'post_attention_layernorm.weight');

/** Llama's layer: the norms before attention and before the feed-forward */
const LLAMA_LAYER: readonly ArchTensor[] = [INPUT_NORM, ...QKV, ATTN_OUTPUT, FFN_NORM, ...GATE_UP_DOWN];

/** Gemma's layer: a norm before and after attention and before and after the feed-forward */
const GEMMA_LAYER = (qkNorms: readonly ArchTensor[]): readonly ArchTensor[] => [
  INPUT_NORM,
  ...QKV,
  ...qkNorms,
  ATTN_OUTPUT,
  norm('post_attention_norm.weight', 'post_attention_layernorm.weight'),
  norm('ffn_norm.weight', 'pre_feedforward_layernorm.weight'),
  ...GATE_UP_DOWN,
  norm('post_ffw_norm.weight', 'post_feedforward_layernorm.weight'),
];

/** the router and every expert's gate, up and down projections, stacked */
const EXPERTS: readonly ArchTensor[] = [
  linear('ffn_gate_inp.weight', 'mlp.gate.weight', (h) => [h.nExpert, h.nEmbd]),
  {
    ...linear('ffn_gate_exps.weight', 'mlp.experts.gate_proj.weight', (h) => [h.nExpert, h.nFfExp, h.nEmbd]),
    experts: true,
  },
  {
    ...linear('ffn_up_exps.weight', 'mlp.experts.up_proj.weight', (h) => [h.nExpert, h.nFfExp, h.nEmbd]),
    experts: true,
  },
  {
    ...linear('ffn_down_exps.weight', 'mlp.experts.down_proj.weight', (h) => [h.nExpert, h.nEmbd, h.nFfExp]),
    experts: true,
  },
];

/** qwen2moe's shared expert, and the gate that scales its output */
const SHARED_EXPERT: readonly ArchTensor[] = [
  linear('ffn_gate_inp_shexp.weight', 'mlp.shared_expert_gate.weight', (h) => [1, h.nEmbd]),
  linear('ffn_gate_shexp.weight', 'mlp.shared_expert.gate_proj.weight', (h) => [h.nFfShexp, h.nEmbd]),
  linear('ffn_up_shexp.weight', 'mlp.shared_expert.up_proj.weight', (h) => [h.nFfShexp, h.nEmbd]),
  linear('ffn_down_shexp.weight', 'mlp.shared_expert.down_proj.weight', (h) => [h.nEmbd, h.nFfShexp]),
];

const EMBEDDING: readonly ArchTensor[] = [
  {
    gguf: 'token_embd.weight',
    hf: 'model.embed_tokens.weight',
    role: 'embedding',
    shape: (h) => [h.nVocab, h.nEmbd],
  },
];

const OUTPUT: ArchTensor = {
  gguf: 'output.weight',
  hf: 'lm_head.weight',
  role: 'output',
  shape: (h) => [h.nVocab, h.nEmbd],
};

const NORM_AND_OUTPUT: readonly ArchTensor[] = [norm('output_norm.weight', 'model.norm.weight'), OUTPUT];

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

/** a head size of its own (llama.cpp takes hidden / heads without them) */
const HEAD_SIZE_KEYS: readonly ArchKey[] = [
  { key: 'attention.key_length', value: 'headDim', type: 'u32' },
  { key: 'attention.value_length', value: 'headDim', type: 'u32' },
];

const EXPERT_KEYS: readonly ArchKey[] = [
  { key: 'expert_count', value: 'nExpert', type: 'u32' },
  { key: 'expert_used_count', value: 'nExpertUsed', type: 'u32' },
  { key: 'expert_feed_forward_length', value: 'nFfExp', type: 'u32' },
];

export const ARCHS = [
  {
    // Qwen2 and Qwen2.5: q/k/v biases, NEOX RoPE
    name: 'qwen2',
    hfLayers: 'model.layers',
    permutesQk: false,
    output: 'optional',
    layer: [INPUT_NORM, ...QKV, ...QKV_BIASES, ATTN_OUTPUT, FFN_NORM, ...GATE_UP_DOWN],
    head: EMBEDDING,
    tail: NORM_AND_OUTPUT,
    keys: COMMON_KEYS,
  },
  {
    // Llama and the models shaped like it: Mistral (head size 128 = hidden / heads), Codestral,
    // Devstral and Mistral-NeMo (head size 128, hidden / heads not); no biases, NORM RoPE
    name: 'llama',
    hfLayers: 'model.layers',
    permutesQk: true,
    output: 'optional',
    layer: LLAMA_LAYER,
    head: EMBEDDING,
    tail: NORM_AND_OUTPUT,
    keys: [
      ...COMMON_KEYS,
      { key: 'rope.dimension_count', value: 'headDim', type: 'u32' },
      { key: 'vocab_size', value: 'nVocab', type: 'u32' },
      ...HEAD_SIZE_KEYS,
    ],
  },
  {
    // Qwen3: per-head q/k norms, no biases, a head size of its own, NEOX RoPE
    name: 'qwen3',
    hfLayers: 'model.layers',
    permutesQk: false,
    output: 'optional',
    layer: [INPUT_NORM, ...QKV, ...QK_HEAD_NORMS, ATTN_OUTPUT, FFN_NORM, ...GATE_UP_DOWN],
    head: EMBEDDING,
    tail: NORM_AND_OUTPUT,
    keys: [...COMMON_KEYS, ...HEAD_SIZE_KEYS],
  },
  {
    // Gemma 2: norms around attention and the feed-forward, the output head always the embedding
    name: 'gemma2',
    hfLayers: 'model.layers',
    permutesQk: false,
    output: 'tied',
    layer: GEMMA_LAYER([]),
    head: EMBEDDING,
    tail: NORM_AND_OUTPUT,
    keys: [...COMMON_KEYS, ...HEAD_SIZE_KEYS],
  },
  {
    // Gemma 3: Gemma 2's layer with per-head q/k norms; the multimodal checkpoints' text model is
    // `model.language_model.`, beside a vision tower llama.cpp's text model leaves out
    name: 'gemma3',
    hfLayers: 'model.language_model.layers',
    permutesQk: false,
    output: 'optional',
    hfStrip: 'language_model.',
    otherTowers: /(^|\.)(vision_tower|vision_model|multi_modal_projector)\./u,
    scaledEmbedding: true,
    layer: GEMMA_LAYER(QK_HEAD_NORMS),
    head: [{ ...(EMBEDDING[0] as ArchTensor), hf: 'model.language_model.embed_tokens.weight' }],
    tail: [norm('output_norm.weight', 'model.language_model.norm.weight'), OUTPUT],
    keys: [...COMMON_KEYS, ...HEAD_SIZE_KEYS],
  },
  {
    // Phi-3: q, k and v fused in one projection, gate and up in another; llama.cpp keeps both fused
    // (attn_qkv's rows are q's, k's, then v's; ffn_up's the gate's, then up's)
    name: 'phi3',
    hfLayers: 'model.layers',
    permutesQk: false,
    output: 'optional',
    layer: [
      INPUT_NORM,
      linear('attn_qkv.weight', 'self_attn.qkv_proj.weight', (h) => [
        h.nEmbd + 2 * h.nHeadKv * impliedHead(h),
        h.nEmbd,
      ]),
      linear('attn_output.weight', 'self_attn.o_proj.weight', (h) => [h.nEmbd, h.nEmbd]),
      FFN_NORM,
      linear('ffn_up.weight', 'mlp.gate_up_proj.weight', (h) => [2 * h.nFf, h.nEmbd]),
      linear('ffn_down.weight', 'mlp.down_proj.weight', (h) => [h.nEmbd, h.nFf]),
    ],
    head: EMBEDDING,
    tail: NORM_AND_OUTPUT,
    keys: COMMON_KEYS,
  },
  {
    // Granite (3.x dense): Llama's layer and NORM RoPE, with multipliers on the embedding, the
    // residuals, attention and the logits
    name: 'granite',
    hfLayers: 'model.layers',
    permutesQk: true,
    output: 'optional',
    layer: LLAMA_LAYER,
    head: EMBEDDING,
    tail: NORM_AND_OUTPUT,
    keys: [
      ...COMMON_KEYS,
      { key: 'logit_scale', value: 'logitScale', type: 'f32' },
      { key: 'embedding_scale', value: 'embeddingScale', type: 'f32' },
      { key: 'residual_scale', value: 'residualScale', type: 'f32' },
      { key: 'attention.scale', value: 'attentionScale', type: 'f32' },
    ],
  },
  {
    // OLMo 2: no norm before attention or the feed-forward, norms after them, q/k norms over the
    // whole projection; its own output head
    name: 'olmo2',
    hfLayers: 'model.layers',
    permutesQk: false,
    output: 'required',
    layer: [
      ...QKV_IMPLIED,
      linear('attn_output.weight', 'self_attn.o_proj.weight', (h) => [h.nEmbd, h.nEmbd]),
      norm('attn_q_norm.weight', 'self_attn.q_norm.weight'),
      norm('attn_k_norm.weight', 'self_attn.k_norm.weight', (h) => [h.nHeadKv * impliedHead(h)]),
      norm('post_attention_norm.weight', 'post_attention_layernorm.weight'),
      ...GATE_UP_DOWN,
      norm('post_ffw_norm.weight', 'post_feedforward_layernorm.weight'),
    ],
    head: EMBEDDING,
    tail: NORM_AND_OUTPUT,
    keys: COMMON_KEYS,
  },
  {
    // Qwen1.5-MoE / Qwen2-MoE: Qwen2's attention, a router, experts and a gated shared expert
    name: 'qwen2moe',
    hfLayers: 'model.layers',
    permutesQk: false,
    output: 'required',
    layer: [
      INPUT_NORM,
      ...QKV_IMPLIED,
      ...QKV_BIASES,
      linear('attn_output.weight', 'self_attn.o_proj.weight', (h) => [h.nEmbd, h.nEmbd]),
      FFN_NORM,
      ...EXPERTS,
      ...SHARED_EXPERT,
    ],
    head: EMBEDDING,
    tail: NORM_AND_OUTPUT,
    keys: [
      ...COMMON_KEYS,
      ...EXPERT_KEYS,
      { key: 'expert_shared_feed_forward_length', value: 'nFfShexp', type: 'u32' },
    ],
  },
  {
    // Qwen3-MoE: Qwen3's attention, a router and experts, no shared expert
    name: 'qwen3moe',
    hfLayers: 'model.layers',
    permutesQk: false,
    output: 'optional',
    layer: [INPUT_NORM, ...QKV, ...QK_HEAD_NORMS, ATTN_OUTPUT, FFN_NORM, ...EXPERTS],
    head: EMBEDDING,
    tail: NORM_AND_OUTPUT,
    keys: [...COMMON_KEYS, ...HEAD_SIZE_KEYS, ...EXPERT_KEYS],
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
