/** `codi-adapter verify` as a user runs it: the built binary, --json, exit codes. */
import { chmod, cp, mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { sha256Bytes } from '../../src/checksum.js';
import { exampleSpec } from '../../src/testkit/examples.js';
import { ALL_PROJECTIONS, decoderTargets, writePeftAdapter } from '../../src/testkit/peft-adapter.js';
import { IS_ROOT } from '../helpers/catalog.js';
import { runCli, runOnTerminal, SGR } from '../helpers/cli.js';
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

/** An adapter whose weights file is several MiB: above the sizes where verify hashes in a worker and shows progress. */
async function midAdapter(): Promise<string> {
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
  return dir;
}

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
    const dir = await midAdapter();
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

  it('CONFIG_PATTERN_AMBIGUOUS once, with or without --base; convert --json lists it among its warnings', async () => {
    // rank key q_proj and alpha key layers.0.self_attn.q_proj: PEFT releases give that module other scales
    const dir = join(await tempDir('codi-verify-e2e-'), 'ambiguous');
    const base = 'examples/base/tiny-qwen2.gguf';
    await writePeftAdapter(dir, {
      ...exampleSpec('ambiguous'),
      rankPattern: { q_proj: 4 },
      alphaPattern: { 'layers.0.self_attn.q_proj': 32 },
      // bound to its base: the patterns are the only thing to warn about
      base: { sha256: sha256Bytes(await readFile(base)) },
    });
    for (const args of [[], ['--base', base]]) {
      const r = await runCli(['verify', dir, ...args, '--json']);
      expect(r.code, r.stderr).toBe(0);
      expect(codes(r.json)).toEqual(['CONFIG_PATTERN_AMBIGUOUS']);
    }
    const human = await runCli(['verify', dir]);
    expect(human.code).toBe(0);
    expect(human.stdout.match(/CONFIG_PATTERN_AMBIGUOUS/gu)).toHaveLength(1);
    const out = join(dir, '..', 'ambiguous.gguf');
    const converted = await runCli(['convert', dir, '--base', base, '--out', out, '--json']);
    expect(converted.code, converted.stderr).toBe(0);
    const warnings = (converted.json as { warnings: { code: string }[] }).warnings;
    expect(warnings.map((w) => w.code)).toEqual(['CONFIG_PATTERN_AMBIGUOUS']);
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

describe('verify (built CLI): hostile sizes and unreadable files', () => {
  it('200,000 unpaired tensors: exit 1, the real codes, a few KB of findings', async () => {
    const dir = join(await tempDir('codi-verify-e2e-'), 'tiny-qwen2-lora');
    await cp('examples/adapters/tiny-qwen2-lora', dir, { recursive: true });
    const entries = Array.from(
      { length: 200_000 },
      (_, i) =>
        `"base_model.model.model.layers.${i}.self_attn.q_proj.lora_A.weight":{"dtype":"F32","shape":[0,64],"data_offsets":[0,0]}`,
    );
    const header = Buffer.from(`{${entries.join(',')}}`);
    const length = Buffer.alloc(8);
    length.writeBigUInt64LE(BigInt(header.length));
    await writeFile(join(dir, 'adapter_model.safetensors'), Buffer.concat([length, header]));
    const r = await runCli(['verify', dir, '--json']);
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toBe('');
    const findings = (r.json as { findings: { code: string; omitted?: number }[] }).findings;
    expect(JSON.stringify(findings).length).toBeLessThan(16 * 1024);
    expect(new Set(findings.map((f) => f.code))).toEqual(
      new Set(['TENSOR_UNPAIRED', 'TARGET_UNMATCHED', 'CHECKSUM_MISMATCH']),
    );
    expect(findings.find((f) => f.omitted !== undefined)).toMatchObject({
      code: 'TENSOR_UNPAIRED',
      omitted: 199_950,
    });
  });

  /*
   * Root reads every file whatever its mode, so as root the CLI runs as nobody (65534) against a
   * folder it may enter; as another user, mode 000 is enough.
   */
  const asNobody = IS_ROOT ? { user: { uid: 65534, gid: 65534 } } : {};

  async function readableCopy(): Promise<string> {
    const root = await tempDir('codi-verify-e2e-');
    await chmod(root, 0o755);
    const dir = join(root, 'tiny-qwen2-lora');
    await cp('examples/adapters/tiny-qwen2-lora', dir, { recursive: true });
    return dir;
  }

  it('a weights file this user cannot read: exit 3, one finding with its name, ✖ on its lines', async () => {
    const dir = await readableCopy();
    await chmod(join(dir, 'adapter_model.safetensors'), 0o000);
    const r = await runCli(['verify', dir, '--json'], asNobody);
    expect(r.code, r.stderr).toBe(3);
    const j = r.json as VerifyJson & { checks: { name: string; status: string }[] };
    expect(j.findings).toEqual([
      {
        level: 'error',
        code: 'PATH_INACCESSIBLE',
        message: 'adapter_model.safetensors is not accessible (permission denied)',
        file: 'adapter_model.safetensors',
        hint: 'make the adapter folder and everything in it readable by this user',
      },
    ]);
    expect(j.checks.filter((c) => c.status === 'fail').map((c) => c.name)).toEqual(['weights', 'checksums']);
    const human = await runCli(['verify', dir], asNobody);
    expect(human.code).toBe(3);
    expect(human.stdout).toMatch(/^✖ weights header +1 error$/mu);
    expect(human.stdout).toMatch(/^✖ checksums +1\/2 files sha256 ok — 1 error$/mu);
    expect(human.stdout).toContain('Adapter could not be verified: 1 error (files this user cannot read).');
    expect(human.stdout).not.toContain(dir + '/adapter_model');
  });

  it('a subfolder this user cannot read: the report, with the finding, and exit 3', async () => {
    const dir = await readableCopy();
    await mkdir(join(dir, 'logs'), { mode: 0o000 });
    await chmod(join(dir, 'logs'), 0o000);
    const r = await runCli(['verify', dir, '--json'], asNobody);
    expect(r.code, r.stderr).toBe(3);
    expect(codes(r.json)).toEqual(['LAYOUT_SUBDIRECTORY', 'PATH_INACCESSIBLE']);
    expect((r.json as VerifyJson).findings[1]).toMatchObject({ file: 'logs' });
    expect((r.json as VerifyJson).tensors.count).toBe(28);
  });
});

describe('verify (built CLI) on a terminal', () => {
  // chalk and ora stay quiet in CI logs: runOnTerminal takes out the variables that tell them so
  const onTerminal = (args: string, env = ''): { status: number | null; output: string } =>
    runOnTerminal(`verify ${args}`, env);
  // eslint-disable-next-line no-control-regex -- a colour opened and closed around nothing
  const emptyPaint = /\u001b\[(3\d|9\d|1|2)m\u001b\[(39|22)m/u;

  it('colours the checklist on a terminal, and is plain under NO_COLOR, --no-color and a pipe', async () => {
    const broken = 'examples/adapters/broken-checksum';
    const coloured = onTerminal(broken);
    expect(coloured.status).toBe(1);
    expect(coloured.output).toMatch(SGR);
    expect(coloured.output).toContain('CHECKSUM_MISMATCH');
    expect(coloured.output).toContain('Adapter is invalid: 1 error.');
    expect(coloured.output).not.toMatch(emptyPaint);
    const valid = onTerminal('examples/adapters/tiny-qwen2-lora');
    expect(valid.status).toBe(0);
    expect(valid.output).toMatch(SGR);
    expect(valid.output).not.toMatch(emptyPaint);
    for (const plain of [onTerminal(broken, 'NO_COLOR=1'), onTerminal(`${broken} --no-color`)]) {
      expect(plain.status).toBe(1);
      expect(plain.output).toContain('Adapter is invalid: 1 error.');
      expect(plain.output).not.toMatch(SGR);
    }
    const piped = await runCli(['verify', broken], { env: { NO_COLOR: undefined } });
    expect(piped.code).toBe(1);
    expect(piped.stdout + piped.stderr).not.toMatch(SGR);
  });

  it('shows hashing progress for a large file on a terminal only', async () => {
    const dir = await midAdapter();
    // the 64 MiB threshold lowered to 1 MiB (a test hook): the weights are above it, the config below
    const hook = 'CODI_TEST_PROGRESS_MIN_BYTES=1048576';
    const progress = 'hashing adapter_model.safetensors: ';
    const shown = onTerminal(dir, hook);
    expect(shown.status, shown.output).toBe(0);
    expect(shown.output).toContain(progress);
    expect(shown.output).not.toContain('hashing adapter_config.json');
    expect(shown.output).toContain('Adapter is valid.');
    // not below the threshold, not under --json, not into a pipe
    expect(onTerminal(dir).output).not.toContain('hashing ');
    const json = onTerminal(`${dir} --json`, hook);
    expect(json.status).toBe(0);
    expect(json.output).not.toContain('hashing ');
    const piped = await runCli(['verify', dir], { env: { CODI_TEST_PROGRESS_MIN_BYTES: '1048576' } });
    expect(piped.code).toBe(0);
    expect(piped.stdout + piped.stderr).not.toContain('hashing ');
  });
});
