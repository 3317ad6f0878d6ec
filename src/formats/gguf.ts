/**
 * GGUF header reader for hostile input. Only the header (metadata and tensor infos) is read, with
 * positioned reads of bounded size, so a multi-GB base model costs a few MB of memory at most. Every
 * length and count is checked against a cap and against the bytes left in the file before anything
 * is allocated for it.
 *
 * The checks follow llama.cpp's own loader (ggml/src/gguf.cpp `gguf_init_from_reader`) so that a file
 * accepted here is one llama.cpp accepts: version 2 or 3, non-empty unique keys, `general.alignment` a
 * u32 power of two, tensor names shorter than GGML_MAX_NAME and unique, at most GGML_MAX_DIMS
 * non-negative dims, a known type whose block size divides the row, and tensor data laid out in
 * info order, each at the padded end of the previous one, inside the file.
 */
import { FormatError } from './format-error.js';
import { Cursor, err, type GgufSource } from './gguf-cursor.js';
import {
  GGML_MAX_DIMS,
  GGUF_DEFAULT_ALIGNMENT,
  GGUF_KEY_ALIGNMENT,
  GgufValueType,
  ggmlTensorBytes,
  ggufScalarSize,
  ggufValueTypeName,
  isPowerOfTwo,
  tensorNameProblem,
  tensorTypeProblem,
  type GgmlType,
  type GgufArray,
  type GgufArrayItems,
  type GgufValue,
} from './ggml-types.js';

export interface GgufKv {
  readonly key: string;
  readonly type: GgufValueType;
  readonly value: GgufValue;
  /** byte offset of the key in the file */
  readonly offset: number;
}

export interface GgufTensorInfo {
  readonly name: string;
  /** dims in ggml order: ne[0] is the row length (the last PyTorch dim) */
  readonly ne: readonly number[];
  readonly type: GgmlType;
  /** offset of the data relative to the start of the data section */
  readonly offset: number;
  /** absolute offset of the data in the file */
  readonly dataStart: number;
  readonly nBytes: number;
  readonly nElements: number;
  /** byte offset of this tensor info in the file */
  readonly infoOffset: number;
}

export interface GgufFile {
  readonly version: number;
  readonly metadata: ReadonlyMap<string, GgufKv>;
  readonly tensors: readonly GgufTensorInfo[];
  readonly tensorsByName: ReadonlyMap<string, GgufTensorInfo>;
  /** absolute offset where the tensor data section starts */
  readonly dataOffset: number;
  readonly alignment: number;
  readonly fileSize: number;
}

export interface GgufReadLimits {
  /** longest string (key, value or tensor name), bytes */
  maxStringBytes: number;
  /** most items in one array */
  maxArrayLength: number;
  /** most bytes the metadata section may take (bounds memory spent on arrays of strings) */
  maxMetadataBytes: number;
  maxKv: number;
  maxTensors: number;
  /** arrays of arrays; llama.cpp accepts none, the GGUF spec allows them */
  maxArrayDepth: number;
}

export const DEFAULT_GGUF_LIMITS: Readonly<GgufReadLimits> = {
  maxStringBytes: 64 * 1024 * 1024,
  maxArrayLength: 1 << 26,
  maxMetadataBytes: 512 * 1024 * 1024,
  maxKv: 1 << 20,
  maxTensors: 1 << 20,
  maxArrayDepth: 4,
};

export interface GgufReadOptions {
  /**
   * 'skip': arrays are walked and bounds-checked but not read (their value has no items and says how
   * many it skipped), and strings in them are not decoded: what needs only the architecture and the
   * tensors of a model builds none of a vocabulary's hundreds of thousands of strings (bench/kernels.js
   * times the walk). Default 'read'.
   */
  arrays?: 'read' | 'skip';
}

const MIN_KV_BYTES = 8 + 4 + 1; // key length, value type, a 1-byte value
const MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8; // name length, n_dims, type, offset

