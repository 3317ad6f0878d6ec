/**
 * PyTorch `.bin` files as `torch.save` writes them: a zip archive (zip.ts) with one
 * `<folder>/data.pkl` and a `<folder>/data/<key>` entry per tensor storage. The pickle is scanned,
 * never run (pickle.ts), and what it says is checked against the archive around it: every storage it
 * refers to is there and large enough, and nothing else hides in the archive.
 *
 * Errors are `FormatError`s with a `BIN_*`, `PICKLE_*` or `BIN_ZIP_*` code (files/torch-bin.ts scans
 * a file).
 */
import { FormatError } from './format-error.js';
import {
  scanPickle,
  type PickleLimits,
  type PickleScanResult,
  type PickleStorage,
  type PickleTensor,
  type TorchBinErrorCode,
  type TorchBinWarning,
} from './pickle.js';
import { memorySource, quoteName, ZipArchive, type ZipEntry, type ZipLimits, type ZipSource } from './zip.js';

export interface TorchBinScan {
  /** the folder inside the zip, e.g. `archive` or `adapter_model` */
  archive: string;
  protocol: number;
  tensors: PickleTensor[];
  storages: PickleStorage[];
  byteorder: 'little' | 'big';
  /** the archive's `version` record, when it has one */
  formatVersion: number | undefined;
  globals: string[];
  warnings: TorchBinWarning[];
}

export interface ScanTorchBinOptions {
  /** cap on `data.pkl`, which is read whole */
  maxPickleBytes?: number;
  pickleLimits?: Partial<PickleLimits>;
  zipLimits?: Partial<ZipLimits>;
}

export const DEFAULT_MAX_PICKLE_BYTES = 64 * 1024 * 1024;

/** pickle PROTO 2, LONG1 of 10 bytes: the magic number the pre-1.6 format starts with */
const LEGACY_MAGIC = Uint8Array.from([
  0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19,
]);

/** records torch.save writes besides data.pkl and data/<key> */
const KNOWN_RECORDS = new Set([
  'version',
  '.data/version',
  'byteorder',
  '.data/serialization_id',
  '.format_version',
  '.storage_alignment',
]);

function binError(code: TorchBinErrorCode, message: string, pointer?: string): FormatError {
  return new FormatError(code, message, pointer === undefined ? {} : { pointer });
}

export function scanTorchBinBytes(
  bytes: Uint8Array,
  options: ScanTorchBinOptions = {},
): Promise<TorchBinScan> {
  return scanTorchBinSource(memorySource(bytes), options);
}

/**
 * Scans a PyTorch `.bin` (torch.save zip) without executing its pickle: the tensors it holds, checked
 * against the storages in the archive. Over any positioned-read source; the caller closes it.
 */
export async function scanTorchBinSource(
  source: ZipSource,
  options: ScanTorchBinOptions = {},
): Promise<TorchBinScan> {
  await refuseNonZip(source);
  const zip = await ZipArchive.fromSource(source, options.zipLimits);
  const { pkl, prefix } = findPickle(zip);
  const scanned = scanIn(
    pkl,
    await zip.read(pkl, options.maxPickleBytes ?? DEFAULT_MAX_PICKLE_BYTES),
    options,
  );
  const warnings: TorchBinWarning[] = scanned.warnings.map((w) => ({
    ...w,
    message: `${pkl.name}: ${w.message}`,
    ...(w.pointer === undefined ? {} : { pointer: `${pkl.name}:${w.pointer}` }),
  }));
  const byteorder = await readByteorder(zip, prefix, warnings);
  const formatVersion = await readFormatVersion(zip, prefix);
  checkStorages(zip, prefix, scanned.storages, warnings);
  checkOtherEntries(zip, pkl, prefix, scanned.storages, warnings);
  return {
    archive: prefix.slice(0, -1),
    protocol: scanned.protocol,
    tensors: scanned.tensors,
    storages: scanned.storages,
    byteorder,
    formatVersion,
    globals: scanned.globals,
    warnings,
  };
}

/** A legacy (pre-1.6) file, a bare pickle or anything else that is no zip, refused by what it starts with. */
async function refuseNonZip(source: ZipSource): Promise<void> {
  const head = await source.read(0, Math.min(source.size, 16));
  if (head[0] === 0x80) {
    const legacy = head.length >= 2 + LEGACY_MAGIC.length && LEGACY_MAGIC.every((b, i) => head[2 + i] === b);
    throw binError(
      'BIN_LEGACY_FORMAT',
      legacy
        ? 'unsupported legacy PyTorch format (saved before PyTorch 1.6, not a zip archive); re-save it with torch.save (zip format) or convert it to safetensors'
        : 'a bare pickle, not a PyTorch zip archive: unsupported legacy format; re-save it with torch.save (zip format) or convert it to safetensors',
      '0',
    );
  }
  // a file cut inside the first signature is still a (truncated) zip for the zip reader to report
  const looksZip = head[0] === 0x50 && (head.length < 2 || head[1] === 0x4b);
  if (head.length > 0 && !looksZip) {
    throw new FormatError(
      'BIN_ZIP_INVALID',
      'not a PyTorch archive: torch.save writes a zip file, and this is not one',
      { pointer: '0' },
    );
  }
}

