/**
 * PyTorch `.bin` files made from code, byte for byte the way `torch.save` lays them out: a zip of
 * STORED entries (data aligned to 64 bytes with a padding extra field, as PyTorch's writer does),
 * `data.pkl` a protocol-2 pickle of an OrderedDict of `torch._utils._rebuild_tensor_v2` calls whose
 * storages are BINPERSID references, and the tensor bytes in `data/<key>`.
 *
 * Also malicious pickles for the scanner's tests. They are only ever written as bytes and scanned;
 * nothing here or in the tests unpickles them, and their payload is a harmless `echo`.
 */
import { basename, extname } from 'node:path';
import { writeFileAtomic } from '../atomic.js';
import { PICKLE_OPCODES } from '../formats/pickle.js';
import { CodiError } from '../errors.js';
import { zipBytes, type ZipInputEntry } from './zip-writer.js';

export { zipBytes, type ZipInputEntry, type ZipWriteOptions } from './zip-writer.js';

export type TorchBinDtype = 'F32' | 'F16' | 'BF16';

const DTYPE_INFO: Readonly<Record<TorchBinDtype, { storage: string; size: number }>> = {
  F32: { storage: 'FloatStorage', size: 4 },
  F16: { storage: 'HalfStorage', size: 2 },
  BF16: { storage: 'BFloat16Storage', size: 2 },
};

export interface TorchBinTensor {
  name: string;
  dtype: TorchBinDtype;
  shape: readonly number[];
  /** little-endian element bytes, product(shape) × element size */
  data: Uint8Array;
}

export interface TorchPickleOptions {
  /** `OrderedDict` as `model.state_dict()` returns; `dict` as PEFT's `get_peft_model_state_dict` does */
  container?: 'OrderedDict' | 'dict';
  /** 2 as torch.save by default; 4 uses STACK_GLOBAL, MEMOIZE and FRAME like `pickle_protocol=4` */
  protocol?: 2 | 4;
}

export interface TorchBinOptions extends TorchPickleOptions {
  /** the folder inside the zip; torch.save uses the file name without its extension */
  archiveName?: string;
  /** write ZIP64 records and extra fields, as PyTorch does for large archives */
  zip64?: boolean;
}

// ---------------------------------------------------------------------------------------------------
// Pickle opcodes, as bytes

/** The opcodes the writers below use (the scanner's own table). */
export const PICKLE_OP = PICKLE_OPCODES;

/** Builds a pickle opcode by opcode. Knows nothing about safety: tests use it to write hostile bytes. */
export class PickleBuilder {
  private readonly out: number[] = [];
  private readonly memoIndex = new Map<string, number>();
  private nextMemo = 0;

  constructor(private readonly protocol: 2 | 4 = 2) {}

  raw(...bytes: number[]): this {
    for (const b of bytes) this.out.push(b & 0xff);
    return this;
  }

  op(code: number): this {
    return this.raw(code);
  }

  proto(n = this.protocol): this {
    return this.raw(PICKLE_OP.PROTO, n);
  }

  private u32(n: number): this {
    return this.raw(n, n >>> 8, n >>> 16, n >>> 24);
  }

  /** the smallest encoding Python's pickler picks for a non-negative or small negative int */
  int(value: number): this {
    if (value >= 0 && value <= 0xff) return this.raw(PICKLE_OP.BININT1, value);
    if (value >= 0 && value <= 0xffff) return this.raw(PICKLE_OP.BININT2, value, value >>> 8);
    if (value >= -0x80000000 && value <= 0x7fffffff) return this.raw(PICKLE_OP.BININT).u32(value >>> 0);
    let v = BigInt(value);
    const bytes: number[] = [];
    while (v !== 0n && v !== -1n) {
      bytes.push(Number(v & 0xffn));
      v >>= 8n;
    }
    // keep the sign bit right, as decode_long reads two's complement
    const last = bytes[bytes.length - 1] ?? 0;
    if (value > 0 && last & 0x80) bytes.push(0);
    if (value < 0 && !(last & 0x80)) bytes.push(0xff);
    return this.raw(PICKLE_OP.LONG1, bytes.length, ...bytes);
  }

  str(value: string): this {
    const bytes = Buffer.from(value, 'utf8');
    if (this.protocol >= 4 && bytes.length < 256)
      return this.raw(PICKLE_OP.SHORT_BINUNICODE, bytes.length, ...bytes);
    return this.raw(PICKLE_OP.BINUNICODE)
      .u32(bytes.length)
      .raw(...bytes);
  }

