import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FormatError } from '../../src/formats/format-error.js';
import { allowedGlobals, scanPickle, TORCH_BIN_ERROR_CODES } from '../../src/formats/pickle.js';
import { scanTorchBinBytes } from '../../src/formats/torch-bin.js';
import { scanTorchBin } from '../../src/files/torch-bin.js';
import { ZIP_ERROR_CODES } from '../../src/formats/zip.js';
import { Rng } from '../../src/testkit/rng.js';
import {
  legacyTorchBytes,
  MALICIOUS_PICKLE_KINDS,
  maliciousPickle,
  PICKLE_OP,
  PickleBuilder,
  torchArchiveEntries,
  torchBinBytes,
  torchBinWithPickle,
  torchDataPickle,
  writeTorchBin,
  zipBytes,
  type TorchBinTensor,
} from '../../src/testkit/torch-bin.js';
import { rejected, thrown } from '../helpers/errors.js';

const SIZES = { F32: 4, F16: 2, BF16: 2 } as const;

function tensor(name: string, dtype: TorchBinTensor['dtype'], shape: number[], rng: Rng): TorchBinTensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Uint8Array(n * SIZES[dtype]);
  for (let i = 0; i < data.length; i++) data[i] = rng.int(256);
  return { name, dtype, shape, data };
}

const PREFIX = 'base_model.model.model.layers.0.self_attn';
function loraTensors(seed = 1): TorchBinTensor[] {
  const rng = new Rng(seed);
  return [
    tensor(`${PREFIX}.q_proj.lora_A.weight`, 'F32', [8, 64], rng),
    tensor(`${PREFIX}.q_proj.lora_B.weight`, 'F32', [64, 8], rng),
    tensor(`${PREFIX}.v_proj.lora_A.weight`, 'F16', [8, 64], rng),
    tensor(`${PREFIX}.v_proj.lora_B.weight`, 'BF16', [16, 8], rng),
    tensor('scalar', 'F32', [], rng),
    tensor('four_d', 'F16', [2, 3, 4, 5], rng),
    tensor('empty', 'F32', [0, 4], rng),
  ];
}

const ALL_CODES: readonly string[] = [...TORCH_BIN_ERROR_CODES, ...ZIP_ERROR_CODES];

function contiguous(shape: number[]): number[] {
  const s = shape.map(() => 1);
  for (let i = shape.length - 2; i >= 0; i--) s[i] = (s[i + 1] ?? 1) * (shape[i + 1] ?? 1);
  return s;
}

