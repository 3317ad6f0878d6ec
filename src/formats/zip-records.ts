/**
 * The records of a ZIP archive, read and cross-checked for the reader in zip.ts: the end of central
 * directory record (and its ZIP64 form), the central directory, and each entry's local header. What
 * the checks refuse, and why, is described in zip.ts.
 */
import type { Code } from '../codes.js';
import { FormatError } from './format-error.js';

/** Every code the zip reader raises (codes.ts describes each). */
export const ZIP_ERROR_CODES = [
  'BIN_ZIP_TRUNCATED',
  'BIN_ZIP_INVALID',
  'BIN_ZIP_UNSUPPORTED',
  'BIN_ZIP_ENTRY_TOO_LARGE',
] as const satisfies readonly Code[];
export type ZipErrorCode = (typeof ZIP_ERROR_CODES)[number];

/** Positioned reads over a file or a buffer; `read` returns exactly `length` bytes or throws. */
export interface ZipSource {
  readonly size: number;
  read(position: number, length: number): Promise<Uint8Array>;
  close(): Promise<void>;
}

export interface ZipEntry {
  readonly name: string;
  /** 0 STORED, 8 DEFLATE */
  readonly method: number;
  readonly flags: number;
  readonly crc32: number;
  readonly compressedSize: number;
  readonly uncompressedSize: number;
  readonly localHeaderOffset: number;
  /** where the entry's (compressed) bytes start in the file, past its local header */
  readonly dataOffset: number;
}

export interface ZipLimits {
  /** the central directory is read whole, so it is capped */
  maxCentralDirectoryBytes: number;
  maxEntries: number;
  /** default cap of `ZipArchive.read` */
  maxEntryReadBytes: number;
}

export const DEFAULT_ZIP_LIMITS: Readonly<ZipLimits> = Object.freeze({
  maxCentralDirectoryBytes: 64 * 1024 * 1024,
  maxEntries: 200_000,
  maxEntryReadBytes: 64 * 1024 * 1024,
});

export const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_EOCD = 0x06054b50;
const SIG_ZIP64_EOCD = 0x06064b50;
const SIG_ZIP64_LOCATOR = 0x07064b50;
const EOCD_SIZE = 22;
const ZIP64_LOCATOR_SIZE = 20;
const ZIP64_EOCD_MIN_SIZE = 56;
const CENTRAL_HEADER_SIZE = 46;
export const LOCAL_HEADER_SIZE = 30;
const MAX_COMMENT = 0xffff;
const U16_MAX = 0xffff;
export const U32_MAX = 0xffffffff;
const EXTRA_ZIP64 = 0x0001;

const FLAG_ENCRYPTED = 0x0001;
export const FLAG_DATA_DESCRIPTOR = 0x0008;
const FLAG_PATCHED_DATA = 0x0020;
const FLAG_STRONG_ENCRYPTION = 0x0040;
const FLAG_MASKED_HEADERS = 0x2000;

export const METHOD_STORED = 0;
export const METHOD_DEFLATE = 8;

export function zipError(
  code: ZipErrorCode,
  message: string,
  offset?: number,
  details?: Record<string, unknown>,
): FormatError {
  return new FormatError(code, message, {
    ...(offset === undefined ? {} : { pointer: String(offset) }),
    ...(details === undefined ? {} : { details }),
  });
}

/** C0/C1 controls, zero-width and bidi characters: they could rewrite or hide text on a terminal. */
// eslint-disable-next-line no-control-regex
const INVISIBLE = /[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]/g;

/** Names come from the file: quote them and make control and bidi characters visible. */
export function quoteName(value: string, max = 120): string {
  const cut = value.length > max ? `${value.slice(0, max)}…` : value;
  const visible = cut.replace(INVISIBLE, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  return `"${visible.replace(/"/g, '\\"')}"`;
}

export function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** A 64-bit field as a number, refusing what a JS number cannot hold exactly. */
function u64(dv: DataView, at: number, what: string, fileOffset: number): number {
  const value = dv.getBigUint64(at, true);
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw zipError('BIN_ZIP_INVALID', `${what} is ${value.toString()}, beyond 2^53`, fileOffset + at);
  }
  return Number(value);
}

export interface Directory {
  cdOffset: number;
  cdSize: number;
  entryCount: number;
  /** where the central directory must end: the ZIP64 record or the classic one */
  cdEnd: number;
}

export const utf8 = new TextDecoder('utf-8', { fatal: true });

