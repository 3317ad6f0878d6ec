/**
 * The local side of a ZIP archive, for the reader in zip.ts: each entry's local header agrees with its
 * central-directory entry, and the entries tile the file from its first byte to the central directory,
 * each followed only by its own data descriptor. A byte no entry accounts for is refused: torch's reader
 * never looks at it, so it could only be there for another reader to find.
 */
import {
  FLAG_DATA_DESCRIPTOR,
  LOCAL_HEADER_SIZE,
  quoteName,
  SIG_LOCAL,
  U32_MAX,
  utf8,
  view,
  zipError,
  type ZipEntry,
  type ZipSource,
} from './zip-records.js';

/** `BATCH` local headers (or data descriptors) are read at once: thousands of entries stay fast. */
const BATCH = 64;
const SIG_DESCRIPTOR = 0x08074b50;

/** The bytes from `from` to `to`, after `entry`'s data: they may only be its data descriptor. */
interface Gap {
  from: number;
  to: number;
  entry: ZipEntry;
}

interface Previous {
  end: number;
  entry: ZipEntry | null;
  /** its local header announces a data descriptor */
  descriptor: boolean;
}

/**
 * Reads every local header, fills in each entry's `dataOffset`, and checks that the entries, with
 * their data descriptors, cover the file from byte 0 to the central directory at `cdOffset`.
 */
export async function checkLocalHeaders(
  source: ZipSource,
  entries: ZipEntry[],
  cdOffset: number,
): Promise<void> {
  const order = entries
    .map((_, i) => i)
    .sort((a, b) => (entries[a]?.localHeaderOffset ?? 0) - (entries[b]?.localHeaderOffset ?? 0));
  const gaps: Gap[] = [];
  let previous: Previous = { end: 0, entry: null, descriptor: false };
  for (let b = 0; b < order.length; b += BATCH) {
    const batch = order.slice(b, b + BATCH);
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
      between(previous, e.localHeaderOffset, e.name, gaps);
      const { dataOffset, descriptor } = localDataOffset(e, headers[k] as Uint8Array);
      const dataEnd = dataOffset + e.compressedSize;
      if (dataEnd > cdOffset) {
        throw zipError(
          dataEnd > source.size ? 'BIN_ZIP_TRUNCATED' : 'BIN_ZIP_INVALID',
          `the data of entry ${quoteName(e.name)} (${e.compressedSize} bytes at ${dataOffset}) runs into the central directory at ${cdOffset}`,
          dataOffset,
        );
      }
      const entry = { ...e, dataOffset };
      entries[index] = entry;
      previous = { end: dataEnd, entry, descriptor };
    }
  }
  between(previous, cdOffset, undefined, gaps);
  await checkDescriptors(source, gaps);
}

/** What lies between the end of `previous` and `next` (a local header, or the central directory). */
function between(previous: Previous, next: number, nextName: string | undefined, gaps: Gap[]): void {
  const what = nextName === undefined ? 'the central directory' : `entry ${quoteName(nextName)}`;
  const { entry } = previous;
  if (next < previous.end) {
    throw zipError(
      'BIN_ZIP_INVALID',
      `${what} overlaps entry ${quoteName(entry?.name ?? '')}`,
      next,
      nextName === undefined ? undefined : { entry: nextName, overlaps: entry?.name },
    );
  }
  if (next === previous.end) return;
  if (entry === null) {
    throw zipError(
      'BIN_ZIP_INVALID',
      `${next} bytes come before the first entry; torch.save starts the archive with its first entry`,
      0,
    );
  }
  if (!previous.descriptor) {
    throw zipError(
      'BIN_ZIP_INVALID',
      `${next - previous.end} bytes between entry ${quoteName(entry.name)} and ${what} belong to no entry`,
      previous.end,
    );
  }
  gaps.push({ from: previous.end, to: next, entry });
}

/**
 * Each gap holds exactly one data descriptor of its entry: the CRC-32 and both sizes (32-bit, or
 * 64-bit for ZIP64), with or without its signature, agreeing with the central directory.
 */
async function checkDescriptors(source: ZipSource, gaps: readonly Gap[]): Promise<void> {
  for (let b = 0; b < gaps.length; b += BATCH) {
    const batch = gaps.slice(b, b + BATCH);
    const reads = await Promise.all(
      batch.map((g) => (g.to - g.from <= 24 ? source.read(g.from, g.to - g.from) : Promise.resolve(null))),
    );
    batch.forEach((g, k) => {
      if (!isDescriptor(g.entry, reads[k] ?? null)) {
        throw zipError(
          'BIN_ZIP_INVALID',
          `${g.to - g.from} bytes after entry ${quoteName(g.entry.name)} are not its data descriptor`,
          g.from,
        );
      }
    });
  }
}

function isDescriptor(e: ZipEntry, bytes: Uint8Array | null): boolean {
  if (bytes === null) return false;
  const dv = view(bytes);
  const length = bytes.length;
  const signed = length === 16 || length === 24;
  const wide = length === 20 || length === 24;
  if (![12, 16, 20, 24].includes(length)) return false;
  if (signed && dv.getUint32(0, true) !== SIG_DESCRIPTOR) return false;
  let p = signed ? 4 : 0;
  if (dv.getUint32(p, true) !== e.crc32) return false;
  p += 4;
  const size = (): number => {
    const v = wide ? Number(dv.getBigUint64(p, true)) : dv.getUint32(p, true);
    p += wide ? 8 : 4;
    return v;
  };
  return size() === e.compressedSize && size() === e.uncompressedSize;
}

/**
 * Where the data of `e` starts, from its local header, which must agree with the central directory
 * on name, method, CRC-32 and sizes; and whether a data descriptor follows the data.
 */
function localDataOffset(e: ZipEntry, header: Uint8Array): { dataOffset: number; descriptor: boolean } {
  const at = e.localHeaderOffset;
  const hv = view(header);
  if (header.length < LOCAL_HEADER_SIZE || hv.getUint32(0, true) !== SIG_LOCAL) {
    throw zipError('BIN_ZIP_INVALID', `entry ${quoteName(e.name)} has no local header at ${at}`, at);
  }
  const nameLength = hv.getUint16(26, true);
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
  if (hv.getUint16(8, true) !== e.method) {
    throw zipError(
      'BIN_ZIP_INVALID',
      `the local header of entry ${quoteName(e.name)} disagrees with the central directory on the compression method`,
      at,
    );
  }
  const descriptor = (hv.getUint16(6, true) & FLAG_DATA_DESCRIPTOR) !== 0;
  // with a data descriptor the local header may hold zeros; saturated sizes live in a ZIP64 extra
  if (!descriptor) {
    const compressed = hv.getUint32(18, true);
    const uncompressed = hv.getUint32(22, true);
    const sizesAgree =
      (compressed === U32_MAX || compressed === e.compressedSize) &&
      (uncompressed === U32_MAX || uncompressed === e.uncompressedSize);
    if (hv.getUint32(14, true) !== e.crc32 || !sizesAgree) {
      throw zipError(
        'BIN_ZIP_INVALID',
        `the local header of entry ${quoteName(e.name)} disagrees with the central directory on its CRC-32 or sizes`,
        at,
      );
    }
  }
  return { dataOffset: at + LOCAL_HEADER_SIZE + nameLength + hv.getUint16(28, true), descriptor };
}
