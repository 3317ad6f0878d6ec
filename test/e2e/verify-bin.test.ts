/**
 * `codi-adapter verify` on hostile `.bin` adapters, through the built CLI: each is refused with its
 * code and exit 1 (never a stack trace), and a warning of the scan reaches the report.
 */
import { createHash } from 'node:crypto';
import { cp, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { exampleSpec } from '../../src/testkit/examples.js';
import { generateLoraTensors } from '../../src/testkit/peft-adapter.js';
import { torchAttacks } from '../../src/testkit/torch-attacks.js';
import { torchArchiveEntries, torchDataPickle, zipBytes } from '../../src/testkit/torch-bin.js';
import { runCli } from '../helpers/cli.js';
import { tempDir } from '../helpers/tmp.js';

interface Report {
  ok: boolean;
  findings: { level: string; code: string; message: string; file: string }[];
}

/** The example .bin adapter with `bin` as its weights, its checksum updated to match. */
async function adapterWith(bin: Uint8Array): Promise<string> {
  const dir = join(await tempDir('codi-verify-bin-'), 'tiny-qwen2-lora-bin');
  await cp('examples/adapters/tiny-qwen2-lora-bin', dir, { recursive: true });
  await writeFile(join(dir, 'adapter_model.bin'), bin);
  const metaPath = join(dir, 'metadata.json');
  const meta = JSON.parse(await readFile(metaPath, 'utf8')) as {
    checksum: { files: Record<string, string> };
  };
  meta.checksum.files['adapter_model.bin'] = createHash('sha256').update(bin).digest('hex');
  await writeFile(metaPath, `${JSON.stringify(meta, null, 2)}\n`);
  return dir;
}

describe('verify on hostile .bin adapters (built CLI)', () => {
  const chosen = [
    'frame-straddle',
    'case-variant-pickle',
    'comment-end-record',
    'tar-polyglot',
    'build-on-tensor',
  ];
  for (const attack of torchAttacks().filter((a) => chosen.includes(a.id))) {
    it(`${attack.id} is refused: exit 1, its code, no stack trace`, async () => {
      const dir = await adapterWith(attack.bytes);
      const r = await runCli(['verify', dir, '--json']);
      expect(r.code).toBe(1);
      const report = r.json as Report;
      expect(report.ok).toBe(false);
      if ('code' in attack.expect) {
        expect(report.findings.map((f) => f.code)).toContain(attack.expect.code);
      }
      expect(r.stderr).not.toMatch(/\n\s+at /);
      const text = await runCli(['verify', dir]);
      expect(text.code).toBe(1);
      expect(text.stdout + text.stderr).not.toMatch(/\n\s+at /);
    });
  }

  it('reports the scan’s warnings: big-endian tensor data', async () => {
    const tensors = generateLoraTensors(exampleSpec('tiny-qwen2-lora-bin'));
    const entries = torchArchiveEntries(
      torchDataPickle(tensors),
      tensors.map((t) => t.data),
      'adapter_model',
    ).map((e) => (e.name.endsWith('/byteorder') ? { ...e, data: new Uint8Array(Buffer.from('big')) } : e));
    const dir = await adapterWith(zipBytes(entries));
    const r = await runCli(['verify', dir, '--json']);
    expect(r.code).toBe(0);
    const codes = (r.json as Report).findings.map((f) => [f.code, f.level, f.file]);
    expect(codes).toContainEqual(['BIN_BIG_ENDIAN', 'warning', 'adapter_model.bin']);
  });
});
