/**
 * `codi-adapter convert` as a user runs it: what it does when the adapter changes under it, when it is
 * interrupted or killed while writing, and on every kind of bad input.
 */
import { spawnSync } from 'node:child_process';
import { cp, mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { tempWriterPid } from '../../src/atomic.js';
import { sha256Bytes } from '../../src/checksum.js';
import { convertAdapter } from '../../src/convert.js';
import { readGgufHeader, readTensorData } from '../../src/files/gguf.js';
import { writeGguf } from '../../src/files/gguf-writer.js';
import { encodeSafetensors } from '../../src/formats/safetensors.js';
import {
  ALL_PROJECTIONS,
  decoderTargets,
  generateLoraTensors,
  writeMetadata,
  writePeftAdapter,
  type AdapterSpec,
} from '../../src/testkit/peft-adapter.js';
import { writeTinyModel } from '../../src/testkit/tiny-model.js';
import { killAfterRandomDelay, msFromStepToEnd, runCli, startCli, type CliResult } from '../helpers/cli.js';
import { TINY_DIMS, writeUnsupportedBase } from '../helpers/fixtures.js';
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

/** Temp files (`.<name>.<pid>.<hex>.tmp`) of writers of `name` in `dir`. */
async function tempsOf(dir: string, name: string): Promise<string[]> {
  const entries = await readdir(dir).catch(() => [] as string[]);
  return entries.filter((e) => tempWriterPid(e, name) !== null);
}

/** Every temp file in `dir`, whoever it is for. */
async function anyTemps(dir: string): Promise<string[]> {
  return (await readdir(dir).catch(() => [] as string[])).filter((e) => e.endsWith('.tmp'));
}

const EXAMPLE = 'examples/adapters/tiny-qwen2-lora';

/** A copy of the example adapter in a fresh folder (so its .gguf-cache is the test's own). */
async function adapterCopy(): Promise<{ dir: string; adapter: string }> {
  const dir = await tempDir('codi-convert-kill-');
  const adapter = join(dir, 'tiny-qwen2-lora');
  await cp(EXAMPLE, adapter, { recursive: true });
  return { dir, adapter };
}

describe('convert interrupted while writing: the target is the old file or the new one, no temp file stays', () => {
  it.each([
    ['SIGTERM', 143],
    ['SIGINT', 130],
  ] as const)('%s: the temp GGUF is removed, exit %d, one JSON object', async (signal, status) => {
    const { dir, adapter } = await adapterCopy();
    const out = join(dir, 'out', 'adapter.gguf');
    await mkdir(dirname(out));
    // an older GGUF at the target
    expect((await runCli(['convert', adapter, '--base', BASE, '--out', out, '--outtype', 'f16'])).code).toBe(
      0,
    );
    const old = await readFile(out);
    const run = startCli(['convert', adapter, '--base', BASE, '--out', out, '--json'], {
      pauseAt: ['convert:writing'],
    });
    expect(await run.reached('convert:writing')).toBe(true);
    // the partial GGUF exists while it is written
    expect(await tempsOf(dirname(out), 'adapter.gguf')).toHaveLength(1);
    run.kill(signal);
    const r = await run.done;
    expect(r.code).toBe(status);
    expect(r.json).toMatchObject({ ok: false, error: { code: 'INTERRUPTED', exitCode: status } });
    expect(await readdir(dirname(out))).toEqual(['adapter.gguf']);
    expect(await readFile(out)).toEqual(old);
  });

  it.each(['--out', 'the cache'])(
    'SIGKILL while writing to %s: the temp file stays; the next convert to that target removes it',
    async (where) => {
      const { dir, adapter } = await adapterCopy();
      const out = join(dir, 'out', 'adapter.gguf');
      await mkdir(dirname(out));
      const args = [
        'convert',
        adapter,
        '--base',
        BASE,
        '--json',
        ...(where === '--out' ? ['--out', out] : []),
      ];
      const run = startCli(args, { pauseAt: ['convert:writing'] });
      expect(await run.reached('convert:writing')).toBe(true);
      run.kill('SIGKILL');
      const killed = await run.done;
      expect(killed.signal).toBe('SIGKILL');
      const folder = where === '--out' ? dirname(out) : join(dir, '.gguf-cache');
      const left = await anyTemps(folder);
      expect(left).toHaveLength(1);
      // nothing but the temp file: no target, partial or otherwise
      expect(await readdir(folder)).toEqual(left);

      // a temp file of a writer that is still running is left alone
      const target =
        where === '--out'
          ? 'adapter.gguf'
          : (left[0] ?? '').replace(/^\.(.*)\.\d+\.[0-9a-f]{12}\.tmp$/u, '$1');
      const live = `.${target}.${process.pid}.0123456789ab.tmp`;
      await writeFile(join(folder, live), 'a live writer');

      const next = await runCli(args);
      expect(next.code).toBe(0);
      const output = (next.json as { output: string }).output;
      expect(basename(output)).toBe(target);
      expect((await readdir(folder)).sort()).toEqual([live, target].sort());
      // and what it wrote is the whole GGUF: byte for byte what an uninterrupted conversion writes
      const clean = join(dir, 'clean.gguf');
      expect((await runCli(['convert', adapter, '--base', BASE, '--out', clean])).code).toBe(0);
      expect(await readFile(output)).toEqual(await readFile(clean));
    },
  );

  it(
    'SIGKILL after random delays (6 trials) over a larger adapter: old or new, never partial',
    { timeout: 300_000 },
    async () => {
      const dir = await tempDir('codi-convert-trials-');
      // rank 256 over every projection: a few MB to write, so the kills land inside the write
      const adapter = join(dir, 'wide');
      await writePeftAdapter(adapter, {
        id: 'wide',
        r: 256,
        alpha: 512,
        targetModules: ALL_PROJECTIONS,
        modules: decoderTargets(TINY_DIMS),
        seed: 11,
      });
      const out = join(dir, 'out', 'wide.gguf');
      await mkdir(dirname(out));
      const fresh = join(dir, 'fresh.gguf');
      expect((await runCli(['convert', adapter, '--base', BASE, '--out', fresh])).code).toBe(0);
      const newBytes = await readFile(fresh);
      expect(
        (await runCli(['convert', adapter, '--base', BASE, '--out', out, '--outtype', 'bf16'])).code,
      ).toBe(0);
      const oldBytes = await readFile(out);
      const args = ['convert', adapter, '--base', BASE, '--out', out];
      const span = await msFromStepToEnd(
        () => startCli(args, { pauseAt: ['convert:before-pass'] }),
        'convert:before-pass',
      );
      // put the old one back after the probe
      await writeFile(out, oldBytes);
      const outcomes: string[] = [];
      for (let trial = 0; trial < 6; trial++) {
        const { result, delay } = await killAfterRandomDelay(
          () => startCli(args, { pauseAt: ['convert:before-pass'] }),
          'convert:before-pass',
          span,
        );
        const now = await readFile(out);
        const found = now.equals(newBytes) ? 'new' : now.equals(oldBytes) ? 'old' : 'partial';
        expect(found).not.toBe('partial');
        if (result.code === 0) expect(found).toBe('new');
        else expect(result.signal).toBe('SIGKILL');
        outcomes.push(`${delay}ms:${result.code === 0 ? 'finished' : found}`);
        // the next convert cleans up after the killed one
        expect((await runCli(args)).code).toBe(0);
        expect(await anyTemps(dirname(out))).toEqual([]);
        expect(await readFile(out)).toEqual(newBytes);
        await writeFile(out, oldBytes);
      }
      console.log(`convert kill trials (write span ${span} ms): ${outcomes.join(' ')}`);
    },
  );
});

/** A pid that no process has now: a child that has exited. */
function deadPid(): number {
  const child = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']);
  return Number(child.stdout.toString());
}

describe('convert removes temp files of dead writers only', () => {
  it('the temp file of a dead pid beside --out goes, a live one stays, other files stay', async () => {
    const { dir, adapter } = await adapterCopy();
    const out = join(dir, 'adapter.gguf');
    const dead = `.adapter.gguf.${deadPid()}.aaaaaaaaaaaa.tmp`;
    const live = `.adapter.gguf.${process.pid}.bbbbbbbbbbbb.tmp`;
    const other = `.other.gguf.${deadPid()}.cccccccccccc.tmp`;
    for (const f of [dead, live, other]) await writeFile(join(dir, f), 'x');
    expect((await runCli(['convert', adapter, '--base', BASE, '--out', out])).code).toBe(0);
    const left = await readdir(dir);
    expect(left).not.toContain(dead);
    expect(left).toEqual(expect.arrayContaining([live, other, 'adapter.gguf']));
  });
});

// ---------------------------------------------------------------------------------------------
// Bad inputs through the built CLI

interface BadCase {
  adapter: string;
  base: string;
  /** --out, when not a fresh file in a fresh folder */
  out?: string;
  code: string;
  exit: number;
  message?: RegExp;
}

let bad: Record<string, BadCase>;

/** A GGUF header with one key `a` whose value claims `claim` (a string length or an array count). */
function hostileGguf(kind: 'string' | 'array', claim: bigint): Uint8Array {
  const b = Buffer.alloc(64);
  b.write('GGUF', 0, 'latin1');
  b.writeUInt32LE(3, 4);
  b.writeBigUInt64LE(0n, 8); // tensors
  b.writeBigUInt64LE(1n, 16); // keys
  b.writeBigUInt64LE(1n, 24); // key length
  b.write('a', 32, 'latin1');
  if (kind === 'string') {
    b.writeUInt32LE(8, 33); // GGUF_TYPE_STRING
    b.writeBigUInt64LE(claim, 37);
  } else {
    b.writeUInt32LE(9, 33); // GGUF_TYPE_ARRAY
    b.writeUInt32LE(0, 37); // of UINT8
    b.writeBigUInt64LE(claim, 41);
  }
  return b;
}

beforeAll(async () => {
  const dir = await tempDir('codi-convert-bad-');
  const plainSpec: AdapterSpec = {
    id: 'plain',
    r: 8,
    alpha: 16,
    targetModules: ALL_PROJECTIONS,
    modules: decoderTargets(TINY_DIMS),
    seed: 21,
  };
  const adapterOf = async (spec: AdapterSpec): Promise<string> => {
    await writePeftAdapter(join(dir, spec.id), spec);
    return join(dir, spec.id);
  };
  const plain = await adapterOf(plainSpec);
  const dora = await adapterOf({ ...plainSpec, id: 'dora', extraConfig: { use_dora: true } });
  const mts = await adapterOf({ ...plainSpec, id: 'mts', extraConfig: { modules_to_save: ['lm_head'] } });
  const lmHead = await adapterOf({
    ...plainSpec,
    id: 'lm-head',
    targetModules: ['lm_head'],
    modules: [{ module: 'lm_head', inFeatures: 64, outFeatures: 484 }],
  });
  const missing = await adapterOf({
    ...plainSpec,
    id: 'missing',
    targetModules: ['q_proj'],
    modules: [{ module: 'model.layers.7.self_attn.q_proj', inFeatures: 64, outFeatures: 64 }],
  });
  const shape = await adapterOf({
    ...plainSpec,
    id: 'shape',
    targetModules: ['up_proj'],
    modules: [{ module: 'model.layers.0.mlp.up_proj', inFeatures: 64, outFeatures: 96 }],
  });
  // I64 weights, checksums that match them
  const i64Spec = { ...plainSpec, id: 'i64' };
  const i64 = await adapterOf(i64Spec);
  const weights = encodeSafetensors(
    generateLoraTensors(i64Spec).map(({ name, shape: s, data }, i) =>
      i === 0
        ? { name, dtype: 'I64' as const, shape: s, data: new Uint8Array(data.length * 2) }
        : { name, dtype: 'F32' as const, shape: s, data },
    ),
  );
  await writeFile(join(i64, 'adapter_model.safetensors'), weights);
  await writeMetadata(i64, i64Spec, {
    'adapter_config.json': sha256Bytes(await readFile(join(i64, 'adapter_config.json'))),
    'adapter_model.safetensors': sha256Bytes(weights),
  });

  const bases = join(dir, 'bases');
  await mkdir(bases);
  const baseBytes = await readFile(BASE);
  const baseFile = async (name: string, bytes: Uint8Array): Promise<string> => {
    await writeFile(join(bases, name), bytes);
    return join(bases, name);
  };
  const gemma = await writeUnsupportedBase(join(bases, 'gemma.gguf'));
  const asBase = join(bases, 'adapter-as-base.gguf');
  await convertAdapter(plain, { base: BASE, out: asBase });
  const version = Buffer.from(baseBytes);
  version.writeUInt32LE(4, 4);
  // a llama base whose head count does not divide its q/k rows
  const llama = join(bases, 'llama.gguf');
  await writeTinyModel(llama, { arch: 'llama' });
  const g = await readGgufHeader(llama);
  const heads3 = join(bases, 'llama-h3.gguf');
  await writeGguf(
    heads3,
    {
      metadata: [...g.metadata.values()].map(
        (e) =>
          [
            e.key,
            { type: e.type, value: e.key.startsWith('llama.attention.head_count') ? 3 : e.value },
          ] as const,
      ),
      tensors: g.tensors.map((t) => ({ name: t.name, ne: t.ne, type: t.type })),
    },
    (spec) => readTensorData(llama, g, spec.name),
  );
  const ownBase = await baseFile('own-base.gguf', baseBytes);

  bad = {
    DoRA: { adapter: dora, base: BASE, code: 'CONFIG_UNSUPPORTED', exit: 1, message: /DoRA/ },
    modules_to_save: {
      adapter: mts,
      base: BASE,
      code: 'CONFIG_UNSUPPORTED',
      exit: 1,
      message: /modules_to_save/,
    },
    'lm_head on a tied base': { adapter: lmHead, base: BASE, code: 'BASE_TIED_LM_HEAD', exit: 1 },
    'a tensor the base lacks': {
      adapter: missing,
      base: BASE,
      code: 'BASE_INCOMPATIBLE',
      exit: 1,
      message: /blk\.7\.attn_q\.weight.*does not exist/,
    },
    'a shape mismatch': {
      adapter: shape,
      base: BASE,
      code: 'BASE_INCOMPATIBLE',
      exit: 1,
      message: /blk\.0\.ffn_up\.weight.*\[96, 64\].*\[128, 64\]/,
    },
    'q/k rows that do not split into the base heads': {
      adapter: plain,
      base: heads3,
      code: 'BASE_INCOMPATIBLE',
      exit: 1,
      message: /cannot split/,
    },
    'an unsupported arch': {
      adapter: plain,
      base: gemma,
      code: 'BASE_ARCH_UNSUPPORTED',
      exit: 1,
      message: /gemma/,
    },
    'an adapter GGUF as --base': { adapter: plain, base: asBase, code: 'BASE_NOT_MODEL', exit: 1 },
    'a truncated base': {
      adapter: plain,
      base: await baseFile('truncated.gguf', baseBytes.subarray(0, 3000)),
      code: 'GGUF_TRUNCATED',
      exit: 1,
    },
    'a base with its data cut short': {
      adapter: plain,
      base: await baseFile('short.gguf', baseBytes.subarray(0, baseBytes.length - 1000)),
      code: 'GGUF_TRUNCATED',
      exit: 1,
    },
    'bad magic': {
      adapter: plain,
      base: await baseFile('magic.gguf', Buffer.concat([Buffer.from('GGUX'), baseBytes.subarray(4)])),
      code: 'GGUF_MAGIC',
      exit: 1,
    },
    'bad version': {
      adapter: plain,
      base: await baseFile('version.gguf', version),
      code: 'GGUF_VERSION',
      exit: 1,
    },
    'a huge string length in the base metadata': {
      adapter: plain,
      base: await baseFile('huge-string.gguf', hostileGguf('string', 1n << 40n)),
      code: 'GGUF_LIMIT',
      exit: 1,
    },
    'a huge array count in the base metadata': {
      adapter: plain,
      base: await baseFile('huge-array.gguf', hostileGguf('array', 1n << 60n)),
      code: 'GGUF_LIMIT',
      exit: 1,
    },
    'I64 adapter weights': { adapter: i64, base: BASE, code: 'TENSOR_DTYPE', exit: 1, message: /I64/ },
    '--out = the base': { adapter: plain, base: ownBase, out: ownBase, code: 'OUT_IS_BASE', exit: 2 },
    '--out = the adapter weights': {
      adapter: plain,
      base: BASE,
      out: join(plain, 'adapter_model.safetensors'),
      code: 'OUT_IN_ADAPTER',
      exit: 2,
    },
    'a missing base': { adapter: plain, base: join(bases, 'nope.gguf'), code: 'PATH_MISSING', exit: 3 },
  };
}, 60_000);

/** The bytes of every file below `dir` (no folders), by relative path. */
async function snapshot(dir: string): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for (const entry of await readdir(dir, { recursive: true })) {
    const path = join(dir, entry);
    if ((await stat(path)).isFile()) out.set(entry, await readFile(path));
  }
  return out;
}

