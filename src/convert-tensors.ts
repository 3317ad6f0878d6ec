/**
 * The tensors of a converted adapter: which GGUF tensors the plan makes (names, shapes, types), the
 * tensors of the weights file each is made of (by their safetensors entries: a `.bin`'s tensors are
 * given the entries the safetensors writer would give them, convert-reader.ts), and how their values get there (as they are, transposed,
 * permuted, scaled, or stacked per expert).
 */
import { permuteRopeRows, type PlannedModule } from './base-model.js';
import type { OutType } from './constants.js';
import type { TensorReader } from './convert-reader.js';
import { CodiError } from './errors.js';
import type { FileRange, GgufTensorSpec } from './files/gguf-writer.js';
import { GGML_TYPE_OF_DTYPE, GgmlType } from './formats/ggml-types.js';
import { neFromTorchShape } from './formats/gguf.js';
import { decodeToF32 } from './formats/numeric.js';
import type { SafetensorsTensorInfo } from './formats/safetensors.js';
import { LORA_A_SUFFIX, LORA_B_SUFFIX } from './gguf-names.js';

const GGML_OF: Record<OutType, GgmlType> = {
  f32: GgmlType.F32,
  f16: GgmlType.F16,
  bf16: GgmlType.BF16,
  q8_0: GgmlType.Q8_0,
};
const Q8_0_BLOCK = 32;

/** One expert's A or B among the tensors stacked into one GGUF tensor. */
export interface StackedPart {
  /** the safetensors tensor */
  source: string;
  expert: number;
  /** its own rank: the rows (A) or columns (B) it fills of the common rank */
  rank: number;
  factor: number;
}

/** One tensor of the GGUF: its spec and what it is made of. */
export type PlannedTensor =
  | {
      kind: 'single';
      spec: GgufTensorSpec;
      /** the safetensors tensor name */
      source: string;
      transpose: boolean;
      factor: number;
      permuteHeads: number | null;
    }
  | {
      kind: 'stacked';
      spec: GgufTensorSpec;
      half: 'a' | 'b';
      /** experts, common rank, and one expert's [out, in] (the base tensor's, per expert) */
      experts: number;
      rank: number;
      rows: number;
      cols: number;
      parts: StackedPart[];
    };

/**
 * The GGUF's tensors, from the plan alone (no file is read): a cache hit reports the same names, types
 * and q8_0 fallbacks that writing it did.
 */
export function plannedTensors(
  plan: readonly PlannedModule[],
  outtype: OutType,
): { specs: PlannedTensor[]; f16Fallback: string[] } {
  const f16Fallback: string[] = [];
  const typeFor = (name: string, ne: number[]): GgmlType => {
    if (outtype !== 'q8_0') return GGML_OF[outtype];
    if ((ne[0] ?? 0) % Q8_0_BLOCK === 0) return GgmlType.Q8_0;
    f16Fallback.push(name);
    return GgmlType.F16;
  };
  const spec = (name: string, shape: number[]): GgufTensorSpec => {
    const ne = neFromTorchShape(shape);
    return { name, ne, type: typeFor(name, ne) };
  };
  // llama.cpp layouts (src/llama-adapter.cpp): lora_a ne = [in, r] and lora_b ne = [r, out], i.e. the
  // PEFT matrices as they are; for token embeddings lora_a is [r, n_vocab] (rows fetched per token),
  // so PEFT's [r, n_vocab] lora_embedding_A is transposed, and lora_b stays [n_embd, r]
  const specs: PlannedTensor[] = [];
  const stacks = new Map<string, PlannedModule[]>();
  for (const p of plan) {
    if (p.expert !== null) {
      const group = stacks.get(p.target);
      if (group) group.push(p);
      else stacks.set(p.target, [p]);
      continue;
    }
    const embedding = p.module.kind === 'embedding';
    const aShape = embedding ? [p.module.inFeatures, p.rank] : [p.rank, p.module.inFeatures];
    const single = { kind: 'single', transpose: false, factor: 1, permuteHeads: null } as const;
    specs.push({
      ...single,
      spec: spec(`${p.target}${LORA_A_SUFFIX}`, aShape),
      source: p.module.a.name,
      transpose: embedding,
    });
    specs.push({
      ...single,
      spec: spec(`${p.target}${LORA_B_SUFFIX}`, p.module.b.shape),
      source: p.module.b.name,
      factor: p.fold,
      permuteHeads: p.permuteHeads,
    });
  }
  for (const [target, group] of stacks) specs.push(...stackedTensors(target, group, spec));
  return { specs, f16Fallback };
}