/** The archive's one `<folder>/data.pkl`, with every entry inside that folder. */
function findPickle(zip: ZipArchive): { pkl: ZipEntry; prefix: string } {
  const pickles = zip.entries.filter((e) => /^[^/]+\/data\.pkl$/.test(e.name));
  const pkl = pickles[0];
  if (pkl === undefined || pickles.length > 1) {
    throw binError(
      'BIN_NOT_TORCH_ZIP',
      pkl === undefined
        ? 'the zip archive has no <folder>/data.pkl: it is not a torch.save file'
        : `the zip archive has ${pickles.length} <folder>/data.pkl entries; torch.save writes one`,
    );
  }
  const archive = pkl.name.slice(0, -'/data.pkl'.length);
  const prefix = `${archive}/`;
  const stray = zip.entries.find((e) => !e.name.startsWith(prefix));
  if (stray !== undefined) {
    // torch.load would never look at it: a place to hide something
    throw binError(
      'BIN_NOT_TORCH_ZIP',
      `entry ${quoteName(stray.name)} is outside the archive folder ${quoteName(archive)}; torch.save writes every entry inside it`,
      String(stray.localHeaderOffset),
    );
  }
  return { pkl, prefix };
}

/** The pickle scanned, its errors pointing into the entry they are about. */
function scanIn(pkl: ZipEntry, bytes: Uint8Array, options: ScanTorchBinOptions): PickleScanResult {
  try {
    return scanPickle(bytes, options.pickleLimits);
  } catch (err) {
    if (!(err instanceof FormatError) || err.pointer === undefined) throw err;
    throw new FormatError(err.code, `${pkl.name}: ${err.message}`, {
      pointer: `${pkl.name}:${err.pointer}`,
      details: { entry: pkl.name, ...err.details },
      cause: err,
    });
  }
}

async function readByteorder(
  zip: ZipArchive,
  prefix: string,
  warnings: TorchBinWarning[],
): Promise<'little' | 'big'> {
  const entry = zip.get(`${prefix}byteorder`);
  if (entry === undefined) return 'little';
  const text = new TextDecoder('latin1').decode(await zip.read(entry, 16)).trim();
  if (text !== 'little' && text !== 'big') {
    throw binError(
      'BIN_NOT_TORCH_ZIP',
      `the byteorder record says ${quoteName(text)}, not "little" or "big"`,
    );
  }
  if (text === 'big') {
    warnings.push({
      code: 'BIN_BIG_ENDIAN',
      message: 'tensor data is big-endian; values need byte swapping on this host',
    });
  }
  return text;
}

async function readFormatVersion(zip: ZipArchive, prefix: string): Promise<number | undefined> {
  const entry = zip.get(`${prefix}.data/version`) ?? zip.get(`${prefix}version`);
  if (entry === undefined) return undefined;
  const text = new TextDecoder('latin1').decode(await zip.read(entry, 64)).trim();
  if (!/^\d{1,6}$/.test(text)) {
    throw binError('BIN_NOT_TORCH_ZIP', `the version record says ${quoteName(text)}, not a number`);
  }
  return Number(text);
}

/** Every storage the pickle refers to has an entry of at least its size. */
function checkStorages(
  zip: ZipArchive,
  prefix: string,
  storages: readonly PickleStorage[],
  warnings: TorchBinWarning[],
): void {
  for (const storage of storages) {
    const name = `${prefix}data/${storage.key}`;
    const entry = zip.get(name);
    if (entry === undefined) {
      throw binError(
        'BIN_STORAGE_MISSING',
        `storage ${quoteName(storage.key)} (${storage.numel} × ${storage.dtype}) has no entry ${quoteName(name)} in the archive`,
      );
    }
    if (entry.uncompressedSize < storage.byteLength) {
      throw binError(
        'BIN_STORAGE_MISMATCH',
        `storage entry ${quoteName(name)} holds ${entry.uncompressedSize} bytes, fewer than the ${storage.byteLength} its ${storage.numel} × ${storage.dtype} elements need`,
        String(entry.localHeaderOffset),
      );
    }
    if (entry.uncompressedSize > storage.byteLength) {
      warnings.push({
        code: 'BIN_STORAGE_OVERSIZED',
        message: `storage entry ${quoteName(name)} holds ${entry.uncompressedSize} bytes, more than the ${storage.byteLength} declared`,
        pointer: String(entry.localHeaderOffset),
      });
    }
  }
}

/** Entries that are neither the pickle nor a storage it refers to: warned about. */
function checkOtherEntries(
  zip: ZipArchive,
  pkl: ZipEntry,
  prefix: string,
  storages: readonly PickleStorage[],
  warnings: TorchBinWarning[],
): void {
  const referenced = new Set(storages.map((s) => `${prefix}data/${s.key}`));
  for (const e of zip.entries) {
    if (e === pkl || referenced.has(e.name) || e.name.endsWith('/')) continue;
    const record = e.name.slice(prefix.length);
    if (record.startsWith('data/')) {
      warnings.push({
        code: 'BIN_UNREFERENCED_STORAGE',
        message: `entry ${quoteName(e.name)} is a storage no tensor refers to`,
        pointer: String(e.localHeaderOffset),
      });
    } else if (!KNOWN_RECORDS.has(record)) {
      warnings.push({
        code: 'BIN_UNEXPECTED_ENTRY',
        message: `entry ${quoteName(e.name)} is not something torch.save writes for a state dict`,
        pointer: String(e.localHeaderOffset),
      });
    }
  }
}
