/**
 * float32 → float16 and float32 → bfloat16 over whole arrays with WebAssembly SIMD: four lanes per
 * instruction, and no branch per element, where the scalar loops in numeric.ts are most of what
 * `convert --outtype f16` adds over f32 (bench/kernels.js compares the two).
 *
 * The instructions are listed by name below. Results are bit-identical to the scalar reference
 * (`f32BitsToF16Bits`, `f32BitsToBf16Bits`): round to nearest even, overflow to ±Inf, NaN made quiet
 * as ggml does. The tests compare the two over every exponent, every rounding boundary and random bits.
 *
 * Each call converts in blocks of BLOCK elements through a fixed window of the module's memory:
 * the source block is copied in, converted, and the result copied out.
 */

// The module is written out as bytes: just enough of the WebAssembly binary format (core specification
// 2.0) for it, and no toolchain or download.

/** the instructions the kernels use, by their binary encoding */
const OP = {
  loop: 0x03,
  brIf: 0x0d,
  end: 0x0b,
  localGet: 0x20,
  localSet: 0x21,
  localTee: 0x22,
  i32Const: 0x41,
  i32Add: 0x6a,
  i32Sub: 0x6b,
} as const;

/** value and block types */
const TYPE = { i32: 0x7f, v128: 0x7b, void: 0x40, func: 0x60 } as const;

/** export kinds */
const EXPORT = { func: 0, memory: 2 } as const;

function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    let byte = n & 0x7f;
    n >>>= 7;
    if (n !== 0) byte |= 0x80;
    out.push(byte);
  } while (n !== 0);
  return out;
}

function sleb(n: number): number[] {
  const out: number[] = [];
  for (;;) {
    const byte = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (byte & 0x40) === 0) || (n === -1 && (byte & 0x40) !== 0)) {
      out.push(byte);
      return out;
    }
    out.push(byte | 0x80);
  }
}

const get = (local: number): number[] => [OP.localGet, local];
const set = (local: number): number[] => [OP.localSet, local];
const tee = (local: number): number[] => [OP.localTee, local];
const i32 = (value: number): number[] => [OP.i32Const, ...sleb(value)];

function section(id: number, content: number[]): number[] {
  return [id, ...uleb(content.length), ...content];
}

function name(text: string): number[] {
  return [...uleb(text.length), ...Array.from(text, (c) => c.charCodeAt(0))];
}

/** A function body: local declarations (count, type pairs), then the code, then `end`. */
function body(locals: [number, number][], code: number[]): number[] {
  const content = [...uleb(locals.length), ...locals.flatMap(([n, t]) => [...uleb(n), t]), ...code, OP.end];
  return [...uleb(content.length), ...content];
}

/** The module header: `\0asm`, version 1. */
const MAGIC = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];

// what this module uses of the WebAssembly JS API (the lib it compiles against omits it)
declare const WebAssembly: {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object) => { exports: Record<string, unknown> };
};

/** elements per block: the input window is 4·BLOCK bytes, the output window 2·BLOCK */
const BLOCK = 16384;
const IN_AT = 0;
const OUT_AT = BLOCK * 4;
const PAGES = Math.ceil((BLOCK * 6) / 65536);

const { loop: LOOP, brIf: BR_IF, end: END, i32Add: I32_ADD, i32Sub: I32_SUB } = OP;
// SIMD instructions: the 0xfd prefix, then the opcode as unsigned LEB128
const SIMD = {
  load: 0x00,
  store: 0x0b,
  const: 0x0c,
  and: 0x4e,
  or: 0x50,
  bitselect: 0x52,
  i32x4GtS: 0x3b,
  i16x8NarrowI32x4U: 0x86,
  i32x4ShrU: 0xad,
  i32x4Add: 0xae,
  i32x4Sub: 0xb1,
  i32x4MinU: 0xb7,
  f32x4Add: 0xe4,
} as const;