describe('convert refuses bad input through the built CLI: code, exit status, one JSON object, nothing written', () => {
  it.each([
    'DoRA',
    'modules_to_save',
    'lm_head on a tied base',
    'a tensor the base lacks',
    'a shape mismatch',
    'q/k rows that do not split into the base heads',
    'an unsupported arch',
    'an adapter GGUF as --base',
    'a truncated base',
    'a base with its data cut short',
    'bad magic',
    'bad version',
    'a huge string length in the base metadata',
    'a huge array count in the base metadata',
    'I64 adapter weights',
    '--out = the base',
    '--out = the adapter weights',
    'a missing base',
  ])('%s', async (name) => {
    const c = bad[name];
    if (!c) throw new Error(`no case ${name}`);
    const outDir = await tempDir('codi-convert-out-');
    const out = c.out ?? join(outDir, 'adapter.gguf');
    const inputs = [c.adapter, dirname(c.base)];
    const before = await Promise.all(inputs.map(snapshot));
    const r: CliResult = await runCli(['convert', c.adapter, '--base', c.base, '--out', out, '--json']);
    expect(r.code, r.stderr).toBe(c.exit);
    // exactly one JSON object on stdout (JSON.parse of the whole output succeeded)
    expect(r.stdout.trim().startsWith('{')).toBe(true);
    expect(r.json).toMatchObject({ ok: false, error: { code: c.code, exitCode: c.exit } });
    if (c.message) expect((r.json as { error: { message: string } }).error.message).toMatch(c.message);
    expect(r.stderr).not.toMatch(/\n\s+at /u);
    // no output file, no temp file; the adapter and the base folder exactly as they were
    expect(await readdir(outDir)).toEqual([]);
    expect(await Promise.all(inputs.map(snapshot))).toEqual(before);
    expect(await readdir(dirname(c.adapter))).not.toContain('.gguf-cache');
  });
});
