/**
 * Zip archives made from code, as PyTorch's writer makes them (STORED entries whose data is aligned to
 * 64 bytes by a padding extra field; with `descriptors`, flags 0x0808 and a data descriptor after each
 * entry's data, as torch.save writes), and the ways hostile archives depart from that layout (a
 * comment, bytes before, between or after the entries, a local header that names another file, a
 * local entry the central directory leaves out, flags), for the zip reader's tests.
 */
import { crc32, deflateRawSync } from 'node:zlib';

export interface ZipInputEntry {
  name: string;
  data: Uint8Array;
  /** 0 STORED (default, as PyTorch), 8 DEFLATE */
  method?: 0 | 8;
  /** general purpose flags of both headers (bit 3 is set by `descriptors`) */
  flags?: number;
  /** the name in the local header, when it is to differ from the central directory's */
  localName?: string;
  /** written in the file, left out of the central directory */
  hidden?: boolean;
  /** bytes written after the entry's data (and its data descriptor) */
  after?: Uint8Array;
}

export interface ZipWriteOptions {
  /** data alignment of STORED entries, via a padding extra field; PyTorch uses 64 */
  align?: number;
  zip64?: boolean;
  /** a data descriptor after each entry's data, with zeros in the local header, as torch.save */
  descriptors?: boolean;
  /** bytes before the first entry (the offsets count them, as an archive prepended to) */
  before?: Uint8Array;
  /** the end record's comment */
  comment?: Uint8Array;
}

class Bytes {
  readonly chunks: Uint8Array[] = [];
  length = 0;

  push(chunk: Uint8Array): void {
    this.chunks.push(chunk);
    this.length += chunk.length;
  }

  concat(): Uint8Array {
    return new Uint8Array(Buffer.concat(this.chunks));
  }
}

function le(size: number, fill: (dv: DataView) => void): Uint8Array {
  const b = new Uint8Array(size);
  fill(new DataView(b.buffer));
  return b;
}

/** A zip archive as PyTorch's writer makes one (or with DEFLATE entries, for the reader's tests). */
export function zipBytes(entries: readonly ZipInputEntry[], options: ZipWriteOptions = {}): Uint8Array {
  const out = new Bytes();
  const central = new Bytes();
  if (options.before) out.push(options.before);
  let listed = 0;
  for (const entry of entries) {
    writeEntry(out, entry.hidden ? new Bytes() : central, entry, options);
    if (!entry.hidden) listed++;
  }
  const cdOffset = out.length;
  for (const chunk of central.chunks) out.push(chunk);
  writeEnd(out, cdOffset, central.length, listed, options);
  return out.concat();
}

function localHeader(
  zip64: boolean,
  flags: number,
  method: number,
  sizes: { crc: number; stored: number; data: number },
  nameLength: number,
  extraLength: number,
): Uint8Array {
  return le(30, (dv) => {
    dv.setUint32(0, 0x04034b50, true);
    dv.setUint16(4, zip64 ? 45 : 20, true);
    dv.setUint16(6, flags, true);
    dv.setUint16(8, method, true);
    dv.setUint16(10, 0, true);
    dv.setUint16(12, 0x21, true);
    dv.setUint32(14, sizes.crc, true);
    dv.setUint32(18, sizes.stored, true);
    dv.setUint32(22, sizes.data, true);
    dv.setUint16(26, nameLength, true);
    dv.setUint16(28, extraLength, true);
  });
}

