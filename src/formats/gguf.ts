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
import { isUtf8 } from 'node:buffer';

import { RegularFile, withRegularFile } from '../byte-source.js';
import { CodiError } from '../errors.js';
import {
  GGML_MAX_DIMS,
  GGML_MAX_NAME,
  GGUF_DEFAULT_ALIGNMENT,
  GGUF_KEY_ALIGNMENT,
  GgufValueType,
  ggmlTensorBytes,
  ggmlTypeInfo,
  ggmlTypeName,
  ggufScalarSize,
  ggufValueTypeName,
  type GgmlType,
  type GgufArray,
  type GgufArrayItems,
  type GgufValue,
} from './ggml-types.js';
import { decodeToF32 } from './numeric.js';

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

// small: memory touched for the first time is dear on small VMs (bench/convert.js prints what a page costs)
const CHUNK = 256 << 10;
/** the first read: enough for a header without a vocabulary; later reads grow to CHUNK */
const FIRST_CHUNK = 64 << 10;
const MIN_KV_BYTES = 8 + 4 + 1; // key length, value type, a 1-byte value
const MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8; // name length, n_dims, type, offset

function err(
  code: string,
  message: string,
  offset: number,
  details: Record<string, unknown> = {},
): CodiError {
  return new CodiError(code, `${message} (at byte ${offset})`, {
    pointer: String(offset),
    details: { offset, ...details },
  });
}

/** How many strings the last `skipStringRun` moved past. */
let stringsSkipped = 0;

/**
 * Moves past up to `n` length-prefixed strings in `view[at, end)`, each at most `max` bytes long;
 * returns the offset after the last one, and sets `stringsSkipped`. A vocabulary is hundreds of
 * thousands of strings, so this loop is kept to locals and one store after it: code that V8 optimises
 * while the loop runs has no type feedback yet for what follows the loop, and an object or array
 * result there would throw that code away again.
 */
function skipStringRun(view: DataView, at: number, end: number, n: number, max: number): number {
  const last = end - 8;
  let left = n;
  while (left > 0 && at <= last) {
    const next = at + 8 + view.getUint32(at, true);
    // a length of 2^32 or more has a high word; one over the limit, or past the buffer, is checked
    if (next > end || view.getUint32(at + 4, true) !== 0 || next - at - 8 > max) break;
    at = next;
    left--;
  }
  stringsSkipped = n - left;
  return at;
}

/**
 * Buffered positioned reads over an open file, refilled on demand in bounded chunks. Synchronous: a
 * header is read in a few large reads, and a promise per field would cost more than the reads.
 */
class Cursor {
  // unzeroed: only bytes read from the file (bufStart..bufEnd) are ever looked at
  private buf: Buffer;
  private view: DataView;
  private bufStart = 0;
  private bufEnd = 0;
  pos = 0;

  readonly fileSize: number;

  constructor(private readonly file: RegularFile) {
    this.fileSize = file.size;
    this.buf = Buffer.allocUnsafe(FIRST_CHUNK);
    this.view = new DataView(this.buf.buffer, this.buf.byteOffset, this.buf.byteLength);
  }

  get remaining(): number {
    return this.fileSize - this.pos;
  }

  /** Whether `n` bytes from pos are buffered; callers `fill(n)` only when not. */
  has(n: number): boolean {
    return this.pos >= this.bufStart && this.pos + n <= this.bufEnd;
  }

  fill(n: number, what: string): void {
    if (n > this.remaining) {
      throw err(
        'GGUF_TRUNCATED',
        `GGUF file ends at byte ${this.fileSize} while reading ${what}, which needs ${n} bytes`,
        this.pos,
      );
    }
    const chunk = this.bufEnd === 0 ? FIRST_CHUNK : CHUNK;
    const want = Math.min(Math.max(n, chunk), this.remaining);
    if (want > this.buf.length) {
      this.buf = Buffer.allocUnsafe(want);
      this.view = new DataView(this.buf.buffer, this.buf.byteOffset, this.buf.byteLength);
    }
    const got = this.file.readSync(this.buf.subarray(0, want), this.pos);
    this.bufStart = this.pos;
    this.bufEnd = this.pos + got;
    if (got < n) {
      // the file shrank under us
      throw err('GGUF_TRUNCATED', `GGUF file ended early while reading ${what}`, this.pos + got);
    }
  }

  private at(): number {
    return this.pos - this.bufStart;
  }

