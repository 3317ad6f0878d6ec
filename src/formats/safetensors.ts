/**
 * The safetensors format: a strict header parser, where a tensor's bytes lie, and the encoder of a
 * whole file.
 *
 * Layout: an 8-byte little-endian u64 N, N bytes of UTF-8 JSON (an object of tensor entries and an
 * optional `__metadata__` string map), then the data section, in which every tensor's `data_offsets`
 * are relative. We check at least what the reference Rust crate checks, and more: duplicate keys
 * (the crate lets the last one win), unknown entry keys, integers written as floats or beyond 2^53,
 * and bytes after the last tensor (a file that is also another format, a polyglot, must not pass).
 *
 * Errors are `FormatError`s with a `SAFETENSORS_*` code and `pointer` set to a byte offset in the
 * file. They carry no file name: the caller knows the path relative to the adapter (files/safetensors.ts
 * reads and writes the files).
 */
import { FormatError } from './format-error.js';
import {
  byteLength,
  expectedByteLength,
  failure,
  HEADER_LENGTH_BYTES,
  isSafetensorsDtype,
  METADATA_KEY,
  SAFETENSORS_DTYPES,
  SAFETENSORS_MAX_HEADER_LENGTH,
  SAFETENSORS_MAX_METADATA_ENTRIES,
  SAFETENSORS_MAX_RANK,
  tensorLabel,
  type SafetensorsErrorCode,
  type SafetensorsHeader,
  type SafetensorsTensorInfo,
  type SafetensorsTensorInput,
} from './safetensors-spec.js';
import { parseStrictHeader } from './safetensors-strict.js';
import { quoteForMessage } from './strict-json.js';
import { decodeUtf8 } from './utf8.js';

export {
  byteLength,
  elementCount,
  expectedByteLength,
  isSafetensorsDtype,
  SAFETENSORS_DTYPES,
  SAFETENSORS_ERROR_CODES,
  SAFETENSORS_MAX_DIMENSIONS,
  SAFETENSORS_MAX_HEADER_LENGTH,
  SAFETENSORS_MAX_METADATA_ENTRIES,
  SAFETENSORS_MAX_RANK,
  SAFETENSORS_MAX_TENSORS,
  type SafetensorsDtype,
  type SafetensorsErrorCode,
  type SafetensorsHeader,
  type SafetensorsTensorInfo,
  type SafetensorsTensorInput,
} from './safetensors-spec.js';

/**
 * Parses and validates a safetensors header.
 *
 * Entries are checked while the JSON is parsed, so the first wrong value ends the parse: a hostile
 * 100 MB header costs time and memory in proportion to the valid tensors before it, never more.
 * Problems are therefore reported in document order.
 *
 * @param prefix the first 8 + N bytes of the file (fewer if the file is shorter; more is fine)
 * @param fileSize the size of the whole file, for the end-of-data checks
 * @throws FormatError with a `SAFETENSORS_*` code for every invalid input; RangeError only for a
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
  const headerLength = headerLengthOf(prefix, fileSize);
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
  return { headerLength, dataOffset, fileSize, ...parseStrictHeader(text, dataOffset, fileSize) };
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
    // the reference crate reads `__metadata__` as an Option: null is no metadata
    if (name === METADATA_KEY && entry === null) continue;
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
export function headerLengthOf(prefix: Uint8Array, fileSize: number): number {
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

/**
 * The header from its bytes as read (`headerLength` of them were asked for: fewer means the file
 * shrank meanwhile).
 */
export function headerFromBytes(
  headerBytes: Uint8Array,
  headerLength: number,
  fileSize: number,
): SafetensorsHeader {
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

/** Largest tensor read into memory at once; a larger one is streamed. */
export const MAX_TENSOR_READ_BYTES = 2 ** 31 - 1;

/**
 * How many bytes `info` holds, once it is known to lie inside the data section (SAFETENSORS_OFFSETS
 * otherwise), and to fit in memory at once unless `streamed` (SAFETENSORS_SIZE otherwise).
 */
export function tensorLength(
  header: SafetensorsHeader,
  info: SafetensorsTensorInfo,
  streamed: boolean,
): number {
  const length = checkTensorBounds(header, info);
  if (!streamed && length > MAX_TENSOR_READ_BYTES) {
    throw failure(
      'SAFETENSORS_SIZE',
      `tensor ${quoteForMessage(info.name)} is ${length} bytes, more than can be loaded at once; stream it instead`,
      header.dataOffset + info.begin,
      { tensor: info.name },
    );
  }
  return length;
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
      { tensor: info.name },
    );
  }
  return info.end - info.begin;
}

/** The refusal of a tensor of which only `got` bytes could be read. */
export function tensorTruncated(
  info: SafetensorsTensorInfo,
  header: SafetensorsHeader,
  got: number,
): FormatError {
  return failure(
    'SAFETENSORS_TRUNCATED',
    `tensor ${quoteForMessage(info.name)}: only ${got} of ${byteLength(info)} bytes could be read; the file is shorter than its header says (was it changed while being read?)`,
    header.dataOffset + info.begin + got,
    { tensor: info.name },
  );
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

/**
 * The bytes before the data section, checked as strictly as a reader would check them. Only the
 * length of each tensor's data is read, so a writer that streams the data can give just that.
 */
export function encodeHeader(
  tensors: readonly (Omit<SafetensorsTensorInput, 'data'> & { data: { readonly length: number } })[],
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

function writerError(code: SafetensorsErrorCode, message: string): FormatError {
  return new FormatError(code, `cannot write safetensors: ${message}`);
}

function hasLoneSurrogate(text: string): boolean {
  // with the u flag, a well-formed pair is one code point, so only unpaired halves match
  return /\p{Cs}/u.test(text);
}
