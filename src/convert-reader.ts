/**
 * The one read of the weights behind one face, for safetensors files and scanned `.bin` archives
 * alike: the converter's jobs in the order their data is read, and a reader that gives each tensor's
 * bytes (or a range of the file the GGUF writer copies itself) while every byte of the file is hashed.
 */
import { PassHash, sourceChanged, WeightsPass } from './convert-pass.js';
import { jobOf, largestSource, type ConvertJob, type PlannedTensor } from './convert-tensors.js';
import type { FileIdentity } from './byte-source.js';
import { CodiError } from './errors.js';
import type { FileRange } from './files/gguf-writer.js';
import type { PickleTensor } from './formats/pickle.js';
import type { SafetensorsDtype, SafetensorsHeader, SafetensorsTensorInfo } from './formats/safetensors.js';
import type { TorchBinScan } from './formats/torch-bin.js';

/** A tensor's bytes, as the pass reads them; `info` is the tensor's safetensors entry. */
export interface TensorReader {
  /** the bytes as a range of the file the writer reads itself, or null when they must be read here */
  range(info: SafetensorsTensorInfo): FileRange | null;
  /** the bytes, valid until the next read */
  read(info: SafetensorsTensorInfo): Promise<Uint8Array>;
  /** one part of a stacked tensor (which the read may have passed already), valid until the next read */
  piece(info: SafetensorsTensorInfo): Promise<Uint8Array>;
  /** every byte read and hashed, and the file the one that was verified */
  finish(before: FileIdentity | null): Promise<void>;
  close(): Promise<void>;
}

/**
 * The jobs in the order their data is read. From safetensors, the order their data lies in the
 * file: one sequential read does it. From a `.bin`, each tensor is given the place the safetensors
 * writer would give the same tensors (safetensorsOrder), whatever order torch.save put the storages
 * in: the GGUF is then the one the equivalent safetensors file gives, byte for byte.
 */
export async function orderedJobs(
  specs: readonly PlannedTensor[],
  weights: SafetensorsHeader | TorchBinScan,
): Promise<ConvertJob[]> {
  const infos = 'dataOffset' in weights ? weights.tensors : await safetensorsLayout(weights.tensors);
  const byName = new Map(infos.map((t) => [t.name, t]));
  return specs.map((t) => jobOf(t, byName)).sort((x, y) => x.at - y.at);
}

/** The safetensors entries of a `.bin`'s tensors: where the safetensors writer would put their data. */
async function safetensorsLayout(tensors: readonly PickleTensor[]): Promise<SafetensorsTensorInfo[]> {
  // the .bin readers (torch tensors, pickle, zip) are loaded for a .bin adapter only
  const { safetensorsOrder } = await import('./formats/torch-tensor.js');
  let at = 0;
  return safetensorsOrder(tensors).map((t) => {
    // verification let F32, F16 and BF16 through only: safetensors dtypes of the same names
    const dtype = t.dtype as SafetensorsDtype;
    const bytes = t.shape.reduce((a, b) => a * b, 1) * (dtype === 'F32' ? 4 : 2);
    const info = { name: t.name, dtype, shape: t.shape, begin: at, end: at + bytes };
    at += bytes;
    return info;
  });
}

/** Opens the pass over the weights file at `path` for these jobs. */
export async function openReader(
  path: string,
  weights: SafetensorsHeader | TorchBinScan,
  hash: PassHash,
  jobs: readonly ConvertJob[],
): Promise<TensorReader> {
  if ('dataOffset' in weights) {
    const pass = await WeightsPass.begin(path, weights, hash, Math.max(0, ...jobs.map(largestSource)));
    // what stacked tensors need, when the pass reads past it before their turn
    pass.keep(jobs.flatMap((j) => (j.kind === 'stacked' ? j.infos : [])));
    return {
      range: (info) => pass.range(info),
      read: (info) => Promise.resolve(pass.read(info)),
      piece: (info) => Promise.resolve(pass.piece(info)),
      finish: (before) => pass.finish(before),
      close: () => pass.close(),
    };
  }
  const { BinPass } = await import('./bin-pass.js');
  const pass = await BinPass.begin(path, weights, hash, (how) => sourceChanged(path, how));
  const byName = new Map(weights.tensors.map((t) => [t.name, t]));
  const tensor = (info: SafetensorsTensorInfo): PickleTensor => {
    const t = byName.get(info.name);
    if (!t) throw new CodiError('INTERNAL', `tensor ${info.name} vanished from the scan`);
    return t;
  };
  const buffer = new Uint8Array(Math.max(0, ...jobs.map(largestSource)));
  return {
    range: (info) => pass.range(tensor(info)),
    read: (info) => pass.tensor(tensor(info), buffer),
    // the .bin pass reads any tensor at any time
    piece: (info) => pass.tensor(tensor(info), buffer),
    finish: async (before) => {
      await pass.finish(before);
      hash.finish();
    },
    close: () => pass.close(),
  };
}
