/**
 * The adapter catalog on the models volume (CONTRACT §2, §4 `mount`, `list`): `<root>/adapters/<id>/`
 * and the `<root>/adapters/active` link. The folder is the catalog; there is no index file that could
 * disagree with what is on disk.
 *
 * Installing never exposes a partial adapter at `<id>`: the copy is made in a hidden staging folder in
 * the same directory (same file system), verified there, fsynced, and renamed into place. Replacing
 * (`--force`) moves the old folder aside first and deletes it only once the new one is in place; a
 * crash between those two renames leaves the old adapter intact under `.trash-…`, and the next mount
 * puts it back. Hidden leftovers of a dead mount are cleaned by the next one.
 *
 * What a reader sees during `--force` (Node has no renameat2(RENAME_EXCHANGE), and a folder cannot be
 * renamed over a non-empty one): `<id>` is the complete old adapter, then for the moment between the
 * two renames (both under the mount lock; milliseconds) it is absent while `.trash-<id>-…` holds the
 * old one, then it is the complete new adapter. Never a partial one. Readers here (`list`, `run`) that
 * find `<id>` absent while such a trash folder exists and the mount lock is alive wait for the swap
 * (`awaitReplacement`, bounded) instead of reporting the adapter as gone.
 */
import { createHash, randomBytes } from 'node:crypto';
import {
  access,
  chmod,
  constants,
  lstat,
  mkdir,
  open,
  readdir,
  readFile,
  readlink,
  realpath,
  rename,
  rm,
  stat,
  symlink,
  unlink,
  utimes,
} from 'node:fs/promises';
import { lstatSync, readdirSync, readFileSync, realpathSync } from 'node:fs';
import { hostname } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { fsyncDir, tempPathFor } from './atomic.js';
import { CodiError, ExitCode, environmentError, isCodiError } from './errors.js';
import { findingFromError, isEnvironmentFinding, type Finding } from './findings.js';
import {
  readSafetensorsHeader,
  readSafetensorsHeaderSync,
  type SafetensorsHeader,
} from './formats/safetensors.js';
import {
  ADAPTER_ID_PATTERN,
  BIN_FILE,
  CONFIG_FILE,
  isValidAdapterId,
  METADATA_FILE,
  isPromoteFile,
  requiredFiles,
  SAFETENSORS_FILE,
  scanLayout,
  type AdapterLayout,
} from './layout.js';
import {
  acquireLock,
  heartbeatIntervalMs,
  heartbeatStaleMs,
  lockFileIsStale,
  pidAlive,
  startHeartbeat,
} from './lock.js';
import { adapterIdFinding, parseMetadata, uncoveredFileFindings, type AdapterMetadata } from './metadata.js';
import { parseLoraConfig } from './peft-config.js';
import { pausePoint } from './test-hooks.js';
import type { VerifiedAdapter, VerifyOptions, VerifyReport as VerifyReportBase } from './verify.js';
import { nowMs } from './clock.js';

type VerifyReport = VerifyReportBase & { verified: VerifiedAdapter };

/**
 * verify.js (and the pickle scanner) load on first use: `list` without --verify, the command that
 * must be fast, needs neither, and start-up is most of its time.
 */
async function verifyAdapter(dir: string, options: VerifyOptions = {}): Promise<VerifyReport> {
  const { verifyAdapter: verify } = await import('./verify.js');
  return verify(dir, options);
}

export const ADAPTERS_DIR = 'adapters';
export const ACTIVE_LINK = 'active';
export { DEFAULT_MODEL_ROOT } from './constants.js';
/** The user the complete container runs as (CONTRACT §8): 1000:1000. */
export const RUNTIME_USER: RuntimeUser = { uid: 1000, gid: 1000 };
export const DEFAULT_MOUNT_LOCK_TIMEOUT_MS = 60_000;
/** How long a reader waits for a `mount --force` between its two renames (they take milliseconds). */
export const REPLACEMENT_WAIT_MS = 2000;
const MOUNT_LOCK = '.mount.lock';

export type AdapterStatus = 'mounted' | 'not_mounted' | 'invalid';

export interface RuntimeUser {
  uid: number;
  gid: number;
}

/** `Adapter Status: not_mounted` resolution (CONTRACT §9). */
export function notMountedHint(root: string, id?: string): string {
  return `mount the host folder at ${join(root, ADAPTERS_DIR, id ?? '<id>')}, readable by UID ${RUNTIME_USER.uid}`;
}

/** The adapter status an error from this module stands for. */
export function statusOf(error: CodiError): AdapterStatus {
  const status = error.details?.status;
  if (status === 'mounted' || status === 'not_mounted' || status === 'invalid') return status;
  return error.exitCode === ExitCode.INVALID ? 'invalid' : 'not_mounted';
}

function statusError(
  status: AdapterStatus,
  code: string,
  message: string,
  options: {
    exitCode: ExitCode;
    hint?: string;
    file?: string;
    details?: Record<string, unknown>;
    cause?: unknown;
  },
): CodiError {
  return new CodiError(code, message, {
    exitCode: options.exitCode,
    ...(options.hint === undefined ? {} : { hint: options.hint }),
    ...(options.file === undefined ? {} : { file: options.file }),
    ...(options.cause === undefined ? {} : { cause: options.cause }),
    details: { status, ...options.details },
  });
}

// ---------------------------------------------------------------------------------------------------
// The models volume

interface Catalog {
  root: string;
  adapters: string;
  /** realpath of `adapters`, null when it does not exist yet */
  adaptersReal: string | null;
  rootReal: string;
}

async function openCatalog(rootArg: string, id?: string): Promise<Catalog> {
  const root = resolve(rootArg);
  let st;
  try {
    st = await stat(root);
  } catch (e) {
    const missing = (e as NodeJS.ErrnoException).code === 'ENOENT';
    throw statusError(
      'not_mounted',
      missing ? 'ROOT_MISSING' : 'ROOT_INACCESSIBLE',
      missing ? `the models volume ${root} does not exist` : environmentError(e, root).message,
      {
        exitCode: ExitCode.ENVIRONMENT,
        file: root,
        hint: `${notMountedHint(root, id)} (pass --root or set MODEL_MOUNT_PATH when the volume is elsewhere)`,
        cause: e,
      },
    );
  }
  if (!st.isDirectory()) {
    throw statusError('not_mounted', 'ROOT_NOT_DIRECTORY', `the models volume ${root} is not a directory`, {
      exitCode: ExitCode.ENVIRONMENT,
      file: root,
      hint: notMountedHint(root, id),
    });
  }
  const adapters = join(root, ADAPTERS_DIR);
  let adaptersReal: string | null = null;
  const ast = await lstat(adapters).catch(() => null);
  if (ast) {
    const target = await stat(adapters).catch(() => null);
    if (!target?.isDirectory()) {
      throw statusError('not_mounted', 'ROOT_NOT_DIRECTORY', `${adapters} is not a directory`, {
        exitCode: ExitCode.ENVIRONMENT,
        file: adapters,
        hint: notMountedHint(root, id),
      });
    }
    adaptersReal = await realpath(adapters);
  }
  return { root, adapters, adaptersReal, rootReal: await realpath(root) };
}

