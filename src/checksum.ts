/**
 * Streamed sha256 of files, in a worker thread. A file is never held in memory: two fixed buffers
 * alternate, and the next block is already being read (in libuv's thread pool) while the current one
 * is hashed, so disk and CPU work overlap; that is what brings Node within reach of `openssl dgst`.
 * The worker lets the main thread parse and validate everything else meanwhile.
 */
import { createHash } from 'node:crypto';
import { lstatSync, realpathSync, type Stats } from 'node:fs';
import { join } from 'node:path';
import { RegularFile } from './byte-source.js';
import { CodiError, environmentError } from './errors.js';
import { trace } from './trace.js';

export const HASH_BLOCK_SIZE = 2 * 1024 * 1024;

export type HashProgressCallback = (done: number, total: number) => void;

/** Files up to this size are hashed in one read on the calling thread: a worker would cost more. */
export const SMALL_FILE_BYTES = 1024 * 1024;

/** sha256 of a file: small files read at once, large ones streamed in a worker thread. */
export async function sha256File(
  path: string,
  onProgress?: HashProgressCallback,
  blockSize = HASH_BLOCK_SIZE,
): Promise<string> {
  const file = await RegularFile.open(path, NO_FOLLOW);
  if (file.size > SMALL_FILE_BYTES) return hashInWorker(file, onProgress, blockSize).result;
  let data: Uint8Array;
  try {
    data = await file.readBytes(0, file.size);
  } finally {
    await file.close();
  }
  onProgress?.(data.length, data.length);
  return sha256Bytes(data);
}

/**
 * Never through a symlink: adapter files are refused as symlinks, and a hash begun before that check
 * (verify starts early) must not read what one points to.
 */
const NO_FOLLOW = { noFollow: true } as const;

