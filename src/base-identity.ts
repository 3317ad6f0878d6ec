/**
 * The base model an adapter is bound to: the sha256 of the whole base GGUF, recorded in metadata.json
 * `base` by `mount --base` and `promote --base`, and checked by `verify --base`, `convert` and `run`
 * (BASE_MISMATCH names both hashes). Shapes alone let an adapter onto any base of the same shape.
 *
 * Hashing a multi-GB base at every start would be slow, so its sha256 is kept in the state directory
 * (CODI_STATE_DIR), one file per (device, inode) holding the size, modification and change times (in
 * nanoseconds) it was computed for: any write, truncation, `touch` or replacement changes one of them,
 * and the base is hashed again. Only a cache file owned by this user and writable by no one else is
 * believed; a state directory that cannot be written only means hashing again next time.
 */
import { lstat, mkdir, readFile, realpath, stat } from 'node:fs/promises';
import type { BigIntStats } from 'node:fs';
import { basename, join } from 'node:path';
import { writeFileAtomic } from './atomic.js';
import { sha256File, type HashProgressCallback } from './checksum.js';
import { CodiError, environmentError, isCodiError } from './errors.js';
import { finding, type Finding } from './findings.js';
import { METADATA_FILE } from './layout.js';
import type { AdapterMetadata } from './metadata.js';
import { RUN_SETTINGS } from './run/settings.js';
import { trace } from './trace.js';

/** What metadata.json and rules.yml record of a base model. */
export interface RecordedBase {
  /** 64 lowercase hex digits */
  sha256: string;
  /** the GGUF's `general.name`, else its file name */
  name?: string;
  /** the GGUF's file name when it was recorded */
  file?: string;
}

export interface BaseHash {
  sha256: string;
  /** from the state directory (or this process's memory), not read again */
  cached: boolean;
}

const STATE_VARIABLE = 'CODI_STATE_DIR';
const CACHE_FOLDER = 'base-sha256';
const CACHE_FORMAT = 1;

/**
 * The state directory of the commands outside `run`: CODI_STATE_DIR, else `run`'s default for it,
 * so `mount --base` fills the cache `run` reads in the same container.
 */
export function defaultStateDir(): string {
  const fromEnv = process.env[STATE_VARIABLE];
  if (fromEnv !== undefined && fromEnv !== '') return fromEnv;
  return RUN_SETTINGS.find((s) => s.name === STATE_VARIABLE)?.default ?? '/tmp/codi-adapter';
}

/** The identity a cached hash is valid for: every field must be unchanged. */
interface Stamp {
  dev: string;
  ino: string;
  size: string;
  mtimeNs: string;
  ctimeNs: string;
}

function stampOf(st: BigIntStats): Stamp {
  return {
    dev: String(st.dev),
    ino: String(st.ino),
    size: String(st.size),
    mtimeNs: String(st.mtimeNs),
    ctimeNs: String(st.ctimeNs),
  };
}

function sameStamp(a: Stamp, b: Stamp): boolean {
  return (
    a.dev === b.dev &&
    a.ino === b.ino &&
    a.size === b.size &&
    a.mtimeNs === b.mtimeNs &&
    a.ctimeNs === b.ctimeNs
  );
}

/** Hashes computed by this process: one mount checks the same base more than once. */
const memo = new Map<string, string>();

/** The sha256 of the base GGUF at `path` (a symlink is followed), from the cache when it still holds. */
export async function baseSha256(
  path: string,
  options: { stateDir?: string; onProgress?: HashProgressCallback } = {},
): Promise<BaseHash> {
  const real = await realpath(path).catch((e: unknown) => {
    throw environmentError(e, path, 'read');
  });
  const before = await statOf(real, path);
  const stamp = stampOf(before);
  const key = JSON.stringify(stamp);
  const remembered = memo.get(key);
  if (remembered !== undefined) return { sha256: remembered, cached: true };
  const cacheFile = join(
    options.stateDir ?? defaultStateDir(),
    CACHE_FOLDER,
    `${stamp.dev}-${stamp.ino}.json`,
  );
  const cached = await readCached(cacheFile, stamp);
  if (cached !== null) {
    memo.set(key, cached);
    return { sha256: cached, cached: true };
  }
  trace(`base: hashing ${real}`);
  const sha256 = await sha256File(real, options.onProgress);
  if (!sameStamp(stamp, stampOf(await statOf(real, path)))) {
    throw new CodiError('SOURCE_CHANGED', `the base model ${path} changed while it was being hashed`, {
      file: path,
      hint: 'check the base model again once nothing writes to it',
    });
  }
  memo.set(key, sha256);
  await writeCached(cacheFile, { format: CACHE_FORMAT, ...stamp, sha256, path: real });
  return { sha256, cached: false };
}

