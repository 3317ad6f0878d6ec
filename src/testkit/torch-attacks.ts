/**
 * Hostile `.bin` files, one per known class of attack on pickle scanners (learnt from public
 * scanners' test suites and advisories, PyTorch's weights-only unpickler, CPython's unpickler and
 * torch's zip reader; no code of theirs is used). Each is a whole torch.save-shaped archive, written as
 * bytes from code and only ever scanned: nothing here or in the tests unpickles one, and a payload is
 * a harmless `builtins.print`.
 *
 * `torch` says what a real torch.load did with such a file when it was tried while the scanner was
 * written (torch 2.13 and 1.13 on CPython 3.11; "non-WO" is `weights_only=False`, the default before
 * torch 2.6, "WO" `weights_only=True`); `expect` is what the scanner must do: refuse with a code, or
 * read exactly the tensors torch loads.
 */
import type { Code } from '../codes.js';
import { PickleBuilder, PICKLE_OP, torchArchiveEntries } from './torch-bin.js';
import { zipBytes, type ZipInputEntry, type ZipWriteOptions } from './zip-writer.js';

export interface TorchAttack {
  id: string;
  title: string;
  /** what torch.load did with it */
  torch: string;
  bytes: Uint8Array;
  expect: { code: Code } | { shapes: Record<string, number[]> };
}

type AttackSpec = Omit<TorchAttack, 'bytes'> & { build: () => Uint8Array };

const OP = PICKLE_OP;
const ascii = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'latin1'));

/** A storage reference ('storage', FloatStorage, key, 'cpu', numel), as BINPERSID pushes it. */
function storage(p: PickleBuilder, key: string, numel: number, cls = 'FloatStorage'): PickleBuilder {
  p.op(OP.MARK).str('storage').global('torch', cls).str(key).str('cpu').int(numel).op(OP.TUPLE);
  return p.op(OP.BINPERSID);
}

/** `_rebuild_tensor_v2(storage, offset, shape, stride, False, OrderedDict())` on the stack. */
function tensor(
  p: PickleBuilder,
  key: string,
  numel: number,
  shape: readonly number[] = [numel],
  stride: readonly number[] = [1],
): PickleBuilder {
  p.global('torch._utils', '_rebuild_tensor_v2').op(OP.MARK);
  storage(p, key, numel).int(0).intTuple(shape).intTuple(stride).op(OP.NEWFALSE);
  p.global('collections', 'OrderedDict').op(OP.EMPTY_TUPLE).op(OP.REDUCE);
  return p.op(OP.TUPLE).op(OP.REDUCE);
}

/** `{'w': <4 floats in storage 0>}` set into the dict on top of the stack, then STOP. */
function finish(p: PickleBuilder): Uint8Array {
  p.str('w');
  tensor(p, '0', 4);
  return p.op(OP.SETITEM).stop().bytes();
}

/** A torch.save archive around `pickle`: `storages[i]` is `data/<i>` (default: 16 bytes as `data/0`). */
function archive(
  pickle: Uint8Array,
  storages: readonly Uint8Array[] = [new Uint8Array(16)],
  extra: readonly ZipInputEntry[] = [],
  options: ZipWriteOptions = {},
): Uint8Array {
  return zipBytes([...torchArchiveEntries(pickle, storages), ...extra], { descriptors: true, ...options });
}

function cleanPickle(): Uint8Array {
  return finish(new PickleBuilder(2).proto().op(OP.EMPTY_DICT));
}

/** A pickle that runs `print` when loaded: what a payload entry holds. */
function payloadPickle(): Uint8Array {
  const p = new PickleBuilder(2).proto().op(OP.EMPTY_DICT).str('w');
  p.global('builtins', 'print').str('owned').op(OP.TUPLE1).op(OP.REDUCE);
  return p.op(OP.SETITEM).stop().bytes();
}

/** A pickle whose `w` is 4 floats in storage 0 with a size written as protocol-0 INT `text`. */
function textSize(text: string): Uint8Array {
  const p = new PickleBuilder(2).proto().op(OP.EMPTY_DICT).str('w');
  p.global('torch._utils', '_rebuild_tensor_v2').op(OP.MARK);
  storage(p, '0', 16).int(0);
  p.op(OP.INT).line(text).op(OP.TUPLE1).intTuple([1]).op(OP.NEWFALSE);
  p.global('collections', 'OrderedDict').op(OP.EMPTY_TUPLE).op(OP.REDUCE).op(OP.TUPLE).op(OP.REDUCE);
  return p.op(OP.SETITEM).stop().bytes();
}