describe('scanTorchBin', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'codi-pickle-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('reads names, dtypes and shapes from a generated adapter_model.bin', async () => {
    const tensors = loraTensors();
    const path = join(dir, 'adapter_model.bin');
    await writeTorchBin(path, tensors);
    const scan = await scanTorchBin(path);
    expect(scan.archive).toBe('adapter_model');
    expect(scan.protocol).toBe(2);
    expect(scan.byteorder).toBe('little');
    expect(scan.formatVersion).toBe(3);
    expect(scan.warnings).toEqual([]);
    expect(scan.tensors.map((t) => [t.name, t.dtype, t.shape])).toEqual(
      tensors.map((t) => [t.name, t.dtype, t.shape]),
    );
    expect(scan.tensors.map((t) => t.stride)).toEqual(tensors.map((t) => contiguous([...t.shape])));
    expect(scan.tensors.map((t) => t.storageKey)).toEqual(tensors.map((_, i) => String(i)));
    expect(scan.storages.map((s) => s.byteLength)).toEqual(tensors.map((t) => t.data.length));
    expect(scan.globals).toEqual([
      'collections.OrderedDict',
      'torch.BFloat16Storage',
      'torch.FloatStorage',
      'torch.HalfStorage',
      'torch._utils._rebuild_tensor_v2',
    ]);
  });

  for (const variant of [
    { container: 'dict', protocol: 2, zip64: false },
    { container: 'OrderedDict', protocol: 4, zip64: false },
    { container: 'OrderedDict', protocol: 2, zip64: true },
  ] as const) {
    it(`reads a ${variant.container}, protocol ${variant.protocol}${variant.zip64 ? ', ZIP64' : ''}`, async () => {
      const tensors = loraTensors(2);
      const scan = await scanTorchBinBytes(torchBinBytes(tensors, variant));
      expect(scan.protocol).toBe(variant.protocol);
      expect(scan.tensors.map((t) => [t.name, t.dtype, t.shape])).toEqual(
        tensors.map((t) => [t.name, t.dtype, t.shape]),
      );
    });
  }

  it('reads an archive re-zipped with DEFLATE entries', async () => {
    const tensors = loraTensors(4);
    const entries = torchArchiveEntries(
      torchDataPickle(tensors),
      tensors.map((t) => t.data),
    ).map((e) => ({ ...e, method: 8 as const }));
    const scan = await scanTorchBinBytes(zipBytes(entries));
    expect(scan.tensors.map((t) => t.shape)).toEqual(tensors.map((t) => t.shape));
    expect(scan.warnings).toEqual([]);
  });

  it('handles many tensors (SETITEMS batches, LONG_BINPUT memo keys)', async () => {
    const rng = new Rng(3);
    const tensors = Array.from({ length: 1203 }, (_, i) => tensor(`t.${i}`, 'F16', [2, 1 + (i % 3)], rng));
    const scan = await scanTorchBinBytes(torchBinBytes(tensors));
    expect(scan.tensors).toHaveLength(1203);
    expect(scan.tensors[1202]?.shape).toEqual([2, 3]);
  });

  it('refuses the legacy format and bare pickles with BIN_LEGACY_FORMAT', async () => {
    const legacy = await rejected(scanTorchBinBytes(legacyTorchBytes()));
    expect(legacy.code).toBe('BIN_LEGACY_FORMAT');
    expect(legacy.message).toMatch(/legacy torch\.save format/);
    expect(legacy.message).toMatch(/_use_new_zipfile_serialization=False/);
    const bare = await rejected(scanTorchBinBytes(torchDataPickle(loraTensors())));
    expect(bare.code).toBe('BIN_LEGACY_FORMAT');
  });

  it('reports a truncated .bin with a zip code', async () => {
    const bytes = torchBinBytes(loraTensors());
    for (const cut of [2, 100, Math.floor(bytes.length / 2), bytes.length - 10]) {
      const path = join(dir, `cut-${cut}.bin`);
      await writeFile(path, bytes.subarray(0, cut));
      expect((await rejected(scanTorchBin(path))).code).toBe('BIN_ZIP_TRUNCATED');
    }
    expect((await rejected(scanTorchBinBytes(new Uint8Array(0)))).code).toBe('BIN_ZIP_TRUNCATED');
    expect((await rejected(scanTorchBin(join(dir, 'nope.bin')))).code).toBe('PATH_MISSING');
  });

  it('refuses a zip that is not a torch.save archive', async () => {
    const noPickle = zipBytes([{ name: 'archive/data/0', data: new Uint8Array(4) }]);
    expect((await rejected(scanTorchBinBytes(noPickle))).code).toBe('BIN_NOT_TORCH_ZIP');
    const stray = zipBytes([
      ...torchArchiveEntries(torchDataPickle([]), []),
      { name: 'payload.sh', data: new Uint8Array(4) },
    ]);
    expect((await rejected(scanTorchBinBytes(stray))).code).toBe('BIN_NOT_TORCH_ZIP');
  });

  it('checks storages against the archive', async () => {
    const tensors = loraTensors().slice(0, 2);
    const pickle = torchDataPickle(tensors);
    const first = tensors[0]?.data ?? new Uint8Array(0);
    const missing = zipBytes(torchArchiveEntries(pickle, [first]));
    expect((await rejected(scanTorchBinBytes(missing))).code).toBe('BIN_STORAGE_MISSING');
    const short = zipBytes(torchArchiveEntries(pickle, [first, new Uint8Array(10)]));
    expect((await rejected(scanTorchBinBytes(short))).code).toBe('BIN_STORAGE_MISMATCH');
    // torch.save writes each storage at exactly its size, and none that no tensor uses
    const long = zipBytes(
      torchArchiveEntries(pickle, [first, new Uint8Array((tensors[1]?.data.length ?? 0) + 4)]),
    );
    expect((await rejected(scanTorchBinBytes(long))).code).toBe('BIN_STORAGE_OVERSIZED');
    const extra = zipBytes(
      torchArchiveEntries(pickle, [first, tensors[1]?.data ?? new Uint8Array(0), new Uint8Array(1)]),
    );
    const unreferenced = await rejected(scanTorchBinBytes(extra));
    expect(unreferenced.code).toBe('BIN_UNREFERENCED_STORAGE');
    expect(unreferenced.message).toContain('archive/data/2');
  });

  for (const kind of MALICIOUS_PICKLE_KINDS) {
    it(`refuses a malicious pickle: ${kind}`, async () => {
      const m = maliciousPickle(kind);
      const err = thrown(() => scanPickle(m.bytes));
      expect(err.code).toBe('PICKLE_UNSAFE');
      expect(err.exitCode).toBe(1);
      if (m.global !== undefined) expect(err.message).toContain(m.global);
      expect(err.message).toContain(`opcode ${m.opcode}`);
      // and inside a real archive, the pointer names the entry and the byte
      const inBin = await rejected(scanTorchBinBytes(torchBinWithPickle(m.bytes)));
      expect(inBin.code).toBe('PICKLE_UNSAFE');
      expect(inBin.pointer).toMatch(/^archive\/data\.pkl:\d+$/);
      expect(inBin.message).toContain('archive/data.pkl');
    });
  }

  it('names the global and where it is, the way a user reads it', () => {
    const err = thrown(() => scanPickle(maliciousPickle('os.system').bytes));
    expect(err.message).toMatch(/^pickle imports os\.system, .*\(opcode GLOBAL at byte \d+\)$/);
    expect(err.details).toMatchObject({ global: 'os.system', opcode: 'GLOBAL' });
  });
});

