import { execFileSync, spawnSync } from 'node:child_process';
import { cp, mkdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { sha256Bytes } from '../../src/checksum.js';
import { countFindings, MAX_FINDINGS_PER_CODE } from '../../src/findings.js';
import { encodeSafetensors } from '../../src/formats/safetensors.js';
import { exampleSpec } from '../../src/testkit/examples.js';
import { writeMetadata, writePeftAdapter } from '../../src/testkit/peft-adapter.js';
import { requireValid, verifyAdapter, type CheckResult } from '../../src/verify.js';
import { tempDir } from '../helpers/tmp.js';

/** A fresh copy of the valid example adapter, named after its id. */
async function adapter(): Promise<string> {
  const dir = join(await tempDir(), 'tiny-qwen2-lora');
  await writePeftAdapter(dir, exampleSpec());
  return dir;
}

const codes = (r: Awaited<ReturnType<typeof verifyAdapter>>): string[] => r.findings.map((f) => f.code);

describe('verifyAdapter', () => {
  it('passes a valid adapter: every check, the stats, and both checksums', async () => {
    const progress: string[] = [];
    const r = await verifyAdapter(await adapter(), { onHashProgress: (p) => progress.push(p.file) });
    expect(r.ok).toBe(true);
    expect(r.findings).toEqual([]);
    expect(r.checks.map((c) => [c.name, c.status])).toEqual([
      ['layout', 'pass'],
      ['config', 'pass'],
      ['weights', 'pass'],
      ['tensors', 'pass'],
      ['metadata', 'pass'],
      ['checksums', 'pass'],
    ]);
    expect(r.checksums.every((c) => c.ok && c.actual === c.expected)).toBe(true);
    expect(new Set(progress)).toEqual(new Set(['adapter_model.safetensors', 'adapter_config.json']));
  });

  it('metadata.json missing: an error, and nothing to check the files against', async () => {
    const dir = await adapter();
    await rm(join(dir, 'metadata.json'));
    const r = await verifyAdapter(dir);
    expect(r.ok).toBe(false);
    expect(codes(r)).toEqual(['LAYOUT_MISSING']);
    expect(r.checks.find((c) => c.name === 'checksums')?.status).toBe('skip');
  });

  it('metadata.json that is not JSON', async () => {
    const dir = await adapter();
    await writeFile(join(dir, 'metadata.json'), '{"id": ');
    expect(codes(await verifyAdapter(dir))).toEqual(['METADATA_JSON']);
  });

  it('metadata.json that is not UTF-8', async () => {
    const dir = await adapter();
    await writeFile(join(dir, 'metadata.json'), Buffer.from([0x7b, 0xff, 0x7d]));
    expect(codes(await verifyAdapter(dir))).toEqual(['METADATA_JSON']);
  });

  it('a leading byte order mark is refused in metadata.json and adapter_config.json, as in every JSON file', async () => {
    const dir = await adapter();
    for (const name of ['metadata.json', 'adapter_config.json']) {
      await writeFile(join(dir, name), `\ufeff${await readFile(join(dir, name), 'utf8')}`);
    }
    const r = await verifyAdapter(dir);
    const bom = r.findings.filter((f) => f.code === 'METADATA_JSON' || f.code === 'CONFIG_JSON');
    expect(bom.map((f) => [f.code, f.file])).toEqual([
      ['CONFIG_JSON', 'adapter_config.json'],
      ['METADATA_JSON', 'metadata.json'],
    ]);
    for (const f of bom) expect(f.message).toContain('byte order mark');
  });

  it('a listed file that is missing', async () => {
    const dir = await adapter();
    await writeMetadata(dir, exampleSpec(), {
      'adapter_config.json': sha256Bytes(await readFile(join(dir, 'adapter_config.json'))),
      'adapter_model.safetensors': sha256Bytes(await readFile(join(dir, 'adapter_model.safetensors'))),
      'README.md': sha256Bytes(await readFile(join(dir, 'README.md'))),
    });
    await rm(join(dir, 'README.md'));
    const r = await verifyAdapter(dir);
    expect(codes(r)).toEqual(['CHECKSUM_FILE_MISSING']);
    expect(r.findings[0]?.hint).toMatch(/re-copy the adapter files/);
    expect(r.checksums.find((c) => c.file === 'README.md')).toMatchObject({ actual: null, ok: false });
  });

  it('a missing required file is reported once, by the layout check', async () => {
    const dir = await adapter();
    await rm(join(dir, 'adapter_config.json'));
    expect(codes(await verifyAdapter(dir))).toEqual(['LAYOUT_MISSING']);
  });

  it('the short checksum form covers the weights only; the config is then uncovered (a warning)', async () => {
    const dir = await adapter();
    const weights = sha256Bytes(await readFile(join(dir, 'adapter_model.safetensors')));
    const meta = JSON.parse(await readFile(join(dir, 'metadata.json'), 'utf8')) as Record<string, unknown>;
    await writeFile(join(dir, 'metadata.json'), JSON.stringify({ ...meta, checksum: `sha256:${weights}` }));
    const r = await verifyAdapter(dir);
    expect(r.ok).toBe(true);
    expect(codes(r)).toEqual(['FILE_UNCOVERED']);
    expect(r.findings[0]?.file).toBe('adapter_config.json');
    const strict = await verifyAdapter(dir, { strict: true });
    expect(strict.ok).toBe(false);
    expect(strict.findings[0]?.level).toBe('error');
  });

  it('weights not covered by the checksums', async () => {
    const dir = await adapter();
    await writeMetadata(dir, exampleSpec(), {
      'adapter_config.json': sha256Bytes(await readFile(join(dir, 'adapter_config.json'))),
    });
    expect(codes(await verifyAdapter(dir))).toEqual(['CHECKSUM_WEIGHTS_UNCOVERED']);
  });

  it('a directory name that differs from metadata id is a warning', async () => {
    const dir = await adapter();
    const other = join(dir, '..', 'renamed');
    await cp(dir, other, { recursive: true });
    const r = await verifyAdapter(other);
    expect(r.ok).toBe(true);
    expect(codes(r)).toEqual(['ADAPTER_ID_MISMATCH']);
  });

  it('a config whose target matches no tensor', async () => {
    const dir = await adapter();
    const config = JSON.parse(await readFile(join(dir, 'adapter_config.json'), 'utf8')) as Record<
      string,
      unknown
    >;
    const text = JSON.stringify({
      ...config,
      target_modules: [...(config.target_modules as string[]), 'lm_head'],
    });
    await writeFile(join(dir, 'adapter_config.json'), text);
    await writeMetadata(dir, exampleSpec(), {
      'adapter_config.json': sha256Bytes(Buffer.from(text)),
      'adapter_model.safetensors': sha256Bytes(await readFile(join(dir, 'adapter_model.safetensors'))),
    });
    const r = await verifyAdapter(dir);
    // PEFT too lets an entry of target_modules match nothing while another matches: a warning
    expect(r.ok).toBe(true);
    expect(codes(r)).toEqual(['TARGET_UNMATCHED']);
    expect(r.findings[0]).toMatchObject({ level: 'warning' });
    expect(r.findings[0]?.message).toContain('"lm_head"');
  });

  it("promote's lock beside metadata.json: nothing while its holder runs; a stale one is named as such", async () => {
    const dir = await adapter();
    const lockFile = join(dir, '.metadata.json.lock');
    const owner = (pid: number): string =>
      JSON.stringify({ pid, hostname: hostname(), nonce: 'n', acquired_at: new Date().toISOString() });
    // held by a live process (this one): a promote in progress is no finding, even for --strict
    await writeFile(lockFile, owner(process.pid));
    const live = await verifyAdapter(dir, { strict: true });
    expect(live.findings).toEqual([]);
    expect(live.ok).toBe(true);
    // left by a process that is gone
    const gone = spawnSync(process.execPath, ['-e', '0']).pid;
    await writeFile(lockFile, owner(gone));
    const stale = await verifyAdapter(dir);
    expect(stale.ok).toBe(true);
    expect(stale.findings).toEqual([
      expect.objectContaining({ level: 'warning', code: 'PROMOTE_LEFTOVER', file: '.metadata.json.lock' }),
    ]);
    expect(stale.checks.find((c) => c.name === 'layout')?.status).toBe('warn');
    const strict = await verifyAdapter(dir, { strict: true });
    expect(strict.ok).toBe(false);
    expect(codes(strict)).toEqual(['PROMOTE_LEFTOVER']);
    await rm(lockFile);
    // metadata.json's temp file and a lock taker's record: written under a live lock (nothing to say),
    // or left once no live promote holds the lock, whatever pid their names carry
    const temps = [
      `.metadata.json.${process.pid}.0123456789ab.tmp`,
      `..metadata.json.lock.${gone}.0123456789ab.tmp`,
    ];
    for (const t of temps) await writeFile(join(dir, t), '{');
    await writeFile(lockFile, owner(process.pid));
    expect((await verifyAdapter(dir, { strict: true })).findings).toEqual([]);
    await rm(lockFile);
    expect((await verifyAdapter(dir)).findings.map((f) => [f.code, f.file])).toEqual(
      [...temps].sort().map((file) => ['PROMOTE_LEFTOVER', file]),
    );
    for (const t of temps) await rm(join(dir, t));
    // a name that only looks like one is an ordinary uncovered file
    await writeFile(join(dir, '.metadata.json.x.tmp'), '{');
    expect(codes(await verifyAdapter(dir))).toContain('FILE_UNCOVERED');
  });

  it('every check still runs after an earlier one failed', async () => {
    const dir = await adapter();
    await writeFile(join(dir, 'adapter_config.json'), '{"peft_type": "LORA"}');
    await writeFile(join(dir, 'notes.txt'), 'x');
    const r = await verifyAdapter(dir);
    expect(codes(r)).toEqual(
      expect.arrayContaining(['CONFIG_INVALID', 'CHECKSUM_MISMATCH', 'FILE_UNCOVERED']),
    );
    expect(r.checks.find((c) => c.name === 'tensors')?.status).toBe('pass');
  });
});

/** Replaces the weights with `bytes` and records the checksums of the config and the new weights. */
async function withWeights(dir: string, bytes: Uint8Array): Promise<void> {
  await writeFile(join(dir, 'adapter_model.safetensors'), bytes);
  await writeMetadata(dir, exampleSpec(), {
    'adapter_config.json': sha256Bytes(await readFile(join(dir, 'adapter_config.json'))),
    'adapter_model.safetensors': sha256Bytes(bytes),
  });
}

/** A safetensors file of `n` zero-length F32 tensors named by `name(i)`, of shape `shape`. */
function zeroTensors(n: number, name: (i: number) => string, shape: string): Uint8Array {
  const entries = new Array<string>(n);
  for (let i = 0; i < n; i++)
    entries[i] = `"${name(i)}":{"dtype":"F32","shape":${shape},"data_offsets":[0,0]}`;
  const header = Buffer.from(`{${entries.join(',')}}`);
  const bytes = Buffer.alloc(8 + header.length);
  bytes.writeBigUInt64LE(BigInt(header.length));
  header.copy(bytes, 8);
  return bytes;
}

const check = (r: Awaited<ReturnType<typeof verifyAdapter>>, name: string): CheckResult | undefined =>
  r.checks.find((c) => c.name === name);

describe('verifyAdapter: reports of any size', () => {
  it('200,000 unpaired lora_A: the first 50 TENSOR_UNPAIRED, then one for the other 199,950', async () => {
    const dir = await adapter();
    const n = 200_000;
    await withWeights(
      dir,
      zeroTensors(n, (i) => `base_model.model.model.layers.${i}.self_attn.q_proj.lora_A.weight`, '[0,64]'),
    );
    const r = await verifyAdapter(dir);
    expect(r.ok).toBe(false);
    const unpaired = r.findings.filter((f) => f.code === 'TENSOR_UNPAIRED');
    expect(unpaired).toHaveLength(MAX_FINDINGS_PER_CODE + 1);
    expect(unpaired.at(-1)).toEqual({
      level: 'error',
      code: 'TENSOR_UNPAIRED',
      message: `… and 199,950 more TENSOR_UNPAIRED findings (a report lists the first ${MAX_FINDINGS_PER_CODE} of a code)`,
      file: 'adapter_model.safetensors',
      omitted: n - MAX_FINDINGS_PER_CODE,
    });
    // q_proj has tensors, broken as they are: the other six targets matched none (warnings, as PEFT
    // lets an entry match nothing while another matches)
    expect(r.findings.filter((f) => f.code === 'TARGET_UNMATCHED' && f.level === 'warning')).toHaveLength(6);
    expect(r.findings.length).toBeLessThan(60);
    expect(countFindings(r.findings)).toEqual({ errors: n, warnings: 6 });
    expect(check(r, 'tensors')?.summary).toMatch(
      /^200,000 modules \(q_proj\), rank 0, .* — 200,000 errors, 6 warnings$/u,
    );
    expect(() => {
      requireValid(r);
    }).toThrow(/and 199,999 more: TENSOR_UNPAIRED\)/u);
  });

  it('200,000 tensors with names PEFT does not write: TENSOR_NAME, capped', async () => {
    const dir = await adapter();
    await withWeights(
      dir,
      zeroTensors(200_000, (i) => `junk.${i}`, '[0]'),
    );
    const r = await verifyAdapter(dir, { strict: true });
    const names = r.findings.filter((f) => f.code === 'TENSOR_NAME');
    expect(names).toHaveLength(MAX_FINDINGS_PER_CODE + 1);
    expect(names.at(-1)).toMatchObject({ level: 'error', omitted: 200_000 - MAX_FINDINGS_PER_CODE });
    expect(check(r, 'tensors')?.status).toBe('fail');
  });

  it('metadata.json with 100,000 invalid evaluations: METADATA_INVALID, capped', async () => {
    const dir = await adapter();
    const meta = JSON.parse(await readFile(join(dir, 'metadata.json'), 'utf8')) as Record<string, unknown>;
    await writeFile(
      join(dir, 'metadata.json'),
      JSON.stringify({ ...meta, evaluations: new Array(100_000).fill({ suite: 's' }) }),
    );
    const r = await verifyAdapter(dir);
    const invalid = r.findings.filter((f) => f.code === 'METADATA_INVALID');
    expect(invalid).toHaveLength(MAX_FINDINGS_PER_CODE + 1);
    const total = countFindings(invalid).errors;
    // three rules broken by each evaluation (evaluated_at, base_model and metrics missing)
    expect(total).toBe(300_000);
    expect(check(r, 'metadata')?.summary).toBe('300,000 errors');
  });
});