class HeaderParser {
  private metadataStart = 0;

  constructor(
    private readonly c: Cursor,
    private readonly limits: GgufReadLimits,
    private readonly options: GgufReadOptions,
  ) {}

  /** A u64 count, checked against a cap (GGUF_LIMIT) and the bytes left (GGUF_TRUNCATED). */
  private count(what: string, cap: number, minItemBytes: number): number {
    const at = this.c.pos;
    const raw = this.c.u64(what);
    if (raw > BigInt(cap)) {
      throw err('GGUF_LIMIT', `${what} is ${raw}, more than the limit of ${cap}`, at, { value: String(raw) });
    }
    const n = Number(raw);
    if (n * minItemBytes > this.c.remaining) {
      throw err(
        'GGUF_TRUNCATED',
        `${what} is ${n}, but only ${this.c.remaining} bytes are left in the file`,
        at,
        { value: n },
      );
    }
    return n;
  }

  string(what: string): string {
    const n = this.count(`length of ${what}`, this.limits.maxStringBytes, 1);
    return this.c.text(n, what);
  }

  /**
   * Moves past the `n` strings of an array without decoding them, each length checked as reading it
   * would be: runs of them as they lie in the buffer, and each string such a run stops at through
   * `count`, whose message is built only for those few.
   */
  private skipStrings(n: number, what: string): void {
    const max = this.limits.maxStringBytes;
    let i = this.c.skipBufferedStrings(n, max);
    while (i < n) {
      this.c.skip(this.count(`length of item ${i} of ${what}`, max, 1));
      i++;
      i += this.c.skipBufferedStrings(n - i, max);
    }
  }

  private checkBudget(what: string, at: number, bytes: number): void {
    if (this.c.pos - this.metadataStart + bytes > this.limits.maxMetadataBytes) {
      throw err(
        'GGUF_LIMIT',
        `${what} would take the metadata past ${this.limits.maxMetadataBytes} bytes`,
        at,
      );
    }
  }

  private array(key: string, depth: number): GgufArray {
    const at = this.c.pos;
    if (depth > this.limits.maxArrayDepth) {
      throw err('GGUF_LIMIT', `arrays in '${key}' are nested deeper than ${this.limits.maxArrayDepth}`, at);
    }
    const itemType = this.valueType(`item type of array '${key}'`);
    const size = ggufScalarSize(itemType);
    // a string is at least its 8-byte length; an array at least its type and count
    const minItem = size ?? (itemType === GgufValueType.STRING ? 8 : 12);
    const n = this.count(`item count of array '${key}'`, this.limits.maxArrayLength, minItem);
    this.checkBudget(`array '${key}'`, at, n * minItem);
    const what = `array '${key}'`;
    if (this.options.arrays === 'skip') {
      if (itemType === GgufValueType.STRING) this.skipStrings(n, what);
      else if (itemType === GgufValueType.ARRAY) for (let i = 0; i < n; i++) this.array(key, depth + 1);
      else this.c.skip(n * (size ?? 0));
      return { itemType, items: [], skipped: n };
    }
    let items: GgufArrayItems;
    switch (itemType) {
      case GgufValueType.STRING: {
        const strings = new Array<string>(n);
        const max = this.limits.maxStringBytes;
        for (let i = 0; i < n; i++) {
          strings[i] = this.c.bufferedText(max, what) ?? this.string(`item ${i} of ${what}`);
        }
        items = strings;
        break;
      }
      case GgufValueType.ARRAY: {
        const arrays = new Array<GgufArray>(n);
        for (let i = 0; i < n; i++) arrays[i] = this.array(key, depth + 1);
        items = arrays;
        break;
      }
      case GgufValueType.BOOL: {
        const raw = new Uint8Array(n);
        this.c.bytesInto(raw, what);
        items = Array.from(raw, (b) => b !== 0);
        break;
      }
      default: {
        const typed = newTypedArray(itemType, n);
        this.c.bytesInto(new Uint8Array(typed.buffer, typed.byteOffset, typed.byteLength), what);
        items = typed;
      }
    }
    return { itemType, items };
  }

