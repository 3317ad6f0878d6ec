/**
 * The GGUF writer's output: a sequential byte sink with two buffers (while one is written, the other
 * fills), writing to a target. The target is a file being written, or, to prove that a file already
 * there is exactly what the writer would write, a comparison with it (`CompareTarget`): the same
 * bytes, produced the same way, compared where they would have been written.
 */
import type { FileHandle } from 'node:fs/promises';
import { RegularFile } from '../byte-source.js';
import type { FileRange } from './gguf-writer.js';

/** Where the sink's bytes go. */
export interface SinkTarget {
  /** `data` at file offset `at`; the caller keeps `data` untouched until this settles */
  write(data: Uint8Array, at: number): Promise<void>;
  /** starts making what was written durable (a file), or nothing */
  sync(): Promise<void>;
}

/** A file being written; `durable`: fdatasync'd early as it grows, so the commit's fsync has only the tail. */
export function fileTarget(fh: FileHandle, durable = true): SinkTarget {
  return {
    async write(data, at) {
      let done = 0;
      while (done < data.length) {
        const { bytesWritten } = await fh.write(data, done, data.length - done, at + done);
        done += bytesWritten;
      }
    },
    async sync() {
      if (durable) await fh.datasync();
    },
  };
}

/**
 * Compares what would be written with `file`: after the first difference the rest is not read (the
 * writer goes on producing its bytes, for whatever else reads them as they go by, e.g. a hash).
 */
export class CompareTarget implements SinkTarget {
  /** the file offset of the first byte that differs, or null while none does */
  firstDifference: number | null = null;
  private scratch = new Uint8Array(0);

  constructor(readonly file: RegularFile) {}

  async write(data: Uint8Array, at: number): Promise<void> {
    if (this.firstDifference !== null) return;
    if (this.scratch.length < data.length) this.scratch = new Uint8Array(data.length);
    const there = this.scratch.subarray(0, data.length);
    const n = await this.file.read(there, at);
    if (n === data.length && Buffer.compare(there, data) === 0) return;
    let i = 0;
    while (i < n && there[i] === data[i]) i++;
    this.firstDifference = at + i;
  }

  sync(): Promise<void> {
    return Promise.resolve();
  }

  /** Whatever was compared matched, and the file ends where the written bytes would: `size`. */
  matches(size: number): boolean {
    if (this.firstDifference === null && this.file.size !== size)
      this.firstDifference = Math.min(size, this.file.size);
    return this.firstDifference === null;
  }
}

/**
 * Each of the sink's two buffers: larger ones cost more in memory touched for the first time than
 * they save (bench/convert.js prints that cost per page), smaller ones double the reads and writes.
 */
const SINK_BYTES = 512 << 10;
/**
 * A buffer's first byte lies at a file offset that is a multiple of this (but after a hole or the
 * final flush), so tensor data, aligned in the file, is aligned in the buffer and encodes in place.
 */
const BUFFER_ALIGN = 32;
/** an fdatasync is started in the background after this many bytes (see Sink.flush) */
const EARLY_SYNC_BYTES = 16 << 20;

/**
 * Sequential writer with two buffers: while one is being written (in libuv's thread pool), the other
 * fills, so encoding and writing overlap. A write error surfaces at the next flush or `drain`.
 */
export class Sink {
  private readonly buffers = [new Uint8Array(SINK_BYTES), new Uint8Array(SINK_BYTES)] as const;
  private buf: Uint8Array = this.buffers[0];
  private view = new DataView(this.buf.buffer);
  private used = 0;
  /** the write of the other buffer, if one is under way */
  private inFlight: Promise<void> | null = null;
  /** an early fdatasync, if one is under way, and the bytes written since the last one began */
  private syncing: Promise<void> | null = null;
  private unsynced = 0;
  /** bytes handed to the sink so far (= the file offset of the next byte) */
  position = 0;

  constructor(private readonly target: SinkTarget) {}

  /** file offset where the buffered bytes start */
  private flushed = 0;