  /** A protocol-0 text argument line. */
  line(text: string): this {
    return this.raw(...Buffer.from(`${text}\n`, 'utf8'));
  }

  global(moduleName: string, name: string): this {
    if (this.protocol >= 4)
      return this.str(moduleName).memoize().str(name).memoize().op(PICKLE_OP.STACK_GLOBAL);
    return this.op(PICKLE_OP.GLOBAL).line(moduleName).line(name);
  }

  /** Stores the top of the stack in the memo, the way the protocol does it. */
  memoize(): this {
    const index = this.nextMemo++;
    if (this.protocol >= 4) return this.op(PICKLE_OP.MEMOIZE);
    if (index < 256) return this.raw(PICKLE_OP.BINPUT, index);
    return this.raw(PICKLE_OP.LONG_BINPUT).u32(index);
  }

  get(index: number): this {
    if (index < 256) return this.raw(PICKLE_OP.BINGET, index);
    return this.raw(PICKLE_OP.LONG_BINGET).u32(index);
  }

  /** Pushes a memoized value (string or global) once, then reads it from the memo, as Python's pickler. */
  private cached(key: string, write: () => void): this {
    const index = this.memoIndex.get(key);
    if (index !== undefined) return this.get(index);
    write();
    this.memoIndex.set(key, this.nextMemo);
    return this.memoize();
  }

  cachedStr(value: string): this {
    return this.cached(`s:${value}`, () => this.str(value));
  }

  cachedGlobal(moduleName: string, name: string): this {
    return this.cached(`g:${moduleName}.${name}`, () => this.global(moduleName, name));
  }

  /** A tuple of ints the way Python writes one: EMPTY_TUPLE, TUPLE1–3, or MARK … TUPLE; memoized. */
  intTuple(values: readonly number[]): this {
    if (values.length === 0) return this.op(PICKLE_OP.EMPTY_TUPLE);
    if (values.length > 3) this.op(PICKLE_OP.MARK);
    for (const v of values) this.int(v);
    const closing =
      [PICKLE_OP.TUPLE1, PICKLE_OP.TUPLE2, PICKLE_OP.TUPLE3][values.length - 1] ?? PICKLE_OP.TUPLE;
    return this.op(closing).memoize();
  }

  stop(): this {
    return this.op(PICKLE_OP.STOP);
  }

  bytes(): Uint8Array {
    const body = Uint8Array.from(this.out);
    if (this.protocol < 4) return body;
    // protocol 4 frames the opcodes after PROTO; one frame is enough for what we write
    if (body[0] !== PICKLE_OP.PROTO) return body;
    const frame = new Uint8Array(body.length + 9);
    frame.set(body.subarray(0, 2), 0);
    frame[2] = PICKLE_OP.FRAME;
    new DataView(frame.buffer).setBigUint64(3, BigInt(body.length - 2), true);
    frame.set(body.subarray(2), 11);
    return frame;
  }
}

function invalidTensor(message: string): CodiError {
  return new CodiError('TESTKIT_INVALID_TENSOR', message);
}