const simd = (op: number): number[] => [0xfd, ...uleb(op)];
/** v128.const with the same 32-bit value in every lane */
const splat = (value: number): number[] => {
  const lane = [value & 0xff, (value >>> 8) & 0xff, (value >>> 16) & 0xff, (value >>> 24) & 0xff];
  return [...simd(SIMD.const), ...lane, ...lane, ...lane, ...lane];
};
/** memarg: alignment exponent, then offset */
const vload = (offset: number): number[] => [...simd(SIMD.load), 4, ...uleb(offset)];
const vstore = (): number[] => [...simd(SIMD.store), 4, 0];

// parameters: 0 src (byte address), 1 dst (byte address), 2 count of 8-element groups (> 0);
// locals: 3 x (the input lanes), 4 abs (x without its sign bit)
const SRC = 0;
const DST = 1;
const GROUPS = 2;
const X = 3;
const ABS = 4;

/** f16 bits of the four lanes of `X` (one u32 per lane), left on the stack */
// prettier-ignore
const f16Lanes = (): number[] => [
  ...get(X), ...splat(0x7fffffff), ...simd(SIMD.and), ...set(ABS),
  // normal: rebias 127 → 15 and round to nearest even (add 0xfff plus the kept lsb, shift out 13
  // bits); anything too large for a half comes out ≥ 0x7c00 and is clamped to Inf
  ...get(ABS), ...i32(13), ...simd(SIMD.i32x4ShrU), ...splat(1), ...simd(SIMD.and),
  ...get(ABS), ...simd(SIMD.i32x4Add), ...splat(0xfff - 0x38000000), ...simd(SIMD.i32x4Add),
  ...i32(13), ...simd(SIMD.i32x4ShrU), ...splat(0x7c00), ...simd(SIMD.i32x4MinU),
  // below the smallest normal half (2^-14): adding 0.5 in float32 leaves the subnormal half's bits,
  // rounded to nearest even by the addition itself, in the low mantissa bits
  ...get(ABS), ...splat(0x3f000000), ...simd(SIMD.f32x4Add), ...splat(0x3f000000), ...simd(SIMD.i32x4Sub),
  // bitselect(a, b, mask) takes a's bits where mask is set: normal where abs ≥ 0x38800000
  ...get(ABS), ...splat(0x387fffff), ...simd(SIMD.i32x4GtS), ...simd(SIMD.bitselect),
  // Inf where abs is not below Inf's bits, then NaN (quiet, payload dropped) above them
  ...splat(0x7c00), ...splat(0x7f800000), ...get(ABS), ...simd(SIMD.i32x4GtS), ...simd(SIMD.bitselect),
  ...splat(0x7e00), ...splat(0x7f800001), ...get(ABS), ...simd(SIMD.i32x4GtS), ...simd(SIMD.bitselect),
  // the sign
  ...get(X), ...i32(16), ...simd(SIMD.i32x4ShrU), ...splat(0x8000), ...simd(SIMD.and), ...simd(SIMD.or),
];

/** bf16 bits of the four lanes of `X`, left on the stack */
// prettier-ignore
const bf16Lanes = (): number[] => [
  // round to nearest even: add 0x7fff plus the kept lsb, keep the upper half
  ...get(X), ...i32(16), ...simd(SIMD.i32x4ShrU), ...splat(1), ...simd(SIMD.and),
  ...get(X), ...simd(SIMD.i32x4Add), ...splat(0x7fff), ...simd(SIMD.i32x4Add),
  ...i32(16), ...simd(SIMD.i32x4ShrU),
  // NaN: the upper half, made quiet; bitselect keeps the rounded bits where the lane is no NaN
  ...get(X), ...i32(16), ...simd(SIMD.i32x4ShrU), ...splat(64), ...simd(SIMD.or),
  ...splat(0x7f800001), ...get(X), ...splat(0x7fffffff), ...simd(SIMD.and), ...simd(SIMD.i32x4GtS),
  ...simd(SIMD.bitselect),
];

