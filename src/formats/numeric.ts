/**
 * Float conversions and Q8_0 quantisation, bit-exact with ggml's reference code
 * (`ggml_compute_fp32_to_fp16`, `ggml_compute_fp32_to_bf16` in ggml/src/ggml-impl.h and
 * `quantize_row_q8_0_ref` in ggml/src/ggml-quants.c).
 *
 * Everything works on typed arrays with integer bit operations: these loops run over tens of MB of
 * adapter weights, so there is no per-element allocation and no DataView. Typed-array views use the
 * host byte order, which is why the module refuses to load on a big-endian host (GGUF and
 * safetensors are little-endian).
 */

import { FormatError } from './format-error.js';
import { GgmlType, ggmlTypeName } from './ggml-types.js';
import { simdF32ToBf16, simdF32ToF16 } from './simd.js';

if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
  throw new Error('codi-adapter needs a little-endian host: GGUF and safetensors are little-endian');
}

export const QK8_0 = 32;
/** arrays shorter than this are not worth a call into the SIMD kernels */
const SIMD_MIN = 256;
/** bytes of one Q8_0 block: an f16 scale and 32 int8 quants */
export const Q8_0_BLOCK_BYTES = 2 + QK8_0;

const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/** The IEEE-754 bits of `value` rounded to float32. */
export function f32Bits(value: number): number {
  scratchF32[0] = value;
  return scratchU32[0] ?? 0;
}

/** The float32 with these bits (as a JS number). */
export function f32FromBits(bits: number): number {
  scratchU32[0] = bits >>> 0;
  return scratchF32[0] ?? 0;
}

/**
 * float32 bits → float16 bits, round to nearest even; overflow → ±Inf; NaN → quiet NaN 0x7E00 with the
 * sign kept and the payload dropped (what ggml's reference conversion returns).
 */
export function f32BitsToF16Bits(bits: number): number {
  const sign = (bits >>> 16) & 0x8000;
  const abs = bits & 0x7fffffff;
  if (abs >= 0x7f800000) return abs > 0x7f800000 ? sign | 0x7e00 : sign | 0x7c00;
  // 65520 is the midpoint between 65504 (odd mantissa) and 65536: ties-to-even goes to Inf
  if (abs >= 0x477ff000) return sign | 0x7c00;
  if (abs >= 0x38800000) {
    // normal half: rebias the exponent (127 → 15) and keep 10 mantissa bits
    const h = (abs - 0x38000000) >>> 13;
    const rest = abs & 0x1fff;
    return sign | (h + (rest > 0x1000 || (rest === 0x1000 && (h & 1) === 1) ? 1 : 0));
  }
  // at most half the smallest subnormal (2^-25): the tie goes to even, i.e. zero
  if (abs <= 0x33000000) return sign;
  const mantissa = (abs & 0x7fffff) | 0x800000;
  const shift = 126 - (abs >>> 23);
  const h = mantissa >>> shift;
  const rest = mantissa & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  return sign | (h + (rest > half || (rest === half && (h & 1) === 1) ? 1 : 0));
}

export function f32ToF16Bits(value: number): number {
  return f32BitsToF16Bits(f32Bits(value));
}

function f16BitsToF32BitsCompute(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exponent = (h >>> 10) & 0x1f;
  const mantissa = h & 0x3ff;
  if (exponent === 0x1f) {
    // Inf, or NaN made quiet as the hardware conversion ggml runs on does
    return (sign | 0x7f800000 | (mantissa << 13) | (mantissa === 0 ? 0 : 0x400000)) >>> 0;
  }
  if (exponent !== 0) return (sign | ((exponent + 112) << 23) | (mantissa << 13)) >>> 0;
  if (mantissa === 0) return sign >>> 0;
  // subnormal half: normalise into a float32 normal
  let e = 113;
  let m = mantissa;
  while ((m & 0x400) === 0) {
    m <<= 1;
    e--;
  }
  return (sign | (e << 23) | ((m & 0x3ff) << 13)) >>> 0;
}

/** Built on first use: a command that never decodes f16 does not pay for it. */
let f16Table: Uint32Array | null = null;
function f16ToF32Table(): Uint32Array {
  if (f16Table) return f16Table;
  const table = new Uint32Array(65536);
  for (let h = 0; h < 65536; h++) table[h] = f16BitsToF32BitsCompute(h);
  f16Table = table;
  return table;
}

export function f16BitsToF32Bits(h: number): number {
  return f16ToF32Table()[h & 0xffff] ?? 0;
}

export function f16BitsToF32(h: number): number {
  return f32FromBits(f16BitsToF32Bits(h));
}

/** float32 bits → bfloat16 bits: round to nearest even; NaN keeps its upper bits and is made quiet. */
export function f32BitsToBf16Bits(bits: number): number {
  const u = bits >>> 0;
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >>> 16) | 64) & 0xffff;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

export function f32ToBf16Bits(value: number): number {
  return f32BitsToBf16Bits(f32Bits(value));
}

export function bf16BitsToF32(h: number): number {
  return f32FromBits((h & 0xffff) << 16);
}

