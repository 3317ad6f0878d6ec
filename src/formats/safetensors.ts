/**
 * The safetensors format: a strict header parser, a header-only file reader, a tensor reader and an
 * atomic writer.
 *
 * Layout: an 8-byte little-endian u64 N, N bytes of UTF-8 JSON (an object of tensor entries and an
 * optional `__metadata__` string map), then the data section, in which every tensor's `data_offsets`
 * are relative. We check at least what the reference Rust crate checks, and more: duplicate keys
 * (the crate lets the last one win), unknown entry keys, integers written as floats or beyond 2^53,
 * and bytes after the last tensor (a file that is also another format, a polyglot, must not pass).
 *
 * Errors are `CodiError`s with a `SAFETENSORS_*` code, exit code 1, and `pointer` set to a byte
 * offset in the file. They carry no file name: the caller knows the path relative to the adapter.
 */
import { RegularFile, withRegularFile } from '../byte-source.js';
import { CodiError, environmentError, ExitCode } from '../errors.js';
import { AtomicFile } from '../atomic.js';
import { thousands } from '../text.js';
import { decodeUtf8 } from './utf8.js';
import {
  JsonNumber,
  JsonObject,
  parseStrictJson,
  quoteForMessage,
  StrictJsonError,
  type JsonValue,
  type StrictJsonReviverContext,
} from './strict-json.js';

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

// ---------------------------------------------------------------------------------------------
// Parsing

const HEADER_LENGTH_BYTES = 8;
const ENTRY_KEYS: ReadonlySet<string> = new Set(['dtype', 'shape', 'data_offsets']);
const METADATA_KEY = '__metadata__';
const U64_LIMIT = 1n << 64n;

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

/**
 * Parses and validates a safetensors header.
 *
 * Entries are checked while the JSON is parsed, so the first wrong value ends the parse: a hostile
 * 100 MB header costs time and memory in proportion to the valid tensors before it, never more.
 * Problems are therefore reported in document order.
 *
 * @param prefix the first 8 + N bytes of the file (fewer if the file is shorter; more is fine)
 * @param fileSize the size of the whole file, for the end-of-data checks
 * @throws CodiError with a `SAFETENSORS_*` code for every invalid input; RangeError only for a
 *   `fileSize` that is not a non-negative safe integer (a caller bug, not a bad file)
 */
export function parseSafetensorsHeader(
  prefix: Uint8Array,
  fileSize: number,
  /** `plain: false` skips the fast path, so tests can hold the two paths to the same results */
  options: { plain?: boolean } = {},
): SafetensorsHeader {
  if (!Number.isSafeInteger(fileSize) || fileSize < 0) {
    throw new RangeError(`fileSize must be a non-negative safe integer, got ${fileSize}`);
  }
  const headerLength = parseHeaderLength(prefix, fileSize);
  const dataOffset = HEADER_LENGTH_BYTES + headerLength;
  if (prefix.length < dataOffset) {
    throw failure(
      'SAFETENSORS_TRUNCATED',
      `only ${prefix.length - HEADER_LENGTH_BYTES} of the ${headerLength} header bytes could be read`,
      prefix.length,
    );
  }
  return parseHeaderText(
    decodeHeader(prefix.subarray(HEADER_LENGTH_BYTES, dataOffset)),
    headerLength,
    fileSize,
    options,
  );
}

/** The header once decoded: the bytes it came from are no longer needed (a reader drops them). */
function parseHeaderText(
  text: string,
  headerLength: number,
  fileSize: number,
  options: { plain?: boolean },
): SafetensorsHeader {
  const dataOffset = HEADER_LENGTH_BYTES + headerLength;
  const plain = options.plain === false ? null : acceptPlainHeader(text, fileSize - dataOffset);
  if (plain) return { headerLength, dataOffset, fileSize, ...plain };
  const reader = new HeaderReader(text);
  try {
    parseStrictJson(text, { reviver: reader.revive });
  } catch (err) {
    if (err instanceof StrictJsonError) throw jsonFailure(err, reader.at);
    throw err;
  }
  checkLayout(reader, dataOffset, fileSize);
  return { headerLength, dataOffset, fileSize, metadata: reader.metadata, tensors: reader.tensors };
}

/**
 * The fast path for an ordinary header: `JSON.parse` (native, and fast even in a process that parses
 * just one header) plus the checks that make its result exactly the strict parser's. Accepted: no
 * backslash anywhere (so strings are as written), every number a plain non-negative integer below
 * 10^15 (a sign or the size shows in the value; a fraction or an exponent needs a digit then `.`,
 * `e` or `E` then a digit or a sign, which the text must not hold anywhere), no duplicate key (every colon outside a string introduces a member, so the colons in the text
 * minus those inside strings equal the members parsed only when none was dropped), entries of exactly
 * `dtype`, `shape` and `data_offsets`, no key an object would reorder, and the layout. Anything else
 * returns null, and the strict parser, which explains every problem with its byte offset, judges the
 * header instead; a property test holds the two paths to the same results.
 */
