/**
 * `mount --to-safetensors`: the staging copy of a `.bin` adapter gets `adapter_model.safetensors`
 * instead of the pickle, written natively (bin-pass.ts reads the tensors; nothing is unpickled), and
 * a metadata.json whose checksums cover the new file and whose `converted_from` records the original
 * file and its sha256. The `.bin` is not copied: one weights file, the one no code can hide in.
 *
 * The safetensors file is what PEFT writes from the same state dict (`save_pretrained` through the
 * safetensors crate): tensors contiguous and row-major in the crate's order, shared storages
 * materialised per tensor, names and dtypes kept, `__metadata__` {"format": "pt"}.
 */
import { createHash } from 'node:crypto';
import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { fsyncDir } from '../atomic.js';
import { BinPass } from '../bin-pass.js';
import { readRegularFile } from '../byte-source.js';
import { CodiError, environmentError, isCodiError, lifted } from '../errors.js';
import { encodeHeader } from '../formats/safetensors.js';
import { isSafetensorsDtype } from '../formats/safetensors-spec.js';
import type { TorchBinScan } from '../formats/torch-bin.js';
import { safetensorsOrder, viewSpan } from '../formats/torch-tensor.js';
import { decodeUtf8 } from '../formats/utf8.js';
import { BIN_FILE, METADATA_FILE, SAFETENSORS_FILE } from '../layout.js';
import { convertedMetadataText, type ConvertedFrom } from '../metadata.js';
import { pausePoint } from '../test-hooks.js';
import { VERSION } from '../version.js';
import { weightsSha256, type VerifiedAdapter, type VerifyReport } from '../verify.js';
import { copyOneFile, filesToCopy, sourceChanged } from './copy.js';
import { statusError } from './volume.js';

/** What the conversion made: the new weights file and its sha256, and where it came from. */
export interface Converted {
  file: typeof SAFETENSORS_FILE;
  sha256: string;
  from: ConvertedFrom;
}

/** The safetensors metadata PEFT writes. */
const PT_METADATA = { format: 'pt' } as const;

/**
 * Fills the staging folder `dest` from the verified `.bin` adapter at `src`: its other files copied,
 * `adapter_model.safetensors` converted, metadata.json rewritten; each file fsynced, then the folder.
 */
export async function writeSafetensorsCopy(
  src: string,
  dest: string,
  report: VerifyReport & { verified: VerifiedAdapter },
): Promise<Converted> {
  const { layout, bin } = report.verified;
  const binSha = weightsSha256(report);
  if (!bin || layout.weightsFile !== BIN_FILE || binSha === null) {
    throw new CodiError('INTERNAL', 'a .bin adapter to convert without its scan or checksum');
  }
  const buffer = Buffer.allocUnsafe(4 * 1024 * 1024);
  for (const name of filesToCopy(layout).filter((n) => n !== BIN_FILE && n !== METADATA_FILE)) {
    await copyOneFile(join(src, name), join(dest, name), name, buffer);
    await pausePoint(`mount:copied:${name}`);
  }
  const sha256 = await writeSafetensorsFrom(join(src, BIN_FILE), bin, binSha, join(dest, SAFETENSORS_FILE));
  await pausePoint(`mount:copied:${SAFETENSORS_FILE}`);
  const from: ConvertedFrom = {
    file: BIN_FILE,
    sha256: binSha,
    converter: `codi-adapter ${VERSION}`,
    converted_at: new Date().toISOString().replace(/\.\d{3}Z$/u, 'Z'),
  };
  const metadata = convertedMetadataText(await metadataText(src), from, { file: SAFETENSORS_FILE, sha256 });
  await writeNewFile(join(dest, METADATA_FILE), (file) => file.writeFile(metadata));
  await pausePoint(`mount:copied:${METADATA_FILE}`);
  await fsyncDir(dest);
  return { file: SAFETENSORS_FILE, sha256, from };
}