async function statOf(real: string, given: string): Promise<BigIntStats> {
  const st = await stat(real, { bigint: true }).catch((e: unknown) => {
    throw environmentError(e, given, 'read');
  });
  if (!st.isFile())
    throw new CodiError('PATH_NOT_FILE', `base model ${given} is not a file`, { file: given });
  return st;
}

/** A cached sha256 for exactly `stamp`, from a file only this user can have written; else null. */
async function readCached(file: string, stamp: Stamp): Promise<string | null> {
  try {
    const st = await lstat(file);
    const uid = process.getuid?.();
    if (!st.isFile() || (uid !== undefined && st.uid !== uid) || (st.mode & 0o022) !== 0) return null;
    const data = JSON.parse(await readFile(file, 'utf8')) as Partial<Stamp> & {
      format?: unknown;
      sha256?: unknown;
    };
    if (data.format !== CACHE_FORMAT || typeof data.sha256 !== 'string') return null;
    if (!/^[0-9a-f]{64}$/u.test(data.sha256)) return null;
    const recorded: Stamp = {
      dev: String(data.dev),
      ino: String(data.ino),
      size: String(data.size),
      mtimeNs: String(data.mtimeNs),
      ctimeNs: String(data.ctimeNs),
    };
    return sameStamp(recorded, stamp) ? data.sha256 : null;
  } catch {
    // absent or unreadable: hash again
    return null;
  }
}

async function writeCached(file: string, record: Record<string, unknown>): Promise<void> {
  try {
    await mkdir(join(file, '..'), { recursive: true, mode: 0o700 });
    await writeFileAtomic(file, `${JSON.stringify(record)}\n`, 0o600);
  } catch (e) {
    // a read-only state directory costs a hash next time, nothing else
    trace(`base: sha256 not cached (${isCodiError(e) ? e.message : String(e)})`);
  }
}

/** The base an adapter's metadata.json binds it to (its schema holds the shape); null when it records none. */
export function recordedBaseOf(metadata: AdapterMetadata | null): RecordedBase | null {
  return metadata?.base ?? null;
}

/** What to record for the base at `path`, whose `general.name` is `name`. */
export function baseRecord(path: string, sha256: string, name: string | null): RecordedBase {
  return { sha256, name: name ?? basename(path), file: basename(path) };
}

export function describeRecorded(base: RecordedBase): string {
  const what = base.name ?? base.file;
  return `${base.sha256}${what === undefined ? '' : ` (${what})`}`;
}

export interface IdentityCheck {
  findings: Finding[];
  /** for the checklist: what was compared */
  summary: string;
  /** the base's sha256, when it was computed */
  sha256: string | null;
}

/**
 * The base at `basePath` against the one metadata.json records: BASE_MISMATCH when their sha256
 * differ, BASE_UNRECORDED (a warning) when none is recorded; then nothing is hashed, there being
 * nothing to compare with. Without a usable metadata.json there is nothing to say (verify reports it).
 */
export async function checkBaseIdentity(
  basePath: string,
  metadata: AdapterMetadata | null,
  options: { stateDir?: string; onProgress?: HashProgressCallback } = {},
): Promise<IdentityCheck> {
  if (metadata === null) return { findings: [], summary: '', sha256: null };
  const recorded = recordedBaseOf(metadata);
  if (recorded === null) {
    return {
      findings: [
        finding(
          'BASE_UNRECORDED',
          `metadata.json records no base model sha256: nothing but the tensor shapes says ${basename(basePath)} is the base ${metadata.id} was trained on`,
          METADATA_FILE,
          { pointer: '/base' },
        ),
      ],
      summary: 'no base sha256 recorded',
      sha256: null,
    };
  }
  const actual = await baseSha256(basePath, options);
  if (actual.sha256 === recorded.sha256) {
    return { findings: [], summary: 'sha256 as recorded in metadata.json', sha256: actual.sha256 };
  }
  return {
    findings: [
      finding(
        'BASE_MISMATCH',
        `the base model ${basePath} has sha256 ${actual.sha256}, but metadata.json binds ${metadata.id} to base ${describeRecorded(recorded)}`,
        METADATA_FILE,
        { pointer: '/base/sha256' },
      ),
    ],
    summary: 'sha256 is not the recorded base',
    sha256: actual.sha256,
  };
}
