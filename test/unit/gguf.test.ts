import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { RegularFile } from '../../src/byte-source.js';
import { CodiError } from '../../src/errors.js';
import { FormatError } from '../../src/formats/format-error.js';
import {
  GgmlType,
  GgufValueType,
  ggmlTensorBytes,
  ggmlTypeByName,
  ggmlTypeInfo,
  gv,
  type GgufArray,
  type GgufTypedValue,
} from '../../src/formats/ggml-types.js';
import {
  getArray,
  getBool,
  getF32,
  getNumber,
  getString,
  getStringArray,
  getU32,
  getU64,
  neFromTorchShape,
  requireString,
  torchShape,
  type GgufFile,
  type GgufReadOptions,
} from '../../src/formats/gguf.js';
import { readGgufHeader, readTensorData, readTensorF32 } from '../../src/files/gguf.js';
import { GgufWriter, writeGguf, type GgufTensorSpec } from '../../src/files/gguf-writer.js';
import {
  bf16ToF32,
  dequantizeQ8_0,
  f16ToF32,
  f32ToBf16,
  f32ToF16,
  quantizeQ8_0,
} from '../../src/formats/numeric.js';
import { Rng } from '../../src/testkit/rng.js';
import { rejected } from '../helpers/errors.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'codi-gguf-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

let counter = 0;
const tmp = (name = 'f.gguf'): string => join(dir, `${counter++}-${name}`);

/** Rejects with a CodiError whose code is `code`; returns it. */
async function codiError(p: Promise<unknown>, code?: string | RegExp): Promise<CodiError> {
  const e = await rejected(p);
  if (typeof code === 'string') expect(e.code, e.message).toBe(code);
  else if (code) expect(e.code, e.message).toMatch(code);
  return e;
}

const ALL_VALUES: [string, GgufTypedValue][] = [
  ['t.u8', gv.u8(255)],
  ['t.i8', gv.i8(-128)],
  ['t.u16', gv.u16(65535)],
  ['t.i16', gv.i16(-32768)],
  ['t.u32', gv.u32(0xffffffff)],
  ['t.i32', gv.i32(-0x80000000)],
  ['t.f32', gv.f32(1.5)],
  ['t.bool.true', gv.bool(true)],
  ['t.bool.false', gv.bool(false)],
  ['t.str', gv.str('héllo ✓ 𝄞')],
  ['t.str.empty', gv.str('')],
  ['t.u64', gv.u64(0xffffffffffffffffn)],
  ['t.i64', gv.i64(-0x8000000000000000n)],
  ['t.f64', gv.f64(Math.PI)],
  ['a.u8', gv.array(GgufValueType.UINT8, Uint8Array.from([0, 1, 255]))],
  ['a.i8', gv.array(GgufValueType.INT8, Int8Array.from([-128, 0, 127]))],
  ['a.u16', gv.array(GgufValueType.UINT16, Uint16Array.from([0, 65535]))],
  ['a.i16', gv.array(GgufValueType.INT16, Int16Array.from([-32768, 32767]))],
  ['a.u32', gv.array(GgufValueType.UINT32, Uint32Array.from([0, 0xffffffff]))],
  ['a.i32', gv.i32s([-1, 0, 1, 0x7fffffff])],
  ['a.f32', gv.f32s([0.5, -2, Infinity])],
  ['a.bool', gv.array(GgufValueType.BOOL, [true, false, true])],
  ['a.str', gv.strings(['a', '', 'Ġthe', '日本'])],
  ['a.u64', gv.array(GgufValueType.UINT64, BigUint64Array.from([0n, 0xffffffffffffffffn]))],
  ['a.i64', gv.array(GgufValueType.INT64, BigInt64Array.from([-1n, 0x7fffffffffffffffn]))],
  ['a.f64', gv.array(GgufValueType.FLOAT64, Float64Array.from([Math.E, -0]))],
  ['a.empty', gv.array(GgufValueType.STRING, [])],
  [
    'a.nested',
    gv.array(GgufValueType.ARRAY, [
      { itemType: GgufValueType.INT32, items: Int32Array.from([1, 2]) },
      { itemType: GgufValueType.STRING, items: ['x', 'y'] },
    ]),
  ],
];

function sameItems(a: GgufArray, b: GgufArray): void {
  expect(b.itemType).toBe(a.itemType);
  expect(b.items.length).toBe(a.items.length);
  for (let i = 0; i < a.items.length; i++) {
    const x = a.items[i];
    const y = b.items[i];
    if (typeof x === 'object') sameItems(x, y as GgufArray);
    else expect(y).toEqual(x);
  }
}

const rng = new Rng(42);
const F32_DATA = rng.normals(64 * 3, 1);
const Q8_DATA = rng.normals(64 * 2, 0.1);
const I32_RAW = new Uint8Array(Int32Array.from([1, -2, 3]).buffer);
const TENSORS: GgufTensorSpec[] = [
  { name: 'w.f32', ne: [64, 3], type: GgmlType.F32 },
  { name: 'w.f16', ne: [64, 3], type: GgmlType.F16 },
  { name: 'w.bf16', ne: [64, 3], type: GgmlType.BF16 },
  { name: 'w.q8_0', ne: [64, 2], type: GgmlType.Q8_0 },
  { name: 'w.i32', ne: [3], type: GgmlType.I32 },
  { name: 'w.empty', ne: [0, 4], type: GgmlType.F32 },
];

