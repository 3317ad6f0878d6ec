/**
 * Streaming GGUF v3 writer. Tensor infos (name, type, ne) are declared up front so every data offset
 * is known before any data is written; the data then arrives tensor by tensor, in declared order, and
 * only one bounded chunk of it is held at a time. The file is written atomically: a temp file in the
 * target's folder, fsync, rename; on any error the temp file is removed.
 *
 * Layout (ggml/include/gguf.h): magic, version, n_tensors u64, n_kv u64, the key/value pairs, the tensor
 * infos, zero padding to the alignment, then each tensor's data padded to the alignment.
 */
import type { FileHandle } from 'node:fs/promises';

import { AtomicFile } from '../atomic.js';
import { RegularFile } from '../byte-source.js';
import { asCodiError, environmentError } from '../errors.js';
import {
  GGML_MAX_DIMS,
  GGUF_DEFAULT_ALIGNMENT,
  GGUF_KEY_ALIGNMENT,
  GgmlType,
  GgufValueType,
  ggmlTensorBytes,
  ggmlTypeName,
  isPowerOfTwo,
  tensorNameProblem,
  tensorTypeProblem,
  type GgufTypedValue,
} from '../formats/ggml-types.js';
import { encodedBytes, encodeF32, isFloatTensorType, QK8_0 } from '../formats/numeric.js';
import { encodeHeader, invalid, padTo } from './gguf-header.js';

export interface GgufTensorSpec {
  readonly name: string;
  /** dims in ggml order (ne[0] is the row length); see `neFromTorchShape` */
  readonly ne: readonly number[];
  readonly type: GgmlType;
}

/** float32 values (encoded to the tensor's type) or raw bytes already in the tensor's type */
export type TensorChunk = Float32Array | Uint8Array;
/**
 * Tensor bytes already in the tensor's type, taken straight from a range of an open file: they are
 * read into the writer's own buffers, so they are copied once on the way in and once on the way out.
 */
export interface FileRange {
  readonly file: RegularFile;
  readonly position: number;
  readonly length: number;
  /** the error to raise when a read fails (`cause`) or the file ends inside the range (`cause` null) */
  readonly failure: (cause: unknown) => Error;
  /** sees every byte read, in order (a hash of the source) */
  readonly onBytes?: (bytes: Uint8Array) => void;
}

export type TensorPayload = TensorChunk | Iterable<TensorChunk> | AsyncIterable<TensorChunk> | FileRange;

export interface GgufWriteOptions {
  /** key/value pairs in write order; `general.alignment`, when present, must be u32 */
  readonly metadata: Iterable<readonly [string, GgufTypedValue]>;
  readonly tensors: readonly GgufTensorSpec[];
  /** data alignment; written as `general.alignment` when it is not the default 32 */
  readonly alignment?: number;
  /**
   * fsync before the rename (default); false leaves the write-back to the kernel (`AtomicFile.commit`),
   * for files that are never believed after a crash of the machine.
   */
  readonly durable?: boolean;
}

export interface GgufWrittenTensor {
  readonly name: string;
  /** offset relative to the data section */
  readonly offset: number;
  readonly nBytes: number;
}

export interface GgufWriteResult {
  readonly path: string;
  readonly bytes: number;
  readonly dataOffset: number;
  readonly tensors: readonly GgufWrittenTensor[];
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
/** float32 values encoded per step: a multiple of the Q8_0 block so blocks never straddle steps */
const ENCODE_STEP = 1 << 18;

/**
 * Sequential writer with two buffers: while one is being written (in libuv's thread pool), the other
 * fills, so encoding and writing overlap. A write error surfaces at the next flush or `drain`.
 */
class Sink {
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