  private valueType(what: string): GgufValueType {
    const at = this.c.pos;
    const t = this.c.i32(what);
    if (t < 0 || t > GgufValueType.FLOAT64)
      throw err('GGUF_INVALID', `${what} is ${t}, not a GGUF value type`, at);
    return t as GgufValueType;
  }

  parse(): GgufFile {
    const c = this.c;
    const version = this.magicAndVersion();
    const nTensors = this.count('tensor count', this.limits.maxTensors, 0);
    const nKv = this.count('metadata key count', this.limits.maxKv, 0);
    if (nTensors * MIN_TENSOR_INFO_BYTES + nKv * MIN_KV_BYTES > c.remaining) {
      throw err(
        'GGUF_TRUNCATED',
        `${nKv} keys and ${nTensors} tensor infos cannot fit in the ${c.remaining} bytes left in the file`,
        8,
      );
    }
    const metadata = this.metadata(nKv);
    const alignment = alignmentOf(metadata);
    const infos: TensorInfoRead[] = [];
    const names = new Set<string>();
    for (let i = 0; i < nTensors; i++) infos.push(this.tensorInfo(i, names, alignment));
    const headerEnd = c.pos;
    const dataOffset = nTensors > 0 ? Math.ceil(headerEnd / alignment) * alignment : headerEnd;
    if (dataOffset > c.fileSize) {
      throw err(
        'GGUF_TRUNCATED',
        `GGUF file ends at byte ${c.fileSize}, before its data section starts at ${dataOffset}`,
        headerEnd,
      );
    }
    const tensors = laidOut(infos, dataOffset, alignment, c.fileSize);
    const tensorsByName = new Map(tensors.map((t) => [t.name, t]));
    return { version, metadata, tensors, tensorsByName, dataOffset, alignment, fileSize: c.fileSize };
  }

  private magicAndVersion(): number {
    const c = this.c;
    if (c.fileSize < 4) throw err('GGUF_MAGIC', `not a GGUF file: only ${c.fileSize} bytes`, 0);
    const magic = c.u32('the magic');
    if (magic !== 0x46554747) {
      const shown = Buffer.from(new Uint32Array([magic]).buffer)
        .toString('latin1')
        .replace(/[^\x20-\x7e]/g, '?');
      throw err('GGUF_MAGIC', `not a GGUF file: magic is '${shown}', expected 'GGUF'`, 0);
    }
    const version = c.u32('the version');
    if (version === 1) throw err('GGUF_VERSION', 'GGUF version 1 is no longer supported by llama.cpp', 4);
    if (version !== 2 && version !== 3) {
      const endianNote = (version & 0xffff) === 0 ? ' (a big-endian file?)' : '';
      throw err('GGUF_VERSION', `unsupported GGUF version ${version}${endianNote}; supported: 2, 3`, 4, {
        version,
      });
    }
    return version;
  }

  private metadata(nKv: number): Map<string, GgufKv> {
    const c = this.c;
    this.metadataStart = c.pos;
    const metadata = new Map<string, GgufKv>();
    for (let i = 0; i < nKv; i++) {
      const offset = c.pos;
      const key = this.string(`key ${i}`);
      if (key === '') throw err('GGUF_INVALID', `key ${i} is empty`, offset);
      if (metadata.has(key)) throw err('GGUF_INVALID', `duplicate key '${key}'`, offset, { key });
      const type = this.valueType(`value type of '${key}'`);
      let value: GgufValue;
      if (type === GgufValueType.ARRAY) value = this.array(key, 1);
      else if (type === GgufValueType.STRING) value = this.string(`value of '${key}'`);
      else value = c.scalar(type, `value of '${key}'`);
      metadata.set(key, { key, type, value, offset });
    }
    return metadata;
  }