describe('scanPickle', () => {
  const valid = torchDataPickle(loraTensors());

  it('reports every truncation of a valid pickle as PICKLE_INVALID', () => {
    for (let cut = 0; cut < valid.length; cut++) {
      expect(thrown(() => scanPickle(valid.subarray(0, cut))).code).toBe('PICKLE_INVALID');
    }
  });

  it('refuses bytes after STOP: torch.save never writes them', () => {
    const withTail = Buffer.concat([valid, Buffer.from('hidden')]);
    const err = thrown(() => scanPickle(withTail));
    expect(err.code).toBe('PICKLE_TRAILING_BYTES');
    expect(err.exitCode).toBe(1);
  });

  it('reads protocol-0/1 text opcodes and Python 2 names', () => {
    // {'w': _rebuild_tensor_v2(storage, 0, (2, 3), (3, 1), False, OrderedDict())} in text opcodes
    const p = new PickleBuilder(2)
      .op(PICKLE_OP.MARK)
      .op(0x64) // DICT (empty)
      .op(0x70)
      .line('0') // PUT 0
      .op(0x56)
      .line('w\\u00e9') // UNICODE
      .op(PICKLE_OP.GLOBAL)
      .line('torch._utils')
      .line('_rebuild_tensor_v2')
      .op(PICKLE_OP.MARK)
      .op(PICKLE_OP.MARK)
      .op(0x53)
      .line("'storage'") // STRING
      .op(PICKLE_OP.GLOBAL)
      .line('torch')
      .line('HalfStorage')
      .op(0x55)
      .raw(1, 0x30) // SHORT_BINSTRING '0'
      .op(0x53)
      .line('"cpu"')
      .op(0x4c)
      .line('6L') // LONG
      .op(PICKLE_OP.TUPLE)
      .op(PICKLE_OP.BINPERSID)
      .op(PICKLE_OP.INT)
      .line('0')
      .op(PICKLE_OP.MARK)
      .op(PICKLE_OP.INT)
      .line('2')
      .op(PICKLE_OP.INT)
      .line('3')
      .op(PICKLE_OP.TUPLE)
      .op(PICKLE_OP.MARK)
      .op(PICKLE_OP.INT)
      .line('3')
      .op(PICKLE_OP.INT)
      .line('1')
      .op(PICKLE_OP.TUPLE)
      .op(PICKLE_OP.INT)
      .line('00')
      .op(PICKLE_OP.GLOBAL)
      .line('collections')
      .line('OrderedDict')
      .op(PICKLE_OP.MARK)
      .op(PICKLE_OP.TUPLE)
      .op(PICKLE_OP.REDUCE)
      .op(PICKLE_OP.TUPLE)
      .op(PICKLE_OP.REDUCE)
      .op(PICKLE_OP.SETITEM)
      .stop();
    const scan = scanPickle(p.bytes());
    expect(scan.protocol).toBe(0);
    expect(scan.tensors).toEqual([
      { name: 'wé', dtype: 'F16', shape: [2, 3], stride: [3, 1], storageOffset: 0, storageKey: '0' },
    ]);
  });

  it('accepts the OrderedDict state of model.state_dict() (BUILD with _metadata)', () => {
    const p = new PickleBuilder(2)
      .proto()
      .global('collections', 'OrderedDict')
      .op(PICKLE_OP.EMPTY_TUPLE)
      .op(PICKLE_OP.REDUCE)
      .op(PICKLE_OP.EMPTY_DICT)
      .str('_metadata')
      .global('collections', 'OrderedDict')
      .op(PICKLE_OP.EMPTY_TUPLE)
      .op(PICKLE_OP.REDUCE)
      .op(PICKLE_OP.SETITEM)
      .op(PICKLE_OP.BUILD)
      .stop();
    expect(scanPickle(p.bytes()).tensors).toEqual([]);
  });

  it('accepts parameters and v3 rebuilds, and finds views past their storage', () => {
    const storage = (p: PickleBuilder, numel: number): PickleBuilder =>
      p
        .op(PICKLE_OP.MARK)
        .str('storage')
        .global('torch', 'UntypedStorage')
        .str('0')
        .str('cpu')
        .int(numel)
        .op(PICKLE_OP.TUPLE)
        .op(PICKLE_OP.BINPERSID);
    const build = (bytes: number): Uint8Array => {
      const p = new PickleBuilder(2).proto().op(PICKLE_OP.EMPTY_DICT).str('p');
      p.global('torch._utils', '_rebuild_parameter');
      p.global('torch._utils', '_rebuild_tensor_v3').op(PICKLE_OP.MARK);
      storage(p, bytes).int(0).intTuple([4, 4]).intTuple([4, 1]).op(PICKLE_OP.NEWTRUE);
      p.global('collections', 'OrderedDict').op(PICKLE_OP.EMPTY_TUPLE).op(PICKLE_OP.REDUCE);
      p.global('torch', 'float8_e4m3fn').op(PICKLE_OP.TUPLE).op(PICKLE_OP.REDUCE);
      p.op(PICKLE_OP.NEWTRUE).op(PICKLE_OP.EMPTY_DICT).op(PICKLE_OP.TUPLE3).op(PICKLE_OP.REDUCE);
      return p.op(PICKLE_OP.SETITEM).stop().bytes();
    };
    const scan = scanPickle(build(16));
    expect(scan.tensors[0]).toMatchObject({ name: 'p', dtype: 'F8_E4M3', shape: [4, 4] });
    expect(scan.storages[0]).toMatchObject({ dtype: 'U8', numel: 16, storageType: 'torch.UntypedStorage' });
    expect(thrown(() => scanPickle(build(15))).code).toBe('BIN_STORAGE_MISMATCH');
  });

  it('refuses duplicate tensor names and values that are not tensors', () => {
    const dup = new PickleBuilder(2).proto().op(PICKLE_OP.EMPTY_DICT).op(PICKLE_OP.MARK);
    dup.str('a').op(PICKLE_OP.NONE).str('a').op(PICKLE_OP.NONE).op(PICKLE_OP.SETITEMS).stop();
    expect(thrown(() => scanPickle(dup.bytes())).code).toBe('PICKLE_DUPLICATE_KEY');
    const notTensor = new PickleBuilder(2)
      .proto()
      .op(PICKLE_OP.EMPTY_DICT)
      .str('a')
      .int(1)
      .op(PICKLE_OP.SETITEM)
      .stop();
    expect(thrown(() => scanPickle(notTensor.bytes())).code).toBe('PICKLE_NOT_STATE_DICT');
    const list = new PickleBuilder(2).proto().op(PICKLE_OP.EMPTY_LIST).stop();
    expect(thrown(() => scanPickle(list.bytes())).code).toBe('PICKLE_NOT_STATE_DICT');
  });

  it('allows only literal strings in STACK_GLOBAL, memoized ones included', () => {
    const p = new PickleBuilder(4).proto().op(PICKLE_OP.EMPTY_DICT);
    p.str('collections').memoize().str('OrderedDict').memoize().op(PICKLE_OP.STACK_GLOBAL).op(PICKLE_OP.POP);
    p.get(0).get(1).op(PICKLE_OP.STACK_GLOBAL).op(PICKLE_OP.POP).stop();
    expect(scanPickle(p.bytes()).globals).toEqual(['collections.OrderedDict']);
  });

  it('bounds marks, stack, memo, container items and lengths', () => {
    const marks = new Uint8Array(200_000).fill(PICKLE_OP.MARK);
    expect(thrown(() => scanPickle(marks)).code).toBe('PICKLE_TOO_COMPLEX');
    const nones = new Uint8Array(200_000).fill(PICKLE_OP.NONE);
    expect(thrown(() => scanPickle(nones)).code).toBe('PICKLE_TOO_COMPLEX');
    const appends = new PickleBuilder(2).proto().op(PICKLE_OP.EMPTY_LIST);
    for (let i = 0; i < 2000; i++) appends.op(PICKLE_OP.NONE).op(PICKLE_OP.APPEND);
    expect(thrown(() => scanPickle(appends.stop().bytes(), { maxCells: 1000 })).code).toBe(
      'PICKLE_TOO_COMPLEX',
    );
    const memo = new PickleBuilder(2).proto().op(PICKLE_OP.NONE);
    for (let i = 0; i < 300; i++) memo.raw(PICKLE_OP.LONG_BINPUT, i, i >> 8, 0, 0);
    expect(thrown(() => scanPickle(memo.stop().bytes(), { maxMemo: 100 })).code).toBe('PICKLE_TOO_COMPLEX');
    const ops = new PickleBuilder(2).proto();
    for (let i = 0; i < 1000; i++) ops.op(PICKLE_OP.NONE).op(PICKLE_OP.POP);
    expect(thrown(() => scanPickle(ops.stop().bytes(), { maxOpcodes: 500 })).code).toBe('PICKLE_TOO_COMPLEX');
    // a 4 GiB string announced in a few bytes
    const long = new PickleBuilder(2).proto().raw(PICKLE_OP.BINUNICODE, 0xff, 0xff, 0xff, 0xff, 0x41).stop();
    expect(thrown(() => scanPickle(long.bytes())).code).toBe('PICKLE_INVALID');
    const long8 = new PickleBuilder(2)
      .proto()
      .raw(0x8d, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
      .stop();
    expect(thrown(() => scanPickle(long8.bytes())).code).toBe('PICKLE_INVALID');
    // deeply nested _rebuild_from_type_v2 cannot recurse without bound
    const nested = new PickleBuilder(2).proto().op(PICKLE_OP.EMPTY_DICT).str('x');
    nested.global('torch._tensor', '_rebuild_from_type_v2');
    const depth = 50;
    for (let i = 0; i < depth; i++) {
      nested.op(PICKLE_OP.MARK).global('torch._tensor', '_rebuild_from_type_v2').global('torch', 'Tensor');
    }
    nested.op(PICKLE_OP.EMPTY_TUPLE);
    for (let i = 0; i < depth; i++) nested.op(PICKLE_OP.EMPTY_DICT).op(PICKLE_OP.TUPLE);
    nested.op(PICKLE_OP.REDUCE).op(PICKLE_OP.SETITEM).stop();
    const err = thrown(() => scanPickle(nested.bytes()));
    expect(err.code).toBe('PICKLE_TOO_COMPLEX');
    expect(err.message).toMatch(/nested rebuild calls/);
  });

  it('has an allow-list of PyTorch globals only', () => {
    const list = allowedGlobals();
    expect(list).toContain('torch._utils._rebuild_tensor_v2');
    expect(list).toContain('torch.BFloat16Storage');
    expect(list.some((g) => /^(os|posix|nt|sys|subprocess)\./.test(g))).toBe(false);
    expect(list.filter((g) => g.startsWith('builtins.'))).toEqual([
      'builtins.bytearray',
      'builtins.complex',
      'builtins.set',
    ]);
  });

  it('raises nothing but a format error on random mutations of a pickle, and never hangs', () => {
    const small = torchDataPickle(loraTensors().slice(0, 3));
    const p4 = torchDataPickle(loraTensors().slice(0, 2), { protocol: 4 });
    fc.assert(
      fc.property(
        fc.boolean(),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 6 }),
        fc.option(fc.nat(), { nil: undefined }),
        (use4, edits, cut) => {
          const source = use4 ? p4 : small;
          const bytes = source.slice(0, cut === undefined ? source.length : cut % (source.length + 1));
          for (const [at, value] of edits) if (bytes.length > 0) bytes[at % bytes.length] = value;
          try {
            scanPickle(bytes);
          } catch (err) {
            if (!(err instanceof FormatError)) throw err;
            expect(ALL_CODES).toContain(err.code);
          }
        },
      ),
      { numRuns: 3000 },
    );
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        try {
          scanPickle(bytes);
        } catch (err) {
          if (!(err instanceof FormatError)) throw err;
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('raises nothing but a format error on random mutations of a .bin file', async () => {
    const bin = torchBinBytes(loraTensors().slice(0, 3));
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 6 }),
        async (edits) => {
          const bytes = bin.slice();
          for (const [at, value] of edits) bytes[at % bytes.length] = value;
          try {
            await scanTorchBinBytes(bytes);
          } catch (err) {
            if (!(err instanceof FormatError)) throw err;
            expect(ALL_CODES).toContain(err.code);
          }
        },
      ),
      { numRuns: 1500 },
    );
    // mutated pickles inside intact archives reach the scanner through the zip (CRCs are right)
    const pickle = torchDataPickle(loraTensors().slice(0, 2));
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }),
        async (edits) => {
          const bytes = pickle.slice();
          for (const [at, value] of edits) bytes[at % bytes.length] = value;
          try {
            await scanTorchBinBytes(torchBinWithPickle(bytes));
          } catch (err) {
            if (!(err instanceof FormatError)) throw err;
            expect(ALL_CODES).toContain(err.code);
            if (err.code.startsWith('PICKLE_')) expect(err.pointer).toMatch(/^archive\/data\.pkl:\d+$/);
          }
        },
      ),
      { numRuns: 1000 },
    );
  });
});
