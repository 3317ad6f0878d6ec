/**
 * A minimal ZIP reader for hostile input: PyTorch's `torch.save` writes a zip archive (STORED entries,
 * ZIP64 records for big files), and we only need its directory, one small entry (`data.pkl`) and the
 * sizes of the others. The file is never loaded whole: every read is positioned and bounded.
 *
 * Stricter than general-purpose readers on purpose, so that two readers cannot see two different
 * archives in the same bytes (a polyglot): the end-of-central-directory record must end the file, the
 * central directory must end where that record (or the ZIP64 one) begins, every local header must
 * agree with its central-directory entry, entries must not overlap and names must be unique.
 *
 * Errors are `CodiError`s with a `BIN_ZIP_*` code and exit code 1; `pointer` is a byte offset in the
 * file. They carry no file name: the caller knows the path relative to the adapter.
 */
import { crc32, inflateRawSync } from 'node:zlib';
import { RegularFile, withRegularFile } from '../byte-source.js';
import { CodiError, ExitCode } from '../errors.js';

export const ZIP_ERROR_CODES = [
  'BIN_ZIP_TRUNCATED',
  'BIN_ZIP_INVALID',
  'BIN_ZIP_UNSUPPORTED',
  'BIN_ZIP_ENTRY_TOO_LARGE',
] as const;
export type ZipErrorCode = (typeof ZIP_ERROR_CODES)[number];

/** One line per code, for the docs and `--help` texts. */
export const ZIP_ERROR_DESCRIPTIONS: Readonly<Record<ZipErrorCode, string>> = {
  BIN_ZIP_TRUNCATED:
    'the archive ends early: no end-of-central-directory record, or a record points past the end of the file',
  BIN_ZIP_INVALID:
    'the archive structure is inconsistent: bad signature, offsets or sizes out of range, overlapping or duplicate entries, local header disagreeing with the central directory, CRC-32 mismatch',
  BIN_ZIP_UNSUPPORTED:
    'the archive uses a feature PyTorch archives never use: encryption, several disks, a compression method other than STORED or DEFLATE',
  BIN_ZIP_ENTRY_TOO_LARGE: 'an entry that has to be read whole is larger than the allowed cap',
};

