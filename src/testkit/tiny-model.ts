/**
 * A tiny, deterministic base model in GGUF that the real llama-server loads and generates from, so
 * adapter conversion can be proven against llama.cpp without downloading anything.
 *
 * Any architecture of arch.ts, laid out as its row says, with small shared hyper-parameters: RMS
 * norm, GQA attention, SwiGLU FFN, tied embeddings by default where the architecture allows both,
 * four experts (two used per token) for the mixture-of-experts rows, and the multipliers of granite.
 * `qwen2` (the default) is Qwen2.5-Coder-1.5B scaled down; `TINY_SHAPES` are the other shapes one row
 * covers (Mistral's and Devstral's head sizes on `llama`). Facts from llama.cpp beyond the table:
 * src/llama-vocab.cpp (BPE vocabulary keys).
 *
 * Vocabulary: byte-level BPE (`tokenizer.ggml.model = gpt2`, pre-tokenizer `qwen2`) with GPT-2's
 * byte→unicode token text. Only bytes 0x00–0x7F are tokens, plus merges of them, so every token decodes
 * to complete UTF-8 on its own: llama-server leaves out the log-probs of a token that ends inside a
 * multi-byte character.
 */
import { archKey, archOf, type ArchHparams, type ArchName, type ArchTensor } from '../arch.js';
import { GgmlType, gv, type GgufTypedValue } from '../formats/ggml-types.js';
import { writeGguf, type GgufWriteResult } from '../files/gguf-writer.js';
import { expertModule } from '../gguf-names.js';
import type { LoraTargetSpec } from './peft-adapter.js';
import { Rng } from './rng.js';

export type TinyArch = ArchName;
export type TinyWeightType = 'F32' | 'F16' | 'BF16' | 'Q8_0';

/** Hyper-parameters shared by every tiny model (the layer count and the shapes are options). */
export const TINY_HPARAMS = {
  nEmbd: 64,
  nHead: 4,
  nHeadKv: 2,
  headDim: 16,
  nFf: 128,
  nLayer: 2,
  nCtxTrain: 2048,
  ropeFreqBase: 1_000_000,
  rmsEps: 1e-6,
  nExpert: 4,
  nExpertUsed: 2,
  nFfExp: 32,
  nFfShexp: 64,
  logitScale: 2,
  embeddingScale: 2,
  residualScale: 0.5,
  attentionScale: 0.125,
} as const;

/**
 * Other shapes of the same architecture, scaled down: what differs between models of one row (head
 * size against hidden size / heads).
 */
export const TINY_SHAPES = {
  /** Mistral 7B, Codestral 22B: head size 128 = hidden / heads */
  mistral: { nEmbd: 256, nHead: 2, nHeadKv: 1, headDim: 128 },
  /** Devstral and Mistral Small 24B, Mistral NeMo: head size 128, hidden / heads another */
  devstral: { nEmbd: 160, nHead: 2, nHeadKv: 1, headDim: 128 },
  /** Qwen3: a head size of its own (hidden / heads is 16 here) */
  qwen3: { headDim: 32 },
} as const satisfies Record<string, Partial<ArchHparams>>;

export const TINY_DEFAULT_SEED = 20261127;

export interface TinyModelOptions {
  /** default TINY_DEFAULT_SEED */
  seed?: number;
  /** default `qwen2` */
  arch?: TinyArch;
  /** 2 or 3 are the intended values; default 2 */
  nLayer?: number;
  /**
   * No `output.weight`, the LM head reuses `token_embd.weight` (default true, like Qwen2.5-1.5B, where
   * the architecture allows both; an architecture that requires or never has one decides).
   */
  tiedEmbeddings?: boolean;
  /** hyper-parameters other than `TINY_HPARAMS` (e.g. one of `TINY_SHAPES`) */
  hparams?: Partial<Omit<ArchHparams, 'nLayer' | 'nVocab'>>;
  /** type of the 2-D weights; norms and biases stay F32 (default F32) */
  weightType?: TinyWeightType;
  /**
   * Replaces a tensor's float32 weights before they are written: how a test writes a base with
   * `W + scale·B·A` merged in. Called once per tensor, in file order.
   */
  transform?: (tensor: TinyTensor, data: Float32Array) => Float32Array;
  /** `general.name`; default `codi-tiny-<arch>` (see `defaultName`) */
  name?: string;
}

