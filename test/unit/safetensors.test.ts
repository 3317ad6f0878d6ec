import { execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RegularFile } from '../../src/byte-source.js';
import { ALL_CODES, CODES } from '../../src/codes.js';
import { CodiError, ExitCode } from '../../src/errors.js';
import {
  acceptPlainHeader,
  byteLength,
  elementCount,
  encodeSafetensors,
  expectedByteLength,
  isSafetensorsDtype,
  parseSafetensorsHeader,
  SAFETENSORS_DTYPES,
  SAFETENSORS_ERROR_CODES,
  SAFETENSORS_MAX_HEADER_LENGTH,
  SAFETENSORS_MAX_METADATA_ENTRIES,
  SAFETENSORS_MAX_DIMENSIONS,
  SAFETENSORS_MAX_RANK,
  SAFETENSORS_MAX_TENSORS,
  type SafetensorsErrorCode,
  type SafetensorsTensorInput,
} from '../../src/formats/safetensors.js';
import {
  readSafetensorsHeader,
  readTensorBytes,
  streamTensorBytes,
  writeSafetensors,
} from '../../src/files/safetensors.js';
import { thrown } from '../helpers/errors.js';

const encoder = new TextEncoder();

/** A file from raw parts: length prefix (default: the header's real length), header bytes, data. */
function file(header: string | Uint8Array, data: number | Uint8Array = 0, length?: bigint): Uint8Array {
  const headerBytes = typeof header === 'string' ? encoder.encode(header) : header;
  const dataBytes = typeof data === 'number' ? new Uint8Array(data) : data;
  const out = new Uint8Array(8 + headerBytes.length + dataBytes.length);
  new DataView(out.buffer).setBigUint64(0, length ?? BigInt(headerBytes.length), true);
  out.set(headerBytes, 8);
  out.set(dataBytes, 8 + headerBytes.length);
  return out;
}

function entry(dtype: unknown, shape: unknown, offsets: unknown): string {
  return JSON.stringify({ dtype, shape, data_offsets: offsets });
}

function refusal(bytes: Uint8Array, fileSize = bytes.length): CodiError {
  return thrown(() => parseSafetensorsHeader(bytes, fileSize));
}

function expectCode(bytes: Uint8Array, code: SafetensorsErrorCode, fileSize = bytes.length): CodiError {
  const err = refusal(bytes, fileSize);
  expect(err.code, err.message).toBe(code);
  expect(err.exitCode).toBe(ExitCode.INVALID);
  expect(err.pointer).toMatch(/^\d+$/);
  expect(err.stack).toBeDefined();
  return err;
}

describe('dtype table', () => {
  it('knows every dtype of the reference Rust crate, with its bit size', () => {
    expect(SAFETENSORS_DTYPES).toEqual({
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
    });
    expect(Object.isFrozen(SAFETENSORS_DTYPES)).toBe(true);
  });

  it('is case-sensitive and ignores inherited names', () => {
    expect(isSafetensorsDtype('F32')).toBe(true);
    expect(isSafetensorsDtype('f32')).toBe(false);
    expect(isSafetensorsDtype('Bf16')).toBe(false);
    expect(isSafetensorsDtype('constructor')).toBe(false);
    expect(isSafetensorsDtype('__proto__')).toBe(false);
    expect(isSafetensorsDtype('toString')).toBe(false);
  });

  it('computes sizes exactly, sub-byte dtypes included', () => {
    expect(elementCount([])).toBe(1n);
    expect(elementCount([2, 3, 4])).toBe(24n);
    expect(expectedByteLength('F32', [2, 3])).toBe(24n);
    expect(expectedByteLength('F4', [3])).toBeUndefined();
    expect(expectedByteLength('F4', [4])).toBe(2n);
    expect(expectedByteLength('F6_E2M3', [4])).toBe(3n);
    expect(expectedByteLength('F6_E3M2', [3])).toBeUndefined();
    expect(expectedByteLength('F64', [2 ** 53 - 1, 2 ** 53 - 1])).toBe(8n * (2n ** 53n - 1n) ** 2n);
    expect(byteLength({ begin: 8, end: 24 })).toBe(16);
  });
});

describe('error codes', () => {
  it('lists every code once, each with a description in the codes registry', () => {
    expect(new Set(SAFETENSORS_ERROR_CODES).size).toBe(SAFETENSORS_ERROR_CODES.length);
    for (const code of SAFETENSORS_ERROR_CODES) {
      expect(code).toMatch(/^SAFETENSORS_[A-Z0-9_]+$/);
      expect(CODES[code].summary.length).toBeGreaterThan(10);
    }
    expect(ALL_CODES.filter((c) => c.startsWith('SAFETENSORS_')).sort()).toEqual(
      [...SAFETENSORS_ERROR_CODES].sort(),
    );
  });
});