/** True also for a file shorter than a signature that begins like one: a zip cut very short. */
async function startsWithLocalHeader(source: ZipSource): Promise<boolean> {
  const head = await source.read(0, Math.min(4, source.size));
  const sig = [0x50, 0x4b, 0x03, 0x04];
  return head.every((b, i) => b === sig[i]);
}

export async function readDirectory(source: ZipSource, limits: ZipLimits): Promise<Directory> {
  const size = source.size;
  if (size === 0) throw zipError('BIN_ZIP_TRUNCATED', 'the file is empty', 0);
  const end = await findEndRecord(source);
  const dir = await directoryOf(source, end.record, end.offset);
  checkDirectory(dir, size, limits, end.offset);
  return dir;
}

/** The end-of-central-directory record: the last one in the file, whose comment ends the file. */
async function findEndRecord(source: ZipSource): Promise<{ record: DataView; offset: number }> {
  const size = source.size;
  // The record is 22 bytes plus a comment of at most 65,535: search no further back than that.
  const tailLength = Math.min(size, EOCD_SIZE + MAX_COMMENT);
  const tailStart = size - tailLength;
  const tail = await source.read(tailStart, tailLength);
  const tv = view(tail);
  const unexplained = (i: number): number => tailLength - i - EOCD_SIZE - tv.getUint16(i + 20, true);
  for (let i = tailLength - EOCD_SIZE; i >= 0; i--) {
    // the comment must run exactly to the end of the file: bytes after it would be another format's
    if (tv.getUint32(i, true) === SIG_EOCD && unexplained(i) === 0) {
      const comment = tv.getUint16(i + 20, true);
      if (comment > 0) {
        // miniz takes the last end signature in the file, even one inside this comment: two readers
        // could see two archives
        throw zipError(
          'BIN_ZIP_INVALID',
          `the archive ends with a ${comment}-byte comment; torch.save writes none, and one can hide a second end record`,
          tailStart + i,
        );
      }
      return { record: new DataView(tail.buffer, tail.byteOffset + i, EOCD_SIZE), offset: tailStart + i };
    }
  }
  // a record followed by more bytes than its comment: something was appended to the archive
  for (let i = tailLength - EOCD_SIZE; i >= 0; i--) {
    if (tv.getUint32(i, true) === SIG_EOCD && unexplained(i) > 0) {
      throw zipError(
        'BIN_ZIP_INVALID',
        `${unexplained(i)} bytes follow the end of the zip archive (the file is also something else, or was appended to)`,
        tailStart + i,
      );
    }
  }
  if (await startsWithLocalHeader(source)) {
    throw zipError(
      'BIN_ZIP_TRUNCATED',
      'the zip archive has no end-of-central-directory record: it is truncated (an interrupted copy or download?)',
      size,
    );
  }
  throw zipError('BIN_ZIP_INVALID', 'not a zip archive: no end-of-central-directory record', size);
}

/** Where the central directory is, from the end record, or from the ZIP64 record it defers to. */
async function directoryOf(source: ZipSource, record: DataView, eocdOffset: number): Promise<Directory> {
  const disk = record.getUint16(4, true);
  const cdDisk = record.getUint16(6, true);
  const entriesOnDisk = record.getUint16(8, true);
  const entries16 = record.getUint16(10, true);
  const cdSize32 = record.getUint32(12, true);
  const cdOffset32 = record.getUint32(16, true);
  const locatorOffset = eocdOffset - ZIP64_LOCATOR_SIZE;
  const hasLocator =
    locatorOffset >= 0 && view(await source.read(locatorOffset, 4)).getUint32(0, true) === SIG_ZIP64_LOCATOR;
  if (hasLocator) {
    const dir = await readZip64Directory(source, locatorOffset);
    // a field the classic record does not saturate must say the same as the ZIP64 record
    const agrees =
      (disk === U16_MAX || disk === 0) &&
      (cdDisk === U16_MAX || cdDisk === 0) &&
      (entries16 === U16_MAX || entries16 === dir.entryCount) &&
      (entriesOnDisk === U16_MAX || entriesOnDisk === dir.entryCount) &&
      (cdSize32 === U32_MAX || cdSize32 === dir.cdSize) &&
      (cdOffset32 === U32_MAX || cdOffset32 === dir.cdOffset);
    if (!agrees) {
      throw zipError(
        'BIN_ZIP_INVALID',
        'the end-of-central-directory record disagrees with the ZIP64 record',
        eocdOffset,
      );
    }
    return dir;
  }
  if (entries16 === U16_MAX || cdSize32 === U32_MAX || cdOffset32 === U32_MAX) {
    throw zipError(
      'BIN_ZIP_INVALID',
      'the archive needs a ZIP64 record but has no ZIP64 locator',
      eocdOffset,
    );
  }
  if (disk !== 0 || cdDisk !== 0 || entriesOnDisk !== entries16) {
    throw zipError('BIN_ZIP_UNSUPPORTED', 'multi-disk (spanned) archives are not supported', eocdOffset);
  }
  return { cdOffset: cdOffset32, cdSize: cdSize32, entryCount: entries16, cdEnd: eocdOffset };
}