export interface TinyTensor {
  /** GGUF tensor name, e.g. `blk.0.attn_q.weight` */
  readonly name: string;
  /**
   * The matching Hugging Face name, e.g. `model.layers.0.self_attn.q_proj.weight` (for PEFT targets).
   * For arch `llama`, llama.cpp's NORM RoPE means a real HF checkpoint's q_proj/k_proj rows would be
   * permuted on conversion (convert_hf_to_gguf LlamaModel.permute); these generated weights are
   * defined in GGUF order, so "the HF weight" of attn_q/attn_k is the inverse permutation of them.
   * For stacked experts, the name without the expert's number (`expertModule` gives each expert's).
   */
  readonly hfName: string;
  /** PyTorch order: [out, in] for a linear weight */
  readonly shape: readonly number[];
  /** ggml order (shape reversed) */
  readonly ne: readonly number[];
  readonly type: GgmlType;
  /** standard deviation of the generated weights (norm weights: around 1) */
  readonly std: number;
}

const WEIGHT_TYPES: Record<TinyWeightType, GgmlType> = {
  F32: GgmlType.F32,
  F16: GgmlType.F16,
  BF16: GgmlType.BF16,
  Q8_0: GgmlType.Q8_0,
};
/** LLAMA_FTYPE_* of include/llama.h */
const FILE_TYPES: Record<TinyWeightType, number> = { F32: 0, F16: 1, Q8_0: 7, BF16: 32 };

interface Resolved {
  seed: number;
  arch: TinyArch;
  nLayer: number;
  tied: boolean;
  weightType: TinyWeightType;
  hparams: ArchHparams;
}

function resolve(options: TinyModelOptions): Resolved {
  const nLayer = options.nLayer ?? TINY_HPARAMS.nLayer;
  if (!Number.isInteger(nLayer) || nLayer < 1 || nLayer > 8)
    throw new RangeError(`nLayer ${nLayer}: use 1–8`);
  const arch = options.arch ?? 'qwen2';
  const output = archOf(arch).output;
  const fixed = output === 'optional' ? null : output === 'tied';
  if (fixed !== null && options.tiedEmbeddings !== undefined && options.tiedEmbeddings !== fixed) {
    throw new RangeError(`${arch} models ${fixed ? 'always tie' : 'never tie'} their output head`);
  }
  return {
    seed: options.seed ?? TINY_DEFAULT_SEED,
    arch,
    nLayer,
    tied: fixed ?? options.tiedEmbeddings ?? true,
    weightType: options.weightType ?? 'F32',
    hparams: { ...TINY_HPARAMS, ...options.hparams, nLayer, nVocab: tinyVocab().tokens.length },
  };
}

// ---------------------------------------------------------------------------------------------
// Vocabulary

