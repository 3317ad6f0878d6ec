/**
 * The one read of a `.bin`'s tensor data, for `convert` and `mount --to-safetensors`, with the same
 * guarantees as the safetensors pass (convert-pass.ts): every byte of the file passes through the hash
 * exactly once, in order, and the file must be the one that was verified when the pass ends.
 *
 * Nothing is unpickled. The tensors are the ones the scanner reconstructed (storage key, dtype, shape,
 * stride, storage offset); each is copied out of its storage's zip entry (STORED, or inflated from
 * DEFLATE) into the contiguous row-major, little-endian layout of safetensors (formats/torch-tensor.ts).
 * Tensors are asked for in the order their consumer writes them, not the order their storages lie in
 * the archive: bytes ahead of the hash are hashed as they are read, bytes behind it are read again
 * (the end-of-pass identity check covers them). Memory holds one tensor, never the file.
 */
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createInflateRaw, inflateRawSync } from 'node:zlib';
import { RegularFile, sameFile, type FileIdentity } from './byte-source.js';
import { CodiError, lifted, liftedAsync } from './errors.js';
import { scanPickle, type PickleStorage, type PickleTensor } from './formats/pickle.js';
import type { TorchBinScan } from './formats/torch-bin.js';
import type { FileRange } from './files/gguf-writer.js';
import {
  gatherView,
  isContiguous,
  swapToLittleEndian,
  viewSpan,
  type ViewSpan,
} from './formats/torch-tensor.js';
import { fileSource, METHOD_STORED, quoteName, ZipArchive, type ZipEntry } from './formats/zip.js';

/** Where the bytes of the pass go: the weights' sha256 (convert's PassHash, or a plain hash). */
export interface PassHasher {
  update(bytes: Uint8Array): void;
}

/** The error for a file that changed while it was read (`how`: changed, shrank, grew). */
export type ChangedError = (how: string) => CodiError;

const CHUNK = 1 << 20;

export class BinPass {
  private hashedTo = 0;
  private readonly chunk = new Uint8Array(CHUNK);
  private span = new Uint8Array(0);
  private readonly storages: ReadonlyMap<string, PickleStorage>;

  private constructor(
    private readonly file: RegularFile,
    private readonly scan: TorchBinScan,
    private readonly entries: ReadonlyMap<string, ZipEntry>,
    private readonly hash: PassHasher,
    private readonly changed: ChangedError,
  ) {
    this.storages = new Map(scan.storages.map((s) => [s.key, s]));
  }

  /**
   * Opens the file, reads its zip directory, and hashes it up to the end of `data.pkl`: the pickle
   * this pass hashes must describe the tensors the scan found (else the file changed in between,
   * whatever its timestamps say).
   */
  static async begin(
    path: string,
    scan: TorchBinScan,
    hash: PassHasher,
    changed: ChangedError,
  ): Promise<BinPass> {
    const file = await RegularFile.open(path, { noFollow: true });
    try {
      // the archive reads through this descriptor; it is closed with the pass, never by the archive
      const zip = await liftedAsync(() => ZipArchive.fromSource(fileSource(file)), path);
      const pass = new BinPass(file, scan, storageEntries(zip, scan), hash, changed);
      const pkl = zip.get(`${scan.archive}/data.pkl`);
      if (!pkl) throw changed('changed');
      const pickle = await pass.entryBytes(pkl);
      if (!samePickle(pickle, scan)) throw changed('changed');
      return pass;
    } catch (e) {
      await file.close();
      throw e;
    }
  }

  /**
   * The tensor's elements, contiguous, row-major and little-endian: exactly the bytes a safetensors
   * file holds for it. `into` is used when large enough (the result is valid until the next call).
   */
  async tensor(t: PickleTensor, into?: Uint8Array): Promise<Uint8Array> {
    const { entry, span } = this.locate(t);
    const length = span.end - span.begin;
    let out: Uint8Array;
    if (entry.method === METHOD_STORED && isContiguous(t)) {
      // the tensor's bytes are one run of the file: read straight into place
      out = this.readRange(entry.dataOffset + span.begin, length, into);
    } else {
      const bytes =
        entry.method === METHOD_STORED
          ? this.readRange(entry.dataOffset + span.begin, length, this.spanBuffer(length))
          : await this.inflatedSpan(entry, span.begin, span.end);
      out = lifted(() => gatherView(t, span, bytes, into));
    }
    if (this.scan.byteorder === 'big') swapToLittleEndian(out, span.itemSize);
    return out;
  }

