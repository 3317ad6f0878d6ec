/**
 * Streamed sha256 of files. A file is never held in memory: two fixed buffers alternate, and the next
 * block is already being read (in libuv's thread pool) while the current one is hashed, so disk and
 * CPU work overlap. That is what brings Node within reach of `openssl dgst`.
 */
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { environmentError } from './errors.js';

export const HASH_BLOCK_SIZE = 4 * 1024 * 1024;

export interface HashProgress {
  file: string;
  bytesDone: number;
  bytesTotal: number;
}

export async function sha256File(
  path: string,
  onProgress?: (done: number, total: number) => void,
  blockSize = HASH_BLOCK_SIZE,
): Promise<string> {
  let handle;
  try {
    handle = await open(path, 'r');
  } catch (e) {
    throw environmentError(e, path, 'read');
  }
  try {
    const total = (await handle.stat()).size;
    const hash = createHash('sha256');
    const buffers: Buffer[] = [Buffer.allocUnsafe(blockSize), Buffer.allocUnsafe(blockSize)];
    let position = 0;
    let which = 0;
    let pending = handle.read(buffers[0] as Buffer, 0, blockSize, 0);
    for (;;) {
      const { bytesRead } = await pending;
      if (bytesRead === 0) break;
      const current = buffers[which] as Buffer;
      position += bytesRead;
      which ^= 1;
      // start the next read before hashing this block
      pending = handle.read(buffers[which] as Buffer, 0, blockSize, position);
      hash.update(bytesRead === blockSize ? current : current.subarray(0, bytesRead));
      onProgress?.(position, total);
    }
    return hash.digest('hex');
  } catch (e) {
    throw environmentError(e, path, 'read');
  } finally {
    await handle.close();
  }
}

/** sha256 of an in-memory buffer (small files such as adapter_config.json). */
export function sha256Bytes(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}