export function acceptPlainHeader(
  text: string,
  dataSize: number,
): Pick<SafetensorsHeader, 'metadata' | 'tensors'> | null {
  if (text.length > PLAIN_HEADER_MAX_CHARS || text.includes('\\') || NOT_PLAIN_NUMBER.test(text)) {
    return null;
  }
  let root: unknown;
  try {
    root = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof root !== 'object' || root === null || Array.isArray(root)) return null;
  let members = 0;
  let colonsInStrings = 0;
  let metadata: Record<string, string> | null = null;
  const tensors: SafetensorsTensorInfo[] = [];
  const object = root as Record<string, unknown>;
  for (const name in object) {
    const entry = object[name];
    members++;
    colonsInStrings += colonsIn(name);
    if (isAwkwardKey(name) || typeof entry !== 'object' || entry === null || Array.isArray(entry)) {
      return null;
    }
    const fields = entry as Record<string, unknown>;
    if (name === METADATA_KEY) {
      // null prototype: a key is only ever data
      metadata = Object.create(null) as Record<string, string>;
      let count = 0;
      for (const key in fields) {
        const value = fields[key];
        if (typeof value !== 'string' || isAwkwardKey(key)) return null;
        if (++count > SAFETENSORS_MAX_METADATA_ENTRIES) return null;
        colonsInStrings += colonsIn(key) + colonsIn(value);
        metadata[key] = value;
      }
      members += count;
      continue;
    }
    let count = 0;
    for (const _ in fields) count++;
    const { dtype, shape, data_offsets: offsets } = fields;
    if (count !== 3 || typeof dtype !== 'string' || !isSafetensorsDtype(dtype)) return null;
    if (!Array.isArray(shape) || shape.length > SAFETENSORS_MAX_RANK) return null;
    if (!Array.isArray(offsets) || offsets.length !== 2) return null;
    const begin: unknown = offsets[0];
    const end: unknown = offsets[1];
    if (!isPlainInteger(begin) || !isPlainInteger(end)) return null;
    let bits: number = SAFETENSORS_DTYPES[dtype];
    for (const dim of shape as unknown[]) {
      if (!isPlainInteger(dim)) return null;
      bits *= dim;
    }
    if (!(bits <= Number.MAX_SAFE_INTEGER) || bits % 8 !== 0 || bits / 8 !== end - begin) return null;
    members += 3;
    colonsInStrings += colonsIn(dtype);
    tensors.push({ name, dtype, shape: shape as number[], begin, end });
  }
  if (members !== colonsIn(text) - colonsInStrings) return null;
  if (!tilesExactly(tensors, dataSize)) return null;
  return { metadata, tensors };
}

/**
 * Headers up to this size may take the fast path (JSON.parse builds the whole tree); a larger one is
 * parsed value by value, so a hostile 100 MB header is refused at its first wrong value. (So small a
 * header cannot reach SAFETENSORS_MAX_TENSORS or SAFETENSORS_MAX_DIMENSIONS: an entry takes 40
 * characters and more, a dimension 2.)
 */
const PLAIN_HEADER_MAX_CHARS = 1 << 20;

/**
 * What a fraction or an exponent needs: a digit, then `.`, `e` or `E`, then a digit or a sign. A name
 * that merely holds one (`h.1.2`) only sends the header to the strict parser.
 */
const NOT_PLAIN_NUMBER = /[0-9][.eE][0-9+-]/;

/** A number as the plain form writes it: an integer in [0, 10^15), and not −0 (written `-0`). */
function isPlainInteger(value: unknown): value is number {
  return (
    typeof value === 'number' &&
    Number.isInteger(value) &&
    value >= 0 &&
    value < 1e15 &&
    !Object.is(value, -0)
  );
}

function colonsIn(s: string): number {
  let n = 0;
  for (let i = s.indexOf(':'); i >= 0; i = s.indexOf(':', i + 1)) n++;
  return n;
}

/** A key an object would move before the others (an array index), or `__proto__`. */
function isAwkwardKey(key: string): boolean {
  if (key === '__proto__') return true;
  if (key.length === 0) return false;
  const first = key.charCodeAt(0);
  if (first < 0x30 || first > 0x39 || (first === 0x30 && key.length > 1)) return false;
  for (let i = 1; i < key.length; i++) {
    const c = key.charCodeAt(i);
    if (c < 0x30 || c > 0x39) return false;
  }
  return true;
}

/**
 * Whether the tensors tile the data section from 0 to `dataSize`, with no gap and no overlap: in one
 * pass when they are listed in data order (as writers usually list them), else by following each end
 * to the tensor that begins there. Zero-length tensors (which may share an offset) answer false, for
 * the strict parser to order.
 */
function tilesExactly(tensors: readonly SafetensorsTensorInfo[], dataSize: number): boolean {
  let expected = 0;
  let inOrder = true;
  for (const t of tensors) {
    if (t.end === t.begin) return false;
    if (t.begin !== expected) inOrder = false;
    expected = t.end;
  }
  if (inOrder) return expected === dataSize;
  const byBegin = new Map<number, SafetensorsTensorInfo>();
  for (const t of tensors) {
    if (byBegin.has(t.begin)) return false;
    byBegin.set(t.begin, t);
  }
  expected = 0;
  for (let i = 0; i < tensors.length; i++) {
    const t = byBegin.get(expected);
    if (t === undefined) return false;
    expected = t.end;
  }
  return expected === dataSize;
}

