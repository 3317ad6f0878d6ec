/**
 * The adapter directory on disk: which files are there, and which must not be. Nothing here follows a
 * symlink: a link inside an adapter can point anywhere, so it is refused.
 */
import { lstatSync, readdirSync, realpathSync, type Stats } from 'node:fs';
import { lstat, readdir, readlink, realpath } from 'node:fs/promises';
import { join } from 'node:path';
import { tempWriterPid } from './atomic.js';
import { CodiError, environmentError } from './errors.js';
import { finding, type Finding } from './findings.js';

export const CONFIG_FILE = 'adapter_config.json';
export const SAFETENSORS_FILE = 'adapter_model.safetensors';
export const BIN_FILE = 'adapter_model.bin';
export const METADATA_FILE = 'metadata.json';
export const README_FILE = 'README.md';
/** The adapter's signature (OpenSSF Model Signing's bundle, `sign`): it cannot cover itself. */
export const SIGNATURE_FILE = 'model.sig';
/**
 * Beside metadata.json while a `promote` appends to it, removed when the promote ends: not part of the
 * adapter. One left by a promote that was killed is stale (its holder is gone); the next promote of the
 * adapter breaks it.
 */
export const METADATA_LOCK_FILE = `.${METADATA_FILE}.lock`;

/**
 * A file a `promote` keeps in the adapter while it runs, and leaves only when it is killed: its lock,
 * what taking the lock writes for a moment (the record `.<lock>.<pid>.<hex>.tmp` that is hard-linked to
 * the lock name, a `.break` file while a stale lock is broken), or the temp file metadata.json is written
 * to (`tempPathFor`). Not part of the adapter: never copied, never counted as uncovered (verify reports
 * one left behind as such).
 */
export function isPromoteFile(name: string): boolean {
  return (
    name === METADATA_LOCK_FILE ||
    name === `${METADATA_LOCK_FILE}.break` ||
    tempWriterPid(name, METADATA_FILE) !== null ||
    tempWriterPid(name, METADATA_LOCK_FILE) !== null
  );
}

/**
 * Files the checksums need not cover: metadata.json itself (it holds them), README.md, model.sig (it
 * signs metadata.json, so metadata.json cannot hold its hash), and a promote's own files
 * (`isPromoteFile`).
 */
export function needsNoChecksum(name: string): boolean {
  return name === METADATA_FILE || name === README_FILE || name === SIGNATURE_FILE || isPromoteFile(name);
}

/** The resolution printed with a file or folder of the adapter that could not be read. */
export const UNREADABLE_HINT = 'make the adapter folder and everything in it readable by this user';

export const ADAPTER_ID_PATTERN = /^[a-z0-9][a-z0-9._-]{0,127}$/u;

/**
 * The one adapter-id rule of every command: the pattern, and no `..` anywhere — an id
 * names a folder and is joined into paths, and `a..b` is one careless join from a parent directory.
 * The schemas (metadata.json `id`, rules.yml `llm_assist` ids) say the same.
 */
export function isValidAdapterId(id: string): boolean {
  return ADAPTER_ID_PATTERN.test(id) && !id.includes('..');
}

export interface LayoutFile {
  /** path relative to the adapter directory, `/`-separated */
  name: string;
  size: number;
  mode: number;
  uid: number;
  gid: number;
}

export interface AdapterLayout {
  /** absolute, symlinks in the path to the directory itself resolved */
  dir: string;
  /** regular files, sorted by name */
  files: LayoutFile[];
  /** directories below the adapter directory */
  directories: string[];
  weightsFile: typeof SAFETENSORS_FILE | typeof BIN_FILE | null;
  findings: Finding[];
}

const MAX_DEPTH = 8;
const MAX_ENTRIES = 10_000;

/** Scans `dir`. A missing or unreadable directory is an environment error (exit 3). */
export async function scanLayout(dir: string): Promise<AdapterLayout> {
  const scan = new LayoutScan(await adapterRoot(dir));
  await scan.walk('', 0);
  return scan.result();
}

