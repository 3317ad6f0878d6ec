/**
 * A minimal ZIP reader for hostile input: PyTorch's `torch.save` writes a zip archive (STORED entries,
 * ZIP64 records for big files), and we only need its directory, one small entry (`data.pkl`) and the
 * sizes of the others. The file is never loaded whole: every read is positioned and bounded.
 *
 * Stricter than general-purpose readers on purpose, so that two readers cannot see two different
 * archives in the same bytes (a polyglot), torch's own (miniz, which ignores CRCs, gaps and comments
 * and looks names up ignoring case) included: the end-of-central-directory record must end the file
 * and carry no comment, the central directory must end where that record (or the ZIP64 one) begins,
 * the entries must tile the file from its first byte to the central directory (each followed only by
 * its own data descriptor), every local header must agree with its central-directory entry, and names
 * must be unique even with their letters' case folded.
 *
 * Errors are `FormatError`s with a `BIN_ZIP_*` code; `pointer` is a byte offset in the file. They carry
 * no file name: the caller knows the path relative to the adapter (files/torch-bin.ts opens files).
 */
import { crc32, inflateRawSync } from 'node:zlib';
import type { FormatError } from './format-error.js';
import { checkLocalHeaders } from './zip-local.js';
import {
  DEFAULT_ZIP_LIMITS,
  METHOD_STORED,
  quoteName,
  readCentralDirectory,
  readDirectory,
  zipError,
  type ZipEntry,
  type ZipLimits,
  type ZipSource,
} from './zip-records.js';

export {
  DEFAULT_ZIP_LIMITS,
  METHOD_DEFLATE,
  METHOD_STORED,
  quoteName,
  ZIP_ERROR_CODES,
  type ZipEntry,
  type ZipErrorCode,
  type ZipLimits,
  type ZipSource,
} from './zip-records.js';

/** The error for a read that would run past the end of a source of `size` bytes, if it would. */
function outOfRange(size: number, position: number, length: number): FormatError | null {
  if (position >= 0 && length >= 0 && position + length <= size) return null;
  return zipError(
    'BIN_ZIP_TRUNCATED',
    `read of ${length} bytes at ${position} goes past the end of the file`,
    position,
  );
}

export function memorySource(bytes: Uint8Array): ZipSource {
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

/** An open file as the zip reader needs it (the byte source's `RegularFile` is one). */
export interface ZipFile {
  readonly size: number;
  /** up to `length` bytes from `position` (fewer at the end of the file) */
  readBytes(position: number, length: number): Promise<Uint8Array>;
  close(): Promise<void>;
}

/** `file` as a source; closing the source closes the file. */
export function fileSource(file: ZipFile): ZipSource {
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

export class ZipArchive {
  readonly size: number;
  readonly entries: readonly ZipEntry[];
  private readonly byName: ReadonlyMap<string, ZipEntry>;
  private readonly limits: Readonly<ZipLimits>;

  private constructor(
    private readonly source: ZipSource,
    entries: ZipEntry[],
    limits: Readonly<ZipLimits>,
  ) {
    this.size = source.size;
    this.entries = entries;
    this.byName = new Map(entries.map((e) => [e.name, e]));
    this.limits = limits;
  }

  static fromBytes(bytes: Uint8Array, limits: Partial<ZipLimits> = {}): Promise<ZipArchive> {
    return ZipArchive.fromSource(memorySource(bytes), limits);
  }

  /** Validates the directory of `source`; the archive owns the source from then on. */
  static async fromSource(source: ZipSource, limits: Partial<ZipLimits> = {}): Promise<ZipArchive> {
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

function hex32(n: number): string {
  return `0x${(n >>> 0).toString(16).padStart(8, '0')}`;
}