describe('verifyAdapter: adapter files that are not regular files', () => {
  it('a folder named adapter_model.safetensors: LAYOUT_NOT_FILE, and the checksums line fails', async () => {
    const dir = await adapter();
    await rm(join(dir, 'adapter_model.safetensors'));
    await mkdir(join(dir, 'adapter_model.safetensors'));
    const r = await verifyAdapter(dir);
    expect(r.findings.map((f) => [f.code, f.file])).toEqual([
      ['LAYOUT_NOT_FILE', 'adapter_model.safetensors'],
    ]);
    expect(r.findings[0]?.message).toBe('adapter_model.safetensors is a directory, not a file');
    expect(check(r, 'checksums')).toMatchObject({ status: 'fail', summary: '1/2 files sha256 ok — 1 error' });
    expect(check(r, 'weights')?.status).toBe('skip');
  });

  it('a FIFO named adapter_model.safetensors or metadata.json: LAYOUT_SPECIAL_FILE alone', async () => {
    const dir = await adapter();
    await rm(join(dir, 'adapter_model.safetensors'));
    execFileSync('mkfifo', [join(dir, 'adapter_model.safetensors')]);
    const r = await verifyAdapter(dir);
    expect(r.findings.map((f) => [f.code, f.file])).toEqual([
      ['LAYOUT_SPECIAL_FILE', 'adapter_model.safetensors'],
    ]);
    expect(check(r, 'checksums')?.status).toBe('fail');
    await rm(join(dir, 'metadata.json'));
    execFileSync('mkfifo', [join(dir, 'metadata.json')]);
    expect(codes(await verifyAdapter(dir))).toEqual(['LAYOUT_SPECIAL_FILE', 'LAYOUT_SPECIAL_FILE']);
  });
});

