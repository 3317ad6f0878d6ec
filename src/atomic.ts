/**
 * Atomic, durable file writes: the data goes to a temp file in the target's folder (same file
 * system, so the rename is atomic), is fsynced, renamed over the target, and the folder is fsynced so
 * the rename itself survives a crash. A reader sees the old file or the new one, never a mix.
 */
import { randomBytes } from 'node:crypto';
import { unlinkSync } from 'node:fs';
import { open, readdir, rename, stat, unlink, type FileHandle } from 'node:fs/promises';
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

/** Whether a process with this pid exists on this host (EPERM: it exists, but is not ours). */
export function pidAlive(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** A temp file older than this is a dead writer's whoever made it (a writer on another host of a shared volume). */
const TEMP_STALE_MS = 10 * 60_000;

/**
 * Removes the temp files (`tempPathFor`) for files named `names` in `dir` that a killed writer left
 * behind: their pid is gone, or they are older than 10 minutes. Ours and live writers' are kept.
 * `lockHeld`: the caller holds the lock every writer of these files takes, so any temp file there is a
 * leftover, whatever pid made it (a pid says nothing about another container's process), ours too.
 */
export async function removeDeadTemps(
  dir: string,
  names: readonly string[],
  options: { lockHeld?: boolean } = {},
): Promise<string[]> {
  let entries: string[];
  try {
    entries = await readdir(dir);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const entry of entries) {
    for (const name of names) {
      const pid = tempWriterPid(entry, name);
      if (pid === null) continue;
      if (!options.lockHeld) {
        if (pid === process.pid) continue;
        const st = await stat(join(dir, entry)).catch(() => null);
        if (!st?.isFile()) continue;
        if (pidAlive(pid) && Date.now() - st.mtimeMs <= TEMP_STALE_MS) continue;
      }
      await unlink(join(dir, entry)).then(
        () => removed.push(entry),
        () => undefined,
      );
    }
  }
  return removed;
}

/** Temp files this process is writing: what an interrupting signal removes (`removeLiveTemps`). */
const liveTemps = new Set<string>();

/**
 * Removes every temp file this process is writing, synchronously: what a signal handler does before
 * the process exits (Node's default is to die at once and leave the temp file behind). The target of
 * an interrupted write keeps its old contents: the rename that commits it either happened or it did not.
 */
export function removeLiveTemps(): void {
  for (const temp of liveTemps) {
    try {
      unlinkSync(temp);
    } catch {
      // renamed into place a moment ago, or never created: nothing of ours is left there
    }
  }
  liveTemps.clear();
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
    // registered before it exists, so a signal during the open removes it too
    liveTemps.add(temp);
    try {
      return new AtomicFile(path, temp, await open(temp, 'wx', mode));
    } catch (e) {
      liveTemps.delete(temp);
      throw environmentError(e, dirname(path), 'written');
    }
  }

  /**
   * fsync, close, rename into place, fsync the folder. Not `durable`: close and rename only, the data
   * left for the kernel to write back. The rename is as atomic (a reader sees the old file or the whole
   * new one), but a crash of the machine before the write-back may leave the new name with missing
   * data: only for files that are proven by content before every use (the GGUF cache).
   */
  async commit(options: { durable?: boolean } = {}): Promise<void> {
    if (this.settled) return;
    this.settled = true;
    const durable = options.durable ?? true;
    try {
      if (durable) {
        await this.handle.sync();
        trace('atomic: fsynced');
      }
      await this.handle.close();
      await rename(this.tempPath, this.path);
      liveTemps.delete(this.tempPath);
      trace('atomic: renamed');
    } catch (e) {
      await this.handle.close().catch(() => undefined);
      await unlink(this.tempPath).catch(() => undefined);
      liveTemps.delete(this.tempPath);
      throw environmentError(e, this.path, 'written');
    }
    if (durable) await fsyncDir(dirname(this.path));
  }

  /** Removes the temp file; the target is untouched. */
  async abort(): Promise<void> {
    if (this.settled) return;
    this.settled = true;
    await this.handle.close().catch(() => undefined);
    await unlink(this.tempPath).catch(() => undefined);
    liveTemps.delete(this.tempPath);
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
