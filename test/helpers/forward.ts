/**
 * A reference forward pass of the tiny qwen2 model (src/testkit/tiny-model.ts), written from the
 * model's definition in float64, apart from llama.cpp and from the converter: RMS norm, q/k/v with
 * biases, NEOX RoPE, grouped-query causal attention, SwiGLU, the output head tied to the embedding.
 * A PEFT LoRA (`W·x + s·B·A·x`) can be applied from a given position on, as an activated LoRA is, so
 * a test can state PEFT's semantics and hold llama-server to them.
 */
import { generateLoraTensors, type AdapterSpec } from '../../src/testkit/peft-adapter.js';
import { TINY_HPARAMS, tinyModelWeights, type TinyModelOptions } from '../../src/testkit/tiny-model.js';

export interface ForwardLora {
  spec: AdapterSpec;
  /** PEFT's scale of each module, as the test states it */
  scale: (module: string) => number;
  /** the first position the LoRA applies to (PEFT's aLoRA start); 0: every position; null: none */
  from: number | null;
}

interface Linear {
  w: Float32Array;
  out: number;
  in: number;
  bias?: Float32Array;
}

/** The weights of the tiny model, by GGUF tensor name. */
function weightsOf(model: TinyModelOptions): Map<string, Float32Array> {
  if ((model.arch ?? 'qwen2') !== 'qwen2' || model.tiedEmbeddings === false) {
    throw new Error('the reference forward pass is the tiny qwen2 model with tied embeddings');
  }
  return new Map([...tinyModelWeights(model)].map(([t, data]) => [t.name, data]));
}

function linear(weights: Map<string, Float32Array>, name: string, out: number, inF: number): Linear {
  const w = weights.get(`${name}.weight`);
  if (!w) throw new Error(`no ${name}.weight`);
  const bias = weights.get(`${name}.bias`);
  return { w, out, in: inF, ...(bias ? { bias } : {}) };
}

/** y = W·x (+ b), W [out, in] row-major */
function apply(l: Linear, x: Float64Array): Float64Array {
  const y = new Float64Array(l.out);
  for (let o = 0; o < l.out; o++) {
    let acc = l.bias ? (l.bias[o] ?? 0) : 0;
    const row = o * l.in;
    for (let i = 0; i < l.in; i++) acc += (l.w[row + i] ?? 0) * (x[i] ?? 0);
    y[o] = acc;
  }
  return y;
}

function rmsNorm(x: Float64Array, w: Float32Array, eps: number): Float64Array {
  let ss = 0;
  for (const v of x) ss += v * v;
  const k = 1 / Math.sqrt(ss / x.length + eps);
  return x.map((v, i) => v * k * (w[i] ?? 0));
}

/** NEOX RoPE on every head of `x` (heads × dim): pairs (i, i + dim/2). */
function rope(x: Float64Array, heads: number, dim: number, pos: number, base: number): Float64Array {
  const out = new Float64Array(x);
  const half = dim / 2;
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      const theta = pos * base ** ((-2 * i) / dim);
      const a = x[h * dim + i] ?? 0;
      const b = x[h * dim + i + half] ?? 0;
      out[h * dim + i] = a * Math.cos(theta) - b * Math.sin(theta);
      out[h * dim + i + half] = a * Math.sin(theta) + b * Math.cos(theta);
    }
  }
  return out;
}

/** The LoRA delta s·B·(A·x) of one module, or null when the adapter has none there. */
type Delta = (x: Float64Array) => Float64Array;

function loraDeltas(lora: ForwardLora): Map<string, Delta> {
  const tensors = new Map(generateLoraTensors(lora.spec).map((t) => [t.name, t]));
  const out = new Map<string, Delta>();
  for (const m of lora.spec.modules) {
    const a = tensors.get(`base_model.model.${m.module}.lora_A.weight`);
    const b = tensors.get(`base_model.model.${m.module}.lora_B.weight`);
    if (!a || !b) continue;
    const r = a.shape[0] ?? 0;
    const s = lora.scale(m.module);
    out.set(m.module, (x) => {
      const ax = new Float64Array(r);
      for (let k = 0; k < r; k++) {
        let acc = 0;
        for (let i = 0; i < m.inFeatures; i++) acc += (a.values[k * m.inFeatures + i] ?? 0) * (x[i] ?? 0);
        ax[k] = acc;
      }
      const y = new Float64Array(m.outFeatures);
      for (let o = 0; o < m.outFeatures; o++) {
        let acc = 0;
        for (let k = 0; k < r; k++) acc += (b.values[o * r + k] ?? 0) * (ax[k] ?? 0);
        y[o] = s * acc;
      }
      return y;
    });
  }
  return out;
}

/**
 * The log-softmax over the vocabulary at the last position of `tokens`, the LoRA (if any) applied to
 * the positions `lora.from` and after.
 */
