/**
 * Reference computations written apart from the project's code (base-model.ts, peft-config.ts,
 * src/testkit/merge.ts), from the definitions, so that a test using them catches a mistake the
 * converter and the project's own merge would share: the llama q/k row permutation is llama.cpp's
 * numpy expression evaluated index by index, and the PEFT scales are literal numbers the test states.
 */
import { generateLoraTensors, type AdapterSpec } from '../../src/testkit/peft-adapter.js';
import { writeTinyModel, type TinyModelOptions } from '../../src/testkit/tiny-model.js';

/**
 * llama.cpp convert_hf_to_gguf.py `LlamaModel.permute` for a `rows × cols` row-major matrix:
 * `w.reshape(n_head, 2, rows // n_head // 2, cols).swapaxes(1, 2).reshape(rows, cols)`, evaluated as
 * numpy does: the swapped view's elements read in C order through its strides.
 */
export function hfToGgufPermute(w: Float32Array, rows: number, cols: number, nHead: number): Float32Array {
  const half = rows / nHead / 2;
  if (!Number.isInteger(half))
    throw new Error(`reshape(${nHead}, 2, ${rows / nHead / 2}, ${cols}) is invalid`);
  const dims = [nHead, 2, half, cols];
  const strides = [2 * half * cols, half * cols, cols, 1];
  // swapaxes(1, 2): axes 1 and 2 exchange their sizes and strides
  const viewDims = [dims[0] ?? 0, dims[2] ?? 0, dims[1] ?? 0, dims[3] ?? 0];
  const viewStrides = [strides[0] ?? 0, strides[2] ?? 0, strides[1] ?? 0, strides[3] ?? 0];
  const out = new Float32Array(w.length);
  let k = 0;
  for (let a = 0; a < (viewDims[0] ?? 0); a++) {
    for (let b = 0; b < (viewDims[1] ?? 0); b++) {
      for (let c = 0; c < (viewDims[2] ?? 0); c++) {
        for (let d = 0; d < (viewDims[3] ?? 0); d++) {
          const from = a * (viewStrides[0] ?? 0) + b * (viewStrides[1] ?? 0) + c * (viewStrides[2] ?? 0) + d;
          out[k++] = w[from] ?? Number.NaN;
        }
      }
    }
  }
  return out;
}

export interface ReferenceOptions {
  /** the tiny base the adapter is merged into */
  model: TinyModelOptions;
  /** PEFT's scale of each module, as the test states it */
  scale: (module: string) => number;
  /** RoPE heads per GGUF tensor name whose rows llama.cpp permutes (llama arch q/k), as the test states them */
  permuteHeads?: (ggufName: string) => number | null;
}

/**
 * Writes the tiny base with W + scale·B·A merged into every adapted weight (float64 sums), the
 * delta permuted like the weight for llama q/k. A tensor of stacked experts ([experts, out, in], as
 * llama.cpp stacks Hugging Face's `mlp.experts.<e>.<proj>`) gets each expert's delta in its slice.
 * Independent of the converter and of merge.ts.
 */
export async function writeReferenceMerged(
  path: string,
  spec: AdapterSpec,
  options: ReferenceOptions,
): Promise<void> {
  const tensors = new Map(generateLoraTensors(spec).map((t) => [t.name, t]));
  const deltaOf = (module: string, ggufName: string): Float32Array | null => {
    const embedding = embeddingDeltaOf(module);
    if (embedding) return embedding;
    const a = tensors.get(`base_model.model.${module}.lora_A.weight`);
    const b = tensors.get(`base_model.model.${module}.lora_B.weight`);
    if (!a || !b) return null;
    const [rank = 0, inF = 0] = a.shape;
    const [outF = 0] = b.shape;
    const s = options.scale(module);
    let delta: Float32Array = new Float32Array(outF * inF);
    for (let o = 0; o < outF; o++) {
      for (let i = 0; i < inF; i++) {
        let acc = 0;
        for (let k = 0; k < rank; k++) acc += (b.values[o * rank + k] ?? 0) * (a.values[k * inF + i] ?? 0);
        delta[o * inF + i] = s * acc;
      }
    }
    const heads = options.permuteHeads?.(ggufName) ?? null;
    if (heads !== null) delta = hfToGgufPermute(delta, outF, inF, heads);
    return delta;
  };
  // PEFT's Embedding: A [r, vocab], B [dim, r]; the weight is [vocab, dim], so the delta is s·(B·A)ᵀ
  const embeddingDeltaOf = (module: string): Float32Array | null => {
    const a = tensors.get(`base_model.model.${module}.lora_embedding_A`);
    const b = tensors.get(`base_model.model.${module}.lora_embedding_B`);
    if (!a || !b) return null;
    const [rank = 0, vocab = 0] = a.shape;
    const [dim = 0] = b.shape;
    const s = options.scale(module);
    const delta = new Float32Array(vocab * dim);
    for (let v = 0; v < vocab; v++) {
      for (let d = 0; d < dim; d++) {
        let acc = 0;
        for (let k = 0; k < rank; k++) acc += (b.values[d * rank + k] ?? 0) * (a.values[k * vocab + v] ?? 0);
        delta[v * dim + d] = s * acc;
      }
    }
    return delta;
  };
  await writeTinyModel(path, {
    ...options.model,
    transform: (tensor, data) => {
      const module = tensor.hfName.replace(/\.weight$/u, '');
      if (tensor.shape.length !== 3) {
        const delta = deltaOf(module, tensor.name);
        return delta ? data.map((w, k) => w + (delta[k] ?? 0)) : data;
      }
      const [experts = 0, outF = 0, inF = 0] = tensor.shape;
      const out = Float32Array.from(data);
      for (let e = 0; e < experts; e++) {
        const delta = deltaOf(module.replace('.experts.', `.experts.${e}.`), tensor.name);
        if (!delta) continue;
        for (let k = 0; k < outF * inF; k++)
          out[e * outF * inF + k] = (out[e * outF * inF + k] ?? 0) + (delta[k] ?? 0);
      }
      return out;
    },
  });
}
