/**
 * `codi-adapter mount --to-safetensors` as a user runs it: a `.bin` adapter installed with
 * adapter_model.safetensors converted natively, the provenance recorded, atomic like every mount
 * (SIGKILL at every step of the conversion), and every way it can be asked for wrongly.
 */
import { readdir, readFile, readlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { MountResult } from '../../src/catalog/mount.js';
import { sha256Bytes } from '../../src/checksum.js';
import { ZipArchive } from '../../src/formats/zip.js';
import { writePeftBinAdapter, writeSafetensorsTwin } from '../../src/testkit/bin-adapter.js';
import type { AdapterSpec } from '../../src/testkit/peft-adapter.js';
import { verifyAdapter } from '../../src/verify.js';
import { makeVolume } from '../helpers/catalog.js';
import { runCli, startCli } from '../helpers/cli.js';
import { ADAPTER_SPECS } from '../helpers/fixtures.js';

const BASE = 'examples/base/tiny-qwen2.gguf';

function spec(id: string, seed = 101): AdapterSpec {
  return { ...(ADAPTER_SPECS.plain as AdapterSpec), id, seed, baseModel: 'tiny-qwen2', readme: `# ${id}\n` };
}

interface ErrorJson {
  ok: false;
  error: { code: string; exitCode: number; message: string; details?: { status?: string } };
}

interface Metadata {
  checksum: { algorithm: string; files: Record<string, string> } | string;
  converted_from?: { file: string; sha256: string; converter: string; converted_at: string };
}

/** A volume, a .bin adapter in its source folder (views of shared, transposed storages), and its safetensors twin. */
async function scene(
  id = 'lora-bin',
): Promise<{ root: string; adapters: string; source: string; twin: string }> {
  const { root, src } = await makeVolume();
  const source = join(src, id);
  const twin = join(src, 'twin', id);
  await writePeftBinAdapter(source, spec(id), { layout: 'shared-transposed' });
  await writeSafetensorsTwin(twin, spec(id));
  return { root, adapters: join(root, 'adapters'), source, twin };
}

async function snapshot(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const f of (await readdir(dir)).sort()) out[f] = sha256Bytes(await readFile(join(dir, f)));
  return out;
}

/** The installed adapter is the converted one: safetensors only, the twin's bytes, provenance recorded. */
async function expectConverted(installed: string, source: string, twin: string): Promise<void> {
  expect((await readdir(installed)).sort()).toEqual([
    'README.md',
    'adapter_config.json',
    'adapter_model.safetensors',
    'metadata.json',
  ]);
  const weights = await readFile(join(installed, 'adapter_model.safetensors'));
  // what PEFT writes from the same state dict: contiguous tensors in the crate's order, {"format":"pt"}
  expect(weights.equals(await readFile(join(twin, 'adapter_model.safetensors')))).toBe(true);
  const metadata = JSON.parse(await readFile(join(installed, 'metadata.json'), 'utf8')) as Metadata;
  const binSha = sha256Bytes(await readFile(join(source, 'adapter_model.bin')));
  expect(metadata.checksum).toEqual({
    algorithm: 'sha256',
    files: {
      'adapter_config.json': sha256Bytes(await readFile(join(source, 'adapter_config.json'))),
      'adapter_model.safetensors': sha256Bytes(weights),
    },
  });
  expect(metadata.converted_from).toEqual({
    file: 'adapter_model.bin',
    sha256: binSha,
    converter: expect.stringMatching(/^codi-adapter \d+\.\d+\.\d+/u) as unknown,
    converted_at: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/u) as unknown,
  });
  const report = await verifyAdapter(installed);
  expect(report.findings).toEqual([]);
  expect(report.ok).toBe(true);
}

