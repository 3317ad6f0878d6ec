/**
 * A strict RFC 8259 JSON parser for untrusted headers and configs.
 *
 * `JSON.parse` is not enough for files we must judge: it lets the last of two duplicate keys win (so two
 * tools can read two different files out of the same bytes), it turns every number into a double (so
 * `9007199254740993` silently becomes `9007199254740992` and `1e3` looks like an integer), and it builds
 * ordinary objects, whose key order puts integer-like keys first. This parser keeps the source text of
 * every number, returns objects as ordered Maps (a `__proto__` key is just a key), refuses what the RFC
 * refuses, and bounds the nesting depth so hostile input cannot exhaust the stack. An optional reviver
 * sees each value as soon as it is complete, so a caller that expects a certain shape can refuse
 * hostile input at its first wrong value instead of after building all of it.
 *
 * Positions are character indexes (UTF-16 code units) into the parsed string; callers that parsed
 * decoded bytes convert them to byte offsets themselves.
 *
 * Decisions where RFC 8259 leaves room:
 * - duplicate keys are an error; keys are compared after unescaping (`"a"` and `"\u0061"` are the same);
 * - a leading byte order mark is an error (RFC 8259 §8.1: implementations must not add one);
 * - a lone surrogate, escaped (`"\ud800"`) or raw, is an error: it has no UTF-8 encoding, so it would be
 *   replaced by U+FFFD somewhere downstream and two different names could become equal;
 * - whitespace is only space, tab, line feed and carriage return, before and after the value;
 * - with `finiteNumbers` (what `parseJson` uses), a number too large for a double (`1e999`) is an error:
 *   as a double it would be Infinity, which no JSON can say back (JSON.stringify writes `null`).
 */
import type { Code } from '../codes.js';
import { FormatError } from './format-error.js';

export type JsonValue = null | boolean | string | JsonNumber | JsonValue[] | JsonObject;

/** A JSON number as written; the double is derived from the text on demand. */
export class JsonNumber {
  /** `source`: the exact lexeme; `position`: its character index in the parsed text. */
  constructor(
    readonly source: string,
    readonly position: number,
  ) {}

  /** The nearest double, as `JSON.parse` would give (may be ±Infinity for huge exponents). */
  get value(): number {
    return Number(this.source);
  }

  /** True when written as an integer: no fraction and no exponent (`1.0` and `1e3` are not). */
  get isInteger(): boolean {
    return INTEGER_LEXEME.test(this.source);
  }

  /** The value as an exact integer, or undefined when it was not written as one. */
  toBigInt(): bigint | undefined {
    return this.isInteger ? BigInt(this.source) : undefined;
  }

  /**
   * The value when it is written as an integer within ±(2^53−1), else undefined. Decided on the text
   * (never via a rounded double) and without converting overlong digit strings.
   */
  toSafeInteger(): number | undefined {
    if (!this.isInteger) return undefined;
    const digits = this.source.startsWith('-') ? this.source.length - 1 : this.source.length;
    if (digits <= 15) return Number(this.source);
    if (digits > 16) return undefined;
    const exact = BigInt(this.source);
    return exact <= MAX_SAFE && exact >= -MAX_SAFE ? Number(exact) : undefined;
  }

  toString(): string {
    return this.source;
  }
}

/**
 * A JSON object: members in document order, with where each key and value started in the text.
 * Positions describe the members as parsed; after a `delete` they are no longer given.
 */
export class JsonObject extends Map<string, JsonValue> {
  // [key, value] start pairs in member order; a flat array rather than a Map of tuples, because a
  // header has an object per tensor and the garbage adds up
  private readonly starts: number[] = [];
  private positionsValid = true;

  constructor(readonly position: number) {
    super();
  }

  /** Character index of the opening quote of `key`. */
  keyPosition(key: string): number | undefined {
    const i = this.memberIndex(key);
    return i < 0 ? undefined : this.starts[2 * i];
  }

  /** Character index of the first character of the value of `key`. */
  valuePosition(key: string): number | undefined {
    const i = this.memberIndex(key);
    return i < 0 ? undefined : this.starts[2 * i + 1];
  }

  override delete(key: string): boolean {
    this.positionsValid = false;
    return super.delete(key);
  }

  /** @internal used by the parser, which refuses a document that repeats a key */
  addMember(key: string, keyPosition: number, valuePosition: number, value: JsonValue): void {
    this.set(key, value);
    this.starts.push(keyPosition, valuePosition);
  }

