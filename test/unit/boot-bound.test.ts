import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { bootId, cacheNames, removeSuperseded } from '../../src/boot-bound.js';
import { tempDir } from '../helpers/tmp.js';

const BOOT = '0123456789abcdef0123456789abcdef';

describe('boot-bound cache entries', () => {
  it('reads this boot as 32 hex digits', () => {
    expect(bootId()).toMatch(/^[0-9a-f]{32}$/u);
  });

  it('a cache entry is tagged with the boot and not fsynced; found under its tag, then untagged', () => {
    expect(cacheNames('a.f32', false, BOOT)).toEqual({
      write: 'a.f32.boot-0123456789abcdef.gguf',
      durable: false,
      lookFor: ['a.f32.boot-0123456789abcdef.gguf', 'a.f32.gguf'],
    });
  });

  it('a durable entry, or any where the boot is unknown, is untagged, fsynced and looked for untagged only', () => {
    const plain = { write: 'a.f32.gguf', durable: true, lookFor: ['a.f32.gguf'] };
    expect(cacheNames('a.f32', true, BOOT)).toEqual(plain);
    expect(cacheNames('a.f32', false, null)).toEqual(plain);
  });

  it('removes the tagged entries of the same stem only, whatever the stem holds', async () => {
    const dir = await tempDir('codi-boot-bound-');
    const stem = 'my.boot-x+(1).abc.f32';
    const names = [
      `${stem}.boot-0123456789abcdef.gguf`,
      `${stem}.boot-fedcba9876543210.gguf`,
      `${stem}.gguf`,
      `my.boot-x+(1).abd.f32.boot-0123456789abcdef.gguf`,
      `${stem}.boot-0123456789abcdef.gguf.tmp-1`,
      `myXboot-x+(1).abc.f32.boot-0123456789abcdef.gguf`,
    ];
    for (const n of names) await writeFile(join(dir, n), 'x');
    await removeSuperseded(dir, stem, `${stem}.boot-fedcba9876543210.gguf`);
    expect((await readdir(dir)).sort()).toEqual(names.filter((_, i) => i !== 0).sort());
    await removeSuperseded(dir, stem, `${stem}.gguf`);
    expect((await readdir(dir)).sort()).toEqual(names.filter((_, i) => i > 1).sort());
  });
});