describe('mount --to-safetensors (built CLI)', () => {
  it('installs the .bin adapter with safetensors weights, the .bin sha256 as provenance; again: unchanged', async () => {
    const s = await scene();
    const before = await snapshot(s.source);
    const r = await runCli(['mount', s.source, '--root', s.root, '--to-safetensors', '--activate']);
    expect(r.code, r.stderr).toBe(0);
    const installed = join(s.adapters, 'lora-bin');
    expect(r.stdout).toContain(
      `Adapter Status: mounted (installed lora-bin 0.1.0 at ${installed}, adapter_model.bin converted to adapter_model.safetensors)`,
    );
    expect(r.stdout).toMatch(
      /adapter_model\.safetensors converted from adapter_model\.bin \(sha256:[0-9a-f]{64}\)/u,
    );
    await expectConverted(installed, s.source, s.twin);
    // the source is untouched, and nothing else is left in the catalog
    expect(await snapshot(s.source)).toEqual(before);
    expect((await readdir(s.adapters)).sort()).toEqual(['active', 'lora-bin']);
    expect(await readlink(join(s.adapters, 'active'))).toBe('lora-bin');

    const again = await runCli(['mount', s.source, '--root', s.root, '--to-safetensors', '--json']);
    expect(again.code, again.stderr).toBe(0);
    const j = again.json as MountResult;
    expect(j).toMatchObject({ action: 'unchanged', already: true, converted: null });
    expect(j.adapter.checksum).toBe(
      `sha256:${sha256Bytes(await readFile(join(installed, 'adapter_model.safetensors')))}`,
    );
  });

  it('--json names the file converted and both checksums; --base builds the GGUF from the safetensors', async () => {
    const s = await scene('lora-json');
    const r = await runCli([
      'mount',
      s.source,
      '--root',
      s.root,
      '--to-safetensors',
      '--base',
      BASE,
      '--json',
    ]);
    expect(r.code, r.stderr).toBe(0);
    const j = r.json as MountResult;
    const installed = join(s.adapters, 'lora-json');
    const stSha = sha256Bytes(await readFile(join(installed, 'adapter_model.safetensors')));
    expect(j).toMatchObject({
      action: 'installed',
      adapter: { checksum: `sha256:${stSha}` },
      converted: {
        file: 'adapter_model.safetensors',
        sha256: stSha,
        from: {
          file: 'adapter_model.bin',
          sha256: sha256Bytes(await readFile(join(s.source, 'adapter_model.bin'))),
        },
      },
      gguf: { cached: false },
    });
    expect(j.gguf?.path).toContain(join(s.adapters, '.gguf-cache', `lora-json.${stSha.slice(0, 12)}.`));
  });

  it('another adapter under the id: MOUNT_CONFLICT (exit 1), left as it is; --force replaces it', async () => {
    const s = await scene('taken');
    const other = join(s.source, '..', 'other', 'taken');
    await writePeftBinAdapter(other, spec('taken', 7));
    expect((await runCli(['mount', other, '--root', s.root])).code).toBe(0);
    const held = await snapshot(join(s.adapters, 'taken'));
    const refused = await runCli(['mount', s.source, '--root', s.root, '--to-safetensors']);
    expect(refused.code).toBe(1);
    expect(refused.stdout).toContain('Adapter Status: not_mounted (MOUNT_CONFLICT:');
    expect(await snapshot(join(s.adapters, 'taken'))).toEqual(held);
    expect((await readdir(s.adapters)).filter((n) => n.startsWith('.') && n !== '.mount.lock')).toEqual([]);
    const forced = await runCli([
      'mount',
      s.source,
      '--root',
      s.root,
      '--to-safetensors',
      '--force',
      '--json',
    ]);
    expect(forced.code, forced.stderr).toBe(0);
    expect((forced.json as MountResult).action).toBe('replaced');
    await expectConverted(join(s.adapters, 'taken'), s.source, s.twin);
  });

  it('a .bin adapter already in the catalog is converted in place', async () => {
    const s = await scene('in-place');
    expect((await runCli(['mount', s.source, '--root', s.root, '--activate'])).code).toBe(0);
    const installed = join(s.adapters, 'in-place');
    expect(await readdir(installed)).toContain('adapter_model.bin');
    const r = await runCli(['mount', installed, '--root', s.root, '--to-safetensors']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`Adapter Status: mounted (converted in place at ${installed}`);
    await expectConverted(installed, s.source, s.twin);
    expect(await readlink(join(s.adapters, 'active'))).toBe('in-place');
    expect((await readdir(s.adapters)).filter((n) => n.startsWith('.') && n !== '.mount.lock')).toEqual([]);
  });

  it.each([
    ['safetensors weights', false, /are adapter_model\.safetensors already\)?$/u],
    [
      'safetensors weights with a .bin beside them',
      true,
      /the adapter_model\.bin beside it is not the weights file/u,
    ],
  ])('%s: MOUNT_NOT_BIN, exit 2, nothing mounted', async (_name, withBin, message) => {
    const s = await scene('st');
    if (withBin) {
      const binBytes = await readFile(join(s.source, 'adapter_model.bin'));
      await writeFile(join(s.twin, 'adapter_model.bin'), binBytes);
      const metadata = JSON.parse(await readFile(join(s.twin, 'metadata.json'), 'utf8')) as {
        checksum: { files: Record<string, string> };
      };
      metadata.checksum.files['adapter_model.bin'] = sha256Bytes(binBytes);
      await writeFile(join(s.twin, 'metadata.json'), JSON.stringify(metadata));
    }
    const r = await runCli(['mount', s.twin, '--root', s.root, '--to-safetensors', '--json']);
    expect(r.code, r.stderr).toBe(2);
    const e = r.json as ErrorJson;
    expect(e.error).toMatchObject({ code: 'MOUNT_NOT_BIN', exitCode: 2, details: { status: 'not_mounted' } });
    expect(e.error.message).toMatch(message);
    expect(await readdir(s.root)).toEqual([]);
  });

  it('a .bin that does not verify (a pickle that imports os.system): exit 1, invalid, nothing converted', async () => {
    const { root } = await makeVolume();
    const r = await runCli(['mount', 'examples/adapters/broken-pickle', '--root', root, '--to-safetensors']);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('Adapter Status: invalid (PICKLE_UNSAFE:');
    expect(await readdir(root)).toEqual([]);
  });

  it('the .bin changed while it is converted: MOUNT_SOURCE_CHANGED (exit 1), nothing mounted', async () => {
    const s = await scene('changing');
    const run = startCli(['mount', s.source, '--root', s.root, '--to-safetensors', '--json'], {
      pauseAt: ['mount:staged'],
    });
    expect(await run.reached('mount:staged')).toBe(true);
    const path = join(s.source, 'adapter_model.bin');
    const bytes = await readFile(path);
    const storage = (await ZipArchive.fromBytes(bytes)).get('adapter_model/data/1');
    if (!storage) throw new Error('no storage 1');
    bytes[storage.dataOffset + 3] = (bytes[storage.dataOffset + 3] ?? 0) ^ 0x40;
    await writeFile(path, bytes);
    run.resume();
    const r = await run.done;
    expect(r.code, r.stderr).toBe(1);
    expect(r.json).toMatchObject({ ok: false, error: { code: 'MOUNT_SOURCE_CHANGED' } });
    expect((await readdir(s.adapters)).filter((n) => n !== '.mount.lock')).toEqual([]);
  });
});