describe('parseSafetensorsHeader: valid files', () => {
  it('reads the example from the Rust crate documentation (unpadded header)', () => {
    const header = '{"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}}';
    expect(header.length).toBe(0x3c);
    const parsed = parseSafetensorsHeader(file(header, 16), 8 + 0x3c + 16);
    expect(parsed).toEqual({
      headerLength: 0x3c,
      dataOffset: 8 + 0x3c,
      fileSize: 8 + 0x3c + 16,
      metadata: null,
      tensors: [{ name: 'test', dtype: 'I32', shape: [2, 2], begin: 0, end: 16 }],
    });
  });

  it('accepts space padding inside the header and JSON whitespace around it', () => {
    const header = `\n\t {"a":${entry('F32', [2], [0, 8])}}  \r\n    `;
    expect(parseSafetensorsHeader(file(header, 8), 8 + header.length + 8).tensors).toHaveLength(1);
  });

  it('returns tensors in header order, whatever their offsets', () => {
    const header = `{"z":${entry('F32', [1], [4, 8])},"10":${entry('F32', [1], [0, 4])},"a":${entry('U8', [0], [8, 8])}}`;
    const parsed = parseSafetensorsHeader(file(header, 8), 8 + header.length + 8);
    expect(parsed.tensors.map((t) => t.name)).toEqual(['z', '10', 'a']);
  });

  it('accepts zero-length tensors sharing an offset with their neighbours', () => {
    const header = `{"a":${entry('F32', [0, 5], [0, 0])},"b":${entry('F32', [1], [0, 4])},"c":${entry('BOOL', [3, 0], [4, 4])}}`;
    expect(parseSafetensorsHeader(file(header, 4), 8 + header.length + 4).tensors).toHaveLength(3);
  });

  it('accepts a zero dimension beside a huge one', () => {
    const header = `{"a":${entry('F64', [0, Number.MAX_SAFE_INTEGER], [0, 0])}}`;
    expect(parseSafetensorsHeader(file(header), 8 + header.length).tensors[0]?.shape).toEqual([
      0,
      Number.MAX_SAFE_INTEGER,
    ]);
  });

  it('accepts scalars (shape [])', () => {
    const header = `{"s":${entry('F16', [], [0, 2])}}`;
    expect(parseSafetensorsHeader(file(header, 2), 8 + header.length + 2).tensors[0]?.shape).toEqual([]);
  });

  it('accepts a file with metadata and no tensors, and the empty object', () => {
    const header = '{"__metadata__":{"format":"pt"}}';
    const parsed = parseSafetensorsHeader(file(header), 8 + header.length);
    expect(parsed.tensors).toEqual([]);
    expect(parsed.metadata).toEqual(Object.assign(Object.create(null) as object, { format: 'pt' }));
    expect(parseSafetensorsHeader(file('{}'), 10).tensors).toEqual([]);
  });

  it('keeps a __proto__ metadata key as data', () => {
    const header = '{"__metadata__":{"__proto__":"x","constructor":"y"}}';
    const metadata = parseSafetensorsHeader(file(header), 8 + header.length).metadata;
    expect(metadata).not.toBeNull();
    expect(Object.getPrototypeOf(metadata)).toBeNull();
    expect(Object.keys(metadata ?? {})).toEqual(['__proto__', 'constructor']);
    expect(metadata?.__proto__).toBe('x');
  });

  it('accepts every known dtype, with sub-byte sizes', () => {
    for (const [dtype, bits] of Object.entries(SAFETENSORS_DTYPES)) {
      const bytes = bits; // 8 elements of `bits` bits each
      const header = `{"t":${entry(dtype, [2, 4], [0, bytes])}}`;
      expect(parseSafetensorsHeader(file(header, bytes), 8 + header.length + bytes).tensors[0]?.dtype).toBe(
        dtype,
      );
    }
  });

  it('accepts a prefix longer than the header', () => {
    const bytes = file(`{"a":${entry('U8', [4], [0, 4])}}`, 4);
    expect(parseSafetensorsHeader(bytes, bytes.length).tensors).toHaveLength(1);
  });
});

describe('the fast path (JSON.parse plus checks) declines what it cannot judge exactly', () => {
  const f32 = (begin: number, end: number): string => entry('F32', [(end - begin) / 4], [begin, end]);
  // numbers exactly as written
  const raw = (shape: string, begin: string, end: string): string =>
    `{"dtype":"F32","shape":[${shape}],"data_offsets":[${begin},${end}]}`;
  const cases: [string, string, number, SafetensorsErrorCode | null][] = [
    [
      'a duplicate spelled with an escape',
      `{"a":${entry('F32', [1], [0, 4])},"\\u0061":${f32(4, 8)}}`,
      8,
      'SAFETENSORS_DUPLICATE_KEY',
    ],
    [
      'a duplicate field',
      `{"a":{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]}}`,
      4,
      'SAFETENSORS_DUPLICATE_KEY',
    ],
    ['an exponent', `{"a":${raw('1e0', '0', '4')}}`, 4, 'SAFETENSORS_SHAPE'],
    ['a fraction', `{"a":${raw('1', '0.0', '4')}}`, 4, 'SAFETENSORS_OFFSETS'],
    ['minus zero', `{"a":${raw('1', '-0', '4')}}`, 4, 'SAFETENSORS_OFFSETS'],
    ['an integer past 2^53', `{"a":${raw('1', '0', '9007199254740993')}}`, 4, 'SAFETENSORS_OFFSETS'],
    ['a 16-digit integer', `{"a":${raw('1', '0', '1000000000000000')}}`, 4, 'SAFETENSORS_SIZE'],
    ['a 16-digit dimension that fits', `{"a":${raw('1000000000000000,0', '0', '0')}}`, 0, null],
    [
      'a gap, tensors listed out of data order',
      `{"z":${f32(8, 12)},"a":${entry('F32', [1], [0, 4])}}`,
      12,
      'SAFETENSORS_OFFSETS',
    ],
    [
      'an overlap, tensors listed out of data order',
      `{"z":${f32(2, 6)},"a":${entry('F32', [1], [0, 4])}}`,
      6,
      'SAFETENSORS_OFFSETS',
    ],
    [
      'a zero-length tensor beside another',
      `{"a":${entry('F32', [0], [0, 0])},"b":${entry('F32', [1], [0, 4])}}`,
      4,
      null,
    ],
    ['an escaped quote in a name', `{"a\\"b":${entry('F32', [1], [0, 4])}}`, 4, null],
    ['a name that reads like a fraction', `{"h.1.2":${entry('F32', [1], [0, 4])}}`, 4, null],
    ['an exponent with a sign', `{"a":${raw('1', '0', '4E+0')}}`, 4, 'SAFETENSORS_OFFSETS'],
    ['an escaped surrogate pair', `{"\\ud83d\\ude00":${entry('F32', [1], [0, 4])}}`, 4, null],
    ['an escaped lone surrogate', `{"\\ud800":${entry('F32', [1], [0, 4])}}`, 4, 'SAFETENSORS_HEADER_JSON'],
    [
      'an array-index key, which an object would move first',
      `{"b":${entry('F32', [1], [0, 4])},"0":${f32(4, 8)}}`,
      8,
      null,
    ],
    ['a __proto__ key', `{"__proto__":${entry('F32', [1], [0, 4])}}`, 4, null],
    [
      'a __proto__ metadata key',
      `{"__metadata__":{"__proto__":"x"},"a":${entry('F32', [1], [0, 4])}}`,
      4,
      null,
    ],
  ];
  it.each(cases)('%s', (_name, json, dataBytes, code) => {
    expect(acceptPlainHeader(json, dataBytes)).toBeNull();
    const bytes = file(json, dataBytes);
    if (code) {
      expectCode(bytes, code);
      return;
    }
    // what the strict parser accepts, the result is its own: document order, keys as data
    const header = parseSafetensorsHeader(bytes, bytes.length);
    expect(header).toEqual(parseSafetensorsHeader(bytes, bytes.length, { plain: false }));
    expect(header.tensors.length).toBeGreaterThan(0);
  });

  it('takes names beyond ASCII, as UTF-8 decoded', () => {
    const json = `{"ä→😀":${entry('F32', [1], [0, 4])},"b:c":${f32(4, 8)}}`;
    expect(acceptPlainHeader(json, 8)?.tensors.map((t) => t.name)).toEqual(['ä→😀', 'b:c']);
    const bytes = file(json, 8);
    expect(parseSafetensorsHeader(bytes, bytes.length)).toEqual(
      parseSafetensorsHeader(bytes, bytes.length, { plain: false }),
    );
  });

  it('a duplicate key whose colons hide in strings is still caught', () => {
    // the colon count is what reveals a dropped duplicate; colons inside names must not mask it
    const json = `{"a:b":${entry('F32', [1], [0, 4])},"a:b":${f32(4, 8)}}`;
    expect(acceptPlainHeader(json, 8)).toBeNull();
    expectCode(file(json, 8), 'SAFETENSORS_DUPLICATE_KEY');
  });

  it('takes headers laid out with any JSON whitespace', () => {
    const value = {
      __metadata__: { format: 'pt' },
      b: JSON.parse(f32(0, 4)) as unknown,
      a: JSON.parse(f32(4, 12)) as unknown,
    };
    for (const json of [
      JSON.stringify(value, null, 2),
      JSON.stringify(value, null, '\t').replace(/\n/g, '\r\n'),
    ]) {
      expect(acceptPlainHeader(`${json}  `, 12)?.tensors.map((t) => [t.name, t.begin, t.end])).toEqual([
        ['b', 0, 4],
        ['a', 4, 12],
      ]);
    }
  });

  it('keeps the header order of an ordinary header', () => {
    const json = `{"__metadata__":{"format":"pt"},"z":${f32(4, 8)},"a":${entry('F32', [1], [0, 4])}}`;
    const plain = acceptPlainHeader(json, 8);
    expect(plain?.tensors.map((t) => t.name)).toEqual(['z', 'a']);
    expect(plain?.metadata).toEqual(Object.assign(Object.create(null), { format: 'pt' }));
    const bytes = file(json, 8);
    expect(parseSafetensorsHeader(bytes, bytes.length)).toEqual(
      parseSafetensorsHeader(bytes, bytes.length, { plain: false }),
    );
  });
});

