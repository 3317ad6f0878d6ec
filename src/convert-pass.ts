/**
 * Convert's one read of the weights: every byte of the file is hashed exactly once, in order, from
 * the very bytes the conversion uses, and the file must be the one its header came from when the
 * pass ends.
 */
import { createHash } from 'node:crypto';
import { basename } from 'node:path';
import { RegularFile, sameFile, type FileIdentity } from './byte-source.js';
import { beginSha256, type HashProgressCallback, type PendingHash } from './checksum.js';
import { CodiError } from './errors.js';
import type { FileRange } from './files/gguf-writer.js';
import {
  parseSafetensorsHeader,
  type SafetensorsHeader,
  type SafetensorsTensorInfo,
} from './formats/safetensors.js';

/**
 * The weights' sha256, computed by the conversion pass from the very bytes it converts: the header
 * bytes, then the data section in file order, on this thread: a worker fed copies of them cost more
 * CPU and memory and was no faster by the clock on two cores, even for a 7B adapter
 * (bench/convert-7b.js). When no pass comes after all (a cached result, or an adapter that fails
 * before it), `elsewhere` hashes the file the ordinary way.
 */
export class PassHash implements PendingHash {
  readonly result: Promise<string>;
  private readonly sha = createHash('sha256');
  private resolve: (hex: string) => void = () => undefined;
  private reject: (e: Error) => void = () => undefined;
  private other: PendingHash | null = null;
  private settled = false;
  private file: { path: string; size: number; onProgress: HashProgressCallback | undefined } | null = null;
  private hashed = 0;

