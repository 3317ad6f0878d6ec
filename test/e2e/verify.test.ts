/** `codi-adapter verify` as a user runs it: the built binary, --json, exit codes. */
import { cp, readFile, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ALL_PROJECTIONS, decoderTargets, writePeftAdapter } from '../../src/testkit/peft-adapter.js';
import { runCli } from '../helpers/cli.js';
import { tempDir } from '../helpers/tmp.js';

interface VerifyJson {
  ok: boolean;
  adapter: { id: string | null; version: string | null; base_model: string | null; path: string };
  findings: { level: string; code: string; message: string; file: string }[];
  tensors: {
    count: number;
    parameters: number;
    dtypes: Record<string, number>;
    ranks: Record<string, number>;
    modules: string[];
    layers: number[];
  };
  checksums: { file: string; expected: string; actual: string | null; ok: boolean }[];
  durationMs: number;
}

const codes = (j: unknown): string[] => (j as VerifyJson).findings.map((f) => f.code);

describe('verify (built CLI)', () => {
  it('accepts the bundled example adapter: exit 0 and the full JSON report', async () => {
    const r = await runCli(['verify', 'examples/adapters/tiny-qwen2-lora', '--json']);
    expect(r.code).toBe(0);
    const j = r.json as VerifyJson;
    expect(j.ok).toBe(true);
    expect(j.adapter).toMatchObject({ id: 'tiny-qwen2-lora', version: '0.1.0', base_model: 'tiny-qwen2' });
    expect(j.findings).toEqual([]);
    expect(j.tensors).toMatchObject({ count: 28, dtypes: { F32: 28 }, ranks: { '8': 14 }, layers: [0, 1] });
    expect(j.tensors.modules).toEqual([
      'down_proj',
      'gate_proj',
      'k_proj',
      'o_proj',
      'q_proj',
      'up_proj',
      'v_proj',
    ]);
    expect(j.checksums.map((c) => [c.file, c.ok])).toEqual([
      ['adapter_config.json', true],
      ['adapter_model.safetensors', true],
    ]);
    expect(typeof j.durationMs).toBe('number');
    expect(r.stderr).toBe('');
  });

  it('prints a plain checklist without colour when not a TTY', async () => {
    const r = await runCli(['verify', 'examples/adapters/tiny-qwen2-lora'], { env: { NO_COLOR: undefined } });
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('✔ checksums');
    expect(r.stdout).toContain('Adapter is valid.');
    expect(r.stdout).not.toContain('\u001b[');
  });

  it.each([
    ['broken-checksum', 'CHECKSUM_MISMATCH'],
    ['broken-dora', 'CONFIG_UNSUPPORTED'],
    ['broken-unpaired', 'TENSOR_UNPAIRED'],
    ['broken-trailing-bytes', 'SAFETENSORS_TRAILING'],
    ['broken-pickle', 'PICKLE_UNSAFE'],
  ])('refuses examples/adapters/%s with %s and exit 1, no stack trace', async (name, code) => {
    const r = await runCli(['verify', `examples/adapters/${name}`, '--json']);
    expect(r.code).toBe(1);
    expect((r.json as VerifyJson).ok).toBe(false);
    expect(codes(r.json)).toContain(code);
    const human = await runCli(['verify', `examples/adapters/${name}`]);
    expect(human.code).toBe(1);
    expect(human.stdout + human.stderr).not.toMatch(/\n\s+at .+:\d+:\d+/u);
  });

  it('hashes a weights file of several MiB in a worker thread: a match passes, one changed byte fails', async () => {
    // above SMALL_FILE_BYTES, so verify starts its early hash worker (the fast path's bundled code)
    const dir = join(await tempDir('codi-verify-e2e-'), 'mid-lora');
    await writePeftAdapter(dir, {
      id: 'mid-lora',
      version: '0.1.0',
      baseModel: 'mid',
      r: 16,
      alpha: 32,
      targetModules: ALL_PROJECTIONS,
      modules: decoderTargets({ layers: 4, hidden: 768, intermediate: 2048, kvDim: 128 }),
      seed: 3,
    });
    const ok = await runCli(['verify', dir, '--json']);
    expect(ok.code, ok.stderr).toBe(0);
    const weights = join(dir, 'adapter_model.safetensors');
    const bytes = await readFile(weights);
    expect(bytes.length).toBeGreaterThan(2 * 1024 * 1024);
    bytes[bytes.length - 100] = (bytes[bytes.length - 100] ?? 0) ^ 0x01;
    await writeFile(weights, bytes);
    const bad = await runCli(['verify', dir, '--json']);
    expect(bad.code).toBe(1);
    expect(codes(bad.json)).toContain('CHECKSUM_MISMATCH');
  });

  it('warns that a .bin adapter should be safetensors, and still passes', async () => {
    const r = await runCli(['verify', 'examples/adapters/tiny-qwen2-lora-bin', '--json']);
    expect(r.code).toBe(0);
    expect(codes(r.json)).toEqual(['BIN_PREFER_SAFETENSORS']);
  });

  it('--strict turns warnings into errors', async () => {
    const r = await runCli(['verify', 'examples/adapters/tiny-qwen2-lora-bin', '--strict', '--json']);
    expect(r.code).toBe(1);
    expect((r.json as VerifyJson).findings.every((f) => f.level === 'error')).toBe(true);
  });

  it('refuses a symlink to /etc/passwd inside the adapter', async () => {
    const dir = join(await tempDir(), 'tiny-qwen2-lora');
    await cp('examples/adapters/tiny-qwen2-lora', dir, { recursive: true });
    await symlink('/etc/passwd', join(dir, 'passwd'));
    const r = await runCli(['verify', dir, '--json']);
    expect(r.code).toBe(1);
    expect(codes(r.json)).toContain('LAYOUT_SYMLINK');
  });

  it('warns about files the checksums do not cover', async () => {
    const dir = join(await tempDir(), 'tiny-qwen2-lora');
    await cp('examples/adapters/tiny-qwen2-lora', dir, { recursive: true });
    await writeFile(join(dir, 'notes.txt'), 'hello');
    const r = await runCli(['verify', dir, '--json']);
    expect(r.code).toBe(0);
    expect(codes(r.json)).toEqual(['FILE_UNCOVERED']);
  });

  it('exit 3 for a missing directory, with one JSON object on stdout', async () => {
    const r = await runCli(['verify', '/nonexistent/adapter', '--json']);
    expect(r.code).toBe(3);
    expect(r.json).toMatchObject({ ok: false, error: { code: 'PATH_MISSING', exitCode: 3 } });
  });

  it('exit 2 for a usage error, also under --json', async () => {
    const r = await runCli(['verify', '--json']);
    expect(r.code).toBe(2);
    expect(r.json).toMatchObject({ ok: false, error: { code: 'USAGE', exitCode: 2 } });
    const bad = await runCli(['verify', 'x', '--bogus']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('USAGE');
  });

  it('with --base, checks the adapter against the base GGUF', async () => {
    const ok = await runCli([
      'verify',
      'examples/adapters/tiny-qwen2-lora',
      '--base',
      'examples/base/tiny-qwen2.gguf',
      '--json',
    ]);
    expect(ok.code).toBe(0);
    const notModel = await runCli([
      'verify',
      'examples/adapters/tiny-qwen2-lora',
      '--base',
      'examples/adapters/tiny-qwen2-lora/adapter_config.json',
      '--json',
    ]);
    expect(notModel.code).toBe(1);
    expect(codes(notModel.json)).toContain('GGUF_MAGIC');
    const missing = await runCli([
      'verify',
      'examples/adapters/tiny-qwen2-lora',
      '--base',
      '/nonexistent.gguf',
      '--json',
    ]);
    expect(missing.code).toBe(3);
  });
});

describe('the CLI around the commands', () => {
  it('an unknown command is a usage error (exit 2), one JSON object under --json', async () => {
    const r = await runCli(['bogus', '--json']);
    expect(r.code).toBe(2);
    expect(r.json).toMatchObject({ ok: false, error: { code: 'USAGE', exitCode: 2 } });
    const human = await runCli(['bogus']);
    expect(human.code).toBe(2);
    expect(human.stderr).toContain('command bogus not found');
  });

  it("--version answers without oclif, in oclif's format", async () => {
    const r = await runCli(['--version']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^codi-adapter\/\d+\.\d+\.\d+ [a-z0-9]+-[a-z0-9]+ node-v\d+\.\d+\.\d+\n$/u);
  });
});
