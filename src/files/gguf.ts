/**
 * GGUF files: the header read from a file (header only, through the byte source) and a tensor's data.
 * The format itself is formats/gguf.ts; here its refusals become CodiErrors about the file, and a
 * file that cannot be read is a `PATH_*` error (exit 3).
 */
import { RegularFile, withRegularFile } from '../byte-source.js';
import { fromFormatError, lifted } from '../errors.js';
import {
  ggufTensor,
  parseGgufHeader,
  tensorDataTruncated,
  type GgufFile,
  type GgufReadLimits,
  type GgufReadOptions,
} from '../formats/gguf.js';
import { decodeToF32 } from '../formats/numeric.js';

/** Reads and checks the header of the GGUF file at `path`. */
export async function readGgufHeader(
  path: string,
  limits: Partial<GgufReadLimits> = {},
  options: GgufReadOptions = {},
): Promise<GgufFile> {
  const file = await RegularFile.open(path);
  try {
    return lifted(() => parseGgufHeader(file, limits, options), path);
  } finally {
    await file.close();
  }
}

/** The raw bytes of one tensor (8-byte aligned, so typed-array views over them work). */
export async function readTensorData(path: string, file: GgufFile, name: string): Promise<Uint8Array> {
  const t = lifted(() => ggufTensor(file, name), path);
  return withRegularFile(path, async (source) => {
    const out = new Uint8Array(new ArrayBuffer(Math.ceil(t.nBytes / 8) * 8), 0, t.nBytes);
    const got = await source.read(out, t.dataStart);
    if (got < t.nBytes) throw fromFormatError(tensorDataTruncated(name, t.dataStart + got), path);
    return out;
  });
}

/** One tensor decoded to float32 (F32, F16, BF16 and Q8_0 tensors). */
export async function readTensorF32(path: string, file: GgufFile, name: string): Promise<Float32Array> {
  const t = lifted(() => ggufTensor(file, name), path);
  const data = await readTensorData(path, file, name);
  return lifted(() => decodeToF32(t.type, data), path);
}