  constructor(
    private readonly fh: FileHandle,
    /** fdatasync early as the file grows, so the fsync of a durable commit has only the tail left */
    private readonly durable: boolean,
  ) {}

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
    const write = this.writeAll(this.buf.subarray(0, cut), this.flushed);
    write.catch(() => undefined);
    this.inFlight = write;
    // start the disk on what is written so far, so the fsync at the commit has only the tail left;
    // its errors are the commit's fsync's to report
    this.unsynced += cut;
    if (this.durable && this.unsynced >= EARLY_SYNC_BYTES && !this.syncing) {
      this.unsynced = 0;
      this.syncing = this.fh.datasync().then(
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

  private async writeAll(data: Uint8Array, at: number): Promise<void> {
    let done = 0;
    while (done < data.length) {
      const { bytesWritten } = await this.fh.write(data, done, data.length - done, at + done);
      done += bytesWritten;
    }
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

/**
 * A format's refusal becomes its CodiError; errno failures become environment errors about the
 * target; anything else is a bug and passes through.
 */
function asWriteError(e: unknown, path: string): unknown {
  const known = asCodiError(e);
  if (known) return known;
  if (typeof e === 'object' && e !== null && 'code' in e && typeof e.code === 'string') {
    return environmentError(e, path, 'saved');
  }
  return e;
}

function checkSpecs(tensors: readonly GgufTensorSpec[]): number[] {
  const names = new Set<string>();
  return tensors.map((t) => {
    const nameProblem = t.name === '' ? 'a tensor name is empty' : tensorNameProblem(t.name);
    if (nameProblem !== null) throw invalid(nameProblem, { tensor: t.name });
    if (names.has(t.name)) throw invalid(`duplicate tensor '${t.name}'`, { tensor: t.name });
    names.add(t.name);
    if (t.ne.length > GGML_MAX_DIMS || t.ne.some((d) => !Number.isSafeInteger(d) || d < 0)) {
      throw invalid(`tensor '${t.name}' has invalid dims [${t.ne.join(', ')}]`, { tensor: t.name });
    }
    const typeProblem = tensorTypeProblem(t.name, t.type, t.ne);
    if (typeProblem !== null) throw invalid(typeProblem, { tensor: t.name });
    const bytes = ggmlTensorBytes(t.type, t.ne);
    if (bytes === undefined) throw invalid(`tensor '${t.name}' is too large to address`, { tensor: t.name });
    return bytes;
  });
}

function isFileRange(x: TensorPayload): x is FileRange {
  return 'file' in x && x.file instanceof RegularFile;
}

function isAsyncIterable(x: unknown): x is AsyncIterable<TensorChunk> {
  return typeof x === 'object' && x !== null && Symbol.asyncIterator in x;
}

/**
 * A GGUF file being written. Create it, `writeTensor` each declared tensor in order, then `finish`;
 * `abort` (or any error from these) removes the temp file and leaves `path` untouched.
 */
export class GgufWriter {
  private next = 0;
  private done = false;
  private scratch: Uint8Array | undefined;

  private constructor(
    readonly path: string,
    private readonly file: AtomicFile,
    private readonly sink: Sink,
    private readonly specs: readonly GgufTensorSpec[],
    private readonly sizes: readonly number[],
    private readonly alignment: number,
    private readonly dataOffset: number,
    private readonly offsets: readonly number[],
    private readonly durable: boolean,
  ) {}

  static async create(path: string, options: GgufWriteOptions): Promise<GgufWriter> {
    const metadata: (readonly [string, GgufTypedValue])[] = [];
    const keys = new Set<string>();
    let alignment = options.alignment;
    for (const entry of options.metadata) {
      const [key, tv] = entry;
      if (key === '') throw invalid('empty metadata key');
      if (keys.has(key)) throw invalid(`duplicate metadata key '${key}'`, { key });
      keys.add(key);
      if (key === GGUF_KEY_ALIGNMENT) {
        if (tv.type !== GgufValueType.UINT32 || typeof tv.value !== 'number') {
          throw invalid(`'${GGUF_KEY_ALIGNMENT}' must be u32`);
        }
        if (alignment !== undefined && alignment !== tv.value) {
          throw invalid(`alignment ${alignment} contradicts '${GGUF_KEY_ALIGNMENT}' = ${tv.value}`);
        }
        alignment = tv.value;
      }
      metadata.push(entry);
    }
    alignment ??= GGUF_DEFAULT_ALIGNMENT;
    if (!isPowerOfTwo(alignment)) throw invalid(`alignment ${alignment} is not a power of two`);
    if (alignment !== GGUF_DEFAULT_ALIGNMENT && !keys.has(GGUF_KEY_ALIGNMENT)) {
      metadata.push([GGUF_KEY_ALIGNMENT, { type: GgufValueType.UINT32, value: alignment }]);
    }
    const sizes = checkSpecs(options.tensors);
    const offsets: number[] = [];
    let dataSize = 0;
    for (const size of sizes) {
      offsets.push(dataSize);
      dataSize += padTo(size, alignment);
    }

    const header = encodeHeader(metadata, options.tensors, offsets, alignment);

    const file = await AtomicFile.open(path);
    const durable = options.durable ?? true;
    const sink = new Sink(file.handle, durable);
    try {
      await sink.bytes(header);
      const dataOffset = header.length;
      return new GgufWriter(
        path,
        file,
        sink,
        options.tensors,
        sizes,
        alignment,
        dataOffset,
        offsets,
        durable,
      );
    } catch (e) {
      await sink.quiesce();
      await file.abort();
      throw asWriteError(e, path);
    }
  }

  /** The tensors still to be written, in order. */
  get pending(): readonly GgufTensorSpec[] {
    return this.specs.slice(this.next);
  }

  /** Writes the data of the next declared tensor, which must be `name`. */
  async writeTensor(name: string, payload: TensorPayload): Promise<void> {
    try {
      const spec = this.specs[this.next];
      if (this.done || spec === undefined)
        throw invalid(`no tensor '${name}' is left to write`, { tensor: name });
      if (spec.name !== name) {
        throw invalid(`tensor '${name}' written out of order: '${spec.name}' is next`, { tensor: name });
      }
      const expected = this.sizes[this.next] ?? 0;
      let written = 0;
      if (isFileRange(payload)) {
        if (payload.length !== expected) {
          throw invalid(`tensor '${name}' got ${payload.length} bytes of data, ${expected} expected`, {
            tensor: name,
          });
        }
        await this.sink.transfer(payload);
        written = expected;
      }
      const chunks: Iterable<TensorChunk> | AsyncIterable<TensorChunk> = isFileRange(payload)
        ? []
        : payload instanceof Float32Array || payload instanceof Uint8Array
          ? [payload]
          : payload;
      const put = async (chunk: TensorChunk): Promise<void> => {
        written += await this.writeChunk(spec, chunk, expected - written);
      };
      if (isAsyncIterable(chunks)) for await (const chunk of chunks) await put(chunk);
      else for (const chunk of chunks) await put(chunk);
      if (written !== expected) {
        throw invalid(`tensor '${name}' got ${written} bytes of data, ${expected} expected`, {
          tensor: name,
        });
      }
      await this.sink.zeros(padTo(expected, this.alignment) - expected);
      this.next++;
    } catch (e) {
      await this.abort();
      throw asWriteError(e, this.path);
    }
  }

  /**
   * Declares the next tensor's data without writing it: a hole that reads as zeros. For files whose
   * header is all that matters (benchmarks with full-size bases); llama.cpp would load zeros.
   */
  async skipTensor(name: string): Promise<void> {
    const spec = this.specs[this.next];
    if (this.done || spec?.name !== name) {
      await this.abort();
      throw invalid(`tensor '${name}' is not the next one to write`, { tensor: name });
    }
    await this.sink.hole(padTo(this.sizes[this.next] ?? 0, this.alignment));
    this.next++;
  }

  private async writeChunk(spec: GgufTensorSpec, chunk: TensorChunk, room: number): Promise<number> {
    if (chunk instanceof Uint8Array) {
      if (chunk.length > room) throw invalid(`tensor '${spec.name}' got more data than its shape holds`);
      await this.sink.bytes(chunk);
      return chunk.length;
    }
    if (!isFloatTensorType(spec.type)) {
      throw invalid(`tensor '${spec.name}': float32 data cannot be encoded as ${ggmlTypeName(spec.type)}`);
    }
    if (spec.type === GgmlType.F32) {
      // already in the target encoding: no copy through the scratch buffer
      if (chunk.byteLength > room) throw invalid(`tensor '${spec.name}' got more data than its shape holds`);
      await this.sink.bytes(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength));
      return chunk.byteLength;
    }
    let written = 0;
    for (let start = 0; start < chunk.length; start += ENCODE_STEP) {
      const part = chunk.subarray(start, Math.min(chunk.length, start + ENCODE_STEP));
      if (spec.type === GgmlType.Q8_0 && part.length % QK8_0 !== 0) {
        throw invalid(`tensor '${spec.name}': q8_0 data must come in multiples of ${QK8_0} values`);
      }
      const size = encodedBytes(spec.type, part.length);
      if (written + size > room) throw invalid(`tensor '${spec.name}' got more data than its shape holds`);
      // encoded straight into the sink's buffer where it can be, else through the scratch buffer
      const into = await this.sink.reserve(size, 4);
      if (into) {
        encodeF32(spec.type, part, into);
        this.sink.commit(size);
      } else {
        this.scratch ??= new Uint8Array(ENCODE_STEP * 4);
        await this.sink.bytes(encodeF32(spec.type, part, this.scratch));
      }
      written += size;
    }
    return written;
  }

  /** Flushes, fsyncs and renames the file into place. */
  async finish(): Promise<GgufWriteResult> {
    if (this.done) throw invalid('the GGUF writer is already closed');
    try {
      if (this.next !== this.specs.length) {
        throw invalid(
          `${this.specs.length - this.next} tensors were declared but not written, first '${this.specs[this.next]?.name ?? ''}'`,
        );
      }
      await this.sink.drain();
      // a trailing hole (skipTensor) must still count in the file size
      await this.file.handle.truncate(this.sink.position);
      this.done = true;
      await this.file.commit({ durable: this.durable });
    } catch (e) {
      await this.abort();
      throw asWriteError(e, this.path);
    }
    return {
      path: this.path,
      bytes: this.sink.position,
      dataOffset: this.dataOffset,
      tensors: this.specs.map((s, i) => ({
        name: s.name,
        offset: this.offsets[i] ?? 0,
        nBytes: this.sizes[i] ?? 0,
      })),
    };
  }

  /** Drops the temp file; `path` is left as it was. Safe to call more than once. */
  async abort(): Promise<void> {
    this.done = true;
    await this.sink.quiesce();
    await this.file.abort();
  }
}

/**
 * Writes a whole GGUF file, asking `data` for each tensor's payload in declared order, so only one
 * tensor (or one chunk of it, with an iterable payload) is in memory at a time.
 */
export async function writeGguf(
  path: string,
  options: GgufWriteOptions,
  data: (tensor: GgufTensorSpec, index: number) => TensorPayload | Promise<TensorPayload>,
): Promise<GgufWriteResult> {
  const writer = await GgufWriter.create(path, options);
  try {
    for (const [i, spec] of options.tensors.entries())
      await writer.writeTensor(spec.name, await data(spec, i));
    return await writer.finish();
  } catch (e) {
    await writer.abort();
    throw e;
  }
}