/** One entry: its local header, name, padding and data in `out`, its record in `central`. */
function writeEntry(out: Bytes, central: Bytes, entry: ZipInputEntry, options: ZipWriteOptions): void {
  const align = options.align ?? 64;
  const zip64 = options.zip64 ?? false;
  const descriptor = options.descriptors ?? false;
  const method = entry.method ?? 0;
  const flags = (entry.flags ?? 0) | (descriptor ? 0x0808 : 0);
  const stored = method === 0 ? entry.data : new Uint8Array(deflateRawSync(entry.data));
  const crc = crc32(entry.data) >>> 0;
  const name = Buffer.from(entry.name, 'utf8');
  const localName = Buffer.from(entry.localName ?? entry.name, 'utf8');
  const offset = out.length;
  let padding = 0;
  if (method === 0 && align > 1) {
    const bare = offset + 30 + localName.length + 4;
    padding = (align - (bare % align)) % align;
  }
  const extra =
    method === 0 && align > 1
      ? le(4 + padding, (dv) => {
          dv.setUint16(0, 0x4246, true); // 'FB', PyTorch's padding field
          dv.setUint16(2, padding, true);
          for (let i = 0; i < padding; i++) dv.setUint8(4 + i, 0x5a);
        })
      : new Uint8Array(0);
  const sizes = descriptor
    ? { crc: 0, stored: 0, data: 0 }
    : { crc, stored: stored.length, data: entry.data.length };
  out.push(localHeader(zip64, flags, method, sizes, localName.length, extra.length));
  out.push(localName);
  out.push(extra);
  out.push(stored);
  if (descriptor) {
    out.push(
      le(16, (dv) => {
        dv.setUint32(0, 0x08074b50, true);
        dv.setUint32(4, crc, true);
        dv.setUint32(8, stored.length, true);
        dv.setUint32(12, entry.data.length, true);
      }),
    );
  }
  if (entry.after) out.push(entry.after);
  const centralExtra = zip64
    ? le(28, (dv) => {
        dv.setUint16(0, 0x0001, true);
        dv.setUint16(2, 24, true);
        dv.setBigUint64(4, BigInt(entry.data.length), true);
        dv.setBigUint64(12, BigInt(stored.length), true);
        dv.setBigUint64(20, BigInt(offset), true);
      })
    : new Uint8Array(0);
  central.push(
    le(46, (dv) => {
      dv.setUint32(0, 0x02014b50, true);
      dv.setUint16(4, zip64 ? 45 : 20, true);
      dv.setUint16(6, zip64 ? 45 : 20, true);
      dv.setUint16(8, flags, true);
      dv.setUint16(10, method, true);
      dv.setUint16(12, 0, true);
      dv.setUint16(14, 0x21, true);
      dv.setUint32(16, crc, true);
      dv.setUint32(20, zip64 ? 0xffffffff : stored.length, true);
      dv.setUint32(24, zip64 ? 0xffffffff : entry.data.length, true);
      dv.setUint16(28, name.length, true);
      dv.setUint16(30, centralExtra.length, true);
      dv.setUint32(42, zip64 ? 0xffffffff : offset, true);
    }),
  );
  central.push(name);
  central.push(centralExtra);
}

/** The end records: ZIP64 ones when asked for, then the classic one. */
function writeEnd(
  out: Bytes,
  cdOffset: number,
  cdSize: number,
  count: number,
  options: ZipWriteOptions,
): void {
  const zip64 = options.zip64 ?? false;
  const comment = options.comment ?? new Uint8Array(0);
  if (zip64) {
    const recordOffset = out.length;
    out.push(
      le(56, (dv) => {
        dv.setUint32(0, 0x06064b50, true);
        dv.setBigUint64(4, 44n, true);
        dv.setUint16(12, 45, true);
        dv.setUint16(14, 45, true);
        dv.setBigUint64(24, BigInt(count), true);
        dv.setBigUint64(32, BigInt(count), true);
        dv.setBigUint64(40, BigInt(cdSize), true);
        dv.setBigUint64(48, BigInt(cdOffset), true);
      }),
    );
    out.push(
      le(20, (dv) => {
        dv.setUint32(0, 0x07064b50, true);
        dv.setBigUint64(8, BigInt(recordOffset), true);
        dv.setUint32(16, 1, true);
      }),
    );
  }
  out.push(
    le(22, (dv) => {
      dv.setUint32(0, 0x06054b50, true);
      dv.setUint16(8, zip64 ? 0xffff : count, true);
      dv.setUint16(10, zip64 ? 0xffff : count, true);
      dv.setUint32(12, zip64 ? 0xffffffff : cdSize, true);
      dv.setUint32(16, zip64 ? 0xffffffff : cdOffset, true);
      dv.setUint16(20, comment.length, true);
    }),
  );
  out.push(comment);
}