/** Reads and checks N from the first 8 bytes; returns it as a number (it is ≤ 100,000,000). */
function parseHeaderLength(prefix: Uint8Array, fileSize: number): number {
  if (fileSize < HEADER_LENGTH_BYTES) {
    throw failure(
      'SAFETENSORS_TRUNCATED',
      fileSize === 0
        ? 'the file is empty; a safetensors file starts with an 8-byte header length'
        : `the file is ${fileSize} bytes, shorter than the 8-byte header length`,
      0,
    );
  }
  if (prefix.length < HEADER_LENGTH_BYTES) {
    throw failure(
      'SAFETENSORS_TRUNCATED',
      `only ${prefix.length} of the 8 header-length bytes could be read`,
      prefix.length,
    );
  }
  // BigInt: a u64 such as 2^64−1 has no exact double, and a rounded one could pass a bound check
  const n = new DataView(prefix.buffer, prefix.byteOffset, HEADER_LENGTH_BYTES).getBigUint64(0, true);
  if (n === 0n) {
    throw failure('SAFETENSORS_HEADER_LENGTH', 'the header length is 0; the header must be a JSON object', 0);
  }
  if (n > BigInt(SAFETENSORS_MAX_HEADER_LENGTH)) {
    throw failure(
      'SAFETENSORS_HEADER_LENGTH',
      `the header length ${n} exceeds the limit of ${SAFETENSORS_MAX_HEADER_LENGTH} bytes`,
      0,
    );
  }
  const available = fileSize - HEADER_LENGTH_BYTES;
  if (n > BigInt(available)) {
    throw failure(
      'SAFETENSORS_HEADER_LENGTH',
      `the header length ${n} runs past the end of the file, which has ${available} bytes after the length`,
      0,
      'the file may be truncated, or it is not a safetensors file',
    );
  }
  return Number(n);
}

function decodeHeader(bytes: Uint8Array): string {
  // a leading U+FEFF stays in the text, so the JSON parser refuses it instead of it vanishing
  const decoded = decodeUtf8(bytes);
  if ('text' in decoded) return decoded.text;
  const at = decoded.invalidAt;
  throw failure(
    'SAFETENSORS_HEADER_UTF8',
    `the header is not valid UTF-8 (invalid byte 0x${(bytes[at] ?? 0).toString(16).padStart(2, '0')} at file byte ${HEADER_LENGTH_BYTES + at})`,
    HEADER_LENGTH_BYTES + at,
  );
}

function jsonFailure(err: StrictJsonError, at: Locator): CodiError {
  const offset = at.byteOffset(err.position);
  if (err.kind === 'duplicate-key' && err.key !== undefined) {
    return failure('SAFETENSORS_DUPLICATE_KEY', describeDuplicate(err.path, err.key), offset, undefined, {
      key: err.key,
      jsonPointer: err.jsonPointer,
    });
  }
  return failure(
    'SAFETENSORS_HEADER_JSON',
    `the header is not valid JSON: ${err.reason}`,
    offset,
    undefined,
    {
      jsonPointer: err.jsonPointer,
    },
  );
}

function describeDuplicate(path: readonly (string | number)[], key: string): string {
  const q = quoteForMessage(key);
  // the path ends with the duplicated key itself
  const owner = path.length >= 2 ? path[0] : undefined;
  if (owner === undefined) {
    return key === METADATA_KEY
      ? `duplicate ${q} key in the header (another reader could take either one)`
      : `duplicate tensor ${q} (another reader could take either entry)`;
  }
  const where =
    owner === METADATA_KEY ? `in ${METADATA_KEY}` : `in the entry of ${tensorLabel(String(owner))}`;
  return `duplicate key ${q} ${where}`;
}

/**
 * Checks the header value by value as the JSON parser completes each one (innermost first), keeps
 * what it needs in compact form, and hands the parser `null` for every entry it has taken, so that
 * neither a hostile nor a huge header is ever held as a tree.
 */
class HeaderReader {
  readonly at: Locator;
  metadata: Record<string, string> | null = null;
  readonly tensors: SafetensorsTensorInfo[] = [];
  /** character index of each tensor's key, parallel to `tensors`, for error pointers */
  readonly keyPositions: number[] = [];
  private metadataSoFar: Record<string, string> | null = null;
  private metadataEntries = 0;
  /** dimensions of the shapes taken so far */
  private dimensions = 0;

  constructor(private readonly text: string) {
    this.at = new Locator(text);
  }

  readonly revive = (value: JsonValue, context: StrictJsonReviverContext): JsonValue => {
    const { path } = context;
    const top = path[0];
    if (top === undefined) {
      if (!(value instanceof JsonObject)) throw this.notAnObject(describeKind(value));
      return value;
    }
    if (typeof top === 'number') throw this.notAnObject('an array');
    if (top === METADATA_KEY) return this.reviveMetadata(value, context);
    return this.reviveTensor(top, value, context);
  };

  private notAnObject(found: string): CodiError {
    const start = /[^ \t\n\r]/.exec(this.text)?.index ?? 0;
    return failure(
      'SAFETENSORS_HEADER_NOT_OBJECT',
      `the header must be a JSON object of tensor entries, found ${found}`,
      this.at.byteOffset(start),
    );
  }