/** The source's metadata.json as text (verification has read and validated it). */
async function metadataText(src: string): Promise<string> {
  let bytes: Uint8Array;
  try {
    bytes = await readRegularFile(join(src, METADATA_FILE), { noFollow: true });
  } catch (e) {
    throw sourceChanged(METADATA_FILE, e);
  }
  const decoded = decodeUtf8(bytes);
  if (!('text' in decoded)) throw sourceChanged(METADATA_FILE, new Error('no longer UTF-8'));
  return decoded.text;
}

/**
 * Writes `adapter_model.safetensors` at `to` from the `.bin` at `from`, tensor by tensor: header
 * first, then each tensor read out of its storage in the crate's order. The `.bin` is hashed as it
 * is read and must be the file verification hashed (`binSha`); returns the new file's sha256.
 */
async function writeSafetensorsFrom(
  from: string,
  scan: TorchBinScan,
  binSha: string,
  to: string,
): Promise<string> {
  const tensors = safetensorsOrder(scan.tensors);
  const storageBytes = new Map(scan.storages.map((s) => [s.key, s.byteLength]));
  const entries = tensors.map((t) => {
    if (!isSafetensorsDtype(t.dtype)) {
      throw new CodiError('TENSOR_DTYPE', `${t.name} is ${t.dtype}: not a safetensors dtype`);
    }
    const span = lifted(() => viewSpan(t, storageBytes.get(t.storageKey) ?? 0));
    return { name: t.name, dtype: t.dtype, shape: t.shape, data: { length: span.numel * span.itemSize } };
  });
  const { prefix } = lifted(() => encodeHeader(entries, PT_METADATA));
  const binHash = createHash('sha256');
  const outHash = createHash('sha256').update(prefix);
  const changed = (how: string): CodiError =>
    sourceChanged(BIN_FILE, new Error(`it ${how} while it was converted`));
  const pass = await BinPass.begin(from, scan, binHash, changed);
  try {
    await writeNewFile(to, async (file) => {
      await file.writeFile(prefix);
      const buffer = new Uint8Array(Math.max(0, ...entries.map((e) => e.data.length)));
      for (const [i, t] of tensors.entries()) {
        const bytes = await pass.tensor(t, buffer);
        outHash.update(bytes);
        await file.writeFile(bytes);
        // crash-safety tests stop here: the new weights half written in the staging folder
        if (i === tensors.length >> 1) await pausePoint('mount:converting');
      }
      await pass.finish(pass.opened);
    });
  } finally {
    await pass.close();
  }
  if (binHash.digest('hex') !== binSha) throw changed('changed');
  return outHash.digest('hex');
}

/** A new file at `path` (0644, never over an existing one), written by `fill`, then fsynced. */
async function writeNewFile(path: string, fill: (file: FileHandle) => Promise<unknown>): Promise<void> {
  const file = await open(path, 'wx', 0o644).catch((e: unknown) => {
    throw environmentError(e, path, 'written');
  });
  try {
    await fill(file);
    await file.chmod(0o644);
    await file.sync();
  } catch (e) {
    throw isCodiError(e) ? e : environmentError(e, path, 'written');
  } finally {
    await file.close();
  }
}

/** `--to-safetensors` on an adapter whose weights are not a `.bin`: nothing to convert. */
export function notBinError(src: string, weightsFile: string | null, binBeside: boolean): CodiError {
  return statusError(
    'not_mounted',
    'MOUNT_NOT_BIN',
    weightsFile === SAFETENSORS_FILE
      ? `--to-safetensors converts adapter_model.bin, but the weights of ${src} are ${SAFETENSORS_FILE} already${
          binBeside ? ` (the ${BIN_FILE} beside it is not the weights file, and is not converted)` : ''
        }`
      : `--to-safetensors converts adapter_model.bin, and ${src} has none`,
    { file: src },
  );
}
