/**
 * What the safetensors format is: its dtypes, limits, error codes and the shapes of a parsed header,
 * shared by the parsers (safetensors.ts, safetensors-strict.ts) and the writer.
 */
import { CodiError, ExitCode } from '../errors.js';
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

/** Every code this module raises, in the order the checks run. */
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
] as const;
export type SafetensorsErrorCode = (typeof SAFETENSORS_ERROR_CODES)[number];

/** One line per code, for the docs and `--help` texts. */
export const SAFETENSORS_ERROR_DESCRIPTIONS: Readonly<Record<SafetensorsErrorCode, string>> = {
  SAFETENSORS_TRUNCATED:
    'the file ends before the 8-byte header length, or bytes it promised could not be read',
  SAFETENSORS_HEADER_LENGTH: 'the header length N is 0, above 100,000,000, or runs past the end of the file',
  SAFETENSORS_HEADER_UTF8: 'the header is not valid UTF-8',
  SAFETENSORS_HEADER_JSON:
    'the header is not one JSON value (syntax error, leading BOM, text after it, too deeply nested)',
  SAFETENSORS_HEADER_NOT_OBJECT: 'the header is JSON but not an object',
  SAFETENSORS_DUPLICATE_KEY: 'a key appears twice (a tensor name, `__metadata__`, or a key inside one)',
  SAFETENSORS_METADATA:
    '`__metadata__` is not an object whose values are all strings, or has more than 10,000 entries',
  SAFETENSORS_TOO_MANY_TENSORS:
    'the header describes more than 300,000 tensors, or shapes of more than 1,200,000 dimensions in all',
  SAFETENSORS_ENTRY: 'a tensor entry is not an object, or has a key other than dtype, shape, data_offsets',
  SAFETENSORS_DTYPE: 'a tensor dtype is missing, not a string, or unknown (names are case-sensitive)',
  SAFETENSORS_SHAPE:
    'a tensor shape is missing or not an array of at most 64 non-negative integers up to 2^53−1',
  SAFETENSORS_OFFSETS:
    'data_offsets are not two non-negative integers with begin ≤ end, or the tensors do not tile the data section from 0 without gap or overlap, or run past the end of the file',
  SAFETENSORS_SIZE:
    'a tensor byte length differs from product(shape)·bits/8, is not whole bytes, or overflows 64 bits',
  SAFETENSORS_TRAILING: 'bytes follow the last tensor (a file must end where its last tensor ends)',
};

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

export function failure(
  code: SafetensorsErrorCode,
  message: string,
  byteOffset: number,
  hint?: string,
  details?: Record<string, unknown>,
): CodiError {
  return new CodiError(code, message, {
    exitCode: ExitCode.INVALID,
    pointer: String(byteOffset),
    hint,
    details,
  });
}

export function tensorLabel(name: string): string {
  return `tensor ${quoteForMessage(name)}`;
}