  // linear, but only asked when an error is being reported
  private memberIndex(key: string): number {
    if (!this.positionsValid) return -1;
    let i = 0;
    for (const k of this.keys()) {
      if (k === key) return i < this.starts.length / 2 ? i : -1;
      i++;
    }
    return -1;
  }
}

export const DEFAULT_MAX_DEPTH = 64;

export interface StrictJsonOptions {
  /** Deepest allowed nesting of arrays and objects; the top-level value is depth 1. Default 64. */
  maxDepth?: number;
  /**
   * Called for every object member and array element as soon as its value is complete (innermost
   * first, in document order), and last for the root. Like `JSON.parse`'s reviver, what it returns is
   * stored in place of the value. Unlike it, it runs while parsing, so a caller that knows the shape
   * it expects can throw at the first wrong value, before hostile input is built into memory, and can
   * return a small stand-in (e.g. `null`) for a value it has already taken.
   */
  reviver?: StrictJsonReviver;
  /**
   * Refuse a number whose nearest double is ±Infinity (JSON_NUMBER_RANGE), for callers that take the
   * plain values. Off by default: a caller that reads numbers from their text (`JsonNumber`) has its
   * own rules for them.
   */
  finiteNumbers?: boolean;
}

export type StrictJsonReviver = (value: JsonValue, context: StrictJsonReviverContext) => JsonValue;

/** Where the value being revived sits. Valid only during the call: the parser reuses it. */
export interface StrictJsonReviverContext {
  /** keys and indexes from the root to this value (empty for the root itself) */
  readonly path: readonly (string | number)[];
  /** character index of the member's key (of the value itself for array elements and the root) */
  readonly keyPosition: number;
  /** character index of the value's first character */
  readonly valuePosition: number;
}

export const STRICT_JSON_ERROR_CODES = [
  'JSON_SYNTAX',
  'JSON_DUPLICATE_KEY',
  'JSON_TOO_DEEP',
  'JSON_NUMBER_RANGE',
] as const satisfies readonly Code[];
export type StrictJsonErrorCode = (typeof STRICT_JSON_ERROR_CODES)[number];

/** What went wrong, finer than the code, for callers that map errors onto their own codes. */
export type StrictJsonErrorKind =
  | 'syntax'
  | 'empty'
  | 'bom'
  | 'trailing'
  | 'control-character'
  | 'lone-surrogate'
  | 'duplicate-key'
  | 'too-deep'
  | 'number-range';

export class StrictJsonError extends FormatError {
  declare readonly code: StrictJsonErrorCode;

  constructor(
    code: StrictJsonErrorCode,
    readonly kind: StrictJsonErrorKind,
    /** the bare reason, without the location: callers re-locate it (e.g. as a byte offset) */
    readonly reason: string,
    /** character index into the parsed text */
    readonly position: number,
    /** keys and indexes leading to the value being parsed when it failed (empty: the root) */
    readonly path: readonly (string | number)[],
    /** the duplicated key, for `JSON_DUPLICATE_KEY` */
    readonly key: string | undefined,
    line: number,
    column: number,
  ) {
    super(code, `${reason} at line ${line}, column ${column}`, {
      pointer: jsonPointer(path),
      details: key === undefined ? { position, line, column } : { position, line, column, key },
    });
    this.name = 'StrictJsonError';
  }

  /** RFC 6901 pointer to the value being parsed when it failed ("" is the root). */
  get jsonPointer(): string {
    return jsonPointer(this.path);
  }
}

/** Parses `text` as exactly one JSON value surrounded by optional whitespace. */
export function parseStrictJson(text: string, options: StrictJsonOptions = {}): JsonValue {
  return new Parser(
    text,
    options.maxDepth ?? DEFAULT_MAX_DEPTH,
    options.reviver,
    options.finiteNumbers === true,
  ).parseDocument();
}

/**
 * The plain-JS form `JSON.parse` would give (numbers as doubles, objects with a null prototype, so a
 * `__proto__` key is an own property and never a prototype), for libraries that want plain data.
 */
/**
 * Strict JSON to plain values in one call: what JSON.parse would give, except that duplicate keys,
 * lone surrogates, excessive nesting and numbers beyond a double's range are errors (a file that says
 * two things, or something no double can hold, is refused).
 */
export function parseJson(text: string): unknown {
  return toPlainJson(parseStrictJson(text, { finiteNumbers: true }));
}