/**
 * The experts' LoRAs of one stacked tensor, stacked the way llama.cpp's converter stacks them: A as
 * [experts, r, in] (ne [in, r, experts]), B as [experts, out, r]. Experts without a LoRA are zeros
 * (no change, as in PEFT), and ranks below the common one are padded with zeros, their own scale
 * folded into B (llama.cpp scales the whole tensor by alpha / its one rank).
 */
function stackedTensors(
  target: string,
  group: readonly PlannedModule[],
  spec: (name: string, shape: number[]) => GgufTensorSpec,
): PlannedTensor[] {
  const first = group[0];
  if (!first?.expert) throw new CodiError('INTERNAL', `no experts for ${target}`);
  const experts = first.expert.count;
  const rank = first.tensorRank;
  const rows = first.module.outFeatures;
  const cols = first.module.inFeatures;
  const sorted = [...group].sort((x, y) => (x.expert?.index ?? 0) - (y.expert?.index ?? 0));
  const parts = (half: 'a' | 'b'): StackedPart[] =>
    sorted.map((p) => ({
      source: half === 'a' ? p.module.a.name : p.module.b.name,
      expert: p.expert?.index ?? 0,
      rank: p.module.rank,
      factor: half === 'a' ? 1 : p.fold,
    }));
  const stacked = { kind: 'stacked', experts, rank, rows, cols } as const;
  return [
    {
      ...stacked,
      half: 'a',
      spec: spec(`${target}${LORA_A_SUFFIX}`, [experts, rank, cols]),
      parts: parts('a'),
    },
    {
      ...stacked,
      half: 'b',
      spec: spec(`${target}${LORA_B_SUFFIX}`, [experts, rows, rank]),
      parts: parts('b'),
    },
  ];
}

/** A planned tensor with the safetensors tensors it is read from. */
export type ConvertJob = PlannedTensor & {
  infos: SafetensorsTensorInfo[];
  /** where it is complete in the file: its last source's start (the jobs are written in this order) */
  at: number;
};

export function jobOf(tensor: PlannedTensor, infos: Map<string, SafetensorsTensorInfo>): ConvertJob {
  const sources = tensor.kind === 'single' ? [tensor.source] : tensor.parts.map((p) => p.source);
  const found = sources.map((name) => {
    const info = infos.get(name);
    if (!info) throw new CodiError('INTERNAL', `tensor ${name} vanished from the header`);
    return info;
  });
  return { ...tensor, infos: found, at: Math.max(...found.map((i) => i.begin)) };
}

/** The largest source tensor of a job, in bytes. */
export function largestSource(job: ConvertJob): number {
  return Math.max(...job.infos.map((i) => i.end - i.begin));
}

/** The most float32 values a job's source decodes to (F32 sources are used where they lie). */
export function largestDecoded(job: ConvertJob): number {
  return Math.max(...job.infos.map((i) => (i.end - i.begin) / (i.dtype === 'F32' ? 4 : 2)));
}

/** F32 in and F32 out with nothing to change: the bytes go through as they are. */
export function isPassThrough(job: ConvertJob): boolean {
  return (
    job.kind === 'single' &&
    !job.transpose &&
    job.permuteHeads === null &&
    job.factor === 1 &&
    job.infos[0]?.dtype === 'F32' &&
    job.spec.type === GgmlType.F32
  );
}