  /** Tensor info `i`: its name (new, and short enough), dims, type and aligned data offset. */
  private tensorInfo(i: number, names: Set<string>, alignment: number): TensorInfoRead {
    const c = this.c;
    const infoOffset = c.pos;
    const name = this.string(`name of tensor ${i}`);
    const nameProblem = tensorNameProblem(name);
    if (nameProblem !== null) throw err('GGUF_INVALID', nameProblem, infoOffset);
    if (names.has(name))
      throw err('GGUF_INVALID', `duplicate tensor '${name}'`, infoOffset, { tensor: name });
    names.add(name);
    const { ne, nElements } = this.dims(name);
    const typeAt = c.pos;
    const typeId = c.i32(`type of tensor '${name}'`);
    const typeProblem = tensorTypeProblem(name, typeId, ne);
    if (typeProblem !== null) throw err('GGUF_INVALID', typeProblem, typeAt);
    const nBytes = ggmlTensorBytes(typeId, ne);
    if (nBytes === undefined) throw err('GGUF_LIMIT', `tensor '${name}' is too large to address`, typeAt);
    const offAt = c.pos;
    const offset = c.smallI64(`data offset of tensor '${name}'`);
    if (typeof offset === 'bigint') {
      // a u64 in the file: 2^53 or more, far beyond any file
      throw err(
        'GGUF_TRUNCATED',
        `tensor '${name}' data offset ${BigInt.asUintN(64, offset)} lies beyond the end of the file`,
        offAt,
      );
    }
    if (offset % alignment !== 0) {
      throw err(
        'GGUF_INVALID',
        `tensor '${name}' data offset ${offset} is not aligned to ${alignment}`,
        offAt,
        {
          tensor: name,
        },
      );
    }
    return { name, ne, type: typeId as GgmlType, offset, nBytes, nElements, infoOffset };
  }

  private dims(name: string): { ne: number[]; nElements: number } {
    const c = this.c;
    const dimsAt = c.pos;
    const nDims = c.u32(`dim count of tensor '${name}'`);
    if (nDims > GGML_MAX_DIMS) {
      throw err(
        'GGUF_INVALID',
        `tensor '${name}' has ${nDims} dims; at most ${GGML_MAX_DIMS} are allowed`,
        dimsAt,
      );
    }
    const ne: number[] = [];
    let nElements = 1;
    for (let d = 0; d < nDims; d++) {
      const at = c.pos;
      const dim = c.smallI64(`dim ${d} of tensor '${name}'`);
      if (dim < 0n) throw err('GGUF_INVALID', `tensor '${name}' has a negative dim ${d} (${dim})`, at);
      if (dim > BigInt(Number.MAX_SAFE_INTEGER)) {
        throw err('GGUF_LIMIT', `tensor '${name}' dim ${d} is ${dim}, too large`, at);
      }
      ne.push(Number(dim));
      nElements *= Number(dim);
      if (!Number.isSafeInteger(nElements)) {
        throw err('GGUF_LIMIT', `tensor '${name}' has more elements than can be addressed`, at);
      }
    }
    return { ne, nElements };
  }
}

type TensorInfoRead = Omit<GgufTensorInfo, 'dataStart'>;

/** `general.alignment` when the file sets it (a u32 power of two), else GGUF's default. */
function alignmentOf(metadata: ReadonlyMap<string, GgufKv>): number {
  const kv = metadata.get(GGUF_KEY_ALIGNMENT);
  if (kv === undefined) return GGUF_DEFAULT_ALIGNMENT;
  if (kv.type !== GgufValueType.UINT32) {
    throw err(
      'GGUF_INVALID',
      `'${GGUF_KEY_ALIGNMENT}' must be u32 but is ${ggufValueTypeName(kv.type)}`,
      kv.offset,
    );
  }
  const alignment = kv.value as number;
  if (!isPowerOfTwo(alignment)) {
    throw err('GGUF_INVALID', `'${GGUF_KEY_ALIGNMENT}' is ${alignment}, not a power of two`, kv.offset);
  }
  return alignment;
}