/** The central directory ends where its end record begins, and stays within the caps. */
function checkDirectory(dir: Directory, size: number, limits: ZipLimits, eocdOffset: number): void {
  if (dir.cdOffset + dir.cdSize > dir.cdEnd) {
    throw zipError(
      dir.cdOffset + dir.cdSize > size ? 'BIN_ZIP_TRUNCATED' : 'BIN_ZIP_INVALID',
      `the central directory (${dir.cdSize} bytes at ${dir.cdOffset}) runs past the end-of-central-directory record at ${dir.cdEnd}`,
      dir.cdOffset,
    );
  }
  if (dir.cdOffset + dir.cdSize !== dir.cdEnd) {
    throw zipError(
      'BIN_ZIP_INVALID',
      `${dir.cdEnd - dir.cdOffset - dir.cdSize} unexplained bytes between the central directory and its end record`,
      dir.cdOffset + dir.cdSize,
    );
  }
  if (dir.cdSize > limits.maxCentralDirectoryBytes) {
    throw zipError(
      'BIN_ZIP_ENTRY_TOO_LARGE',
      `the central directory is ${dir.cdSize} bytes, above the ${limits.maxCentralDirectoryBytes}-byte cap`,
      dir.cdOffset,
    );
  }
  if (dir.entryCount > limits.maxEntries) {
    throw zipError(
      'BIN_ZIP_ENTRY_TOO_LARGE',
      `the archive lists ${dir.entryCount} entries, above the cap of ${limits.maxEntries}`,
      eocdOffset,
    );
  }
  if (dir.entryCount * CENTRAL_HEADER_SIZE > dir.cdSize) {
    throw zipError(
      'BIN_ZIP_INVALID',
      `${dir.entryCount} entries cannot fit in a ${dir.cdSize}-byte central directory`,
      dir.cdOffset,
    );
  }
}

async function readZip64Directory(source: ZipSource, locatorOffset: number): Promise<Directory> {
  const lv = view(await source.read(locatorOffset, ZIP64_LOCATOR_SIZE));
  const recordDisk = lv.getUint32(4, true);
  const recordOffset = u64(lv, 8, 'the ZIP64 record offset', locatorOffset);
  const disks = lv.getUint32(16, true);
  if (recordDisk !== 0 || disks > 1) {
    throw zipError('BIN_ZIP_UNSUPPORTED', 'multi-disk (spanned) archives are not supported', locatorOffset);
  }
  if (recordOffset + ZIP64_EOCD_MIN_SIZE > locatorOffset) {
    throw zipError(
      'BIN_ZIP_INVALID',
      `the ZIP64 end record at ${recordOffset} does not fit before its locator at ${locatorOffset}`,
      locatorOffset,
    );
  }
  const rv = view(await source.read(recordOffset, ZIP64_EOCD_MIN_SIZE));
  if (rv.getUint32(0, true) !== SIG_ZIP64_EOCD) {
    throw zipError('BIN_ZIP_INVALID', 'the ZIP64 locator does not point at a ZIP64 end record', recordOffset);
  }
  const recordSize = u64(rv, 4, 'the ZIP64 record size', recordOffset);
  if (recordOffset + 12 + recordSize !== locatorOffset) {
    throw zipError(
      'BIN_ZIP_INVALID',
      'the ZIP64 end record does not end where its locator begins',
      recordOffset,
    );
  }
  const disk = rv.getUint32(16, true);
  const cdDisk = rv.getUint32(20, true);
  const entriesOnDisk = u64(rv, 24, 'the entry count', recordOffset);
  const entryCount = u64(rv, 32, 'the entry count', recordOffset);
  if (disk !== 0 || cdDisk !== 0 || entriesOnDisk !== entryCount) {
    throw zipError('BIN_ZIP_UNSUPPORTED', 'multi-disk (spanned) archives are not supported', recordOffset);
  }
  return {
    entryCount,
    cdSize: u64(rv, 40, 'the central directory size', recordOffset),
    cdOffset: u64(rv, 48, 'the central directory offset', recordOffset),
    cdEnd: recordOffset,
  };
}

