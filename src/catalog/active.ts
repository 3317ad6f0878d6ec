/**
 * `<root>/adapters/active`: a relative symbolic link to the adapter `run` serves by default, so it
 * resolves the same on the host and inside the container.
 */
import { lstat, readlink, rename, symlink, unlink } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { fsyncDir, tempPathFor } from '../atomic.js';
import { CodiError, environmentError } from '../errors.js';
import { pausePoint } from '../test-hooks.js';
import { ACTIVE_LINK } from './volume.js';

/** The id `<root>/adapters/active` points to; null without a link. */
export async function readActive(adaptersDir: string): Promise<string | null> {
  try {
    return basename(await readlink(join(adaptersDir, ACTIVE_LINK)));
  } catch {
    return null;
  }
}

/**
 * Points `active` at `id` atomically: a new link under a temp name, renamed over the old one. Returns
 * false when it already pointed there.
 */
export async function switchActive(adaptersDir: string, id: string): Promise<boolean> {
  const link = join(adaptersDir, ACTIVE_LINK);
  const st = await lstat(link).catch(() => null);
  if (st && !st.isSymbolicLink()) {
    throw new CodiError('ACTIVE_NOT_LINK', `${link} exists and is not a symbolic link; it is not replaced`, {
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
