/**
 * CODI_STATE_DIR, checked before anything is started: `run` writes environment.json there once the
 * LLM is ready, and finding out then that it cannot would waste the model load. A missing folder is
 * created (0700: it holds the record of what is served). Each way it can be unusable has its code:
 * a file in the way (STATE_DIR_NOT_DIRECTORY), a read-only file system (STATE_DIR_READ_ONLY), no
 * permission to create or write it (STATE_DIR_NOT_WRITABLE), each naming the folder at fault.
 */
import { randomBytes } from 'node:crypto';
import { lstat, mkdir, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';
import { CodiError } from '../errors.js';

const SET_IT = 'or set CODI_STATE_DIR to a writable folder';

/** Makes sure `dir` is a folder `run` can write; throws the error that says why not (exit 3). */
export async function prepareStateDir(dir: string): Promise<void> {
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
  } catch (e) {
    throw await cannotCreate(dir, e as NodeJS.ErrnoException);
  }
  const st = await stat(dir).catch(() => null);
  if (!st?.isDirectory()) throw notDirectory(dir, dir);
  // write access is proven by writing: mode bits say nothing of ACLs, read-only mounts or quotas
  const probe = join(dir, `.write-probe-${process.pid}-${randomBytes(4).toString('hex')}`);
  try {
    await writeFile(probe, '', { flag: 'wx', mode: 0o600 });
  } catch (e) {
    throw cannotWrite(dir, dir, e as NodeJS.ErrnoException);
  } finally {
    await rm(probe, { force: true }).catch(() => undefined);
  }
}

/**
 * Why `dir` could not be created. mkdir's own error says little (a recursive mkdir under a read-only
 * mount reports ENOENT), so the way to it is walked: the nearest folder that exists is the one at
 * fault, and creating the next folder in it, by itself, gives the real reason.
 */
async function cannotCreate(dir: string, e: NodeJS.ErrnoException): Promise<CodiError> {
  const blocker = await nearestExisting(dir);
  if (e.code === 'ENOTDIR' || e.code === 'EEXIST' || (blocker !== null && !blocker.isDirectory)) {
    return notDirectory(dir, blocker?.path ?? dir);
  }
  if (blocker === null) return cannotWrite(dir, dirname(dir), e);
  if (blocker.error) return cannotWrite(dir, blocker.path, blocker.error);
  const next = join(blocker.path, relative(blocker.path, dir).split(sep)[0] ?? '');
  const why = await mkdir(next).then(
    async () => {
      // it could be made now (something else fixed it meanwhile): the original error stands
      await rm(next, { recursive: true, force: true });
      return e;
    },
    (err: unknown) => err as NodeJS.ErrnoException,
  );
  return cannotWrite(dir, blocker.path, why);
}

/**
 * The nearest folder on the way to `dir` that exists (or the file in the way), and, when the folder
 * below it could not even be looked up (no search permission), that error.
 */
async function nearestExisting(
  dir: string,
): Promise<{ path: string; isDirectory: boolean; error?: NodeJS.ErrnoException } | null> {
  let lookup: NodeJS.ErrnoException | undefined;
  for (let p = dir; ; p = dirname(p)) {
    const st = await lstat(p).catch((err: unknown) => err as NodeJS.ErrnoException);
    if (!(st instanceof Error))
      return { path: p, isDirectory: st.isDirectory(), ...(lookup ? { error: lookup } : {}) };
    lookup = st.code === 'ENOENT' ? undefined : st;
    if (dirname(p) === p) return null;
  }
}

function notDirectory(dir: string, at: string): CodiError {
  return new CodiError(
    'STATE_DIR_NOT_DIRECTORY',
    at === dir
      ? `CODI_STATE_DIR ${dir} is not a folder`
      : `CODI_STATE_DIR ${dir} cannot be created: ${at} is a file, not a folder`,
    { file: at, hint: `remove or rename ${at}, ${SET_IT}` },
  );
}

function cannotWrite(dir: string, at: string, e: NodeJS.ErrnoException): CodiError {
  const what = at === dir ? `cannot be written` : `cannot be created in ${at}`;
  if (e.code === 'EROFS') {
    return new CodiError('STATE_DIR_READ_ONLY', `CODI_STATE_DIR ${dir} ${what}: a read-only file system`, {
      file: at,
      hint: `mount a writable volume or a tmpfs there (docker run --tmpfs ${at === dir ? dir : at}), ${SET_IT}`,
    });
  }
  const why =
    e.code === 'EACCES' || e.code === 'EPERM'
      ? `permission denied to ${process.getuid?.() === undefined ? 'this user' : `UID ${process.getuid()}`}`
      : e.code === 'ENOSPC'
        ? 'no space left on the device'
        : (e.code ?? e.message);
  return new CodiError('STATE_DIR_NOT_WRITABLE', `CODI_STATE_DIR ${dir} ${what}: ${why}`, {
    file: at,
    hint:
      e.code === 'ENOSPC'
        ? `free space on the device holding ${at}, ${SET_IT}`
        : `make ${at} writable by this user (chown or chmod), ${SET_IT}`,
  });
}