interface Zip64Values {
  uncompressed: number;
  compressed: number;
  offset: number;
  disk: number;
}

export async function readCentralDirectory(source: ZipSource, dir: Directory): Promise<ZipEntry[]> {
  const cd = await source.read(dir.cdOffset, dir.cdSize);
  const entries: ZipEntry[] = [];
  const seen = new Map<string, string>();
  let p = 0;
  for (let i = 0; i < dir.entryCount; i++) {
    const { entry, next } = centralEntry(cd, p, i, dir.cdOffset, seen);
    entries.push(entry);
    p = next;
  }
  if (p !== cd.length) {
    throw zipError(
      'BIN_ZIP_INVALID',
      `the central directory has ${cd.length - p} bytes after its ${dir.entryCount} entries`,
      dir.cdOffset + p,
    );
  }
  return entries;
}

/** Central directory entry `i`, at `p` in the directory `cd` (at `cdOffset` in the file). */
function centralEntry(
  cd: Uint8Array,
  p: number,
  i: number,
  cdOffset: number,
  seen: Map<string, string>,
): { entry: ZipEntry; next: number } {
  const dv = view(cd);
  const at = cdOffset + p;
  if (p + CENTRAL_HEADER_SIZE > cd.length) {
    throw zipError('BIN_ZIP_INVALID', `central directory entry ${i} runs past the directory`, at);
  }
  if (dv.getUint32(p, true) !== SIG_CENTRAL) {
    throw zipError('BIN_ZIP_INVALID', `central directory entry ${i} has a bad signature`, at);
  }
  const flags = dv.getUint16(p + 8, true);
  const method = dv.getUint16(p + 10, true);
  const nameStart = p + CENTRAL_HEADER_SIZE;
  const extraStart = nameStart + dv.getUint16(p + 28, true);
  const extraLength = dv.getUint16(p + 30, true);
  const next = extraStart + extraLength + dv.getUint16(p + 32, true);
  if (next > cd.length) {
    throw zipError('BIN_ZIP_INVALID', `central directory entry ${i} runs past the directory`, at);
  }
  const name = entryName(cd.subarray(nameStart, extraStart), i, at, seen);
  if (flags & (FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION | FLAG_MASKED_HEADERS)) {
    throw zipError('BIN_ZIP_UNSUPPORTED', `entry ${quoteName(name)} is encrypted`, at);
  }
  if (flags & FLAG_PATCHED_DATA) {
    throw zipError('BIN_ZIP_UNSUPPORTED', `entry ${quoteName(name)} is patched data (flag bit 5)`, at);
  }
  if (method !== METHOD_STORED && method !== METHOD_DEFLATE) {
    throw zipError(
      'BIN_ZIP_UNSUPPORTED',
      `entry ${quoteName(name)} uses compression method ${method}; only STORED (0) and DEFLATE (8) are supported`,
      at,
    );
  }
  const z64 = readZip64Extra(
    dv,
    extraStart,
    extraLength,
    {
      uncompressed: dv.getUint32(p + 24, true),
      compressed: dv.getUint32(p + 20, true),
      offset: dv.getUint32(p + 42, true),
      disk: dv.getUint16(p + 34, true),
    },
    at,
    name,
    cdOffset,
  );
  checkPlacement(name, method, z64, at, cdOffset);
  const entry: ZipEntry = {
    name,
    method,
    flags,
    crc32: dv.getUint32(p + 16, true),
    compressedSize: z64.compressed,
    uncompressedSize: z64.uncompressed,
    localHeaderOffset: z64.offset,
    // filled in from the local header
    dataOffset: -1,
  };
  return { entry, next };
}