describe('parseSafetensorsHeader: header length', () => {
  it.each([
    [0, 'the file is empty'],
    [7, 'the file is 7 bytes'],
  ])('a %i-byte file is truncated', (size, text) => {
    const err = expectCode(new Uint8Array(size), 'SAFETENSORS_TRUNCATED');
    expect(err.message).toContain(text);
    expect(err.pointer).toBe('0');
  });

  it('N = 0', () => {
    expectCode(file('', 16), 'SAFETENSORS_HEADER_LENGTH');
  });

  it('N over 100,000,000', () => {
    const err = expectCode(
      file('{}', 0, BigInt(SAFETENSORS_MAX_HEADER_LENGTH + 1)),
      'SAFETENSORS_HEADER_LENGTH',
    );
    expect(err.message).toContain('100000001');
  });

  it('N = 2^64−1 is reported exactly', () => {
    const err = expectCode(file('{}', 0, 2n ** 64n - 1n), 'SAFETENSORS_HEADER_LENGTH');
    expect(err.message).toContain('18446744073709551615');
  });

  it('N = 2^53+1 is not rounded into range', () => {
    expectCode(file('{}', 0, 2n ** 53n + 1n), 'SAFETENSORS_HEADER_LENGTH');
  });

  it('8 + N past the end of the file', () => {
    const err = expectCode(file('{}', 0, 3n), 'SAFETENSORS_HEADER_LENGTH');
    expect(err.message).toContain('runs past the end of the file');
    expect(err.hint).toBeDefined();
    // exactly at the limit but the file is short
    expectCode(file('{}', 0, BigInt(SAFETENSORS_MAX_HEADER_LENGTH)), 'SAFETENSORS_HEADER_LENGTH');
  });

  it('a prefix shorter than the file says it is (a short read) is truncation', () => {
    const bytes = file(`{"a":${entry('U8', [4], [0, 4])}}`, 4);
    expectCode(bytes.subarray(0, 20), 'SAFETENSORS_TRUNCATED', bytes.length);
    expectCode(bytes.subarray(0, 5), 'SAFETENSORS_TRUNCATED', bytes.length);
  });

  it('a fileSize that is not a size is a caller bug, not a file error', () => {
    expect(() => parseSafetensorsHeader(file('{}'), -1)).toThrow(RangeError);
    expect(() => parseSafetensorsHeader(file('{}'), 1.5)).toThrow(RangeError);
  });
});

describe('parseSafetensorsHeader: header text', () => {
  it('not UTF-8, with the offset of the bad byte', () => {
    const header = Uint8Array.from([...encoder.encode('{"a'), 0xff, ...encoder.encode('":{}}')]);
    const err = expectCode(file(header), 'SAFETENSORS_HEADER_UTF8');
    expect(err.pointer).toBe('11');
    expect(err.message).toContain('0xff');
  });

  it.each([
    ['an overlong encoding', [0xc0, 0xaf]],
    ['an encoded surrogate', [0xed, 0xa0, 0x80]],
    ['a sequence cut short', [0xe2, 0x82]],
    ['a code point above U+10FFFF', [0xf4, 0x90, 0x80, 0x80]],
  ])('not UTF-8: %s', (_what, bad) => {
    const header = Uint8Array.from([...encoder.encode('{"'), ...bad, ...encoder.encode('":1}')]);
    expect(expectCode(file(header), 'SAFETENSORS_HEADER_UTF8').pointer).toBe('10');
  });

  it('not JSON', () => {
    expectCode(file('{not json}'), 'SAFETENSORS_HEADER_JSON');
    expectCode(file('{"a":'), 'SAFETENSORS_HEADER_JSON');
  });

  it('garbage after the JSON, including NUL padding', () => {
    const err = expectCode(file('{}xx'), 'SAFETENSORS_HEADER_JSON');
    expect(err.pointer).toBe('10');
    expectCode(file('{}\0\0\0\0\0\0'), 'SAFETENSORS_HEADER_JSON');
    expectCode(file('{}{}'), 'SAFETENSORS_HEADER_JSON');
  });

  it('a leading BOM', () => {
    const err = expectCode(
      file(Uint8Array.from([0xef, 0xbb, 0xbf, ...encoder.encode('{}')])),
      'SAFETENSORS_HEADER_JSON',
    );
    expect(err.message).toContain('byte order mark');
    expect(err.pointer).toBe('8');
  });

  it('lone surrogate escapes', () => {
    expectCode(file(`{"\\ud800":${entry('U8', [0], [0, 0])}}`), 'SAFETENSORS_HEADER_JSON');
  });

  it('hostile nesting, quickly and without a stack overflow', () => {
    const started = performance.now();
    expectCode(file(`{"a":${'['.repeat(5_000_000)}`), 'SAFETENSORS_HEADER_JSON');
    expect(performance.now() - started).toBeLessThan(5000);
  });

  it.each([
    ['[]', 'an array'],
    ['[{"dtype":"F32","shape":[],"data_offsets":[0,4]}]', 'an array'],
    ['"x"', 'a string'],
    ['42', 'a number'],
    ['null', 'null'],
    ['true', 'true'],
  ])('not an object: %s', (header, kind) => {
    const err = expectCode(file(header), 'SAFETENSORS_HEADER_NOT_OBJECT');
    expect(err.message).toContain(kind);
  });
});