/**
 * The tensors where their data lies: inside the file, in info order, each at the padded end of the
 * one before (llama.cpp refuses anything else).
 */
function laidOut(
  infos: readonly TensorInfoRead[],
  dataOffset: number,
  alignment: number,
  fileSize: number,
): GgufTensorInfo[] {
  const tensors: GgufTensorInfo[] = [];
  let expected = 0;
  for (const p of infos) {
    const dataStart = dataOffset + p.offset;
    if (dataStart + p.nBytes > fileSize) {
      throw err(
        'GGUF_TRUNCATED',
        `tensor '${p.name}' data [${dataStart}, ${dataStart + p.nBytes}) lies beyond the end of the file (${fileSize} bytes)`,
        p.infoOffset,
        { tensor: p.name },
      );
    }
    if (p.offset !== expected) {
      const why =
        p.offset < expected ? 'overlaps the tensor before it' : 'leaves a gap after the tensor before it';
      throw err(
        'GGUF_INVALID',
        `tensor '${p.name}' data at offset ${p.offset} ${why} (expected ${expected}); llama.cpp requires tensor data in info order, each padded to ${alignment}`,
        p.infoOffset,
        { tensor: p.name },
      );
    }
    expected += Math.ceil(p.nBytes / alignment) * alignment;
    tensors.push({
      name: p.name,
      ne: p.ne,
      type: p.type,
      offset: p.offset,
      dataStart,
      nBytes: p.nBytes,
      nElements: p.nElements,
      infoOffset: p.infoOffset,
    });
  }
  return tensors;
}

function newTypedArray(type: GgufValueType, n: number): Exclude<GgufArrayItems, unknown[]> {
  switch (type) {
    case GgufValueType.UINT8:
      return new Uint8Array(n);
    case GgufValueType.INT8:
      return new Int8Array(n);
    case GgufValueType.UINT16:
      return new Uint16Array(n);
    case GgufValueType.INT16:
      return new Int16Array(n);
    case GgufValueType.UINT32:
      return new Uint32Array(n);
    case GgufValueType.INT32:
      return new Int32Array(n);
    case GgufValueType.FLOAT32:
      return new Float32Array(n);
    case GgufValueType.UINT64:
      return new BigUint64Array(n);
    case GgufValueType.INT64:
      return new BigInt64Array(n);
    case GgufValueType.FLOAT64:
      return new Float64Array(n);
    default:
      throw new Error(`not a numeric type: ${type}`);
  }
}

/** Parses and checks the header of a GGUF file read through `source` (see files/gguf.ts). */
export function parseGgufHeader(
  source: GgufSource,
  limits: Partial<GgufReadLimits> = {},
  options: GgufReadOptions = {},
): GgufFile {
  return new HeaderParser(new Cursor(source), { ...DEFAULT_GGUF_LIMITS, ...limits }, options).parse();
}

/** The tensor `name` of the file (GGUF_TENSOR_MISSING when it has none). */
export function ggufTensor(file: GgufFile, name: string): GgufTensorInfo {
  const t = file.tensorsByName.get(name);
  if (t === undefined)
    throw new FormatError('GGUF_TENSOR_MISSING', `the GGUF file has no tensor '${name}'`, {
      details: { tensor: name },
    });
  return t;
}

/** The refusal of a tensor's data that ends early, at file byte `at`. */
export function tensorDataTruncated(name: string, at: number): FormatError {
  return err('GGUF_TRUNCATED', `GGUF file ended early while reading tensor '${name}'`, at);
}

/** PyTorch-order shape of a tensor: ggml's ne reversed. */
export function torchShape(tensor: Pick<GgufTensorInfo, 'ne'>): number[] {
  return [...tensor.ne].reverse();
}

/** ggml-order ne of a PyTorch-order shape. */
export function neFromTorchShape(shape: readonly number[]): number[] {
  return [...shape].reverse();
}