async function writeSample(path: string, alignment?: number): Promise<void> {
  await writeGguf(
    path,
    { metadata: ALL_VALUES, tensors: TENSORS, ...(alignment ? { alignment } : {}) },
    (t) => {
      switch (t.name) {
        case 'w.q8_0':
          return Q8_DATA;
        case 'w.i32':
          return I32_RAW;
        case 'w.empty':
          return new Float32Array(0);
        default:
          return F32_DATA;
      }
    },
  );
}

describe('ggml types', () => {
  it('knows the sizes of base-model tensor types', () => {
    expect(ggmlTypeInfo(GgmlType.Q8_0)).toMatchObject({ name: 'q8_0', blockSize: 32, typeSize: 34 });
    expect(ggmlTypeInfo(GgmlType.Q4_K)).toMatchObject({ name: 'q4_K', blockSize: 256, typeSize: 144 });
    expect(ggmlTypeInfo(GgmlType.Q6_K)).toMatchObject({ blockSize: 256, typeSize: 210 });
    expect(ggmlTypeInfo(GgmlType.BF16)).toMatchObject({ blockSize: 1, typeSize: 2 });
    expect(ggmlTypeInfo(4)).toBeUndefined(); // removed Q4_2
    expect(ggmlTypeByName('Q8_0')?.id).toBe(8);
    expect(ggmlTensorBytes(GgmlType.Q4_K, [1536, 8960])).toBe((1536 / 256) * 144 * 8960);
    expect(ggmlTensorBytes(GgmlType.Q8_0, [33, 2])).toBeUndefined();
  });
});

describe('GGUF write → read round trip', () => {
  let path: string;
  let file: GgufFile;
  beforeAll(async () => {
    path = tmp();
    await writeSample(path);
    file = await readGgufHeader(path);
  });

  it('keeps every metadata value type, arrays and nested arrays included', () => {
    expect(file.version).toBe(3);
    expect([...file.metadata.keys()]).toEqual(ALL_VALUES.map(([k]) => k));
    for (const [key, tv] of ALL_VALUES) {
      const kv = file.metadata.get(key);
      expect(kv?.type, key).toBe(tv.type);
      if (typeof tv.value === 'object') sameItems(tv.value, kv?.value as GgufArray);
      else expect(kv?.value, key).toEqual(tv.value);
    }
  });

  it('typed getters check the type', async () => {
    expect(getString(file, 't.str')).toBe('héllo ✓ 𝄞');
    expect(getU32(file, 't.u32')).toBe(0xffffffff);
    expect(getU64(file, 't.u64')).toBe(0xffffffffffffffffn);
    expect(getF32(file, 't.f32')).toBe(1.5);
    expect(getBool(file, 't.bool.true')).toBe(true);
    expect(getNumber(file, 't.i16')).toBe(-32768);
    expect(getStringArray(file, 'a.str')).toEqual(['a', '', 'Ġthe', '日本']);
    expect(getArray(file, 'a.f32')?.items).toBeInstanceOf(Float32Array);
    expect(getString(file, 'no.such.key')).toBeUndefined();
    expect(() => getU32(file, 't.str')).toThrow(/expected uint32/);
    expect(() => getNumber(file, 't.u64')).toThrow(FormatError);
    expect(() => getStringArray(file, 'a.i32')).toThrow(/array of strings/);
    await codiError(
      Promise.resolve().then(() => requireString(file, 'missing')),
      'GGUF_KEY_MISSING',
    );
  });

  it('lays tensors out aligned, in order, and reads their data back', async () => {
    expect(file.alignment).toBe(32);
    expect(file.dataOffset % 32).toBe(0);
    let expected = 0;
    for (const [i, t] of file.tensors.entries()) {
      const spec = TENSORS[i];
      expect(t.name).toBe(spec?.name);
      expect(t.ne).toEqual(spec?.ne);
      expect(t.type).toBe(spec?.type);
      expect(t.offset).toBe(expected);
      expect(t.offset % 32).toBe(0);
      expected += Math.ceil(t.nBytes / 32) * 32;
    }
    expect(torchShape(file.tensorsByName.get('w.f32') ?? { ne: [] })).toEqual([3, 64]);
    expect(neFromTorchShape([3, 64])).toEqual([64, 3]);
    expect(await readTensorF32(path, file, 'w.f32')).toEqual(F32_DATA);
    expect(await readTensorF32(path, file, 'w.f16')).toEqual(f16ToF32(f32ToF16(F32_DATA)));
    expect(await readTensorF32(path, file, 'w.bf16')).toEqual(bf16ToF32(f32ToBf16(F32_DATA)));
    expect(await readTensorData(path, file, 'w.q8_0')).toEqual(quantizeQ8_0(Q8_DATA));
    expect(await readTensorF32(path, file, 'w.q8_0')).toEqual(dequantizeQ8_0(quantizeQ8_0(Q8_DATA)));
    expect(await readTensorData(path, file, 'w.i32')).toEqual(I32_RAW);
    expect((await readTensorData(path, file, 'w.empty')).length).toBe(0);
    await codiError(readTensorData(path, file, 'nope'), 'GGUF_TENSOR_MISSING');
  });

  it('is byte-identical when written twice', async () => {
    const again = tmp();
    await writeSample(again);
    expect(Buffer.compare(await readFile(path), await readFile(again))).toBe(0);
  });

  it('honours a custom alignment and writes general.alignment', async () => {
    const p = tmp();
    await writeSample(p, 128);
    const f = await readGgufHeader(p);
    expect(f.alignment).toBe(128);
    expect(getU32(f, 'general.alignment')).toBe(128);
    expect(f.dataOffset % 128).toBe(0);
    for (const t of f.tensors) expect(t.offset % 128).toBe(0);
    expect(await readTensorF32(p, f, 'w.bf16')).toEqual(bf16ToF32(f32ToBf16(F32_DATA)));
  });

  it('streams a tensor given as chunks (sync and async iterables)', async () => {
    const p = tmp();
    const big = new Rng(1).normals(32 * 1000, 1);
    const tensors: GgufTensorSpec[] = [
      { name: 'a', ne: [32, 1000], type: GgmlType.Q8_0 },
      { name: 'b', ne: [32, 1000], type: GgmlType.F16 },
    ];
    async function* chunks(): AsyncIterable<Float32Array> {
      for (let i = 0; i < 1000; i += 100) {
        await Promise.resolve();
        yield big.subarray(i * 32, (i + 100) * 32);
      }
    }
    const res = await writeGguf(p, { metadata: [], tensors }, (t) =>
      t.name === 'a' ? chunks() : [big.subarray(0, 16000), big.subarray(16000)],
    );
    expect(res.tensors.map((t) => t.nBytes)).toEqual([34 * 1000, 64000]);
    const f = await readGgufHeader(p);
    expect(await readTensorData(p, f, 'a')).toEqual(quantizeQ8_0(big));
    expect(await readTensorF32(p, f, 'b')).toEqual(f16ToF32(f32ToF16(big)));
    expect((await stat(p)).size).toBe(res.bytes);
  });
});