function bitsOf(src: Float32Array): Uint32Array {
  return new Uint32Array(src.buffer, src.byteOffset, src.length);
}

function checkLength(name: string, have: number, need: number): void {
  if (have < need) throw new RangeError(`${name}: destination holds ${have} elements, ${need} needed`);
}

/**
 * float32 → float16 bits for a whole array; same results as `f32BitsToF16Bits`. Long arrays go
 * through the WebAssembly SIMD kernel (simd.ts); the rest, here, with the common case inline.
 */
export function f32ToF16(src: Float32Array, dst: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  checkLength('f32ToF16', dst.length, src.length);
  const bits = bitsOf(src);
  const n = src.length;
  for (let i = n >= SIMD_MIN ? simdF32ToF16(src, dst) : 0; i < n; i++) {
    const u = bits[i] as number;
    const abs = u & 0x7fffffff;
    if (abs >= 0x38800000 && abs < 0x7f800000) {
      // normal half or overflow: rebias, round to nearest even by adding just under half an ulp plus
      // the kept lsb (a carry into the exponent is the right result), clamp overflow to Inf
      const h = (abs - 0x38000000 + 0xfff + ((abs >>> 13) & 1)) >>> 13;
      dst[i] = ((u >>> 16) & 0x8000) | (h < 0x7c00 ? h : 0x7c00);
    } else {
      dst[i] = f32BitsToF16Bits(u);
    }
  }
  return dst;
}

export function f16ToF32(src: Uint16Array, dst: Float32Array = new Float32Array(src.length)): Float32Array {
  checkLength('f16ToF32', dst.length, src.length);
  // write bits, not numbers: a NaN stored through a JS number may lose its payload
  const out = bitsOf(dst);
  const table = f16ToF32Table();
  const n = src.length;
  for (let i = 0; i < n; i++) out[i] = table[src[i] ?? 0] ?? 0;
  return dst;
}

/** float32 → bfloat16 bits for a whole array, as `f32BitsToBf16Bits`; long arrays through the SIMD kernel. */
export function f32ToBf16(src: Float32Array, dst: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  checkLength('f32ToBf16', dst.length, src.length);
  const bits = bitsOf(src);
  const n = src.length;
  for (let i = n >= SIMD_MIN ? simdF32ToBf16(src, dst) : 0; i < n; i++) {
    const u = bits[i] ?? 0;
    dst[i] = (u & 0x7fffffff) > 0x7f800000 ? (u >>> 16) | 64 : (u + 0x7fff + ((u >>> 16) & 1)) >>> 16;
  }
  return dst;
}

export function bf16ToF32(src: Uint16Array, dst: Float32Array = new Float32Array(src.length)): Float32Array {
  checkLength('bf16ToF32', dst.length, src.length);
  const out = bitsOf(dst);
  const n = src.length;
  for (let i = 0; i < n; i++) out[i] = (src[i] ?? 0) << 16;
  return dst;
}

/**
 * Q8_0 as `quantize_row_q8_0_ref`: per block of 32, d = amax/127 (float32), id = 1/d (from the float32
 * d, not the stored f16 one), q = roundf(x·id); d is stored as f16. `src.length` must be a multiple of 32.
 */
export function quantizeQ8_0(
  src: Float32Array,
  dst: Uint8Array = new Uint8Array((src.length / QK8_0) * Q8_0_BLOCK_BYTES),
): Uint8Array {
  if (src.length % QK8_0 !== 0) {
    throw new RangeError(`quantizeQ8_0: ${src.length} values are not a multiple of ${QK8_0}`);
  }
  const blocks = src.length / QK8_0;
  checkLength('quantizeQ8_0', dst.length, blocks * Q8_0_BLOCK_BYTES);
  if (dst.byteOffset % 2 !== 0) throw new RangeError('quantizeQ8_0: destination must be 2-byte aligned');
  const scales = new Uint16Array(dst.buffer, dst.byteOffset, (blocks * Q8_0_BLOCK_BYTES) / 2);
  const quants = new Int8Array(dst.buffer, dst.byteOffset, blocks * Q8_0_BLOCK_BYTES);
  const fround = Math.fround;
  for (let b = 0; b < blocks; b++) {
    const base = b * QK8_0;
    let amax = 0;
    for (let j = 0; j < QK8_0; j++) {
      const a = Math.abs(src[base + j] as number);
      // ggml's MAX(a, b) is `a > b ? a : b`; the same form keeps its NaN behaviour
      amax = amax > a ? amax : a;
    }
    const d = fround(amax / 127);
    const id = d !== 0 ? fround(1 / d) : 0;
    const out = b * Q8_0_BLOCK_BYTES;
    scales[out / 2] = f32ToF16Bits(d);
    for (let j = 0; j < QK8_0; j++) {
      const x0 = fround((src[base + j] as number) * id);
      // roundf (half away from zero) as trunc(x0 + 0.5 - [x0 < 0]): exact in double for |x0| ≤ 128, and
      // branch-free, which matters because weight signs are random; `| 0` turns NaN into 0 as the x86
      // float→int conversion ggml compiles to does
      quants[out + 2 + j] = (x0 + 0.5 - +(x0 < 0)) | 0;
    }
  }
  return dst;
}

