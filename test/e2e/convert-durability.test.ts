/**
 * What convert makes durable: a GGUF written to --out (or by mount --base) is fsynced before it is
 * renamed into place; a cached one is not: every use proves it by content, so one whose data a crash
 * lost is converted again, never served.
 */
import { cp, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { MountResult } from '../../src/catalog/mount.js';
import { makeVolume } from '../helpers/catalog.js';
import { runCli } from '../helpers/cli.js';
import { tempDir } from '../helpers/tmp.js';

const EXAMPLE = 'examples/adapters/tiny-qwen2-lora';
const BASE = 'examples/base/tiny-qwen2.gguf';
const TRACE = { CODI_TRACE: '1' };

async function adapterCopy(): Promise<{ dir: string; adapter: string }> {
  const dir = await tempDir('codi-convert-durable-');
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

  it('the cache entry is renamed into place without an fsync', async () => {
    const { dir, adapter } = await adapterCopy();
    const r = await runCli(['convert', adapter, '--base', BASE, '--json'], { env: TRACE });
    expect(r.code, r.stderr).toBe(0);
    expect(outputOf(r.stdout)).toBe(join(dir, '.gguf-cache', outputOf(r.stdout).split('/').pop() ?? ''));
    expect(r.stderr).toContain('atomic: renamed');
    expect(r.stderr).not.toContain('atomic: fsynced');
  });

  it('an entry whose data a crash lost (zeros) is not believed: converted again in its place', async () => {
    const { adapter } = await adapterCopy();
    const first = await runCli(['convert', adapter, '--base', BASE, '--json']);
    const ours = outputOf(first.stdout);
    const bytes = await readFile(ours);
    await writeFile(ours, new Uint8Array(bytes.length));
    const again = await runCli(['convert', adapter, '--base', BASE, '--json']);
    expect(again.code, again.stderr).toBe(0);
    const result = JSON.parse(again.stdout) as {
      cached: boolean;
      output: string;
      warnings: { code: string }[];
    };
    expect(result).toMatchObject({ cached: false, output: ours });
    expect(result.warnings.map((w) => w.code)).toContain('GGUF_CACHE_TAMPERED');
    expect(await readFile(ours)).toEqual(bytes);
  });

  it('mount --base writes a durable entry, which convert then uses', async () => {
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