function numelOf(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function contiguousStride(shape: readonly number[]): number[] {
  const stride = new Array<number>(shape.length).fill(1);
  for (let i = shape.length - 2; i >= 0; i--) stride[i] = (stride[i + 1] ?? 1) * (shape[i + 1] ?? 1);
  return stride;
}

/** The `data.pkl` of a state dict, as torch.save pickles it; storage keys are "0", "1", … in order. */
export function torchDataPickle(
  tensors: readonly TorchBinTensor[],
  options: TorchPickleOptions = {},
): Uint8Array {
  const p = new PickleBuilder(options.protocol ?? 2).proto();
  if ((options.container ?? 'OrderedDict') === 'OrderedDict') {
    p.cachedGlobal('collections', 'OrderedDict').op(PICKLE_OP.EMPTY_TUPLE).op(PICKLE_OP.REDUCE).memoize();
  } else {
    p.op(PICKLE_OP.EMPTY_DICT).memoize();
  }
  // Python's pickler writes dict items in batches of 1000, a single item with SETITEM
  for (let start = 0; start < tensors.length; start += 1000) {
    const batch = tensors.slice(start, start + 1000);
    if (batch.length > 1) p.op(PICKLE_OP.MARK);
    batch.forEach((t, i) => {
      const info = DTYPE_INFO[t.dtype];
      p.cachedStr(t.name);
      p.cachedGlobal('torch._utils', '_rebuild_tensor_v2');
      p.op(PICKLE_OP.MARK);
      // the persistent id ('storage', StorageClass, key, location, numel)
      p.op(PICKLE_OP.MARK)
        .cachedStr('storage')
        .cachedGlobal('torch', info.storage)
        .cachedStr(String(start + i))
        .cachedStr('cpu')
        .int(numelOf(t.shape))
        .op(PICKLE_OP.TUPLE)
        .memoize();
      p.op(PICKLE_OP.BINPERSID);
      p.int(0);
      p.intTuple(t.shape);
      p.intTuple(contiguousStride(t.shape));
      p.op(PICKLE_OP.NEWFALSE);
      p.cachedGlobal('collections', 'OrderedDict').op(PICKLE_OP.EMPTY_TUPLE).op(PICKLE_OP.REDUCE).memoize();
      p.op(PICKLE_OP.TUPLE).memoize();
      p.op(PICKLE_OP.REDUCE).memoize();
    });
    p.op(batch.length > 1 ? PICKLE_OP.SETITEMS : PICKLE_OP.SETITEM);
  }
  return p.stop().bytes();
}

// ---------------------------------------------------------------------------------------------------
// torch.save archives

/** Entries of a torch.save archive around `pickle`, with `storages[i]` as `data/<i>`. */
export function torchArchiveEntries(
  pickle: Uint8Array,
  storages: readonly Uint8Array[],
  archiveName = 'archive',
): ZipInputEntry[] {
  const ascii = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'latin1'));
  return [
    { name: `${archiveName}/data.pkl`, data: pickle },
    { name: `${archiveName}/byteorder`, data: ascii('little') },
    ...storages.map((data, i) => ({ name: `${archiveName}/data/${i}`, data })),
    { name: `${archiveName}/version`, data: ascii('3\n') },
    {
      name: `${archiveName}/.data/serialization_id`,
      data: ascii('0000000000000000000000000000000000000000'),
    },
  ];
}

/** A torch.save `.bin` of `tensors`, as bytes. */
export function torchBinBytes(tensors: readonly TorchBinTensor[], options: TorchBinOptions = {}): Uint8Array {
  const seen = new Set<string>();
  for (const t of tensors) {
    const expected = numelOf(t.shape) * DTYPE_INFO[t.dtype].size;
    if (t.data.length !== expected) {
      throw invalidTensor(
        `tensor ${t.name}: ${t.data.length} data bytes, expected ${expected} for ${t.dtype} [${t.shape.join(', ')}]`,
      );
    }
    if (seen.has(t.name)) throw invalidTensor(`tensor ${t.name} is given twice`);
    seen.add(t.name);
  }
  const pickle = torchDataPickle(tensors, options);
  return zipBytes(
    torchArchiveEntries(
      pickle,
      tensors.map((t) => t.data),
      options.archiveName ?? 'archive',
    ),
    { zip64: options.zip64 ?? false },
  );
}

/**
 * Writes a torch.save `.bin` of `tensors` to `path` atomically (temp file, fsync, rename). The folder
 * inside the zip defaults to the file name without extension, as torch.save names it.
 */
export async function writeTorchBin(
  path: string,
  tensors: readonly TorchBinTensor[],
  options: TorchBinOptions = {},
): Promise<void> {
  const archiveName = options.archiveName ?? basename(path, extname(path));
  await writeFileAtomic(path, torchBinBytes(tensors, { ...options, archiveName }));
}

// ---------------------------------------------------------------------------------------------------
// Hostile pickles (bytes only; never unpickled)

/** pickles that import something dangerous */
const IMPORTING_KINDS = [
  'os.system',
  'posix.system',
  'nt.system',
  'builtins.eval',
  'builtins.exec',
  'builtins.getattr',
  'subprocess.Popen',
  'torch-module',
  'stack-global-computed',
  'stack-global-int',
  'inst',
] as const;

/** pickles that call, build or mutate what only code could, or use opcodes off the list */
const ACTING_KINDS = [
  'obj',
  'newobj-non-global',
  'reduce-non-global',
  'build-on-global',
  'setitem-on-list',
  'append-on-object',
  'persid-text',
  'persid-not-storage',
  'ext1',
  'unknown-opcode',
] as const;