/** An entry's name: UTF-8, not empty, without NUL, and not seen before. */
function entryName(bytes: Uint8Array, i: number, at: number, seen: Map<string, string>): string {
  let name: string;
  try {
    name = utf8.decode(bytes);
  } catch {
    throw zipError('BIN_ZIP_INVALID', `central directory entry ${i} has a name that is not UTF-8`, at);
  }
  if (name.length === 0 || name.includes('\0')) {
    throw zipError(
      'BIN_ZIP_INVALID',
      `central directory entry ${i} has an empty name or one with a NUL byte`,
      at,
    );
  }
  // torch's reader (miniz) looks names up with ASCII letters folded to lower case: names equal
  // that way are one name to it, and which copy it finds depends on how many entries there are
  const folded = name.replace(/[A-Z]+/g, (m) => m.toLowerCase());
  const other = seen.get(folded);
  if (other === name) {
    throw zipError('BIN_ZIP_INVALID', `entry ${quoteName(name)} appears twice in the central directory`, at);
  }
  if (other !== undefined) {
    throw zipError(
      'BIN_ZIP_INVALID',
      `entries ${quoteName(other)} and ${quoteName(name)} differ only in case; torch's zip reader looks names up ignoring case, so either could be the one it loads`,
      at,
    );
  }
  seen.set(folded, name);
  return name;
}

/** On this disk, sizes that agree for a STORED entry, and a local header before the directory. */
function checkPlacement(name: string, method: number, z64: Zip64Values, at: number, cdOffset: number): void {
  if (z64.disk !== 0) {
    throw zipError('BIN_ZIP_UNSUPPORTED', `entry ${quoteName(name)} is on another disk`, at);
  }
  if (method === METHOD_STORED && z64.compressed !== z64.uncompressed) {
    throw zipError(
      'BIN_ZIP_INVALID',
      `STORED entry ${quoteName(name)} declares ${z64.compressed} stored but ${z64.uncompressed} uncompressed bytes`,
      at,
    );
  }
  if (z64.uncompressed > 0 && z64.compressed === 0) {
    throw zipError(
      'BIN_ZIP_INVALID',
      `entry ${quoteName(name)} declares ${z64.uncompressed} bytes but stores none`,
      at,
    );
  }
  if (name.endsWith('/') && z64.uncompressed + z64.compressed > 0) {
    throw zipError(
      'BIN_ZIP_INVALID',
      `directory entry ${quoteName(name)} carries ${z64.compressed} bytes of data; a directory has none`,
      at,
    );
  }
  if (z64.offset + LOCAL_HEADER_SIZE > cdOffset) {
    throw zipError(
      'BIN_ZIP_INVALID',
      `entry ${quoteName(name)} has its local header at ${z64.offset}, not before the central directory at ${cdOffset}`,
      at,
    );
  }
}

/** Replaces each saturated 32-bit (or 16-bit) field with its value from the ZIP64 extra field. */
function readZip64Extra(
  dv: DataView,
  start: number,
  length: number,
  values: Zip64Values,
  at: number,
  name: string,
  base: number,
): Zip64Values {
  const out = { ...values };
  const end = start + length;
  let p = start;
  let found = false;
  while (p < end) {
    if (p + 4 > end) {
      throw zipError('BIN_ZIP_INVALID', `entry ${quoteName(name)} has a malformed extra field`, at);
    }
    const id = dv.getUint16(p, true);
    const size = dv.getUint16(p + 2, true);
    const dataStart = p + 4;
    const dataEnd = dataStart + size;
    if (dataEnd > end) {
      throw zipError(
        'BIN_ZIP_INVALID',
        `entry ${quoteName(name)} has an extra field that runs past its end`,
        at,
      );
    }
    if (id === EXTRA_ZIP64) {
      if (found) throw zipError('BIN_ZIP_INVALID', `entry ${quoteName(name)} has two ZIP64 extra fields`, at);
      found = true;
      let q = dataStart;
      const take8 = (what: string): number => {
        if (q + 8 > dataEnd) {
          throw zipError('BIN_ZIP_INVALID', `entry ${quoteName(name)} lacks its ZIP64 ${what}`, at);
        }
        const v = u64(dv, q, `the ZIP64 ${what} of ${quoteName(name)}`, base);
        q += 8;
        return v;
      };
      if (values.uncompressed === U32_MAX) out.uncompressed = take8('uncompressed size');
      if (values.compressed === U32_MAX) out.compressed = take8('compressed size');
      if (values.offset === U32_MAX) out.offset = take8('local header offset');
      if (values.disk === U16_MAX) {
        if (q + 4 > dataEnd)
          throw zipError('BIN_ZIP_INVALID', `entry ${quoteName(name)} lacks its ZIP64 disk`, at);
        out.disk = dv.getUint32(q, true);
      }
    }
    p = dataEnd;
  }
  if (
    !found &&
    (values.uncompressed === U32_MAX || values.compressed === U32_MAX || values.offset === U32_MAX)
  ) {
    throw zipError('BIN_ZIP_INVALID', `entry ${quoteName(name)} needs a ZIP64 extra field but has none`, at);
  }
  return out;
}
