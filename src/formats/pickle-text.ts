/**
 * The text arguments of pickle opcodes (protocol 0), read exactly as CPython's C unpickler reads them
 * (`Modules/_pickle.c`, with torch's `encoding='utf-8'`), so that the scanner takes the value torch
 * takes, or refuses what CPython refuses:
 *
 * - INT: C `strtol(s, &end, 0)` first (leading whitespace, a sign, `0x` hex, a leading `0` octal), good
 *   when it ends at the newline or a NUL; a two-character argument of value 0 or 1 is then a bool.
 *   Otherwise Python's `int(s, 0)` (`PyLong_FromString`: underscores between digits, `0o`/`0b`, no
 *   leading zeros on a non-zero decimal, whitespace around it, the text ending at a NUL).
 * - LONG: one `L` before the newline dropped, then `int(s, 0)`.
 * - GET and PUT: `int(s, 10)`.
 * - FLOAT: C `strtod` in the C locale (no whitespace, no underscores; overflow is an error), ending at
 *   the newline or a NUL.
 * - STRING: quoted, Python bytes escapes, then UTF-8 (strict). UNICODE: raw-unicode-escape.
 *
 * Each reader takes the argument's line *with* its newline, as `_Unpickler_Readline` returns it, and
 * returns null for what CPython refuses.
 */

/** Python 3.11+ refuses to parse a decimal int of more digits (`sys.int_info.default_max_str_digits`). */
const MAX_STR_DIGITS = 4300;
/** digits beyond this are kept as "large": no size, offset or index needs them */
const MAX_VALUE_DIGITS = 40;

export type TextInt = { t: 'int'; v: bigint | undefined } | { t: 'bool' };

const NL = 0x0a;

/** C `isspace` in the C locale, which is also `Py_ISSPACE`. */
function isSpace(c: number | undefined): boolean {
  return c === 0x20 || (c !== undefined && c >= 0x09 && c <= 0x0d);
}

/** The argument as C sees it: the bytes up to the first NUL (the newline included, when before it). */
function cString(line: Uint8Array): Uint8Array {
  const nul = line.indexOf(0);
  return nul < 0 ? line : line.subarray(0, nul);
}

/** A digit's value in bases up to 36, or 99. */
function digitValue(c: number | undefined): number {
  if (c === undefined) return 99;
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x7a) return c - 0x61 + 10;
  if (c >= 0x41 && c <= 0x5a) return c - 0x41 + 10;
  return 99;
}

function value(digits: string, base: number, negative: boolean): bigint | undefined {
  if (digits.length > MAX_VALUE_DIGITS) return undefined;
  const prefix = base === 16 ? '0x' : base === 8 ? '0o' : base === 2 ? '0b' : '';
  const v = BigInt(prefix + digits);
  return negative ? -v : v;
}

/** C `strtol(s, &end, 0)` for a 64-bit long: its value, where it stopped, and whether it overflowed. */
function strtol(s: Uint8Array): { v: bigint; end: number; overflow: boolean } {
  let i = 0;
  while (isSpace(s[i])) i++;
  let negative = false;
  if (s[i] === 0x2b || s[i] === 0x2d) negative = s[i++] === 0x2d;
  let base = 10;
  if (s[i] === 0x30 && (s[i + 1] === 0x78 || s[i + 1] === 0x58) && digitValue(s[i + 2]) < 16) {
    base = 16;
    i += 2;
  } else if (s[i] === 0x30) {
    base = 8;
  }
  const start = i;
  while (digitValue(s[i]) < base) i++;
  // no digits: no conversion, and the end is where the argument began
  if (i === start) return { v: 0n, end: 0, overflow: false };
  const digits = new TextDecoder('latin1').decode(s.subarray(start, i)).replace(/^0+(?=.)/, '');
  // more than 20 significant digits overflow in any base: no need to compute them
  const v = digits.length > 22 ? undefined : value(digits, base, negative);
  const overflow = v === undefined || v > 2n ** 63n - 1n || v < -(2n ** 63n);
  return { v: v ?? 0n, end: i, overflow };
}

/** Python's `PyLong_FromString(s, NULL, base)` for base 0 or 10; undefined when it raises. */
export function pyLongFromString(line: Uint8Array, base: 0 | 10): { v: bigint | undefined } | null {
  const s = cString(line);
  let i = 0;
  while (isSpace(s[i])) i++;
  let negative = false;
  if (s[i] === 0x2b || s[i] === 0x2d) negative = s[i++] === 0x2d;
  let b: number = base;
  let errorIfNonzero = false;
  if (b === 0) {
    const p = s[i + 1];
    if (s[i] !== 0x30) b = 10;
    else if (p === 0x78 || p === 0x58) b = 16;
    else if (p === 0x6f || p === 0x4f) b = 8;
    else if (p === 0x62 || p === 0x42) b = 2;
    else {
      // an old C-style octal literal: only zero survives
      errorIfNonzero = true;
      b = 10;
    }
    if (b !== 10) {
      i += 2;
      if (s[i] === 0x5f) i++;
    }
  }
  if (s[i] === 0x5f) return null;
  let digits = '';
  let previous = 0;
  while (digitValue(s[i]) < b || s[i] === 0x5f) {
    const c = s[i] as number;
    if (c === 0x5f && previous === 0x5f) return null;
    if (c !== 0x5f) digits += String.fromCharCode(c);
    previous = c;
    i++;
  }
  if (previous === 0x5f || digits.length === 0) return null;
  if (b === 10 && digits.length > MAX_STR_DIGITS) return null;
  const significant = digits.replace(/^0+(?=.)/, '');
  if (errorIfNonzero && significant !== '0') return null;
  while (isSpace(s[i])) i++;
  if (i !== s.length) return null;
  return { v: value(significant, b, negative) };
}

