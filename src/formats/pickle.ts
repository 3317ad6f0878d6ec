/**
 * The pickle in a PyTorch `.bin` file (`<archive>/data.pkl`), scanned without executing it (a pickle
 * run could execute any code); torch-bin.ts checks what it finds against the zip around it.
 *
 * The scanner walks the opcode stream once (protocols 0–5) over a symbolic stack and memo: nothing is
 * imported, called or constructed. Every global must be on an allow-list in the spirit of PyTorch's
 * weights-only unpickler (`torch/_weights_only_unpickler.py`); a global off the list is refused where
 * it is named, before anything could call it, because a real unpickler already imports its module at
 * that point. Calls (REDUCE, NEWOBJ, INST, OBJ), BUILD and container mutations are only accepted on
 * the values the allow-list can produce. Where the pickle is safe, the state dict is reconstructed
 * symbolically: tensor names, dtypes (from the storage class) and shapes (from the rebuild calls).
 *
 * Hostile input cannot make the scan hang or grow without bound: opcodes, stack, marks, memo and
 * container cells are capped, every length is checked against the bytes that remain, and nothing
 * recurses on input structure beyond a small fixed depth.
 *
 * Errors are `FormatError`s with `pointer` set to the byte offset in `data.pkl` (or `<entry>:<offset>`
 * once the torch-bin scan knows the entry). They carry no file name.
 */
import type { Code } from '../codes.js';
import { FormatError } from './format-error.js';
import {
  decodeUtf8,
  isFloat,
  readInt,
  readLong,
  readMemoIndex,
  readQuoted,
  readRawUnicode,
} from './pickle-text.js';
import { quoteName } from './zip.js';

export const PICKLE_ERROR_CODES = [
  'PICKLE_UNSAFE',
  'PICKLE_INVALID',
  'PICKLE_TOO_COMPLEX',
  'PICKLE_NOT_STATE_DICT',
  'PICKLE_DUPLICATE_KEY',
  'PICKLE_TRAILING_BYTES',
] as const satisfies readonly Code[];
export const TORCH_BIN_ERROR_CODES = [
  'BIN_LEGACY_FORMAT',
  'BIN_NOT_TORCH_ZIP',
  'BIN_STORAGE_MISSING',
  'BIN_STORAGE_MISMATCH',
  'BIN_STORAGE_OVERSIZED',
  'BIN_UNREFERENCED_STORAGE',
  'BIN_UNEXPECTED_ENTRY',
  ...PICKLE_ERROR_CODES,
] as const satisfies readonly Code[];
export const TORCH_BIN_WARNING_CODES = ['BIN_BIG_ENDIAN'] as const satisfies readonly Code[];
export type PickleErrorCode = (typeof PICKLE_ERROR_CODES)[number];
export type TorchBinErrorCode = (typeof TORCH_BIN_ERROR_CODES)[number];
export type TorchBinWarningCode = (typeof TORCH_BIN_WARNING_CODES)[number];

/** Tensor element types, named as in safetensors where safetensors has the type. */
export const TORCH_DTYPE_SIZES = Object.freeze({
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U64: 8,
  U32: 4,
  U16: 2,
  U8: 1,
  BOOL: 1,
  C128: 16,
  C64: 8,
  C32: 4,
  F8_E5M2: 1,
  F8_E4M3: 1,
  F8_E5M2FNUZ: 1,
  F8_E4M3FNUZ: 1,
  F8_E8M0: 1,
  /** torch.float4_e2m1fn_x2: two 4-bit values per element */
  F4_X2: 1,
  QI8: 1,
  QU8: 1,
  QI32: 4,
  QU4X2: 1,
  QU2X4: 1,
} as const);
export type TorchDtype = keyof typeof TORCH_DTYPE_SIZES;

export interface PickleLimits {
  maxOpcodes: number;
  /** values on the stack, across all open marks */
  maxStack: number;
  maxMarks: number;
  /**
   * memo entries, and one more than the highest memo index: CPython's unpickler allocates (and
   * zeroes) an array up to twice the highest index it is given, however few entries there are
   */
  maxMemo: number;
  /** items held by all lists, tuples, dicts and sets together */
  maxCells: number;
  maxDims: number;
}

export const DEFAULT_PICKLE_LIMITS: Readonly<PickleLimits> = Object.freeze({
  maxOpcodes: 5_000_000,
  maxStack: 100_000,
  maxMarks: 10_000,
  maxMemo: 500_000,
  maxCells: 1_000_000,
  maxDims: 64,
});

export interface PickleStorage {
  key: string;
  /** the storage class as the pickle names it, e.g. `torch.FloatStorage` */
  storageType: string;
  dtype: TorchDtype;
  /** elements of `dtype` */
  numel: number;
  byteLength: number;
  /** the device it was saved from, e.g. `cpu`, `cuda:0` */
  location: string;
}

export interface PickleTensor {
  name: string;
  dtype: TorchDtype;
  shape: number[];
  stride: number[];
  /** in elements of `dtype` */
  storageOffset: number;
  storageKey: string;
}

export interface TorchBinWarning {
  code: TorchBinWarningCode;
  message: string;
  pointer?: string;
}

export interface PickleScanResult {
  /** the last PROTO opcode's value, as CPython keeps it; 0 when there is none (protocols 0 and 1) */
  protocol: number;
  /** the state dict, in pickle order */
  tensors: PickleTensor[];
  /** every storage the pickle refers to, in order of first reference */
  storages: PickleStorage[];
  /** the allow-listed globals the pickle names, sorted */
  globals: string[];
  warnings: TorchBinWarning[];
}

// ---------------------------------------------------------------------------------------------------
// The allow-list

type GlobalRole =
  | { kind: 'dict'; type: 'OrderedDict' | 'Counter' }
  | { kind: 'rebuild-tensor'; minArgs: number; maxArgs: number; dtypeArg?: number }
  | { kind: 'rebuild-parameter'; args: number }
  | { kind: 'parameter' }
  | { kind: 'rebuild-from-type' }
  | { kind: 'storage-class'; dtype: TorchDtype | undefined }
  | { kind: 'dtype'; dtype: TorchDtype | undefined }
  | { kind: 'size' }
  | { kind: 'set' }
  | { kind: 'bytes' }
  /** `torch.Tensor` and the legacy tensor classes: calling one allocates memory of any size */
  | { kind: 'tensor-class' }
  | { kind: 'opaque' };

const LEGACY_STORAGES: Readonly<Record<string, TorchDtype>> = {
  DoubleStorage: 'F64',
  FloatStorage: 'F32',
  HalfStorage: 'F16',
  BFloat16Storage: 'BF16',
  LongStorage: 'I64',
  IntStorage: 'I32',
  ShortStorage: 'I16',
  CharStorage: 'I8',
  ByteStorage: 'U8',
  BoolStorage: 'BOOL',
  ComplexDoubleStorage: 'C128',
  ComplexFloatStorage: 'C64',
  QUInt8Storage: 'QU8',
  QInt8Storage: 'QI8',
  QInt32Storage: 'QI32',
  QUInt4x2Storage: 'QU4X2',
  QUInt2x4Storage: 'QU2X4',
};

