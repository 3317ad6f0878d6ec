/**
 * Streaming GGUF v3 writer. Tensor infos (name, type, ne) are declared up front so every data offset
 * is known before any data is written; the data then arrives tensor by tensor, in declared order, and
 * only one bounded chunk of it is held at a time. The file is written atomically: a temp file in the
 * target's folder, fsync, rename; on any error the temp file is removed. The same writer can, instead
 * of writing, compare what it would write with a file already there (`compareGguf`): the proof that
 * the file is exactly this GGUF, byte for byte, made by the code that would have written it.
 *
 * Layout (ggml/include/gguf.h): magic, version, n_tensors u64, n_kv u64, the key/value pairs, the tensor
 * infos, zero padding to the alignment, then each tensor's data padded to the alignment.
 */
import { AtomicFile } from '../atomic.js';
import { identityOfStats, RegularFile, type FileIdentity } from '../byte-source.js';
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
import { CompareTarget, fileTarget, Sink } from './gguf-sink.js';

/** float32 values encoded per step: a multiple of the Q8_0 block so blocks never straddle steps */
const ENCODE_STEP = 1 << 18;

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
   * fsynced before the rename into place (the default); without it the data is left for the kernel
   * to write back, for files that are proven by content before every use (the GGUF cache)
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
  /**
   * The file as it was written, before the rename (which changes its ctime): whoever opens `path`
   * later finds the file this writer wrote only if device, inode, size and mtime are these.
   */
  readonly identity: FileIdentity;
}

/** What comparing the writer's bytes with a file found. */
export interface GgufCompareResult {
  readonly same: boolean;
  /** the first byte offset that differs (or where one of the two ends first); null when the same */
  readonly firstDifference: number | null;
  readonly bytes: number;
}

/** Where a GgufWriter's bytes go: an atomic file, or a comparison with a file already there. */
type Output =
  { kind: 'file'; file: AtomicFile; durable: boolean } | { kind: 'compare'; target: CompareTarget };

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

/** What the header says before any byte is written: metadata in order, alignment, tensor sizes and offsets. */
interface Layout {
  metadata: (readonly [string, GgufTypedValue])[];
  alignment: number;
  sizes: number[];
  offsets: number[];
}

function planLayout(options: GgufWriteOptions): Layout {
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
  return { metadata, alignment, sizes, offsets };
}

/**
 * The header (magic, version, counts, the key/value pairs, the tensor infos, padding), encoded in
 * memory and handed to the sink at once; the data's offset.
 */
async function writeHeader(sink: Sink, tensors: readonly GgufTensorSpec[], layout: Layout): Promise<number> {
  const header = encodeHeader(layout.metadata, tensors, layout.offsets, layout.alignment);
  await sink.bytes(header);
  return header.length;
}

/**
 * A GGUF file being written. Create it, `writeTensor` each declared tensor in order, then `finish`;
 * `abort` (or any error from these) removes the temp file and leaves `path` untouched. Made with
 * `comparing`, it writes nothing and compares instead (`finishComparing`).
 */
export class GgufWriter {
  private next = 0;
  private done = false;
  private scratch: Uint8Array | undefined;

  private constructor(
    readonly path: string,
    private readonly output: Output,
    private readonly sink: Sink,
    private readonly specs: readonly GgufTensorSpec[],
    private readonly sizes: readonly number[],
    private readonly alignment: number,
    private readonly dataOffset: number,
    private readonly offsets: readonly number[],
  ) {}

  static async create(path: string, options: GgufWriteOptions): Promise<GgufWriter> {
    const layout = planLayout(options);
    const file = await AtomicFile.open(path);
    const durable = options.durable ?? true;
    const sink = new Sink(fileTarget(file.handle, durable));
    return GgufWriter.begin(path, { kind: 'file', file, durable }, sink, options, layout);
  }

  /** A writer that compares its bytes with `file` (which the caller opened and closes) instead of writing. */
  static async comparing(file: RegularFile, options: GgufWriteOptions): Promise<GgufWriter> {
    const layout = planLayout(options);
    const target = new CompareTarget(file);
    return GgufWriter.begin(file.path, { kind: 'compare', target }, new Sink(target), options, layout);
  }