/** The INT opcode's argument (`load_int`). */
export function readInt(line: Uint8Array): TextInt | null {
  if (line.length < 2) return null;
  const s = cString(line);
  const r = strtol(s);
  const stop = s[r.end];
  if (!r.overflow && (stop === NL || stop === undefined)) {
    if (line.length === 3 && (r.v === 0n || r.v === 1n)) return { t: 'bool' };
    return { t: 'int', v: r.v };
  }
  const long = pyLongFromString(line, 0);
  return long === null ? null : { t: 'int', v: long.v };
}

/** The LONG opcode's argument (`load_long`): an `L` just before the newline is dropped. */
export function readLong(line: Uint8Array): TextInt | null {
  if (line.length < 2) return null;
  const s = line[line.length - 2] === 0x4c ? line.subarray(0, line.length - 2) : line;
  const long = pyLongFromString(s, 0);
  return long === null ? null : { t: 'int', v: long.v };
}

/** A GET or PUT argument (`int(s, 10)`); null when CPython refuses it. */
export function readMemoIndex(line: Uint8Array): bigint | undefined | null {
  if (line.length < 2) return null;
  const long = pyLongFromString(line, 10);
  return long === null ? null : long.v;
}

const FLOAT_TEXT = /^[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf(?:inity)?|nan)/i;

/** Whether the FLOAT opcode's argument is a number to CPython (`PyOS_string_to_double`). */
export function isFloat(line: Uint8Array): boolean {
  if (line.length < 2) return false;
  const s = new TextDecoder('latin1').decode(cString(line));
  const m = FLOAT_TEXT.exec(s);
  if (m === null) return false;
  const rest = s.slice(m[0].length);
  if (rest !== '' && rest !== '\n') return false;
  // a finite literal too large for a double is an OverflowError
  return Number.isFinite(Number(m[0])) || /[in]/i.test(m[0]);
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** UTF-8, strictly; null where Python raises `UnicodeDecodeError`. */
export function decodeUtf8(bytes: Uint8Array): string | null {
  try {
    return utf8.decode(bytes);
  } catch {
    return null;
  }
}

const SIMPLE_ESCAPES: Readonly<Record<number, number>> = {
  0x5c: 0x5c, // backslash
  0x27: 0x27, // '
  0x22: 0x22, // "
  0x62: 0x08, // b
  0x66: 0x0c, // f
  0x74: 0x09, // t
  0x6e: 0x0a, // n
  0x72: 0x0d, // r
  0x76: 0x0b, // v
  0x61: 0x07, // a
};

/** `PyBytes_DecodeEscape`: Python's bytes escapes; null where it raises. */
function decodeEscapes(s: Uint8Array): Uint8Array | null {
  const out: number[] = [];
  for (let i = 0; i < s.length; i++) {
    const c = s[i] as number;
    if (c !== 0x5c) {
      out.push(c);
      continue;
    }
    if (++i >= s.length) return null; // a trailing backslash
    const e = s[i] as number;
    const simple = SIMPLE_ESCAPES[e];
    if (simple !== undefined) {
      out.push(simple);
    } else if (e === 0x0a) {
      // an escaped newline is dropped
    } else if (e >= 0x30 && e <= 0x37) {
      let v = e - 0x30;
      for (let k = 0; k < 2 && (s[i + 1] ?? 0) >= 0x30 && (s[i + 1] ?? 0) <= 0x37; k++) {
        v = v * 8 + ((s[++i] as number) - 0x30);
      }
      out.push(v & 0xff);
    } else if (e === 0x78) {
      const hi = digitValue(s[i + 1]);
      const lo = digitValue(s[i + 2]);
      if (hi >= 16 || lo >= 16) return null;
      out.push(hi * 16 + lo);
      i += 2;
    } else {
      out.push(0x5c, e);
    }
  }
  return Uint8Array.from(out);
}

/** The STRING opcode's argument (`load_string`, torch's UTF-8 decoding); null where CPython raises. */
export function readQuoted(line: Uint8Array): string | null {
  const s = line.subarray(0, line.length - 1);
  const q = s[0];
  if (s.length < 2 || (q !== 0x27 && q !== 0x22) || s[s.length - 1] !== q) return null;
  const bytes = decodeEscapes(s.subarray(1, -1));
  return bytes === null ? null : decodeUtf8(bytes);
}

/** The UNICODE opcode's argument: raw-unicode-escape (`\uXXXX`, `\UXXXXXXXX`, else Latin-1). */
export function readRawUnicode(line: Uint8Array): string | null {
  const s = line.subarray(0, line.length - 1);
  let out = '';
  for (let i = 0; i < s.length; i++) {
    const c = s[i] as number;
    const next = s[i + 1];
    if (c !== 0x5c || (next !== 0x75 && next !== 0x55)) {
      out += String.fromCharCode(c);
      if (c === 0x5c && next !== undefined) out += String.fromCharCode(s[++i] as number);
      continue;
    }
    const count = next === 0x75 ? 4 : 8;
    let cp = 0;
    for (let k = 0; k < count; k++) {
      const d = digitValue(s[i + 2 + k]);
      if (d >= 16) return null;
      cp = cp * 16 + d;
    }
    if (cp > 0x10ffff) return null;
    out += String.fromCodePoint(cp);
    i += 1 + count;
  }
  return out;
}