  private reviveMetadata(value: JsonValue, { path, valuePosition }: StrictJsonReviverContext): JsonValue {
    const key = path[1];
    const fail = (message: string): CodiError =>
      failure(
        'SAFETENSORS_METADATA',
        message,
        this.at.byteOffset(valuePosition),
        undefined,
        typeof key === 'string' ? { key } : undefined,
      );
    if (key === undefined) {
      if (!(value instanceof JsonObject)) {
        throw fail(`${METADATA_KEY} must be an object of string values, found ${describeKind(value)}`);
      }
      this.metadata = this.metadataSoFar ?? (Object.create(null) as Record<string, string>);
      this.metadataSoFar = null;
      return null;
    }
    if (typeof key === 'number')
      throw fail(`${METADATA_KEY} must be an object of string values, found an array`);
    if (path.length > 2 || typeof value !== 'string') {
      const found = path.length > 2 ? containerKind(path[2]) : describeKind(value);
      throw fail(`${METADATA_KEY} value of ${quoteForMessage(key)} must be a string, found ${found}`);
    }
    if (++this.metadataEntries > SAFETENSORS_MAX_METADATA_ENTRIES) {
      throw fail(`${METADATA_KEY} has more than ${SAFETENSORS_MAX_METADATA_ENTRIES} entries`);
    }
    // null prototype: a `__proto__` key is stored as data, never as a prototype
    this.metadataSoFar ??= Object.create(null) as Record<string, string>;
    this.metadataSoFar[key] = value;
    return null;
  }

  private reviveTensor(name: string, value: JsonValue, context: StrictJsonReviverContext): JsonValue {
    const { path } = context;
    const field = path[1];
    if (field === undefined) return this.takeEntry(name, value, context);

    const details = { tensor: name };
    const here = (): number => this.at.byteOffset(context.valuePosition);
    if (typeof field === 'number') {
      throw failure(
        'SAFETENSORS_ENTRY',
        `${tensorLabel(name)}: the entry must be an object with dtype, shape and data_offsets, found an array`,
        here(),
        undefined,
        details,
      );
    }
    if (!ENTRY_KEYS.has(field)) {
      throw failure(
        'SAFETENSORS_ENTRY',
        `${tensorLabel(name)}: unknown key ${quoteForMessage(field)} (allowed: dtype, shape, data_offsets)`,
        this.at.byteOffset(path.length === 2 ? context.keyPosition : context.valuePosition),
        undefined,
        details,
      );
    }

    if (field === 'dtype') {
      if (path.length > 2 || typeof value !== 'string') {
        const found = path.length > 2 ? containerKind(path[2]) : describeKind(value);
        throw failure(
          'SAFETENSORS_DTYPE',
          `${tensorLabel(name)}: dtype must be a string, found ${found}`,
          here(),
          undefined,
          details,
        );
      }
      if (!isSafetensorsDtype(value)) {
        const upper = value.toUpperCase();
        throw failure(
          'SAFETENSORS_DTYPE',
          `${tensorLabel(name)}: unknown dtype ${quoteForMessage(value)}`,
          here(),
          isSafetensorsDtype(upper)
            ? `dtype names are case-sensitive: ${quoteForMessage(upper)} is the known one`
            : `known dtypes: ${Object.keys(SAFETENSORS_DTYPES).join(', ')}`,
          details,
        );
      }
      return value;
    }

    const isShape = field === 'shape';
    const code = isShape ? 'SAFETENSORS_SHAPE' : 'SAFETENSORS_OFFSETS';
    const index = path[2];
    if (index === undefined) {
      if (!Array.isArray(value) || (!isShape && value.length !== 2)) {
        throw failure(
          code,
          isShape
            ? `${tensorLabel(name)}: shape must be an array of integers, found ${describeKind(value)}`
            : `${tensorLabel(name)}: data_offsets must be two integers [begin, end], found ${describeValue(value)}`,
          here(),
          undefined,
          details,
        );
      }
      return value;
    }
    if (typeof index === 'string') {
      throw failure(
        code,
        `${tensorLabel(name)}: ${field} must be an array, found an object`,
        here(),
        undefined,
        details,
      );
    }
    const limit = isShape ? SAFETENSORS_MAX_RANK : 2;
    if (index >= limit) {
      throw failure(
        code,
        isShape
          ? `${tensorLabel(name)}: shape has more than ${SAFETENSORS_MAX_RANK} dimensions`
          : `${tensorLabel(name)}: data_offsets must be exactly two integers [begin, end]`,
        here(),
        undefined,
        details,
      );
    }
    const reason = path.length > 3 ? 'expected a non-negative integer' : nonNegativeSafeInteger(value);
    if (typeof reason === 'string') {
      const found = path.length > 3 ? containerKind(path[3]) : describeValue(value);
      throw failure(
        code,
        `${tensorLabel(name)}: ${field}[${index}] is ${found}; ${reason}`,
        here(),
        undefined,
        details,
      );
    }
    return value;
  }

