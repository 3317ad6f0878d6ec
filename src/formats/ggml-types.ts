/**
 * Facts shared by the GGUF reader and writer: ggml tensor types (id, name, block size, bytes per block)
 * and GGUF metadata value types. Sources: llama.cpp `ggml/include/ggml.h` (enum ggml_type),
 * `ggml/src/ggml.c` (type_traits), `ggml/src/ggml-common.h` (block structs) and
 * `gguf-py/gguf/constants.py` (GGML_QUANT_SIZES, GGUFValueType).
 */

export const GgmlType = {
  F32: 0,
  F16: 1,
  Q4_0: 2,
  Q4_1: 3,
  Q5_0: 6,
  Q5_1: 7,
  Q8_0: 8,
  Q8_1: 9,
  Q2_K: 10,
  Q3_K: 11,
  Q4_K: 12,
  Q5_K: 13,
  Q6_K: 14,
  Q8_K: 15,
  IQ2_XXS: 16,
  IQ2_XS: 17,
  IQ3_XXS: 18,
  IQ1_S: 19,
  IQ4_NL: 20,
  IQ3_S: 21,
  IQ2_S: 22,
  IQ4_XS: 23,
  I8: 24,
  I16: 25,
  I32: 26,
  I64: 27,
  F64: 28,
  IQ1_M: 29,
  BF16: 30,
  TQ1_0: 34,
  TQ2_0: 35,
  MXFP4: 39,
  NVFP4: 40,
  Q1_0: 41,
  Q2_0: 42,
} as const;
export type GgmlType = (typeof GgmlType)[keyof typeof GgmlType];
export type GgmlTypeName = keyof typeof GgmlType;

export interface GgmlTypeInfo {
  readonly id: GgmlType;
  /** ggml's own lower-case name (`ggml_type_name`), e.g. `q8_0`, `bf16` */
  readonly name: string;
  /** elements per block */
  readonly blockSize: number;
  /** bytes per block */
  readonly typeSize: number;
}

const QK_K = 256;

// [enum name, ggml name, block size, bytes per block]; ids 4, 5, 31–33 and 36–38 were removed from ggml
// and have block size 0 there, so gguf_init rejects them: they are absent here on purpose.
const TABLE: readonly (readonly [GgmlTypeName, string, number, number])[] = [
  ['F32', 'f32', 1, 4],
  ['F16', 'f16', 1, 2],
  ['Q4_0', 'q4_0', 32, 2 + 16],
  ['Q4_1', 'q4_1', 32, 2 + 2 + 16],
  ['Q5_0', 'q5_0', 32, 2 + 4 + 16],
  ['Q5_1', 'q5_1', 32, 2 + 2 + 4 + 16],
  ['Q8_0', 'q8_0', 32, 2 + 32],
  ['Q8_1', 'q8_1', 32, 4 + 4 + 32],
  ['Q2_K', 'q2_K', QK_K, 2 + 2 + QK_K / 16 + QK_K / 4],
  ['Q3_K', 'q3_K', QK_K, 2 + QK_K / 4 + QK_K / 8 + 12],
  ['Q4_K', 'q4_K', QK_K, 2 + 2 + QK_K / 2 + 12],
  ['Q5_K', 'q5_K', QK_K, 2 + 2 + QK_K / 2 + QK_K / 8 + 12],
  ['Q6_K', 'q6_K', QK_K, 2 + QK_K / 2 + QK_K / 4 + QK_K / 16],
  ['Q8_K', 'q8_K', QK_K, 4 + QK_K + QK_K / 8],
  ['IQ2_XXS', 'iq2_xxs', QK_K, 2 + QK_K / 4],
  ['IQ2_XS', 'iq2_xs', QK_K, 2 + QK_K / 4 + QK_K / 32],
  ['IQ3_XXS', 'iq3_xxs', QK_K, 2 + QK_K / 4 + QK_K / 8],
  ['IQ1_S', 'iq1_s', QK_K, 2 + QK_K / 8 + QK_K / 16],
  ['IQ4_NL', 'iq4_nl', 32, 2 + 16],
  ['IQ3_S', 'iq3_s', QK_K, 2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4],
  ['IQ2_S', 'iq2_s', QK_K, 2 + QK_K / 4 + QK_K / 16],
  ['IQ4_XS', 'iq4_xs', QK_K, 2 + 2 + QK_K / 2 + QK_K / 64],
  ['I8', 'i8', 1, 1],
  ['I16', 'i16', 1, 2],
  ['I32', 'i32', 1, 4],
  ['I64', 'i64', 1, 8],
  ['F64', 'f64', 1, 8],
  ['IQ1_M', 'iq1_m', QK_K, QK_K / 8 + QK_K / 16 + QK_K / 32],
  ['BF16', 'bf16', 1, 2],
  ['TQ1_0', 'tq1_0', QK_K, 2 + 4 * 13],
  ['TQ2_0', 'tq2_0', QK_K, 2 + 64],
  ['MXFP4', 'mxfp4', 32, 1 + 16],
  ['NVFP4', 'nvfp4', 64, 4 + 32],
  ['Q1_0', 'q1_0', 128, 2 + 16],
  ['Q2_0', 'q2_0', 64, 2 + 16],
];