  u32(what: string): number {
    if (!this.has(4)) this.fill(4, what);
    const v = this.view.getUint32(this.at(), true);
    this.pos += 4;
    return v;
  }

  i32(what: string): number {
    if (!this.has(4)) this.fill(4, what);
    const v = this.view.getInt32(this.at(), true);
    this.pos += 4;
    return v;
  }

  u64(what: string): bigint {
    if (!this.has(8)) this.fill(8, what);
    const v = this.view.getBigUint64(this.at(), true);
    this.pos += 8;
    return v;
  }

  /**
   * A 64-bit integer as a number when it lies in [0, 2^53), the common case, which needs no BigInt;
   * otherwise the exact value as an i64 bigint (negative when its top bit is set), for the caller's
   * checks and messages.
   */
  smallI64(what: string): number | bigint {
    if (!this.has(8)) this.fill(8, what);
    const o = this.at();
    const hi = this.view.getUint32(o + 4, true);
    const v =
      hi < 0x200000 ? hi * 0x100000000 + this.view.getUint32(o, true) : this.view.getBigInt64(o, true);
    this.pos += 8;
    return v;
  }

  scalar(type: GgufValueType, what: string): number | bigint | boolean {
    const size = ggufScalarSize(type) ?? 0;
    if (!this.has(size)) this.fill(size, what);
    const o = this.at();
    const v = this.view;
    this.pos += size;
    switch (type) {
      case GgufValueType.UINT8:
        return v.getUint8(o);
      case GgufValueType.INT8:
        return v.getInt8(o);
      case GgufValueType.UINT16:
        return v.getUint16(o, true);
      case GgufValueType.INT16:
        return v.getInt16(o, true);
      case GgufValueType.UINT32:
        return v.getUint32(o, true);
      case GgufValueType.INT32:
        return v.getInt32(o, true);
      case GgufValueType.FLOAT32:
        return v.getFloat32(o, true);
      case GgufValueType.BOOL:
        return v.getUint8(o) !== 0;
      case GgufValueType.UINT64:
        return v.getBigUint64(o, true);
      case GgufValueType.INT64:
        return v.getBigInt64(o, true);
      case GgufValueType.FLOAT64:
        return v.getFloat64(o, true);
      default:
        throw new Error(`not a scalar type: ${type}`);
    }
  }

  /** Copies `target.length` bytes from pos, refilling as often as needed. */
  bytesInto(target: Uint8Array, what: string): void {
    if (target.length > this.remaining) this.fill(target.length, what);
    let done = 0;
    while (done < target.length) {
      const n = Math.min(target.length - done, CHUNK);
      if (!this.has(n)) this.fill(n, what);
      target.set(this.buf.subarray(this.at(), this.at() + n), done);
      this.pos += n;
      done += n;
    }
  }

  /** Moves past `n` bytes without reading them (n already checked against what is left). */
  skip(n: number): void {
    this.pos += n;
  }

  /**
   * Moves past as many of the next `n` length-prefixed strings as lie whole in the buffer, each at
   * most `maxBytes` long; returns how many. Stops at the first string it cannot vouch for (a length
   * not buffered, too long, or a string ending past the buffer), which the caller reads through its
   * checked path.
   */
  skipBufferedStrings(n: number, maxBytes: number): number {
    const at = this.pos - this.bufStart;
    if (at < 0) return 0;
    this.pos = this.bufStart + skipStringRun(this.view, at, this.bufEnd - this.bufStart, n, maxBytes);
    return stringsSkipped;
  }

  /** A UTF-8 string of `n` bytes (n already checked against the caps). */
  text(n: number, what: string): string {
    if (!this.has(n)) this.fill(n, what);
    return this.decode(n, what);
  }

  private decode(n: number, what: string): string {
    const buf = this.buf;
    const start = this.at();
    const end = start + n;
    let ascii = true;
    for (let i = start; i < end; i++) {
      if ((buf[i] as number) >= 0x80) {
        ascii = false;
        break;
      }
    }
    if (!ascii && !isUtf8(buf.subarray(start, end)))
      throw err('GGUF_INVALID', `${what} is not valid UTF-8`, this.pos);
    this.pos += n;
    // most tokens are ASCII, and latin1 is the cheapest exact decoding of ASCII
    return buf.toString(ascii ? 'latin1' : 'utf8', start, end);
  }