export function toPlainJson(value: JsonValue): unknown {
  if (value instanceof JsonNumber) return value.value;
  if (Array.isArray(value)) return value.map(toPlainJson);
  if (value instanceof JsonObject) {
    const out: Record<string, unknown> = Object.create(null) as Record<string, unknown>;
    for (const [key, member] of value) out[key] = toPlainJson(member);
    return out;
  }
  return value;
}

/** RFC 6901 JSON pointer for a path of keys and indexes. */
export function jsonPointer(path: readonly (string | number)[]): string {
  return path.map((part) => `/${String(part).replace(/~/g, '~0').replace(/\//g, '~1')}`).join('');
}

const INTEGER_LEXEME = /^-?(?:0|[1-9][0-9]*)$/;
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

const QUOTE = 0x22;
const BACKSLASH = 0x5c;

class Parser {
  private pos = 0;
  private depth = 0;
  // the path is only read when an error is raised, but keeping it costs a push and a pop per level
  private readonly path: (string | number)[] = [];
  // one context for every reviver call: a value per member would be garbage for nothing
  private readonly context = { path: this.path, keyPosition: 0, valuePosition: 0 };
  /**
   * The first duplicate key, raised once the whole text has parsed: text that is not JSON at all is a
   * syntax error whatever keys it repeats. Nothing is revived after it (the document is refused).
   */
  private duplicate: StrictJsonError | undefined;

  constructor(
    private readonly text: string,
    private readonly maxDepth: number,
    private readonly reviver: StrictJsonReviver | undefined,
    private readonly finiteNumbers: boolean,
  ) {}

  private revive(value: JsonValue, keyPosition: number, valuePosition: number): JsonValue {
    if (this.reviver === undefined || this.duplicate !== undefined) return value;
    this.context.keyPosition = keyPosition;
    this.context.valuePosition = valuePosition;
    return this.reviver(value, this.context);
  }

  parseDocument(): JsonValue {
    if (this.text.charCodeAt(0) === 0xfeff) {
      this.fail('JSON_SYNTAX', 'bom', 'leading byte order mark (U+FEFF) is not allowed', 0);
    }
    this.skipWhitespace();
    if (this.pos >= this.text.length) this.fail('JSON_SYNTAX', 'empty', 'no JSON value', this.pos);
    const start = this.pos;
    const value = this.parseValue();
    this.skipWhitespace();
    if (this.pos < this.text.length) {
      this.fail(
        'JSON_SYNTAX',
        'trailing',
        `unexpected ${this.describeHere()} after the JSON value`,
        this.pos,
      );
    }
    if (this.duplicate !== undefined) throw this.duplicate;
    return this.revive(value, start, start);
  }

  private parseValue(): JsonValue {
    const c = this.text.charCodeAt(this.pos);
    switch (c) {
      case 0x7b: // {
        return this.parseObject();
      case 0x5b: // [
        return this.parseArray();
      case QUOTE:
        return this.parseString();
      case 0x74: // t
        return this.parseLiteral('true', true);
      case 0x66: // f
        return this.parseLiteral('false', false);
      case 0x6e: // n
        return this.parseLiteral('null', null);
      default:
        if (c === 0x2d || (c >= 0x30 && c <= 0x39)) return this.parseNumber();
        return this.fail('JSON_SYNTAX', 'syntax', `expected a JSON value, found ${this.describeHere()}`);
    }
  }

  private enter(): void {
    this.depth++;
    if (this.depth > this.maxDepth) {
      this.fail('JSON_TOO_DEEP', 'too-deep', `nesting deeper than ${this.maxDepth} levels`);
    }
  }

  private parseObject(): JsonObject {
    const object = new JsonObject(this.pos);
    this.enter();
    this.pos++; // {
    this.skipWhitespace();
    if (this.text.charCodeAt(this.pos) === 0x7d) {
      this.pos++;
      this.depth--;
      return object;
    }
    for (;;) {
      if (this.text.charCodeAt(this.pos) !== QUOTE) {
        this.fail('JSON_SYNTAX', 'syntax', `expected a string key, found ${this.describeHere()}`);
      }
      const keyPosition = this.pos;
      const key = this.parseString();
      if (object.has(key) && this.duplicate === undefined) {
        this.path.push(key);
        this.duplicate = this.error(
          'JSON_DUPLICATE_KEY',
          'duplicate-key',
          `duplicate key ${quoteForMessage(key)}`,
          keyPosition,
          key,
        );
        this.path.pop();
      }
      this.skipWhitespace();
      if (this.text.charCodeAt(this.pos) !== 0x3a) {
        this.fail('JSON_SYNTAX', 'syntax', `expected ':' after a key, found ${this.describeHere()}`);
      }
      this.pos++;
      this.skipWhitespace();
      const valuePosition = this.pos;
      this.path.push(key);
      const value = this.revive(this.parseValue(), keyPosition, valuePosition);
      this.path.pop();
      object.addMember(key, keyPosition, valuePosition, value);
      this.skipWhitespace();
      const c = this.text.charCodeAt(this.pos);
      if (c === 0x2c) {
        this.pos++;
        this.skipWhitespace();
      } else if (c === 0x7d) {
        this.pos++;
        this.depth--;
        return object;
      } else {
        this.fail('JSON_SYNTAX', 'syntax', `expected ',' or '}' in an object, found ${this.describeHere()}`);
      }
    }
  }