/**
 * scanLayout for the common case, a folder of regular files only, in blocking calls (`list` reads a
 * thousand of them); null for anything else, which takes scanLayout.
 */
export function scanPlainLayoutSync(dir: string): AdapterLayout | null {
  let root: string;
  let dirents;
  try {
    // the native realpath is one system call; the JS one lstats every component of the path
    root = realpathSync.native(dir);
    dirents = readdirSync(root, { withFileTypes: true });
  } catch {
    return null;
  }
  if (dirents.length > MAX_ENTRIES || dirents.some((d) => !d.isFile())) return null;
  const files: LayoutFile[] = [];
  for (const d of dirents) {
    const st = lstatSync(join(root, d.name));
    // replaced by something else since the listing
    if (!st.isFile()) return null;
    files.push(layoutFile(d.name, st));
  }
  files.sort(byName);
  const { weightsFile, findings } = requiredFiles(new Set(files.map((f) => f.name)), new Set());
  return { dir: root, files, directories: [], weightsFile, findings };
}

/** The adapter folder with the links on its path resolved; it must be a directory (exit 3). */
async function adapterRoot(dir: string): Promise<string> {
  try {
    const root = await realpath(dir);
    const st = await lstat(root);
    if (!st.isDirectory()) {
      throw new CodiError('PATH_NOT_DIRECTORY', `${dir} is not a directory`, {
        file: dir,
        hint: 'give the adapter directory (the folder holding adapter_config.json)',
      });
    }
    return root;
  } catch (e) {
    if (e instanceof CodiError) throw e;
    const error = environmentError(e, dir, 'read');
    throw new CodiError(error.code, error.message, {
      file: dir,
      hint: 'give the adapter directory (the folder holding adapter_config.json and metadata.json), readable by this user',
      cause: e,
    });
  }
}

function layoutFile(name: string, st: Stats): LayoutFile {
  return { name, size: st.size, mode: st.mode, uid: st.uid, gid: st.gid };
}

const byName = (a: { name: string }, b: { name: string }): number =>
  a.name < b.name ? -1 : a.name > b.name ? 1 : 0;

/** One scanLayout walk: what it found so far. Nothing here follows a link. */
class LayoutScan {
  private readonly findings: Finding[] = [];
  private readonly files: LayoutFile[] = [];
  private readonly directories: string[] = [];
  /** names at the top that are neither regular files nor folders (refused below) */
  private readonly specials = new Set<string>();
  private entries = 0;

  constructor(private readonly root: string) {}

  async walk(rel: string, depth: number): Promise<void> {
    const abs = rel === '' ? this.root : join(this.root, rel);
    let names: string[];
    try {
      names = (await readdir(abs)).sort();
    } catch (e) {
      // the adapter folder itself unreadable: there is nothing to report on (exit 3 like a missing one)
      if (rel === '') throw environmentError(e, abs, 'read');
      this.unreadable(e, rel);
      return;
    }
    for (const name of names) {
      if (++this.entries > MAX_ENTRIES) {
        this.findings.push(
          finding(
            'LAYOUT_TOO_MANY_FILES',
            `more than ${MAX_ENTRIES} entries: not an adapter directory`,
            rel || '.',
          ),
        );
        return;
      }
      await this.entry(abs, rel, name, depth);
    }
  }

  result(): AdapterLayout {
    this.files.sort(byName);
    const names = new Set(this.files.map((f) => f.name));
    const required = requiredFiles(names, new Set(this.directories), this.specials);
    for (const f of required.findings) this.findings.push(f);
    return {
      dir: this.root,
      files: this.files,
      directories: this.directories,
      weightsFile: required.weightsFile,
      findings: this.findings,
    };
  }