/** A function (src, dst, groups) converting 8 lanes a turn: two u32x4 in, one u16x8 out. */
// prettier-ignore
function kernel(lanes: number[]): number[] {
  return body([[2, TYPE.v128]], [ // locals: X and ABS
    LOOP, TYPE.void,
    ...get(DST),
    ...get(SRC), ...vload(0), ...set(X), ...lanes,
    ...get(SRC), ...vload(16), ...set(X), ...lanes,
    ...simd(SIMD.i16x8NarrowI32x4U), ...vstore(),
    ...get(SRC), ...i32(32), I32_ADD, ...set(SRC),
    ...get(DST), ...i32(16), I32_ADD, ...set(DST),
    ...get(GROUPS), ...i32(1), I32_SUB, ...tee(GROUPS), BR_IF, 0,
    END,
  ]);
}

// prettier-ignore
const moduleBytes = (): number[] => [
  ...MAGIC,
  ...section(1, [1, TYPE.func, 3, TYPE.i32, TYPE.i32, TYPE.i32, 0]), // one type: (i32, i32, i32) → ()
  ...section(3, [2, 0, 0]), // two functions of that type
  ...section(5, [1, 0, ...uleb(PAGES)]), // one memory, PAGES pages
  ...section(7, [3, ...name('memory'), EXPORT.memory, 0, ...name('f16'), EXPORT.func, 0, ...name('bf16'), EXPORT.func, 1]),
  ...section(10, [2, ...kernel(f16Lanes()), ...kernel(bf16Lanes())]),
];

interface Kernels {
  readonly bytes: Uint8Array;
  readonly f16: (src: number, dst: number, groups: number) => void;
  readonly bf16: (src: number, dst: number, groups: number) => void;
}

let kernels: Kernels | null | undefined;

/** The compiled kernels; null where WebAssembly SIMD is not available (the scalar loops then run). */
function compiled(): Kernels | null {
  if (kernels !== undefined) return kernels;
  try {
    const exports = new WebAssembly.Instance(new WebAssembly.Module(new Uint8Array(moduleBytes())))
      .exports as { memory: { buffer: ArrayBuffer }; f16: Kernels['f16']; bf16: Kernels['bf16'] };
    kernels = { bytes: new Uint8Array(exports.memory.buffer), f16: exports.f16, bf16: exports.bf16 };
  } catch {
    // no WebAssembly, or no SIMD in it
    kernels = null;
  }
  return kernels;
}

function convert(which: 'f16' | 'bf16', src: Float32Array, dst: Uint16Array): number {
  const n = src.length - (src.length % 8);
  if (n === 0 || dst.length < n) return 0;
  const k = compiled();
  if (!k) return 0;
  const from = new Uint8Array(src.buffer, src.byteOffset, n * 4);
  const to = new Uint8Array(dst.buffer, dst.byteOffset, n * 2);
  const run = k[which];
  // a block's output only overwrites source bytes of this block or earlier ones, all copied in
  // already, so converting in place (dst over src's memory) works too
  for (let i = 0; i < n; i += BLOCK) {
    const m = Math.min(BLOCK, n - i);
    k.bytes.set(from.subarray(i * 4, (i + m) * 4), IN_AT);
    run(IN_AT, OUT_AT, m / 8);
    to.set(k.bytes.subarray(OUT_AT, OUT_AT + m * 2), i * 2);
  }
  return n;
}

/**
 * float16 bits of `src[0..k)` into `dst`, where k is `src.length` rounded down to a multiple of 8;
 * returns k, or 0 when WebAssembly SIMD is not available. The caller converts the rest.
 */
export function simdF32ToF16(src: Float32Array, dst: Uint16Array): number {
  return convert('f16', src, dst);
}

/** As `simdF32ToF16`, to bfloat16 bits. */
export function simdF32ToBf16(src: Float32Array, dst: Uint16Array): number {
  return convert('bf16', src, dst);
}

/** Whether the kernels compiled here (false: the scalar loops do all the work). */
export function simdAvailable(): boolean {
  return compiled() !== null;
}