export function lastLogProbs(
  tokens: readonly number[],
  model: TinyModelOptions,
  lora?: ForwardLora,
): Float64Array {
  const h = TINY_HPARAMS;
  const weights = weightsOf(model);
  const nLayer = model.nLayer ?? h.nLayer;
  const embd = weights.get('token_embd.weight');
  if (!embd) throw new Error('no token_embd.weight');
  const nVocab = embd.length / h.nEmbd;
  const deltas = lora && lora.from !== null ? loraDeltas(lora) : new Map<string, Delta>();
  const from = lora?.from ?? Number.POSITIVE_INFINITY;
  const kvDim = h.nHeadKv * h.headDim;
  const qDim = h.nHead * h.headDim;

  /** a projection at `pos`: the base weight, plus the LoRA delta where it applies */
  const project = (l: Linear, module: string, x: Float64Array, pos: number): Float64Array => {
    const y = apply(l, x);
    const delta = pos >= from ? deltas.get(module) : undefined;
    if (delta) {
      const d = delta(x);
      for (let i = 0; i < y.length; i++) y[i] = (y[i] ?? 0) + (d[i] ?? 0);
    }
    return y;
  };

  let hidden: Float64Array[] = tokens.map((t) =>
    Float64Array.from(embd.subarray(t * h.nEmbd, (t + 1) * h.nEmbd)),
  );
  for (let l = 0; l < nLayer; l++) {
    const blk = `blk.${l}`;
    const hf = `model.layers.${l}`;
    const q = linear(weights, `${blk}.attn_q`, qDim, h.nEmbd);
    const k = linear(weights, `${blk}.attn_k`, kvDim, h.nEmbd);
    const v = linear(weights, `${blk}.attn_v`, kvDim, h.nEmbd);
    const o = linear(weights, `${blk}.attn_output`, h.nEmbd, qDim);
    const gate = linear(weights, `${blk}.ffn_gate`, h.nFf, h.nEmbd);
    const up = linear(weights, `${blk}.ffn_up`, h.nFf, h.nEmbd);
    const down = linear(weights, `${blk}.ffn_down`, h.nEmbd, h.nFf);
    const attnNorm = weights.get(`${blk}.attn_norm.weight`) ?? new Float32Array();
    const ffnNorm = weights.get(`${blk}.ffn_norm.weight`) ?? new Float32Array();

    const qs: Float64Array[] = [];
    const ks: Float64Array[] = [];
    const vs: Float64Array[] = [];
    hidden.forEach((x, pos) => {
      const n = rmsNorm(x, attnNorm, h.rmsEps);
      qs.push(rope(project(q, `${hf}.self_attn.q_proj`, n, pos), h.nHead, h.headDim, pos, h.ropeFreqBase));
      ks.push(rope(project(k, `${hf}.self_attn.k_proj`, n, pos), h.nHeadKv, h.headDim, pos, h.ropeFreqBase));
      vs.push(project(v, `${hf}.self_attn.v_proj`, n, pos));
    });
    hidden = hidden.map((x, pos) => {
      const attn = new Float64Array(qDim);
      for (let head = 0; head < h.nHead; head++) {
        const kvHead = Math.floor(head / (h.nHead / h.nHeadKv));
        const scores = new Float64Array(pos + 1);
        for (let j = 0; j <= pos; j++) {
          let dot = 0;
          for (let d = 0; d < h.headDim; d++) {
            dot += (qs[pos]?.[head * h.headDim + d] ?? 0) * (ks[j]?.[kvHead * h.headDim + d] ?? 0);
          }
          scores[j] = dot / Math.sqrt(h.headDim);
        }
        const p = softmax(scores);
        for (let d = 0; d < h.headDim; d++) {
          let acc = 0;
          for (let j = 0; j <= pos; j++) acc += (p[j] ?? 0) * (vs[j]?.[kvHead * h.headDim + d] ?? 0);
          attn[head * h.headDim + d] = acc;
        }
      }
      const afterAttn = add(x, project(o, `${hf}.self_attn.o_proj`, attn, pos));
      const n = rmsNorm(afterAttn, ffnNorm, h.rmsEps);
      const g = project(gate, `${hf}.mlp.gate_proj`, n, pos);
      const u = project(up, `${hf}.mlp.up_proj`, n, pos);
      const act = g.map((gv, i) => (gv / (1 + Math.exp(-gv))) * (u[i] ?? 0));
      return add(afterAttn, project(down, `${hf}.mlp.down_proj`, act, pos));
    });
  }
  const last = hidden[hidden.length - 1];
  if (!last) throw new Error('no tokens');
  const final = rmsNorm(last, weights.get('output_norm.weight') ?? new Float32Array(), h.rmsEps);
  const logits = apply({ w: embd, out: nVocab, in: h.nEmbd }, final);
  return logSoftmax(logits);
}

function add(a: Float64Array, b: Float64Array): Float64Array {
  return a.map((v, i) => v + (b[i] ?? 0));
}

function softmax(x: Float64Array): Float64Array {
  const max = Math.max(...x);
  const e = x.map((v) => Math.exp(v - max));
  const sum = e.reduce((s, v) => s + v, 0);
  return e.map((v) => v / sum);
}

function logSoftmax(x: Float64Array): Float64Array {
  const max = Math.max(...x);
  let sum = 0;
  for (const v of x) sum += Math.exp(v - max);
  const lse = max + Math.log(sum);
  return x.map((v) => v - lse);
}
