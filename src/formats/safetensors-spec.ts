/**
 * What the safetensors format is: its dtypes, limits, error codes and the shapes of a parsed header,
 * shared by the parsers (safetensors.ts, safetensors-strict.ts) and the writer.
 */
import type { Code } from '../codes.js';
import { FormatError } from './format-error.js';
import { quoteForMessage } from './strict-json.js';

/** Bits per element of every dtype the reference Rust crate knows. Names are case-sensitive. */
export const SAFETENSORS_DTYPES = Object.freeze({
  BOOL: 8,
  F4: 4,
  F6_E2M3: 6,
  F6_E3M2: 6,
  U8: 8,
  I8: 8,
  F8_E5M2: 8,
  F8_E4M3: 8,
  F8_E8M0: 8,
  F8_E4M3FNUZ: 8,
  F8_E5M2FNUZ: 8,
  I16: 16,
  U16: 16,
  F16: 16,
  BF16: 16,
  I32: 32,
  U32: 32,
  F32: 32,
  C64: 64,
  F64: 64,
  I64: 64,
  U64: 64,
} as const);
export type SafetensorsDtype = keyof typeof SAFETENSORS_DTYPES;

export function isSafetensorsDtype(name: string): name is SafetensorsDtype {
  // own properties only: `constructor` or `toString` must not pass as dtypes
  return Object.hasOwn(SAFETENSORS_DTYPES, name);
}

/** The Rust crate's limit; it keeps a hostile length from making us allocate gigabytes. */
export const SAFETENSORS_MAX_HEADER_LENGTH = 100_000_000;

/** Every code the safetensors readers raise, in the order the checks run (codes.ts describes each). */
export const SAFETENSORS_ERROR_CODES = [
  'SAFETENSORS_TRUNCATED',
  'SAFETENSORS_HEADER_LENGTH',
  'SAFETENSORS_HEADER_UTF8',
  'SAFETENSORS_HEADER_JSON',
  'SAFETENSORS_HEADER_NOT_OBJECT',
  'SAFETENSORS_DUPLICATE_KEY',
  'SAFETENSORS_METADATA',
  'SAFETENSORS_TOO_MANY_TENSORS',
  'SAFETENSORS_ENTRY',
  'SAFETENSORS_DTYPE',
  'SAFETENSORS_SHAPE',
  'SAFETENSORS_OFFSETS',
  'SAFETENSORS_SIZE',
  'SAFETENSORS_TRAILING',
] as const satisfies readonly Code[];
export type SafetensorsErrorCode = (typeof SAFETENSORS_ERROR_CODES)[number];

export interface SafetensorsTensorInfo {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  /** offsets relative to the data section, which starts at `SafetensorsHeader.dataOffset` */
  begin: number;
  end: number;
}

export interface SafetensorsHeader {
  /** N, the length of the JSON header in bytes, padding included */
  headerLength: number;
  /** 8 + N: where the data section starts in the file */
  dataOffset: number;
  fileSize: number;
  metadata: Record<string, string> | null;
  /** in header order */
  tensors: SafetensorsTensorInfo[];
}

export interface SafetensorsTensorInput {
  name: string;
  dtype: SafetensorsDtype;
  shape: readonly number[];
  data: Uint8Array;
}

/** Bytes a tensor occupies in the data section. */
export function byteLength(info: Pick<SafetensorsTensorInfo, 'begin' | 'end'>): number {
  return info.end - info.begin;
}

/** Number of elements of a shape (1 for a scalar `[]`), exact. */
export function elementCount(shape: readonly number[]): bigint {
  let count = 1n;
  for (const dim of shape) count *= BigInt(dim);
  return count;
}

/**
 * Bytes a tensor of this dtype and shape needs, or undefined when its bits are not a whole number of
 * bytes (a sub-byte dtype such as F4 with an odd element count).
 */
export function expectedByteLength(dtype: SafetensorsDtype, shape: readonly number[]): bigint | undefined {
  const bits = elementCount(shape) * BigInt(SAFETENSORS_DTYPES[dtype]);
  return bits % 8n === 0n ? bits / 8n : undefined;
}

/** the bytes of N, the header's length, at the start of the file */
export const HEADER_LENGTH_BYTES = 8;
export const METADATA_KEY = '__metadata__';

/**
 * Most dimensions a shape may have. The Rust crate sets none; NumPy and PyTorch stop at 64, and a
 * bound lets us refuse a shape of 50 million ones after 65 of them instead of building it.
 */
export const SAFETENSORS_MAX_RANK = 64;

/**
 * Most `__metadata__` entries. The Rust crate sets no limit; real files carry a handful (training
 * tools write up to about a hundred), and without a bound a 100 MB header of tiny entries would cost
 * gigabytes of memory.
 */
export const SAFETENSORS_MAX_METADATA_ENTRIES = 10_000;

/**
 * Most tensors in one file, and most dimensions in all their shapes. The Rust crate sets neither.
 * The largest real LoRA adapters, on every expert of the biggest mixture-of-experts models (61
 * layers × 384 experts × 3 projections × A and B), hold about 140,000 tensors of 2 dimensions;
 * base-model shards hold a few thousand of at most 4. Without bounds a 100 MB header describes ~2
 * million tiny tensors, or half a million of 64 dimensions each, and what is kept of them costs
 * most of a gigabyte; with them, what `verify` keeps of the worst header the limits admit (300,000
 * unpaired 4-dimensional lora_A tensors whose names fill the 100 MB) is about what reading any
 * 100 MB header costs anyway.
 */
export const SAFETENSORS_MAX_TENSORS = 300_000;
/** 4 per tensor on average: a LoRA matrix has 2, a convolution's LoRA 4 */
export const SAFETENSORS_MAX_DIMENSIONS = 4 * SAFETENSORS_MAX_TENSORS;

/** The refusal of a header, pointing at the byte offset in the file where it goes wrong. */
export function failure(
  code: SafetensorsErrorCode,
  message: string,
  byteOffset: number,
  details?: Record<string, unknown>,
): FormatError {
  return new FormatError(code, message, {
    pointer: String(byteOffset),
    ...(details === undefined ? {} : { details }),
  });
}

export function tensorLabel(name: string): string {
  return `tensor ${quoteForMessage(name)}`;
}