  /**
   * Starts writing the buffered bytes and switches to the other buffer. Unless `all`, a tail of
   * fewer than BUFFER_ALIGN bytes is carried over to the other buffer, so that it starts aligned.
   */
  async flush(all = false): Promise<void> {
    const tail = all ? 0 : (this.flushed + this.used) % BUFFER_ALIGN;
    const cut = this.used - tail;
    if (cut === 0) return;
    // one write at a time: the previous one owns the buffer this switches to
    await this.settle();
    const write = this.target.write(this.buf.subarray(0, cut), this.flushed);
    write.catch(() => undefined);
    this.inFlight = write;
    // start the disk on what is written so far, so the fsync at the commit has only the tail left;
    // its errors are the commit's fsync's to report
    this.unsynced += cut;
    if (this.unsynced >= EARLY_SYNC_BYTES && !this.syncing) {
      this.unsynced = 0;
      this.syncing = this.target.sync().then(
        () => {
          this.syncing = null;
        },
        () => {
          this.syncing = null;
        },
      );
    }
    const next = this.buf === this.buffers[0] ? this.buffers[1] : this.buffers[0];
    next.set(this.buf.subarray(cut, this.used));
    this.flushed += cut;
    this.used = tail;
    this.buf = next;
    this.view = new DataView(this.buf.buffer);
  }

  /**
   * `n` bytes at the write position for the caller to fill in place, then `commit(n)`; null when
   * they cannot be had in one buffer at a multiple of `align` (the caller then hands over a copy).
   */
  async reserve(n: number, align: number): Promise<Uint8Array | null> {
    if (n > this.buf.length - BUFFER_ALIGN) return null;
    if (this.used + n > this.buf.length) await this.flush();
    if (this.used + n > this.buf.length || this.used % align !== 0) return null;
    return this.buf.subarray(this.used, this.used + n);
  }

  commit(n: number): void {
    this.used += n;
    this.position += n;
  }

  /** Waits for the write under way, if any. */
  async settle(): Promise<void> {
    const write = this.inFlight;
    this.inFlight = null;
    await write;
  }

  /** Nothing of this sink's is under way any more (before the file is dropped); errors do not matter. */
  async quiesce(): Promise<void> {
    await this.settle().catch(() => undefined);
    await this.syncing;
  }

  /** Everything handed over is written (not yet fsynced), and no early fdatasync is under way. */
  async drain(): Promise<void> {
    await this.flush(true);
    await this.settle();
    await this.syncing;
  }

  /** Leaves `n` bytes unwritten: a hole that reads as zeros (sparse where the file system allows). */
  async hole(n: number): Promise<void> {
    await this.flush(true);
    this.flushed += n;
    this.position += n;
  }

  /** Copies `data` into the buffers (the caller may reuse it as soon as this returns). */
  async bytes(data: Uint8Array): Promise<void> {
    let done = 0;
    while (done < data.length) {
      const room = this.buf.length - this.used;
      if (room === 0) {
        await this.flush();
        continue;
      }
      const n = Math.min(room, data.length - done);
      this.buf.set(n === data.length ? data : data.subarray(done, done + n), this.used);
      this.used += n;
      done += n;
    }
    this.position += data.length;
  }

  async zeros(n: number): Promise<void> {
    if (n > 0) await this.bytes(new Uint8Array(n));
  }

  /**
   * Reads `range` into the buffers: a synchronous read fills one buffer while the other is written
   * behind it, so reading and writing overlap with no copy in between.
   */
  async transfer(range: FileRange): Promise<void> {
    let position = range.position;
    let left = range.length;
    while (left > 0) {
      const room = this.buf.length - this.used;
      if (room === 0) {
        await this.flush();
        continue;
      }
      const got = Math.min(room, left);
      let read: number;
      try {
        read = range.file.readSync(this.buf.subarray(this.used, this.used + got), position);
      } catch (e) {
        throw range.failure(e);
      }
      if (read < got) throw range.failure(null);
      range.onBytes?.(this.buf.subarray(this.used, this.used + got));
      this.used += got;
      this.position += got;
      position += got;
      left -= got;
    }
  }
}