describe('verifyAdapter: subfolders', () => {
  it('checkpoint-1/optimizer.pt: one LAYOUT_SUBDIRECTORY warning, no FILE_UNCOVERED; --strict fails', async () => {
    const dir = await adapter();
    await mkdir(join(dir, 'checkpoint-1', 'nested'), { recursive: true });
    await writeFile(join(dir, 'checkpoint-1', 'optimizer.pt'), 'x');
    await writeFile(join(dir, 'checkpoint-1', 'nested', 'rng_state.pth'), 'x');
    const r = await verifyAdapter(dir);
    expect(r.ok).toBe(true);
    expect(r.findings).toEqual([
      {
        level: 'warning',
        code: 'LAYOUT_SUBDIRECTORY',
        message:
          'checkpoint-1/ is a folder: not part of a PEFT adapter, and nothing in it can be covered by the checksums',
        file: 'checkpoint-1',
        hint: 'move checkpoint-1/ out of the adapter folder (a PEFT adapter is the files beside adapter_config.json)',
      },
    ]);
    expect(check(r, 'layout')?.status).toBe('warn');
    const strict = await verifyAdapter(dir, { strict: true });
    expect(strict.ok).toBe(false);
    expect(codes(strict)).toEqual(['LAYOUT_SUBDIRECTORY']);
    // what the hint says works
    await rm(join(dir, 'checkpoint-1'), { recursive: true });
    expect((await verifyAdapter(dir, { strict: true })).ok).toBe(true);
  });

  it('an empty subfolder is one too; a link inside one is still refused', async () => {
    const dir = await adapter();
    await mkdir(join(dir, 'logs'));
    expect(codes(await verifyAdapter(dir))).toEqual(['LAYOUT_SUBDIRECTORY']);
    await symlink('/etc/passwd', join(dir, 'logs', 'passwd'));
    const r = await verifyAdapter(dir);
    expect(r.findings.map((f) => [f.code, f.file])).toEqual([
      ['LAYOUT_SUBDIRECTORY', 'logs'],
      ['LAYOUT_SYMLINK', 'logs/passwd'],
    ]);
  });
});