/**
 * A job's data, read through the pass: a range of the weights file the writer reads itself (when
 * the bytes go through as they are), or float32 values. `owned`: values that stay valid after the
 * pass reads on (else they may be the pass's own buffer, valid until its next read).
 */
export async function payloadOf(
  job: ConvertJob,
  reader: TensorReader,
  scratch: Float32Array,
  owned = false,
): Promise<FileRange | Uint8Array | Float32Array> {
  if (job.kind === 'stacked') return stack(job, reader, scratch);
  const info = job.infos[0] as SafetensorsTensorInfo;
  const range = !owned && isPassThrough(job) ? reader.range(info) : null;
  if (range) return range;
  const converted = convertTensor(job, info, await reader.read(info), scratch);
  // the values may lie in the pass's buffer or the scratch buffer, which later reads overwrite
  return owned ? converted.slice() : converted;
}

/** A source tensor's values as float32: where they lie when they are F32, else decoded into `scratch`. */
function valuesOf(info: SafetensorsTensorInfo, bytes: Uint8Array, scratch: Float32Array): Float32Array {
  const type = GGML_TYPE_OF_DTYPE[info.dtype];
  if (type === undefined)
    throw new CodiError('TENSOR_DTYPE', `${info.name} is ${info.dtype}: cannot convert`);
  if (type === GgmlType.F32 && bytes.byteOffset % 4 === 0) {
    return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4);
  }
  return decodeToF32(type, bytes, scratch.subarray(0, bytes.length / (type === GgmlType.F32 ? 4 : 2)));
}

/** One tensor's safetensors bytes as the GGUF tensor `job.spec` wants them. */
function convertTensor(
  job: Extract<ConvertJob, { kind: 'single' }>,
  info: SafetensorsTensorInfo,
  bytes: Uint8Array,
  scratch: Float32Array,
): Uint8Array | Float32Array {
  if (isPassThrough(job)) return bytes;
  let values = valuesOf(info, bytes, scratch);
  const [rows = 0, cols = 0] = info.shape;
  if (job.transpose) values = transpose(values, rows, cols);
  if (job.permuteHeads !== null) values = permuteRopeRows(values, rows, cols, job.permuteHeads);
  if (job.factor !== 1) {
    const f = job.factor;
    for (let k = 0; k < values.length; k++) values[k] = (values[k] ?? 0) * f;
  }
  return values;
}

/** The experts' A or B stacked into one new array, each read through the pass in file order. */
async function stack(
  job: Extract<ConvertJob, { kind: 'stacked' }>,
  reader: TensorReader,
  scratch: Float32Array,
): Promise<Float32Array> {
  const { rank, rows, cols } = job;
  // one expert's block: A [rank, cols], B [rows, rank]
  const block = job.half === 'a' ? rank * cols : rows * rank;
  const out = new Float32Array(job.experts * block);
  const order = job.parts.map((part, i) => ({ part, info: job.infos[i] as SafetensorsTensorInfo }));
  order.sort((x, y) => x.info.begin - y.info.begin);
  for (const { part, info } of order) {
    const values = valuesOf(info, await reader.piece(info), scratch);
    const base = part.expert * block;
    if (job.half === 'a') {
      // rows 0..r-1 of the expert's [rank, cols]; the rest stay zero
      out.set(values.subarray(0, part.rank * cols), base);
      continue;
    }
    // columns 0..r-1 of each row of the expert's [rows, rank], scaled; the rest stay zero
    for (let o = 0; o < rows; o++) {
      for (let k = 0; k < part.rank; k++) {
        out[base + o * rank + k] = (values[o * part.rank + k] ?? 0) * part.factor;
      }
    }
  }
  return out;
}

/** [rows, cols] row-major → [cols, rows] row-major. */
function transpose(src: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(src.length);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) out[c * rows + r] = src[r * cols + c] ?? 0;
  }
  return out;
}