  private static async begin(
    path: string,
    output: Output,
    sink: Sink,
    options: GgufWriteOptions,
    layout: Layout,
  ): Promise<GgufWriter> {
    try {
      const dataOffset = await writeHeader(sink, options.tensors, layout);
      const { sizes, alignment, offsets } = layout;
      return new GgufWriter(path, output, sink, options.tensors, sizes, alignment, dataOffset, offsets);
    } catch (e) {
      await sink.quiesce();
      if (output.kind === 'file') await output.file.abort();
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
      const spec = this.nextSpec(name);
      const expected = this.sizes[this.next] ?? 0;
      const written = await this.writePayload(spec, payload, expected);
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

  private nextSpec(name: string): GgufTensorSpec {
    const spec = this.specs[this.next];
    if (this.done || spec === undefined)
      throw invalid(`no tensor '${name}' is left to write`, { tensor: name });
    if (spec.name !== name) {
      throw invalid(`tensor '${name}' written out of order: '${spec.name}' is next`, { tensor: name });
    }
    return spec;
  }

  /**
   * A payload's bytes; how many. Each kind has its own short path: every tensor comes through here,
   * and a function that does little per call is not worth V8 optimising (a compile that costs more
   * than a few hundred tensors gain from it).
   */
  private async writePayload(
    spec: GgufTensorSpec,
    payload: TensorPayload,
    expected: number,
  ): Promise<number> {
    if (payload instanceof Float32Array || payload instanceof Uint8Array) {
      return this.writeChunk(spec, payload, expected);
    }
    if (!isFileRange(payload)) return this.writeChunks(spec, payload, expected);
    if (payload.length !== expected) {
      throw invalid(`tensor '${spec.name}' got ${payload.length} bytes of data, ${expected} expected`, {
        tensor: spec.name,
      });
    }
    await this.sink.transfer(payload);
    return expected;
  }

  private async writeChunks(
    spec: GgufTensorSpec,
    chunks: Iterable<TensorChunk> | AsyncIterable<TensorChunk>,
    expected: number,
  ): Promise<number> {
    let written = 0;
    if (isAsyncIterable(chunks)) {
      for await (const chunk of chunks) written += await this.writeChunk(spec, chunk, expected - written);
    } else {
      for (const chunk of chunks) written += await this.writeChunk(spec, chunk, expected - written);
    }
    return written;
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

  /** Flushes, fsyncs (when durable) and renames the file into place. */
  async finish(): Promise<GgufWriteResult> {
    if (this.done) throw invalid('the GGUF writer is already closed');
    let identity: FileIdentity;
    try {
      const { output } = this;
      if (output.kind !== 'file') throw invalid('a comparing GGUF writer ends with finishComparing');
      this.checkAllWritten();
      await this.sink.drain();
      // a trailing hole (skipTensor) must still count in the file size
      await output.file.handle.truncate(this.sink.position);
      identity = identityOfStats(await output.file.handle.stat());
      this.done = true;
      await output.file.commit({ durable: output.durable });
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
      identity,
    };
  }

  /** Ends a comparing writer: whether the file holds exactly the bytes it would have written. */
  async finishComparing(): Promise<GgufCompareResult> {
    const { output } = this;
    if (this.done || output.kind !== 'compare') throw invalid('not a comparing GGUF writer, or closed');
    this.checkAllWritten();
    await this.sink.drain();
    this.done = true;
    const same = output.target.matches(this.sink.position);
    return { same, firstDifference: output.target.firstDifference, bytes: this.sink.position };
  }

  private checkAllWritten(): void {
    if (this.next !== this.specs.length) {
      throw invalid(
        `${this.specs.length - this.next} tensors were declared but not written, first '${this.specs[this.next]?.name ?? ''}'`,
      );
    }
  }

  /** Drops the temp file; `path` is left as it was. Safe to call more than once. */
  async abort(): Promise<void> {
    this.done = true;
    await this.sink.quiesce();
    if (this.output.kind === 'file') await this.output.file.abort();
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

/**
 * Compares `file` with the GGUF `writeGguf` would write from the same options and data, producing
 * every byte exactly as writing does (so `data` sees the same calls) but writing none.
 */
export async function compareGguf(
  file: RegularFile,
  options: GgufWriteOptions,
  data: (tensor: GgufTensorSpec, index: number) => TensorPayload | Promise<TensorPayload>,
): Promise<GgufCompareResult> {
  const writer = await GgufWriter.comparing(file, options);
  try {
    for (const [i, spec] of options.tensors.entries())
      await writer.writeTensor(spec.name, await data(spec, i));
    return await writer.finishComparing();
  } catch (e) {
    await writer.abort();
    throw e;
  }
}