  /** A whole entry, its fields already checked one by one: check it as a whole and keep it. */
  private takeEntry(name: string, value: JsonValue, context: StrictJsonReviverContext): JsonValue {
    const details = { tensor: name };
    const keyOffset = (): number => this.at.byteOffset(context.keyPosition);
    if (!(value instanceof JsonObject)) {
      throw failure(
        'SAFETENSORS_ENTRY',
        `${tensorLabel(name)}: the entry must be an object with dtype, shape and data_offsets, found ${describeKind(value)}`,
        keyOffset(),
        undefined,
        details,
      );
    }
    // the field checks above guarantee the types; these narrow them and catch missing fields
    const dtype = value.get('dtype');
    const shape = value.get('shape');
    const offsets = value.get('data_offsets');
    if (typeof dtype !== 'string' || !isSafetensorsDtype(dtype)) {
      throw failure(
        'SAFETENSORS_DTYPE',
        `${tensorLabel(name)}: dtype is missing`,
        keyOffset(),
        undefined,
        details,
      );
    }
    if (!Array.isArray(shape)) {
      throw failure(
        'SAFETENSORS_SHAPE',
        `${tensorLabel(name)}: shape is missing`,
        keyOffset(),
        undefined,
        details,
      );
    }
    if (!Array.isArray(offsets)) {
      throw failure(
        'SAFETENSORS_OFFSETS',
        `${tensorLabel(name)}: data_offsets is missing`,
        keyOffset(),
        undefined,
        details,
      );
    }
    const dims = shape.map((d) => (d instanceof JsonNumber ? (d.toSafeInteger() ?? -1) : -1));
    const [begin = -1, end = -1] = offsets.map((d) =>
      d instanceof JsonNumber ? (d.toSafeInteger() ?? -1) : -1,
    );
    if (end < begin) {
      throw failure(
        'SAFETENSORS_OFFSETS',
        `${tensorLabel(name)}: data_offsets [${begin}, ${end}] end before they begin`,
        this.at.byteOffset(value.valuePosition('data_offsets') ?? context.keyPosition),
        undefined,
        details,
      );
    }
    checkSize(name, dtype, dims, begin, end, keyOffset, details);
    // refused at the first entry past a limit, so what is held stays bounded
    this.dimensions += dims.length;
    if (this.tensors.length >= SAFETENSORS_MAX_TENSORS || this.dimensions > SAFETENSORS_MAX_DIMENSIONS) {
      throw failure(
        'SAFETENSORS_TOO_MANY_TENSORS',
        this.tensors.length >= SAFETENSORS_MAX_TENSORS
          ? `the header describes more than ${thousands(SAFETENSORS_MAX_TENSORS)} tensors; no real adapter has that many (the largest hold ~140,000)`
          : `the tensor shapes have more than ${thousands(SAFETENSORS_MAX_DIMENSIONS)} dimensions in all; no real file has that many (4 per tensor on average is the limit)`,
        keyOffset(),
        'this is not a LoRA adapter, or one built to exhaust memory',
      );
    }
    this.tensors.push({ name, dtype, shape: dims, begin, end });
    this.keyPositions.push(context.keyPosition);
    // the entry is taken: the root keeps only its name (for the duplicate check), not the tree
    return null;
  }
}

function checkSize(
  name: string,
  dtype: SafetensorsDtype,
  shape: readonly number[],
  begin: number,
  end: number,
  // lazy: locating costs a pass over the header text, affordable once per error, not once per tensor
  offset: () => number,
  details: Record<string, unknown>,
): void {
  // the common, valid case in doubles: exact while the product stays within 2^53
  let bitsFast: number = SAFETENSORS_DTYPES[dtype];
  for (const dim of shape) {
    bitsFast *= dim;
    if (bitsFast > Number.MAX_SAFE_INTEGER) break;
  }
  if (bitsFast <= Number.MAX_SAFE_INTEGER && bitsFast % 8 === 0 && bitsFast / 8 === end - begin) return;
  // anything else: the exact BigInt path, which also explains what is wrong
  const shown = (): string => `[${shape.join(', ')}]`;
  let elements = 1n;
  // a zero dimension makes any product zero, and the early stop below must not hide that
  if (shape.includes(0)) {
    elements = 0n;
  } else {
    for (const dim of shape) {
      elements *= BigInt(dim);
      // stop here: a hostile shape of many huge dimensions would otherwise build an enormous BigInt
      if (elements >= U64_LIMIT) {
        throw failure(
          'SAFETENSORS_SIZE',
          `${tensorLabel(name)}: shape ${shown()} has more elements than fit in 64 bits`,
          offset(),
          undefined,
          details,
        );
      }
    }
  }
  const bits = elements * BigInt(SAFETENSORS_DTYPES[dtype]);
  if (bits >= U64_LIMIT) {
    throw failure(
      'SAFETENSORS_SIZE',
      `${tensorLabel(name)}: ${dtype} shape ${shown()} needs more bits than fit in 64 bits`,
      offset(),
      undefined,
      details,
    );
  }
  if (bits % 8n !== 0n) {
    throw failure(
      'SAFETENSORS_SIZE',
      `${tensorLabel(name)}: ${elements} ${dtype} elements are ${bits} bits, not a whole number of bytes`,
      offset(),
      undefined,
      details,
    );
  }
  const expected = bits / 8n;
  const actual = BigInt(end - begin);
  if (expected !== actual) {
    throw failure(
      'SAFETENSORS_SIZE',
      `${tensorLabel(name)}: ${dtype} shape ${shown()} needs ${expected} bytes, but data_offsets [${begin}, ${end}] hold ${actual}`,
      offset(),
      undefined,
      details,
    );
  }
}