  private async entry(abs: string, rel: string, name: string, depth: number): Promise<void> {
    const relName = rel === '' ? name : `${rel}/${name}`;
    let st: Stats;
    try {
      st = await lstat(join(abs, name));
    } catch (e) {
      this.unreadable(e, relName);
      return;
    }
    if (st.isSymbolicLink()) {
      const target = await readlink(join(abs, name)).catch(() => '?');
      this.findings.push(
        finding(
          'LAYOUT_SYMLINK',
          `${relName} is a symbolic link (to ${target}); links inside an adapter are refused because they can point anywhere`,
          relName,
        ),
      );
    } else if (st.isDirectory()) {
      await this.directory(rel, name, relName, depth);
    } else if (st.isFile()) {
      this.files.push(layoutFile(relName, st));
    } else {
      if (rel === '') this.specials.add(name);
      this.findings.push(
        finding('LAYOUT_SPECIAL_FILE', `${relName} is a ${specialKind(st)}, not a regular file`, relName),
      );
    }
  }

  private async directory(rel: string, name: string, relName: string, depth: number): Promise<void> {
    this.directories.push(relName);
    if (rel === '' && !ADAPTER_FILES.has(name)) {
      // one finding for the folder, none for each file in it (they are walked for links and devices)
      this.findings.push(
        finding(
          'LAYOUT_SUBDIRECTORY',
          `${name}/ is a folder: not part of a PEFT adapter, and nothing in it can be covered by the checksums`,
          name,
          {
            hint: `move ${name}/ out of the adapter folder (a PEFT adapter is the files beside adapter_config.json)`,
          },
        ),
      );
    }
    if (depth + 1 >= MAX_DEPTH) {
      this.findings.push(
        finding('LAYOUT_TOO_DEEP', `${relName} is nested more than ${MAX_DEPTH} levels deep`, relName),
      );
    } else {
      await this.walk(relName, depth + 1);
    }
  }

  /** An entry of a readable folder that cannot be looked at: reported, not thrown, so the report goes on. */
  private unreadable(e: unknown, relName: string): void {
    const error = environmentError(e, relName, 'read');
    this.findings.push({
      level: 'error',
      code: error.code,
      message: error.message,
      file: relName,
      hint: UNREADABLE_HINT,
    });
  }
}

/** The names of an adapter's own files: a folder by one of these names is refused as not a file. */
const ADAPTER_FILES: ReadonlySet<string> = new Set([
  CONFIG_FILE,
  METADATA_FILE,
  SAFETENSORS_FILE,
  BIN_FILE,
  SIGNATURE_FILE,
]);

/**
 * The required files (adapter_config.json, metadata.json and a weights file), given the regular
 * files, the directories and the special files found at the top (the scan refuses those already):
 * which weights file counts (safetensors before .bin), a finding for each one missing, and one for each
 * adapter file name held by a folder.
 */
export function requiredFiles(
  files: ReadonlySet<string>,
  directories: ReadonlySet<string>,
  specials: ReadonlySet<string> = new Set(),
): { weightsFile: AdapterLayout['weightsFile']; findings: Finding[] } {
  const findings: Finding[] = [];
  const notFile = (name: string): boolean => directories.has(name) || specials.has(name);
  for (const name of ADAPTER_FILES) {
    if (directories.has(name)) {
      findings.push(finding('LAYOUT_NOT_FILE', `${name} is a directory, not a file`, name));
    }
  }
  for (const required of [CONFIG_FILE, METADATA_FILE]) {
    if (!files.has(required) && !notFile(required)) {
      findings.push(finding('LAYOUT_MISSING', `${required} is missing`, required));
    }
  }
  const weightsFile = files.has(SAFETENSORS_FILE) ? SAFETENSORS_FILE : files.has(BIN_FILE) ? BIN_FILE : null;
  if (weightsFile === null && !notFile(SAFETENSORS_FILE) && !notFile(BIN_FILE)) {
    findings.push(
      finding('LAYOUT_MISSING', `neither ${SAFETENSORS_FILE} nor ${BIN_FILE} is present`, SAFETENSORS_FILE),
    );
  }
  return { weightsFile, findings };
}

function specialKind(st: Awaited<ReturnType<typeof lstat>>): string {
  if (st.isFIFO()) return 'named pipe';
  if (st.isSocket()) return 'socket';
  if (st.isBlockDevice()) return 'block device';
  if (st.isCharacterDevice()) return 'character device';
  return 'special file';
}
