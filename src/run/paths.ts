/**
 * Step 1 of `run`: the models volume, the adapter (not mounted: exit 3, with the hint to mount it) and
 * the base model must be there before anything is verified or started.
 */
import { lstat, realpath } from 'node:fs/promises';
import { basename } from 'node:path';
import { awaitReplacement, replacementFinding } from '../catalog/leftovers.js';
import { notMountedHint } from '../catalog/volume.js';
import { CodiError, isCodiError } from '../errors.js';
import type { RunConfig } from './config.js';
import type { RunEvent } from './context.js';

/** Checks MODEL_MOUNT_PATH, ADAPTER_PATH and BASE_MODEL_PATH; resolves to the adapter's real path. */
export async function validatePaths(config: RunConfig, emit: (e: RunEvent) => void): Promise<string> {
  const notMounted = (reason: string, cause?: unknown): CodiError => {
    // the hint is printed with the error that follows
    emit({ kind: 'adapter-status', status: 'not_mounted', reason });
    return new CodiError('ADAPTER_NOT_MOUNTED', reason, {
      file: config.adapterPath,
      hint: notMountedHint(config.modelMountPath, basename(config.adapterPath)),
      cause,
    });
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
  } catch (e) {
    if (isCodiError(e)) throw e;
    throw notMounted(`ADAPTER_PATH ${config.adapterPath} ${describeErrno(e as NodeJS.ErrnoException)}`, e);
  }
  try {
    const st = await lstat(await realpath(config.baseModelPath));
    if (!st.isFile()) throw new Error('not a file');
  } catch (e) {
    throw new CodiError(
      'BASE_MODEL_MISSING',
      `BASE_MODEL_PATH ${config.baseModelPath} ${e instanceof Error && 'code' in e ? describeErrno(e as NodeJS.ErrnoException) : 'is not a file'}`,
      {
        file: config.baseModelPath,
        hint: `place the ${config.codeModel} GGUF at <MODEL_MOUNT_PATH>/base/${config.codeModel}.gguf, or set BASE_MODEL_PATH`,
      },
    );
  }
  return adapterDir;
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