/** `str(torch.<dtype>)` without the `torch.` prefix; undefined: allowed as a global, no tensor type */
const DTYPES: Readonly<Record<string, TorchDtype | undefined>> = {
  float64: 'F64',
  float32: 'F32',
  float16: 'F16',
  bfloat16: 'BF16',
  int64: 'I64',
  int32: 'I32',
  int16: 'I16',
  int8: 'I8',
  uint64: 'U64',
  uint32: 'U32',
  uint16: 'U16',
  uint8: 'U8',
  bool: 'BOOL',
  complex128: 'C128',
  complex64: 'C64',
  complex32: 'C32',
  float8_e5m2: 'F8_E5M2',
  float8_e4m3fn: 'F8_E4M3',
  float8_e5m2fnuz: 'F8_E5M2FNUZ',
  float8_e4m3fnuz: 'F8_E4M3FNUZ',
  float8_e8m0fnu: 'F8_E8M0',
  float4_e2m1fn_x2: 'F4_X2',
  qint8: 'QI8',
  quint8: 'QU8',
  qint32: 'QI32',
  quint4x2: 'QU4X2',
  quint2x4: 'QU2X4',
  bits8: undefined,
  bits16: undefined,
  bits1x8: undefined,
  bits2x4: undefined,
  bits4x2: undefined,
  uint1: undefined,
  uint2: undefined,
  uint3: undefined,
  uint4: undefined,
  uint5: undefined,
  uint6: undefined,
  uint7: undefined,
  int1: undefined,
  int2: undefined,
  int3: undefined,
  int4: undefined,
  int5: undefined,
  int6: undefined,
  int7: undefined,
};

const TENSOR_CLASSES = [
  'Double',
  'Float',
  'Half',
  'BFloat16',
  'Long',
  'Int',
  'Short',
  'Char',
  'Byte',
  'Bool',
  'ComplexDouble',
  'ComplexFloat',
];

function buildAllowList(): ReadonlyMap<string, GlobalRole> {
  const opaque: GlobalRole = { kind: 'opaque' };
  const m = new Map<string, GlobalRole>([
    ['collections.OrderedDict', { kind: 'dict', type: 'OrderedDict' }],
    ['collections.Counter', { kind: 'dict', type: 'Counter' }],
    ['torch._utils._rebuild_tensor', { kind: 'rebuild-tensor', minArgs: 4, maxArgs: 4 }],
    ['torch._utils._rebuild_tensor_v2', { kind: 'rebuild-tensor', minArgs: 6, maxArgs: 7 }],
    ['torch._utils._rebuild_tensor_v3', { kind: 'rebuild-tensor', minArgs: 7, maxArgs: 8, dtypeArg: 6 }],
    ['torch._utils._rebuild_parameter', { kind: 'rebuild-parameter', args: 3 }],
    ['torch._utils._rebuild_parameter_with_state', { kind: 'rebuild-parameter', args: 4 }],
    ['torch.nn.parameter.Parameter', { kind: 'parameter' }],
    ['torch._tensor._rebuild_from_type_v2', { kind: 'rebuild-from-type' }],
    ['torch.Size', { kind: 'size' }],
    ['builtins.set', { kind: 'set' }],
    ['builtins.bytearray', { kind: 'bytes' }],
    ['_codecs.encode', { kind: 'bytes' }],
    ['builtins.complex', opaque],
    ['torch.Tensor', { kind: 'tensor-class' }],
    ['torch.device', opaque],
    ['torch.serialization._get_layout', opaque],
    ['torch.UntypedStorage', { kind: 'storage-class', dtype: 'U8' }],
    ['torch.storage.UntypedStorage', { kind: 'storage-class', dtype: 'U8' }],
    ['torch.TypedStorage', { kind: 'storage-class', dtype: undefined }],
    ['torch.storage.TypedStorage', { kind: 'storage-class', dtype: undefined }],
  ]);
  // these build quantized, sparse, meta or subclass tensors: allowed, but not a LoRA state dict
  for (const f of [
    '_rebuild_qtensor',
    '_rebuild_sparse_tensor',
    '_rebuild_meta_tensor_no_storage',
    '_rebuild_wrapper_subclass',
    '_rebuild_device_tensor_from_numpy',
    '_rebuild_device_tensor_from_cpu_tensor',
  ]) {
    m.set(`torch._utils.${f}`, opaque);
  }
  for (const [name, dtype] of Object.entries(LEGACY_STORAGES))
    m.set(`torch.${name}`, { kind: 'storage-class', dtype });
  for (const [name, dtype] of Object.entries(DTYPES)) m.set(`torch.${name}`, { kind: 'dtype', dtype });
  for (const t of TENSOR_CLASSES) {
    m.set(`torch.${t}Tensor`, { kind: 'tensor-class' });
    m.set(`torch.cuda.${t}Tensor`, { kind: 'tensor-class' });
  }
  for (const q of [
    'per_tensor_affine',
    'per_tensor_symmetric',
    'per_channel_affine',
    'per_channel_symmetric',
    'per_channel_affine_float_qparams',
  ]) {
    m.set(`torch.${q}`, opaque);
  }
  return m;
}

const ALLOWED_GLOBALS = buildAllowList();

/** Every global a pickle may name, sorted (for the docs and the report). */
export function allowedGlobals(): string[] {
  return [...ALLOWED_GLOBALS.keys()].sort();
}

/** Python 2 module names, as pickle's `_compat_pickle` maps them. */
const MODULE_ALIASES: Readonly<Record<string, string>> = { __builtin__: 'builtins', copy_reg: 'copyreg' };

// ---------------------------------------------------------------------------------------------------
// Opcodes