/** Creates `<root>/adapters` when needed and proves we may write there (exit 3 otherwise). */
async function requireWritable(cat: Catalog): Promise<void> {
  const notWritable = (e: unknown, path: string): CodiError =>
    statusError(
      'not_mounted',
      'ROOT_NOT_WRITABLE',
      `${path} is not writable: ${environmentError(e, path).message}`,
      {
        exitCode: ExitCode.ENVIRONMENT,
        file: path,
        hint: `run mount as a user who may write ${path} (its owner, or root), or mount the models volume read-write`,
        cause: e,
      },
    );
  if (cat.adaptersReal === null) {
    try {
      await mkdir(cat.adapters, { mode: 0o755 });
      // the umask must not make the catalog unreadable for the runtime user
      await chmod(cat.adapters, 0o755);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw notWritable(e, cat.root);
    }
    cat.adaptersReal = await realpath(cat.adapters);
  }
  try {
    // also catches a read-only file system, where even root may not write
    await access(cat.adapters, constants.W_OK);
  } catch (e) {
    throw notWritable(e, cat.adapters);
  }
}

function withMountLock<T>(
  cat: Catalog,
  timeoutMs: number,
  purpose: string,
  fn: () => Promise<T>,
): Promise<T> {
  return (async () => {
    const lock = await acquireLock(join(cat.adapters, MOUNT_LOCK), { timeoutMs, purpose });
    try {
      return await fn();
    } finally {
      await lock.release();
    }
  })();
}

// ---------------------------------------------------------------------------------------------------
// Adapter ids

/**
 * Checks an id for use as `<root>/adapters/<id>`. Stricter than the id pattern alone: `..` anywhere
 * is refused too, and `active` is the name of the link.
 */
export function adapterIdProblem(id: string): string | null {
  if (id.includes('/') || id.includes('\\')) return 'it contains a path separator';
  if (id.includes('..')) return 'it contains ".."';
  if (!isValidAdapterId(id)) {
    return `it must match ${ADAPTER_ID_PATTERN.source} (lowercase letters, digits, ".", "_" and "-", starting with a letter or digit, at most 128 characters)`;
  }
  if (id === ACTIVE_LINK) return `"${ACTIVE_LINK}" is the name of the link to the active adapter`;
  return null;
}

function requireId(id: string, from: string, exitCode: ExitCode): void {
  const problem = adapterIdProblem(id);
  if (problem) {
    throw statusError(
      'not_mounted',
      'MOUNT_ID_INVALID',
      `${from} ${JSON.stringify(id)} is not a valid adapter id: ${problem}`,
      {
        exitCode,
        hint: 'choose an id such as qwen15b-lora-v0.1 (--id, or "id" in metadata.json)',
      },
    );
  }
}

// ---------------------------------------------------------------------------------------------------
// Readability by the runtime user

export interface AccessProblem {
  path: string;
  kind: 'file' | 'directory';
  /** `uid:gid` */
  owner: string;
  /** octal permission bits, e.g. `0600` */
  mode: string;
  needs: 'r' | 'r+x' | 'x';
}

/**
 * Whether `user` has the `need` bits (4 r, 2 w, 1 x) on a file with this mode and owner, by the POSIX
 * class rule: the owner class applies to the owner even when it grants less than "other" does. ACLs
 * and supplementary groups are not known here and are not considered.
 */
export function userCan(
  st: { mode: number; uid: number; gid: number },
  need: number,
  user: RuntimeUser,
): boolean {
  if (user.uid === 0) return true;
  const bits =
    st.uid === user.uid ? (st.mode >> 6) & 7 : st.gid === user.gid ? (st.mode >> 3) & 7 : st.mode & 7;
  return (bits & need) === need;
}

function describeAccess(
  path: string,
  st: { mode: number; uid: number; gid: number },
  kind: AccessProblem['kind'],
  needs: AccessProblem['needs'],
): AccessProblem {
  return {
    path,
    kind,
    owner: `${st.uid}:${st.gid}`,
    mode: `0${(st.mode & 0o777).toString(8).padStart(3, '0')}`,
    needs,
  };
}

/**
 * What `user` could not read in the adapter at `dir` (files need r; folders r and x), and which of
 * `ancestors` it could not pass through (x).
 */
export async function accessProblems(
  layout: AdapterLayout | null,
  ancestors: readonly string[],
  user: RuntimeUser = RUNTIME_USER,
): Promise<AccessProblem[]> {
  const problems: AccessProblem[] = [];
  for (const a of ancestors) {
    const st = await stat(a).catch(() => null);
    if (st && !userCan(st, 1, user)) problems.push(describeAccess(a, st, 'directory', 'x'));
  }
  if (!layout) return problems;
  for (const rel of ['', ...layout.directories]) {
    const path = rel === '' ? layout.dir : join(layout.dir, rel);
    const st = await lstat(path).catch(() => null);
    if (st && !userCan(st, 5, user)) problems.push(describeAccess(path, st, 'directory', 'r+x'));
  }
  for (const f of layout.files) {
    if (!userCan(f, 4, user)) problems.push(describeAccess(join(layout.dir, f.name), f, 'file', 'r'));
  }
  return problems;
}

/** accessProblems for `list`'s synchronous path (the files' modes come from the scan). */
function accessProblemsSync(layout: AdapterLayout, user: RuntimeUser): AccessProblem[] {
  const problems: AccessProblem[] = [];
  for (const rel of ['', ...layout.directories]) {
    const path = rel === '' ? layout.dir : join(layout.dir, rel);
    const st = lstatSync(path, { throwIfNoEntry: false });
    if (st && !userCan(st, 5, user)) problems.push(describeAccess(path, st, 'directory', 'r+x'));
  }
  for (const f of layout.files) {
    if (!userCan(f, 4, user)) problems.push(describeAccess(join(layout.dir, f.name), f, 'file', 'r'));
  }
  return problems;
}

/** How to let `user` in: x on the folders it cannot pass through, else read access to all of `dir`. */
function accessFix(problems: readonly AccessProblem[], dir: string, user: RuntimeUser): string {
  const closed = problems.filter((p) => p.needs === 'x').map((p) => p.path);
  return closed.length > 0
    ? `chmod a+x ${closed.join(' ')}`
    : `chown -R ${user.uid}:${user.gid} ${dir}   or   chmod -R a+rX ${dir}`;
}

function unreadableError(
  dir: string,
  root: string,
  id: string,
  problems: AccessProblem[],
  user: RuntimeUser,
): CodiError {
  const shown = problems
    .slice(0, 4)
    .map((p) => `${p.path} (${p.owner} ${p.mode}, needs ${p.needs})`)
    .join(', ');
  const more = problems.length > 4 ? ` and ${problems.length - 4} more` : '';
  const fix = accessFix(problems, dir, user);
  const verb = problems.every((p) => p.needs === 'x') ? 'pass through' : 'read';
  return statusError(
    'not_mounted',
    'ADAPTER_UNREADABLE',
    `UID ${user.uid} (the runtime user) cannot ${verb} ${shown}${more}`,
    {
      exitCode: ExitCode.ENVIRONMENT,
      file: dir,
      hint: `${fix} — ${notMountedHint(root, id)}`,
      details: { problems },
    },
  );
}

// ---------------------------------------------------------------------------------------------------
// Leftovers of interrupted mounts