export const MALICIOUS_PICKLE_KINDS = [...IMPORTING_KINDS, ...ACTING_KINDS] as const;
export type MaliciousPickleKind = (typeof MALICIOUS_PICKLE_KINDS)[number];
type ImportingKind = (typeof IMPORTING_KINDS)[number];
type ActingKind = (typeof ACTING_KINDS)[number];

export interface MaliciousPickle {
  kind: MaliciousPickleKind;
  bytes: Uint8Array;
  /** the global the finding must name, where there is one */
  global: string | undefined;
  /** the opcode the scanner stops at */
  opcode: string;
}

const PAYLOAD = 'echo codi-adapter-test';

/** A one-tensor state dict item the hostile pickles start with, so the payload sits mid-stream. */
function benignStart(p: PickleBuilder): PickleBuilder {
  return p.proto().op(PICKLE_OP.EMPTY_DICT).memoize().str('ok').op(PICKLE_OP.NONE).op(PICKLE_OP.SETITEM);
}

/** A pickle that does what `kind` names; the bytes are only for scanning. */
export function maliciousPickle(kind: MaliciousPickleKind): MaliciousPickle {
  const p = benignStart(new PickleBuilder(kind === 'builtins.eval' ? 4 : 2));
  // each payload is stored under a key of the dict: the shape a poisoned state dict has
  p.str('payload');
  const { global, opcode } = isImporting(kind) ? importing(kind, p) : acting(kind, p);
  return { kind, bytes: p.bytes(), global, opcode };
}

function isImporting(kind: MaliciousPickleKind): kind is ImportingKind {
  return (IMPORTING_KINDS as readonly string[]).includes(kind);
}

interface Found {
  global: string | undefined;
  opcode: string;
}

function found(global: string | undefined, opcode: string): Found {
  return { global, opcode };
}

function importing(kind: ImportingKind, p: PickleBuilder): Found {
  switch (kind) {
    case 'os.system':
    case 'posix.system':
    case 'nt.system': {
      const mod = kind.split('.')[0] ?? 'os';
      p.global(mod, 'system').str(PAYLOAD).op(PICKLE_OP.TUPLE1).op(PICKLE_OP.REDUCE);
      p.op(PICKLE_OP.SETITEM).stop();
      return found(kind, 'GLOBAL');
    }
    case 'builtins.eval':
      // protocol 4: STACK_GLOBAL from literal strings
      p.global('builtins', 'eval').str(`__import__('os').system('${PAYLOAD}')`).op(PICKLE_OP.TUPLE1);
      p.op(PICKLE_OP.REDUCE).op(PICKLE_OP.SETITEM).stop();
      return found('builtins.eval', 'STACK_GLOBAL');
    case 'builtins.exec':
      // the Python 2 module name, which unpicklers map to builtins
      p.global('__builtin__', 'exec').str(`import os; os.system('${PAYLOAD}')`).op(PICKLE_OP.TUPLE1);
      p.op(PICKLE_OP.REDUCE).op(PICKLE_OP.SETITEM).stop();
      return found('builtins.exec', 'GLOBAL');
    case 'builtins.getattr':
      p.global('builtins', 'getattr').global('torch', 'FloatStorage').str('__init__').op(PICKLE_OP.TUPLE2);
      p.op(PICKLE_OP.REDUCE).op(PICKLE_OP.SETITEM).stop();
      return found('builtins.getattr', 'GLOBAL');
    case 'subprocess.Popen':
      p.global('subprocess', 'Popen').op(PICKLE_OP.EMPTY_LIST).str('sh').op(PICKLE_OP.APPEND);
      p.op(PICKLE_OP.TUPLE1).op(PICKLE_OP.REDUCE).op(PICKLE_OP.SETITEM).stop();
      return found('subprocess.Popen', 'GLOBAL');
    case 'torch-module':
      // a whole nn.Module pickled: benign in intent, but it imports model code
      p.global('torch.nn.modules.linear', 'Linear').op(PICKLE_OP.EMPTY_TUPLE).op(PICKLE_OP.NEWOBJ);
      p.op(PICKLE_OP.SETITEM).stop();
      return found('torch.nn.modules.linear.Linear', 'GLOBAL');
    case 'stack-global-computed':
      // the module name comes out of an (allowed) call, not from the stream
      p.global('_codecs', 'encode').str('os').str('latin1').op(PICKLE_OP.TUPLE2).op(PICKLE_OP.REDUCE);
      p.str('system').op(PICKLE_OP.STACK_GLOBAL).str(PAYLOAD).op(PICKLE_OP.TUPLE1).op(PICKLE_OP.REDUCE);
      p.op(PICKLE_OP.SETITEM).stop();
      return found(undefined, 'STACK_GLOBAL');
    case 'stack-global-int':
      p.int(7).str('system').op(PICKLE_OP.STACK_GLOBAL).op(PICKLE_OP.SETITEM).stop();
      return found(undefined, 'STACK_GLOBAL');
    case 'inst':
      p.op(PICKLE_OP.MARK).str(PAYLOAD).op(PICKLE_OP.INST).line('os').line('system');
      p.op(PICKLE_OP.SETITEM).stop();
      return found('os.system', 'INST');
  }
}