describe('GGUF writer safety', () => {
  const specs: GgufTensorSpec[] = [
    { name: 'a', ne: [32, 2], type: GgmlType.F32 },
    { name: 'b', ne: [32, 2], type: GgmlType.F32 },
  ];
  const tempFiles = async (): Promise<string[]> => (await readdir(dir)).filter((n) => n.endsWith('.tmp'));

  it('copies tensor data straight from a file range, showing every byte read in order', async () => {
    // 3 MiB tensors: each range spans several of the writer's 1 MiB buffers
    const big: GgufTensorSpec[] = [
      { name: 'x', ne: [1024, 768], type: GgmlType.F32 },
      { name: 'y', ne: [1024, 768], type: GgmlType.F32 },
    ];
    const source = tmp('source.bin');
    const rng = new Rng(7);
    const bytes = new Uint8Array(2 * 3 * 1024 * 1024 + 100);
    for (let i = 0; i < bytes.length; i++) bytes[i] = rng.int(256);
    await writeFile(source, bytes);
    const fh = await RegularFile.open(source);
    const seen: Uint8Array[] = [];
    const p = tmp();
    try {
      await writeGguf(p, { metadata: [], tensors: big }, (_t, i) => ({
        file: fh,
        position: 100 + i * 3 * 1024 * 1024,
        length: 3 * 1024 * 1024,
        failure: () => new Error('unexpected'),
        onBytes: (b) => seen.push(b.slice()),
      }));
    } finally {
      await fh.close();
    }
    const f = await readGgufHeader(p);
    const x = await readTensorData(p, f, 'x');
    const y = await readTensorData(p, f, 'y');
    expect(Buffer.from(x).equals(Buffer.from(bytes.subarray(100, 100 + 3 * 1024 * 1024)))).toBe(true);
    expect(Buffer.from(y).equals(Buffer.from(bytes.subarray(100 + 3 * 1024 * 1024)))).toBe(true);
    expect(Buffer.concat(seen).equals(Buffer.from(bytes.subarray(100)))).toBe(true);
  });

  it('a file range the file no longer holds, or of the wrong length, fails and writes nothing', async () => {
    const source = tmp('short.bin');
    await writeFile(source, new Uint8Array(300));
    const fh = await RegularFile.open(source);
    const closed = await RegularFile.open(source);
    await closed.close();
    const p = tmp();
    await writeFile(p, 'previous content');
    try {
      await expect(
        writeGguf(p, { metadata: [], tensors: specs }, () => ({
          file: fh,
          position: 200,
          length: 256,
          failure: (cause) => new Error(cause === null ? 'source shrank' : 'read failed'),
        })),
      ).rejects.toThrow('source shrank');
      await codiError(
        writeGguf(p, { metadata: [], tensors: specs }, () => ({
          file: fh,
          position: 0,
          length: 255,
          failure: () => new Error('unexpected'),
        })),
        'GGUF_WRITE_INVALID',
      );
      await expect(
        writeGguf(p, { metadata: [], tensors: specs }, () => ({
          file: closed,
          position: 0,
          length: 256,
          failure: (cause) => new Error(cause === null ? 'source shrank' : 'read failed'),
        })),
      ).rejects.toThrow('read failed');
    } finally {
      await fh.close();
    }
    expect(await readFile(p, 'utf8')).toBe('previous content');
    expect(await tempFiles()).toEqual([]);
  });

  it('leaves an existing file untouched and no temp file when the data fails midway', async () => {
    const p = tmp();
    await writeFile(p, 'previous content');
    await expect(
      writeGguf(p, { metadata: [['k', gv.str('v')]], tensors: specs }, function* (t) {
        if (t.name === 'b') throw new Error('source died');
        yield new Float32Array(64);
      }),
    ).rejects.toThrow('source died');
    expect(await readFile(p, 'utf8')).toBe('previous content');
    expect(await tempFiles()).toEqual([]);
  });

  it('refuses wrong sizes, order, types and declarations, cleaning up', async () => {
    const p = tmp();
    await codiError(
      writeGguf(p, { metadata: [], tensors: specs }, () => new Float32Array(63)),
      'GGUF_WRITE_INVALID',
    );
    await codiError(
      writeGguf(p, { metadata: [], tensors: specs }, () => new Float32Array(65)),
      'GGUF_WRITE_INVALID',
    );
    const w = await GgufWriter.create(p, { metadata: [], tensors: specs });
    await codiError(w.writeTensor('b', new Float32Array(64)), 'GGUF_WRITE_INVALID');
    await codiError(
      writeGguf(
        p,
        { metadata: [], tensors: [{ name: 'q', ne: [33], type: GgmlType.Q8_0 }] },
        () => new Float32Array(33),
      ),
      'GGUF_WRITE_INVALID',
    );
    await codiError(
      writeGguf(
        p,
        { metadata: [], tensors: [{ name: 'q', ne: [32], type: GgmlType.Q4_K }] },
        () => new Float32Array(32),
      ),
      'GGUF_WRITE_INVALID',
    );
    await codiError(
      GgufWriter.create(p, { metadata: [['k', gv.u8(256)]], tensors: [] }),
      'GGUF_WRITE_INVALID',
    );
    await codiError(
      GgufWriter.create(p, {
        metadata: [
          ['k', gv.u8(1)],
          ['k', gv.u8(1)],
        ],
        tensors: [],
      }),
      'GGUF_WRITE_INVALID',
    );
    await codiError(
      GgufWriter.create(p, {
        metadata: [],
        tensors: [specs[0] as GgufTensorSpec, specs[0] as GgufTensorSpec],
      }),
      'GGUF_WRITE_INVALID',
    );
    await codiError(GgufWriter.create(p, { metadata: [], tensors: [], alignment: 24 }), 'GGUF_WRITE_INVALID');
    await codiError(
      GgufWriter.create(p, {
        metadata: [],
        tensors: [{ name: 'x'.repeat(64), ne: [1], type: GgmlType.F32 }],
      }),
      'GGUF_WRITE_INVALID',
    );
    const unfinished = await GgufWriter.create(p, { metadata: [], tensors: specs });
    await unfinished.writeTensor('a', new Float32Array(64));
    await codiError(unfinished.finish(), 'GGUF_WRITE_INVALID');
    await expect(stat(p)).rejects.toThrow(/ENOENT/);
    expect(await tempFiles()).toEqual([]);
  });

  it('leaves the target intact when the writing process is killed midway', async () => {
    // a plain node child running the built writer (test/global-setup.ts keeps dist/ current)
    const work = join(dir, 'killed');
    await mkdir(work, { recursive: true });
    const writerUrl = new URL('../../dist/files/gguf-writer.js', import.meta.url).href;
    await writeFile(join(work, 'package.json'), '{"type":"module"}');
    await writeFile(
      join(work, 'driver.js'),
      `import { GgufWriter } from '${writerUrl}';
      const w = await GgufWriter.create(process.argv[2], { metadata: [], tensors: [
        { name: 'a', ne: [1024, 256], type: 0 }, { name: 'b', ne: [1024, 256], type: 0 }] });
      await w.writeTensor('a', new Float32Array(1024 * 256));
      process.stdout.write('halfway\\n');
      setInterval(() => {}, 1000);`,
    );
    const target = join(work, 'out.gguf');
    await writeFile(target, 'previous content');
    const child = spawn(process.execPath, [join(work, 'driver.js'), target], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (d: Buffer) => {
        if (d.toString().includes('halfway')) resolve();
      });
      child.on('exit', (code) => {
        reject(new Error(`driver exited early (${String(code)})`));
      });
    });
    const exited = once(child, 'exit');
    child.kill('SIGKILL');
    await exited;
    expect(await readFile(target, 'utf8')).toBe('previous content');
    const leftovers = (await readdir(work)).filter((n) => n.endsWith('.tmp'));
    // what a killed writer leaves is a hidden temp file beside the target, never the target itself
    expect(leftovers).toEqual([expect.stringMatching(/^\.out\.gguf\.\d+\.[0-9a-f]{12}\.tmp$/)]);
    await rm(work, { recursive: true, force: true });
  });

  it('reports an unwritable target as an environment error', async () => {
    const e = await codiError(
      GgufWriter.create(join(dir, 'no', 'such', 'dir.gguf'), { metadata: [], tensors: [] }),
    );
    expect(e.exitCode).toBe(3);
  });
});

