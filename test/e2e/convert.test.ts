/** `codi-adapter convert` as a user runs it: what it does when the adapter changes under it. */
import { cp, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli, startCli } from '../helpers/cli.js';
import { tempDir } from '../helpers/tmp.js';

const BASE = 'examples/base/tiny-qwen2.gguf';

describe('convert (built CLI)', () => {
  it.each([
    ['a byte of the weights flipped (checksum no longer matches)', 'flip'],
    ['the weights rewritten with the same bytes (it may have been changed and back)', 'rewrite'],
  ])('refuses to commit when the weights change between hashing and converting: %s', async (_name, how) => {
    const dir = await tempDir();
    const adapter = join(dir, 'tiny-qwen2-lora');
    await cp('examples/adapters/tiny-qwen2-lora', adapter, { recursive: true });
    const out = join(dir, 'out.gguf');
    const run = startCli(['convert', adapter, '--base', BASE, '--out', out, '--json'], {
      pauseAt: ['convert:before-pass'],
    });
    expect(await run.reached('convert:before-pass')).toBe(true);
    const weights = join(adapter, 'adapter_model.safetensors');
    const bytes = await readFile(weights);
    if (how === 'flip') bytes[bytes.length - 1] = (bytes[bytes.length - 1] ?? 0) ^ 1;
    await writeFile(weights, bytes);
    run.resume();
    const r = await run.done;
    expect(r.code).toBe(1);
    expect(r.json).toMatchObject({ ok: false, error: { code: 'SOURCE_CHANGED' } });
    // nothing written: no output, no temp file
    expect(await readdir(dir)).toEqual(['tiny-qwen2-lora']);
  });

  it('converts the same adapter when nothing changes while it waits', async () => {
    const dir = await tempDir();
    const out = join(dir, 'out.gguf');
    const run = startCli(
      ['convert', 'examples/adapters/tiny-qwen2-lora', '--base', BASE, '--out', out, '--json'],
      { pauseAt: ['convert:before-pass'] },
    );
    expect(await run.reached('convert:before-pass')).toBe(true);
    run.resume();
    const r = await run.done;
    expect(r.code).toBe(0);
    expect(r.json).toMatchObject({ cached: false, tensors: 28, output: out });
    // and the GGUF verifies as what it claims (verify --base of the same adapter passes)
    expect((await runCli(['verify', 'examples/adapters/tiny-qwen2-lora', '--base', BASE])).code).toBe(0);
  });
});