describe('parseSafetensorsHeader: entries', () => {
  const one = (body: string, data = 0): Uint8Array => file(`{"base_model.x.lora_A.weight":${body}}`, data);

  it('names the tensor in every entry error', () => {
    const err = expectCode(one(entry('F128', [1], [0, 16]), 16), 'SAFETENSORS_DTYPE');
    expect(err.message).toContain('"base_model.x.lora_A.weight"');
    expect(err.details).toEqual({ tensor: 'base_model.x.lora_A.weight' });
  });

  describe('dtype', () => {
    it('unknown', () => {
      expectCode(one(entry('F128', [1], [0, 16]), 16), 'SAFETENSORS_DTYPE');
      expectCode(one(entry('constructor', [1], [0, 4]), 4), 'SAFETENSORS_DTYPE');
      expectCode(one(entry('', [1], [0, 4]), 4), 'SAFETENSORS_DTYPE');
    });

    it('lowercase, with a hint naming the real one', () => {
      const err = expectCode(one(entry('f32', [1], [0, 4]), 4), 'SAFETENSORS_DTYPE');
      expect(err.message).toContain('"f32"');
      expect(err.hint).toContain('"F32"');
      expectCode(one(entry('bf16', [1], [0, 2]), 2), 'SAFETENSORS_DTYPE');
    });

    it('missing or not a string', () => {
      expectCode(one('{"shape":[1],"data_offsets":[0,4]}', 4), 'SAFETENSORS_DTYPE');
      expectCode(one(entry(32, [1], [0, 4]), 4), 'SAFETENSORS_DTYPE');
      expectCode(one(entry(['F32'], [1], [0, 4]), 4), 'SAFETENSORS_DTYPE');
    });
  });

  describe('shape', () => {
    it.each([
      ['-1', 'non-negative'],
      ['-0', 'non-negative'],
      ['1.5', 'integer'],
      ['1.0', 'integer'],
      ['1e3', 'integer'],
      ['9007199254740993', '2^53'],
      ['9007199254740992', '2^53'],
      ['"2"', 'integer'],
      ['null', 'integer'],
      ['[2]', 'integer'],
    ])('a dimension of %s', (dim, text) => {
      const err = expectCode(
        one(`{"dtype":"F32","shape":[2,${dim}],"data_offsets":[0,8]}`, 8),
        'SAFETENSORS_SHAPE',
      );
      expect(err.message).toContain('shape[1]');
      expect(err.message).toContain(text);
    });

    it(`allows ${SAFETENSORS_MAX_RANK} dimensions and refuses more, at the first extra one`, () => {
      const ok = new Array<number>(SAFETENSORS_MAX_RANK).fill(1);
      const bytes = one(entry('U8', ok, [0, 1]), 1);
      expect(parseSafetensorsHeader(bytes, bytes.length).tensors[0]?.shape).toEqual(ok);
      const err = expectCode(one(entry('U8', [...ok, 1], [0, 1]), 1), 'SAFETENSORS_SHAPE');
      expect(err.message).toContain(`more than ${SAFETENSORS_MAX_RANK} dimensions`);
    });

    it('points at the bad dimension', () => {
      const header = '{"t":{"dtype":"F32","shape":[2,-1],"data_offsets":[0,8]}}';
      const err = expectCode(file(header, 8), 'SAFETENSORS_SHAPE');
      expect(err.pointer).toBe(String(8 + header.indexOf('-1')));
    });

    it('missing or not an array', () => {
      expectCode(one('{"dtype":"F32","data_offsets":[0,4]}', 4), 'SAFETENSORS_SHAPE');
      expectCode(one(entry('F32', 1, [0, 4]), 4), 'SAFETENSORS_SHAPE');
      expectCode(one(entry('F32', { 0: 1 }, [0, 4]), 4), 'SAFETENSORS_SHAPE');
    });
  });

  describe('data_offsets', () => {
    it.each([
      ['[0]', 'one number'],
      ['[0,4,8]', 'three numbers'],
      ['[]', 'empty'],
      ['{"0":0,"1":4}', 'an object'],
      ['"0,4"', 'a string'],
      ['[0,4.0]', 'a float'],
      ['[0,4e0]', 'an exponent'],
      ['[-4,0]', 'a negative'],
      ['[0,9007199254740993]', 'beyond 2^53'],
      ['[0,"4"]', 'a string element'],
    ])('%s (%s)', (offsets) => {
      expectCode(one(`{"dtype":"F32","shape":[1],"data_offsets":${offsets}}`, 4), 'SAFETENSORS_OFFSETS');
    });

    it('missing', () => {
      expectCode(one('{"dtype":"F32","shape":[1]}', 4), 'SAFETENSORS_OFFSETS');
    });

    it('end before begin', () => {
      const err = expectCode(one(entry('U8', [0], [4, 0]), 4), 'SAFETENSORS_OFFSETS');
      expect(err.message).toContain('end before they begin');
    });

    it('not starting at 0', () => {
      const err = expectCode(one(entry('F32', [1], [4, 8]), 8), 'SAFETENSORS_OFFSETS');
      expect(err.message).toContain('begins at 4, not 0');
    });

    it('a gap', () => {
      const header = `{"a":${entry('F32', [1], [0, 4])},"b":${entry('F32', [1], [8, 12])}}`;
      const err = expectCode(file(header, 12), 'SAFETENSORS_OFFSETS');
      expect(err.message).toContain('tensor "b"');
      expect(err.message).toContain('gap of 4 bytes after tensor "a"');
      expect(err.pointer).toBe(String(8 + header.indexOf('"b"')));
    });

    it('an overlap', () => {
      const header = `{"a":${entry('F32', [2], [0, 8])},"b":${entry('F32', [2], [4, 12])}}`;
      const err = expectCode(file(header, 12), 'SAFETENSORS_OFFSETS');
      expect(err.message).toContain('overlaps tensor "a"');
    });

    it('two tensors on the same bytes', () => {
      const header = `{"a":${entry('F32', [1], [0, 4])},"b":${entry('F32', [1], [0, 4])}}`;
      expectCode(file(header, 4), 'SAFETENSORS_OFFSETS');
    });

    it('beyond the file', () => {
      const header = `{"a":${entry('F32', [1], [0, 4])},"b":${entry('F32', [4], [4, 20])}}`;
      const err = expectCode(file(header, 12), 'SAFETENSORS_OFFSETS');
      expect(err.message).toContain('tensor "b"');
      expect(err.message).toContain('runs past the end of the file');
    });
  });

  describe('byte length', () => {
    it('differs from shape × dtype size', () => {
      const err = expectCode(one(entry('F32', [2, 3], [0, 20]), 20), 'SAFETENSORS_SIZE');
      expect(err.message).toContain('needs 24 bytes');
      expect(err.message).toContain('hold 20');
    });

    it('BF16 counted as 2 bytes, F8 as 1', () => {
      expectCode(one(entry('BF16', [4], [0, 16]), 16), 'SAFETENSORS_SIZE');
      expectCode(one(entry('F8_E4M3', [4], [0, 8]), 8), 'SAFETENSORS_SIZE');
    });

    it('F4 with an odd element count', () => {
      const err = expectCode(one(entry('F4', [3], [0, 2]), 2), 'SAFETENSORS_SIZE');
      expect(err.message).toContain('not a whole number of bytes');
      expectCode(one(entry('F4', [1], [0, 0])), 'SAFETENSORS_SIZE');
    });

    it('F6 whose bits are not whole bytes', () => {
      expectCode(one(entry('F6_E3M2', [3], [0, 2]), 2), 'SAFETENSORS_SIZE');
      expectCode(one(entry('F6_E2M3', [2, 3], [0, 4]), 4), 'SAFETENSORS_SIZE');
    });

    it('element counts that overflow 64 bits', () => {
      const max = Number.MAX_SAFE_INTEGER;
      expectCode(one(entry('F32', [max, max], [0, 4])), 'SAFETENSORS_SIZE');
      expectCode(
        one(entry('U8', new Array<number>(SAFETENSORS_MAX_RANK).fill(max), [0, 4])),
        'SAFETENSORS_SIZE',
      );
      // 2^62 elements fit, 2^62 F32 elements are 2^67 bits, which do not
      expectCode(one(entry('F32', [2 ** 31, 2 ** 31], [0, 4])), 'SAFETENSORS_SIZE');
    });

    it('a product that fits in 64 bits but whose bytes do not match', () => {
      expectCode(one(entry('U8', [2 ** 31, 2 ** 31], [0, 4]), 4), 'SAFETENSORS_SIZE');
    });
  });

  describe('entry structure', () => {
    it('an entry that is not an object', () => {
      expectCode(one('[1,2]'), 'SAFETENSORS_ENTRY');
      expectCode(one('"F32"'), 'SAFETENSORS_ENTRY');
      expectCode(one('null'), 'SAFETENSORS_ENTRY');
    });

    it('an unknown key in an entry', () => {
      const err = expectCode(
        one('{"dtype":"F32","shape":[1],"data_offsets":[0,4],"offset":0}', 4),
        'SAFETENSORS_ENTRY',
      );
      expect(err.message).toContain('unknown key "offset"');
    });
  });

  describe('duplicate keys', () => {
    it('a duplicate tensor', () => {
      const header = `{"a":${entry('F32', [1], [0, 4])},"a":${entry('F32', [1], [4, 8])}}`;
      const err = expectCode(file(header, 8), 'SAFETENSORS_DUPLICATE_KEY');
      expect(err.message).toContain('duplicate tensor "a"');
      expect(err.pointer).toBe(String(8 + header.lastIndexOf('"a"')));
    });

    it('a duplicate written with an escape', () => {
      const header = `{"ab":${entry('F32', [1], [0, 4])},"a\\u0062":${entry('F32', [1], [4, 8])}}`;
      expectCode(file(header, 8), 'SAFETENSORS_DUPLICATE_KEY');
    });

    it('a duplicate __metadata__', () => {
      const header = '{"__metadata__":{"a":"1"},"__metadata__":{"a":"2"}}';
      const err = expectCode(file(header), 'SAFETENSORS_DUPLICATE_KEY');
      expect(err.message).toContain('"__metadata__"');
    });

    it('a duplicate key inside an entry or the metadata', () => {
      const err = expectCode(
        file('{"t":{"dtype":"F32","dtype":"U8","shape":[1],"data_offsets":[0,4]}}', 4),
        'SAFETENSORS_DUPLICATE_KEY',
      );
      expect(err.message).toContain('in the entry of tensor "t"');
      expectCode(file('{"__metadata__":{"k":"1","k":"2"}}'), 'SAFETENSORS_DUPLICATE_KEY');
    });
  });

  describe('__metadata__', () => {
    it.each([
      ['{"a":1}', 'a number'],
      ['{"a":null}', 'null'],
      ['{"a":["x"]}', 'an array'],
      ['{"a":{"b":"c"}}', 'an object'],
    ])('a non-string value %s', (metadata, kind) => {
      const err = expectCode(file(`{"__metadata__":${metadata}}`), 'SAFETENSORS_METADATA');
      expect(err.message).toContain(kind);
      expect(err.details).toEqual({ key: 'a' });
    });

    it(`allows ${SAFETENSORS_MAX_METADATA_ENTRIES} entries and refuses more`, () => {
      const members = (n: number): string => Array.from({ length: n }, (_, i) => `"k${i}":"v"`).join(',');
      const ok = file(`{"__metadata__":{${members(SAFETENSORS_MAX_METADATA_ENTRIES)}}}`);
      expect(Object.keys(parseSafetensorsHeader(ok, ok.length).metadata ?? {})).toHaveLength(
        SAFETENSORS_MAX_METADATA_ENTRIES,
      );
      const err = expectCode(
        file(`{"__metadata__":{${members(SAFETENSORS_MAX_METADATA_ENTRIES + 1)}}}`),
        'SAFETENSORS_METADATA',
      );
      expect(err.message).toContain('more than');
    });

    it.each(['[]', '"format"', '1', 'false'])('not an object: %s', (metadata) => {
      expectCode(file(`{"__metadata__":${metadata}}`), 'SAFETENSORS_METADATA');
    });

    // the reference Rust crate reads it as an Option<HashMap<String, String>>: null is None
    it('null is no metadata, on the plain and the strict path', () => {
      const plain = `{"__metadata__":null,"a":${entry('F32', [1], [0, 4])}}`;
      const parsed = parseSafetensorsHeader(file(plain, 4), 8 + plain.length + 4);
      expect(parsed.metadata).toBeNull();
      expect(parsed.tensors.map((t) => t.name)).toEqual(['a']);
      // an escape sends the header to the strict parser
      const strict = `{"__metadata__":null,"\\u0061":${entry('F32', [1], [0, 4])}}`;
      const viaStrict = parseSafetensorsHeader(file(strict, 4), 8 + strict.length + 4);
      expect(viaStrict.metadata).toBeNull();
      expect(viaStrict.tensors.map((t) => t.name)).toEqual(['a']);
      expect(
        acceptPlainHeader(`{"__metadata__":null,"a":${entry('F32', [1], [0, 4])}}`, 4)?.metadata,
      ).toBeNull();
      expectCode(file('{"__metadata__":null,"__metadata__":null}'), 'SAFETENSORS_DUPLICATE_KEY');
    });
  });
});