export function dequantizeQ8_0(
  src: Uint8Array,
  dst: Float32Array = new Float32Array((src.length / Q8_0_BLOCK_BYTES) * QK8_0),
): Float32Array {
  if (src.length % Q8_0_BLOCK_BYTES !== 0) {
    throw new RangeError(`dequantizeQ8_0: ${src.length} bytes are not whole ${Q8_0_BLOCK_BYTES}-byte blocks`);
  }
  const blocks = src.length / Q8_0_BLOCK_BYTES;
  checkLength('dequantizeQ8_0', dst.length, blocks * QK8_0);
  const aligned = src.byteOffset % 2 === 0 ? src : src.slice();
  const scales = new Uint16Array(aligned.buffer, aligned.byteOffset, src.length / 2);
  const quants = new Int8Array(aligned.buffer, aligned.byteOffset, src.length);
  for (let b = 0; b < blocks; b++) {
    const d = f16BitsToF32(scales[(b * Q8_0_BLOCK_BYTES) / 2] ?? 0);
    const q = b * Q8_0_BLOCK_BYTES + 2;
    const o = b * QK8_0;
    for (let j = 0; j < QK8_0; j++) dst[o + j] = d * (quants[q + j] ?? 0);
  }
  return dst;
}

/** Tensor types this module can produce from float32 and read back. */
export type FloatTensorType =
  typeof GgmlType.F32 | typeof GgmlType.F16 | typeof GgmlType.BF16 | typeof GgmlType.Q8_0;

export function isFloatTensorType(type: number): type is FloatTensorType {
  return type === GgmlType.F32 || type === GgmlType.F16 || type === GgmlType.BF16 || type === GgmlType.Q8_0;
}

/** Bytes that `count` float32 values take once encoded as `type`. */
export function encodedBytes(type: FloatTensorType, count: number): number {
  switch (type) {
    case GgmlType.F32:
      return count * 4;
    case GgmlType.F16:
    case GgmlType.BF16:
      return count * 2;
    case GgmlType.Q8_0:
      return (count / QK8_0) * Q8_0_BLOCK_BYTES;
  }
}

function u16View(bytes: Uint8Array): Uint16Array {
  return new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.length / 2);
}

/**
 * Encodes float32 values as `type` (little-endian bytes). `dst`, when given, must be 4-byte aligned
 * and large enough; passing the same buffer each call avoids an allocation per tensor.
 */
export function encodeF32(type: FloatTensorType, src: Float32Array, dst?: Uint8Array): Uint8Array {
  const bytes = encodedBytes(type, src.length);
  if (!Number.isInteger(bytes)) {
    throw new RangeError(`encodeF32: ${src.length} values are not whole ${ggmlTypeName(type)} blocks`);
  }
  let out: Uint8Array;
  if (dst === undefined) {
    out = new Uint8Array(bytes);
  } else {
    checkLength('encodeF32', dst.length, bytes);
    if (dst.byteOffset % 4 !== 0) throw new RangeError('encodeF32: destination must be 4-byte aligned');
    out = dst.subarray(0, bytes);
  }
  switch (type) {
    case GgmlType.F32:
      new Float32Array(out.buffer, out.byteOffset, src.length).set(src);
      break;
    case GgmlType.F16:
      f32ToF16(src, u16View(out));
      break;
    case GgmlType.BF16:
      f32ToBf16(src, u16View(out));
      break;
    case GgmlType.Q8_0:
      quantizeQ8_0(src, out);
      break;
  }
  return out;
}

/** Decodes little-endian tensor bytes of `type` to float32. */
export function decodeToF32(type: number, src: Uint8Array, dst?: Float32Array): Float32Array {
  if (!isFloatTensorType(type)) {
    throw new FormatError('GGUF_UNSUPPORTED_TYPE', `cannot decode tensor data of type ${ggmlTypeName(type)}`);
  }
  const width = type === GgmlType.F32 ? 4 : 2;
  const aligned = src.byteOffset % width === 0 ? src : src.slice();
  switch (type) {
    case GgmlType.F32: {
      const view = new Float32Array(aligned.buffer, aligned.byteOffset, Math.floor(aligned.length / 4));
      if (dst === undefined) return view.slice();
      checkLength('decodeToF32', dst.length, view.length);
      dst.set(view);
      return dst;
    }
    case GgmlType.F16: {
      const view = u16View(aligned.subarray(0, aligned.length - (aligned.length % 2)));
      return f16ToF32(view, dst ?? new Float32Array(view.length));
    }
    case GgmlType.BF16: {
      const view = u16View(aligned.subarray(0, aligned.length - (aligned.length % 2)));
      return bf16ToF32(view, dst ?? new Float32Array(view.length));
    }
    case GgmlType.Q8_0:
      return dequantizeQ8_0(src, dst);
  }
}
