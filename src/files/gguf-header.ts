/**
 * The header of a GGUF file being written (magic, version, counts, key/value pairs, tensor infos,
 * padding), encoded in memory before the file is opened. It is small next to the data; encoded
 * synchronously, its loops run in plain functions, not in an async function that V8 would compile
 * at length for a few thousand awaits.
 */
import { CodiError } from '../errors.js';
import {
  GgufValueType,
  ggufScalarSize,
  ggufValueTypeName,
  type GgufArray,
  type GgufTypedValue,
  type GgufValue,
} from '../formats/ggml-types.js';
import type { GgufTensorSpec } from './gguf-writer.js';

export function invalid(message: string, details: Record<string, unknown> = {}): CodiError {
  return new CodiError('GGUF_WRITE_INVALID', message, { details });
}

/** A growing buffer the header is encoded into. */
class HeaderEncoder {
  private buf = Buffer.alloc(64 << 10);
  private view = new DataView(this.buf.buffer, this.buf.byteOffset, this.buf.byteLength);
  length = 0;

  /** The offset of `n` more bytes, the buffer grown to hold them: take `buf` and `view` after it. */
  private claim(n: number): number {
    if (this.length + n > this.buf.length) {
      const grown = Buffer.alloc(Math.max(this.buf.length * 2, this.length + n));
      grown.set(this.buf.subarray(0, this.length));
      this.buf = grown;
      this.view = new DataView(grown.buffer, grown.byteOffset, grown.byteLength);
    }
    const at = this.length;
    this.length += n;
    return at;
  }

  /** The bytes encoded so far (a view: valid until the next write). */
  bytes(): Uint8Array {
    return this.buf.subarray(0, this.length);
  }

  raw(data: Uint8Array): void {
    const at = this.claim(data.length);
    this.buf.set(data, at);
  }

  zeros(n: number): void {
    this.claim(n);
  }

  u32(v: number): void {
    const at = this.claim(4);
    this.view.setUint32(at, v, true);
  }

  i32(v: number): void {
    const at = this.claim(4);
    this.view.setInt32(at, v, true);
  }

  u64(v: bigint | number): void {
    const at = this.claim(8);
    this.view.setBigUint64(at, BigInt(v), true);
  }

  i64(v: bigint | number): void {
    const at = this.claim(8);
    this.view.setBigInt64(at, BigInt(v), true);
  }

  string(s: string): void {
    const n = Buffer.byteLength(s, 'utf8');
    this.u64(n);
    const at = this.claim(n);
    this.buf.write(s, at, 'utf8');
  }

  value(type: GgufValueType, value: GgufValue, key: string): void {
    if (type === GgufValueType.STRING) {
      if (typeof value !== 'string') throw invalid(`metadata '${key}': expected a string`, { key });
      this.string(value);
    } else if (type === GgufValueType.ARRAY) {
      if (typeof value !== 'object') throw invalid(`metadata '${key}': expected an array`, { key });
      this.array(value, key);
    } else {
      this.scalar(type, value, key);
    }
  }

  private array(array: GgufArray, key: string): void {
    const { itemType, items } = array;
    if (ggufValueTypeName(itemType).startsWith('unknown')) {
      throw invalid(`metadata '${key}': unknown array item type ${itemType}`, { key });
    }
    this.i32(itemType);
    this.u64(items.length);
    for (const item of items) this.value(itemType, item, key);
  }

  /** One scalar of a fixed-size type, range-checked so a wrong value never wraps silently. */
  private scalar(type: GgufValueType, value: GgufValue, key: string): void {
    const bad = (): CodiError =>
      invalid(
        `metadata '${key}': ${typeof value === 'object' ? 'an array' : String(value)} is not a valid ${ggufValueTypeName(type)}`,
        { key },
      );
    const int = (lo: number, hi: number): number => {
      if (typeof value !== 'number' || !Number.isInteger(value) || value < lo || value > hi) throw bad();
      return value;
    };
    const big = (lo: bigint, hi: bigint): bigint => {
      const b = typeof value === 'number' && Number.isSafeInteger(value) ? BigInt(value) : value;
      if (typeof b !== 'bigint' || b < lo || b > hi) throw bad();
      return b;
    };
    const float = (): number => {
      if (typeof value !== 'number') throw bad();
      return value;
    };
    const size = ggufScalarSize(type);
    if (size === undefined) throw bad();
    const at = this.claim(size);
    const v = this.view;
    switch (type) {
      case GgufValueType.UINT8:
        v.setUint8(at, int(0, 0xff));
        break;
      case GgufValueType.INT8:
        v.setInt8(at, int(-0x80, 0x7f));
        break;
      case GgufValueType.BOOL:
        if (typeof value !== 'boolean') throw bad();
        v.setUint8(at, value ? 1 : 0);
        break;
      case GgufValueType.UINT16:
        v.setUint16(at, int(0, 0xffff), true);
        break;
      case GgufValueType.INT16:
        v.setInt16(at, int(-0x8000, 0x7fff), true);
        break;
      case GgufValueType.UINT32:
        v.setUint32(at, int(0, 0xffffffff), true);
        break;
      case GgufValueType.INT32:
        v.setInt32(at, int(-0x80000000, 0x7fffffff), true);
        break;
      case GgufValueType.FLOAT32:
        v.setFloat32(at, float(), true);
        break;
      case GgufValueType.FLOAT64:
        v.setFloat64(at, float(), true);
        break;
      case GgufValueType.UINT64:
        v.setBigUint64(at, big(0n, 0xffffffffffffffffn), true);
        break;
      case GgufValueType.INT64:
        v.setBigInt64(at, big(-0x8000000000000000n, 0x7fffffffffffffffn), true);
        break;
    }
  }
}

/** The header's bytes, padded to the alignment where tensor data follows. */
export function encodeHeader(
  metadata: readonly (readonly [string, GgufTypedValue])[],
  tensors: readonly GgufTensorSpec[],
  offsets: readonly number[],
  alignment: number,
): Uint8Array {
  const header = new HeaderEncoder();
  header.raw(Buffer.from('GGUF', 'latin1'));
  header.u32(3);
  header.u64(tensors.length);
  header.u64(metadata.length);
  for (const [key, tv] of metadata) {
    header.string(key);
    header.i32(tv.type);
    header.value(tv.type, tv.value, key);
  }
  for (const [i, t] of tensors.entries()) {
    header.string(t.name);
    header.u32(t.ne.length);
    for (const d of t.ne) header.i64(d);
    header.i32(t.type);
    header.u64(offsets[i] ?? 0);
  }
  const dataOffset = tensors.length > 0 ? padTo(header.length, alignment) : header.length;
  header.zeros(dataOffset - header.length);
  return header.bytes();
}

export function padTo(n: number, alignment: number): number {
  return Math.ceil(n / alignment) * alignment;
}