describe('parseSafetensorsHeader: how many tensors and dimensions', () => {
  /** n zero-length F32 tensors of `dims` zero dimensions, each named by its index */
  const tensors = (n: number, dims: number): string => {
    const shape = new Array<string>(dims).fill('0').join(',');
    const entries = new Array<string>(n);
    for (let i = 0; i < n; i++)
      entries[i] = `"${i}t":{"dtype":"F32","shape":[${shape}],"data_offsets":[0,0]}`;
    return `{${entries.join(',')}}`;
  };

  it(`allows ${SAFETENSORS_MAX_TENSORS} tensors and refuses one more, at that entry`, () => {
    const atLimit = tensors(SAFETENSORS_MAX_TENSORS, 1);
    const ok = file(atLimit);
    expect(parseSafetensorsHeader(ok, ok.length).tensors).toHaveLength(SAFETENSORS_MAX_TENSORS);
    const extra = `"${SAFETENSORS_MAX_TENSORS}t":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}`;
    const err = expectCode(file(`${atLimit.slice(0, -1)},${extra}}`), 'SAFETENSORS_TOO_MANY_TENSORS');
    expect(err.message).toContain('more than 300,000 tensors');
    expect(err.pointer).toBe(String(8 + atLimit.length));
  });

  it(`allows ${SAFETENSORS_MAX_DIMENSIONS} dimensions in all and refuses more`, () => {
    const n = SAFETENSORS_MAX_DIMENSIONS / SAFETENSORS_MAX_RANK;
    const ok = file(tensors(n, SAFETENSORS_MAX_RANK));
    expect(parseSafetensorsHeader(ok, ok.length).tensors).toHaveLength(n);
    const err = expectCode(file(tensors(n + 1, SAFETENSORS_MAX_RANK)), 'SAFETENSORS_TOO_MANY_TENSORS');
    expect(err.message).toContain('more than 1,200,000 dimensions');
  });
});