/** Little-endian byte builder for hand-made (hostile) files. */
class Bytes {
  private parts: number[] = [];
  u32(v: number): this {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v >>> 0);
    this.parts.push(...b);
    return this;
  }
  i32(v: number): this {
    const b = Buffer.alloc(4);
    b.writeInt32LE(v);
    this.parts.push(...b);
    return this;
  }
  u64(v: bigint | number): this {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(v));
    this.parts.push(...b);
    return this;
  }
  raw(bytes: ArrayLike<number>): this {
    this.parts.push(...Array.from(bytes));
    return this;
  }
  str(s: string): this {
    const b = Buffer.from(s);
    return this.u64(b.length).raw(b);
  }
  header(nTensors: number | bigint, nKv: number | bigint, version = 3): this {
    return this.raw(Buffer.from('GGUF')).u32(version).u64(nTensors).u64(nKv);
  }
  pad(to: number, size = this.parts.length): this {
    while (this.parts.length < Math.ceil(size / to) * to) this.parts.push(0);
    return this;
  }
  get length(): number {
    return this.parts.length;
  }
  bytes(): Uint8Array {
    return Uint8Array.from(this.parts);
  }
}

/** One key 'k' holding an array of `n` items of `type`, then 1000 zero bytes (claims larger than the file). */
function arrayClaiming(n: bigint, type: number): Uint8Array {
  return new Bytes()
    .header(0, 1)
    .str('k')
    .i32(GgufValueType.ARRAY)
    .i32(type)
    .u64(n)
    .raw(new Uint8Array(1000))
    .bytes();
}