/** GPT-2's byte→unicode map: printable bytes stand for themselves, the rest move to U+0100 upwards. */
export function byteToUnicode(): string[] {
  const printable = (b: number): boolean =>
    (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const out = new Array<string>(256);
  let next = 0;
  for (let b = 0; b < 256; b++) {
    out[b] = String.fromCodePoint(printable(b) ? b : 256 + next++);
  }
  return out;
}

/** Common English and code fragments merged into single tokens (all ASCII). */
const FRAGMENTS = [
  'def| def|return| return|self| self|import| import|from| from|class| class|print| print',
  'if| if|else| else|elif| elif|for| for|in| in|while| while|True| True|False| False',
  'None| None|and| and|or| or|not| not|is| is|the| the|to| to|of| of| a| b| c| x| y| i',
  ' n|add| add|sum| sum|len| len|range| range|list| list|int| int|str| str|value| value',
  'result| result|function| function|const| const|let| let|var| var|=>| =>|==| ==|!=',
  ' !=|+=| +=| =| +| -| *| /|()|):|(self|    |        |\n\n|\n    |er|on|an|re|at|en',
  'es|ing|ion|tion|ed|th|he|ll|st|ch|ar|al|it|ou|le|se|ne|ct|data| data|test| test|assert',
  ' assert|error| error|file| file|path| path|name| name|json|api|http|user| user|adapter',
  ' adapter|model| model|lora| lora',
]
  .join('|')
  .split('|');

export const SPECIAL_TOKENS = ['<|endoftext|>', '<|im_start|>', '<|im_end|>'] as const;

export interface TinyVocab {
  readonly tokens: readonly string[];
  readonly tokenTypes: Int32Array;
  readonly merges: readonly string[];
  readonly bosId: number;
  readonly eosId: number;
  readonly eotId: number;
  readonly padId: number;
}

/** llama.cpp LLAMA_TOKEN_TYPE_NORMAL / _CONTROL */
const TOKEN_NORMAL = 1;
const TOKEN_CONTROL = 3;

export function tinyVocab(): TinyVocab {
  const map = byteToUnicode();
  const encode = (s: string): string => Array.from(Buffer.from(s, 'latin1'), (b) => map[b] ?? '').join('');
  const tokens: string[] = [];
  const ids = new Map<string, number>();
  const add = (t: string): void => {
    if (!ids.has(t)) {
      ids.set(t, tokens.length);
      tokens.push(t);
    }
  };
  for (let b = 0; b < 0x80; b++) add(map[b] ?? '');
  const merges: string[] = [];
  const seen = new Set<string>();
  // a fragment is reached left to right: (prefix, next char) for each prefix, so every merge joins two
  // existing tokens into a new one; shorter prefixes get the lower ranks
  const steps: [number, string, string][] = [];
  for (const fragment of FRAGMENTS) {
    const text = encode(fragment);
    const chars = Array.from(text);
    for (let k = 2; k <= chars.length; k++) {
      const left = chars.slice(0, k - 1).join('');
      const right = chars[k - 1] ?? '';
      const merge = `${left} ${right}`;
      if (!seen.has(merge)) {
        seen.add(merge);
        steps.push([k, left, right]);
      }
    }
  }
  steps.sort((a, b) => a[0] - b[0]);
  for (const [, left, right] of steps) {
    merges.push(`${left} ${right}`);
    add(left + right);
  }
  const firstSpecial = tokens.length;
  for (const s of SPECIAL_TOKENS) add(s);
  const tokenTypes = new Int32Array(tokens.length).fill(TOKEN_NORMAL);
  tokenTypes.fill(TOKEN_CONTROL, firstSpecial);
  return {
    tokens,
    tokenTypes,
    merges,
    bosId: firstSpecial,
    eosId: firstSpecial + 2,
    eotId: firstSpecial + 2,
    padId: firstSpecial,
  };
}

/** ChatML, as Qwen2.5 uses it (llama-server parses it at start-up). */
export const TINY_CHAT_TEMPLATE =
  "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

// ---------------------------------------------------------------------------------------------
// Tensors and weights

/** Spread of the generated weights: linear layers scaled by their fan-in; norm weights around 1. */
function stdOf(tensor: ArchTensor, shape: readonly number[]): number {
  switch (tensor.role) {
    case 'embedding':
    case 'output':
      return 0.3;
    case 'norm':
    case 'bias':
      return 0.1;
    case 'linear':
      // the fan-in: the last dimension, also of experts stacked along the first
      return 1 / Math.sqrt(shape.at(-1) ?? 1);
  }
}

/** The tensors of a tiny model, in file order: its architecture's row of arch.ts. */
export function tinyModelTensors(options: TinyModelOptions = {}): TinyTensor[] {
  const r = resolve(options);
  const arch = archOf(r.arch);
  const h = r.hparams;
  const wType = WEIGHT_TYPES[r.weightType];
  const list: TinyTensor[] = [];
  const add = (t: ArchTensor, name: string, hfName: string): void => {
    const shape = t.shape(h);
    // weight matrices (and stacked experts) in the chosen type; norms and biases stay F32
    const type = shape.length >= 2 ? wType : GgmlType.F32;
    list.push({ name, hfName, shape, ne: [...shape].reverse(), type, std: stdOf(t, shape) });
  };
  for (const t of arch.head) add(t, t.gguf, t.hf);
  for (let i = 0; i < r.nLayer; i++) {
    for (const t of arch.layer) add(t, `blk.${i}.${t.gguf}`, `${arch.hfLayers}.${i}.${t.hf}`);
  }
  for (const t of arch.tail) if (t.role !== 'output' || !r.tied) add(t, t.gguf, t.hf);
  return list;
}

/** FNV-1a over the name, mixed with the seed: each tensor's weights depend only on (seed, name). */
function tensorSeed(seed: number, name: string): number {
  let h = 0x811c9dc5 ^ seed;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/**
 * The float32 weights of one tensor. They depend only on the seed and the tensor's name, so a tensor
 * has the same weights whatever the arch, layer count or embedding tying of the model around it.
 */
export function tinyTensorWeights(tensor: TinyTensor, seed: number = TINY_DEFAULT_SEED): Float32Array {
  const rng = new Rng(tensorSeed(seed, tensor.name));
  const n = tensor.shape.reduce((a, b) => a * b, 1);
  const data = rng.normals(n, tensor.std);
  if (tensor.name.endsWith('norm.weight')) for (let i = 0; i < n; i++) data[i] = 1 + (data[i] ?? 0);
  return data;
}

/** Every tensor with its weights (before `transform`), in file order. */
export function* tinyModelWeights(options: TinyModelOptions = {}): Generator<[TinyTensor, Float32Array]> {
  const { seed } = resolve(options);
  for (const t of tinyModelTensors(options)) yield [t, tinyTensorWeights(t, seed)];
}

function metadata(r: Resolved, name: string): [string, GgufTypedValue][] {
  const a = r.arch;
  const h = r.hparams;
  const vocab = tinyVocab();
  const kv: [string, GgufTypedValue][] = [
    ['general.architecture', gv.str(a)],
    ['general.type', gv.str('model')],
    ['general.name', gv.str(name)],
    ['general.file_type', gv.u32(FILE_TYPES[r.weightType])],
    ['general.quantization_version', gv.u32(2)],
  ];
  for (const k of archOf(a).keys) {
    const value = h[k.value];
    kv.push([archKey(a, k.key), k.type === 'u32' ? gv.u32(value) : gv.f32(value)]);
  }
  kv.push(
    ['tokenizer.ggml.model', gv.str('gpt2')],
    ['tokenizer.ggml.pre', gv.str('qwen2')],
    ['tokenizer.ggml.tokens', gv.strings(vocab.tokens)],
    ['tokenizer.ggml.token_type', gv.i32s(vocab.tokenTypes)],
    ['tokenizer.ggml.merges', gv.strings(vocab.merges)],
    ['tokenizer.ggml.bos_token_id', gv.u32(vocab.bosId)],
    ['tokenizer.ggml.eos_token_id', gv.u32(vocab.eosId)],
    ['tokenizer.ggml.eot_token_id', gv.u32(vocab.eotId)],
    ['tokenizer.ggml.padding_token_id', gv.u32(vocab.padId)],
    ['tokenizer.ggml.add_bos_token', gv.bool(false)],
    ['tokenizer.chat_template', gv.str(TINY_CHAT_TEMPLATE)],
  );
  return kv;
}

/**
 * `codi-tiny-<arch>`, but not for phi3: llama.cpp gives a model whose name says phi-3 the special
 * tokens of Phi-3's own vocabulary (`</s>`), and fails to load one whose vocabulary lacks them.
 */
function defaultName(arch: TinyArch): string {
  return arch === 'phi3' ? 'codi-tiny-phi' : `codi-tiny-${arch}`;
}

export interface TinyModelInfo extends GgufWriteResult {
  readonly arch: TinyArch;
  readonly nLayer: number;
  readonly nVocab: number;
  readonly tiedEmbeddings: boolean;
  readonly tensors: readonly (GgufWriteResult['tensors'][number] & TinyTensor)[];
}

/** Writes a tiny base model GGUF (atomically). Same options → byte-identical file. */
export async function writeTinyModel(path: string, options: TinyModelOptions = {}): Promise<TinyModelInfo> {
  const r = resolve(options);
  const tensors = tinyModelTensors(options);
  const result = await writeGguf(
    path,
    { metadata: metadata(r, options.name ?? defaultName(r.arch)), tensors },
    (spec, i) => {
      const t = tensors[i] ?? (spec as TinyTensor);
      const data = tinyTensorWeights(t, r.seed);
      return options.transform ? options.transform(t, data) : data;
    },
  );
  return {
    ...result,
    arch: r.arch,
    nLayer: r.nLayer,
    nVocab: tinyVocab().tokens.length,
    tiedEmbeddings: r.tied,
    tensors: result.tensors.map((w, i) => ({ ...(tensors[i] as TinyTensor), ...w })),
  };
}

/** The default tiny model: arch `qwen2`, tied embeddings. */
export function writeTinyQwen2Model(
  path: string,
  options: Omit<TinyModelOptions, 'arch'> = {},
): Promise<TinyModelInfo> {
  return writeTinyModel(path, { ...options, arch: 'qwen2' });
}

/**
 * Every linear module of a tiny model as a LoRA target, with PEFT's module names (experts one by
 * one); `output` adds the LM head where the model has one of its own.
 */
export function tinyLoraTargets(options: TinyModelOptions = {}, output = false): LoraTargetSpec[] {
  const r = resolve(options);
  const arch = archOf(r.arch);
  const targets: LoraTargetSpec[] = [];
  const add = (module: string, [out = 0, inF = 0]: readonly number[]): void => {
    targets.push({ module, inFeatures: inF, outFeatures: out });
  };
  for (let i = 0; i < r.nLayer; i++) {
    for (const t of arch.layer) {
      if (t.role !== 'linear') continue;
      const hf = `${arch.hfLayers}.${i}.${t.hf}`;
      const shape = t.shape(r.hparams);
      if (t.experts) {
        for (let e = 0; e < (shape[0] ?? 0); e++) add(expertModule(hf, e), shape.slice(1));
      } else {
        add(hf.replace(/\.weight$/u, ''), shape);
      }
    }
  }
  if (output && !r.tied) {
    for (const t of arch.tail)
      if (t.role === 'output') add(t.hf.replace(/\.weight$/u, ''), t.shape(r.hparams));
  }
  return targets;
}