describe('parseSafetensorsHeader: the end of the file', () => {
  it('trailing bytes after the last tensor', () => {
    const header = `{"a":${entry('F32', [1], [0, 4])}}`;
    const err = expectCode(file(header, 5), 'SAFETENSORS_TRAILING');
    expect(err.message).toContain('1 bytes follow the last tensor "a"');
    expect(err.pointer).toBe(String(8 + header.length + 4));
  });

  it('a whole second file appended (a polyglot)', () => {
    const inner = encodeSafetensors([{ name: 'a', dtype: 'U8', shape: [1], data: Uint8Array.of(1) }]);
    const zip = Uint8Array.from([0x50, 0x4b, 0x05, 0x06, ...new Array<number>(18).fill(0)]);
    const both = new Uint8Array(inner.length + zip.length);
    both.set(inner);
    both.set(zip, inner.length);
    expectCode(both, 'SAFETENSORS_TRAILING');
  });

  it('data bytes when there are no tensors', () => {
    const err = expectCode(file('{"__metadata__":{}}', 3), 'SAFETENSORS_TRAILING');
    expect(err.message).toContain('there are no tensors');
  });
});

describe('hostile headers are refused at their first wrong value', () => {
  const MB = 1024 * 1024;
  it.each([
    [
      'ten million dimensions',
      `{"t":{"dtype":"U8","shape":[${'1,'.repeat(10_000_000)}1],"data_offsets":[0,1]}}`,
      'SAFETENSORS_SHAPE',
    ],
    ['a huge value under an unknown key', `{"t":{"x":[${'{},'.repeat(5_000_000)}{}]}}`, 'SAFETENSORS_ENTRY'],
    [
      'millions of empty entries',
      `{${Array.from({ length: 2_000_000 }, (_, i) => `"${i}":{}`).join(',')}}`,
      'SAFETENSORS_DTYPE',
    ],
    [
      'millions of metadata entries',
      `{"__metadata__":{${Array.from({ length: 2_000_000 }, (_, i) => `"${i}":""`).join(',')}}}`,
      'SAFETENSORS_METADATA',
    ],
    ['objects in a shape', `{"t":{"shape":[${'[],'.repeat(5_000_000)}[]]}}`, 'SAFETENSORS_SHAPE'],
  ] as const)('%s', (_what, header, code) => {
    expect(header.length).toBeGreaterThan(10 * MB);
    const bytes = file(header);
    const heapBefore = process.memoryUsage().heapUsed;
    const started = performance.now();
    expectCode(bytes, code);
    expect(performance.now() - started).toBeLessThan(3000);
    // the decoded text itself is ~header.length; the tree built before the refusal must be small
    expect(process.memoryUsage().heapUsed - heapBefore).toBeLessThan(2 * header.length + 64 * MB);
  });
});

describe('byte offsets in pointers count UTF-8 bytes', () => {
  it('after a multi-byte tensor name', () => {
    const header = `{"é😀":${entry('F32', [1], [0, 4])},"x":${entry('f32', [1], [4, 8])}}`;
    const err = expectCode(file(header, 8), 'SAFETENSORS_DTYPE');
    const bytesBefore = encoder.encode(header.slice(0, header.indexOf('"f32"'))).length;
    expect(err.pointer).toBe(String(8 + bytesBefore));
  });
});

