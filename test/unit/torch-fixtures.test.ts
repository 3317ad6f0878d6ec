/**
 * Files written by a real torch.save (torch 1.13 and 2.x; scripts/make-torch-fixtures.py, run once
 * with torch at hand) and what torch itself loads back from each (`expected.json`): the scanner must
 * pass every one of them and describe exactly the tensors torch loads.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { scanTorchBin } from '../../src/files/torch-bin.js';
import { rejected } from '../helpers/errors.js';

const DIR = join(import.meta.dirname, '..', 'fixtures', 'torch');

interface Expected {
  writer: string;
  kwargs: Record<string, unknown>;
  tensors: {
    name: string;
    dtype: string;
    shape: number[];
    stride: number[];
    storageOffset: number;
    storageKey: string;
  }[];
  storages: { key: string; byteLength: number }[];
}

const expected = JSON.parse(readFileSync(join(DIR, 'expected.json'), 'utf8')) as Record<string, Expected>;
const files = readdirSync(DIR).filter((f) => f.endsWith('.bin'));

describe('genuine torch.save files', () => {
  it('cover both writers, every dtype, views, state dicts and protocols 2, 4 and 5', () => {
    for (const tag of ['torch1', 'torch2']) {
      for (const c of [
        'f32',
        'f16',
        'bf16',
        'views',
        'state-dict',
        'parameters',
        'protocol4',
        'protocol5',
        'legacy',
      ]) {
        expect(files).toContain(`${tag}-${c}.bin`);
      }
    }
    expect(Object.keys(expected).sort()).toEqual([...files].sort());
  });

  for (const file of files.filter((f) => !f.endsWith('-legacy.bin'))) {
    it(`${file} passes, and reads as torch loads it`, async () => {
      const want = expected[file];
      if (want === undefined) throw new Error(`no expectation for ${file}`);
      const scan = await scanTorchBin(join(DIR, file));
      expect(scan.archive).toBe(file.slice(0, -'.bin'.length));
      expect(scan.warnings).toEqual([]);
      expect(scan.protocol).toBe(Number(want.kwargs.pickle_protocol ?? 2));
      expect(
        scan.tensors.map((t) => ({
          name: t.name,
          dtype: t.dtype,
          shape: t.shape,
          stride: t.stride,
          storageOffset: t.storageOffset,
          storageKey: t.storageKey,
        })),
      ).toEqual(want.tensors);
      expect(scan.storages.map((s) => ({ key: s.key, byteLength: s.byteLength }))).toEqual(want.storages);
    });
  }

  for (const file of files.filter((f) => f.endsWith('-legacy.bin'))) {
    it(`${file} (the legacy format, _use_new_zipfile_serialization=False) is refused for what it is`, async () => {
      const err = await rejected(scanTorchBin(join(DIR, file)));
      expect(err.code).toBe('BIN_LEGACY_FORMAT');
      expect(err.message).toMatch(/_use_new_zipfile_serialization=False/);
      expect(err.message).not.toMatch(/saved before PyTorch 1\.6/);
    });
  }
});