/** One key 'k' holding one array whose own item array claims 10 million arrays, then 1000 zero bytes. */
function nestedArraysClaimingMany(): Uint8Array {
  return new Bytes()
    .header(0, 1)
    .str('k')
    .i32(GgufValueType.ARRAY)
    .i32(GgufValueType.ARRAY)
    .u64(1)
    .i32(GgufValueType.ARRAY)
    .u64(10_000_000)
    .raw(new Uint8Array(1000))
    .bytes();
}

async function readBytes(bytes: Uint8Array, options: GgufReadOptions = {}): Promise<GgufFile> {
  const p = tmp();
  await writeFile(p, bytes);
  return readGgufHeader(p, {}, options);
}

/** What a header says apart from its arrays' items: the scalars, each array's type and size, the tensors. */
function withoutArrayItems(f: GgufFile): unknown {
  const size = (a: GgufArray): number => a.skipped ?? a.items.length;
  return {
    metadata: [...f.metadata.values()].map((kv) =>
      kv.type === GgufValueType.ARRAY
        ? [kv.key, (kv.value as GgufArray).itemType, size(kv.value as GgufArray)]
        : [kv.key, kv.value],
    ),
    tensors: f.tensors,
    dataOffset: f.dataOffset,
  };
}

describe('GGUF reader on bad input', () => {
  it('rejects a bad magic and bad versions', async () => {
    await codiError(readBytes(Buffer.from('GGML\x03\x00\x00\x00')), 'GGUF_MAGIC');
    await codiError(readBytes(Buffer.from('GG')), 'GGUF_MAGIC');
    await codiError(readBytes(new Uint8Array(0)), 'GGUF_MAGIC');
    const v1 = await codiError(readBytes(new Bytes().header(0, 0, 1).bytes()), 'GGUF_VERSION');
    expect(v1.message).toMatch(/version 1/);
    await codiError(readBytes(new Bytes().header(0, 0, 4).bytes()), 'GGUF_VERSION');
    const be = await codiError(readBytes(new Bytes().header(0, 0, 0x03000000).bytes()), 'GGUF_VERSION');
    expect(be.message).toMatch(/big-endian/);
    expect((await readBytes(new Bytes().header(0, 0, 2).bytes())).version).toBe(2);
  });

  it('rejects every truncation of a valid file, and says where', async () => {
    const p = tmp();
    await writeSample(p);
    const full = await readFile(p);
    const file = await readGgufHeader(p);
    const last = file.tensors.reduce((end, t) => Math.max(end, t.dataStart + t.nBytes), 0);
    for (let n = 0; n < full.length; n += n < file.dataOffset ? 1 : 7) {
      const cut = tmp();
      await writeFile(cut, full.subarray(0, n));
      if (n >= last) {
        await readGgufHeader(cut); // only the last tensor's padding is gone: llama.cpp accepts that too
        continue;
      }
      const e = await codiError(readGgufHeader(cut), n < 4 ? 'GGUF_MAGIC' : 'GGUF_TRUNCATED');
      expect(e.pointer).toMatch(/^\d+$/);
      expect(e.message).toMatch(/at byte \d+/);
      expect(e.file).toBe(cut);
    }
  });

  it('fails fast, without allocating, on huge string lengths and counts', async () => {
    const before = process.memoryUsage().arrayBuffers;
    const start = performance.now();
    const filler = new Uint8Array(1000);
    // key length 2^40
    const e1 = await codiError(
      readBytes(
        new Bytes()
          .header(0, 1)
          .u64(2n ** 40n)
          .raw(filler)
          .bytes(),
      ),
      'GGUF_LIMIT',
    );
    expect(e1.message).toMatch(/length of key 0/);
    expect(e1.pointer).toBe('24');
    // a string value of 2^40 bytes
    await codiError(
      readBytes(
        new Bytes()
          .header(0, 1)
          .str('k')
          .i32(GgufValueType.STRING)
          .u64(2n ** 40n)
          .raw(filler)
          .bytes(),
      ),
      'GGUF_LIMIT',
    );
    // within the cap, but longer than the file
    await codiError(
      readBytes(
        new Bytes().header(0, 1).str('k').i32(GgufValueType.STRING).u64(1_000_000).raw(filler).bytes(),
      ),
      'GGUF_TRUNCATED',
    );
    // array count 2^40, and one that fits the cap but not the file
    await codiError(readBytes(arrayClaiming(2n ** 40n, GgufValueType.UINT8)), 'GGUF_LIMIT');
    await codiError(readBytes(arrayClaiming(2n ** 62n, GgufValueType.STRING)), 'GGUF_LIMIT');
    await codiError(readBytes(arrayClaiming(1_000_000n, GgufValueType.UINT64)), 'GGUF_TRUNCATED');
    await codiError(readBytes(arrayClaiming(1_000_000n, GgufValueType.STRING)), 'GGUF_TRUNCATED');
    // nested arrays claiming many items each
    await codiError(readBytes(nestedArraysClaimingMany()), 'GGUF_TRUNCATED');
    // huge key and tensor counts
    await codiError(
      readBytes(
        new Bytes()
          .header(0, 2n ** 60n)
          .raw(filler)
          .bytes(),
      ),
      'GGUF_LIMIT',
    );
    await codiError(
      readBytes(
        new Bytes()
          .header(2n ** 63n, 0)
          .raw(filler)
          .bytes(),
      ),
      'GGUF_LIMIT',
    );
    await codiError(readBytes(new Bytes().header(100_000, 0).raw(filler).bytes()), 'GGUF_TRUNCATED');
    // a tensor name of 2^40 bytes
    await codiError(
      readBytes(
        new Bytes()
          .header(1, 0)
          .u64(2n ** 40n)
          .raw(filler)
          .bytes(),
      ),
      'GGUF_LIMIT',
    );
    expect(performance.now() - start).toBeLessThan(2000);
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(64 * 1024 * 1024);
  });

  it('honours tighter limits', async () => {
    const p = tmp();
    await writeSample(p);
    await codiError(readGgufHeader(p, { maxStringBytes: 4 }), 'GGUF_LIMIT');
    await codiError(readGgufHeader(p, { maxArrayLength: 3 }), 'GGUF_LIMIT');
    await codiError(readGgufHeader(p, { maxArrayDepth: 1 }), 'GGUF_LIMIT');
    await codiError(readGgufHeader(p, { maxMetadataBytes: 100 }), 'GGUF_LIMIT');
    await codiError(readGgufHeader(p, { maxKv: 3 }), 'GGUF_LIMIT');
    await codiError(readGgufHeader(p, { maxTensors: 3 }), 'GGUF_LIMIT');
  });

  const kvFile = (build: (b: Bytes) => Bytes, nKv = 1): Uint8Array =>
    build(new Bytes().header(0, nKv)).bytes();

  it.each<[string, () => Uint8Array, RegExp]>([
    ['an empty key', () => kvFile((b) => b.str('').i32(GgufValueType.UINT8).raw([1])), /key 0 is empty/],
    [
      'a duplicate key',
      () =>
        kvFile(
          (b) => b.str('k').i32(GgufValueType.UINT8).raw([1]).str('k').i32(GgufValueType.UINT8).raw([1]),
          2,
        ),
      /duplicate key 'k'/,
    ],
    [
      'an unknown value type',
      () => kvFile((b) => b.str('k').i32(13).raw([1, 2, 3, 4])),
      /not a GGUF value type/,
    ],
    [
      'a negative value type',
      () => kvFile((b) => b.str('k').i32(-1).raw([1, 2, 3, 4])),
      /not a GGUF value type/,
    ],
    [
      'a key that is not UTF-8',
      () => kvFile((b) => b.u64(2).raw([0xc3, 0x28]).i32(0).raw([1])),
      /not valid UTF-8/,
    ],
    [
      'general.alignment of the wrong type',
      () => kvFile((b) => b.str('general.alignment').i32(GgufValueType.UINT64).u64(32)),
      /must be u32/,
    ],
    [
      'general.alignment not a power of two',
      () => kvFile((b) => b.str('general.alignment').i32(GgufValueType.UINT32).u32(24)),
      /not a power of two/,
    ],
    [
      'general.alignment 0',
      () => kvFile((b) => b.str('general.alignment').i32(GgufValueType.UINT32).u32(0)),
      /power of two/,
    ],
  ])('rejects %s as GGUF_INVALID', async (_name, make, message) => {
    const e = await codiError(readBytes(make()), 'GGUF_INVALID');
    expect(e.message).toMatch(message);
    expect(e.message).toMatch(/at byte \d+/);
  });

  /** a file with the given tensor infos and enough zero data after them */
  const tensorFile = (infos: ((b: Bytes) => Bytes)[], dataBytes = 4096): Uint8Array => {
    const b = new Bytes().header(infos.length, 0);
    for (const info of infos) info(b);
    return b.pad(32).raw(new Uint8Array(dataBytes)).bytes();
  };
  const info =
    (name: string, ne: (number | bigint)[], type: number, offset: number | bigint) =>
    (b: Bytes): Bytes => {
      b.str(name).u32(ne.length);
      for (const d of ne) b.u64(BigInt.asUintN(64, BigInt(d)));
      return b.i32(type).u64(offset);
    };

  it.each<[string, () => Uint8Array, string, RegExp]>([
    ['a valid pair', () => tensorFile([info('a', [8], 0, 0), info('b', [8], 0, 32)]), 'OK', /./],
    [
      'a duplicate tensor',
      () => tensorFile([info('a', [8], 0, 0), info('a', [8], 0, 32)]),
      'GGUF_INVALID',
      /duplicate tensor 'a'/,
    ],
    [
      'a misaligned offset',
      () => tensorFile([info('a', [8], 0, 0), info('b', [8], 0, 40)]),
      'GGUF_INVALID',
      /not aligned to 32/,
    ],
    [
      'overlapping data',
      () => tensorFile([info('a', [16], 0, 0), info('b', [8], 0, 32)]),
      'GGUF_INVALID',
      /overlaps/,
    ],
    ['a gap', () => tensorFile([info('a', [8], 0, 0), info('b', [8], 0, 64)]), 'GGUF_INVALID', /gap/],
    ['5 dims', () => tensorFile([info('a', [1, 1, 1, 1, 1], 0, 0)]), 'GGUF_INVALID', /5 dims/],
    ['a negative dim', () => tensorFile([info('a', [-1n], 0, 0)]), 'GGUF_INVALID', /negative/],
    ['an unknown ggml type', () => tensorFile([info('a', [8], 4, 0)]), 'GGUF_INVALID', /unknown ggml type 4/],
    [
      'a type id past the table',
      () => tensorFile([info('a', [8], 99, 0)]),
      'GGUF_INVALID',
      /unknown ggml type/,
    ],
    [
      'a row that is not whole blocks',
      () => tensorFile([info('a', [33], GgmlType.Q8_0, 0)]),
      'GGUF_INVALID',
      /block size 32/,
    ],
    ['a 64-byte name', () => tensorFile([info('x'.repeat(64), [8], 0, 0)]), 'GGUF_INVALID', /allows 63/],
    [
      'data past the end',
      () => tensorFile([info('a', [4096], 0, 0)], 100),
      'GGUF_TRUNCATED',
      /beyond the end/,
    ],
    [
      'an offset past 2^53',
      () => tensorFile([info('a', [8], 0, 2n ** 60n)]),
      'GGUF_TRUNCATED',
      /beyond the end/,
    ],
    [
      'dims whose product overflows',
      () => tensorFile([info('a', [2n ** 40n, 2n ** 40n], 0, 0)]),
      'GGUF_LIMIT',
      /elements/,
    ],
    ['a dim past 2^53', () => tensorFile([info('a', [2n ** 60n], 0, 0)]), 'GGUF_LIMIT', /too large/],
    ['a dim of exactly 2^53', () => tensorFile([info('a', [2n ** 53n], 0, 0)]), 'GGUF_LIMIT', /too large/],
    [
      'an offset of 2^64−1 (top bit set)',
      () => tensorFile([info('a', [8], 0, 2n ** 64n - 1n)]),
      'GGUF_TRUNCATED',
      /offset 18446744073709551615 lies beyond the end/,
    ],
    [
      'an offset of exactly 2^53',
      () => tensorFile([info('a', [8], 0, 2n ** 53n)]),
      'GGUF_TRUNCATED',
      /offset 9007199254740992 lies beyond the end/,
    ],
  ])('tensor infos: %s', async (_name, make, code, message) => {
    if (code === 'OK') {
      const f = await readBytes(make());
      expect(f.tensors.map((t) => t.name)).toEqual(['a', 'b']);
      return;
    }
    const e = await codiError(readBytes(make()), code);
    expect(e.message).toMatch(message);
  });

  it('reports a missing file as an environment error', async () => {
    const e = await codiError(readGgufHeader(join(dir, 'missing.gguf')), 'PATH_MISSING');
    expect(e.exitCode).toBe(3);
    const d = await codiError(readGgufHeader(dir));
    expect(d.exitCode).toBe(3);
  });

  it('reads a 150k-token vocabulary quickly', async () => {
    const p = tmp();
    const tokens = Array.from({ length: 150_000 }, (_, i) => `tok${i}Ġ`);
    const merges = Array.from({ length: 150_000 }, (_, i) => `a${i} b`);
    await writeGguf(
      p,
      {
        metadata: [
          ['tokenizer.ggml.tokens', gv.strings(tokens)],
          ['tokenizer.ggml.merges', gv.strings(merges)],
          ['tokenizer.ggml.token_type', gv.i32s(new Int32Array(150_000).fill(1))],
        ],
        tensors: [],
      },
      () => new Float32Array(0),
    );
    const start = performance.now();
    const f = await readGgufHeader(p);
    const ms = performance.now() - start;
    expect(getStringArray(f, 'tokenizer.ggml.tokens')?.[149_999]).toBe('tok149999Ġ');
    expect(ms).toBeLessThan(3000);
    // what needs only the shapes (a base model) walks the arrays without reading them
    const skipped = await readGgufHeader(p, {}, { arrays: 'skip' });
    expect(getArray(skipped, 'tokenizer.ggml.tokens')).toEqual({
      itemType: GgufValueType.STRING,
      items: [],
      skipped: 150_000,
    });
    expect(getArray(skipped, 'tokenizer.ggml.token_type')?.skipped).toBe(150_000);
    expect(withoutArrayItems(skipped)).toEqual(withoutArrayItems(f));
  });

  it('skipping arrays walks strings longer than the read window, before and after them', async () => {
    const p = tmp();
    const tokens = Array.from({ length: 3000 }, (_, i) => (i === 1500 ? 'x'.repeat(300 << 10) : `t${i}`));
    await writeGguf(
      p,
      {
        metadata: [
          ['tokenizer.ggml.tokens', gv.strings(tokens)],
          ['after', gv.u32(7)],
        ],
        tensors: [{ name: 't', ne: [4], type: GgmlType.F32 }],
      },
      () => new Float32Array(4),
    );
    const read = await readGgufHeader(p);
    const skipped = await readGgufHeader(p, {}, { arrays: 'skip' });
    expect(getArray(skipped, 'tokenizer.ggml.tokens')?.skipped).toBe(3000);
    expect(getU32(skipped, 'after')).toBe(7);
    expect(withoutArrayItems(skipped)).toEqual(withoutArrayItems(read));
  });

  it('skipping arrays still checks every length against the limits and the end of the file', async () => {
    const filler = new Uint8Array(1000);
    const skip = { arrays: 'skip' } as const;
    await codiError(readBytes(arrayClaiming(2n ** 40n, GgufValueType.UINT8), skip), 'GGUF_LIMIT');
    await codiError(readBytes(arrayClaiming(1_000_000n, GgufValueType.UINT64), skip), 'GGUF_TRUNCATED');
    await codiError(readBytes(arrayClaiming(1_000_000n, GgufValueType.STRING), skip), 'GGUF_TRUNCATED');
    // one string in an array: longer than the cap, then longer than the file
    const oneString = (length: bigint): Uint8Array =>
      new Bytes()
        .header(0, 1)
        .str('k')
        .i32(GgufValueType.ARRAY)
        .i32(GgufValueType.STRING)
        .u64(2)
        .u64(1)
        .raw(Uint8Array.of(0x61))
        .u64(length)
        .raw(filler)
        .bytes();
    const huge = await codiError(readBytes(oneString(2n ** 40n), skip), 'GGUF_LIMIT');
    expect(huge.message).toContain(`length of item 1 of array 'k' is ${2n ** 40n}`);
    expect(huge.pointer).toBe('58');
    const long = await codiError(readBytes(oneString(5000n), skip), 'GGUF_TRUNCATED');
    expect(long.message).toMatch(/item 1 of array 'k' is 5000, but only 1000 bytes are left/);
    // a long array (walked in bulk) with one string over the limit, then one past the end of the file
    const many = (bad: bigint): Uint8Array => {
      const b = new Bytes().header(0, 1).str('k').i32(GgufValueType.ARRAY).i32(GgufValueType.STRING).u64(500);
      for (let i = 0; i < 499; i++) b.str(i === 300 ? '' : 'tok');
      return b
        .u64(bad)
        .raw(Uint8Array.of(1, 2, 3))
        .bytes();
    };
    const limited = await codiError(readBytes(many(2n ** 30n), skip), 'GGUF_LIMIT');
    expect(limited.message).toContain(`length of item 499 of array 'k' is ${2n ** 30n}`);
    const cut = await codiError(readBytes(many(4n), skip), 'GGUF_TRUNCATED');
    expect(cut.message).toContain("length of item 499 of array 'k' is 4, but only 3 bytes are left");
    await expect(readBytes(many(3n), skip)).resolves.toMatchObject({ tensors: [] });
    // a length of 2^32 and more whose low word alone would pass
    const wrapped = await codiError(readBytes(many(2n ** 32n + 1n), skip), 'GGUF_LIMIT');
    expect(wrapped.message).toContain(`length of item 499 of array 'k' is ${2n ** 32n + 1n}`);
    // arrays of arrays are walked too
    await codiError(readBytes(nestedArraysClaimingMany(), skip), 'GGUF_TRUNCATED');
  });
});

