/**
 * Atomic, durable file writes: the data goes to a temp file in the target's folder (same file
 * system, so the rename is atomic), is fsynced, renamed over the target, and the folder is fsynced so
 * the rename itself survives a crash. A reader sees the old file or the new one, never a mix.
 */
import { randomBytes } from 'node:crypto';
import { open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { environmentError } from './errors.js';
import { trace } from './trace.js';

/** `.name.<pid>.<random>.tmp` beside `path`; hidden, and recognisable as ours for clean-up. */
export function tempPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
}

/** The pid of the writer whose temp file for a file named `name` (`tempPathFor`) is `entry`; else null. */
export function tempWriterPid(entry: string, name: string): number | null {
  const prefix = `.${name}.`;
  if (!entry.startsWith(prefix)) return null;
  const m = /^(\d+)\.[0-9a-f]{12}\.tmp$/u.exec(entry.slice(prefix.length));
  return m ? Number(m[1]) : null;
}

/** Makes a rename or create in `dir` durable; file systems that cannot fsync a folder are left alone. */
export async function fsyncDir(dir: string): Promise<void> {
  let fh: FileHandle | undefined;
  try {
    fh = await open(dir, 'r');
    await fh.sync();
  } catch {
    // some file systems refuse fsync on a directory; the rename is atomic there all the same
  } finally {
    await fh?.close().catch(() => undefined);
  }
}

/** A file being written in place of `path`: write through `handle`, then `commit` or `abort`. */
export class AtomicFile {
  private settled = false;

  private constructor(
    readonly path: string,
    readonly tempPath: string,
    readonly handle: FileHandle,
  ) {}

  static async open(path: string, mode = 0o644): Promise<AtomicFile> {
    const temp = tempPathFor(path);
    try {
      return new AtomicFile(path, temp, await open(temp, 'wx', mode));
    } catch (e) {
      throw environmentError(e, dirname(path), 'written');
    }
  }

  /** fsync, close, rename into place, fsync the folder. */
  async commit(): Promise<void> {
    if (this.settled) return;
    this.settled = true;
    try {
      await this.handle.sync();
      trace('atomic: fsynced');
      await this.handle.close();
      await rename(this.tempPath, this.path);
      trace('atomic: renamed');
    } catch (e) {
      await this.handle.close().catch(() => undefined);
      await unlink(this.tempPath).catch(() => undefined);
      throw environmentError(e, this.path, 'written');
    }
    await fsyncDir(dirname(this.path));
  }

  /** Removes the temp file; the target is untouched. */
  async abort(): Promise<void> {
    if (this.settled) return;
    this.settled = true;
    await this.handle.close().catch(() => undefined);
    await unlink(this.tempPath).catch(() => undefined);
  }
}

/** Writes `data` to `path` atomically and durably. */
export async function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o644): Promise<void> {
  const file = await AtomicFile.open(path, mode);
  try {
    await file.handle.writeFile(data);
  } catch (e) {
    await file.abort();
    throw environmentError(e, path, 'written');
  }
  await file.commit();
}