/** Positioned reads over a file or a buffer; `read` returns exactly `length` bytes or throws. */
export interface ByteSource {
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

const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_EOCD = 0x06054b50;
const SIG_ZIP64_EOCD = 0x06064b50;
const SIG_ZIP64_LOCATOR = 0x07064b50;
const EOCD_SIZE = 22;
const ZIP64_LOCATOR_SIZE = 20;
const ZIP64_EOCD_MIN_SIZE = 56;
const CENTRAL_HEADER_SIZE = 46;
const LOCAL_HEADER_SIZE = 30;
const MAX_COMMENT = 0xffff;
const U16_MAX = 0xffff;
const U32_MAX = 0xffffffff;
const EXTRA_ZIP64 = 0x0001;

const FLAG_ENCRYPTED = 0x0001;
const FLAG_DATA_DESCRIPTOR = 0x0008;
const FLAG_STRONG_ENCRYPTION = 0x0040;
const FLAG_MASKED_HEADERS = 0x2000;

export const METHOD_STORED = 0;
export const METHOD_DEFLATE = 8;

/** `LOCAL_HEADER_BATCH` local headers are read at once: thousands of entries stay fast. */
const LOCAL_HEADER_BATCH = 64;

function zipError(
  code: ZipErrorCode,
  message: string,
  offset?: number,
  details?: Record<string, unknown>,
): CodiError {
  return new CodiError(code, message, {
    exitCode: ExitCode.INVALID,
    ...(offset === undefined ? {} : { pointer: String(offset) }),
    hint:
      code === 'BIN_ZIP_TRUNCATED'
        ? 're-copy the file: it looks cut short'
        : 'the file is not a PyTorch archive as torch.save writes it; re-save it, or convert it to safetensors',
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

/** The error for a read that would run past the end of a source of `size` bytes, if it would. */
function outOfRange(size: number, position: number, length: number): CodiError | null {
  if (position >= 0 && length >= 0 && position + length <= size) return null;
  return zipError(
    'BIN_ZIP_TRUNCATED',
    `read of ${length} bytes at ${position} goes past the end of the file`,
    position,
  );
}

export function memorySource(bytes: Uint8Array): ByteSource {
  return {
    size: bytes.length,
    read(position: number, length: number): Promise<Uint8Array> {
      const refused = outOfRange(bytes.length, position, length);
      if (refused) return Promise.reject(refused);
      return Promise.resolve(bytes.subarray(position, position + length));
    },
    close(): Promise<void> {
      return Promise.resolve();
    },
  };
}

export async function openFileSource(path: string): Promise<ByteSource> {
  return fileSource(await RegularFile.open(path));
}

/** `file` as a source; closing the source closes the file. */
function fileSource(file: RegularFile): ByteSource {
  return {
    size: file.size,
    async read(position: number, length: number): Promise<Uint8Array> {
      const refused = outOfRange(file.size, position, length);
      if (refused) throw refused;
      const bytes = await file.readBytes(position, length);
      // the file shrank while we read it
      if (bytes.length < length) {
        throw zipError(
          'BIN_ZIP_TRUNCATED',
          `the file ends at ${position + bytes.length}, before the bytes it promised`,
          position + bytes.length,
        );
      }
      return bytes;
    },
    close(): Promise<void> {
      return file.close();
    },
  };
}

function view(bytes: Uint8Array): DataView {
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

interface Directory {
  cdOffset: number;
  cdSize: number;
  entryCount: number;
  /** where the central directory must end: the ZIP64 record or the classic one */
  cdEnd: number;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

export class ZipArchive {
  readonly size: number;
  readonly entries: readonly ZipEntry[];
  private readonly byName: ReadonlyMap<string, ZipEntry>;
  private readonly limits: Readonly<ZipLimits>;

  private constructor(
    private readonly source: ByteSource,
    entries: ZipEntry[],
    limits: Readonly<ZipLimits>,
  ) {
    this.size = source.size;
    this.entries = entries;
    this.byName = new Map(entries.map((e) => [e.name, e]));
    this.limits = limits;
  }

  /** Opens and validates the archive at `path`; close it when done (or use `withZip`). */
  static async open(path: string, limits: Partial<ZipLimits> = {}): Promise<ZipArchive> {
    const source = await openFileSource(path);
    try {
      return await ZipArchive.fromSource(source, limits);
    } catch (err) {
      await source.close();
      throw err;
    }
  }

  static fromBytes(bytes: Uint8Array, limits: Partial<ZipLimits> = {}): Promise<ZipArchive> {
    return ZipArchive.fromSource(memorySource(bytes), limits);
  }

  /** Validates the directory of `source`; the archive owns the source from then on. */
  static async fromSource(source: ByteSource, limits: Partial<ZipLimits> = {}): Promise<ZipArchive> {
    const all: ZipLimits = { ...DEFAULT_ZIP_LIMITS, ...limits };
    const dir = await readDirectory(source, all);
    const entries = await readCentralDirectory(source, dir);
    await checkLocalHeaders(source, entries, dir.cdOffset);
    return new ZipArchive(source, entries, all);
  }

  get(name: string): ZipEntry | undefined {
    return this.byName.get(name);
  }

  /**
   * The whole uncompressed content of `entry`, CRC-checked. Only for small entries: anything larger
   * than `maxBytes` is refused before a byte of it is read.
   */
  async read(entry: ZipEntry, maxBytes = this.limits.maxEntryReadBytes): Promise<Uint8Array> {
    if (entry.uncompressedSize > maxBytes) {
      throw zipError(
        'BIN_ZIP_ENTRY_TOO_LARGE',
        `entry ${quoteName(entry.name)} is ${entry.uncompressedSize} bytes, above the ${maxBytes}-byte cap for entries read whole`,
        entry.localHeaderOffset,
        { entry: entry.name, size: entry.uncompressedSize, cap: maxBytes },
      );
    }
    let data: Uint8Array;
    if (entry.method === METHOD_STORED) {
      data = await this.source.read(entry.dataOffset, entry.compressedSize);
    } else {
      // deflate never expands incompressible data by more than a few bytes per 16 KiB block
      const compressedCap = maxBytes + Math.ceil(maxBytes / 1000) + 1024;
      if (entry.compressedSize > compressedCap) {
        throw zipError(
          'BIN_ZIP_ENTRY_TOO_LARGE',
          `entry ${quoteName(entry.name)} has ${entry.compressedSize} compressed bytes, above the cap for entries read whole`,
          entry.localHeaderOffset,
        );
      }
      const compressed = await this.source.read(entry.dataOffset, entry.compressedSize);
      try {
        // one byte over the declared size is enough to know the declaration lies
        data = inflateRawSync(compressed, { maxOutputLength: Math.max(1, entry.uncompressedSize + 1) });
      } catch (err) {
        throw zipError(
          'BIN_ZIP_INVALID',
          `entry ${quoteName(entry.name)} does not inflate to its declared ${entry.uncompressedSize} bytes (${
            err instanceof Error ? err.message : String(err)
          })`,
          entry.dataOffset,
        );
      }
    }
    if (data.length !== entry.uncompressedSize) {
      throw zipError(
        'BIN_ZIP_INVALID',
        `entry ${quoteName(entry.name)} holds ${data.length} bytes, not its declared ${entry.uncompressedSize}`,
        entry.dataOffset,
      );
    }
    const actual = crc32(data) >>> 0;
    if (actual !== entry.crc32) {
      throw zipError(
        'BIN_ZIP_INVALID',
        `entry ${quoteName(entry.name)} fails its CRC-32 check (stored ${hex32(entry.crc32)}, computed ${hex32(actual)})`,
        entry.dataOffset,
      );
    }
    return data;
  }

  close(): Promise<void> {
    return this.source.close();
  }
}

/** Opens the archive at `path`, runs `fn`, and closes the file whatever happens. */
export function withZip<T>(
  path: string,
  fn: (zip: ZipArchive) => Promise<T>,
  limits: Partial<ZipLimits> = {},
): Promise<T> {
  return withRegularFile(path, async (file) => fn(await ZipArchive.fromSource(fileSource(file), limits)));
}

function hex32(n: number): string {
  return `0x${(n >>> 0).toString(16).padStart(8, '0')}`;
}

/** True also for a file shorter than a signature that begins like one: a zip cut very short. */
async function startsWithLocalHeader(source: ByteSource): Promise<boolean> {
  const head = await source.read(0, Math.min(4, source.size));
  const sig = [0x50, 0x4b, 0x03, 0x04];
  return head.every((b, i) => b === sig[i]);
}

async function readDirectory(source: ByteSource, limits: ZipLimits): Promise<Directory> {
  const size = source.size;
  if (size === 0) throw zipError('BIN_ZIP_TRUNCATED', 'the file is empty', 0);

  // The record is 22 bytes plus a comment of at most 65,535: search no further back than that.
  const tailLength = Math.min(size, EOCD_SIZE + MAX_COMMENT);
  const tailStart = size - tailLength;
  const tail = await source.read(tailStart, tailLength);
  const tv = view(tail);
  let eocd = -1;
  for (let i = tailLength - EOCD_SIZE; i >= 0; i--) {
    // the comment must run exactly to the end of the file: bytes after it would be another format's
    if (tv.getUint32(i, true) === SIG_EOCD && i + EOCD_SIZE + tv.getUint16(i + 20, true) === tailLength) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) {
    // a record followed by more bytes than its comment: something was appended to the archive
    for (let i = tailLength - EOCD_SIZE; i >= 0; i--) {
      if (tv.getUint32(i, true) === SIG_EOCD && i + EOCD_SIZE + tv.getUint16(i + 20, true) < tailLength) {
        const extra = tailLength - i - EOCD_SIZE - tv.getUint16(i + 20, true);
        throw zipError(
          'BIN_ZIP_INVALID',
          `${extra} bytes follow the end of the zip archive (the file is also something else, or was appended to)`,
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
  const eocdOffset = tailStart + eocd;
  const disk = tv.getUint16(eocd + 4, true);
  const cdDisk = tv.getUint16(eocd + 6, true);
  const entriesOnDisk = tv.getUint16(eocd + 8, true);
  const entries16 = tv.getUint16(eocd + 10, true);
  const cdSize32 = tv.getUint32(eocd + 12, true);
  const cdOffset32 = tv.getUint32(eocd + 16, true);

  let dir: Directory;
  const locatorOffset = eocdOffset - ZIP64_LOCATOR_SIZE;
  const hasLocator =
    locatorOffset >= 0 && view(await source.read(locatorOffset, 4)).getUint32(0, true) === SIG_ZIP64_LOCATOR;
  if (hasLocator) {
    dir = await readZip64Directory(source, locatorOffset);
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
  } else {
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
    dir = { cdOffset: cdOffset32, cdSize: cdSize32, entryCount: entries16, cdEnd: eocdOffset };
  }

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
  return dir;
}

async function readZip64Directory(source: ByteSource, locatorOffset: number): Promise<Directory> {
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

async function readCentralDirectory(source: ByteSource, dir: Directory): Promise<ZipEntry[]> {
  const cd = await source.read(dir.cdOffset, dir.cdSize);
  const dv = view(cd);
  const entries: ZipEntry[] = [];
  const seen = new Set<string>();
  let p = 0;
  for (let i = 0; i < dir.entryCount; i++) {
    const at = dir.cdOffset + p;
    if (p + CENTRAL_HEADER_SIZE > cd.length) {
      throw zipError('BIN_ZIP_INVALID', `central directory entry ${i} runs past the directory`, at);
    }
    if (dv.getUint32(p, true) !== SIG_CENTRAL) {
      throw zipError('BIN_ZIP_INVALID', `central directory entry ${i} has a bad signature`, at);
    }
    const flags = dv.getUint16(p + 8, true);
    const method = dv.getUint16(p + 10, true);
    const crc = dv.getUint32(p + 16, true);
    const compressed32 = dv.getUint32(p + 20, true);
    const uncompressed32 = dv.getUint32(p + 24, true);
    const nameLength = dv.getUint16(p + 28, true);
    const extraLength = dv.getUint16(p + 30, true);
    const commentLength = dv.getUint16(p + 32, true);
    const disk16 = dv.getUint16(p + 34, true);
    const offset32 = dv.getUint32(p + 42, true);
    const nameStart = p + CENTRAL_HEADER_SIZE;
    const extraStart = nameStart + nameLength;
    const next = extraStart + extraLength + commentLength;
    if (next > cd.length) {
      throw zipError('BIN_ZIP_INVALID', `central directory entry ${i} runs past the directory`, at);
    }
    let name: string;
    try {
      name = utf8.decode(cd.subarray(nameStart, extraStart));
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
    if (seen.has(name)) {
      // readers disagree on which copy wins; we refuse to pick
      throw zipError(
        'BIN_ZIP_INVALID',
        `entry ${quoteName(name)} appears twice in the central directory`,
        at,
      );
    }
    seen.add(name);
    if (flags & (FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION | FLAG_MASKED_HEADERS)) {
      throw zipError('BIN_ZIP_UNSUPPORTED', `entry ${quoteName(name)} is encrypted`, at);
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
      { uncompressed: uncompressed32, compressed: compressed32, offset: offset32, disk: disk16 },
      at,
      name,
      dir.cdOffset,
    );
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
    if (z64.offset + LOCAL_HEADER_SIZE > dir.cdOffset) {
      throw zipError(
        'BIN_ZIP_INVALID',
        `entry ${quoteName(name)} has its local header at ${z64.offset}, not before the central directory at ${dir.cdOffset}`,
        at,
      );
    }
    entries.push({
      name,
      method,
      flags,
      crc32: crc,
      compressedSize: z64.compressed,
      uncompressedSize: z64.uncompressed,
      localHeaderOffset: z64.offset,
      // filled in from the local header
      dataOffset: -1,
    });
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

async function checkLocalHeaders(source: ByteSource, entries: ZipEntry[], cdOffset: number): Promise<void> {
  const order = entries
    .map((_, i) => i)
    .sort((a, b) => (entries[a]?.localHeaderOffset ?? 0) - (entries[b]?.localHeaderOffset ?? 0));
  let previousEnd = 0;
  let previousName = '';
  for (let b = 0; b < order.length; b += LOCAL_HEADER_BATCH) {
    const batch = order.slice(b, b + LOCAL_HEADER_BATCH);
    const headers = await Promise.all(
      batch.map((i) => {
        const e = entries[i] as ZipEntry;
        const nameBytes = Buffer.byteLength(e.name, 'utf8');
        const length = Math.min(LOCAL_HEADER_SIZE + nameBytes, cdOffset - e.localHeaderOffset);
        return source.read(e.localHeaderOffset, length);
      }),
    );
    for (let k = 0; k < batch.length; k++) {
      const index = batch[k] as number;
      const e = entries[index] as ZipEntry;
      const header = headers[k] as Uint8Array;
      const at = e.localHeaderOffset;
      const hv = view(header);
      if (hv.getUint32(0, true) !== SIG_LOCAL) {
        throw zipError('BIN_ZIP_INVALID', `entry ${quoteName(e.name)} has no local header at ${at}`, at);
      }
      if (at < previousEnd) {
        throw zipError(
          'BIN_ZIP_INVALID',
          `entry ${quoteName(e.name)} overlaps entry ${quoteName(previousName)}`,
          at,
          { entry: e.name, overlaps: previousName },
        );
      }
      const localFlags = hv.getUint16(6, true);
      const localMethod = hv.getUint16(8, true);
      const localCrc = hv.getUint32(14, true);
      const localCompressed = hv.getUint32(18, true);
      const localUncompressed = hv.getUint32(22, true);
      const nameLength = hv.getUint16(26, true);
      const extraLength = hv.getUint16(28, true);
      const nameBytes = header.subarray(LOCAL_HEADER_SIZE);
      let localName: string | undefined;
      if (nameLength === nameBytes.length) {
        try {
          localName = utf8.decode(nameBytes);
        } catch {
          localName = undefined;
        }
      }
      if (localName !== e.name) {
        throw zipError(
          'BIN_ZIP_INVALID',
          `the local header of entry ${quoteName(e.name)} names another file`,
          at,
        );
      }
      if (localMethod !== e.method) {
        throw zipError(
          'BIN_ZIP_INVALID',
          `the local header of entry ${quoteName(e.name)} disagrees with the central directory on the compression method`,
          at,
        );
      }
      // with a data descriptor the local header may hold zeros; saturated sizes live in a ZIP64 extra
      if ((localFlags & FLAG_DATA_DESCRIPTOR) === 0) {
        const sizesAgree =
          (localCompressed === U32_MAX || localCompressed === e.compressedSize) &&
          (localUncompressed === U32_MAX || localUncompressed === e.uncompressedSize);
        if (localCrc !== e.crc32 || !sizesAgree) {
          throw zipError(
            'BIN_ZIP_INVALID',
            `the local header of entry ${quoteName(e.name)} disagrees with the central directory on its CRC-32 or sizes`,
            at,
          );
        }
      }
      const dataOffset = at + LOCAL_HEADER_SIZE + nameLength + extraLength;
      const dataEnd = dataOffset + e.compressedSize;
      if (dataEnd > cdOffset) {
        throw zipError(
          dataEnd > source.size ? 'BIN_ZIP_TRUNCATED' : 'BIN_ZIP_INVALID',
          `the data of entry ${quoteName(e.name)} (${e.compressedSize} bytes at ${dataOffset}) runs into the central directory at ${cdOffset}`,
          dataOffset,
        );
      }
      entries[index] = { ...e, dataOffset };
      previousEnd = dataEnd;
      previousName = e.name;
    }
  }
}
