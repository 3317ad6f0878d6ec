/**
 * Step 1 of `run`: the models volume, the adapter (not mounted or unreadable: exit 3, with the hint to
 * mount it readable by the user run runs as) and the base model must be there, and readable, before
 * anything is verified or started.
 */
import { constants } from 'node:fs';
import { access, lstat, realpath } from 'node:fs/promises';
import { basename } from 'node:path';
import { unreadableError, type AccessProblem } from '../catalog/access.js';
import { awaitReplacement, replacementFinding } from '../catalog/leftovers.js';
import { notMountedHint, statusOf } from '../catalog/volume.js';
import { CodiError, isCodiError } from '../errors.js';
import type { RunConfig } from './config.js';
import type { RunEvent } from './context.js';
import { currentUser, hintUser, unpassableFolder, unreadableParts } from './readable.js';

type Emit = (e: RunEvent) => void;

/** Checks MODEL_MOUNT_PATH, ADAPTER_PATH and BASE_MODEL_PATH; resolves to the adapter's real path. */
export async function validatePaths(config: RunConfig, emit: Emit): Promise<string> {
  const user = currentUser();
  const notMounted = (reason: string, cause?: unknown): CodiError => {
    // the hint is printed with the error that follows
    emit({ kind: 'adapter-status', status: 'not_mounted', reason });
    return new CodiError('ADAPTER_NOT_MOUNTED', reason, {
      file: config.adapterPath,
      hint: notMountedHint(config.modelMountPath, basename(config.adapterPath), hintUser()),
      cause,
    });
  };
  const unreadable = (dir: string, problems: AccessProblem[]): CodiError => {
    const e = unreadableError(dir, config.modelMountPath, basename(dir), problems, user);
    emit({ kind: 'adapter-status', status: statusOf(e), reason: e.message });
    return e;
  };
  const mount = await lstat(config.modelMountPath).catch((e: unknown) => e as NodeJS.ErrnoException);
  if (mount instanceof Error || !mount.isDirectory()) {
    throw notMounted(
      `MODEL_MOUNT_PATH ${config.modelMountPath} ${mount instanceof Error ? describeErrno(mount) : 'is not a directory'} (mount the models volume there)`,
    );
  }
  let adapterDir: string;
  try {
    adapterDir = await realpath(config.adapterPath).catch(async (e: unknown) => {
      // perhaps a `mount --force` between its two renames: the adapter is back in milliseconds
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      const r = await awaitReplacement(config.adapterPath);
      if (r.state === 'present') return realpath(config.adapterPath);
      if (r.state === 'absent') throw e;
      const f = replacementFinding(r);
      throw notMounted(`ADAPTER_PATH ${config.adapterPath}: ${f.message} (${f.hint ?? ''})`);
    });
    const st = await lstat(adapterDir);
    if (!st.isDirectory()) throw notMounted(`ADAPTER_PATH ${config.adapterPath} is not a directory`);
    const problems = await unreadableParts(adapterDir);
    if (problems.length > 0) throw unreadable(adapterDir, problems);
  } catch (e) {
    if (isCodiError(e)) throw e;
    const closed = isDenied(e) ? await unpassableFolder(config.adapterPath) : null;
    if (closed) throw unreadable(config.adapterPath, [closed]);
    throw notMounted(`ADAPTER_PATH ${config.adapterPath} ${describeErrno(e as NodeJS.ErrnoException)}`, e);
  }
  await requireBaseModel(config);
  return adapterDir;
}

/** BASE_MODEL_PATH: a file (BASE_MODEL_MISSING) this process can read (BASE_MODEL_UNREADABLE). */
async function requireBaseModel(config: RunConfig): Promise<void> {
  const path = config.baseModelPath;
  const user = currentUser();
  let denied: unknown = null;
  try {
    const st = await lstat(await realpath(path));
    if (!st.isFile()) throw new Error('not a file');
    await access(path, constants.R_OK).catch((e: unknown) => {
      denied = e;
    });
  } catch (e) {
    if (!isDenied(e)) {
      throw new CodiError(
        'BASE_MODEL_MISSING',
        `BASE_MODEL_PATH ${path} ${e instanceof Error && 'code' in e ? describeErrno(e as NodeJS.ErrnoException) : 'is not a file'}`,
        {
          file: path,
          hint: `place the ${config.codeModel} GGUF at <MODEL_MOUNT_PATH>/base/${config.codeModel}.gguf, or set BASE_MODEL_PATH`,
        },
      );
    }
    denied = e;
  }
  if (denied === null) return;
  const closed = await unpassableFolder(path);
  const what = closed ? `pass through ${closed.path} (${closed.owner} ${closed.mode})` : `read ${path}`;
  throw new CodiError('BASE_MODEL_UNREADABLE', `UID ${user.uid} (the user run runs as) cannot ${what}`, {
    file: path,
    hint: closed
      ? `chmod a+x ${closed.path}`
      : `chown ${user.uid}:${user.gid} ${path}   or   chmod a+r ${path}`,
    cause: denied,
  });
}

function isDenied(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException | null)?.code;
  return code === 'EACCES' || code === 'EPERM';
}

/** Why a path cannot be used, in the words of a setting's message (`MODEL_MOUNT_PATH /x does not exist`). */
export function describeErrno(e: NodeJS.ErrnoException): string {
  switch (e.code) {
    case 'ENOENT':
      return 'does not exist';
    case 'EACCES':
    case 'EPERM':
      return 'is not readable by this user';
    case 'ENOTDIR':
      return 'is not a directory';
    default:
      return `cannot be read (${e.code ?? e.message})`;
  }
}