  private parseArray(): JsonValue[] {
    const array: JsonValue[] = [];
    this.enter();
    this.pos++; // [
    this.skipWhitespace();
    if (this.text.charCodeAt(this.pos) === 0x5d) {
      this.pos++;
      this.depth--;
      return array;
    }
    for (;;) {
      const start = this.pos;
      this.path.push(array.length);
      array.push(this.revive(this.parseValue(), start, start));
      this.path.pop();
      this.skipWhitespace();
      const c = this.text.charCodeAt(this.pos);
      if (c === 0x2c) {
        this.pos++;
        this.skipWhitespace();
      } else if (c === 0x5d) {
        this.pos++;
        this.depth--;
        return array;
      } else {
        this.fail('JSON_SYNTAX', 'syntax', `expected ',' or ']' in an array, found ${this.describeHere()}`);
      }
    }
  }

  private parseString(): string {
    const text = this.text;
    this.pos++; // opening quote
    let out = '';
    let runStart = this.pos;
    for (;;) {
      if (this.pos >= text.length) this.fail('JSON_SYNTAX', 'syntax', 'unterminated string');
      const c = text.charCodeAt(this.pos);
      if (c === QUOTE) {
        out += text.slice(runStart, this.pos);
        this.pos++;
        return out;
      }
      if (c === BACKSLASH) {
        out += text.slice(runStart, this.pos);
        out += this.parseEscape();
        runStart = this.pos;
      } else if (c < 0x20) {
        this.fail('JSON_SYNTAX', 'control-character', `unescaped control character U+${hex4(c)} in a string`);
      } else if (c >= 0xd800 && c <= 0xdfff) {
        const next = text.charCodeAt(this.pos + 1);
        if (c > 0xdbff || !(next >= 0xdc00 && next <= 0xdfff)) {
          this.fail('JSON_SYNTAX', 'lone-surrogate', `lone surrogate U+${hex4(c)} in a string`);
        }
        this.pos += 2;
      } else {
        this.pos++;
      }
    }
  }

  /** At a backslash; returns the decoded text and leaves `pos` after the escape. */
  private parseEscape(): string {
    const start = this.pos;
    const e = this.text.charCodeAt(this.pos + 1);
    this.pos += 2;
    switch (e) {
      case QUOTE:
        return '"';
      case BACKSLASH:
        return '\\';
      case 0x2f:
        return '/';
      case 0x62:
        return '\b';
      case 0x66:
        return '\f';
      case 0x6e:
        return '\n';
      case 0x72:
        return '\r';
      case 0x74:
        return '\t';
      case 0x75: {
        const unit = this.readHex4(start);
        if (unit >= 0xdc00 && unit <= 0xdfff) {
          this.fail('JSON_SYNTAX', 'lone-surrogate', `lone low surrogate \\u${hex4(unit)}`, start);
        }
        if (unit >= 0xd800 && unit <= 0xdbff) {
          const low =
            this.text.charCodeAt(this.pos) === BACKSLASH && this.text.charCodeAt(this.pos + 1) === 0x75
              ? this.readHex4AfterBackslashU()
              : -1;
          if (low < 0xdc00 || low > 0xdfff) {
            this.fail('JSON_SYNTAX', 'lone-surrogate', `lone high surrogate \\u${hex4(unit)}`, start);
          }
          return String.fromCharCode(unit, low);
        }
        return String.fromCharCode(unit);
      }
      default:
        return this.fail('JSON_SYNTAX', 'syntax', 'invalid escape sequence in a string', start);
    }
  }

  private readHex4AfterBackslashU(): number {
    const start = this.pos;
    this.pos += 2;
    return this.readHex4(start);
  }

