/**
 * PyTorch `.bin` files: the zip archive opened through the byte source, and the scan of the pickle in
 * it (formats/torch-bin.ts, which never runs it). Here the formats' refusals become CodiErrors, and a
 * file that cannot be read is a `PATH_*` error (exit 3).
 */
import { RegularFile, withRegularFile } from '../byte-source.js';
import { liftedAsync } from '../errors.js';
import { scanTorchBinSource, type ScanTorchBinOptions, type TorchBinScan } from '../formats/torch-bin.js';
import { fileSource, ZipArchive, type ZipLimits } from '../formats/zip.js';

/**
 * Scans the PyTorch `.bin` at `path` without executing its pickle: the tensors it holds, checked
 * against the storages in the archive. Throws CodiError (BIN_*, PICKLE_*, or PATH_* for an
 * unreadable file).
 */
export async function scanTorchBin(path: string, options: ScanTorchBinOptions = {}): Promise<TorchBinScan> {
  const source = fileSource(await RegularFile.open(path));
  try {
    return await liftedAsync(() => scanTorchBinSource(source, options));
  } finally {
    await source.close();
  }
}

/** Opens and validates the archive at `path`; close it when done (or use `withZip`). */
export async function openZip(path: string, limits: Partial<ZipLimits> = {}): Promise<ZipArchive> {
  const source = fileSource(await RegularFile.open(path));
  try {
    return await liftedAsync(() => ZipArchive.fromSource(source, limits));
  } catch (err) {
    await source.close();
    throw err;
  }
}

/** Opens the archive at `path`, runs `fn`, and closes the file whatever happens. */
export function withZip<T>(
  path: string,
  fn: (zip: ZipArchive) => Promise<T>,
  limits: Partial<ZipLimits> = {},
): Promise<T> {
  return withRegularFile(path, (file) =>
    liftedAsync(async () => fn(await ZipArchive.fromSource(fileSource(file), limits))),
  );
}