  /**
   * A tensor whose bytes are already what the consumer wants (one STORED run, little-endian) as a
   * range of the file the GGUF writer reads straight into its buffers; null for any other. The
   * writer reads the whole range before it asks for the next tensor, and hashes through `onBytes`
   * the bytes past the hash's frontier, in order.
   */
  range(t: PickleTensor): FileRange | null {
    const { entry, span } = this.locate(t);
    if (entry.method !== METHOD_STORED || !isContiguous(t) || this.scan.byteorder === 'big') return null;
    const position = entry.dataOffset + span.begin;
    const length = span.end - span.begin;
    if (position > this.hashedTo) this.hashUpTo(position);
    const hashFrom = this.hashedTo;
    this.hashedTo = Math.max(this.hashedTo, position + length);
    let at = position;
    return {
      file: this.file,
      position,
      length,
      failure: (cause) => (cause === null ? this.changed('shrank') : (cause as Error)),
      onBytes: (bytes) => {
        const start = at;
        at += bytes.length;
        if (at > hashFrom) this.hash.update(bytes.subarray(Math.max(0, hashFrom - start)));
      },
    };
  }

  /** The tensor's storage entry and the span of it the tensor reads, checked. */
  private locate(t: PickleTensor): { entry: ZipEntry; span: ViewSpan } {
    const storage = this.storages.get(t.storageKey);
    const entry = this.entries.get(t.storageKey);
    if (!storage || !entry) throw missing(t.storageKey, this.scan.archive);
    if (storage.dtype !== t.dtype && !storage.storageType.endsWith('UntypedStorage')) {
      // torch.save never writes a tensor of one element type over a typed storage of another
      throw new CodiError(
        'BIN_STORAGE_MISMATCH',
        `tensor ${quoteName(t.name)} is ${t.dtype} but views storage ${quoteName(storage.key)} of ${storage.dtype}`,
        { details: { tensor: t.name, storage: storage.key } },
      );
    }
    return { entry, span: lifted(() => viewSpan(t, storage.byteLength)) };
  }

  /** A buffer of at least `length` bytes for a view's span, kept for the next one. */
  private spanBuffer(length: number): Uint8Array {
    if (this.span.length < length) this.span = new Uint8Array(length);
    return this.span.subarray(0, length);
  }

  /** The file's identity when the pass opened it. */
  get opened(): FileIdentity {
    return this.file.identity;
  }

  /**
   * Every byte is read and hashed: the bytes converted are the bytes hashed (and so, once the
   * checksums pass, the bytes published) only if the file is the same one, unchanged since it was
   * verified, and as long as its archive says.
   */
  async finish(before: FileIdentity | null): Promise<void> {
    this.hashUpTo(this.file.size);
    if (this.file.readSync(this.chunk.subarray(0, 1), this.file.size) > 0) throw this.changed('grew');
    const now = await this.file.currentIdentity();
    if (now.size !== this.file.size) throw this.changed(now.size > this.file.size ? 'grew' : 'shrank');
    if (before && !sameFile(before, now)) throw this.changed('changed');
  }

  close(): Promise<void> {
    return this.file.close();
  }

  private readFully(into: Uint8Array, position: number): Uint8Array {
    if (this.file.readSync(into, position) < into.length) throw this.changed('shrank');
    return into;
  }

  private hashUpTo(end: number): void {
    while (this.hashedTo < end) {
      const part = this.chunk.subarray(0, Math.min(CHUNK, end - this.hashedTo));
      this.hash.update(this.readFully(part, this.hashedTo));
      this.hashedTo += part.length;
    }
  }

  /**
   * `length` bytes from `position`, in `into` when it is large enough (else a new array). Bytes past
   * the hash's frontier are hashed from this very read (after the bytes before them); bytes behind it
   * were hashed already.
   */
  private readRange(position: number, length: number, into?: Uint8Array): Uint8Array {
    if (position > this.hashedTo) this.hashUpTo(position);
    const target = into && into.length >= length ? into.subarray(0, length) : new Uint8Array(length);
    const bytes = this.readFully(target, position);
    const end = position + length;
    if (end > this.hashedTo) {
      this.hash.update(bytes.subarray(this.hashedTo - position));
      this.hashedTo = end;
    }
    return bytes;
  }

