/**
 * The strict safetensors header parser: the JSON is parsed value by value (strict-json.ts) and every
 * entry is checked as the parser completes it, so the first wrong value ends the parse and is
 * reported with its byte offset. A hostile 100 MB header costs time and memory in proportion to the
 * valid tensors before it, never more.
 */
import type { FormatError } from './format-error.js';
import {
  failure,
  HEADER_LENGTH_BYTES,
  isSafetensorsDtype,
  METADATA_KEY,
  SAFETENSORS_DTYPES,
  SAFETENSORS_MAX_DIMENSIONS,
  SAFETENSORS_MAX_METADATA_ENTRIES,
  SAFETENSORS_MAX_RANK,
  SAFETENSORS_MAX_TENSORS,
  tensorLabel,
  type SafetensorsDtype,
  type SafetensorsHeader,
  type SafetensorsTensorInfo,
} from './safetensors-spec.js';
import {
  JsonNumber,
  JsonObject,
  parseStrictJson,
  quoteForMessage,
  StrictJsonError,
  type JsonValue,
  type StrictJsonReviverContext,
} from './strict-json.js';

const ENTRY_KEYS: ReadonlySet<string> = new Set(['dtype', 'shape', 'data_offsets']);
const U64_LIMIT = 1n << 64n;

/**
 * The tensors and metadata of a header's text, checked strictly (the header starts at
 * HEADER_LENGTH_BYTES in the file; its data section at `dataOffset`).
 */
export function parseStrictHeader(
  text: string,
  dataOffset: number,
  fileSize: number,
): Pick<SafetensorsHeader, 'metadata' | 'tensors'> {
  const reader = new HeaderReader(text);
  try {
    parseStrictJson(text, { reviver: reader.revive });
  } catch (err) {
    if (err instanceof StrictJsonError) throw jsonFailure(err, reader.at);
    throw err;
  }
  checkLayout(reader, dataOffset, fileSize);
  return { metadata: reader.metadata, tensors: reader.tensors };
}

