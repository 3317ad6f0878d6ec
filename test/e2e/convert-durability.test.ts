/**
 * What convert makes durable: a GGUF written to --out is fsynced before it is renamed into place; a
 * cached one is not, and is bound to the boot of the machine that wrote it, so that one whose data a
 * crash may have lost is never served: after a reboot it is converted again, and the files of earlier
 * boots go.
 */
import { cp, readdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { bootId } from '../../src/boot-bound.js';
import type { MountResult } from '../../src/catalog/mount.js';
import { makeVolume } from '../helpers/catalog.js';
import { runCli } from '../helpers/cli.js';
import { tempDir } from '../helpers/tmp.js';

const EXAMPLE = 'examples/adapters/tiny-qwen2-lora';
const BASE = 'examples/base/tiny-qwen2.gguf';
const TRACE = { CODI_TRACE: '1' };

async function adapterCopy(): Promise<{ dir: string; adapter: string }> {
  const dir = await tempDir('codi-convert-boot-');
  const adapter = join(dir, 'tiny-qwen2-lora');
  await cp(EXAMPLE, adapter, { recursive: true });
  return { dir, adapter };
}

function outputOf(stdout: string): string {
  return (JSON.parse(stdout) as { output: string; cached: boolean }).output;
}

describe('convert: durability', () => {
  it('--out is fsynced before the rename', async () => {
    const { dir, adapter } = await adapterCopy();
    const r = await runCli(['convert', adapter, '--base', BASE, '--out', join(dir, 'a.gguf'), '--json'], {
      env: TRACE,
    });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/atomic: fsynced[\s\S]*atomic: renamed/u);
  });

  it('the cache holds a file tagged with this boot, renamed into place without an fsync', async () => {
    const boot = bootId();
    expect(boot).toMatch(/^[0-9a-f]{32}$/u);
    const { dir, adapter } = await adapterCopy();
    const r = await runCli(['convert', adapter, '--base', BASE, '--json'], { env: TRACE });
    expect(r.code, r.stderr).toBe(0);
    expect(outputOf(r.stdout)).toBe(join(dir, '.gguf-cache', outputOf(r.stdout).split('/').pop() ?? ''));
    expect(outputOf(r.stdout)).toMatch(new RegExp(`\\.f32\\.boot-${boot?.slice(0, 16) ?? ''}\\.gguf$`, 'u'));
    expect(r.stderr).toContain('atomic: renamed');
    expect(r.stderr).not.toContain('atomic: fsynced');
  });

  it("another boot's file is not believed: converted again, and the earlier boot's file removed", async () => {
    const { dir, adapter } = await adapterCopy();
    const first = await runCli(['convert', adapter, '--base', BASE, '--json']);
    const ours = outputOf(first.stdout);
    const bytes = await readFile(ours);
    // the same conversion as an earlier boot left it, its data (as a crash may leave it) zeros
    const earlier = ours.replace(/\.boot-[0-9a-f]{16}\.gguf$/u, '.boot-0123456789abcdef.gguf');
    await rename(ours, earlier);
    await writeFile(earlier, new Uint8Array(bytes.length));
    const again = await runCli(['convert', adapter, '--base', BASE, '--json']);
    expect(again.code, again.stderr).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({ cached: false, output: ours });
    expect(await readFile(ours)).toEqual(bytes);
    const left = await readdir(join(dir, '.gguf-cache'));
    expect(left.filter((e) => e.endsWith('.gguf'))).toEqual([ours.split('/').pop()]);
  });

  it('a durable (untagged) file of the same conversion is believed', async () => {
    const { dir, adapter } = await adapterCopy();
    const first = await runCli(['convert', adapter, '--base', BASE, '--json']);
    const ours = outputOf(first.stdout);
    const durable = ours.replace(/\.boot-[0-9a-f]{16}\.gguf$/u, '.gguf');
    await rename(ours, durable);
    const again = await runCli(['convert', adapter, '--base', BASE, '--json']);
    expect(JSON.parse(again.stdout)).toMatchObject({ cached: true, output: durable });
    expect(await readdir(join(dir, '.gguf-cache'))).toContain(durable.split('/').pop());
  });

  it('mount --base writes a durable entry, found by convert under any boot', async () => {
    const { root } = await makeVolume();
    const mounted = await runCli(['mount', EXAMPLE, '--root', root, '--base', BASE, '--json'], {
      env: TRACE,
    });
    expect(mounted.code, mounted.stderr).toBe(0);
    const gguf = (mounted.json as MountResult).gguf?.path ?? '';
    expect(gguf).toMatch(/\.f32\.gguf$/u);
    expect(mounted.stderr).toMatch(/atomic: fsynced[\s\S]*atomic: renamed/u);
    const adapter = join(root, 'adapters', 'tiny-qwen2-lora');
    const again = await runCli(['convert', adapter, '--base', BASE, '--json']);
    expect(again.code, again.stderr).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({ cached: true, output: gguf });
  });
});