describe('GGUF reader property: mutated files raise only GGUF_ errors', () => {
  let valid: Uint8Array;
  beforeAll(async () => {
    const p = tmp();
    await writeGguf(
      p,
      {
        metadata: [
          ['general.architecture', gv.str('qwen2')],
          ['general.alignment', gv.u32(32)],
          ['n', gv.u32(7)],
          ['s', gv.strings(['ab', 'c'])],
          ['f', gv.f32s([1, 2])],
          [
            'nested',
            gv.array(GgufValueType.ARRAY, [{ itemType: GgufValueType.UINT8, items: Uint8Array.of(1) }]),
          ],
        ],
        tensors: [
          { name: 't0', ne: [32, 2], type: GgmlType.F32 },
          { name: 't1', ne: [32], type: GgmlType.Q8_0 },
          { name: 't2', ne: [4], type: GgmlType.F16 },
        ],
      },
      (t) => new Float32Array(t.ne.reduce((a, b) => a * b, 1)),
    );
    valid = new Uint8Array(await readFile(p));
  });

  const mutation = fc.oneof(
    fc.record({ kind: fc.constant('byte' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
    fc.record({
      kind: fc.constant('u64' as const),
      at: fc.nat(),
      value: fc.oneof(
        fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
        fc.constantFrom(0n, 1n, 2n ** 32n, 2n ** 63n, 2n ** 64n - 1n),
      ),
    }),
    fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
    fc.record({
      kind: fc.constant('insert' as const),
      at: fc.nat(),
      value: fc.uint8Array({ minLength: 1, maxLength: 9 }),
    }),
  );

  it('never throws anything but a CodiError with a GGUF_ code', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(mutation, { minLength: 1, maxLength: 4 }), async (mutations) => {
        let bytes = Uint8Array.from(valid);
        for (const m of mutations) {
          const at = m.at % Math.max(1, bytes.length);
          if (m.kind === 'byte') bytes[at] = m.value;
          else if (m.kind === 'u64') {
            if (at + 8 <= bytes.length) new DataView(bytes.buffer).setBigUint64(at, m.value, true);
          } else if (m.kind === 'truncate') bytes = bytes.subarray(0, at);
          else bytes = Uint8Array.from([...bytes.subarray(0, at), ...m.value, ...bytes.subarray(at)]);
        }
        let read: GgufFile | null = null;
        try {
          read = await readBytes(bytes);
        } catch (e) {
          if (!(e instanceof CodiError) || !e.code.startsWith('GGUF_')) throw e;
          expect(e.exitCode).toBe(1);
        }
        // skipping arrays: the same kinds of errors only, and whatever reads fully reads the same
        try {
          const skipped = await readBytes(bytes, { arrays: 'skip' });
          if (read) expect(withoutArrayItems(skipped)).toEqual(withoutArrayItems(read));
        } catch (e) {
          if (!(e instanceof CodiError) || !e.code.startsWith('GGUF_')) throw e;
          expect(read).toBeNull();
        }
      }),
      { numRuns: 400, seed: 20261127 },
    );
  });
});