function jsonFailure(err: StrictJsonError, at: Locator): FormatError {
  const offset = at.byteOffset(err.position);
  if (err.kind === 'duplicate-key' && err.key !== undefined) {
    return failure('SAFETENSORS_DUPLICATE_KEY', describeDuplicate(err.path, err.key), offset, {
      key: err.key,
      jsonPointer: err.jsonPointer,
    });
  }
  return failure('SAFETENSORS_HEADER_JSON', `the header is not valid JSON: ${err.reason}`, offset, {
    jsonPointer: err.jsonPointer,
  });
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

  private notAnObject(found: string): FormatError {
    const start = /[^ \t\n\r]/.exec(this.text)?.index ?? 0;
    return failure(
      'SAFETENSORS_HEADER_NOT_OBJECT',
      `the header must be a JSON object of tensor entries, found ${found}`,
      this.at.byteOffset(start),
    );
  }

  private reviveMetadata(value: JsonValue, { path, valuePosition }: StrictJsonReviverContext): JsonValue {
    const key = path[1];
    const fail = (message: string): FormatError =>
      failure(
        'SAFETENSORS_METADATA',
        message,
        this.at.byteOffset(valuePosition),
        typeof key === 'string' ? { key } : undefined,
      );
    if (key === undefined) {
      // the reference crate reads `__metadata__` as an Option: null is no metadata
      if (value === null) return null;
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
        details,
      );
    }
    if (!ENTRY_KEYS.has(field)) {
      throw failure(
        'SAFETENSORS_ENTRY',
        `${tensorLabel(name)}: unknown key ${quoteForMessage(field)} (allowed: dtype, shape, data_offsets)`,
        this.at.byteOffset(path.length === 2 ? context.keyPosition : context.valuePosition),
        details,
      );
    }

    if (field === 'dtype') return this.reviveDtype(name, value, context);
    return this.reviveArrayField(name, field, value, context);
  }

  private reviveDtype(name: string, value: JsonValue, context: StrictJsonReviverContext): JsonValue {
    const { path } = context;
    const details = { tensor: name };
    const here = (): number => this.at.byteOffset(context.valuePosition);
    if (path.length > 2 || typeof value !== 'string') {
      const found = path.length > 2 ? containerKind(path[2]) : describeKind(value);
      throw failure(
        'SAFETENSORS_DTYPE',
        `${tensorLabel(name)}: dtype must be a string, found ${found}`,
        here(),
        details,
      );
    }
    if (!isSafetensorsDtype(value)) {
      const upper = value.toUpperCase();
      const known = isSafetensorsDtype(upper)
        ? ` (names are case-sensitive: ${quoteForMessage(upper)} is the known one)`
        : '';
      throw failure(
        'SAFETENSORS_DTYPE',
        `${tensorLabel(name)}: unknown dtype ${quoteForMessage(value)}${known}`,
        here(),
        details,
      );
    }
    return value;
  }

  /** shape or data_offsets (`field`), or one of their items */
  private reviveArrayField(
    name: string,
    field: string,
    value: JsonValue,
    context: StrictJsonReviverContext,
  ): JsonValue {
    const { path } = context;
    const details = { tensor: name };
    const here = (): number => this.at.byteOffset(context.valuePosition);
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
        details,
      );
    }
    const reason = path.length > 3 ? 'expected a non-negative integer' : nonNegativeSafeInteger(value);
    if (typeof reason === 'string') {
      const found = path.length > 3 ? containerKind(path[3]) : describeValue(value);
      throw failure(code, `${tensorLabel(name)}: ${field}[${index}] is ${found}; ${reason}`, here(), details);
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
        details,
      );
    }
    // the field checks above guarantee the types; these narrow them and catch missing fields
    const dtype = value.get('dtype');
    const shape = value.get('shape');
    const offsets = value.get('data_offsets');
    if (typeof dtype !== 'string' || !isSafetensorsDtype(dtype)) {
      throw failure('SAFETENSORS_DTYPE', `${tensorLabel(name)}: dtype is missing`, keyOffset(), details);
    }
    if (!Array.isArray(shape)) {
      throw failure('SAFETENSORS_SHAPE', `${tensorLabel(name)}: shape is missing`, keyOffset(), details);
    }
    if (!Array.isArray(offsets)) {
      throw failure(
        'SAFETENSORS_OFFSETS',
        `${tensorLabel(name)}: data_offsets is missing`,
        keyOffset(),
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
          ? `the header describes more than ${SAFETENSORS_MAX_TENSORS.toLocaleString('en-US')} tensors; no real adapter has that many (the largest hold ~140,000)`
          : `the tensor shapes have more than ${SAFETENSORS_MAX_DIMENSIONS.toLocaleString('en-US')} dimensions in all; no real file has that many (4 per tensor on average is the limit)`,
        keyOffset(),
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
      details,
    );
  }
  if (bits % 8n !== 0n) {
    throw failure(
      'SAFETENSORS_SIZE',
      `${tensorLabel(name)}: ${elements} ${dtype} elements are ${bits} bits, not a whole number of bytes`,
      offset(),
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
        { tensor: t.name },
      );
    }
    if (t.begin < expected && previous !== undefined) {
      throw failure(
        'SAFETENSORS_OFFSETS',
        `${tensorLabel(t.name)} [${t.begin}, ${t.end}] overlaps ${tensorLabel(previous.name)} [${previous.begin}, ${previous.end}]`,
        keyOffset(item),
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
      `${tensorLabel(t.name)} [${t.begin}, ${t.end}] runs past the end of the file: the data section has ${dataSize} bytes (the file may be truncated)`,
      keyOffset(beyond),
      { tensor: t.name },
    );
  }
  if (expected < dataSize) {
    throw failure(
      'SAFETENSORS_TRAILING',
      `${dataSize - expected} bytes follow the ${previous === undefined ? 'header (there are no tensors)' : `last ${tensorLabel(previous.name)}`}, from file byte ${dataOffset + expected}`,
      dataOffset + expected,
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