describe('files', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'codi-safetensors-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const tensors: SafetensorsTensorInput[] = [
    {
      name: 'base_model.model.a.lora_A.weight',
      dtype: 'F32',
      shape: [2, 3],
      data: new Uint8Array(24).map((_, i) => i),
    },
    { name: 'b', dtype: 'BF16', shape: [5], data: new Uint8Array(10).fill(0xab) },
    { name: 'f4', dtype: 'F4', shape: [2, 3], data: Uint8Array.of(1, 2, 3) },
    { name: 'empty', dtype: 'I64', shape: [0, 7], data: new Uint8Array(0) },
    { name: 'scalar', dtype: 'U8', shape: [], data: Uint8Array.of(9) },
    { name: '名前', dtype: 'F8_E5M2', shape: [3], data: Uint8Array.of(7, 8, 9) },
  ];

  it('round-trips write → read, header padded with spaces to 8 bytes like the Rust crate', async () => {
    const path = join(dir, 'round-trip.safetensors');
    // JSON.parse makes `__proto__` an own key, as a header would
    const metadata = JSON.parse('{"format":"pt","__proto__":"kept"}') as Record<string, string>;
    const written = await writeSafetensors(path, tensors, metadata);
    const header = await readSafetensorsHeader(path);
    expect(header).toEqual(written);
    expect(header.headerLength % 8).toBe(0);
    expect(header.fileSize).toBe((await stat(path)).size);
    expect(header.tensors.map((t) => [t.name, t.dtype, t.shape])).toEqual(
      tensors.map((t) => [t.name, t.dtype, t.shape]),
    );
    expect(Object.entries(header.metadata ?? {})).toEqual([
      ['format', 'pt'],
      ['__proto__', 'kept'],
    ]);

    const raw = await readFile(path);
    const text = raw.subarray(8, header.dataOffset).toString('utf8');
    expect(text.startsWith('{"__metadata__":{"format":"pt","__proto__":"kept"},')).toBe(true);
    expect(text).toMatch(/} *$/);
    expect(Buffer.byteLength(text.trimEnd())).toBeGreaterThan(header.headerLength - 8);

    for (const [i, info] of header.tensors.entries()) {
      expect(await readTensorBytes(path, header, info)).toEqual(tensors[i]?.data);
    }
    expect(encodeSafetensors(tensors, metadata)).toEqual(new Uint8Array(raw));
  });

  it('reads tensors through an open handle and streams them in bounded chunks', async () => {
    const path = join(dir, 'stream.safetensors');
    const data = new Uint8Array(10_000).map((_, i) => i * 7);
    const header = await writeSafetensors(path, [{ name: 'big', dtype: 'U8', shape: [10_000], data }]);
    const info = header.tensors[0];
    if (info === undefined) throw new Error('no tensor');
    const handle = await RegularFile.open(path);
    try {
      expect(await readTensorBytes(handle, header, info)).toEqual(data);
      const chunks: Uint8Array[] = [];
      for await (const chunk of streamTensorBytes(handle, header, info, 4096)) chunks.push(chunk);
      expect(chunks.map((c) => c.length)).toEqual([4096, 4096, 1808]);
      expect(Buffer.concat(chunks)).toEqual(Buffer.from(data));
    } finally {
      await handle.close();
    }
    const chunks: Uint8Array[] = [];
    for await (const chunk of streamTensorBytes(path, header, info)) chunks.push(chunk);
    expect(Buffer.concat(chunks)).toEqual(Buffer.from(data));
  });

  it('says the file is truncated when it shrank after the header was read', async () => {
    const path = join(dir, 'shrinks.safetensors');
    const header = await writeSafetensors(path, [
      { name: 't', dtype: 'U8', shape: [100], data: new Uint8Array(100) },
    ]);
    await truncate(path, header.fileSize - 10);
    const info = header.tensors[0];
    if (info === undefined) throw new Error('no tensor');
    await expect(readTensorBytes(path, header, info)).rejects.toMatchObject({
      code: 'SAFETENSORS_TRUNCATED',
    });
    const consume = async (): Promise<void> => {
      for await (const _chunk of streamTensorBytes(path, header, info, 16)) {
        // drain
      }
    };
    await expect(consume()).rejects.toMatchObject({ code: 'SAFETENSORS_TRUNCATED' });
    await expect(readSafetensorsHeader(path)).rejects.toMatchObject({ code: 'SAFETENSORS_OFFSETS' });
  });

  it('refuses to read a tensor outside the data section', async () => {
    const path = join(dir, 'bounds.safetensors');
    const header = await writeSafetensors(path, [
      { name: 't', dtype: 'U8', shape: [4], data: new Uint8Array(4) },
    ]);
    await expect(
      readTensorBytes(path, header, { name: 'x', dtype: 'U8', shape: [8], begin: 0, end: 8 }),
    ).rejects.toMatchObject({ code: 'SAFETENSORS_OFFSETS' });
  });

  it('reads the bad inputs from disk with the same codes', async () => {
    const cases: [string, Uint8Array, string][] = [
      ['empty', new Uint8Array(0), 'SAFETENSORS_TRUNCATED'],
      ['seven', new Uint8Array(7), 'SAFETENSORS_TRUNCATED'],
      ['zero', file('', 8), 'SAFETENSORS_HEADER_LENGTH'],
      ['max', file('{}', 0, 2n ** 64n - 1n), 'SAFETENSORS_HEADER_LENGTH'],
      ['past', file('{}', 0, 1000n), 'SAFETENSORS_HEADER_LENGTH'],
      ['trailing', file(`{"a":${entry('U8', [1], [0, 1])}}`, 2), 'SAFETENSORS_TRAILING'],
    ];
    for (const [name, bytes, code] of cases) {
      const path = join(dir, `${name}.safetensors`);
      await writeFile(path, bytes);
      await expect(readSafetensorsHeader(path), name).rejects.toMatchObject({
        code,
        exitCode: ExitCode.INVALID,
      });
    }
  });

  it('turns file-system errors into environment errors (exit 3)', async () => {
    await expect(readSafetensorsHeader(join(dir, 'missing.safetensors'))).rejects.toMatchObject({
      code: 'PATH_MISSING',
      exitCode: ExitCode.ENVIRONMENT,
    });
    const sub = join(dir, 'a-directory');
    await mkdir(sub);
    await expect(readSafetensorsHeader(sub)).rejects.toMatchObject({ exitCode: ExitCode.ENVIRONMENT });
  });

  it('does not hang on a FIFO', async () => {
    const fifo = join(dir, 'fifo.safetensors');
    try {
      execFileSync('mkfifo', [fifo]);
    } catch {
      return; // no mkfifo here: nothing to test
    }
    await expect(readSafetensorsHeader(fifo)).rejects.toMatchObject({
      code: 'PATH_INACCESSIBLE',
      exitCode: ExitCode.ENVIRONMENT,
    });
  });

  it('refuses to write what it would refuse to read, and leaves nothing behind', async () => {
    const path = join(dir, 'refused.safetensors');
    const bad: [SafetensorsTensorInput[], string][] = [
      [[{ name: 'a', dtype: 'F32', shape: [2], data: new Uint8Array(4) }], 'SAFETENSORS_SIZE'],
      [[{ name: 'a', dtype: 'F4', shape: [3], data: new Uint8Array(2) }], 'SAFETENSORS_SIZE'],
      [
        [
          { name: 'a', dtype: 'U8', shape: [1], data: new Uint8Array(1) },
          { name: 'a', dtype: 'U8', shape: [1], data: new Uint8Array(1) },
        ],
        'SAFETENSORS_DUPLICATE_KEY',
      ],
      [[{ name: '__metadata__', dtype: 'U8', shape: [1], data: new Uint8Array(1) }], 'SAFETENSORS_ENTRY'],
      [[{ name: 'x\ud800', dtype: 'U8', shape: [1], data: new Uint8Array(1) }], 'SAFETENSORS_ENTRY'],
      [[{ name: 'a', dtype: 'f32' as 'F32', shape: [1], data: new Uint8Array(4) }], 'SAFETENSORS_DTYPE'],
      [[{ name: 'a', dtype: 'U8', shape: [-1], data: new Uint8Array(0) }], 'SAFETENSORS_SHAPE'],
      [[{ name: 'a', dtype: 'U8', shape: [1.5], data: new Uint8Array(0) }], 'SAFETENSORS_SHAPE'],
    ];
    for (const [input, code] of bad) {
      await expect(writeSafetensors(path, input)).rejects.toMatchObject({ code });
    }
    await expect(writeSafetensors(path, [], { k: 1 as unknown as string })).rejects.toMatchObject({
      code: 'SAFETENSORS_METADATA',
    });
    expect((await readdir(dir)).filter((f) => f.includes('refused'))).toEqual([]);
  });

  it('reports a folder it cannot write to as an environment error', async () => {
    await expect(writeSafetensors(join(dir, 'no-such-folder', 'x.safetensors'), [])).rejects.toMatchObject({
      code: 'PATH_MISSING',
      file: join(dir, 'no-such-folder'),
      exitCode: ExitCode.ENVIRONMENT,
    });
  });

  it('replaces an existing file', async () => {
    const path = join(dir, 'replace.safetensors');
    await writeSafetensors(path, [{ name: 'old', dtype: 'U8', shape: [1], data: Uint8Array.of(1) }]);
    await writeSafetensors(path, [{ name: 'new', dtype: 'U8', shape: [2], data: Uint8Array.of(1, 2) }]);
    expect((await readSafetensorsHeader(path)).tensors.map((t) => t.name)).toEqual(['new']);
    expect((await readdir(dir)).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });
});