describe('mount --to-safetensors: crash safety', () => {
  const STEPS = [
    'mount:staged',
    'mount:copied:adapter_config.json',
    'mount:converting',
    'mount:copied:adapter_model.safetensors',
    'mount:copied:metadata.json',
    'mount:copied',
    'mount:verified-copy',
  ];

  it.each(STEPS)(
    'SIGKILL at %s: no adapter under the id, and the next mount cleans up and installs it',
    async (step) => {
      const s = await scene('killed');
      const run = startCli(['mount', s.source, '--root', s.root, '--to-safetensors'], { pauseAt: [step] });
      expect(await run.reached(step)).toBe(true);
      run.kill('SIGKILL');
      expect((await run.done).signal).toBe('SIGKILL');
      const names = await readdir(s.adapters);
      expect(names).not.toContain('killed');
      expect(names.filter((n) => n.startsWith('.staging-killed-'))).toHaveLength(1);
      const again = await runCli(['mount', s.source, '--root', s.root, '--to-safetensors', '--json']);
      expect(again.code, again.stderr).toBe(0);
      expect((again.json as MountResult).cleaned.removed).toHaveLength(1);
      expect((await readdir(s.adapters)).filter((n) => n.startsWith('.') && n !== '.mount.lock')).toEqual([]);
      await expectConverted(join(s.adapters, 'killed'), s.source, s.twin);
    },
  );

  it('SIGKILL between the two renames of an in-place conversion: the next mount puts the .bin adapter back', async () => {
    const s = await scene('swap');
    expect((await runCli(['mount', s.source, '--root', s.root])).code).toBe(0);
    const installed = join(s.adapters, 'swap');
    const before = await snapshot(installed);
    const run = startCli(['mount', installed, '--root', s.root, '--to-safetensors'], {
      pauseAt: ['mount:old-moved'],
    });
    expect(await run.reached('mount:old-moved')).toBe(true);
    run.kill('SIGKILL');
    expect((await run.done).signal).toBe('SIGKILL');
    expect(await readdir(s.adapters)).not.toContain('swap');
    const r = await runCli(['mount', 'examples/adapters/tiny-qwen2-lora', '--root', s.root, '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect((r.json as MountResult).cleaned.restored).toEqual(['swap']);
    expect(await snapshot(installed)).toEqual(before);
  });
});