  /** A whole (small) entry's content: the pickle. */
  private async entryBytes(entry: ZipEntry): Promise<Uint8Array> {
    if (entry.method === METHOD_STORED) return this.readRange(entry.dataOffset, entry.compressedSize);
    const raw = this.readRange(entry.dataOffset, entry.compressedSize);
    try {
      const data = inflateRawSync(raw, { maxOutputLength: Math.max(1, entry.uncompressedSize + 1) });
      if (data.length === entry.uncompressedSize) return data;
    } catch {
      // reported below, as the archive changing under us
    }
    return Promise.reject(this.changed('changed'));
  }

  /**
   * Bytes `[begin, end)` of a DEFLATE entry's content, inflated as a stream: only the span is kept,
   * and the entry must inflate to exactly its declared size.
   */
  private async inflatedSpan(entry: ZipEntry, begin: number, end: number): Promise<Uint8Array> {
    const out = new Uint8Array(end - begin);
    const compressed = (function* (pass: BinPass): Generator<Uint8Array> {
      for (let at = 0; at < entry.compressedSize; at += CHUNK) {
        yield pass.readRange(entry.dataOffset + at, Math.min(CHUNK, entry.compressedSize - at));
      }
    })(this);
    let produced = 0;
    const keep = async (inflated: AsyncIterable<Buffer>): Promise<void> => {
      for await (const piece of inflated) {
        const from = Math.max(begin, produced);
        const to = Math.min(end, produced + piece.length);
        if (to > from) out.set(piece.subarray(from - produced, to - produced), from - begin);
        produced += piece.length;
        // a stream that inflates past its declared size is stopped there, however far it would go
        if (produced > entry.uncompressedSize)
          throw badDeflate(entry, `it inflates to more than its declared ${entry.uncompressedSize} bytes`);
      }
    };
    try {
      await pipeline(Readable.from(compressed), createInflateRaw(), keep);
    } catch (e) {
      if (e instanceof CodiError) throw e;
      throw badDeflate(entry, `it does not inflate (${(e as Error).message})`);
    }
    if (produced !== entry.uncompressedSize) {
      throw badDeflate(entry, `it inflates to ${produced} bytes, not its declared ${entry.uncompressedSize}`);
    }
    return out;
  }
}

/** Each storage's entry in the archive, as the pass reads them: present, and large enough. */
function storageEntries(zip: ZipArchive, scan: TorchBinScan): Map<string, ZipEntry> {
  const entries = new Map<string, ZipEntry>();
  for (const s of scan.storages) {
    const entry = zip.get(`${scan.archive}/data/${s.key}`);
    if (!entry) throw missing(s.key, scan.archive);
    if (entry.uncompressedSize < s.byteLength) {
      throw new CodiError(
        'BIN_STORAGE_MISMATCH',
        `storage entry ${quoteName(entry.name)} holds ${entry.uncompressedSize} bytes, fewer than the ${s.byteLength} its ${s.numel} × ${s.dtype} elements need`,
      );
    }
    entries.set(s.key, entry);
  }
  return entries;
}

function missing(key: string, archive: string): CodiError {
  return new CodiError(
    'BIN_STORAGE_MISSING',
    `storage ${quoteName(key)} has no entry ${quoteName(`${archive}/data/${key}`)} in the archive`,
  );
}

function badDeflate(entry: ZipEntry, why: string): CodiError {
  return new CodiError('BIN_ZIP_INVALID', `storage entry ${quoteName(entry.name)} is damaged: ${why}`, {
    details: { entry: entry.name },
  });
}

/** Whether `pickle` (as the pass read it) holds exactly the tensors and storages of `scan`. */
function samePickle(pickle: Uint8Array, scan: TorchBinScan): boolean {
  let now;
  try {
    now = scanPickle(pickle);
  } catch {
    return false;
  }
  const same = (a: readonly unknown[], b: readonly unknown[]): boolean =>
    JSON.stringify(a) === JSON.stringify(b);
  const tensorKey = (t: PickleTensor): unknown[] => [
    t.name,
    t.dtype,
    t.shape,
    t.stride,
    t.storageOffset,
    t.storageKey,
  ];
  const storageKey = (s: PickleStorage): unknown[] => [s.key, s.dtype, s.numel, s.storageType];
  return (
    same(now.tensors.map(tensorKey), scan.tensors.map(tensorKey)) &&
    same(now.storages.map(storageKey), scan.storages.map(storageKey))
  );
}
