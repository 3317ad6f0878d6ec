/**
 * Reads a file once, front to back, in large blocks: the next block is already being read (in
 * libuv's thread pool) while the caller works on the current one. Every byte passes through
 * `onBlock` exactly once and in order, so a hash of the whole file comes for free with the read that
 * consumes it (convert hashes and converts the weights in one pass).
 */
import { constants, type Stats } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { environmentError } from '../errors.js';

export const SEQUENTIAL_BLOCK_BYTES = 1024 * 1024;

export class SequentialReader {
  private readonly blocks: [Uint8Array, Uint8Array];
  /** the block being consumed: blocks[current].subarray(0, length); the first read fills block 0 */
  private current = 1;
  private length = 0;
  /** read offset inside the current block */
  private cursor = 0;
  /** file offset where the next block starts */
  private nextOffset = 0;
  /** the read of the other block, in flight */
  private ahead: Promise<number> | null = null;
  private eof = false;
  private scratch: Uint8Array = new Uint8Array(0);
  /** bytes handed out by take/skipToEnd so far */
  position = 0;

  private constructor(
    readonly path: string,
    private readonly handle: FileHandle,
    blockSize: number,
    private readonly onBlock: (block: Uint8Array, offset: number) => void,
  ) {
    this.blocks = [new Uint8Array(blockSize), new Uint8Array(blockSize)];
  }

  static async open(
    path: string,
    onBlock: (block: Uint8Array, offset: number) => void = () => undefined,
    blockSize = SEQUENTIAL_BLOCK_BYTES,
  ): Promise<SequentialReader> {
    let handle: FileHandle;
    try {
      handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
    } catch (e) {
      throw environmentError(e, path, 'read');
    }
    const reader = new SequentialReader(path, handle, blockSize, onBlock);
    reader.ahead = reader.readInto(0);
    return reader;
  }

  private async readInto(which: number): Promise<number> {
    const block = this.blocks[which] as Uint8Array;
    let filled = 0;
    try {
      while (filled < block.length) {
        const { bytesRead } = await this.handle.read(
          block,
          filled,
          block.length - filled,
          this.nextOffset + filled,
        );
        if (bytesRead === 0) break;
        filled += bytesRead;
      }
    } catch (e) {
      throw environmentError(e, this.path, 'read');
    }
    return filled;
  }

  /** Moves to the block read ahead and starts reading the one after it. */
  private async advance(): Promise<boolean> {
    if (this.eof || !this.ahead) return false;
    const filled = await this.ahead;
    this.ahead = null;
    this.current ^= 1;
    this.length = filled;
    this.cursor = 0;
    const block = (this.blocks[this.current] as Uint8Array).subarray(0, filled);
    const offset = this.nextOffset;
    this.nextOffset += filled;
    if (filled < (this.blocks[this.current] as Uint8Array).length) this.eof = true;
    else this.ahead = this.readInto(this.current ^ 1);
    if (filled > 0) this.onBlock(block, offset);
    return filled > 0;
  }

  /**
   * The next `n` bytes of the file: a view into the current block when they lie inside it, else a
   * copy. Valid until the next call; shorter than `n` only at the end of the file.
   */
  async take(n: number): Promise<Uint8Array> {
    if (this.cursor + n <= this.length) {
      const view = (this.blocks[this.current] as Uint8Array).subarray(this.cursor, this.cursor + n);
      this.cursor += n;
      this.position += n;
      return view;
    }
    if (this.scratch.length < n) this.scratch = new Uint8Array(n);
    let filled = 0;
    while (filled < n) {
      if (this.cursor === this.length && !(await this.advance())) break;
      const block = this.blocks[this.current] as Uint8Array;
      const part = Math.min(n - filled, this.length - this.cursor);
      this.scratch.set(block.subarray(this.cursor, this.cursor + part), filled);
      this.cursor += part;
      filled += part;
    }
    this.position += filled;
    return this.scratch.subarray(0, filled);
  }

  /** Reads (and so passes to `onBlock`) whatever is left; returns how many bytes that was. */
  async skipToEnd(): Promise<number> {
    let skipped = this.length - this.cursor;
    this.cursor = this.length;
    while (await this.advance()) {
      skipped += this.length;
      this.cursor = this.length;
    }
    this.position += skipped;
    return skipped;
  }

  async stat(): Promise<Stats> {
    try {
      return await this.handle.stat();
    } catch (e) {
      throw environmentError(e, this.path, 'read');
    }
  }

  async close(): Promise<void> {
    // a read still in flight must end before the handle goes
    await this.ahead?.catch(() => 0);
    this.ahead = null;
    await this.handle.close().catch(() => undefined);
  }
}
