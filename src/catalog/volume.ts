/**
 * The models volume: `<root>/adapters/<id>/` and the `<root>/adapters/active` link. The folder is the
 * catalog; there is no index file that could disagree with what is on disk. Also the adapter ids the
 * catalog accepts, and the status (`mounted`, `not_mounted`, `invalid`) an error stands for.
 */
import { access, chmod, constants, lstat, mkdir, realpath, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import type { Code, ExitOf } from '../codes.js';
import { CodiError, ExitCode, environmentError, type CodiErrorOptions } from '../errors.js';
import { ADAPTER_ID_PATTERN, isValidAdapterId } from '../layout.js';
import { withLock } from '../lock.js';

export const ADAPTERS_DIR = 'adapters';
export const ACTIVE_LINK = 'active';
/** In `<root>/adapters`: held while a mount changes the catalog (everything but copying). */
export const MOUNT_LOCK = '.mount.lock';
export const DEFAULT_MOUNT_LOCK_TIMEOUT_MS = 60_000;

export type AdapterStatus = 'mounted' | 'not_mounted' | 'invalid';

export interface RuntimeUser {
  uid: number;
  gid: number;
}

/** The user the complete container runs as: every adapter on the volume must be readable by it. */
export const RUNTIME_USER: RuntimeUser = { uid: 1000, gid: 1000 };

/**
 * The resolution printed with `Adapter Status: not_mounted` (the README's troubleshooting table);
 * `user` is who must read it (run names the user it runs as).
 */
export function notMountedHint(root: string, id?: string, user: RuntimeUser = RUNTIME_USER): string {
  return `mount the host folder at ${join(root, ADAPTERS_DIR, id ?? '<id>')}, readable by UID ${user.uid}`;
}

/** The adapter status an error from the catalog stands for. */
export function statusOf(error: CodiError): AdapterStatus {
  const status = error.details?.status;
  if (status === 'mounted' || status === 'not_mounted' || status === 'invalid') return status;
  return error.exitCode === ExitCode.INVALID ? 'invalid' : 'not_mounted';
}

/** A CodiError that carries the adapter status it stands for (`statusOf`). */
export function statusError<C extends Code>(
  status: AdapterStatus,
  code: C,
  message: string,
  options: Omit<CodiErrorOptions<C>, 'pointer'> = {},
): CodiError {
  return new CodiError(code, message, { ...options, details: { status, ...options.details } });
}

export interface Catalog {
  root: string;
  adapters: string;
  /** realpath of `adapters`, null when it does not exist yet */
  adaptersReal: string | null;
  rootReal: string;
}

/** The volume at `rootArg`: it must be a directory (exit 3); `adapters` in it need not exist yet. */
export async function openCatalog(rootArg: string, id?: string): Promise<Catalog> {
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
        file: root,
        hint: `${notMountedHint(root, id)} (pass --root or set MODEL_MOUNT_PATH when the volume is elsewhere)`,
        cause: e,
      },
    );
  }
  if (!st.isDirectory()) {
    throw statusError('not_mounted', 'ROOT_NOT_DIRECTORY', `the models volume ${root} is not a directory`, {
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
        file: adapters,
        hint: notMountedHint(root, id),
      });
    }
    adaptersReal = await realpath(adapters);
  }
  return { root, adapters, adaptersReal, rootReal: await realpath(root) };
}

/** Creates `<root>/adapters` when needed and proves we may write there (exit 3 otherwise). */
export async function requireWritable(cat: Catalog): Promise<void> {
  const notWritable = (e: unknown, path: string): CodiError =>
    statusError(
      'not_mounted',
      'ROOT_NOT_WRITABLE',
      `${path} is not writable: ${environmentError(e, path).message}`,
      {
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

/** Whether this process may write in `<root>/adapters` (registering in place needs no write). */
export function catalogWritable(cat: Catalog): Promise<boolean> {
  return access(cat.adapters, constants.W_OK).then(
    () => true,
    () => false,
  );
}

/** Runs `fn` holding the catalog's mount lock. */
export function withMountLock<T>(
  cat: Catalog,
  timeoutMs: number,
  purpose: string,
  fn: () => Promise<T>,
): Promise<T> {
  return withLock(join(cat.adapters, MOUNT_LOCK), { timeoutMs, purpose }, fn);
}

/**
 * The folders UID 1000 must pass through (x) to reach `<root>/adapters`, as given and as resolved:
 * `volume` (the root and `adapters`, which the container sees too) and `above` (from `/` down to the
 * root's parent, which exist only on this host: a volume bind-mounted into the container as /models is
 * reached without them).
 */
export function ancestorsOf(cat: Catalog): { volume: string[]; above: string[] } {
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

/** Throws MOUNT_ID_INVALID (with `exitCode`) unless `id`, taken from `from`, is a valid adapter id. */
export function requireId(id: string, from: string, exitCode: ExitOf<'MOUNT_ID_INVALID'>): void {
  const problem = adapterIdProblem(id);
  if (problem) {
    throw statusError(
      'not_mounted',
      'MOUNT_ID_INVALID',
      `${from} ${JSON.stringify(id)} is not a valid adapter id: ${problem}`,
      {
        exitCode,
      },
    );
  }
}
