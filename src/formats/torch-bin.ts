/**
 * PyTorch `.bin` files as `torch.save` writes them: a zip archive (zip.ts) with one
 * `<folder>/data.pkl` and a `<folder>/data/<key>` entry per tensor storage. The pickle is scanned,
 * never run (pickle.ts), and what it says is checked against the archive around it: every storage it
 * refers to is there with exactly its size, and nothing rides along: no entry torch.save does not
 * write (another pickle, a storage no tensor uses, anything outside the folder), since its only use
 * would be for some other reader to find.
 *
 * torch.load takes a file for a zip archive only when it starts with a local header (`PK\x03\x04`);
 * anything else goes to its legacy reader, which unpickles before it checks anything.
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

/** pickle PROTO 2, LONG1 of 10 bytes: the magic number the legacy (non-zip) format starts with */
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
  checkStorages(zip, prefix, scanned);
  checkOtherEntries(zip, pkl, prefix, scanned.storages);
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

const ZIP_MAGIC = [0x50, 0x4b, 0x03, 0x04];
const LEGACY_WRITERS =
  'the legacy torch.save format (not a zip archive), which torch before 1.6 writes, and any torch with _use_new_zipfile_serialization=False';

/**
 * Anything torch.load would not read as a zip archive, refused by what it starts with: the legacy
 * format (pickles in a row, or a tar), a bare pickle, other files.
 */
async function refuseNonZip(source: ZipSource): Promise<void> {
  const head = await source.read(0, Math.min(source.size, 512));
  // a file cut inside the first signature is still a (truncated) zip for the zip reader to report
  if (ZIP_MAGIC.every((b, i) => i >= head.length || head[i] === b)) return;
  const tar = head.length >= 262 && new TextDecoder('latin1').decode(head.subarray(257, 262)) === 'ustar';
  if (head[0] === 0x80 || tar) {
    const legacy =
      tar || (head.length >= 2 + LEGACY_MAGIC.length && LEGACY_MAGIC.every((b, i) => head[2 + i] === b));
    throw binError(
      'BIN_LEGACY_FORMAT',
      legacy
        ? `unsupported: ${LEGACY_WRITERS}${tar ? ' (its tar form)' : ''}; torch.load unpickles it before it checks anything`
        : `a bare pickle, not a PyTorch zip archive: unsupported, like ${LEGACY_WRITERS}`,
      '0',
    );
  }
  throw new FormatError(
    'BIN_ZIP_INVALID',
    head[0] === 0x50 && head[1] === 0x4b
      ? 'the file starts with another zip record than a local header: torch.load would not read it as a zip archive but hand it to its legacy reader'
      : 'not a PyTorch archive: torch.save writes a zip file, and this is not one',
    { pointer: '0' },
  );
}

/**
 * The archive's `<folder>/data.pkl`, with every entry inside that folder. torch takes the folder from
 * the name of the first entry of the central directory, and refuses an entry outside it.
 */
function findPickle(zip: ZipArchive): { pkl: ZipEntry; prefix: string } {
  const first = zip.entries[0]?.name ?? '';
  const archive = first.includes('/') ? first.slice(0, first.indexOf('/')) : undefined;
  const pkl = archive === undefined ? undefined : zip.get(`${archive}/data.pkl`);
  if (archive === undefined || pkl === undefined) {
    throw binError(
      'BIN_NOT_TORCH_ZIP',
      archive === undefined
        ? `the first entry of the zip archive, ${quoteName(first)}, is not in a folder: it is not a torch.save file`
        : `the zip archive has no ${quoteName(`${archive}/data.pkl`)} (torch reads the folder of its first entry): it is not a torch.save file`,
    );
  }
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

/** The archive's format version, which torch.load needs (it reads `.data/version` first), 1 to 10. */
async function readFormatVersion(zip: ZipArchive, prefix: string): Promise<number> {
  const entry = zip.get(`${prefix}.data/version`) ?? zip.get(`${prefix}version`);
  if (entry === undefined) {
    throw binError(
      'BIN_NOT_TORCH_ZIP',
      'the archive has no version record, without which torch.load refuses it',
    );
  }
  const text = new TextDecoder('latin1').decode(await zip.read(entry, 64)).trim();
  const version = /^\d{1,6}$/.test(text) ? Number(text) : NaN;
  if (!(version >= 1 && version <= 10)) {
    throw binError(
      'BIN_NOT_TORCH_ZIP',
      `the version record says ${quoteName(text)}, not a format version torch reads (1 to 10)`,
    );
  }
  return version;
}

/**
 * Every storage the pickle refers to is used by a tensor of the state dict and has an entry of
 * exactly its size (torch 2.10 and later refuse any other size; earlier ones read a short record's
 * missing bytes as garbage and ignore a long one's tail).
 */
function checkStorages(zip: ZipArchive, prefix: string, scanned: PickleScanResult): void {
  const used = new Set(scanned.tensors.map((t) => t.storageKey));
  for (const storage of scanned.storages) {
    const name = `${prefix}data/${storage.key}`;
    const entry = zip.get(name);
    if (!used.has(storage.key)) {
      throw binError(
        'BIN_UNREFERENCED_STORAGE',
        `storage ${quoteName(storage.key)} is loaded by the pickle, but no tensor of the state dict uses it`,
        entry === undefined ? undefined : String(entry.localHeaderOffset),
      );
    }
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
      throw binError(
        'BIN_STORAGE_OVERSIZED',
        `storage entry ${quoteName(name)} holds ${entry.uncompressedSize} bytes, more than the ${storage.byteLength} its ${storage.numel} × ${storage.dtype} elements take; torch.save writes exactly those`,
        String(entry.localHeaderOffset),
      );
    }
  }
}

/** Entries that are neither the pickle, a storage it uses, nor a record torch.save writes: refused. */
function checkOtherEntries(
  zip: ZipArchive,
  pkl: ZipEntry,
  prefix: string,
  storages: readonly PickleStorage[],
): void {
  const referenced = new Set(storages.map((s) => `${prefix}data/${s.key}`));
  for (const e of zip.entries) {
    if (e === pkl || referenced.has(e.name) || e.name.endsWith('/')) continue;
    const record = e.name.slice(prefix.length);
    const at = String(e.localHeaderOffset);
    if (record.startsWith('data/')) {
      throw binError(
        'BIN_UNREFERENCED_STORAGE',
        `entry ${quoteName(e.name)} is a storage no tensor refers to`,
        at,
      );
    }
    if (KNOWN_RECORDS.has(record)) continue;
    throw binError(
      'BIN_UNEXPECTED_ENTRY',
      /\.pkl$/i.test(record)
        ? `entry ${quoteName(e.name)} is a second pickle${record === 'constants.pkl' ? ' (with it torch.load hands the file to torch.jit.load, a TorchScript loader)' : ''}; torch.save writes only data.pkl`
        : `entry ${quoteName(e.name)} is not something torch.save writes`,
      at,
    );
  }
}