  /**
   * A length-prefixed string when it is wholly buffered and within `maxBytes`; otherwise undefined
   * with nothing consumed, and the caller takes the checked path (a BigInt count, cap and bounds
   * checks), which arrays of 150k tokens would otherwise pay for every token.
   */
  bufferedText(maxBytes: number, what: string): string | undefined {
    if (!this.has(8)) return undefined;
    const o = this.at();
    const n = this.view.getUint32(o, true);
    if (this.view.getUint32(o + 4, true) !== 0 || n > maxBytes || !this.has(8 + n)) return undefined;
    this.pos += 8;
    return this.decode(n, what);
  }
}

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
      const hint = (version & 0xffff) === 0 ? ' (a big-endian file?)' : '';
      throw err('GGUF_VERSION', `unsupported GGUF version ${version}${hint}; supported: 2, 3`, 4, {
        version,
      });
    }
    const nTensors = this.count('tensor count', this.limits.maxTensors, 0);
    const nKv = this.count('metadata key count', this.limits.maxKv, 0);
    if (nTensors * MIN_TENSOR_INFO_BYTES + nKv * MIN_KV_BYTES > c.remaining) {
      throw err(
        'GGUF_TRUNCATED',
        `${nKv} keys and ${nTensors} tensor infos cannot fit in the ${c.remaining} bytes left in the file`,
        8,
      );
    }

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

    let alignment = GGUF_DEFAULT_ALIGNMENT;
    const alignKv = metadata.get(GGUF_KEY_ALIGNMENT);
    if (alignKv !== undefined) {
      if (alignKv.type !== GgufValueType.UINT32) {
        throw err(
          'GGUF_INVALID',
          `'${GGUF_KEY_ALIGNMENT}' must be u32 but is ${ggufValueTypeName(alignKv.type)}`,
          alignKv.offset,
        );
      }
      alignment = alignKv.value as number;
      if (alignment === 0 || (alignment & (alignment - 1)) !== 0) {
        throw err(
          'GGUF_INVALID',
          `'${GGUF_KEY_ALIGNMENT}' is ${alignment}, not a power of two`,
          alignKv.offset,
        );
      }
    }

    const pending: Omit<GgufTensorInfo, 'dataStart'>[] = [];
    const names = new Set<string>();
    for (let i = 0; i < nTensors; i++) {
      const infoOffset = c.pos;
      const name = this.string(`name of tensor ${i}`);
      if (Buffer.byteLength(name) >= GGML_MAX_NAME) {
        throw err(
          'GGUF_INVALID',
          `tensor name '${name}' is ${Buffer.byteLength(name)} bytes; llama.cpp allows ${GGML_MAX_NAME - 1}`,
          infoOffset,
        );
      }
      if (names.has(name))
        throw err('GGUF_INVALID', `duplicate tensor '${name}'`, infoOffset, { tensor: name });
      names.add(name);
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
      const typeAt = c.pos;
      const typeId = c.i32(`type of tensor '${name}'`);
      const info = ggmlTypeInfo(typeId);
      if (info === undefined)
        throw err('GGUF_INVALID', `tensor '${name}' has unknown ggml type ${typeId}`, typeAt);
      if ((ne[0] ?? 1) % info.blockSize !== 0) {
        throw err(
          'GGUF_INVALID',
          `tensor '${name}' of type ${info.name} has rows of ${ne[0] ?? 1} elements, not a multiple of its block size ${info.blockSize}`,
          typeAt,
        );
      }
      const nBytes = ggmlTensorBytes(typeId, ne);
      if (nBytes === undefined) throw err('GGUF_LIMIT', `tensor '${name}' is too large to address`, typeAt);
      const offAt = c.pos;
      const rawOffset = c.smallI64(`data offset of tensor '${name}'`);
      if (typeof rawOffset === 'bigint') {
        // a u64 in the file: 2^53 or more, far beyond any file
        throw err(
          'GGUF_TRUNCATED',
          `tensor '${name}' data offset ${BigInt.asUintN(64, rawOffset)} lies beyond the end of the file`,
          offAt,
        );
      }
      const offset = rawOffset;
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
      pending.push({ name, ne, type: info.id, offset, nBytes, nElements, infoOffset });
    }

    const headerEnd = c.pos;
    const dataOffset = nTensors > 0 ? Math.ceil(headerEnd / alignment) * alignment : headerEnd;
    if (dataOffset > c.fileSize) {
      throw err(
        'GGUF_TRUNCATED',
        `GGUF file ends at byte ${c.fileSize}, before its data section starts at ${dataOffset}`,
        headerEnd,
      );
    }

    const tensors: GgufTensorInfo[] = [];
    const tensorsByName = new Map<string, GgufTensorInfo>();
    let expected = 0;
    for (const p of pending) {
      const dataStart = dataOffset + p.offset;
      if (dataStart + p.nBytes > c.fileSize) {
        throw err(
          'GGUF_TRUNCATED',
          `tensor '${p.name}' data [${dataStart}, ${dataStart + p.nBytes}) lies beyond the end of the file (${c.fileSize} bytes)`,
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
      const t: GgufTensorInfo = {
        name: p.name,
        ne: p.ne,
        type: p.type,
        offset: p.offset,
        dataStart,
        nBytes: p.nBytes,
        nElements: p.nElements,
        infoOffset: p.infoOffset,
      };
      tensors.push(t);
      tensorsByName.set(t.name, t);
    }

    return { version, metadata, tensors, tensorsByName, dataOffset, alignment, fileSize: c.fileSize };
  }
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

/** Reads and checks the header of the GGUF file at `path`. */
export async function readGgufHeader(
  path: string,
  limits: Partial<GgufReadLimits> = {},
  options: GgufReadOptions = {},
): Promise<GgufFile> {
  const file = await RegularFile.open(path);
  try {
    return new HeaderParser(new Cursor(file), { ...DEFAULT_GGUF_LIMITS, ...limits }, options).parse();
  } catch (e) {
    throw e instanceof CodiError ? e.withFile(path) : e;
  } finally {
    await file.close();
  }
}

function tensorOrThrow(file: GgufFile, name: string): GgufTensorInfo {
  const t = file.tensorsByName.get(name);
  if (t === undefined) {
    throw new CodiError('GGUF_TENSOR_MISSING', `the GGUF file has no tensor '${name}'`, {
      details: { tensor: name },
    });
  }
  return t;
}

/** The raw bytes of one tensor (8-byte aligned, so typed-array views over them work). */
export async function readTensorData(path: string, file: GgufFile, name: string): Promise<Uint8Array> {
  const t = tensorOrThrow(file, name);
  return withRegularFile(path, async (source) => {
    const out = new Uint8Array(new ArrayBuffer(Math.ceil(t.nBytes / 8) * 8), 0, t.nBytes);
    const got = await source.read(out, t.dataStart);
    if (got < t.nBytes) {
      const at = t.dataStart + got;
      throw err('GGUF_TRUNCATED', `GGUF file ended early while reading tensor '${name}'`, at).withFile(path);
    }
    return out;
  });
}

/** One tensor decoded to float32 (F32, F16, BF16 and Q8_0 tensors). */
export async function readTensorF32(path: string, file: GgufFile, name: string): Promise<Float32Array> {
  const t = tensorOrThrow(file, name);
  return decodeToF32(t.type, await readTensorData(path, file, name));
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

function missing(key: string): CodiError {
  return new CodiError('GGUF_KEY_MISSING', `the GGUF file has no key '${key}'`, { details: { key } });
}

export function getString(file: GgufFile, key: string): string | undefined {
  return typed(file, key, [GgufValueType.STRING])?.value as string | undefined;
}

export function getU32(file: GgufFile, key: string): number | undefined {
  return typed(file, key, [GgufValueType.UINT32])?.value as number | undefined;
}

export function getI32(file: GgufFile, key: string): number | undefined {
  return typed(file, key, [GgufValueType.INT32])?.value as number | undefined;
}

export function getU64(file: GgufFile, key: string): bigint | undefined {
  return typed(file, key, [GgufValueType.UINT64])?.value as bigint | undefined;
}

export function getF32(file: GgufFile, key: string): number | undefined {
  return typed(file, key, [GgufValueType.FLOAT32])?.value as number | undefined;
}

export function getBool(file: GgufFile, key: string): boolean | undefined {
  return typed(file, key, [GgufValueType.BOOL])?.value as boolean | undefined;
}

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

export function getArray(file: GgufFile, key: string): GgufArray | undefined {
  return typed(file, key, [GgufValueType.ARRAY])?.value as GgufArray | undefined;
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

export function requireString(file: GgufFile, key: string): string {
  const v = getString(file, key);
  if (v === undefined) throw missing(key);
  return v;
}

export function requireU32(file: GgufFile, key: string): number {
  const v = getU32(file, key);
  if (v === undefined) throw missing(key);
  return v;
}

export function requireNumber(file: GgufFile, key: string): number {
  const v = getNumber(file, key);
  if (v === undefined) throw missing(key);
  return v;
}

export { ggmlTypeName };