/** Tensors must tile the data section exactly: from 0, no gap, no overlap, ending at end of file. */
function checkLayout(reader: HeaderReader, dataOffset: number, fileSize: number): void {
  const items = reader.tensors.map((t, i) => ({ t, keyPosition: reader.keyPositions[i] ?? 0 }));
  // zero-length tensors may share an offset with their neighbour; ordering by end puts them first
  items.sort((a, b) => a.t.begin - b.t.begin || a.t.end - b.t.end);
  const keyOffset = (item: { keyPosition: number }): number => reader.at.byteOffset(item.keyPosition);
  let expected = 0;
  let previous: SafetensorsTensorInfo | undefined;
  for (const item of items) {
    const { t } = item;
    if (t.begin > expected) {
      throw failure(
        'SAFETENSORS_OFFSETS',
        previous === undefined
          ? `${tensorLabel(t.name)} is the first in the data section but begins at ${t.begin}, not 0`
          : `${tensorLabel(t.name)} begins at ${t.begin}, leaving a gap of ${t.begin - expected} bytes after ${tensorLabel(previous.name)}, which ends at ${expected}`,
        keyOffset(item),
        undefined,
        { tensor: t.name },
      );
    }
    if (t.begin < expected && previous !== undefined) {
      throw failure(
        'SAFETENSORS_OFFSETS',
        `${tensorLabel(t.name)} [${t.begin}, ${t.end}] overlaps ${tensorLabel(previous.name)} [${previous.begin}, ${previous.end}]`,
        keyOffset(item),
        undefined,
        { tensor: t.name, other: previous.name },
      );
    }
    expected = t.end;
    previous = t;
  }

  const dataSize = fileSize - dataOffset;
  const beyond = items.find((item) => item.t.end > dataSize);
  if (beyond !== undefined) {
    const { t } = beyond;
    throw failure(
      'SAFETENSORS_OFFSETS',
      `${tensorLabel(t.name)} [${t.begin}, ${t.end}] runs past the end of the file: the data section has ${dataSize} bytes`,
      keyOffset(beyond),
      'the file may be truncated: copy it again',
      { tensor: t.name },
    );
  }
  if (expected < dataSize) {
    throw failure(
      'SAFETENSORS_TRAILING',
      `${dataSize - expected} bytes follow the ${previous === undefined ? 'header (there are no tensors)' : `last ${tensorLabel(previous.name)}`}, from file byte ${dataOffset + expected}`,
      dataOffset + expected,
      'a safetensors file must end where its last tensor ends; extra bytes can hide another file format',
    );
  }
}

/** A dimension or offset, or the reason it is not one. */
function nonNegativeSafeInteger(value: JsonValue): number | string {
  if (!(value instanceof JsonNumber)) return 'expected a non-negative integer';
  if (!value.isInteger) return 'expected an integer, written without fraction or exponent';
  // `-0` too: no writer produces it, and accepting it would make two spellings of one header
  if (value.source.startsWith('-')) return 'expected a non-negative integer';
  const n = value.toSafeInteger();
  return n === undefined ? 'larger than 2^53−1 (9007199254740991)' : n;
}

// built only when a message is: quoting every name up front costs a copy per tensor
function tensorLabel(name: string): string {
  return `tensor ${quoteForMessage(name)}`;
}

function describeKind(value: JsonValue): string {
  if (value === null) return 'null';
  if (typeof value === 'boolean') return String(value);
  if (typeof value === 'string') return 'a string';
  if (value instanceof JsonNumber) return 'a number';
  if (Array.isArray(value)) return 'an array';
  return 'an object';
}

function describeValue(value: JsonValue): string {
  if (value instanceof JsonNumber)
    return value.source.length > 40 ? `${value.source.slice(0, 40)}…` : value.source;
  if (typeof value === 'string') return quoteForMessage(value, 40);
  if (Array.isArray(value) && value.length <= 4 && value.every((v) => v instanceof JsonNumber)) {
    return `[${value.map((v) => describeValue(v)).join(', ')}]`;
  }
  return describeKind(value);
}

/** What a container is, from the key of its first member as the reviver saw it. */
function containerKind(firstKey: string | number | undefined): string {
  return typeof firstKey === 'number' ? 'an array' : 'an object';
}

/** Turns character indexes in the decoded header into byte offsets in the file. */
class Locator {
  constructor(private readonly text: string) {}

  byteOffset(charIndex: number): number {
    // only computed for the one error being raised, so the O(n) prefix encode is fine
    return HEADER_LENGTH_BYTES + Buffer.byteLength(this.text.slice(0, charIndex), 'utf8');
  }
}