function acting(kind: ActingKind, p: PickleBuilder): Found {
  switch (kind) {
    case 'obj':
      p.op(PICKLE_OP.MARK).op(PICKLE_OP.EMPTY_DICT).str(PAYLOAD).op(PICKLE_OP.OBJ);
      p.op(PICKLE_OP.SETITEM).stop();
      return found(undefined, 'OBJ');
    case 'newobj-non-global':
      p.str('os.system').op(PICKLE_OP.EMPTY_TUPLE).op(PICKLE_OP.NEWOBJ).op(PICKLE_OP.SETITEM).stop();
      return found(undefined, 'NEWOBJ');
    case 'reduce-non-global':
      p.op(PICKLE_OP.EMPTY_LIST)
        .str(PAYLOAD)
        .op(PICKLE_OP.TUPLE1)
        .op(PICKLE_OP.REDUCE)
        .op(PICKLE_OP.SETITEM)
        .stop();
      return found(undefined, 'REDUCE');
    case 'build-on-global':
      // setting attributes on a class object monkey-patches it for the whole process
      p.op(PICKLE_OP.POP).global('collections', 'OrderedDict').op(PICKLE_OP.EMPTY_DICT);
      p.str('__reduce__').op(PICKLE_OP.NONE).op(PICKLE_OP.SETITEM).op(PICKLE_OP.BUILD).stop();
      return found(undefined, 'BUILD');
    case 'setitem-on-list':
      p.op(PICKLE_OP.EMPTY_LIST).str('k').str('v').op(PICKLE_OP.SETITEM).op(PICKLE_OP.SETITEM).stop();
      return found(undefined, 'SETITEM');
    case 'append-on-object':
      p.global('torch', 'device').str('cpu').op(PICKLE_OP.TUPLE1).op(PICKLE_OP.REDUCE);
      p.op(PICKLE_OP.NONE).op(PICKLE_OP.APPEND).op(PICKLE_OP.SETITEM).stop();
      return found(undefined, 'APPEND');
    case 'persid-text':
      p.op(PICKLE_OP.PERSID).line(PAYLOAD).op(PICKLE_OP.SETITEM).stop();
      return found(undefined, 'PERSID');
    case 'persid-not-storage':
      p.str('module').str('os').op(PICKLE_OP.TUPLE2).op(PICKLE_OP.BINPERSID).op(PICKLE_OP.SETITEM).stop();
      return found(undefined, 'BINPERSID');
    case 'ext1':
      p.raw(PICKLE_OP.EXT1, 1).op(PICKLE_OP.SETITEM).stop();
      return found(undefined, 'EXT1');
    case 'unknown-opcode':
      p.raw(0xff).op(PICKLE_OP.SETITEM).stop();
      return found(undefined, '0xff');
  }
}

/** A torch.save archive whose `data.pkl` is `pickle` (with one small F32 storage as `data/0`). */
export function torchBinWithPickle(pickle: Uint8Array, archiveName = 'archive'): Uint8Array {
  return zipBytes(torchArchiveEntries(pickle, [new Uint8Array(16)], archiveName));
}

/**
 * The start of a pre-1.6 torch.save file: the pickled magic number 0x1950a86a20f9469cfc6c, the
 * protocol version and sys info, as legacy `_save` writes them (the rest does not matter to a scanner
 * that stops at the first bytes).
 */
export function legacyTorchBytes(): Uint8Array {
  const magic = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
  const p = new PickleBuilder(2)
    .proto()
    .raw(PICKLE_OP.LONG1, magic.length, ...magic)
    .stop();
  p.proto().int(1001).stop();
  p.proto().op(PICKLE_OP.EMPTY_DICT).stop();
  return p.bytes();
}