  constructor() {
    this.result = new Promise<string>((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
    this.result.catch(() => undefined);
  }

  /** Verification asks for the hash of `path`: this is it. */
  adopt(path: string, size: number, onProgress: HashProgressCallback | undefined): PendingHash {
    this.file = { path, size, onProgress };
    return this;
  }

  update(bytes: Uint8Array): void {
    this.sha.update(bytes);
    this.hashed += bytes.length;
    this.file?.onProgress?.(this.hashed, this.file.size);
  }

  /** The pass has fed every byte of the file. */
  finish(): void {
    if (this.settled) return;
    this.settled = true;
    this.resolve(this.sha.digest('hex'));
  }

  /** No pass will feed this hash: hash the file by itself (a no-op once the pass has finished). */
  elsewhere(): void {
    if (this.settled || !this.file) return;
    this.settled = true;
    this.other = beginSha256(this.file.path, this.file.size, this.file.onProgress);
    this.other.result.then(this.resolve, this.reject);
  }

  cancel(): void {
    this.other?.cancel();
    if (this.settled) return;
    this.settled = true;
    this.reject(new CodiError('HASH_CANCELLED', 'hashing the weights was cancelled'));
  }
}

/**
 * One front-to-back read of the weights file in which every byte passes through the hash exactly
 * once, in order: `hashedTo` is where the next one starts. Bytes no tensor of the GGUF needs (any
 * tensor not converted) are read just to be hashed; tensors `keep` names are copied aside when the
 * read passes them (`piece` hands them over later). A file that ends early has shrunk since its
 * header was read.
 */
export class WeightsPass {
  private hashedTo: number;
  /** tensors to copy aside when the read passes them, by where they start; `nextKept` the next one */
  private kept: SafetensorsTensorInfo[] = [];
  private nextKept = 0;
  private readonly aside = new Map<string, Uint8Array>();

  private constructor(
    private readonly file: RegularFile,
    private readonly header: SafetensorsHeader,
    private readonly hash: PassHash,
    /** the buffer for the tensors read here, and for bytes that are only hashed */
    private readonly held: Uint8Array,
  ) {
    this.hashedTo = header.dataOffset;
  }

  /**
   * Opens the file and hashes its header first: what this pass hashes must be the header the plan
   * was made from (else the file changed in between, whatever its timestamps say).
   */
  static async begin(
    path: string,
    header: SafetensorsHeader,
    hash: PassHash,
    largestTensor: number,
  ): Promise<WeightsPass> {
    const file = await RegularFile.open(path, { noFollow: true });
    const pass = new WeightsPass(file, header, hash, new Uint8Array(Math.max(largestTensor, 64 << 10)));
    try {
      const prefix = pass.readFully(new Uint8Array(header.dataOffset), 0);
      hash.update(prefix);
      if (!sameHeader(prefix, header)) throw sourceChanged(path, 'changed');
      return pass;
    } catch (e) {
      await file.close();
      throw e;
    }
  }

  private readFully(into: Uint8Array, position: number): Uint8Array {
    if (this.file.readSync(into, position) < into.length) throw sourceChanged(this.file.path, 'shrank');
    return into;
  }

  /** The pass reads forward only: a tensor behind it is the caller's mistake. */
  private notPassed(info: SafetensorsTensorInfo): void {
    if (this.header.dataOffset + info.begin < this.hashedTo) {
      throw new CodiError('INTERNAL', `${info.name} was asked for after the read had passed it`);
    }
  }

  /**
   * Tensors needed later than the read comes by them (the experts stacked into one GGUF tensor lie
   * among other tensors): each is copied aside as the read passes it, until `piece` takes it.
   */
  keep(infos: readonly SafetensorsTensorInfo[]): void {
    this.kept = [...infos].sort((x, y) => x.begin - y.begin);
    this.nextKept = 0;
  }

  private hashUpTo(end: number): void {
    while (this.hashedTo < end) {
      const kept = this.keptAhead();
      const start = kept ? this.header.dataOffset + kept.begin : end;
      if (kept && start < end) {
        this.hashPlainTo(start);
        const bytes = this.readFully(new Uint8Array(kept.end - kept.begin), this.hashedTo);
        this.hash.update(bytes);
        this.hashedTo += bytes.length;
        this.aside.set(kept.name, bytes);
        continue;
      }
      this.hashPlainTo(end);
    }
  }

  /** The next kept tensor the read has not passed yet. */
  private keptAhead(): SafetensorsTensorInfo | undefined {
    while (this.nextKept < this.kept.length) {
      const next = this.kept[this.nextKept];
      if (next && this.header.dataOffset + next.begin >= this.hashedTo) return next;
      this.nextKept++;
    }
    return undefined;
  }

  private hashPlainTo(end: number): void {
    while (this.hashedTo < end) {
      const part = this.held.subarray(0, Math.min(this.held.length, end - this.hashedTo));
      this.hash.update(this.readFully(part, this.hashedTo));
      this.hashedTo += part.length;
    }
  }

  /**
   * A kept tensor's bytes: copied aside earlier, or read now (into the pass's own buffer, valid
   * until the next read).
   */
  piece(info: SafetensorsTensorInfo): Uint8Array {
    const aside = this.aside.get(info.name);
    if (aside === undefined) return this.read(info);
    this.aside.delete(info.name);
    return aside;
  }

  /** A tensor's bytes, in the pass's own buffer (valid until the next read). */
  read(info: SafetensorsTensorInfo): Uint8Array {
    this.notPassed(info);
    this.hashUpTo(this.header.dataOffset + info.begin);
    const bytes = this.readFully(this.held.subarray(0, info.end - info.begin), this.hashedTo);
    this.hash.update(bytes);
    this.hashedTo += bytes.length;
    return bytes;
  }

  /** A tensor's bytes as a range the GGUF writer reads into its own buffers, hashing them there. */
  range(info: SafetensorsTensorInfo): FileRange {
    this.notPassed(info);
    this.hashUpTo(this.header.dataOffset + info.begin);
    const length = info.end - info.begin;
    const position = this.hashedTo;
    this.hashedTo += length;
    const path = this.file.path;
    return {
      file: this.file,
      position,
      length,
      // a failed read is already the file's own error
      failure: (cause) => (cause === null ? sourceChanged(path, 'shrank') : (cause as Error)),
      onBytes: (b) => {
        this.hash.update(b);
      },
    };
  }

  /**
   * Every byte is read and hashed: the bytes converted are the bytes hashed (and so, once the
   * checksums pass, the bytes published) only if the file is the same one, unchanged since the
   * header was read, and no longer than the header says.
   */
  async finish(before: FileIdentity | null): Promise<void> {
    this.hashUpTo(this.header.fileSize);
    const now = await this.file.currentIdentity();
    const path = this.file.path;
    if (now.size > this.header.fileSize) throw sourceChanged(path, 'grew');
    if (now.size < this.header.fileSize) throw sourceChanged(path, 'shrank');
    if (before && !sameFile(before, now)) throw sourceChanged(path, 'changed');
    this.hash.finish();
  }

  close(): Promise<void> {
    return this.file.close();
  }
}

/** Whether `prefix` (a header as read now) describes exactly the tensors of `header`. */
export function sameHeader(prefix: Uint8Array, header: SafetensorsHeader): boolean {
  let now: SafetensorsHeader;
  try {
    now = parseSafetensorsHeader(prefix, header.fileSize);
  } catch {
    return false;
  }
  return (
    now.dataOffset === header.dataOffset &&
    now.tensors.length === header.tensors.length &&
    now.tensors.every((t, i) => {
      const was = header.tensors[i];
      return (
        was !== undefined &&
        t.name === was.name &&
        t.dtype === was.dtype &&
        t.begin === was.begin &&
        t.end === was.end &&
        t.shape.length === was.shape.length &&
        t.shape.every((d, k) => d === was.shape[k])
      );
    })
  );
}

export function sourceChanged(path: string, how: string): CodiError {
  return new CodiError(
    'SOURCE_CHANGED',
    `${basename(path)} ${how} while it was being converted; nothing was written`,
    { file: basename(path) },
  );
}