describe('verifyAdapter: checksums and tensors', () => {
  it('metadata.json listing its own checksum: CHECKSUM_SELF, not a mismatch', async () => {
    const dir = await adapter();
    const meta = JSON.parse(await readFile(join(dir, 'metadata.json'), 'utf8')) as {
      checksum: { files: Record<string, string> };
    };
    meta.checksum.files['metadata.json'] = '0'.repeat(64);
    await writeFile(join(dir, 'metadata.json'), JSON.stringify(meta));
    const r = await verifyAdapter(dir);
    expect(r.findings).toEqual([
      expect.objectContaining({
        level: 'error',
        code: 'CHECKSUM_SELF',
        file: 'metadata.json',
        pointer: '/checksum/files/metadata.json',
        hint: expect.stringContaining('remove the "metadata.json" entry') as string,
      }),
    ]);
    expect(check(r, 'checksums')?.status).toBe('fail');
    expect(r.checksums.map((c) => c.file)).toEqual(['adapter_config.json', 'adapter_model.safetensors']);
  });

  it('a broken pair is reported for that alone, and the summary still says what was found', async () => {
    const dir = await adapter();
    const q = 'base_model.model.model.layers.0.self_attn.q_proj';
    await withWeights(
      dir,
      encodeSafetensors([
        { name: `${q}.lora_A.weight`, dtype: 'F32', shape: [8, 64], data: new Uint8Array(8 * 64 * 4) },
        { name: `${q}.lora_B.weight`, dtype: 'F32', shape: [128, 4], data: new Uint8Array(128 * 4 * 4) },
      ]),
    );
    const config = JSON.parse(await readFile(join(dir, 'adapter_config.json'), 'utf8')) as Record<
      string,
      unknown
    >;
    const text = JSON.stringify({ ...config, target_modules: ['q_proj'] });
    await writeFile(join(dir, 'adapter_config.json'), text);
    await withWeights(dir, await readFile(join(dir, 'adapter_model.safetensors')));
    const mismatch = await verifyAdapter(dir);
    expect(codes(mismatch)).toEqual(['TENSOR_SHAPE']);
    expect(check(mismatch, 'tensors')?.summary).toMatch(/^1 module \(q_proj\), rank 8, layers 0–0, /u);
    await withWeights(
      dir,
      encodeSafetensors([
        { name: `${q}.lora_A.weight`, dtype: 'F32', shape: [8, 64], data: new Uint8Array(8 * 64 * 4) },
      ]),
    );
    const unpaired = await verifyAdapter(dir);
    expect(codes(unpaired)).toEqual(['TENSOR_UNPAIRED']);
    expect(check(unpaired, 'tensors')?.summary).toMatch(/^1 module \(q_proj\), rank 8, layers 0–0, /u);
    expect(unpaired.tensors).toMatchObject({ count: 1, ranks: { '8': 1 }, modules: ['q_proj'], layers: [0] });
  });
});