/** FRAME with the 8-byte length `n` */
function frame(p: PickleBuilder, n: number): PickleBuilder {
  return p.raw(OP.FRAME, n, n >>> 8, 0, 0, 0, 0, 0, 0);
}

const PICKLE_ATTACKS: readonly AttackSpec[] = [
  {
    id: 'frame-straddle',
    title: 'a BINBYTES length runs past the end of its frame (CPython gh-154848)',
    torch:
      'non-WO (2.13 and 1.13 on CPython 3.11): the C unpickler drops the rest of the frame, reads a zero length from the next bytes and runs the hidden print; WO: refused (FRAME unsupported)',
    build: () =>
      archive(
        (() => {
          // linear readers see 12 bytes of data; CPython's C reader sees none, then the hidden call
          const hidden = [OP.GLOBAL, ...ascii('builtins\nprint\n'), OP.NONE, OP.TUPLE1, OP.REDUCE, OP.POP];
          const p = new PickleBuilder(2).proto(4).op(OP.MARK);
          frame(p, 2).raw(OP.BINBYTES, hidden.length + 1, 0, 0, 0, 0, ...hidden, OP.POP_MARK);
          return finish(p.op(OP.EMPTY_DICT));
        })(),
      ),
    expect: { code: 'PICKLE_UNSAFE' },
  },
  {
    id: 'frame-line',
    title: 'a GLOBAL line split by the end of its frame',
    torch:
      'non-WO (pre-fix C): the line is read again from after the frame, so a linear reader sees collections.OrderedDict and CPython "lections"',
    build: () =>
      archive(
        (() => {
          const p = new PickleBuilder(2).proto(4);
          frame(p, 4).raw(OP.GLOBAL, ...ascii('col'));
          return finish(
            p
              .raw(...ascii('lections\nOrderedDict\n'))
              .op(OP.POP)
              .op(OP.EMPTY_DICT),
          );
        })(),
      ),
    expect: { code: 'PICKLE_UNSAFE' },
  },
  {
    id: 'frame-in-frame',
    title: 'a FRAME opened before the current frame ends',
    torch: 'non-WO (pre-fix C): a frame longer than what is left drops the old frame’s tail',
    build: () =>
      archive(
        (() => {
          const p = new PickleBuilder(2).proto(4);
          frame(p, 12);
          frame(p, 1).op(OP.EMPTY_DICT);
          return finish(p);
        })(),
      ),
    expect: { code: 'PICKLE_UNSAFE' },
  },
  {
    id: 'second-pickle',
    title: 'a second pickle after STOP in data.pkl',
    torch: 'torch reads the first and ignores the rest; a scanner that stops at STOP misses the second',
    build: () => archive(Buffer.concat([cleanPickle(), payloadPickle()])),
    expect: { code: 'PICKLE_TRAILING_BYTES' },
  },
  {
    id: 'build-on-tensor',
    title: 'BUILD on a rebuilt tensor re-points it (Tensor.set_)',
    torch: 'every torch (WO too) loads w as 64 floats of storage 1, not 4 of storage 0',
    build: () =>
      archive(
        (() => {
          const p = new PickleBuilder(2).proto().op(OP.EMPTY_DICT).str('w');
          tensor(p, '0', 4).op(OP.MARK);
          storage(p, '1', 64).int(0).intTuple([64]).intTuple([1]).op(OP.TUPLE).op(OP.BUILD);
          return p.op(OP.SETITEM).stop().bytes();
        })(),
        [new Uint8Array(16), new Uint8Array(256)],
      ),
    expect: { code: 'PICKLE_UNSAFE' },
  },
  {
    id: 'parameter-state-data',
    title: "_rebuild_parameter_with_state with the state {'data': another tensor}",
    torch: 'torch 2.13 (WO too) sets param.data from the state: w loads as 64 floats',
    build: () =>
      archive(
        (() => {
          const p = new PickleBuilder(2).proto().op(OP.EMPTY_DICT).str('w');
          p.global('torch._utils', '_rebuild_parameter_with_state').op(OP.MARK);
          tensor(p, '0', 4).op(OP.NEWFALSE);
          p.global('collections', 'OrderedDict').op(OP.EMPTY_TUPLE).op(OP.REDUCE);
          p.op(OP.EMPTY_DICT).str('data');
          tensor(p, '1', 64).op(OP.SETITEM).op(OP.TUPLE).op(OP.REDUCE);
          return p.op(OP.SETITEM).stop().bytes();
        })(),
        [new Uint8Array(16), new Uint8Array(256)],
      ),
    expect: { code: 'PICKLE_UNSAFE' },
  },
  {
    id: 'from-type-state-data',
    title: "_rebuild_from_type_v2 with the state {'data': another tensor}",
    torch: 'torch 2.13: the state replaces the data after the rebuild',
    build: () =>
      archive(
        (() => {
          const p = new PickleBuilder(2).proto().op(OP.EMPTY_DICT).str('w');
          p.global('torch._tensor', '_rebuild_from_type_v2').op(OP.MARK);
          p.global('torch._utils', '_rebuild_tensor_v2').global('torch.nn.parameter', 'Parameter');
          p.op(OP.MARK);
          storage(p, '0', 4).int(0).intTuple([4]).intTuple([1]).op(OP.NEWFALSE);
          p.global('collections', 'OrderedDict').op(OP.EMPTY_TUPLE).op(OP.REDUCE).op(OP.TUPLE);
          p.op(OP.EMPTY_DICT).str('data');
          tensor(p, '1', 64).op(OP.SETITEM).op(OP.TUPLE).op(OP.REDUCE);
          return p.op(OP.SETITEM).stop().bytes();
        })(),
        [new Uint8Array(16), new Uint8Array(256)],
      ),
    expect: { code: 'PICKLE_UNSAFE' },
  },
  {
    id: 'newobj-ordereddict-args',
    title: 'NEWOBJ(OrderedDict, ([(name, tensor)],)): arguments __new__ ignores',
    torch: 'every torch loads an empty OrderedDict',
    build: () =>
      archive(
        (() => {
          const p = new PickleBuilder(2).proto().global('collections', 'OrderedDict');
          p.op(OP.EMPTY_LIST).str('w');
          tensor(p, '0', 4).op(OP.TUPLE2).op(OP.APPEND).op(OP.TUPLE1).op(OP.NEWOBJ);
          return p.stop().bytes();
        })(),
      ),
    expect: { code: 'PICKLE_UNSAFE' },
  },
  {
    id: 'int-octal',
    title: 'protocol-0 INT "010" as a size',
    torch: 'non-WO reads 8 (C strtol, base 0); WO refuses INT',
    build: () => archive(textSize('010'), [new Uint8Array(64)]),
    expect: { shapes: { w: [8] } },
  },
  {
    id: 'int-nul',
    title: 'protocol-0 INT "4\\0zz": C stops at the NUL',
    torch: 'non-WO reads 4',
    build: () => archive(textSize('4\0zz'), [new Uint8Array(64)]),
    expect: { shapes: { w: [4] } },
  },
  {
    id: 'int-bool',
    title: 'protocol-0 INT " 1" is a bool to CPython',
    torch: 'non-WO: TypeError (a bool as a size)',
    build: () => archive(textSize(' 1'), [new Uint8Array(64)]),
    expect: { code: 'PICKLE_INVALID' },
  },
  {
    id: 'int-0x_',
    title: 'protocol-0 INT "0x_"',
    torch: 'ValueError; the scanner once threw a raw SyntaxError from BigInt("0x")',
    build: () => archive(textSize('0x_'), [new Uint8Array(64)]),
    expect: { code: 'PICKLE_INVALID' },
  },
  {
    id: 'float-overflow',
    title: 'protocol-0 FLOAT "1e500"',
    torch: 'OverflowError (pure-Python pickle would read inf)',
    build: () =>
      archive(finish(new PickleBuilder(2).proto().op(OP.FLOAT).line('1e500').op(OP.POP).op(OP.EMPTY_DICT))),
    expect: { code: 'PICKLE_INVALID' },
  },
  {
    id: 'invalid-utf8-key',
    title: 'a tensor name that is not UTF-8',
    torch: 'UnicodeDecodeError; a lenient decoder would read U+FFFD',
    build: () =>
      archive(
        (() => {
          const p = new PickleBuilder(2).proto().op(OP.EMPTY_DICT).raw(OP.SHORT_BINSTRING, 2, 0x77, 0xff);
          return tensor(p, '0', 4).op(OP.SETITEM).stop().bytes();
        })(),
      ),
    expect: { code: 'PICKLE_INVALID' },
  },
  {
    id: 'memo-index-bomb',
    title: 'LONG_BINPUT 0x10000000: one memo entry at a huge index',
    torch: 'non-WO allocates 16 bytes per index below it (4.4 GB resident); WO refuses',
    build: () =>
      archive(finish(new PickleBuilder(2).proto().op(OP.EMPTY_DICT).raw(OP.LONG_BINPUT, 0, 0, 0, 0x10))),
    expect: { code: 'PICKLE_TOO_COMPLEX' },
  },
  {
    id: 'bytearray-bomb',
    title: "bytearray(2_000_000_000) in the state dict's BUILD state",
    torch: 'WO and non-WO allocate and zero 2 GB',
    build: () =>
      archive(
        (() => {
          const p = new PickleBuilder(2).proto().global('collections', 'OrderedDict').op(OP.EMPTY_TUPLE);
          p.op(OP.REDUCE).str('w');
          tensor(p, '0', 4).op(OP.SETITEM).op(OP.EMPTY_DICT).str('_metadata');
          p.global('builtins', 'bytearray').int(2_000_000_000).op(OP.TUPLE1).op(OP.REDUCE);
          return p.op(OP.SETITEM).op(OP.BUILD).stop().bytes();
        })(),
      ),
    expect: { code: 'PICKLE_UNSAFE' },
  },
  {
    id: 'tensor-class-bomb',
    title: 'torch.FloatTensor(2_000_000_000), popped',
    torch: 'allocates 8 GB, then drops it',
    build: () =>
      archive(
        finish(
          new PickleBuilder(2)
            .proto()
            .global('torch', 'FloatTensor')
            .int(2_000_000_000)
            .op(OP.TUPLE1)
            .op(OP.REDUCE)
            .op(OP.POP)
            .op(OP.EMPTY_DICT),
        ),
      ),
    expect: { code: 'PICKLE_UNSAFE' },
  },
  {
    id: 'meta-storage',
    title: 'a storage on the "meta" device',
    torch: 'torch 2.13 loads w on the meta device, without data, where the scanner would read the record',
    build: () =>
      archive(
        (() => {
          const p = new PickleBuilder(2).proto().op(OP.EMPTY_DICT).str('w');
          p.global('torch._utils', '_rebuild_tensor_v2').op(OP.MARK).op(OP.MARK);
          p.str('storage').global('torch', 'FloatStorage').str('0').str('meta').int(4).op(OP.TUPLE);
          p.op(OP.BINPERSID).int(0).intTuple([4]).intTuple([1]).op(OP.NEWFALSE);
          p.global('collections', 'OrderedDict').op(OP.EMPTY_TUPLE).op(OP.REDUCE).op(OP.TUPLE).op(OP.REDUCE);
          return p.op(OP.SETITEM).stop().bytes();
        })(),
      ),
    expect: { code: 'PICKLE_INVALID' },
  },
  {
    id: 'unused-storage-in-pickle',
    title: 'a storage the pickle loads but leaves out of the state dict',
    torch: 'reads the record and drops it: a place for data no tensor shows',
    build: () =>
      archive(finish(storage(new PickleBuilder(2).proto(), '1', 4).op(OP.POP).op(OP.EMPTY_DICT)), [
        new Uint8Array(16),
        new Uint8Array(16),
      ]),
    expect: { code: 'BIN_UNREFERENCED_STORAGE' },
  },
];

