/**
 * The GGUF cache: an entry is found in any of its folders and used only when a pass proves, byte for
 * byte, that it is this adapter's conversion; anything else is reported (GGUF_CACHE_TAMPERED) and
 * rebuilt. The tampered files are real GGUFs made by the converter (the same adapter with another
 * alpha, as the issue reproduced), and single flipped bytes.
 */
import { copyFile, lstat, mkdir, readFile, readdir, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { RegularFile } from '../../src/byte-source.js';
import { convertAdapter } from '../../src/convert.js';
import { compareGguf, writeGguf } from '../../src/files/gguf-writer.js';
import { gv, GgmlType } from '../../src/formats/ggml-types.js';
import { cacheFileName, defaultCacheLocations } from '../../src/gguf-cache.js';
import { writeTinyModel } from '../../src/testkit/tiny-model.js';
import type { AdapterSpec } from '../../src/testkit/peft-adapter.js';
import { ADAPTER_SPECS, writeAdapter } from '../helpers/fixtures.js';
import { tempDir } from '../helpers/tmp.js';

let dir: string;
let base: string;

beforeAll(async () => {
  dir = await tempDir('codi-gguf-cache-');
  base = join(dir, 'base.gguf');
  await writeTinyModel(base);
});

/** An adapter in a folder of its own (so its `.gguf-cache` is the test's own). */
async function adapterIn(folder: string, spec: Partial<AdapterSpec> = {}): Promise<string> {
  const parent = join(dir, folder);
  await mkdir(parent, { recursive: true });
  return writeAdapter(parent, { ...(ADAPTER_SPECS.plain as AdapterSpec), id: 'cache-me', ...spec });
}

/** The warnings about the cache (the adapters here record no base: BASE_UNRECORDED is beside the point). */
function cacheCodes(r: { warnings: readonly { code: string }[] }): string[] {
  return r.warnings.map((f) => f.code).filter((c) => c !== 'BASE_UNRECORDED');
}

describe('compareGguf', () => {
  const options = {
    metadata: [['general.name', gv.str('x')] as const],
    tensors: [{ name: 't', ne: [4], type: GgmlType.F32 }],
  };
  const data = (): Float32Array => Float32Array.from([1, 2, 3, 4]);

  it('finds a file identical to what the writer writes the same, and names the first byte that differs', async () => {
    const path = join(dir, 'compare.gguf');
    await writeGguf(path, options, data);
    const same = await RegularFile.open(path);
    expect(await compareGguf(same, options, data)).toMatchObject({ same: true, firstDifference: null });
    await same.close();
    const bytes = await readFile(path);
    bytes.writeUInt8(bytes.readUInt8(bytes.length - 2) ^ 0xff, bytes.length - 2);
    await writeFile(path, bytes);
    const changed = await RegularFile.open(path);
    expect(await compareGguf(changed, options, data)).toEqual({
      same: false,
      firstDifference: bytes.length - 2,
      bytes: bytes.length,
    });
    await changed.close();
    // a file that goes on past the GGUF differs where the GGUF ends
    await writeGguf(path, options, data);
    await writeFile(path, Buffer.concat([await readFile(path), Buffer.from('x')]));
    const longer = await RegularFile.open(path);
    const r = await compareGguf(longer, options, data);
    expect([r.same, r.firstDifference]).toEqual([false, r.bytes]);
    await longer.close();
  });
});

describe('the cache, proven by content', () => {
  it('an entry the same adapter converted with another alpha, put in its place, is found out and rebuilt', async () => {
    const a = await adapterIn('alpha', { alpha: 16 });
    const good = await convertAdapter(a, { base });
    expect(good.proof.kind).toBe('written');
    const other = await adapterIn('alpha-other', { alpha: 32 });
    const wrong = await convertAdapter(other, { base, out: join(dir, 'other-alpha.gguf') });
    const goodBytes = await readFile(good.output);
    await copyFile(wrong.output, good.output);
    expect(Buffer.compare(await readFile(good.output), goodBytes)).not.toBe(0);

    const again = await convertAdapter(a, { base });
    expect(again.cached).toBe(false);
    expect(again.output).toBe(good.output);
    expect(cacheCodes(again)).toEqual(['GGUF_CACHE_TAMPERED']);
    expect(again.warnings.find((f) => f.code === 'GGUF_CACHE_TAMPERED')?.message).toMatch(
      /is not this adapter's conversion: its bytes differ .* from byte \d+/u,
    );
    // rebuilt in its place, byte for byte the conversion
    expect(Buffer.compare(await readFile(good.output), goodBytes)).toBe(0);
    const third = await convertAdapter(a, { base });
    expect([third.cached, third.proof.kind, cacheCodes(third)]).toEqual([true, 'compared', []]);
  });

  it('a single flipped byte anywhere is found (header, first tensor, last byte)', async () => {
    const a = await adapterIn('flip');
    const { output } = await convertAdapter(a, { base });
    const pristine = await readFile(output);
    for (const at of [8, Math.floor(pristine.length / 2), pristine.length - 1]) {
      const bytes = Buffer.from(pristine);
      bytes[at] = (bytes[at] ?? 0) ^ 0x01;
      await writeFile(output, bytes);
      const r = await convertAdapter(a, { base });
      expect([r.cached, cacheCodes(r)], `byte ${at}`).toEqual([false, ['GGUF_CACHE_TAMPERED']]);
      expect(Buffer.compare(await readFile(output), pristine), `byte ${at}`).toBe(0);
    }
  });

  it('finds an entry in any cache folder, proves it there, and writes nothing (a volume it may only read)', async () => {
    const a = await adapterIn('elsewhere');
    const volume = join(dir, 'ro-volume-cache');
    const state = join(dir, 'state-cache');
    const first = await convertAdapter(a, { base, cache: { search: [volume], write: [volume] } });
    const name = first.output.split('/').pop() ?? '';
    // the volume's cache is searched, not written (a read-only mount in the container is the same to
    // convert; test/llama/run-trust.test.ts mounts one)
    const r = await convertAdapter(a, { base, cache: { search: [state, volume], write: [state] } });
    expect(r).toMatchObject({ cached: true, output: join(volume, name), proof: { kind: 'compared' } });
    expect(await readdir(state).catch(() => [])).toEqual([]);
  });

  it('a tampered entry in a folder it cannot write is left alone and rebuilt in the next writable one', async () => {
    const a = await adapterIn('ro-tampered');
    const volume = join(dir, 'ro-tampered-volume');
    const state = join(dir, 'ro-tampered-state');
    const first = await convertAdapter(a, { base, cache: { search: [volume], write: [volume] } });
    const bytes = await readFile(first.output);
    bytes.writeUInt8(bytes.readUInt8(bytes.length - 1) ^ 0x10, bytes.length - 1);
    await writeFile(first.output, bytes);
    // not writable for this test: listed for search only
    const r = await convertAdapter(a, { base, cache: { search: [volume, state], write: [state] } });
    expect(r.cached).toBe(false);
    expect(r.output).toBe(join(state, first.output.split('/').pop() ?? ''));
    expect(cacheCodes(r)).toEqual(['GGUF_CACHE_TAMPERED']);
    // the tampered file is still there, untouched; the next convert reports it again and uses the good one
    expect(Buffer.compare(await readFile(first.output), bytes)).toBe(0);
    const again = await convertAdapter(a, { base, cache: { search: [volume, state], write: [state] } });
    expect([again.cached, again.output, cacheCodes(again)]).toEqual([
      true,
      r.output,
      ['GGUF_CACHE_TAMPERED'],
    ]);
  });

  it('--force rebuilds without looking; a symlink in the cache is not followed', async () => {
    const a = await adapterIn('force');
    const first = await convertAdapter(a, { base });
    const forced = await convertAdapter(a, { base, force: true });
    expect([forced.cached, forced.proof.kind]).toEqual([false, 'written']);
    expect((await stat(forced.output)).ino).not.toBe(first.proof.identity.ino);
    // an entry that is a symlink to a good file elsewhere is not an entry: it is replaced
    const elsewhere = join(dir, 'good-elsewhere.gguf');
    await copyFile(forced.output, elsewhere);
    await rm(forced.output);
    await symlink(elsewhere, forced.output);
    const r = await convertAdapter(a, { base });
    expect(r.cached).toBe(false);
    expect((await lstat(r.output)).isFile()).toBe(true);
  });

  it('names an entry the same on every machine (the name mount --base and run compute)', () => {
    expect(cacheFileName('/models/adapters/qwen15b-lora-v0.1', 'ab'.repeat(32), 'cd'.repeat(32), 'f32')).toBe(
      'qwen15b-lora-v0.1.abababababab.cdcdcdcdcdcdcdcd.f32.gguf',
    );
    expect(defaultCacheLocations('/models/adapters/x', { HOME: '/home/u' }).search).toEqual([
      '/models/adapters/.gguf-cache',
      '/home/u/.cache/codi-adapter/gguf',
    ]);
  });
});