  private readHex4(escapeStart: number): number {
    let value = 0;
    for (let i = 0; i < 4; i++) {
      const digit = hexDigit(this.text.charCodeAt(this.pos + i));
      if (digit < 0) this.fail('JSON_SYNTAX', 'syntax', 'invalid \\u escape in a string', escapeStart);
      value = value * 16 + digit;
    }
    this.pos += 4;
    return value;
  }

  private parseNumber(): JsonNumber {
    const text = this.text;
    const start = this.pos;
    if (text.charCodeAt(this.pos) === 0x2d) this.pos++;
    const first = text.charCodeAt(this.pos);
    if (first === 0x30) {
      this.pos++;
      if (isDigit(text.charCodeAt(this.pos))) {
        this.fail('JSON_SYNTAX', 'syntax', 'leading zero in a number', start);
      }
    } else if (isDigit(first)) {
      while (isDigit(text.charCodeAt(this.pos))) this.pos++;
    } else {
      this.fail('JSON_SYNTAX', 'syntax', 'invalid number', start);
    }
    if (text.charCodeAt(this.pos) === 0x2e) {
      this.pos++;
      if (!isDigit(text.charCodeAt(this.pos))) {
        this.fail('JSON_SYNTAX', 'syntax', 'expected a digit after the decimal point', start);
      }
      while (isDigit(text.charCodeAt(this.pos))) this.pos++;
    }
    const e = text.charCodeAt(this.pos);
    if (e === 0x65 || e === 0x45) {
      this.pos++;
      const sign = text.charCodeAt(this.pos);
      if (sign === 0x2b || sign === 0x2d) this.pos++;
      if (!isDigit(text.charCodeAt(this.pos))) {
        this.fail('JSON_SYNTAX', 'syntax', 'expected a digit in the exponent', start);
      }
      while (isDigit(text.charCodeAt(this.pos))) this.pos++;
    }
    const source = text.slice(start, this.pos);
    // only an exponent or more than 308 digits can go beyond a double; the others skip the conversion
    if (this.finiteNumbers && (this.pos - start > 308 || e === 0x65 || e === 0x45)) {
      if (!Number.isFinite(Number(source))) {
        this.fail(
          'JSON_NUMBER_RANGE',
          'number-range',
          `the number ${source.length > 40 ? `${source.slice(0, 40)}…` : source} is too large for a double (it would read as Infinity)`,
          start,
        );
      }
    }
    return new JsonNumber(source, start);
  }

  private parseLiteral<T extends boolean | null>(word: string, value: T): T {
    if (!this.text.startsWith(word, this.pos)) {
      this.fail('JSON_SYNTAX', 'syntax', `expected a JSON value, found ${this.describeHere()}`);
    }
    this.pos += word.length;
    return value;
  }

  private skipWhitespace(): void {
    const text = this.text;
    for (;;) {
      const c = text.charCodeAt(this.pos);
      if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) this.pos++;
      else return;
    }
  }

  private describeHere(): string {
    if (this.pos >= this.text.length) return 'end of input';
    const c = this.text.codePointAt(this.pos) ?? 0;
    const printable = c > 0x20 && c !== 0x7f && !(c >= 0xd800 && c <= 0xdfff);
    return printable ? `'${String.fromCodePoint(c)}'` : `character U+${hex4(c)}`;
  }

  private fail(
    code: StrictJsonErrorCode,
    kind: StrictJsonErrorKind,
    reason: string,
    position: number = this.pos,
  ): never {
    throw this.error(code, kind, reason, position);
  }

  private error(
    code: StrictJsonErrorCode,
    kind: StrictJsonErrorKind,
    reason: string,
    position: number,
    key?: string,
  ): StrictJsonError {
    const { line, column } = lineAndColumn(this.text, position);
    return new StrictJsonError(code, kind, reason, position, [...this.path], key, line, column);
  }
}

/** 1-based line and column (in UTF-16 code units) of a character index. */
function lineAndColumn(text: string, position: number): { line: number; column: number } {
  let line = 1;
  let lineStart = 0;
  const end = Math.min(position, text.length);
  for (let i = text.indexOf('\n'); i !== -1 && i < end; i = text.indexOf('\n', i + 1)) {
    line++;
    lineStart = i + 1;
  }
  return { line, column: position - lineStart + 1 };
}

/** A key or string value for a message: quoted, escaped, and cut short when long. */
export function quoteForMessage(value: string, max = 120): string {
  const cut = value.length > max ? `${value.slice(0, max)}…` : value;
  return JSON.stringify(cut);
}

function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}

function hexDigit(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  return -1;
}

function hex4(n: number): string {
  return n.toString(16).toUpperCase().padStart(4, '0');
}