describe('large files: only the header is read', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'codi-safetensors-large-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('parses a sparse 4 GiB file quickly, reading a few hundred bytes', async () => {
    const path = join(dir, 'huge.safetensors');
    const gib4 = 4 * 1024 ** 3;
    const header = `{"__metadata__":{"format":"pt"},"w":${entry('F32', [1024, 1024, 1024], [0, gib4])}}`;
    const prefix = file(header);
    await writeFile(path, prefix);
    await truncate(path, prefix.length + gib4);

    const readBefore = bytesReadByThisProcess();
    const heapBefore = process.memoryUsage().arrayBuffers;
    const started = performance.now();
    const parsed = await readSafetensorsHeader(path);
    const elapsed = performance.now() - started;
    const readAfter = bytesReadByThisProcess();

    expect(parsed.fileSize).toBe(prefix.length + gib4);
    expect(parsed.tensors[0]).toMatchObject({ name: 'w', begin: 0, end: gib4 });
    expect(elapsed).toBeLessThan(1000);
    expect(process.memoryUsage().arrayBuffers - heapBefore).toBeLessThan(64 * 1024 ** 2);
    if (readBefore !== undefined && readAfter !== undefined) {
      // rchar counts every byte this process read; the header is ~100 bytes, allow for other reads
      expect(readAfter - readBefore).toBeLessThan(1024 ** 2);
    }
  });
});

/** Bytes read by read(2) and friends so far (Linux), or undefined where /proc is missing. */
function bytesReadByThisProcess(): number | undefined {
  try {
    const io = readFileSync('/proc/self/io', 'utf8');
    const match = /^rchar:\s*(\d+)/m.exec(io);
    return match?.[1] === undefined ? undefined : Number(match[1]);
  } catch {
    return undefined;
  }
}

describe('atomic write survives a kill midway', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'codi-safetensors-kill-'));
    await buildStandaloneWriter(join(dir, 'lib'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('leaves a whole file, old or new and never a part, when killed mid-write', async () => {
    const target = join(dir, 'adapter_model.safetensors');
    const child = spawn(process.execPath, [join(dir, 'lib', 'child.mjs'), target], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const exited = new Promise<void>((done) => {
      child.on('exit', () => {
        done();
      });
    });
    try {
      await new Promise<void>((ready, fail) => {
        child.stdout.on('data', (chunk: Buffer) => {
          if (chunk.toString().includes('ready')) ready();
        });
        child.on('exit', () => {
          fail(new Error('writer exited early'));
        });
      });
      const deadline = Date.now() + 20_000;
      let sawTemp = false;
      while (!sawTemp && Date.now() < deadline) {
        sawTemp = (await readdir(dir)).some(
          (f) => f.startsWith('.adapter_model.safetensors.') && f.endsWith('.tmp'),
        );
      }
      child.kill('SIGKILL');
      await exited;
      expect(sawTemp).toBe(true);
    } finally {
      child.kill('SIGKILL');
    }
    // whichever write got renamed last, the file is whole and valid, never a part of the new one
    const header = await readSafetensorsHeader(target);
    expect(['old', 'new']).toContain(header.tensors[0]?.name);
    expect(header.fileSize).toBe((await stat(target)).size);
  }, 30_000);
});

/**
 * A plain node child running the built writer (test/global-setup.ts keeps dist/ current), writing
 * the same big file over and over.
 */
async function buildStandaloneWriter(out: string): Promise<void> {
  await mkdir(out, { recursive: true });
  const writerUrl = new URL('../../dist/files/safetensors.js', import.meta.url).href;
  await writeFile(
    join(out, 'child.mjs'),
    [
      `import { writeSafetensors } from '${writerUrl}';`,
      'const target = process.argv[2];',
      "await writeSafetensors(target, [{ name: 'old', dtype: 'U8', shape: [8], data: new Uint8Array(8).fill(1) }]);",
      "process.stdout.write('ready\\n');",
      'const big = new Uint8Array(32 * 1024 * 1024).fill(7);',
      "for (;;) await writeSafetensors(target, [{ name: 'new', dtype: 'U8', shape: [big.length], data: big }]);",
      '',
    ].join('\n'),
  );
}
