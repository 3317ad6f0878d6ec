/**
 * Buffered, bounded, synchronous reads of a GGUF header: the cursor the header parser (gguf.ts) walks
 * the file with.
 */
import { isUtf8 } from 'node:buffer';

import type { Code } from '../codes.js';
import { FormatError } from './format-error.js';
import { GgufValueType, ggufScalarSize } from './ggml-types.js';

// small: memory touched for the first time is dear on small VMs (bench/convert.js prints what a page costs)
const CHUNK = 256 << 10;
/** the first read: enough for a header without a vocabulary; later reads grow to CHUNK */
const FIRST_CHUNK = 64 << 10;

/** What the header parser reads a file through: its size, and blocking positioned reads. */
export interface GgufSource {
  readonly size: number;
  /** reads into `into` from `position`; returns how many bytes were read (fewer at the end) */
  readSync(into: Uint8Array, position: number): number;
}

/** A refusal of the GGUF file at byte `offset`. */
export function err(
  code: Code,
  message: string,
  offset: number,
  details: Record<string, unknown> = {},
): FormatError {
  return new FormatError(code, `${message} (at byte ${offset})`, {
    pointer: String(offset),
    details: { offset, ...details },
  });
}

/** How many strings the last `skipStringRun` moved past. */
let stringsSkipped = 0;

/**
 * Moves past up to `n` length-prefixed strings in `view[at, end)`, each at most `max` bytes long;
 * returns the offset after the last one, and sets `stringsSkipped`. A vocabulary is hundreds of
 * thousands of strings, so this loop is kept to locals and one plain store after it: code that V8
 * optimises while the loop runs has no type feedback yet for what follows the loop, and an object or
 * array result, or arithmetic, there would throw that code away again at every call (one per buffer).
 */
function skipStringRun(view: DataView, at: number, end: number, n: number, max: number): number {
  const last = end - 8;
  let done = 0;
  while (done < n && at <= last) {
    const next = at + 8 + view.getUint32(at, true);
    // a length of 2^32 or more has a high word; one over the limit, or past the buffer, is checked
    if (next > end || view.getUint32(at + 4, true) !== 0 || next - at - 8 > max) break;
    at = next;
    done++;
  }
  stringsSkipped = done;
  return at;
}

/**
 * Buffered positioned reads over an open file, refilled on demand in bounded chunks. Synchronous: a
 * header is read in a few large reads, and a promise per field would cost more than the reads.
 */
export class Cursor {
  // unzeroed: only bytes read from the file (bufStart..bufEnd) are ever looked at
  private buf: Buffer;
  private view: DataView;
  private bufStart = 0;
  private bufEnd = 0;
  pos = 0;

  readonly fileSize: number;

  constructor(private readonly file: GgufSource) {
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