/** sha256 of an in-memory buffer (small files such as adapter_config.json). */
export function sha256Bytes(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/** A hash under way in a worker thread. */
export interface PendingHash {
  readonly result: Promise<string>;
  /** stops the worker if the result is no longer wanted */
  cancel(): void;
}

type WorkerMessage =
  | { kind: 'progress'; done: number; total: number }
  | { kind: 'done'; hex: string }
  | { kind: 'error'; errno: string | undefined; message: string };

/**
 * The worker's program. It is passed as source text (an `eval` worker), so it may use nothing from
 * this module's scope; it is the same double-buffered loop described above, over a file the calling
 * thread opened (a descriptor is the process's, whichever thread uses it) and closes.
 */
function hashWorkerMain(): void {
  // builtins by name, not `require`: a bundler rewrites `require` calls, even in code kept as text
  const threads = process.getBuiltinModule('node:worker_threads');
  const { createHash: hashOf } = process.getBuiltinModule('node:crypto');
  const fs = process.getBuiltinModule('node:fs');
  const { fd, total, blockSize } = threads.workerData as { fd: number; total: number; blockSize: number };
  const post = (m: unknown): void => threads.parentPort?.postMessage(m);
  const hash = hashOf('sha256');
  // buffers no bigger than the file (plus one byte to see the end in one read)
  const size = Math.max(1, Math.min(blockSize, total + 1));
  const buffers = [Buffer.allocUnsafe(size), Buffer.allocUnsafe(size)];
  let position = 0;
  let which = 0;
  let lastReport = 0;
  const fail = (err: NodeJS.ErrnoException): void => {
    post({ kind: 'error', errno: err.code, message: err.message });
  };
  const step = (bytesRead: number): void => {
    if (bytesRead === 0) {
      post({ kind: 'done', hex: hash.digest('hex') });
      return;
    }
    const current = buffers[which] as Buffer;
    position += bytesRead;
    which ^= 1;
    const next = buffers[which] as Buffer;
    // the next read is in flight in the thread pool while this block is hashed
    fs.read(fd, next, 0, size, position, (err, n) => {
      if (err) fail(err);
      else step(n);
    });
    hash.update(bytesRead === size ? current : current.subarray(0, bytesRead));
    if (position - lastReport >= 64 * size || position === total) {
      lastReport = position;
      post({ kind: 'progress', done: position, total });
    }
  };
  fs.read(fd, buffers[0] as Buffer, 0, size, 0, (err, n) => {
    if (err) fail(err);
    else step(n);
  });
}

/**
 * Starts hashing `path`: in a worker thread when it is large, inline when it is small (starting a
 * worker takes longer than hashing a small adapter). `size` is the file's size as known.
 */
export function beginSha256(path: string, size: number, onProgress?: HashProgressCallback): PendingHash {
  if (size > SMALL_FILE_BYTES) return startSha256(path, onProgress);
  const result = sha256File(path, onProgress);
  result.catch(() => undefined);
  return { result, cancel: () => undefined };
}

/** Starts hashing `path` in a worker thread. */
export function startSha256(
  path: string,
  onProgress?: HashProgressCallback,
  blockSize = HASH_BLOCK_SIZE,
): PendingHash {
  let file: RegularFile;
  try {
    file = RegularFile.openSync(path, NO_FOLLOW);
  } catch (e) {
    const result = Promise.reject(e instanceof Error ? e : new Error(String(e)));
    result.catch(() => undefined);
    return { result, cancel: () => undefined };
  }
  return hashInWorker(file, onProgress, blockSize);
}

/** Hashes `file` in a worker thread, and closes it once the worker has stopped. */
function hashInWorker(
  file: RegularFile,
  onProgress: HashProgressCallback | undefined,
  blockSize: number,
): PendingHash {
  const path = file.path;
  // loaded on first use: most commands hash small files inline, and convert hashes in its own pass
  const { Worker } = process.getBuiltinModule('node:worker_threads');
  const worker = new Worker(`(${hashWorkerMain.toString()})()`, {
    eval: true,
    workerData: { fd: file.fd, total: file.size, blockSize },
    // the worker holds two buffers and a hash; a small heap keeps the process's peak RSS down
    resourceLimits: { maxOldGenerationSizeMb: 16, maxYoungGenerationSizeMb: 2 },
  });
  let settled = false;
  let rejectResult: (e: Error) => void = () => undefined;
  const result = new Promise<string>((resolve, reject) => {
    rejectResult = reject;
    worker.on('message', (m: WorkerMessage) => {
      if (m.kind === 'progress') onProgress?.(m.done, m.total);
      else if (m.kind === 'done') {
        trace(`sha256: ${path} done`);
        settled = true;
        resolve(m.hex);
        void worker.terminate();
      } else {
        settled = true;
        reject(environmentError(Object.assign(new Error(m.message), { code: m.errno }), path, 'read'));
        void worker.terminate();
      }
    });
    worker.on('error', (e) => {
      settled = true;
      reject(new CodiError('INTERNAL', `hash worker failed: ${e.message}`, { cause: e }));
    });
    worker.on('exit', (code) => {
      // only now: no read of the worker's is under way any more
      file.closeSync();
      if (!settled) reject(new CodiError('INTERNAL', `hash worker exited (${code}) before finishing`));
    });
  });
  return {
    result,
    cancel: () => {
      if (settled) return;
      settled = true;
      result.catch(() => undefined);
      rejectResult(new CodiError('HASH_CANCELLED', `hashing ${path} was cancelled`));
      void worker.terminate();
    },
  };
}

/** A hash begun before the adapter is inspected: verify starts on the weights at once. */
export interface EarlyHash {
  readonly path: string;
  readonly size: number;
  readonly hash: PendingHash;
}

/**
 * Starts hashing `file` in `dir` in a worker thread, now, if it is a large regular file (not a
 * symlink); verification adopts the result when it reaches that file (`adoptEarly`). The worker boots
 * and hashes on the other core while the caller loads and inspects everything else.
 */
export function beginEarlyHash(dir: string, file: string): EarlyHash | null {
  let path: string;
  let stats: Stats;
  try {
    // as verification names it (scanLayout resolves the folder's real path)
    path = join(realpathSync(dir), file);
    stats = lstatSync(path);
  } catch {
    return null;
  }
  if (!stats.isFile() || stats.size <= SMALL_FILE_BYTES) return null;
  return { path, size: stats.size, hash: startSha256(path) };
}

/**
 * A `weightsHash` for verification that uses `early` when it is for the same file, and starts a
 * hash otherwise (and then cancels `early`, whose file turned out not to be the weights).
 */
export function adoptEarly(
  early: EarlyHash | null,
): (path: string, size: number, onProgress?: HashProgressCallback) => PendingHash {
  return (path, size, onProgress) => {
    if (early && early.path === path && early.size === size) return early.hash;
    early?.hash.cancel();
    return beginSha256(path, size, onProgress);
  };
}
