import { createHash, randomBytes } from 'node:crypto';
import { symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { SequentialReader } from '../../src/formats/sequential-reader.js';
import { tempDir } from '../helpers/tmp.js';

describe('SequentialReader', () => {
  it('hands out the file in order, across block boundaries, and passes every byte to onBlock once', async () => {
    const dir = await tempDir();
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 0, max: 5000 }),
        fc.integer({ min: 1, max: 700 }),
        fc.array(fc.integer({ min: 0, max: 1500 }), { maxLength: 12 }),
        async (size, blockSize, takes) => {
          const data = randomBytes(size);
          const path = join(dir, 'f.bin');
          await writeFile(path, data);
          const hash = createHash('sha256');
          let seen = 0;
          const reader = await SequentialReader.open(
            path,
            (block, offset) => {
              expect(offset).toBe(seen);
              seen += block.length;
              hash.update(block);
            },
            blockSize,
          );
          try {
            let at = 0;
            for (const n of takes) {
              const got = await reader.take(n);
              const want = data.subarray(at, Math.min(size, at + n));
              expect(Buffer.from(got).equals(want)).toBe(true);
              at += want.length;
              expect(reader.position).toBe(at);
            }
            const rest = await reader.skipToEnd();
            expect(rest).toBe(size - at);
            expect(reader.position).toBe(size);
            expect(seen).toBe(size);
            expect(hash.digest('hex')).toBe(createHash('sha256').update(data).digest('hex'));
          } finally {
            await reader.close();
          }
        },
      ),
      { numRuns: 60 },
    );
  });

  it('refuses a symlink and a missing file with an environment error (exit 3)', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'real'), 'data');
    await symlink(join(dir, 'real'), join(dir, 'link'));
    await expect(SequentialReader.open(join(dir, 'link'))).rejects.toMatchObject({ exitCode: 3 });
    await expect(SequentialReader.open('/no/such/file')).rejects.toMatchObject({ exitCode: 3 });
  });
});