function failure(
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

// ---------------------------------------------------------------------------------------------
// Files

/**
 * Reads and validates the header of a safetensors file. Reads the 8-byte length and then at most
 * 100,000,000 header bytes, never the data section, so a multi-GB file costs no memory.
 *
 * @throws CodiError `SAFETENSORS_*` (exit 1) for an invalid file; `PATH_*` (exit 3) when it cannot
 *   be opened or read or is not a regular file
 */
export function readSafetensorsHeader(path: string): Promise<SafetensorsHeader> {
  return withRegularFile(path, async (file) => {
    const headerLength = parseHeaderLength(
      await file.readBytes(0, Math.min(HEADER_LENGTH_BYTES, file.size)),
      file.size,
    );
    return headerOf(await file.readBytes(HEADER_LENGTH_BYTES, headerLength), headerLength, file.size);
  });
}

/**
 * `readSafetensorsHeader` with blocking reads: for scanning many files (`list` over a catalog), where
 * the thread-pool hop costs more than the reads. It never follows a symlink (a catalog is scanned for
 * what is really there).
 */
export function readSafetensorsHeaderSync(path: string): SafetensorsHeader {
  const file = RegularFile.openSync(path, { noFollow: true });
  try {
    const headerLength = parseHeaderLength(
      file.readBytesSync(0, Math.min(HEADER_LENGTH_BYTES, file.size)),
      file.size,
    );
    return headerOf(file.readBytesSync(HEADER_LENGTH_BYTES, headerLength), headerLength, file.size);
  } finally {
    file.closeSync();
  }
}

/** The header from its bytes as read: fewer than `headerLength` means the file shrank meanwhile. */
function headerOf(headerBytes: Uint8Array, headerLength: number, fileSize: number): SafetensorsHeader {
  if (headerBytes.length < headerLength) {
    throw failure(
      'SAFETENSORS_TRUNCATED',
      `only ${headerBytes.length} of the ${headerLength} header bytes could be read`,
      HEADER_LENGTH_BYTES + headerBytes.length,
    );
  }
  // the bytes are dropped once decoded, so a 100 MB header is not held twice while it is parsed
  return parseHeaderText(decodeHeader(headerBytes), headerLength, fileSize, {});
}

/** Largest tensor `readTensorBytes` loads at once; `streamTensorBytes` has no such limit. */
export const MAX_TENSOR_READ_BYTES = 2 ** 31 - 1;

/**
 * The raw bytes of one tensor. `source` may be an open file, so a converter reading many tensors
 * opens the file once.
 */
export async function readTensorBytes(
  source: string | RegularFile,
  header: SafetensorsHeader,
  info: SafetensorsTensorInfo,
  /** reused for the bytes when large enough (a converter reading many tensors allocates once) */
  into?: Uint8Array,
): Promise<Uint8Array> {
  const length = checkTensorBounds(header, info);
  if (length > MAX_TENSOR_READ_BYTES) {
    throw failure(
      'SAFETENSORS_SIZE',
      `tensor ${quoteForMessage(info.name)} is ${length} bytes, more than can be loaded at once; stream it instead`,
      header.dataOffset + info.begin,
      undefined,
      { tensor: info.name },
    );
  }
  const read = async (file: RegularFile): Promise<Uint8Array> => {
    const target = into && into.length >= length ? into.subarray(0, length) : new Uint8Array(length);
    const got = await file.read(target, header.dataOffset + info.begin);
    if (got < length) throw tensorTruncated(info, header, got);
    return target;
  };
  return typeof source === 'string' ? withRegularFile(source, read) : read(source);
}

/** One tensor's bytes in chunks of at most `chunkSize`; memory stays bounded whatever its size. */
export async function* streamTensorBytes(
  source: string | RegularFile,
  header: SafetensorsHeader,
  info: SafetensorsTensorInfo,
  chunkSize = 1 << 20,
): AsyncGenerator<Uint8Array, void, undefined> {
  const length = checkTensorBounds(header, info);
  const owned = typeof source === 'string';
  const file = owned ? await RegularFile.open(source) : source;
  try {
    let done = 0;
    while (done < length) {
      const want = Math.min(chunkSize, length - done);
      const chunk = await file.readBytes(header.dataOffset + info.begin + done, want);
      if (chunk.length < want) throw tensorTruncated(info, header, done + chunk.length);
      done += chunk.length;
      yield chunk;
    }
  } finally {
    if (owned) await file.close();
  }
}

function checkTensorBounds(header: SafetensorsHeader, info: SafetensorsTensorInfo): number {
  if (
    !Number.isSafeInteger(info.begin) ||
    !Number.isSafeInteger(info.end) ||
    info.begin < 0 ||
    info.end < info.begin ||
    header.dataOffset + info.end > header.fileSize
  ) {
    throw failure(
      'SAFETENSORS_OFFSETS',
      `tensor ${quoteForMessage(info.name)} [${info.begin}, ${info.end}] is not inside the data section of ${header.fileSize - header.dataOffset} bytes`,
      header.dataOffset,
      undefined,
      { tensor: info.name },
    );
  }
  return info.end - info.begin;
}

function tensorTruncated(info: SafetensorsTensorInfo, header: SafetensorsHeader, got: number): CodiError {
  return failure(
    'SAFETENSORS_TRUNCATED',
    `tensor ${quoteForMessage(info.name)}: only ${got} of ${byteLength(info)} bytes could be read; the file is shorter than its header says (was it changed while being read?)`,
    header.dataOffset + info.begin + got,
    undefined,
    { tensor: info.name },
  );
}

/**
 * Writes a safetensors file atomically (temp file in the same folder, fsync, rename, fsync of the
 * folder): readers see the old file or the new one, never a part. The header is written like the
 * Rust crate writes it (`__metadata__` first, padded with spaces to a multiple of 8); tensors are laid
 * out contiguously in the given order. Returns the header as `readSafetensorsHeader` would read it.
 */
export async function writeSafetensors(
  path: string,
  tensors: readonly SafetensorsTensorInput[],
  metadata?: Readonly<Record<string, string>>,
): Promise<SafetensorsHeader> {
  const { prefix, fileSize } = encodeHeader(tensors, metadata);
  const header = parseSafetensorsHeader(prefix, fileSize);

  const file = await AtomicFile.open(path);
  try {
    // each write continues where the last ended
    await file.handle.writeFile(prefix);
    for (const t of tensors) await file.handle.writeFile(t.data);
  } catch (err) {
    await file.abort();
    throw environmentError(err, path);
  }
  await file.commit();
  return header;
}

/**
 * A whole safetensors file in memory, laid out as `writeSafetensors` writes it; for small fixtures
 * and tests.
 */
export function encodeSafetensors(
  tensors: readonly SafetensorsTensorInput[],
  metadata?: Readonly<Record<string, string>>,
): Uint8Array {
  const { prefix, fileSize } = encodeHeader(tensors, metadata);
  const out = new Uint8Array(fileSize);
  out.set(prefix);
  let position = prefix.length;
  for (const t of tensors) {
    out.set(t.data, position);
    position += t.data.length;
  }
  return out;
}

/** The bytes before the data section, checked as strictly as a reader would check them. */
function encodeHeader(
  tensors: readonly SafetensorsTensorInput[],
  metadata: Readonly<Record<string, string>> | undefined,
): { prefix: Uint8Array; fileSize: number } {
  const members: string[] = [];
  if (metadata !== undefined) {
    const items: string[] = [];
    for (const [key, value] of Object.entries(metadata)) {
      if (typeof value !== 'string' || hasLoneSurrogate(key) || hasLoneSurrogate(value)) {
        throw writerError(
          'SAFETENSORS_METADATA',
          `${METADATA_KEY} ${quoteForMessage(key)}: not a UTF-8 string`,
        );
      }
      items.push(`${JSON.stringify(key)}:${JSON.stringify(value)}`);
    }
    members.push(`${JSON.stringify(METADATA_KEY)}:{${items.join(',')}}`);
  }
  const names = new Set<string>();
  let offset = 0;
  for (const t of tensors) {
    if (t.name === METADATA_KEY || hasLoneSurrogate(t.name)) {
      throw writerError('SAFETENSORS_ENTRY', `${tensorLabel(t.name)}: not a valid tensor name`);
    }
    if (names.has(t.name)) throw writerError('SAFETENSORS_DUPLICATE_KEY', `duplicate ${tensorLabel(t.name)}`);
    names.add(t.name);
    if (!isSafetensorsDtype(t.dtype)) {
      throw writerError(
        'SAFETENSORS_DTYPE',
        `${tensorLabel(t.name)}: unknown dtype ${quoteForMessage(String(t.dtype))}`,
      );
    }
    if (!t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw writerError(
        'SAFETENSORS_SHAPE',
        `${tensorLabel(t.name)}: shape must be non-negative safe integers`,
      );
    }
    const expected = expectedByteLength(t.dtype, t.shape);
    if (expected !== BigInt(t.data.length)) {
      throw writerError(
        'SAFETENSORS_SIZE',
        expected === undefined
          ? `${tensorLabel(t.name)}: ${t.dtype} shape [${t.shape.join(', ')}] is not a whole number of bytes`
          : `${tensorLabel(t.name)}: ${t.dtype} shape [${t.shape.join(', ')}] needs ${expected} bytes, data has ${t.data.length}`,
      );
    }
    const end = offset + t.data.length;
    members.push(
      `${JSON.stringify(t.name)}:{"dtype":${JSON.stringify(t.dtype)},"shape":[${t.shape.join(',')}],"data_offsets":[${offset},${end}]}`,
    );
    offset = end;
  }
  const json = new TextEncoder().encode(`{${members.join(',')}}`);
  const headerLength = Math.ceil(json.length / 8) * 8;
  if (headerLength > SAFETENSORS_MAX_HEADER_LENGTH) {
    throw writerError(
      'SAFETENSORS_HEADER_LENGTH',
      `the header would be ${headerLength} bytes, over the limit`,
    );
  }
  const prefix = new Uint8Array(HEADER_LENGTH_BYTES + headerLength).fill(0x20, HEADER_LENGTH_BYTES);
  new DataView(prefix.buffer).setBigUint64(0, BigInt(headerLength), true);
  prefix.set(json, HEADER_LENGTH_BYTES);
  return { prefix, fileSize: prefix.length + offset };
}

function writerError(code: SafetensorsErrorCode, message: string): CodiError {
  return new CodiError(code, `cannot write safetensors: ${message}`, { exitCode: ExitCode.INVALID });
}

function hasLoneSurrogate(text: string): boolean {
  // with the u flag, a well-formed pair is one code point, so only unpaired halves match
  return /\p{Cs}/u.test(text);
}