// Typed metadata getters: undefined when the key is absent, GGUF_INVALID when it has another type
// (llama.cpp checks key types strictly too).

function typed(file: GgufFile, key: string, types: readonly GgufValueType[]): GgufKv | undefined {
  const kv = file.metadata.get(key);
  if (kv === undefined) return undefined;
  if (!types.includes(kv.type)) {
    throw err(
      'GGUF_INVALID',
      `key '${key}' is ${ggufValueTypeName(kv.type)}, expected ${types.map(ggufValueTypeName).join(' or ')}`,
      kv.offset,
      { key },
    );
  }
  return kv;
}

function missing(key: string): FormatError {
  return new FormatError('GGUF_KEY_MISSING', `the GGUF file has no key '${key}'`, { details: { key } });
}

/** The JavaScript value of each scalar value type a getter reads. */
interface ValueOf {
  [GgufValueType.STRING]: string;
  [GgufValueType.UINT32]: number;
  [GgufValueType.INT32]: number;
  [GgufValueType.UINT64]: bigint;
  [GgufValueType.FLOAT32]: number;
  [GgufValueType.BOOL]: boolean;
  [GgufValueType.ARRAY]: GgufArray;
}

/** A getter for keys of one value type, the value as that type. */
function getter<K extends keyof ValueOf>(type: K): (file: GgufFile, key: string) => ValueOf[K] | undefined {
  const types = [type];
  return (file, key) => typed(file, key, types)?.value as ValueOf[K] | undefined;
}

export const getString = getter(GgufValueType.STRING);
export const getU32 = getter(GgufValueType.UINT32);
export const getI32 = getter(GgufValueType.INT32);
export const getU64 = getter(GgufValueType.UINT64);
export const getF32 = getter(GgufValueType.FLOAT32);
export const getBool = getter(GgufValueType.BOOL);
export const getArray = getter(GgufValueType.ARRAY);

const NUMERIC: readonly GgufValueType[] = [
  GgufValueType.UINT8,
  GgufValueType.INT8,
  GgufValueType.UINT16,
  GgufValueType.INT16,
  GgufValueType.UINT32,
  GgufValueType.INT32,
  GgufValueType.FLOAT32,
  GgufValueType.UINT64,
  GgufValueType.INT64,
  GgufValueType.FLOAT64,
];

/** Any numeric scalar as a number (64-bit integers must be safe integers). */
export function getNumber(file: GgufFile, key: string): number | undefined {
  const kv = typed(file, key, NUMERIC);
  if (kv === undefined) return undefined;
  if (typeof kv.value === 'bigint') {
    if (kv.value > BigInt(Number.MAX_SAFE_INTEGER) || kv.value < BigInt(Number.MIN_SAFE_INTEGER)) {
      throw err('GGUF_INVALID', `key '${key}' is ${kv.value}, too large`, kv.offset, { key });
    }
    return Number(kv.value);
  }
  return kv.value as number;
}

export function getStringArray(file: GgufFile, key: string): readonly string[] | undefined {
  const arr = getArray(file, key);
  if (arr === undefined) return undefined;
  if (arr.itemType !== GgufValueType.STRING) {
    const kv = file.metadata.get(key);
    throw err(
      'GGUF_INVALID',
      `key '${key}' is an array of ${ggufValueTypeName(arr.itemType)}, expected an array of strings`,
      kv?.offset ?? 0,
      { key },
    );
  }
  return arr.items as string[];
}

/** A getter that raises GGUF_KEY_MISSING where `get` finds nothing. */
function required<T>(
  get: (file: GgufFile, key: string) => T | undefined,
): (file: GgufFile, key: string) => T {
  return (file, key) => {
    const v = get(file, key);
    if (v === undefined) throw missing(key);
    return v;
  };
}

export const requireString = required(getString);
export const requireU32 = required(getU32);
export const requireNumber = required(getNumber);
