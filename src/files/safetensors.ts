/**
 * safetensors files: the header read from a file (never the data section), a tensor's bytes, and the
 * atomic writer. The format itself is formats/safetensors.ts; here its refusals become CodiErrors
 * (exit 1, with their codes' hints) about the file, and a file that cannot be read is a `PATH_*` error
 * (exit 3).
 */
import { AtomicFile } from '../atomic.js';
import { RegularFile, withRegularFile } from '../byte-source.js';
import { environmentError, fromFormatError, lifted, liftedAsync } from '../errors.js';
import {
  encodeHeader,
  headerFromBytes,
  headerLengthOf,
  parseSafetensorsHeader,
  tensorLength,
  tensorTruncated,
  type SafetensorsHeader,
  type SafetensorsTensorInfo,
  type SafetensorsTensorInput,
} from '../formats/safetensors.js';
import { HEADER_LENGTH_BYTES as LENGTH_BYTES } from '../formats/safetensors-spec.js';

/**
 * Reads and validates the header of a safetensors file. Reads the 8-byte length and then at most
 * 100,000,000 header bytes, never the data section, so a multi-GB file costs no memory.
 *
 * @throws CodiError `SAFETENSORS_*` (exit 1) for an invalid file; `PATH_*` (exit 3) when it cannot
 *   be opened or read or is not a regular file
 */
export function readSafetensorsHeader(path: string): Promise<SafetensorsHeader> {
  return withRegularFile(path, (file) =>
    liftedAsync(async () => {
      const headerLength = headerLengthOf(
        await file.readBytes(0, Math.min(LENGTH_BYTES, file.size)),
        file.size,
      );
      return headerFromBytes(await file.readBytes(LENGTH_BYTES, headerLength), headerLength, file.size);
    }),
  );
}

/**
 * `readSafetensorsHeader` with blocking reads: for scanning many files (`list` over a catalog), where
 * the thread-pool hop costs more than the reads. It never follows a symlink (a catalog is scanned for
 * what is really there).
 */
export function readSafetensorsHeaderSync(path: string): SafetensorsHeader {
  const file = RegularFile.openSync(path, { noFollow: true });
  try {
    return lifted(() => {
      const headerLength = headerLengthOf(
        file.readBytesSync(0, Math.min(LENGTH_BYTES, file.size)),
        file.size,
      );
      return headerFromBytes(file.readBytesSync(LENGTH_BYTES, headerLength), headerLength, file.size);
    });
  } finally {
    file.closeSync();
  }
}

/**
 * The raw bytes of one tensor. `source` may be an open file, so a converter reading many tensors
 * opens the file once.
 */
export async function readTensorBytes(
  source: string | RegularFile,
  header: SafetensorsHeader,
  info: SafetensorsTensorInfo,
  /** reused for the bytes when large enough (a converter reading many tensors allocates once) */
  into?: Uint8Array,
): Promise<Uint8Array> {
  const length = lifted(() => tensorLength(header, info, false));
  const read = async (file: RegularFile): Promise<Uint8Array> => {
    const target = into && into.length >= length ? into.subarray(0, length) : new Uint8Array(length);
    const got = await file.read(target, header.dataOffset + info.begin);
    if (got < length) throw fromFormatError(tensorTruncated(info, header, got));
    return target;
  };
  return typeof source === 'string' ? withRegularFile(source, read) : read(source);
}

/** One tensor's bytes in chunks of at most `chunkSize`; memory stays bounded whatever its size. */
export async function* streamTensorBytes(
  source: string | RegularFile,
  header: SafetensorsHeader,
  info: SafetensorsTensorInfo,
  chunkSize = 1 << 20,
): AsyncGenerator<Uint8Array, void, undefined> {
  const length = lifted(() => tensorLength(header, info, true));
  const owned = typeof source === 'string';
  const file = owned ? await RegularFile.open(source) : source;
  try {
    let done = 0;
    while (done < length) {
      const want = Math.min(chunkSize, length - done);
      const chunk = await file.readBytes(header.dataOffset + info.begin + done, want);
      if (chunk.length < want) throw fromFormatError(tensorTruncated(info, header, done + chunk.length));
      done += chunk.length;
      yield chunk;
    }
  } finally {
    if (owned) await file.close();
  }
}

/**
 * Writes a safetensors file atomically (temp file in the same folder, fsync, rename, fsync of the
 * folder): readers see the old file or the new one, never a part. The header is written like the
 * Rust crate writes it (`__metadata__` first, padded with spaces to a multiple of 8); tensors are laid
 * out contiguously in the given order. Returns the header as `readSafetensorsHeader` would read it.
 */
export async function writeSafetensors(
  path: string,
  tensors: readonly SafetensorsTensorInput[],
  metadata?: Readonly<Record<string, string>>,
): Promise<SafetensorsHeader> {
  const { prefix, header } = lifted(() => {
    const encoded = encodeHeader(tensors, metadata);
    return { prefix: encoded.prefix, header: parseSafetensorsHeader(encoded.prefix, encoded.fileSize) };
  });
  const file = await AtomicFile.open(path);
  try {
    // each write continues where the last ended
    await file.handle.writeFile(prefix);
    for (const t of tensors) await file.handle.writeFile(t.data);
  } catch (err) {
    await file.abort();
    throw environmentError(err, path);
  }
  await file.commit();
  return header;
}