const BY_ID = new Map<number, GgmlTypeInfo>(
  TABLE.map(([key, name, blockSize, typeSize]) => [
    GgmlType[key],
    { id: GgmlType[key], name, blockSize, typeSize },
  ]),
);
const BY_NAME = new Map<string, GgmlTypeInfo>([...BY_ID.values()].map((info) => [info.name, info]));

/** The type with this id, or undefined for ids ggml does not (or no longer) know. */
export function ggmlTypeInfo(id: number): GgmlTypeInfo | undefined {
  return BY_ID.get(id);
}

/** Looks a type up by ggml's name (`q8_0`) or the enum name (`Q8_0`), case-insensitively. */
export function ggmlTypeByName(name: string): GgmlTypeInfo | undefined {
  return BY_NAME.get(name.toLowerCase());
}

export function ggmlTypeName(id: number): string {
  return BY_ID.get(id)?.name ?? `unknown(${id})`;
}

/**
 * Bytes of a tensor with `ne` (ggml order: ne[0] is the row length) and type `id`; undefined when the
 * row length is not a whole number of blocks or the size is not a safe integer.
 */
export function ggmlTensorBytes(id: number, ne: readonly number[]): number | undefined {
  const info = BY_ID.get(id);
  if (info === undefined) return undefined;
  const row = ne[0] ?? 1;
  if (row % info.blockSize !== 0) return undefined;
  let bytes = (row / info.blockSize) * info.typeSize;
  for (let i = 1; i < ne.length; i++) {
    bytes *= ne[i] ?? 1;
    if (!Number.isSafeInteger(bytes)) return undefined;
  }
  return Number.isSafeInteger(bytes) ? bytes : undefined;
}

/** GGUF metadata value types (`enum gguf_type` in ggml/include/gguf.h). */
export const GgufValueType = {
  UINT8: 0,
  INT8: 1,
  UINT16: 2,
  INT16: 3,
  UINT32: 4,
  INT32: 5,
  FLOAT32: 6,
  BOOL: 7,
  STRING: 8,
  ARRAY: 9,
  UINT64: 10,
  INT64: 11,
  FLOAT64: 12,
} as const;
export type GgufValueType = (typeof GgufValueType)[keyof typeof GgufValueType];

const VALUE_TYPE_NAMES = new Map<number, string>(
  Object.entries(GgufValueType).map(([name, id]) => [id, name.toLowerCase()]),
);

export function ggufValueTypeName(id: number): string {
  return VALUE_TYPE_NAMES.get(id) ?? `unknown(${id})`;
}

/** Bytes of one scalar of a fixed-size value type; undefined for STRING and ARRAY. */
export function ggufScalarSize(type: number): number | undefined {
  switch (type) {
    case GgufValueType.UINT8:
    case GgufValueType.INT8:
    case GgufValueType.BOOL:
      return 1;
    case GgufValueType.UINT16:
    case GgufValueType.INT16:
      return 2;
    case GgufValueType.UINT32:
    case GgufValueType.INT32:
    case GgufValueType.FLOAT32:
      return 4;
    case GgufValueType.UINT64:
    case GgufValueType.INT64:
    case GgufValueType.FLOAT64:
      return 8;
    default:
      return undefined;
  }
}

/**
 * The items of a GGUF array: numeric arrays as the matching typed array (token types and scores of a
 * 150k-token vocabulary stay compact), 64-bit integers as bigint arrays, nested arrays as GgufArray[].
 */
export type GgufArrayItems =
  | Uint8Array
  | Int8Array
  | Uint16Array
  | Int16Array
  | Uint32Array
  | Int32Array
  | Float32Array
  | Float64Array
  | BigUint64Array
  | BigInt64Array
  | boolean[]
  | string[]
  | GgufArray[];

