import { execFileSync } from 'node:child_process';
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CodiError } from '../../src/errors.js';
import { isValidAdapterId, scanLayout, scanPlainLayoutSync } from '../../src/layout.js';
import { validateAgainst } from '../../src/schemas.js';
import { tempDir } from '../helpers/tmp.js';

async function adapterDir(files: string[]): Promise<string> {
  const dir = join(await tempDir(), 'a');
  await mkdir(dir);
  for (const f of files) await writeFile(join(dir, f), '{}');
  return dir;
}

const codes = (l: Awaited<ReturnType<typeof scanLayout>>): string[] => l.findings.map((f) => f.code);

describe('scanLayout', () => {
  it('a plain folder scanned in blocking calls gives what scanLayout gives; anything else is left to scanLayout', async () => {
    for (const files of [
      ['adapter_config.json', 'metadata.json', 'adapter_model.safetensors', 'README.md'],
      ['adapter_model.bin', 'README.md'],
    ]) {
      const dir = await adapterDir(files);
      expect(scanPlainLayoutSync(dir)).toEqual(await scanLayout(dir));
    }
    const withFolder = await adapterDir(['adapter_config.json']);
    await mkdir(join(withFolder, 'checkpoint-1'));
    expect(scanPlainLayoutSync(withFolder)).toBeNull();
    const withLink = await adapterDir(['adapter_config.json']);
    await symlink('adapter_config.json', join(withLink, 'metadata.json'));
    expect(scanPlainLayoutSync(withLink)).toBeNull();
    expect(scanPlainLayoutSync(join(withLink, 'missing'))).toBeNull();
  });

  it('lists regular files and picks the weights file, safetensors first', async () => {
    const dir = await adapterDir([
      'adapter_config.json',
      'metadata.json',
      'adapter_model.safetensors',
      'adapter_model.bin',
    ]);
    const l = await scanLayout(dir);
    expect(l.findings).toEqual([]);
    expect(l.weightsFile).toBe('adapter_model.safetensors');
    expect(l.files.map((f) => f.name)).toEqual([
      'adapter_config.json',
      'adapter_model.bin',
      'adapter_model.safetensors',
      'metadata.json',
    ]);
  });

  it('reports each missing required file', async () => {
    const l = await scanLayout(await adapterDir(['README.md']));
    expect(l.findings.map((f) => [f.code, f.file])).toEqual([
      ['LAYOUT_MISSING', 'adapter_config.json'],
      ['LAYOUT_MISSING', 'metadata.json'],
      ['LAYOUT_MISSING', 'adapter_model.safetensors'],
    ]);
    expect(l.weightsFile).toBeNull();
  });

  it('refuses symlinks (naming the target) and special files, and never follows them', async () => {
    const dir = await adapterDir(['adapter_config.json', 'metadata.json', 'adapter_model.safetensors']);
    await symlink('/etc/passwd', join(dir, 'passwd'));
    await mkdir(join(dir, 'sub'));
    await symlink('/', join(dir, 'sub', 'root'));
    execFileSync('mkfifo', [join(dir, 'pipe')]);
    const l = await scanLayout(dir);
    expect(codes(l).sort()).toEqual([
      'LAYOUT_SPECIAL_FILE',
      'LAYOUT_SUBDIRECTORY',
      'LAYOUT_SYMLINK',
      'LAYOUT_SYMLINK',
    ]);
    expect(l.findings.find((f) => f.file === 'passwd')?.message).toContain('/etc/passwd');
    expect(l.files.map((f) => f.name)).not.toContain('passwd');
  });

  it('a required file that is a directory is not a file', async () => {
    const dir = await adapterDir(['adapter_config.json', 'adapter_model.safetensors']);
    await mkdir(join(dir, 'metadata.json'));
    expect(codes(await scanLayout(dir))).toEqual(['LAYOUT_NOT_FILE']);
  });

  it('stops at a nesting depth', async () => {
    const dir = await adapterDir(['adapter_config.json', 'metadata.json', 'adapter_model.safetensors']);
    await mkdir(join(dir, ...Array.from({ length: 10 }, (_, i) => `d${i}`)), { recursive: true });
    expect(codes(await scanLayout(dir))).toEqual(['LAYOUT_SUBDIRECTORY', 'LAYOUT_TOO_DEEP']);
  });

  it('a missing directory or a file is an environment error (exit 3) with a hint', async () => {
    const missing = await scanLayout('/nonexistent/adapter').catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(CodiError);
    expect((missing as CodiError).exitCode).toBe(3);
    expect((missing as CodiError).hint).toMatch(/adapter directory/);
    const dir = await adapterDir(['x']);
    const file = await scanLayout(join(dir, 'x')).catch((e: unknown) => e);
    expect((file as CodiError).code).toBe('PATH_NOT_DIRECTORY');
  });

  it('resolves a symlink to the adapter directory itself (e.g. adapters/active)', async () => {
    const dir = await adapterDir(['adapter_config.json', 'metadata.json', 'adapter_model.safetensors']);
    const link = join(dir, '..', 'active');
    await symlink('a', link);
    const l = await scanLayout(link);
    expect(l.dir).toBe(dir);
    expect(l.findings).toEqual([]);
  });
});

describe('adapter ids', () => {
  it.each(['qwen15b-lora-v0.1', 'a', '0', 'x'.repeat(128), 'a.b_c-d'])('accepts %s', (id) => {
    expect(isValidAdapterId(id)).toBe(true);
  });
  it.each(['', '.', '..', '.hidden', 'Upper', 'a/b', 'a b', 'x'.repeat(129), '-a', 'a..b', 'a..', '0...1'])(
    'refuses %j',
    (id) => {
      expect(isValidAdapterId(id)).toBe(false);
    },
  );

  it('is the rule of the schemas too: metadata.json id, llm_assist adapter ids and default_adapter', () => {
    for (const id of ['qwen15b-lora-v0.1', 'a.b', 'a..b', 'x..', '..', '.', 'Upper', 'x'.repeat(129)]) {
      const ok = isValidAdapterId(id);
      const meta = validateAgainst('metadata', { id }).filter((v) => v.pointer === '/id');
      expect(meta.length === 0, `metadata.json id ${id}`).toBe(ok);
      const rules = validateAgainst('llm-assist', { default_adapter: id, adapters: { [id]: null } });
      const about = new Set(
        rules.filter((v) => v.rule === 'pattern' || v.rule === 'not').map((v) => v.pointer),
      );
      expect([...about].sort(), `llm_assist ids ${id}`).toEqual(
        ok ? [] : [`/adapters/${id.replace(/~/gu, '~0').replace(/\//gu, '~1')}`, '/default_adapter'],
      );
    }
  });
});