/** torch.save's entries of a clean archive, with `extra` entries put in at `at`. */
function entries(extra: readonly ZipInputEntry[] = [], at = 1): ZipInputEntry[] {
  const all = torchArchiveEntries(cleanPickle(), [new Uint8Array(16)]);
  all.splice(at, 0, ...extra);
  return all;
}

function tarHeader(name: Uint8Array): Uint8Array {
  const h = new Uint8Array(512);
  h.set(name, 0);
  h.set(ascii('0000644\0'), 100);
  h.set(ascii('ustar\0'), 257);
  return h;
}

/** Where each local header of `bytes` is, by its name. */
function localHeaders(bytes: Uint8Array): Map<string, { offset: number; size: number; crc: number }> {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Map<string, { offset: number; size: number; crc: number }>();
  for (let i = 0; i + 30 <= bytes.length; i++) {
    if (dv.getUint32(i, true) !== 0x04034b50) continue;
    const name = Buffer.from(bytes.subarray(i + 30, i + 30 + dv.getUint16(i + 26, true))).toString('latin1');
    out.set(name, { offset: i, size: dv.getUint32(i + 22, true), crc: dv.getUint32(i + 14, true) });
  }
  return out;
}

/**
 * A clean archive whose end-record comment holds a second central directory (the payload pickle,
 * written in the file but left out of the real directory, as data.pkl) and an end record for it,
 * followed by two bytes so that only a reader that ignores the comment length takes it.
 */