export interface GgufArray {
  readonly itemType: GgufValueType;
  readonly items: GgufArrayItems;
  /** set when the reader was asked to skip arrays: the items it moved past (`items` is then empty) */
  readonly skipped?: number;
}

/** A metadata value: number for 8–32-bit ints and floats, bigint for 64-bit ints. */
export type GgufValue = number | bigint | boolean | string | GgufArray;

export interface GgufTypedValue {
  readonly type: GgufValueType;
  readonly value: GgufValue;
}

/** Constructors that pair a value with its GGUF type, for writing metadata. */
export const gv = {
  u8: (value: number): GgufTypedValue => ({ type: GgufValueType.UINT8, value }),
  i8: (value: number): GgufTypedValue => ({ type: GgufValueType.INT8, value }),
  u16: (value: number): GgufTypedValue => ({ type: GgufValueType.UINT16, value }),
  i16: (value: number): GgufTypedValue => ({ type: GgufValueType.INT16, value }),
  u32: (value: number): GgufTypedValue => ({ type: GgufValueType.UINT32, value }),
  i32: (value: number): GgufTypedValue => ({ type: GgufValueType.INT32, value }),
  f32: (value: number): GgufTypedValue => ({ type: GgufValueType.FLOAT32, value }),
  bool: (value: boolean): GgufTypedValue => ({ type: GgufValueType.BOOL, value }),
  str: (value: string): GgufTypedValue => ({ type: GgufValueType.STRING, value }),
  u64: (value: bigint): GgufTypedValue => ({ type: GgufValueType.UINT64, value }),
  i64: (value: bigint): GgufTypedValue => ({ type: GgufValueType.INT64, value }),
  f64: (value: number): GgufTypedValue => ({ type: GgufValueType.FLOAT64, value }),
  array: (itemType: GgufValueType, items: GgufArrayItems): GgufTypedValue => ({
    type: GgufValueType.ARRAY,
    value: { itemType, items },
  }),
  strings: (items: readonly string[]): GgufTypedValue => ({
    type: GgufValueType.ARRAY,
    value: { itemType: GgufValueType.STRING, items: [...items] },
  }),
  i32s: (items: ArrayLike<number>): GgufTypedValue => ({
    type: GgufValueType.ARRAY,
    value: { itemType: GgufValueType.INT32, items: Int32Array.from(items) },
  }),
  f32s: (items: ArrayLike<number>): GgufTypedValue => ({
    type: GgufValueType.ARRAY,
    value: { itemType: GgufValueType.FLOAT32, items: Float32Array.from(items) },
  }),
} as const;

/** The ggml type holding a safetensors float dtype (what an adapter's weights may be). */
export const GGML_TYPE_OF_DTYPE: Readonly<Record<string, GgmlType>> = {
  F32: GgmlType.F32,
  F16: GgmlType.F16,
  BF16: GgmlType.BF16,
};

/** ggml's GGML_MAX_DIMS */
export const GGML_MAX_DIMS = 4;
/** ggml's GGML_MAX_NAME: tensor names must be shorter than this */
export const GGML_MAX_NAME = 64;
export const GGUF_DEFAULT_ALIGNMENT = 32;
export const GGUF_MAGIC = 'GGUF';
export const GGUF_KEY_ALIGNMENT = 'general.alignment';

// What llama.cpp's loader (ggml/src/gguf.cpp) requires of a tensor and of the alignment, for the
// reader, which refuses a file that breaks it, and the writer, which never writes one.

/** Why llama.cpp refuses this tensor name (GGML_MAX_NAME bytes or more), or null. */
export function tensorNameProblem(name: string): string | null {
  const bytes = Buffer.byteLength(name);
  if (bytes < GGML_MAX_NAME) return null;
  return `tensor name '${name}' is ${bytes} bytes; llama.cpp allows ${GGML_MAX_NAME - 1}`;
}

/** Why llama.cpp refuses a tensor of this type and these dims (an unknown type, rows not whole blocks), or null. */
export function tensorTypeProblem(name: string, type: number, ne: readonly number[]): string | null {
  const info = ggmlTypeInfo(type);
  if (info === undefined) return `tensor '${name}' has unknown ggml type ${type}`;
  if ((ne[0] ?? 1) % info.blockSize === 0) return null;
  return `tensor '${name}' of type ${info.name} has rows of ${ne[0] ?? 1} elements, not a multiple of its block size ${info.blockSize}`;
}

export function isPowerOfTwo(n: number): boolean {
  return Number.isInteger(n) && n > 0 && n <= 0x80000000 && (n & (n - 1)) === 0;
}