/** Pickle opcodes (protocols 0–5), as CPython's pickle module defines them. */
export const PICKLE_OPCODES = {
  MARK: 0x28,
  STOP: 0x2e,
  POP: 0x30,
  POP_MARK: 0x31,
  DUP: 0x32,
  FLOAT: 0x46,
  INT: 0x49,
  BININT: 0x4a,
  BININT1: 0x4b,
  LONG: 0x4c,
  BININT2: 0x4d,
  NONE: 0x4e,
  PERSID: 0x50,
  BINPERSID: 0x51,
  REDUCE: 0x52,
  STRING: 0x53,
  BINSTRING: 0x54,
  SHORT_BINSTRING: 0x55,
  UNICODE: 0x56,
  BINUNICODE: 0x58,
  APPEND: 0x61,
  BUILD: 0x62,
  GLOBAL: 0x63,
  DICT: 0x64,
  EMPTY_DICT: 0x7d,
  APPENDS: 0x65,
  GET: 0x67,
  BINGET: 0x68,
  INST: 0x69,
  LONG_BINGET: 0x6a,
  LIST: 0x6c,
  EMPTY_LIST: 0x5d,
  OBJ: 0x6f,
  PUT: 0x70,
  BINPUT: 0x71,
  LONG_BINPUT: 0x72,
  SETITEM: 0x73,
  TUPLE: 0x74,
  EMPTY_TUPLE: 0x29,
  SETITEMS: 0x75,
  BINFLOAT: 0x47,
  PROTO: 0x80,
  NEWOBJ: 0x81,
  EXT1: 0x82,
  EXT2: 0x83,
  EXT4: 0x84,
  TUPLE1: 0x85,
  TUPLE2: 0x86,
  TUPLE3: 0x87,
  NEWTRUE: 0x88,
  NEWFALSE: 0x89,
  LONG1: 0x8a,
  LONG4: 0x8b,
  BINBYTES: 0x42,
  SHORT_BINBYTES: 0x43,
  SHORT_BINUNICODE: 0x8c,
  BINUNICODE8: 0x8d,
  BINBYTES8: 0x8e,
  EMPTY_SET: 0x8f,
  ADDITEMS: 0x90,
  FROZENSET: 0x91,
  NEWOBJ_EX: 0x92,
  STACK_GLOBAL: 0x93,
  MEMOIZE: 0x94,
  FRAME: 0x95,
  BYTEARRAY8: 0x96,
  NEXT_BUFFER: 0x97,
  READONLY_BUFFER: 0x98,
} as const;
const OP = PICKLE_OPCODES;

const OP_NAMES: ReadonlyMap<number, string> = new Map(Object.entries(OP).map(([name, code]) => [code, name]));

function opName(code: number): string {
  return OP_NAMES.get(code) ?? `0x${code.toString(16).padStart(2, '0')}`;
}

// ---------------------------------------------------------------------------------------------------
// Symbolic values

interface DictValue {
  t: 'dict';
  type: 'dict' | 'OrderedDict' | 'Counter';
  entries: [Value, Value][];
  /** position in `entries` of each string key, to apply Python's last-wins and to report it */
  index: Map<string, number>;
  duplicates: string[];
}

interface StorageValue {
  t: 'storage';
  storage: PickleStorage;
  itemSize: number;
}

interface TensorValue {
  t: 'tensor';
  dtype: TorchDtype;
  shape: number[];
  stride: number[];
  storageOffset: number;
  storageKey: string;
}

type Value =
  | { t: 'none' }
  | { t: 'bool' }
  | { t: 'float' }
  /** `undefined` when too long to matter: no size or offset is that large */
  | { t: 'int'; v: bigint | undefined }
  | { t: 'str'; v: string }
  /** `ascii` kept for short values: Python 2 pickles spell the storage tag as bytes */
  | { t: 'bytes'; ascii: string | undefined }
  | { t: 'tuple'; items: Value[] }
  | { t: 'list'; items: Value[] }
  | DictValue
  | { t: 'set' }
  | { t: 'global'; path: string; role: GlobalRole }
  | StorageValue
  | TensorValue
  | { t: 'object'; type: string };

const NONE: Value = { t: 'none' };
const BOOL: Value = { t: 'bool' };
const FLOAT: Value = { t: 'float' };
const SET: Value = { t: 'set' };
const EMPTY_TUPLE_ITEMS: Value[] = [];

/** Ints with more digits than this are kept as "large": no shape, offset or index needs them. */
const MAX_INT_BYTES = 16;
const MAX_REBUILD_NESTING = 4;
/** where torch.load restores a storage's bytes to (a `meta` storage loads without them) */
const STORAGE_LOCATION = /^(?:cpu|(?:cuda|mps|xpu|hpu|npu|privateuseone)(?::\d+)?)$/;

function describe(v: Value): string {
  switch (v.t) {
    case 'none':
      return 'None';
    case 'bool':
      return 'a bool';
    case 'float':
      return 'a float';
    case 'int':
      return 'an int';
    case 'str':
      return `the string ${quoteName(v.v, 60)}`;
    case 'bytes':
      return 'a bytes value';
    case 'tuple':
      return `a ${v.items.length}-tuple`;
    case 'list':
      return 'a list';
    case 'dict':
      return v.type === 'dict' ? 'a dict' : `a ${v.type}`;
    case 'set':
      return 'a set';
    case 'global':
      return `the global ${v.path}`;
    case 'storage':
      return 'a storage';
    case 'tensor':
      return 'a tensor';
    case 'object':
      return `a ${v.type} object`;
  }
}

const latin1 = new TextDecoder('latin1');

// ---------------------------------------------------------------------------------------------------
// The scanner

function pickleError(
  code: PickleErrorCode | 'BIN_STORAGE_MISMATCH',
  message: string,
  at: number,
  details: Record<string, unknown> = {},
): FormatError {
  return new FormatError(code, message, { pointer: String(at), details: { offset: at, ...details } });
}

class Scanner {
  private pos = 0;
  private opStart = 0;
  private op = 0;
  private readonly dv: DataView;
  private readonly stack: Value[] = [];
  /** stack heights at each open MARK */
  private readonly marks: number[] = [];
  private readonly memo = new Map<number, Value>();
  private cells = 0;
  private protocol = 0;
  private frameEnd = -1;
  private readonly storages = new Map<string, StorageValue>();
  private readonly globals = new Set<string>();
  private readonly warnings: TorchBinWarning[] = [];

