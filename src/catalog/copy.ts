/**
 * Copying an adapter's files into a mount's staging folder: regular files only, never following a
 * link, made readable by everyone and fsynced; a source that changes under the copy is
 * MOUNT_SOURCE_CHANGED.
 */
import { constants, open } from 'node:fs/promises';
import { join } from 'node:path';
import { fsyncDir } from '../atomic.js';
import { CodiError, environmentError, isCodiError } from '../errors.js';
import { isPromoteFile, type AdapterLayout } from '../layout.js';
import { pausePoint } from '../test-hooks.js';
import { statusError } from './volume.js';

/** The files of `layout` a mount copies: a promote's and a subfolder's are not the adapter's. */
export function filesToCopy(layout: AdapterLayout): string[] {
  // a promote's lock and temp file (its own, or left by one that was killed) are not the adapter's, nor
  // is anything in a subfolder (LAYOUT_SUBDIRECTORY: a trainer's checkpoint-N/, say, often gigabytes)
  return layout.files.map((f) => f.name).filter((name) => !isPromoteFile(name) && !name.includes('/'));
}

/**
 * Copies the verified files into `dest`: regular files only (O_NOFOLLOW, so a file swapped for a link
 * after verification is not followed), made readable by everyone (0644, folders 0755), each fsynced,
 * then the folders.
 */
export async function copyAdapter(src: string, dest: string, layout: AdapterLayout): Promise<void> {
  const buffer = Buffer.allocUnsafe(4 * 1024 * 1024);
  for (const name of filesToCopy(layout)) {
    await copyOneFile(join(src, name), join(dest, name), name, buffer);
    await pausePoint(`mount:copied:${name}`);
  }
  for (const d of [...layout.directories].reverse()) await fsyncDir(join(dest, d));
  await fsyncDir(dest);
}

/** One file of the adapter, through `buffer`: written 0644 and fsynced. */
export async function copyOneFile(from: string, to: string, name: string, buffer: Buffer): Promise<void> {
  let input;
  try {
    input = await open(from, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (e) {
    throw sourceChanged(name, e);
  }
  try {
    if (!(await input.stat()).isFile()) throw sourceChanged(name, new Error('no longer a regular file'));
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
}

export function sourceChanged(file: string, cause: unknown): CodiError {
  return statusError(
    'invalid',
    'MOUNT_SOURCE_CHANGED',
    `${file} could not be copied (${(cause as Error).message}): the source changed while it was being copied; nothing was mounted`,
    {
      file,
      hint: 'make sure nothing writes to the source folder during the mount',
      cause,
    },
  );
}