const HOST_TAG = createHash('sha256').update(hostname()).digest('hex').slice(0, 8);
/** `.staging-<id>-<host>-<pid>-<random>` / `.trash-…`: the id may contain "-", so it is matched from the end */
const LEFTOVER = /^\.(staging|trash)-(.+)-([0-9a-f]{8})-(\d+)-([0-9a-f]{12})$/u;
const ACTIVE_TEMP = new RegExp(`^\\.${ACTIVE_LINK}\\.(\\d+)\\.[0-9a-f]{12}\\.tmp$`, 'u');

function leftoverName(kind: 'staging' | 'trash', id: string): string {
  return `.${kind}-${id}-${HOST_TAG}-${process.pid}-${randomBytes(6).toString('hex')}`;
}

export function isLeftoverName(name: string): boolean {
  return LEFTOVER.test(name) || ACTIVE_TEMP.test(name);
}

export interface Cleaned {
  /** leftovers deleted */
  removed: string[];
  /** adapters put back from `.trash-…` (a replacement that died between its two renames) */
  restored: string[];
}

/** Newest mtime of a folder and its direct entries: a copy in progress keeps touching them. */
async function lastTouched(path: string): Promise<number> {
  const st = await lstat(path).catch(() => null);
  if (!st) return 0;
  let newest = st.mtimeMs;
  if (st.isDirectory()) {
    for (const name of await readdir(path).catch(() => [] as string[])) {
      const s = await lstat(join(path, name)).catch(() => null);
      if (s) newest = Math.max(newest, s.mtimeMs);
    }
  }
  return newest;
}

/**
 * Whether the mount that fills this staging folder is gone. Staging folders are filled without the
 * mount lock (a copy can take minutes), so the lock says nothing about them; their mount keeps a
 * heartbeat on the folder's mtime instead. On this host a dead pid shows it at once; otherwise (a
 * mount in another container, or one killed with a container whose hostname is gone) a heartbeat
 * silent for `staleMs` does.
 */
async function stagingIsDead(path: string, m: RegExpExecArray, staleMs: number): Promise<boolean> {
  const sameHost = m[3] === HOST_TAG;
  const pid = Number(m[4]);
  if (sameHost && pid === process.pid) return false;
  if (sameHost && !pidAlive(pid)) return true;
  return Date.now() - (await lastTouched(path)) > staleMs;
}

/** Whether a mount holds the catalog's lock now (a lock whose holder is gone does not count). */
async function mountLockHeld(adaptersDir: string): Promise<boolean> {
  const lock = join(adaptersDir, MOUNT_LOCK);
  if (!(await lstat(lock).catch(() => null))) return false;
  return !(await lockFileIsStale(lock));
}

/**
 * Cleans what dead mounts left in `<root>/adapters`. Callers hold the mount lock, and everything but
 * copying happens under it, so a `.trash-…` folder or `.active.….tmp` link seen now belongs to a mount
 * that died, whatever host it ran on: a trash folder whose id is missing is a replacement that died
 * between its two renames and is put back; other trash and temp links are removed. A staging folder is
 * removed once its mount is gone (`stagingIsDead`).
 */
export async function cleanLeftovers(adaptersDir: string, staleMs = heartbeatStaleMs()): Promise<Cleaned> {
  const cleaned: Cleaned = { removed: [], restored: [] };
  let names: string[];
  try {
    names = await readdir(adaptersDir);
  } catch {
    return cleaned;
  }
  for (const name of names.sort()) {
    const path = join(adaptersDir, name);
    const m = LEFTOVER.exec(name);
    if (!m && !ACTIVE_TEMP.test(name)) continue;
    if (m?.[1] === 'staging' && !(await stagingIsDead(path, m, staleMs))) continue;
    if (m?.[1] === 'trash') {
      const id = m[2] ?? '';
      const home = join(adaptersDir, id);
      if (isValidAdapterId(id) && !(await lstat(home).catch(() => null))) {
        try {
          await rename(path, home);
          cleaned.restored.push(id);
        } catch {
          // never delete the only copy of an adapter: leave it for the operator (list shows it)
        }
        continue;
      }
    }
    await rm(path, { recursive: true, force: true }).catch(() => undefined);
    cleaned.removed.push(name);
  }
  if (cleaned.removed.length + cleaned.restored.length > 0) await fsyncDir(adaptersDir);
  return cleaned;
}

/**
 * The hidden leftovers in `<root>/adapters` by what the next mount does with them: `dead` ones (of
 * mounts that are gone) it cleans, or puts back; `live` ones belong to a mount at work.
 */
export async function classifyLeftovers(
  adaptersDir: string,
  names: readonly string[],
  staleMs = heartbeatStaleMs(),
): Promise<{ dead: string[]; live: string[] }> {
  const out = { dead: [] as string[], live: [] as string[] };
  let lockHeld: boolean | undefined;
  for (const name of [...names].sort()) {
    const m = LEFTOVER.exec(name);
    let live: boolean;
    if (m?.[1] === 'staging') live = !(await stagingIsDead(join(adaptersDir, name), m, staleMs));
    else live = lockHeld ??= await mountLockHeld(adaptersDir);
    (live ? out.live : out.dead).push(name);
  }
  return out;
}

export interface Replacement {
  /**
   * present: the path is there (perhaps after waiting); absent: it is not, and no replacement explains
   * it; replacing: a `mount --force` is between its two renames and did not finish within the wait;
   * interrupted: a replacement died between them (the next mount puts the old copy back)
   */
  state: 'present' | 'absent' | 'replacing' | 'interrupted';
  /** the id being replaced (the link's target for `active`), when replacing or interrupted */
  id?: string;
  /** the `.trash-<id>-…` folder holding the old copy, when replacing or interrupted */
  trash?: string;
}

/**
 * For a reader that finds `<adapters>/<id>` (or the `active` link's target) missing: waits, at most
 * `timeoutMs`, while a `mount --force` is between its two renames, so a replacement is not mistaken for
 * a missing adapter. Cheap when nothing is being replaced: one lstat and one readdir.
 */