  constructor(
    private readonly bytes: Uint8Array,
    private readonly limits: Readonly<PickleLimits>,
  ) {
    this.dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  scan(): PickleScanResult {
    const root = this.run();
    if (this.pos < this.bytes.length) {
      // torch.save never writes them: a second pickle, or anything else, for some other reader
      throw pickleError(
        'PICKLE_TRAILING_BYTES',
        `${this.bytes.length - this.pos} bytes follow the pickle's STOP opcode at byte ${this.opStart}; torch.load ignores them, and torch.save never writes them`,
        this.pos,
      );
    }
    return {
      protocol: this.protocol,
      tensors: this.stateDict(root),
      storages: [...this.storages.values()].map((s) => s.storage),
      globals: [...this.globals].sort(),
      warnings: this.warnings,
    };
  }

  // --- errors -------------------------------------------------------------------------------------

  private invalid(message: string): FormatError {
    return pickleError(
      'PICKLE_INVALID',
      `${message} (opcode ${opName(this.op)} at byte ${this.opStart})`,
      this.opStart,
      {
        opcode: opName(this.op),
      },
    );
  }

  private unsafe(message: string, details: Record<string, unknown> = {}): FormatError {
    return pickleError(
      'PICKLE_UNSAFE',
      `${message} (opcode ${opName(this.op)} at byte ${this.opStart})`,
      this.opStart,
      {
        opcode: opName(this.op),
        ...details,
      },
    );
  }

  private tooComplex(what: string, limit: number): FormatError {
    return pickleError(
      'PICKLE_TOO_COMPLEX',
      `the pickle exceeds the scanner's limit of ${limit} ${what} (opcode ${opName(this.op)} at byte ${this.opStart})`,
      this.opStart,
      { limit: what },
    );
  }

  // --- reading ------------------------------------------------------------------------------------

  private need(n: number): void {
    if (n > this.bytes.length - this.pos) {
      throw this.invalid(`the pickle is truncated: ${n} bytes needed, ${this.bytes.length - this.pos} left`);
    }
    if (this.pos < this.frameEnd && this.pos + n > this.frameEnd) throw this.straddle(this.pos + n);
  }

  /**
   * An argument that starts inside a frame and ends past it. CPython's C unpickler (before 3.13.15
   * and 3.14.7), reading torch's `data.pkl` from a BytesIO, drops the rest of the frame and reads the
   * argument from the bytes after it, so the bytes one reader takes as data the other runs as
   * opcodes; newer ones refuse it, as pure-Python pickle always did.
   */
  private straddle(end: number): FormatError {
    return this.unsafe(
      `an argument runs from byte ${this.pos} to ${end}, across the end of its frame at ${this.frameEnd}; CPython's C unpickler reads such a pickle differently (it skips the rest of the frame)`,
    );
  }

  private u8(): number {
    this.need(1);
    return this.bytes[this.pos++] ?? 0;
  }

  private u16(): number {
    this.need(2);
    const v = this.dv.getUint16(this.pos, true);
    this.pos += 2;
    return v;
  }

  private u32(): number {
    this.need(4);
    const v = this.dv.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }

  private i32(): number {
    this.need(4);
    const v = this.dv.getInt32(this.pos, true);
    this.pos += 4;
    return v;
  }

  /** A u64 length; anything beyond the remaining bytes is a truncation, whatever its size. */
  private length64(): number {
    this.need(8);
    const v = this.dv.getBigUint64(this.pos, true);
    this.pos += 8;
    const left = BigInt(this.bytes.length - this.pos);
    if (v > left)
      throw this.invalid(`the pickle is truncated: ${v.toString()} bytes announced, ${left.toString()} left`);
    return Number(v);
  }

  private take(n: number): Uint8Array {
    this.need(n);
    const out = this.bytes.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  /** A protocol-0 argument: the bytes up to and with the next newline, as CPython's readline. */
  private line(): Uint8Array {
    const end = this.bytes.indexOf(0x0a, this.pos);
    if (end < 0) throw this.invalid('the pickle is truncated: a text argument has no terminating newline');
    if (this.pos < this.frameEnd && end + 1 > this.frameEnd) throw this.straddle(end + 1);
    const out = this.bytes.subarray(this.pos, end + 1);
    this.pos = end + 1;
    return out;
  }

  /** A module or attribute name line of GLOBAL or INST, without its newline. */
  private nameLine(): string {
    return this.utf8(this.line().subarray(0, -1));
  }

  // --- the stack ----------------------------------------------------------------------------------

  private get base(): number {
    return this.marks.length === 0 ? 0 : (this.marks[this.marks.length - 1] ?? 0);
  }

  private push(v: Value): void {
    if (this.stack.length >= this.limits.maxStack)
      throw this.tooComplex('stack values', this.limits.maxStack);
    this.stack.push(v);
  }

  private pop(): Value {
    if (this.stack.length <= this.base) throw this.invalid('stack underflow');
    return this.stack.pop() as Value;
  }

  private top(): Value {
    if (this.stack.length <= this.base) throw this.invalid('stack underflow');
    return this.stack[this.stack.length - 1] as Value;
  }

  private setTop(v: Value): void {
    this.stack[this.stack.length - 1] = v;
  }

  private popMark(): Value[] {
    const mark = this.marks.pop();
    if (mark === undefined) throw this.invalid('no MARK to pop to');
    return this.stack.splice(mark);
  }

  private addCells(n: number): void {
    this.cells += n;
    if (this.cells > this.limits.maxCells) throw this.tooComplex('container items', this.limits.maxCells);
  }

  private tuple(items: Value[]): Value {
    this.addCells(items.length);
    return { t: 'tuple', items };
  }

  private memoPut(key: number, v: Value): void {
    if (key >= this.limits.maxMemo) {
      throw this.tooComplex(
        `as the highest memo index (${key} is given; CPython's unpickler allocates memory up to twice the highest index)`,
        this.limits.maxMemo - 1,
      );
    }
    if (!this.memo.has(key) && this.memo.size >= this.limits.maxMemo) {
      throw this.tooComplex('memo entries', this.limits.maxMemo);
    }
    this.memo.set(key, v);
  }

  private memoGet(key: number): Value {
    const v = this.memo.get(key);
    if (v === undefined) throw this.invalid(`memo entry ${key} is read before it is written`);
    return v;
  }

  // --- text arguments (protocol 0) ----------------------------------------------------------------

  /** A text number, as CPython reads it; `what` names it in the error when CPython refuses it. */
  private textInt(value: { t: 'int'; v: bigint | undefined } | { t: 'bool' } | null, raw: Uint8Array): Value {
    if (value === null) {
      throw this.invalid(
        `${opName(this.op)} argument ${quoteName(latin1.decode(raw.subarray(0, -1)), 40)} is not a number CPython reads`,
      );
    }
    return value.t === 'bool' ? BOOL : value;
  }

  private memoKey(raw: Uint8Array): number {
    const key = readMemoIndex(raw);
    if (key === null || key === undefined || key < 0n) {
      throw this.invalid(`memo key ${quoteName(latin1.decode(raw.subarray(0, -1)), 40)} is not a memo index`);
    }
    return key > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(key);
  }

  /** Text CPython decodes as UTF-8 (strictly): a name, a key, a Python 2 string as torch reads it. */
  private utf8(raw: Uint8Array): string {
    const text = decodeUtf8(raw);
    if (text === null) throw this.invalid('a string is not valid UTF-8, which torch.load refuses');
    return text;
  }

  private str(raw: Uint8Array): Value {
    // torch.load decodes Python 2 byte strings as UTF-8, so they become str as well
    return { t: 'str', v: this.utf8(raw) };
  }

  /** The text argument of a STRING or UNICODE opcode, decoded as CPython decodes it. */
  private text(decoded: string | null): Value {
    if (decoded === null)
      throw this.invalid(
        `the ${opName(this.op)} argument is not one CPython decodes (quotes, escapes or UTF-8)`,
      );
    return { t: 'str', v: decoded };
  }

  private bytesValue(raw: Uint8Array): Value {
    return { t: 'bytes', ascii: raw.length <= 32 ? latin1.decode(raw) : undefined };
  }

  private littleInt(raw: Uint8Array): Value {
    if (raw.length > MAX_INT_BYTES) return { t: 'int', v: undefined };
    let v = 0n;
    for (let i = raw.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(raw[i] ?? 0);
    // two's complement, as pickle's decode_long
    if (raw.length > 0 && ((raw[raw.length - 1] ?? 0) & 0x80) !== 0) v -= 1n << BigInt(raw.length * 8);
    return { t: 'int', v };
  }

  // --- globals and calls --------------------------------------------------------------------------

  private global(moduleName: string, name: string): Value {
    const mod = MODULE_ALIASES[moduleName] ?? moduleName;
    const path = `${mod}.${name}`;
    const role = ALLOWED_GLOBALS.get(path);
    if (role === undefined) {
      throw this.unsafe(
        `pickle imports ${quoteName(path).slice(1, -1)}, which is not on the allow-list of PyTorch weights-only globals; unpickling it could run arbitrary code`,
        { global: path },
      );
    }
    this.globals.add(path);
    return { t: 'global', path, role };
  }

  private call(fn: Value, args: Value[], nesting = 0): Value {
    if (fn.t !== 'global') {
      throw this.unsafe(`${opName(this.op)} calls ${describe(fn)}, not an allow-listed global`);
    }
    const role = fn.role;
    switch (role.kind) {
      case 'dict':
        return this.newDict(role.type, args, fn.path);
      case 'rebuild-tensor':
        return this.rebuildTensor(fn.path, role, args);
      case 'rebuild-parameter': {
        const data = args[0];
        if (args.length !== role.args || data?.t !== 'tensor') {
          throw this.invalid(
            `${fn.path} expects (tensor, requires_grad, hooks${role.args === 4 ? ', state' : ''})`,
          );
        }
        if (role.args === 4) this.emptyState(args[3], fn.path);
        return data;
      }
      case 'parameter': {
        const data = args[0];
        return data?.t === 'tensor' ? data : { t: 'object', type: fn.path };
      }
      case 'rebuild-from-type': {
        const [func, newType, inner] = args;
        if (args.length !== 4 || func === undefined || newType === undefined || inner?.t !== 'tuple') {
          throw this.invalid(`${fn.path} expects (func, type, args, state)`);
        }
        if (newType.t !== 'global') {
          throw this.unsafe(`${fn.path} converts to ${describe(newType)}, not an allow-listed global`);
        }
        if (nesting >= MAX_REBUILD_NESTING)
          throw this.tooComplex('nested rebuild calls', MAX_REBUILD_NESTING);
        this.emptyState(args[3], fn.path);
        return this.call(func, inner.items, nesting + 1);
      }
      case 'size': {
        const seq = args[0];
        if (args.length === 0) return this.tuple([]);
        if (args.length === 1 && (seq?.t === 'tuple' || seq?.t === 'list')) return this.tuple([...seq.items]);
        throw this.invalid('torch.Size expects one sequence');
      }
      case 'set':
        return SET;
      case 'bytes':
        // bytearray(n) allocates n zero bytes: only copies of data in the pickle are sizes it bounds
        if (args.some((a) => a.t !== 'str' && a.t !== 'bytes')) {
          throw this.unsafe(
            `${fn.path} is called with ${args.map(describe).join(', ')}; with a number it allocates memory of any size, and torch.save passes it only strings`,
          );
        }
        return { t: 'bytes', ascii: undefined };
      case 'tensor-class':
      case 'storage-class':
        throw this.unsafe(
          `${opName(this.op)} calls ${fn.path}, which allocates memory of any size; torch.save never writes it`,
        );
      case 'dtype':
        throw this.invalid(`${opName(this.op)} calls ${fn.path}, which is not callable`);
      case 'opaque':
        return { t: 'object', type: fn.path };
    }
  }

  /**
   * NEWOBJ and NEWOBJ_EX create with `cls.__new__(cls, *args)` (CPython and torch's weights-only
   * unpickler alike): a dict, set or bytearray comes out empty whatever the arguments, so arguments
   * given to one are refused rather than read as if they were applied.
   */
  private newObject(cls: Value, args: Value[]): Value {
    if (cls.t !== 'global') {
      throw this.unsafe(`${opName(this.op)} instantiates ${describe(cls)}, not an allow-listed class`);
    }
    const kind = cls.role.kind;
    if (
      kind === 'rebuild-tensor' ||
      kind === 'rebuild-parameter' ||
      kind === 'rebuild-from-type' ||
      kind === 'dtype'
    ) {
      throw this.invalid(`${opName(this.op)} instantiates ${cls.path}, which is not a class`);
    }
    if ((kind === 'dict' || kind === 'set' || kind === 'bytes') && args.length > 0) {
      throw this.unsafe(
        `${opName(this.op)} passes arguments to ${cls.path}, which ignores them (cls.__new__): torch would load an empty one`,
      );
    }
    return this.call(cls, args);
  }

  private newDict(type: 'OrderedDict' | 'Counter', args: Value[], path: string): Value {
    const dict: DictValue = { t: 'dict', type, entries: [], index: new Map(), duplicates: [] };
    const init = args[0];
    if (args.length === 0 || init?.t === 'none') return dict;
    if (args.length === 1 && init?.t === 'dict') {
      for (const [k, v] of init.entries) this.setItem(dict, k, v);
      return dict;
    }
    if (args.length === 1 && (init?.t === 'list' || init?.t === 'tuple')) {
      for (const pair of init.items) {
        if ((pair.t !== 'tuple' && pair.t !== 'list') || pair.items.length !== 2) {
          throw this.invalid(`${path} expects key/value pairs, got ${describe(pair)}`);
        }
        this.setItem(dict, pair.items[0] as Value, pair.items[1] as Value);
      }
      return dict;
    }
    throw this.invalid(`${path} is called with arguments it cannot take`);
  }

  private setItem(dict: DictValue, key: Value, value: Value): void {
    if (key.t === 'str') {
      const at = dict.index.get(key.v);
      if (at !== undefined) {
        const entry = dict.entries[at];
        if (entry !== undefined) entry[1] = value;
        if (dict.duplicates.length < 10) dict.duplicates.push(key.v);
        return;
      }
      dict.index.set(key.v, dict.entries.length);
    }
    this.addCells(2);
    dict.entries.push([key, value]);
  }

  private int(v: Value | undefined, what: string, path: string): number {
    if (v?.t !== 'int' || v.v === undefined || v.v < 0n || v.v > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw this.invalid(
        `${path}: ${what} must be a non-negative integer below 2^53, got ${v === undefined ? 'nothing' : describe(v)}`,
      );
    }
    return Number(v.v);
  }

  private ints(v: Value | undefined, what: string, path: string): number[] {
    if (v?.t !== 'tuple' && v?.t !== 'list') {
      throw this.invalid(
        `${path}: ${what} must be a tuple of integers, got ${v === undefined ? 'nothing' : describe(v)}`,
      );
    }
    if (v.items.length > this.limits.maxDims) {
      throw this.invalid(`${path}: ${what} has ${v.items.length} dimensions, above ${this.limits.maxDims}`);
    }
    return v.items.map((item) => this.int(item, `every ${what} entry`, path));
  }

  private rebuildTensor(
    path: string,
    role: Extract<GlobalRole, { kind: 'rebuild-tensor' }>,
    args: Value[],
  ): Value {
    if (args.length < role.minArgs || args.length > role.maxArgs) {
      throw this.invalid(
        `${path} takes ${role.minArgs}${role.maxArgs > role.minArgs ? `–${role.maxArgs}` : ''} arguments, got ${args.length}`,
      );
    }
    const storage = args[0];
    if (storage?.t !== 'storage') {
      throw this.invalid(
        `${path}: the first argument must be a storage, got ${storage === undefined ? 'nothing' : describe(storage)}`,
      );
    }
    const storageOffset = this.int(args[1], 'the storage offset', path);
    const shape = this.ints(args[2], 'size', path);
    const stride = this.ints(args[3], 'stride', path);
    if (shape.length !== stride.length) {
      throw this.invalid(`${path}: size has ${shape.length} dimensions but stride has ${stride.length}`);
    }
    let dtype = storage.storage.dtype;
    let itemSize = storage.itemSize;
    if (role.dtypeArg !== undefined) {
      const d = args[role.dtypeArg];
      if (d?.t !== 'global' || d.role.kind !== 'dtype') {
        throw this.invalid(`${path}: the dtype argument is ${d === undefined ? 'missing' : describe(d)}`);
      }
      if (d.role.dtype === undefined)
        throw this.invalid(`${path}: tensors of type ${d.path} are not supported`);
      dtype = d.role.dtype;
      itemSize = TORCH_DTYPE_SIZES[dtype];
    }
    // the last element the view touches must lie inside the storage
    if (!shape.includes(0)) {
      let last = BigInt(storageOffset);
      for (let i = 0; i < shape.length; i++) last += BigInt((shape[i] ?? 1) - 1) * BigInt(stride[i] ?? 0);
      const needed = (last + 1n) * BigInt(itemSize);
      if (needed > BigInt(storage.storage.byteLength)) {
        throw pickleError(
          'BIN_STORAGE_MISMATCH',
          `a tensor of shape [${shape.join(', ')}] with stride [${stride.join(', ')}] at offset ${storageOffset} reaches byte ${needed.toString()} of storage ${quoteName(storage.storage.key)}, which holds ${storage.storage.byteLength} bytes (opcode ${opName(this.op)} at byte ${this.opStart})`,
          this.opStart,
          { storage: storage.storage.key },
        );
      }
    }
    return { t: 'tensor', dtype, shape, stride, storageOffset, storageKey: storage.storage.key };
  }

  private persistentLoad(pid: Value): Value {
    const tag = pid.t === 'tuple' ? pid.items[0] : undefined;
    const tagText = tag?.t === 'str' ? tag.v : tag?.t === 'bytes' ? tag.ascii : undefined;
    if (pid.t !== 'tuple' || tagText !== 'storage') {
      throw this.unsafe(`the persistent id (${describe(pid)}) is not a ('storage', …) reference`);
    }
    const [, cls, key, location, numelValue] = pid.items;
    if (pid.items.length !== 5)
      throw this.invalid(`a storage reference has ${pid.items.length} fields, not 5`);
    if (cls?.t !== 'global' || cls.role.kind !== 'storage-class') {
      throw this.invalid(
        `a storage reference names ${cls === undefined ? 'nothing' : describe(cls)} as its storage type`,
      );
    }
    if (cls.role.dtype === undefined)
      throw this.invalid(`storage type ${cls.path} does not say its element type`);
    if (key?.t !== 'str' || key.v.length === 0)
      throw this.invalid('a storage key must be a non-empty string');
    if (location?.t !== 'str') throw this.invalid('a storage location must be a string');
    if (!STORAGE_LOCATION.test(location.v)) {
      // "meta" storages load without their bytes: torch would hold no data where the scanner reads some
      throw this.invalid(
        `storage ${quoteName(key.v)} is placed on ${quoteName(location.v, 40)}, not a device torch restores data to`,
      );
    }
    const numel = this.int(numelValue, 'the element count', 'storage reference');
    const dtype = cls.role.dtype;
    const itemSize = TORCH_DTYPE_SIZES[dtype];
    const byteLength = numel * itemSize;
    if (!Number.isSafeInteger(byteLength)) throw this.invalid(`storage ${quoteName(key.v)} is too large`);
    const existing = this.storages.get(key.v);
    if (existing !== undefined) {
      // torch.load keeps the first declaration; a different second one would make our checks lie
      if (existing.storage.dtype !== dtype || existing.storage.numel !== numel) {
        throw pickleError(
          'BIN_STORAGE_MISMATCH',
          `storage ${quoteName(key.v)} is declared as ${existing.storage.numel} × ${existing.storage.dtype} and again as ${numel} × ${dtype} (opcode ${opName(this.op)} at byte ${this.opStart})`,
          this.opStart,
          { storage: key.v },
        );
      }
      return existing;
    }
    const value: StorageValue = {
      t: 'storage',
      storage: { key: key.v, storageType: cls.path, dtype, numel, byteLength, location: location.v },
      itemSize,
    };
    this.storages.set(key.v, value);
    return value;
  }

  /**
   * BUILD: torch.save writes it only to give a state dict its `_metadata` attribute. On a tensor,
   * torch calls `Tensor.set_(*state)` (weights-only too), which can point it at another storage,
   * offset or shape than the one the scanner read; a Parameter's `__setstate__` can replace its data.
   */
  private build(): void {
    const state = this.pop();
    const target = this.top();
    if (target.t === 'tensor') {
      throw this.unsafe(
        'BUILD on a tensor: torch would call Tensor.set_ with the state, which can re-point it at another storage or shape than the scanner reads; torch.save never writes it',
      );
    }
    if (target.t !== 'dict' || target.type === 'dict') {
      throw this.unsafe(
        `BUILD sets the state of ${describe(target)}; only an OrderedDict's attributes (its _metadata) may be set`,
      );
    }
    this.attributes(state, 'BUILD on an OrderedDict');
  }

  /** A state of attributes: a dict of names that are no dunders (or None), only data in it. */
  private attributes(state: Value, what: string): void {
    if (state.t === 'none') return;
    if (state.t !== 'dict') {
      throw this.unsafe(
        `${what} with ${describe(state)} as its state; torch.save writes a dict of attributes`,
      );
    }
    for (const [key] of state.entries) {
      if (key.t !== 'str' || key.v.startsWith('__')) {
        throw this.unsafe(`${what} sets the attribute ${describe(key)}; torch.save never writes it`);
      }
    }
  }

  /**
   * The state a Parameter or tensor subclass is rebuilt with: torch sets every attribute in it, so
   * one named `data` (or anything else) could replace the tensor the scanner read. torch.save writes
   * one only for an object with attributes of its own, which an adapter's weights do not have.
   */
  private emptyState(state: Value | undefined, path: string): void {
    const empty =
      state === undefined ||
      state.t === 'none' ||
      (state.t === 'dict' && state.entries.length === 0) ||
      (state.t === 'tuple' &&
        state.items.every((v) => v.t === 'none' || (v.t === 'dict' && v.entries.length === 0)));
    if (!empty) {
      throw this.unsafe(
        `${path} rebuilds a tensor with ${describe(state)} as its state, whose attributes torch would set on it (a "data" one replaces the tensor)`,
      );
    }
  }

  private dictTarget(): DictValue {
    const target = this.top();
    if (target.t !== 'dict')
      throw this.unsafe(`${opName(this.op)} on ${describe(target)}: only dicts may be filled`);
    return target;
  }

  private listTarget(): Value[] {
    const target = this.top();
    if (target.t !== 'list')
      throw this.unsafe(`${opName(this.op)} on ${describe(target)}: only lists may be appended to`);
    return target.items;
  }

  // --- the loop -----------------------------------------------------------------------------------

  private run(): Value {
    let count = 0;
    for (;;) {
      if (++count > this.limits.maxOpcodes) throw this.tooComplex('opcodes', this.limits.maxOpcodes);
      this.opStart = this.pos;
      if (this.pos >= this.bytes.length) {
        this.op = OP.STOP;
        throw this.invalid('the pickle ends without a STOP opcode: it is truncated');
      }
      this.op = this.bytes[this.pos++] ?? 0;
      if (this.frameEnd >= 0 && this.opStart >= this.frameEnd) this.frameEnd = -1;
      switch (this.op) {
        case OP.PROTO: {
          const proto = this.u8();
          if (proto > 5) throw this.invalid(`unsupported pickle protocol ${proto}`);
          // CPython keeps the last one, and reads names by it
          this.protocol = proto;
          break;
        }
        case OP.FRAME: {
          // CPython's C unpickler (before 3.13.15 and 3.14.7) may then drop the rest of this frame
          if (this.frameEnd > this.pos)
            throw this.unsafe(
              'a new frame begins before the current one ends, which unpicklers read differently',
            );
          const length = this.length64();
          this.frameEnd = this.pos + length;
          break;
        }
        case OP.STOP:
          return this.pop();

        // --- stack and memo
        case OP.MARK:
          if (this.marks.length >= this.limits.maxMarks)
            throw this.tooComplex('open marks', this.limits.maxMarks);
          this.marks.push(this.stack.length);
          break;
        case OP.POP:
          if (this.stack.length > this.base) this.stack.pop();
          else this.popMark();
          break;
        case OP.POP_MARK:
          this.popMark();
          break;
        case OP.DUP:
          this.push(this.top());
          break;
        case OP.PUT:
          this.memoPut(this.memoKey(this.line()), this.top());
          break;
        case OP.BINPUT:
          this.memoPut(this.u8(), this.top());
          break;
        case OP.LONG_BINPUT:
          this.memoPut(this.u32(), this.top());
          break;
        case OP.MEMOIZE:
          this.memoPut(this.memo.size, this.top());
          break;
        case OP.GET:
          this.push(this.memoGet(this.memoKey(this.line())));
          break;
        case OP.BINGET:
          this.push(this.memoGet(this.u8()));
          break;
        case OP.LONG_BINGET:
          this.push(this.memoGet(this.u32()));
          break;

        // --- scalars
        case OP.NONE:
          this.push(NONE);
          break;
        case OP.NEWTRUE:
        case OP.NEWFALSE:
          this.push(BOOL);
          break;
        case OP.INT: {
          const raw = this.line();
          this.push(this.textInt(readInt(raw), raw));
          break;
        }
        case OP.LONG: {
          const raw = this.line();
          this.push(this.textInt(readLong(raw), raw));
          break;
        }
        case OP.BININT:
          this.push({ t: 'int', v: BigInt(this.i32()) });
          break;
        case OP.BININT1:
          this.push({ t: 'int', v: BigInt(this.u8()) });
          break;
        case OP.BININT2:
          this.push({ t: 'int', v: BigInt(this.u16()) });
          break;
        case OP.LONG1:
          this.push(this.littleInt(this.take(this.u8())));
          break;
        case OP.LONG4: {
          const n = this.i32();
          if (n < 0) throw this.invalid('LONG4 has a negative length');
          this.push(this.littleInt(this.take(n)));
          break;
        }
        case OP.FLOAT: {
          const raw = this.line();
          if (!isFloat(raw)) {
            throw this.invalid(
              `FLOAT argument ${quoteName(latin1.decode(raw.subarray(0, -1)), 40)} is not a number CPython reads`,
            );
          }
          this.push(FLOAT);
          break;
        }
        case OP.BINFLOAT:
          this.take(8);
          this.push(FLOAT);
          break;

        // --- strings and bytes
        case OP.STRING:
          this.push(this.text(readQuoted(this.line())));
          break;
        case OP.BINSTRING: {
          const n = this.i32();
          if (n < 0) throw this.invalid('BINSTRING has a negative length');
          this.push(this.str(this.take(n)));
          break;
        }
        case OP.SHORT_BINSTRING:
          this.push(this.str(this.take(this.u8())));
          break;
        case OP.UNICODE:
          this.push(this.text(readRawUnicode(this.line())));
          break;
        case OP.BINUNICODE:
          this.push(this.str(this.take(this.u32())));
          break;
        case OP.SHORT_BINUNICODE:
          this.push(this.str(this.take(this.u8())));
          break;
        case OP.BINUNICODE8:
          this.push(this.str(this.take(this.length64())));
          break;
        case OP.BINBYTES:
          this.push(this.bytesValue(this.take(this.u32())));
          break;
        case OP.SHORT_BINBYTES:
          this.push(this.bytesValue(this.take(this.u8())));
          break;
        case OP.BINBYTES8:
        case OP.BYTEARRAY8:
          this.push(this.bytesValue(this.take(this.length64())));
          break;
        case OP.READONLY_BUFFER:
          this.top();
          break;

        // --- containers
        case OP.EMPTY_TUPLE:
          this.push({ t: 'tuple', items: EMPTY_TUPLE_ITEMS });
          break;
        case OP.TUPLE:
          this.push(this.tuple(this.popMark()));
          break;
        case OP.TUPLE1: {
          const a = this.pop();
          this.push(this.tuple([a]));
          break;
        }
        case OP.TUPLE2: {
          const b = this.pop();
          const a = this.pop();
          this.push(this.tuple([a, b]));
          break;
        }
        case OP.TUPLE3: {
          const c = this.pop();
          const b = this.pop();
          const a = this.pop();
          this.push(this.tuple([a, b, c]));
          break;
        }
        case OP.EMPTY_LIST:
          this.push({ t: 'list', items: [] });
          break;
        case OP.LIST: {
          const items = this.popMark();
          this.addCells(items.length);
          this.push({ t: 'list', items });
          break;
        }
        case OP.APPEND: {
          const v = this.pop();
          this.listTarget().push(v);
          this.addCells(1);
          break;
        }
        case OP.APPENDS: {
          const items = this.popMark();
          const list = this.listTarget();
          this.addCells(items.length);
          for (const item of items) list.push(item);
          break;
        }
        case OP.EMPTY_DICT:
          this.push({ t: 'dict', type: 'dict', entries: [], index: new Map(), duplicates: [] });
          break;
        case OP.DICT: {
          const items = this.popMark();
          if (items.length % 2 !== 0) throw this.invalid('DICT has an odd number of items');
          const dict: DictValue = { t: 'dict', type: 'dict', entries: [], index: new Map(), duplicates: [] };
          for (let i = 0; i < items.length; i += 2)
            this.setItem(dict, items[i] as Value, items[i + 1] as Value);
          this.push(dict);
          break;
        }
        case OP.SETITEM: {
          const v = this.pop();
          const k = this.pop();
          this.setItem(this.dictTarget(), k, v);
          break;
        }
        case OP.SETITEMS: {
          const items = this.popMark();
          if (items.length % 2 !== 0) throw this.invalid('SETITEMS has an odd number of items');
          const dict = this.dictTarget();
          for (let i = 0; i < items.length; i += 2)
            this.setItem(dict, items[i] as Value, items[i + 1] as Value);
          break;
        }
        case OP.EMPTY_SET:
          this.push(SET);
          break;
        case OP.FROZENSET:
          this.addCells(this.popMark().length);
          this.push(SET);
          break;
        case OP.ADDITEMS: {
          const items = this.popMark();
          const target = this.top();
          if (target.t !== 'set')
            throw this.unsafe(`ADDITEMS on ${describe(target)}: only sets may be added to`);
          this.addCells(items.length);
          break;
        }

        // --- globals, calls, persistent ids
        case OP.GLOBAL: {
          const moduleName = this.nameLine();
          const name = this.nameLine();
          this.push(this.global(moduleName, name));
          break;
        }
        case OP.STACK_GLOBAL: {
          const name = this.pop();
          const moduleName = this.pop();
          // only strings straight from the stream (or the memo) can name a global: nothing computed
          if (moduleName.t !== 'str' || name.t !== 'str') {
            throw this.unsafe(
              `STACK_GLOBAL with a non-literal module or name (${describe(moduleName)}, ${describe(name)})`,
            );
          }
          this.push(this.global(moduleName.v, name.v));
          break;
        }
        case OP.REDUCE: {
          const args = this.pop();
          const fn = this.top();
          if (fn.t !== 'global')
            throw this.unsafe(`REDUCE calls ${describe(fn)}, not an allow-listed global`);
          if (args.t !== 'tuple') throw this.invalid(`REDUCE arguments are ${describe(args)}, not a tuple`);
          this.setTop(this.call(fn, args.items));
          break;
        }
        case OP.NEWOBJ: {
          const args = this.pop();
          const cls = this.pop();
          if (cls.t !== 'global')
            throw this.unsafe(`NEWOBJ instantiates ${describe(cls)}, not an allow-listed class`);
          if (args.t !== 'tuple') throw this.invalid(`NEWOBJ arguments are ${describe(args)}, not a tuple`);
          this.push(this.newObject(cls, args.items));
          break;
        }
        case OP.NEWOBJ_EX: {
          const kwargs = this.pop();
          const args = this.pop();
          const cls = this.pop();
          if (cls.t !== 'global')
            throw this.unsafe(`NEWOBJ_EX instantiates ${describe(cls)}, not an allow-listed class`);
          if (args.t !== 'tuple' || kwargs.t !== 'dict')
            throw this.invalid('NEWOBJ_EX needs an argument tuple and a keyword dict');
          if (kwargs.entries.length > 0)
            throw this.unsafe(
              `NEWOBJ_EX passes keyword arguments to ${cls.path}; torch.save never writes them`,
            );
          this.push(this.newObject(cls, args.items));
          break;
        }
        case OP.INST: {
          const moduleName = this.nameLine();
          const name = this.nameLine();
          const cls = this.global(moduleName, name);
          this.push(this.call(cls, this.popMark()));
          break;
        }
        case OP.OBJ: {
          const items = this.popMark();
          const cls = items[0];
          if (cls === undefined) throw this.invalid('OBJ without a class');
          if (cls.t !== 'global')
            throw this.unsafe(`OBJ instantiates ${describe(cls)}, not an allow-listed class`);
          this.push(this.call(cls, items.slice(1)));
          break;
        }
        case OP.BUILD:
          this.build();
          break;
        case OP.BINPERSID:
          this.push(this.persistentLoad(this.pop()));
          break;
        case OP.PERSID:
          throw this.unsafe('a text persistent id (PERSID): only ("storage", …) tuples are allowed');
        case OP.EXT1:
        case OP.EXT2:
        case OP.EXT4:
          throw this.unsafe(
            `${opName(this.op)} loads a global from the copyreg extension registry, which cannot be checked`,
          );
        case OP.NEXT_BUFFER:
          throw this.unsafe('NEXT_BUFFER asks for an out-of-band buffer, which torch.save never writes');
        default:
          throw this.unsafe('an unknown opcode: not one of pickle protocols 0–5');
      }
    }
  }

  // --- the result ---------------------------------------------------------------------------------

  private stateDict(root: Value): PickleTensor[] {
    const at = this.opStart;
    if (root.t !== 'dict' || root.type === 'Counter') {
      throw pickleError(
        'PICKLE_NOT_STATE_DICT',
        `the pickle holds ${describe(root)}, not a state dict of tensors`,
        at,
      );
    }
    const first = root.duplicates[0];
    if (first !== undefined) {
      throw pickleError(
        'PICKLE_DUPLICATE_KEY',
        `the state dict sets ${quoteName(first)} more than once; torch.load would keep only the last`,
        at,
        { keys: root.duplicates },
      );
    }
    const tensors: PickleTensor[] = [];
    for (const [key, value] of root.entries) {
      if (key.t !== 'str') {
        throw pickleError(
          'PICKLE_NOT_STATE_DICT',
          `the state dict has ${describe(key)} as a key, not a tensor name`,
          at,
        );
      }
      if (value.t !== 'tensor') {
        throw pickleError(
          'PICKLE_NOT_STATE_DICT',
          `state dict entry ${quoteName(key.v)} holds ${describe(value)}, not a dense tensor`,
          at,
          { key: key.v },
        );
      }
      tensors.push({
        name: key.v,
        dtype: value.dtype,
        shape: value.shape,
        stride: value.stride,
        storageOffset: value.storageOffset,
        storageKey: value.storageKey,
      });
    }
    return tensors;
  }
}

/**
 * Scans a pickle opcode by opcode, without executing it, and returns the state dict it describes.
 * Throws `FormatError` PICKLE_UNSAFE, PICKLE_INVALID, PICKLE_TOO_COMPLEX, PICKLE_NOT_STATE_DICT,
 * PICKLE_DUPLICATE_KEY or BIN_STORAGE_MISMATCH.
 */
export function scanPickle(bytes: Uint8Array, limits: Partial<PickleLimits> = {}): PickleScanResult {
  return new Scanner(bytes, { ...DEFAULT_PICKLE_LIMITS, ...limits }).scan();
}
