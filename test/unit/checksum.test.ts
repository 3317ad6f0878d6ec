import { createHash } from 'node:crypto';
import { realpath, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  adoptEarly,
  beginEarlyHash,
  sha256Bytes,
  sha256File,
  SMALL_FILE_BYTES,
  startSha256,
} from '../../src/checksum.js';
import { CodiError } from '../../src/errors.js';
import { tempDir } from '../helpers/tmp.js';

describe('sha256File', () => {
  it.each([0, 1, 1000, 4096, 4097, 3 * 4096 + 5])('hashes %i bytes across block boundaries', async (size) => {
    const dir = await tempDir();
    const data = Buffer.alloc(size);
    for (let i = 0; i < size; i++) data[i] = (i * 31 + 7) & 0xff;
    const file = join(dir, `f${size}`);
    await writeFile(file, data);
    const progress: number[] = [];
    const got = await sha256File(file, (done) => progress.push(done), 4096);
    expect(got).toBe(createHash('sha256').update(data).digest('hex'));
    if (size > 0) expect(progress.at(-1)).toBe(size);
    expect([...progress].sort((a, b) => a - b)).toEqual(progress);
  });

  it('turns a missing file into an environment error', async () => {
    const err = await sha256File('/nonexistent/file').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CodiError);
    expect((err as CodiError).exitCode).toBe(3);
    expect((err as CodiError).code).toBe('PATH_MISSING');
  });
});

describe('startSha256 (worker thread)', () => {
  it.each([0, 1, 4097, 3 * 4096 + 5])('hashes %i bytes like sha256File', async (size) => {
    const dir = await tempDir();
    const data = Buffer.alloc(size, 7);
    const file = join(dir, `w${size}`);
    await writeFile(file, data);
    const progress: number[] = [];
    const got = await startSha256(file, (done) => progress.push(done), 4096).result;
    expect(got).toBe(createHash('sha256').update(data).digest('hex'));
    if (size > 0) expect(progress.at(-1)).toBe(size);
  });

  it('reports a missing file as an environment error', async () => {
    const err = await startSha256('/nonexistent/file').result.catch((e: unknown) => e);
    expect((err as CodiError).code).toBe('PATH_MISSING');
  });

  it('can be cancelled', async () => {
    const dir = await tempDir();
    const file = join(dir, 'big');
    await writeFile(file, Buffer.alloc(8 * 1024 * 1024));
    const pending = startSha256(file, undefined, 4096);
    pending.cancel();
    await expect(pending.result).rejects.toBeDefined();
  });
});

describe('beginEarlyHash / adoptEarly', () => {
  it('hashes a large regular file at once; verification adopts it for the same file', async () => {
    const dir = await realpath(await tempDir());
    const data = Buffer.alloc(SMALL_FILE_BYTES + 12345, 7);
    await writeFile(join(dir, 'big.bin'), data);
    await writeFile(join(dir, 'small.bin'), 'x');
    await symlink(join(dir, 'big.bin'), join(dir, 'link.bin'));
    expect(beginEarlyHash(dir, 'small.bin')).toBeNull();
    expect(beginEarlyHash(dir, 'link.bin')).toBeNull();
    expect(beginEarlyHash(dir, 'missing.bin')).toBeNull();
    const early = beginEarlyHash(dir, 'big.bin');
    expect(early).toMatchObject({ path: join(dir, 'big.bin'), size: data.length });
    const adopt = adoptEarly(early);
    const pending = adopt(join(dir, 'big.bin'), data.length);
    expect(pending === early?.hash).toBe(true);
    expect(await pending.result).toBe(sha256Bytes(data));
    // another file: a hash of its own, and the early one is cancelled
    const other = beginEarlyHash(dir, 'big.bin');
    const fresh = adoptEarly(other)(join(dir, 'small.bin'), 1);
    expect(await fresh.result).toBe(sha256Bytes(Buffer.from('x')));
    await expect(other?.hash.result).rejects.toMatchObject({ code: 'HASH_CANCELLED' });
  });
});