export async function awaitReplacement(path: string, timeoutMs = REPLACEMENT_WAIT_MS): Promise<Replacement> {
  let target = resolve(path);
  const link = await lstat(target).catch(() => null);
  if (link?.isSymbolicLink()) {
    if (await stat(target).catch(() => null)) return { state: 'present' };
    // `active` → `<id>`: the id is what is being replaced
    target = resolve(dirname(target), await readlink(target));
  }
  const dir = dirname(target);
  const id = basename(target);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const trash = (await readdir(dir).catch(() => [] as string[])).find((n) => {
      const m = LEFTOVER.exec(n);
      return m?.[1] === 'trash' && m[2] === id;
    });
    // after the listing: a swap that ends between the two is seen as done
    if (await lstat(target).catch(() => null)) return { state: 'present' };
    if (trash === undefined) return { state: 'absent' };
    if (!(await mountLockHeld(dir))) return { state: 'interrupted', id, trash };
    if (Date.now() >= deadline) return { state: 'replacing', id, trash };
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** What a reader says about an adapter missing because of a replacement (`awaitReplacement`). */
export function replacementFinding(r: Replacement): Finding {
  const id = r.id ?? 'the adapter';
  return r.state === 'replacing'
    ? {
        level: 'error',
        code: 'ADAPTER_BEING_REPLACED',
        message: `${id} is being replaced by a mount --force in progress (the old copy is in ${r.trash ?? '.trash-…'})`,
        file: '.',
        hint: 'try again in a moment',
      }
    : {
        level: 'error',
        code: 'ADAPTER_REPLACE_INTERRUPTED',
        message: `${id} is missing: a mount --force died between its two renames; the old copy is in ${r.trash ?? '.trash-…'}`,
        file: '.',
        hint: 'the next codi-adapter mount on this volume puts it back (or rename the .trash-… folder to the id)',
      };
}

// ---------------------------------------------------------------------------------------------------
// The active link

/** The id `<root>/adapters/active` points to; null without a link. */
export async function readActive(adaptersDir: string): Promise<string | null> {
  try {
    return basename(await readlink(join(adaptersDir, ACTIVE_LINK)));
  } catch {
    return null;
  }
}

/**
 * Points `active` at `id` atomically: a new link under a temp name, renamed over the old one. The link
 * is relative, so it resolves the same on the host and inside the container. Returns false when it
 * already pointed there.
 */
export async function switchActive(adaptersDir: string, id: string): Promise<boolean> {
  const link = join(adaptersDir, ACTIVE_LINK);
  const st = await lstat(link).catch(() => null);
  if (st && !st.isSymbolicLink()) {
    throw new CodiError('ACTIVE_NOT_LINK', `${link} exists and is not a symbolic link; it is not replaced`, {
      exitCode: ExitCode.ENVIRONMENT,
      file: link,
      hint: `move ${link} away; "${ACTIVE_LINK}" is reserved for the link to the active adapter`,
    });
  }
  if (st && (await readlink(link).catch(() => null)) === id) return false;
  const temp = tempPathFor(link);
  try {
    await symlink(id, temp);
    await pausePoint('mount:active-temp');
    await rename(temp, link);
  } catch (e) {
    await unlink(temp).catch(() => undefined);
    throw environmentError(e, link, 'written');
  }
  await fsyncDir(adaptersDir);
  return true;
}

// ---------------------------------------------------------------------------------------------------
// mount

export interface MountOptions {
  /** the models volume (MODEL_MOUNT_PATH) */
  root: string;
  /** install under this id instead of metadata.json `id` */
  id?: string;
  /** base model GGUF: checked at mount, and the llama.cpp adapter built into the cache */
  base?: string;
  /** point `<root>/adapters/active` at this adapter */
  activate?: boolean;
  /** replace an existing id whose contents differ */
  force?: boolean;
  lockTimeoutMs?: number;
  /** the user that must be able to read the adapter (default 1000:1000) */
  runtimeUser?: RuntimeUser;
}

export type MountAction = 'registered' | 'installed' | 'replaced' | 'unchanged';

export interface MountResult {
  status: 'mounted';
  /** why, in words: the text after `Adapter Status: mounted` */
  reason: string;
  action: MountAction;
  /** the id held this very adapter already (same checksums): nothing was changed */
  already: boolean;
  id: string;
  path: string;
  source: string;
  adapter: { id: string; version: string; base_model: string; checksum: string };
  /** `active` points at this adapter after the command */
  active: boolean;
  /** the command switched `active` */
  activated: boolean;
  gguf: { path: string; cached: boolean } | null;
  /** verification warnings */
  findings: Finding[];
  cleaned: Cleaned;
  readable_by: RuntimeUser;
}

export async function mountAdapter(source: string, options: MountOptions): Promise<MountResult> {
  const user = options.runtimeUser ?? RUNTIME_USER;
  if (options.id !== undefined) requireId(options.id, '--id', ExitCode.USAGE);
  const cat = await openCatalog(options.root, options.id);
  const src = await resolveSource(source, cat);
  const inPlace = cat.adaptersReal !== null && dirname(src) === cat.adaptersReal;

  const verifyOptions: VerifyOptions = {};
  if (options.base) {
    // loaded on demand: `list` and plain mounts need none of the GGUF code
    const { baseCheckFor, readBaseForCheck } = await import('./base-model.js');
    verifyOptions.baseCheck = baseCheckFor(await readBaseForCheck(resolve(options.base)));
  }
  const report = await verifyAdapter(src, verifyOptions);
  requireMountable(report, src);
  const metadata = report.verified.metadata as AdapterMetadata;
  if (options.base && report.verified.layout.weightsFile !== SAFETENSORS_FILE) {
    // found now rather than after the adapter is in place
    throw statusError(
      'invalid',
      'CONVERT_NEEDS_SAFETENSORS',
      '--base builds a GGUF from safetensors weights; this adapter has adapter_model.bin',
      {
        exitCode: ExitCode.INVALID,
        file: src,
        hint: 'mount it without --base, or convert the .bin to safetensors first (torch.load(weights_only=True), then safetensors.torch.save_file)',
      },
    );
  }

  let id: string;
  if (inPlace) {
    id = basename(src);
    requireId(id, 'the folder name', ExitCode.INVALID);
    if (options.id !== undefined && options.id !== id) {
      throw statusError(
        'not_mounted',
        'MOUNT_ID_MISMATCH',
        `${src} is already in ${cat.adapters} under the name ${id}; it cannot be registered as ${options.id}`,
        {
          exitCode: ExitCode.USAGE,
          hint: 'rename the folder, or mount a copy from outside the catalog with --id',
        },
      );
    }
  } else {
    id = options.id ?? metadata.id;
    requireId(id, 'metadata.json id', ExitCode.INVALID);
  }

  const base = {
    id,
    source: src,
    adapter: {
      id: metadata.id,
      version: metadata.version,
      base_model: metadata.base_model,
      checksum: `sha256:${weightsChecksum(report) ?? ''}`,
    },
    readable_by: user,
  };
  const lockTimeout = options.lockTimeoutMs ?? DEFAULT_MOUNT_LOCK_TIMEOUT_MS;

  if (inPlace) {
    const problems = await accessProblems(report.verified.layout, ancestorsOf(cat).volume, user);
    if (problems.length > 0) throw unreadableError(src, cat.root, id, problems, user);
    let cleaned: Cleaned = { removed: [], restored: [] };
    // every mount cleans what interrupted ones left, when it may write there (registering needs no write)
    if (
      await access(cat.adapters, constants.W_OK).then(
        () => true,
        () => false,
      )
    ) {
      cleaned = await withMountLock(cat, lockTimeout, 'clean', () => cleanLeftovers(cat.adapters));
    }
    let activated = false;
    if (options.activate) {
      await requireWritable(cat);
      activated = await withMountLock(cat, lockTimeout, `activate ${id}`, () =>
        switchActive(cat.adapters, id),
      );
    }
    const gguf = options.base ? await buildGguf(src, options.base, id) : null;
    return {
      status: 'mounted',
      reason: `registered in place at ${src}`,
      action: 'registered',
      already: false,
      path: src,
      ...base,
      active: (await readActive(cat.adapters)) === id,
      activated,
      gguf,
      findings: withAboveVolume(report.findings, await aboveVolumeWarning(cat, user)),
      cleaned,
    };
  }
  return install(cat, id, src, report, verifyOptions, options, user, lockTimeout, base);
}

async function resolveSource(source: string, cat: Catalog): Promise<string> {
  let st;
  try {
    st = await stat(source);
  } catch (e) {
    const error = environmentError(e, source, 'read');
    throw statusError('not_mounted', error.code, `the adapter source ${error.message}`, {
      exitCode: ExitCode.ENVIRONMENT,
      file: source,
      hint: notMountedHint(cat.root),
      cause: e,
    });
  }
  if (!st.isDirectory()) {
    throw statusError('not_mounted', 'PATH_NOT_DIRECTORY', `${source} is a file, not an adapter folder`, {
      exitCode: ExitCode.ENVIRONMENT,
      file: source,
      hint: 'give the folder that holds adapter_config.json, metadata.json and the weights, not one of its files',
    });
  }
  const lexical = resolve(source);
  if (
    cat.adaptersReal !== null &&
    (await realpath(dirname(lexical)).catch(() => null)) === cat.adaptersReal &&
    (await lstat(lexical)).isSymbolicLink()
  ) {
    // what list reports as invalid: the files are wherever the link points, perhaps off the volume
    const to = await readlink(lexical).catch(() => '?');
    throw statusError(
      'invalid',
      'LAYOUT_SYMLINK',
      `${source} is a symbolic link in the catalog (to ${to}); an adapter there must be a folder on the volume`,
      {
        exitCode: ExitCode.INVALID,
        file: source,
        hint: `replace the link with the adapter folder itself, or install a copy: codi-adapter mount ${await realpath(lexical).catch(() => to)} --id ${basename(lexical)} --force`,
      },
    );
  }
  const src = await realpath(source);
  if (src === cat.rootReal || src === cat.adaptersReal) {
    throw statusError(
      'not_mounted',
      'MOUNT_SOURCE_IS_CATALOG',
      `${source} is the catalog itself, not an adapter`,
      {
        exitCode: ExitCode.USAGE,
        hint: `give one adapter folder, e.g. ${join(cat.adapters, '<id>')}`,
      },
    );
  }
  return src;
}

/** Fails closed on any error finding: status invalid, exit 1, the first finding's code. */
function requireMountable(report: VerifyReport, path: string): void {
  const errors = report.findings.filter((f) => f.level === 'error');
  const first = errors[0];
  if (report.ok || !first) return;
  const more = errors.length > 1 ? ` (and ${errors.length - 1} more)` : '';
  const unreadable = report.findings.some(isEnvironmentFinding);
  throw statusError(unreadable ? 'not_mounted' : 'invalid', first.code, `${first.message}${more}`, {
    exitCode: unreadable ? ExitCode.ENVIRONMENT : ExitCode.INVALID,
    file: path,
    ...(first.hint ? { hint: first.hint } : {}),
    details: { findings: report.findings },
  });
}

function weightsChecksum(report: VerifyReport): string | null {
  return report.checksums.find((c) => c.file === report.verified.layout.weightsFile)?.actual ?? null;
}

/** The identity mount compares: every covered file's sha256, and who the adapter says it is. */
function contentKey(report: VerifyReport): string {
  const sums = report.checksums.map((c) => `${c.file}=${c.actual ?? '-'}`).sort();
  const m = report.adapter;
  return JSON.stringify([m.id, m.version, m.base_model, sums]);
}

type Existing = { kind: 'absent' } | { kind: 'same' } | { kind: 'differs'; why: string };

async function compareExisting(path: string, wanted: VerifyReport): Promise<Existing> {
  const st = await lstat(path).catch(() => null);
  if (!st) return { kind: 'absent' };
  if (!st.isDirectory()) return { kind: 'differs', why: `${path} is not a folder` };
  let report: VerifyReport;
  try {
    report = await verifyAdapter(path);
  } catch (e) {
    return { kind: 'differs', why: isCodiError(e) ? e.message : String(e) };
  }
  if (!report.ok) {
    const first = report.findings.find((f) => f.level === 'error');
    return {
      kind: 'differs',
      why: `the adapter there is invalid (${first?.code ?? 'invalid'}: ${first?.message ?? ''})`,
    };
  }
  if (contentKey(report) === contentKey(wanted)) return { kind: 'same' };
  const v = report.adapter.version ?? '?';
  return { kind: 'differs', why: `it holds ${report.adapter.id ?? '?'} ${v} with other checksums` };
}

function conflict(id: string, path: string, why: string): CodiError {
  return statusError(
    'not_mounted',
    'MOUNT_CONFLICT',
    `${path} exists and differs: ${why}; it was left as it is`,
    {
      exitCode: ExitCode.INVALID,
      file: path,
      hint: `pass --force to replace it (the old copy is kept until the new one is in place), or mount under another --id`,
      details: { id },
    },
  );
}

async function install(
  cat: Catalog,
  id: string,
  src: string,
  report: VerifyReport,
  verifyOptions: VerifyOptions,
  options: MountOptions,
  user: RuntimeUser,
  lockTimeout: number,
  base: Pick<MountResult, 'id' | 'source' | 'adapter' | 'readable_by'>,
): Promise<MountResult> {
  await requireWritable(cat);
  // the runtime user must be able to reach <root>/adapters/<id> at all: x on the volume's folders
  const reach = await accessProblems(null, ancestorsOf(cat).volume, user);
  if (reach.length > 0) throw unreadableError(cat.adapters, cat.root, id, reach, user);

  const final = join(cat.adapters, id);
  const cleaned = await withMountLock(cat, lockTimeout, 'clean', () => cleanLeftovers(cat.adapters));
  const before = await compareExisting(final, report);
  if (before.kind === 'differs' && !options.force) throw conflict(id, final, before.why);

  let action: MountAction;
  let findings = report.findings;
  if (before.kind === 'same') {
    action = 'unchanged';
  } else {
    const staging = join(cat.adapters, leftoverName('staging', id));
    try {
      await mkdir(staging, { mode: 0o755 });
      await chmod(staging, 0o755);
    } catch (e) {
      throw statusError(
        'not_mounted',
        'ROOT_NOT_WRITABLE',
        `cannot create ${staging}: ${environmentError(e, staging).message}`,
        {
          exitCode: ExitCode.ENVIRONMENT,
          file: cat.adapters,
          cause: e,
        },
      );
    }
    // the staging folder is filled without the mount lock: its mtime is our sign of life for the
    // cleaner of another mount, which cannot see our pid from another container or host
    const stopHeartbeat = startHeartbeat(async () => {
      const now = new Date();
      await utimes(staging, now, now);
    }, heartbeatIntervalMs());
    try {
      await pausePoint('mount:staged');
      await copyAdapter(src, staging, report.verified.layout);
      await pausePoint('mount:copied');
      // the copy is what will be served: verify it, and prove it is what was verified at the source
      const copy = await verifyAdapter(staging, verifyOptions);
      const firstError = copy.findings.find((f) => f.level === 'error');
      if (!copy.ok || contentKey(copy) !== contentKey(report)) {
        throw statusError(
          'invalid',
          'MOUNT_SOURCE_CHANGED',
          firstError
            ? `the copy does not verify (${firstError.code}: ${firstError.message}): the source changed while it was being copied, or the copy is damaged; nothing was mounted`
            : 'the copy differs from the adapter that was verified: the source changed while it was being copied; nothing was mounted',
          {
            exitCode: ExitCode.INVALID,
            file: src,
            hint: 'make sure nothing writes to the source folder during the mount, then mount again',
            details: { findings: copy.findings },
          },
        );
      }
      // verify named the staging folder; what counts is the name it will have
      findings = copy.findings.filter((f) => f.code !== 'ADAPTER_ID_MISMATCH');
      for (const d of report.verified.layout.directories.filter((name) => !name.includes('/'))) {
        findings.push({
          level: 'warning',
          code: 'MOUNT_SUBDIRECTORY_SKIPPED',
          message: `${d}/ is not part of a PEFT adapter and was not copied`,
          file: `${d}/`,
        });
      }
      if (copy.adapter.id !== id) {
        findings.push({
          level: 'warning',
          code: 'ADAPTER_ID_MISMATCH',
          message: `installed as ${JSON.stringify(id)}, but metadata.json says id ${JSON.stringify(copy.adapter.id)}`,
          file: METADATA_FILE,
          pointer: '/id',
        });
      }
      const problems = await accessProblems(copy.verified.layout, [], user);
      if (problems.length > 0) throw unreadableError(staging, cat.root, id, problems, user);
      await pausePoint('mount:verified-copy');

      action = await withMountLock(cat, lockTimeout, `mount ${id}`, async () => {
        const now = await lstat(final).catch(() => null);
        if (!now) {
          await rename(staging, final);
          await fsyncDir(cat.adapters);
          await pausePoint('mount:renamed');
          return 'installed';
        }
        if (!options.force) {
          // someone installed this id while we copied
          const there = await compareExisting(final, report);
          if (there.kind === 'same') return 'unchanged';
          throw conflict(id, final, there.kind === 'differs' ? there.why : 'it appeared during the mount');
        }
        const trash = join(cat.adapters, leftoverName('trash', id));
        await rename(final, trash);
        await fsyncDir(cat.adapters);
        await pausePoint('mount:old-moved');
        try {
          await rename(staging, final);
        } catch (e) {
          await rename(trash, final).catch(() => undefined);
          throw environmentError(e, final, 'written');
        }
        await fsyncDir(cat.adapters);
        await pausePoint('mount:swapped');
        await rm(trash, { recursive: true, force: true });
        return 'replaced';
      });
    } finally {
      stopHeartbeat();
      await rm(staging, { recursive: true, force: true }).catch(() => undefined);
    }
  }

  let activated = false;
  if (options.activate) {
    activated = await withMountLock(cat, lockTimeout, `activate ${id}`, () => switchActive(cat.adapters, id));
  }
  const gguf = options.base ? await buildGguf(final, options.base, id) : null;
  const name = `${base.adapter.id} ${base.adapter.version}`;
  const reason =
    action === 'unchanged'
      ? `already mounted at ${final} with the same checksums; nothing changed`
      : action === 'replaced'
        ? `replaced ${final} with ${name}`
        : `installed ${name} at ${final}`;
  return {
    status: 'mounted',
    reason,
    action,
    already: action === 'unchanged',
    path: final,
    ...base,
    active: (await readActive(cat.adapters)) === id,
    activated,
    gguf,
    findings: withAboveVolume(findings, await aboveVolumeWarning(cat, user)),
    cleaned,
  };
}

function withAboveVolume(findings: Finding[], warning: Finding | null): Finding[] {
  return warning ? [...findings, warning] : findings;
}

/**
 * Copies the verified files into `dest`: regular files only (O_NOFOLLOW, so a file swapped for a link
 * after verification is not followed), made readable by everyone (0644, folders 0755), each fsynced,
 * then the folders.
 */
async function copyAdapter(src: string, dest: string, layout: AdapterLayout): Promise<void> {
  const buffer = Buffer.allocUnsafe(4 * 1024 * 1024);
  // a promote's lock and temp file (its own, or left by one that was killed) are not the adapter's, nor
  // is anything in a subfolder (LAYOUT_SUBDIRECTORY: a trainer's checkpoint-N/, say, often gigabytes)
  for (const f of layout.files.filter((file) => !isPromoteFile(file.name) && !file.name.includes('/'))) {
    const from = join(src, f.name);
    const to = join(dest, f.name);
    let input;
    try {
      input = await open(from, constants.O_RDONLY | constants.O_NOFOLLOW);
    } catch (e) {
      throw sourceChanged(f.name, e);
    }
    try {
      if (!(await input.stat()).isFile()) throw sourceChanged(f.name, new Error('no longer a regular file'));
      const output = await open(to, 'wx', 0o644).catch((e: unknown) => {
        throw environmentError(e, to, 'written');
      });
      try {
        for (;;) {
          const { bytesRead } = await input.read(buffer, 0, buffer.length, null);
          if (bytesRead === 0) break;
          let written = 0;
          while (written < bytesRead) {
            const { bytesWritten } = await output.write(buffer, written, bytesRead - written);
            written += bytesWritten;
          }
        }
        await output.chmod(0o644);
        await output.sync();
      } catch (e) {
        throw isCodiError(e) ? e : environmentError(e, to, 'written');
      } finally {
        await output.close();
      }
    } finally {
      await input.close();
    }
    await pausePoint(`mount:copied:${f.name}`);
  }
  for (const d of [...layout.directories].reverse()) await fsyncDir(join(dest, d));
  await fsyncDir(dest);
}

function sourceChanged(file: string, cause: unknown): CodiError {
  return statusError(
    'invalid',
    'MOUNT_SOURCE_CHANGED',
    `${file} could not be copied (${(cause as Error).message}): the source changed while it was being copied; nothing was mounted`,
    {
      exitCode: ExitCode.INVALID,
      file,
      hint: 'make sure nothing writes to the source folder during the mount',
      cause,
    },
  );
}

async function buildGguf(
  dir: string,
  basePath: string,
  id: string,
): Promise<{ path: string; cached: boolean }> {
  try {
    const { convertAdapter } = await import('./convert.js');
    const r = await convertAdapter(dir, { base: basePath });
    return { path: r.output, cached: r.cached };
  } catch (e) {
    if (!isCodiError(e)) throw e;
    // the adapter is in place and verified; only the prebuilt GGUF is missing (run builds it later)
    throw new CodiError(e.code, `${id} is mounted, but its GGUF could not be built: ${e.message}`, {
      exitCode: e.exitCode,
      ...(e.hint === undefined ? {} : { hint: e.hint }),
      ...(e.file === undefined ? {} : { file: e.file }),
      details: { ...e.details, status: 'mounted' },
      cause: e,
    });
  }
}

// ---------------------------------------------------------------------------------------------------
// list

export interface CatalogEntry {
  id: string;
  path: string;
  version: string | null;
  base_model: string | null;
  /** `sha256:<hex>` of the weights: recorded in metadata.json, or computed with --verify */
  checksum: string | null;
  checksum_verified: boolean;
  /** bytes, all files */
  size: number;
  status: AdapterStatus;
  active: boolean;
  /** the first error (or why the runtime user cannot read it); null when mounted */
  finding: Finding | null;
  /** the first warning (e.g. ADAPTER_ID_MISMATCH), with or without --verify */
  warning: Finding | null;
  errors: number;
  warnings: number;
}

export interface CatalogListing {
  root: string;
  adapters_dir: string;
  /** the id `active` points to */
  active: string | null;
  /** `active` points to an id that is not there */
  active_dangling: boolean;
  /** the checksums were recomputed (--verify) */
  verified: boolean;
  adapters: CatalogEntry[];
  /** hidden leftovers of interrupted mounts (the next mount cleans them, or puts an adapter back) */
  leftovers: string[];
  /** hidden staging or trash folders of mounts at work now */
  in_progress: string[];
  /** a folder above the volume UID 1000 cannot pass (ROOT_PATH_UNREACHABLE), or null */
  root_warning: Finding | null;
  durationMs: number;
}

export interface ListOptions {
  root: string;
  /** recompute every checksum (full verify); without it only headers and metadata are read */
  verify?: boolean;
  /** adapters inspected at once */
  concurrency?: number;
  runtimeUser?: RuntimeUser;
}

export async function listAdapters(options: ListOptions): Promise<CatalogListing> {
  const started = nowMs();
  const cat = await openCatalog(options.root);
  const user = options.runtimeUser ?? RUNTIME_USER;
  const listing: CatalogListing = {
    root: cat.root,
    adapters_dir: cat.adapters,
    active: null,
    active_dangling: false,
    verified: options.verify === true,
    adapters: [],
    leftovers: [],
    in_progress: [],
    root_warning: null,
    durationMs: 0,
  };
  if (cat.adaptersReal === null) {
    listing.durationMs = Math.round(nowMs() - started);
    return listing;
  }
  let dirents;
  try {
    dirents = await readdir(cat.adapters, { withFileTypes: true });
  } catch (e) {
    throw environmentError(e, cat.adapters, 'read');
  }
  listing.active = await readActive(cat.adapters);
  const names: string[] = [];
  const links: string[] = [];
  const hidden: string[] = [];
  for (const d of dirents) {
    if (d.name.startsWith('.')) {
      if (isLeftoverName(d.name)) hidden.push(d.name);
      continue;
    }
    if (d.name === ACTIVE_LINK && d.isSymbolicLink()) continue;
    (d.isSymbolicLink() ? links : names).push(d.name);
  }
  const listed = new Set([...names, ...links]);
  const missing: CatalogEntry[] = [];
  if (hidden.length > 0) {
    ({ dead: listing.leftovers, live: listing.in_progress } = await classifyLeftovers(cat.adapters, hidden));
    // an id whose folder is in `.trash-…` right now: a mount --force between its two renames
    for (const id of new Set(
      hidden.map((n) => LEFTOVER.exec(n)).map((m) => (m?.[1] === 'trash' ? m[2] : '')),
    )) {
      if (!id || listed.has(id) || !isValidAdapterId(id)) continue;
      const r = await awaitReplacement(join(cat.adapters, id));
      if (r.state === 'present') names.push(id);
      else if (r.state !== 'absent') missing.push(replacedEntry(join(cat.adapters, id), id, r));
    }
  }
  // the runtime user reaches nothing below a folder it cannot pass through: checked once for all
  const reach = await accessProblems(null, ancestorsOf(cat).volume, user);
  listing.root_warning = await aboveVolumeWarning(cat, user);
  const entries = await mapPool(names, options.concurrency ?? 32, async (name) => {
    const path = join(cat.adapters, name);
    const entry = await inspect(path, name, options.verify === true, user, reach);
    if (entry.status === 'mounted' || (await lstat(path).catch(() => null))) return entry;
    // gone since the listing: perhaps replaced under our feet
    const r = await awaitReplacement(path);
    if (r.state === 'present') return inspect(path, name, options.verify === true, user, reach);
    return r.state === 'absent' ? entry : replacedEntry(path, name, r);
  });
  entries.push(...(await Promise.all(links.map((name) => linkEntry(join(cat.adapters, name), name)))));
  entries.push(...missing);
  entries.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  for (const e of entries) e.active = e.id === listing.active;
  listing.adapters = entries;
  listing.active_dangling = listing.active !== null && !entries.some((e) => e.active);
  listing.durationMs = Math.round(nowMs() - started);
  return listing;
}

async function mapPool<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

function blankEntry(path: string, id: string): CatalogEntry {
  return {
    id,
    path,
    version: null,
    base_model: null,
    checksum: null,
    checksum_verified: false,
    size: 0,
    status: 'invalid',
    active: false,
    finding: null,
    warning: null,
    errors: 0,
    warnings: 0,
  };
}

/**
 * A link in the catalog other than `active`: refused like a link inside an adapter (LAYOUT_SYMLINK),
 * since it can point anywhere, off the volume the runtime mounts included.
 */
async function linkEntry(path: string, id: string): Promise<CatalogEntry> {
  const to = await readlink(path).catch(() => '?');
  return {
    ...blankEntry(path, id),
    status: 'invalid',
    errors: 1,
    finding: {
      level: 'error',
      code: 'LAYOUT_SYMLINK',
      message: `${id} is a symbolic link (to ${to}); an adapter in the catalog must be a folder on the volume, not a link that can point anywhere`,
      file: '.',
      hint: `replace the link with the adapter folder itself, or install a copy: codi-adapter mount <its target> --id ${id} --force`,
    },
  };
}

function replacedEntry(path: string, id: string, r: Replacement): CatalogEntry {
  return { ...blankEntry(path, id), status: 'not_mounted', errors: 1, finding: replacementFinding(r) };
}

/**
 * The folders UID 1000 must pass through (x) to reach `<root>/adapters`, as given and as resolved:
 * `volume` (the root and `adapters`, which the container sees too) and `above` (from `/` down to the
 * root's parent, which exist only on this host: a volume bind-mounted into the container as /models is
 * reached without them).
 */
function ancestorsOf(cat: Catalog): { volume: string[]; above: string[] } {
  const volume = new Set<string>();
  const above = new Set<string>();
  const pairs: [string, string][] = [
    [cat.root, cat.adapters],
    [cat.rootReal, cat.adaptersReal ?? join(cat.rootReal, ADAPTERS_DIR)],
  ];
  for (const [root, adapters] of pairs) {
    volume.add(root).add(adapters);
    for (let p = dirname(root); ; p = dirname(p)) {
      above.add(p);
      if (dirname(p) === p) break;
    }
  }
  for (const p of volume) above.delete(p);
  return { volume: [...volume].sort(), above: [...above].sort() };
}

/**
 * A folder above the volume that UID 1000 cannot pass: a warning, not an error. In the container the
 * volume is /models and these folders are not on its way; only a `run` on this host as UID 1000 would
 * not reach the adapters.
 */
async function aboveVolumeWarning(cat: Catalog, user: RuntimeUser): Promise<Finding | null> {
  const problems = await accessProblems(null, ancestorsOf(cat).above, user);
  if (problems.length === 0) return null;
  const shown = problems.map((p) => `${p.path} (${p.owner} ${p.mode})`).join(', ');
  return {
    level: 'warning',
    code: 'ROOT_PATH_UNREACHABLE',
    message: `UID ${user.uid} cannot pass through ${shown} above the models volume ${cat.root}: fine when the volume is bind-mounted into the container, but codi-adapter run on this host as UID ${user.uid} would not reach it`,
    file: cat.root,
    hint: `chmod a+x ${problems.map((p) => p.path).join(' ')}   (only if run reads the volume at this path)`,
  };
}

async function inspect(
  path: string,
  id: string,
  full: boolean,
  user: RuntimeUser,
  reach: readonly AccessProblem[],
): Promise<CatalogEntry> {
  const entry = blankEntry(path, id);
  let findings: Finding[];
  let layout: AdapterLayout;
  let metadata: AdapterMetadata | null;
  try {
    if (full) {
      const report = await verifyAdapter(path);
      ({ findings } = report);
      ({ layout, metadata } = report.verified);
      const sum = weightsChecksum(report);
      entry.checksum = sum ? `sha256:${sum}` : null;
      entry.checksum_verified = sum !== null;
    } else {
      ({ findings, layout, metadata } = await quickCheck(path, syncIo));
      const sum = metadata && layout.weightsFile ? recordedChecksum(metadata, layout.weightsFile) : null;
      entry.checksum = sum ? `sha256:${sum}` : null;
    }
  } catch (e) {
    if (!isCodiError(e)) throw e;
    entry.finding = findingFromError(e, id);
    entry.status = e.exitCode === ExitCode.ENVIRONMENT ? 'not_mounted' : 'invalid';
    entry.errors = 1;
    return entry;
  }
  entry.version = metadata?.version ?? null;
  entry.base_model = metadata?.base_model ?? null;
  entry.size = layout.files.reduce((n, f) => n + f.size, 0);
  const problem = adapterIdProblem(id);
  if (problem) {
    findings.unshift({
      level: 'error',
      code: 'MOUNT_ID_INVALID',
      message: `the folder name is not a valid adapter id: ${problem}`,
      file: '.',
    });
  }
  const errors = findings.filter((f) => f.level === 'error');
  entry.errors = errors.length;
  entry.warnings = findings.length - errors.length;
  entry.finding = errors[0] ?? null;
  entry.warning = findings.find((f) => f.level === 'warning') ?? null;
  entry.status = errors.length > 0 ? 'invalid' : 'mounted';
  if (entry.status === 'mounted') {
    const problems = [
      ...reach,
      ...(full ? await accessProblems(layout, [], user) : accessProblemsSync(layout, user)),
    ];
    const first = problems[0];
    if (first) {
      entry.status = 'not_mounted';
      entry.finding = {
        level: 'error',
        code: 'ADAPTER_UNREADABLE',
        message: `UID ${user.uid} cannot ${first.needs === 'x' ? 'pass through' : 'read'} ${first.path} (${first.owner} ${first.mode})${problems.length > 1 ? ` and ${problems.length - 1} more` : ''}`,
        file: first.path,
        hint: accessFix(problems, path, user),
      };
    }
  }
  return entry;
}

function recordedChecksum(metadata: AdapterMetadata, weightsFile: string): string | null {
  if (typeof metadata.checksum === 'string') return metadata.checksum.slice('sha256:'.length);
  return metadata.checksum.files[weightsFile] ?? null;
}

/** The file reads of a quick check; `list` swaps in synchronous ones (see `syncIo`). */
interface QuickIo {
  scan(dir: string): Promise<AdapterLayout>;
  read(path: string): Promise<Buffer>;
  header(path: string): Promise<SafetensorsHeader>;
}

const asyncIo: QuickIo = { scan: scanLayout, read: (p) => readFile(p), header: readSafetensorsHeader };

/**
 * Synchronous reads for `list`: a thousand adapters are some twenty thousand tiny metadata reads, and
 * Node's promise file API costs more per call (thread pool hop, FileHandle objects, GC) than the
 * system calls themselves. Blocking is harmless in a command that does nothing else meanwhile.
 */
const syncIo: QuickIo = {
  // folders with anything but regular files (links, sub-folders, devices) take the full scan
  scan: async (dir) => scanPlainSync(dir) ?? scanLayout(dir),
  read: (p) => Promise.resolve(readFileSync(p)),
  header: (p) => Promise.resolve(readSafetensorsHeaderSync(p)),
};

/** scanLayout for the common case, a folder of regular files only; null for anything else. */
function scanPlainSync(dir: string): AdapterLayout | null {
  let root: string;
  let dirents;
  try {
    // the native realpath is one system call; the JS one lstats every component of the path
    root = realpathSync.native(dir);
    dirents = readdirSync(root, { withFileTypes: true });
  } catch {
    return null;
  }
  if (dirents.length > 1000 || dirents.some((d) => !d.isFile())) return null;
  const files = dirents
    .map((d) => {
      const st = lstatSync(join(root, d.name));
      return { name: d.name, size: st.size, mode: st.mode, uid: st.uid, gid: st.gid, regular: st.isFile() };
    })
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  if (files.some((f) => !f.regular)) return null;
  const { weightsFile, findings } = requiredFiles(new Set(files.map((f) => f.name)), new Set());
  return {
    dir: root,
    files: files.map(({ regular: _regular, ...f }) => f),
    directories: [],
    weightsFile,
    findings,
  };
}

/**
 * verify without hashing and without the tensor analysis: layout, adapter_config.json, the weights
 * header (strict) or the pickle scan, metadata.json. What `list` shows without --verify; a changed
 * weights byte that keeps the header intact, or tensors that do not match the config, are found by
 * --verify.
 */
export async function quickCheck(
  dir: string,
  io: QuickIo = asyncIo,
): Promise<{ findings: Finding[]; layout: AdapterLayout; metadata: AdapterMetadata | null }> {
  const layout = await io.scan(dir);
  const findings: Finding[] = [...layout.findings];
  const present = new Set(layout.files.map((f) => f.name));

  if (present.has(CONFIG_FILE)) {
    const text = await readJsonText(io, layout.dir, CONFIG_FILE, 'CONFIG_JSON', findings);
    if (text !== null) for (const f of parseLoraConfig(text).findings) findings.push(f);
  }
  // the weights header, strictly (CONTRACT §6); tensors against the config is left to --verify: on a
  // production adapter (392 tensors) it would cost a third of list's time again
  try {
    if (layout.weightsFile === SAFETENSORS_FILE) {
      await io.header(join(layout.dir, SAFETENSORS_FILE));
    } else if (layout.weightsFile === BIN_FILE) {
      const { scanTorchBin } = await import('./formats/torch-bin.js');
      await scanTorchBin(join(layout.dir, BIN_FILE));
    }
  } catch (e) {
    if (!isCodiError(e)) throw e;
    findings.push(findingFromError(e, layout.weightsFile ?? SAFETENSORS_FILE));
  }

  let metadata: AdapterMetadata | null = null;
  if (present.has(METADATA_FILE)) {
    const text = await readJsonText(io, layout.dir, METADATA_FILE, 'METADATA_JSON', findings);
    if (text !== null) {
      const parsed = parseMetadata(text, layout.weightsFile);
      for (const f of parsed.findings) findings.push(f);
      metadata = parsed.metadata;
      if (metadata) {
        // as verify says it: the cheap part of its metadata check, so list shows the same warnings
        const idFinding = adapterIdFinding(layout.dir, metadata);
        if (idFinding) findings.push(idFinding);
        for (const [file] of parsed.checksums) {
          if (!present.has(file)) {
            findings.push({
              level: 'error',
              code: 'CHECKSUM_FILE_MISSING',
              message: `${file} is listed in the checksums but missing`,
              file,
            });
          }
        }
        for (const f of uncoveredFileFindings(layout.files, parsed.checksums, layout.weightsFile))
          findings.push(f);
      }
    }
  }
  return { findings, layout, metadata };
}

async function readJsonText(
  io: QuickIo,
  dir: string,
  file: string,
  code: string,
  findings: Finding[],
): Promise<string | null> {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(await io.read(join(dir, file)));
  } catch (e) {
    findings.push(
      e instanceof TypeError
        ? { level: 'error', code, message: `${file} is not valid UTF-8`, file }
        : findingFromError(environmentError(e, file, 'read'), file),
    );
    return null;
  }
  // parseLoraConfig/parseMetadata parse it strictly (duplicate keys refused)
  return text;
}