function commentEndRecord(): Uint8Array {
  const listed = [{ name: 'archive/data.pkl', local: 'archive/payload.pkl' }, { name: 'archive/version' }];
  const commentLength = listed.reduce((n, e) => n + 46 + e.name.length, 0) + 22 + 2;
  const base = zipBytes(entries([{ name: 'archive/payload.pkl', data: payloadPickle(), hidden: true }], 0), {
    comment: new Uint8Array(commentLength),
  });
  const locals = localHeaders(base);
  const cdOffset = base.length - commentLength;
  const records = listed.map((e) => {
    const local = locals.get(e.local ?? e.name);
    const r = new Uint8Array(46 + e.name.length);
    const dv = new DataView(r.buffer);
    dv.setUint32(0, 0x02014b50, true);
    dv.setUint16(4, 20, true);
    dv.setUint16(6, 20, true);
    dv.setUint32(16, local?.crc ?? 0, true);
    dv.setUint32(20, local?.size ?? 0, true);
    dv.setUint32(24, local?.size ?? 0, true);
    dv.setUint16(28, e.name.length, true);
    dv.setUint32(42, local?.offset ?? 0, true);
    r.set(ascii(e.name), 46);
    return r;
  });
  const cd = Buffer.concat(records);
  const end = new Uint8Array(22);
  const ev = new DataView(end.buffer);
  ev.setUint32(0, 0x06054b50, true);
  ev.setUint16(8, listed.length, true);
  ev.setUint16(10, listed.length, true);
  ev.setUint32(12, cd.length, true);
  ev.setUint32(16, cdOffset, true);
  const out = base.slice();
  out.set(Buffer.concat([cd, end, ascii('\0\0')]), cdOffset);
  return out;
}

