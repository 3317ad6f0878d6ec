/**
 * The one way codi-adapter reads a file it has been given: opened non-blocking, refused unless it is
 * a regular file, then read by position. Every reader of adapters, base models and archives goes
 * through here.
 *
 * - O_NONBLOCK: opening a FIFO for reading otherwise waits forever for a writer, and a device may
 *   block; for a regular file the flag changes nothing.
 * - The file's identity (device, inode, size, change and modification times) is taken when it is
 *   opened, so a caller that must prove the file did not change while it was read compares it with
 *   the identity at the end (`sameFile`).
 * - Reads fill what they are asked to fill: a short read is only ever the end of the file.
 *
 * Failures to open, stat or read are environment errors (`PATH_*`, exit 3) about the path; what a
 * file that ends early means is the caller's to say.
 */
import {
  close,
  closeSync,
  constants,
  fstat,
  fstatSync,
  lstat,
  open,
  openSync,
  read,
  readSync,
  type Stats,
} from 'node:fs';
import { CodiError, environmentError } from './errors.js';

/** What says a file is still the one that was opened, unchanged. */
export interface FileIdentity {
  readonly dev: number;
  readonly ino: number;
  readonly size: number;
  readonly mtimeMs: number;
  readonly ctimeMs: number;
}

export interface OpenOptions {
  /** refuse a symlink in the last component (O_NOFOLLOW): for files that must be what is really there */
  noFollow?: boolean;
}

// absent on Windows, where a FIFO cannot be opened by path anyway
const NONBLOCK = (constants.O_NONBLOCK as number | undefined) ?? 0;

function flagsFor(options: OpenOptions): number {
  return constants.O_RDONLY | NONBLOCK | (options.noFollow ? constants.O_NOFOLLOW : 0);
}

export function identityOfStats(stats: Stats): FileIdentity {
  return {
    dev: stats.dev,
    ino: stats.ino,
    size: stats.size,
    mtimeMs: stats.mtimeMs,
    ctimeMs: stats.ctimeMs,
  };
}

/** Same inode, size and times: nothing replaced or wrote to the file in between. */
export function sameFile(a: FileIdentity, b: FileIdentity): boolean {
  return (
    a.dev === b.dev &&
    a.ino === b.ino &&
    a.size === b.size &&
    a.ctimeMs === b.ctimeMs &&
    a.mtimeMs === b.mtimeMs
  );
}

/** The identity of what is at `path` now, without following a symlink; null if nothing is there. */
export function identityAt(path: string): Promise<FileIdentity | null> {
  return new Promise((resolve) => {
    lstat(path, (err, stats) => {
      resolve(err ? null : identityOfStats(stats));
    });
  });
}

function notRegular(path: string): CodiError {
  return new CodiError('PATH_INACCESSIBLE', `${path} is not a regular file`, {
    file: path,
  });
}

/** A regular file open for reading. Close it (`close` or `closeSync`) when done. */
export class RegularFile {
  private closed = false;

  private constructor(
    readonly path: string,
    readonly fd: number,
    /** the identity when it was opened */
    readonly identity: FileIdentity,
  ) {}

  /** its size when it was opened */
  get size(): number {
    return this.identity.size;
  }

  static async open(path: string, options: OpenOptions = {}): Promise<RegularFile> {
    const fd = await new Promise<number>((resolve, reject) => {
      open(path, flagsFor(options), (err, fd) => {
        if (err) reject(environmentError(err, path, 'read'));
        else resolve(fd);
      });
    });
    const stats = await new Promise<Stats>((resolve, reject) => {
      fstat(fd, (err, stats) => {
        if (err) reject(environmentError(err, path, 'read'));
        else resolve(stats);
      });
    }).catch((e: unknown) => {
      closeSync(fd);
      throw e;
    });
    if (!stats.isFile()) {
      closeSync(fd);
      throw notRegular(path);
    }
    return new RegularFile(path, fd, identityOfStats(stats));
  }

  /** As `open`, blocking: for scanning many small reads, where a thread-pool hop costs more. */
  static openSync(path: string, options: OpenOptions = {}): RegularFile {
    let fd: number;
    try {
      fd = openSync(path, flagsFor(options));
    } catch (e) {
      throw environmentError(e, path, 'read');
    }
    let stats: Stats;
    try {
      stats = fstatSync(fd);
    } catch (e) {
      closeSync(fd);
      throw environmentError(e, path, 'read');
    }
    if (!stats.isFile()) {
      closeSync(fd);
      throw notRegular(path);
    }
    return new RegularFile(path, fd, identityOfStats(stats));
  }

  /**
   * Fills `into` from `position` until it is full or the file ends; returns how many bytes it read
   * (fewer than `into.length` only at the end of the file).
   */
  readSync(into: Uint8Array, position: number): number {
    this.checkOpen();
    let done = 0;
    while (done < into.length) {
      let n: number;
      try {
        n = readSync(this.fd, into, done, into.length - done, position + done);
      } catch (e) {
        throw environmentError(e, this.path, 'read');
      }
      if (n === 0) break;
      done += n;
    }
    return done;
  }

  /** As `readSync`, in libuv's thread pool. */
  async read(into: Uint8Array, position: number): Promise<number> {
    this.checkOpen();
    let done = 0;
    while (done < into.length) {
      const n = await new Promise<number>((resolve, reject) => {
        read(this.fd, into, done, into.length - done, position + done, (err, bytesRead) => {
          if (err) reject(environmentError(err, this.path, 'read'));
          else resolve(bytesRead);
        });
      });
      if (n === 0) break;
      done += n;
    }
    return done;
  }

  /** Its descriptor number may belong to another file once it is closed. */
  private checkOpen(): void {
    if (this.closed) throw new CodiError('INTERNAL', `${this.path} was read after it was closed`);
  }

  /** Up to `length` bytes from `position` in a new array: fewer only at the end of the file. */
  async readBytes(position: number, length: number): Promise<Uint8Array> {
    const bytes = new Uint8Array(length);
    const n = await this.read(bytes, position);
    return n === length ? bytes : bytes.subarray(0, n);
  }

  /** As `readBytes`, blocking. */
  readBytesSync(position: number, length: number): Uint8Array {
    const bytes = new Uint8Array(length);
    const n = this.readSync(bytes, position);
    return n === length ? bytes : bytes.subarray(0, n);
  }

  /** The file's identity now (it may have been written to, or replaced under the same name since). */
  currentIdentity(): Promise<FileIdentity> {
    return new Promise((resolve, reject) => {
      fstat(this.fd, (err, stats) => {
        if (err) reject(environmentError(err, this.path, 'read'));
        else resolve(identityOfStats(stats));
      });
    });
  }

  /** Closes the file; a failed close of a file only read changes nothing for the caller. */
  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    return new Promise((resolve) => {
      close(this.fd, () => {
        resolve();
      });
    });
  }

  closeSync(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      closeSync(this.fd);
    } catch {
      // as in close
    }
  }
}

/** Opens `path`, runs `action`, and closes the file whatever happens. */
export async function withRegularFile<T>(
  path: string,
  action: (file: RegularFile) => Promise<T>,
  options: OpenOptions = {},
): Promise<T> {
  const file = await RegularFile.open(path, options);
  try {
    return await action(file);
  } finally {
    await file.close();
  }
}

/** The whole of a (small) regular file. */
export function readRegularFile(path: string, options: OpenOptions = {}): Promise<Uint8Array> {
  return withRegularFile(path, (file) => file.readBytes(0, file.size), options);
}
