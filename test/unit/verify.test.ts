import { spawnSync } from 'node:child_process';
import { cp, readFile, rm, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { sha256Bytes } from '../../src/checksum.js';
import { exampleSpec } from '../../src/testkit/examples.js';
import { writeMetadata, writePeftAdapter } from '../../src/testkit/peft-adapter.js';
import { verifyAdapter } from '../../src/verify.js';
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
    expect(codes(r)).toEqual(['TARGET_UNMATCHED']);
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
    // metadata.json's temp file: being written by a live promote, or left by a dead one
    await writeFile(join(dir, `.metadata.json.${process.pid}.0123456789ab.tmp`), '{');
    expect((await verifyAdapter(dir, { strict: true })).findings).toEqual([]);
    await rm(join(dir, `.metadata.json.${process.pid}.0123456789ab.tmp`));
    await writeFile(join(dir, `.metadata.json.${gone}.0123456789ab.tmp`), '{');
    expect((await verifyAdapter(dir)).findings).toEqual([
      expect.objectContaining({ code: 'PROMOTE_LEFTOVER', file: `.metadata.json.${gone}.0123456789ab.tmp` }),
    ]);
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