const ZIP_ATTACKS: readonly AttackSpec[] = [
  {
    id: 'case-variant-pickle',
    title: 'archive/data.pkl beside archive/Data.pkl (and fillers)',
    torch: "non-WO: miniz's case-insensitive binary search picked Data.pkl with 5 fillers and ran it",
    build: () =>
      zipBytes(
        entries([
          ...Array.from({ length: 5 }, (_, i) => ({ name: `archive/f${i}`, data: new Uint8Array(1) })),
          { name: 'archive/Data.pkl', data: payloadPickle() },
        ]),
      ),
    expect: { code: 'BIN_ZIP_INVALID' },
  },
  {
    id: 'case-variant-byteorder',
    title: 'byteorder beside BYTEORDER saying "big"',
    torch: 'torch 2.x byte-swaps every storage when the record it finds says big',
    build: () => zipBytes(entries([{ name: 'archive/BYTEORDER', data: ascii('big') }], 2)),
    expect: { code: 'BIN_ZIP_INVALID' },
  },
  {
    id: 'duplicate-name',
    title: 'two central entries named archive/data.pkl',
    torch: 'miniz returns whichever its binary search meets',
    build: () => zipBytes(entries([{ name: 'archive/data.pkl', data: payloadPickle() }])),
    expect: { code: 'BIN_ZIP_INVALID' },
  },
  {
    id: 'comment-end-record',
    title: 'a second central directory and end record inside the end-record comment',
    torch:
      'non-WO: miniz takes the last end signature, the one in the comment, and ran the payload pickle it lists; a reader that checks the comment length sees the clean archive',
    build: () => commentEndRecord(),
    expect: { code: 'BIN_ZIP_INVALID' },
  },
  {
    id: 'appended',
    title: 'bytes after the end record',
    torch: 'miniz accepts them',
    build: () => Buffer.concat([archive(cleanPickle()), ascii('#!/bin/sh\necho owned\n')]),
    expect: { code: 'BIN_ZIP_INVALID' },
  },
  {
    id: 'tar-polyglot',
    title: 'a tar whose first member is named PK\\x05\\x06…, with a zip after it',
    torch:
      'torch takes a file that does not start with PK\\x03\\x04 to its legacy reader, whose tar path unpickles the members of a complete tar (storages, tensors, pickle) when weights_only=False; this bare tar header torch 2.13 refused; a zip-only scanner sees the zip',
    build: () => zipBytes(entries(), { before: tarHeader(ascii('PK\x05\x06pickle')), descriptors: true }),
    expect: { code: 'BIN_LEGACY_FORMAT' },
  },
  {
    id: 'prepended',
    title: 'a local header and junk before the first entry, offsets moved along',
    torch: 'loads (miniz reads from the central directory)',
    build: () => zipBytes(entries(), { before: Buffer.concat([ascii('PK\x03\x04'), new Uint8Array(60)]) }),
    expect: { code: 'BIN_ZIP_INVALID' },
  },
  {
    id: 'local-name',
    title: 'a local header that names another file than its central entry (CVE-2025-1944)',
    torch: 'miniz ignores the local name; Python zipfile refuses',
    build: () => zipBytes(entries().map((e, i) => (i === 0 ? { ...e, localName: 'archive/datap.kl' } : e))),
    expect: { code: 'BIN_ZIP_INVALID' },
  },
  {
    id: 'hidden-entry',
    title: 'a local entry the central directory leaves out',
    torch: 'never seen by torch; seen by a scanner that walks local headers',
    build: () => zipBytes(entries([{ name: 'archive/payload.pkl', data: payloadPickle(), hidden: true }], 0)),
    expect: { code: 'BIN_ZIP_INVALID' },
  },
  {
    id: 'gap',
    title: 'bytes between two entries',
    torch: 'miniz ignores them',
    build: () => zipBytes(entries().map((e, i) => (i === 0 ? { ...e, after: payloadPickle() } : e))),
    expect: { code: 'BIN_ZIP_INVALID' },
  },
  {
    id: 'patched-flag',
    title: 'flag bit 5 (patched data) on data.pkl (CVE-2025-1945 family)',
    torch: 'fails when extracting ("unsupported feature"); Python zipfile refuses',
    build: () => zipBytes(entries().map((e, i) => (i === 0 ? { ...e, flags: 0x20 } : e))),
    expect: { code: 'BIN_ZIP_UNSUPPORTED' },
  },
  {
    id: 'crc',
    title: 'data.pkl whose CRC-32 does not match (CVE-2025-10156 family)',
    torch: 'loads (torch builds miniz without CRC checks); scanners that check it may skip the file',
    build: () =>
      (() => {
        const bytes = archive(cleanPickle());
        const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
        // the first central entry's CRC
        for (let i = 0; i + 4 <= bytes.length; i++) {
          if (dv.getUint32(i, true) === 0x02014b50) {
            dv.setUint32(i + 16, dv.getUint32(i + 16, true) ^ 1, true);
            break;
          }
        }
        // and its data descriptor's, so only the data disagrees
        for (let i = 0; i + 4 <= bytes.length; i++) {
          if (dv.getUint32(i, true) === 0x08074b50) {
            dv.setUint32(i + 4, dv.getUint32(i + 4, true) ^ 1, true);
            break;
          }
        }
        return bytes;
      })(),
    expect: { code: 'BIN_ZIP_INVALID' },
  },
  {
    id: 'method',
    title: 'data.pkl compressed with bzip2 (method 12)',
    torch: 'fails when extracting',
    build: () =>
      (() => {
        const bytes = archive(cleanPickle());
        const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
        for (let i = 0; i + 4 <= bytes.length; i++) {
          const sig = dv.getUint32(i, true);
          if (sig === 0x02014b50) dv.setUint16(i + 10, 12, true);
          if (sig === 0x04034b50) dv.setUint16(i + 8, 12, true);
        }
        return bytes;
      })(),
    expect: { code: 'BIN_ZIP_UNSUPPORTED' },
  },
  {
    id: 'directory-with-data',
    title: 'a directory entry that carries data',
    torch: 'never read',
    build: () => zipBytes(entries([{ name: 'archive/data/', data: payloadPickle() }])),
    expect: { code: 'BIN_ZIP_INVALID' },
  },
  {
    id: 'torchscript-constants',
    title: 'archive/constants.pkl beside data.pkl',
    torch: 'non-WO hands the file to torch.jit.load (TorchScript); 1.13 WO too; 2.13 WO refuses',
    build: () => zipBytes(entries([{ name: 'archive/constants.pkl', data: payloadPickle() }])),
    expect: { code: 'BIN_UNEXPECTED_ENTRY' },
  },
  {
    id: 'extra-pickle',
    title: 'a second .pkl entry in the folder',
    torch: 'never read by torch; read by scanners that scan every .pkl',
    build: () => zipBytes(entries([{ name: 'archive/extra.pkl', data: payloadPickle() }])),
    expect: { code: 'BIN_UNEXPECTED_ENTRY' },
  },
  {
    id: 'nested-pickle-folder',
    title: 'data.pkl in a folder below the archive folder',
    torch: 'never read by torch',
    build: () => zipBytes(entries([{ name: 'archive/sub/data.pkl', data: payloadPickle() }])),
    expect: { code: 'BIN_UNEXPECTED_ENTRY' },
  },
  {
    id: 'nested-archive',
    title: 'a zip inside the archive',
    torch: 'never opened by torch',
    build: () =>
      zipBytes(
        entries([
          { name: 'archive/inner.zip', data: zipBytes([{ name: 'a/data.pkl', data: payloadPickle() }]) },
        ]),
      ),
    expect: { code: 'BIN_UNEXPECTED_ENTRY' },
  },
  {
    id: 'other-folder',
    title: 'a first entry in another folder than the rest',
    torch: 'takes the folder from the first entry and refuses every entry outside it',
    build: () => zipBytes([{ name: 'other/data.pkl', data: payloadPickle() }, ...entries()]),
    expect: { code: 'BIN_NOT_TORCH_ZIP' },
  },
  {
    id: 'outside-folder',
    title: 'an entry outside the archive folder',
    torch: 'refuses the archive ("not in a subdirectory" / wrong prefix)',
    build: () => zipBytes(entries([{ name: 'payload.pkl', data: payloadPickle() }], 2)),
    expect: { code: 'BIN_NOT_TORCH_ZIP' },
  },
  {
    id: 'unreferenced-storage',
    title: 'a data/<key> record no tensor refers to',
    torch: 'never read',
    build: () => zipBytes(entries([{ name: 'archive/data/7', data: payloadPickle() }], 2)),
    expect: { code: 'BIN_UNREFERENCED_STORAGE' },
  },
  {
    id: 'oversized-storage',
    title: 'a storage record of 20 bytes for 4 floats',
    torch: '2.13 refuses ("record size does not match"); 1.13 loads and ignores the tail',
    build: () => archive(cleanPickle(), [new Uint8Array(20)]),
    expect: { code: 'BIN_STORAGE_OVERSIZED' },
  },
  {
    id: 'png',
    title: 'a PNG named adapter_model.bin',
    torch: 'not a zip (no PK\\x03\\x04): legacy reader',
    build: () =>
      Buffer.concat([
        Uint8Array.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
        archive(cleanPickle()),
      ]),
    expect: { code: 'BIN_ZIP_INVALID' },
  },
  {
    id: 'legacy-pickle',
    title: 'the legacy format: pickles in a row',
    torch: 'unpickles the first pickle before it checks the magic number',
    build: () =>
      Buffer.concat([
        new PickleBuilder(2)
          .proto()
          .raw(OP.LONG1, 10, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19)
          .stop()
          .bytes(),
        payloadPickle(),
      ]),
    expect: { code: 'BIN_LEGACY_FORMAT' },
  },
];

/** Every hostile file, pickle classes first. */
export function torchAttacks(): TorchAttack[] {
  return [...PICKLE_ATTACKS, ...ZIP_ATTACKS].map(({ build, ...attack }) => ({ ...attack, bytes: build() }));
}
