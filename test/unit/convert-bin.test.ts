/**
 * convert on `.bin` adapters: the tensors are read out of the archive natively (never unpickled) and
 * the GGUF is the one the same adapter's safetensors gives, byte for byte, but for the weights
 * checksum it records (that of the file it was converted from).
 */
import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { BinPass } from '../../src/bin-pass.js';
import { convertAdapter } from '../../src/convert.js';
import { CodiError } from '../../src/errors.js';
import { scanTorchBin } from '../../src/files/torch-bin.js';
import {
  BIN_LAYOUTS,
  peftBinBytes,
  viewsBin,
  writePeftBinAdapter,
  writeSafetensorsTwin,
  type BinWriteOptions,
} from '../../src/testkit/bin-adapter.js';
import type { AdapterSpec } from '../../src/testkit/peft-adapter.js';
import { writeTinyModel } from '../../src/testkit/tiny-model.js';
import { ADAPTER_SPECS } from '../helpers/fixtures.js';
import { tempDir } from '../helpers/tmp.js';

let dir: string;
let base: string;

beforeAll(async () => {
  dir = await tempDir('codi-convert-bin-');
  base = join(dir, 'base.gguf');
  await writeTinyModel(base);
});

/** The GGUF of the safetensors twin and of the .bin, the .bin's with the twin's checksum written in. */
async function bothGgufs(
  spec: AdapterSpec,
  options: BinWriteOptions,
  outtype: 'f32' | 'f16' = 'f32',
): Promise<{ st: Buffer; bin: Buffer }> {
  const tag = `${spec.id}-${options.layout ?? 'contiguous'}-${options.protocol ?? 2}-${options.deflate ? 'z' : 's'}-${options.byteorder ?? 'le'}-${outtype}`;
  const stDir = join(dir, `st-${tag}`, spec.id);
  const binDir = join(dir, `bin-${tag}`, spec.id);
  await writeSafetensorsTwin(stDir, spec);
  await writePeftBinAdapter(binDir, spec, options);
  const st = await convertAdapter(stDir, { base, out: join(dir, `${tag}.st.gguf`), outtype });
  const bin = await convertAdapter(binDir, { base, out: join(dir, `${tag}.bin.gguf`), outtype });
  expect(bin.tensors).toBe(st.tensors);
  const stBytes = await readFile(st.output);
  const binBytes = await readFile(bin.output);
  // the one difference: codi.adapter.weights_sha256 names the file converted
  const at = binBytes.indexOf(bin.adapter.weightsSha256);
  expect(at).toBeGreaterThan(0);
  expect(binBytes.indexOf(bin.adapter.weightsSha256, at + 1)).toBe(-1);
  binBytes.write(st.adapter.weightsSha256, at, 'latin1');
  return { st: stBytes, bin: binBytes };
}

describe('convert: .bin adapters', () => {
  it.each(BIN_LAYOUTS)('%s storages: the same GGUF as the safetensors, byte for byte', async (layout) => {
    const { st, bin } = await bothGgufs(ADAPTER_SPECS.plain as AdapterSpec, { layout });
    expect(bin.equals(st)).toBe(true);
  });

  it.each(['f16', 'bf16', 'patterns', 'rslora'])(
    '%s adapter, shared and transposed: the same GGUF',
    async (name) => {
      const { st, bin } = await bothGgufs(ADAPTER_SPECS[name] as AdapterSpec, {
        layout: 'shared-transposed',
        protocol: 4,
      });
      expect(bin.equals(st)).toBe(true);
    },
  );

  it('f16 output from bf16 weights: the same GGUF', async () => {
    const { st, bin } = await bothGgufs(ADAPTER_SPECS.bf16 as AdapterSpec, { layout: 'transposed' }, 'f16');
    expect(bin.equals(st)).toBe(true);
  });

  it('DEFLATE storages and big-endian data: the same GGUF', async () => {
    const spec = ADAPTER_SPECS.f16 as AdapterSpec;
    const z = await bothGgufs(spec, { layout: 'shared', deflate: true });
    expect(z.bin.equals(z.st)).toBe(true);
    const be = await bothGgufs(spec, { layout: 'transposed', byteorder: 'big' });
    expect(be.bin.equals(be.st)).toBe(true);
  });
});

describe('the .bin pass', () => {
  const changed = (how: string): CodiError => new CodiError('SOURCE_CHANGED', `it ${how}`);

  it('hashes every byte once, in order, whatever order the tensors are asked for in', async () => {
    const path = join(dir, 'order.bin');
    const bytes = peftBinBytes(ADAPTER_SPECS.plain as AdapterSpec, { layout: 'shared-transposed' });
    await writeFile(path, bytes);
    const scan = await scanTorchBin(path);
    const hash = createHash('sha256');
    const pass = await BinPass.begin(path, scan, hash, changed);
    // backwards: every storage is behind the frontier after the first
    for (const t of [...scan.tensors].reverse()) await pass.tensor(t);
    await pass.finish(pass.opened);
    await pass.close();
    expect(hash.digest('hex')).toBe(createHash('sha256').update(bytes).digest('hex'));
  });

  it('a range the writer reads itself hashes only the bytes past the frontier, in order', async () => {
    // one storage of 64 floats: a slice in its middle is read first, then the whole as a range
    const data = new Uint8Array(Float32Array.from({ length: 64 }, (_, i) => i).buffer);
    const bytes = viewsBin(
      [
        { name: 'slice', dtype: 'F32', shape: [16], stride: [1], storageOffset: 8, storage: '0' },
        { name: 'whole', dtype: 'F32', shape: [8, 8], stride: [8, 1], storageOffset: 0, storage: '0' },
      ],
      [{ key: '0', dtype: 'F32', data }],
    );
    const path = join(dir, 'straddle.bin');
    await writeFile(path, bytes);
    const scan = await scanTorchBin(path);
    const [slice, whole] = scan.tensors;
    if (!slice || !whole) throw new Error('two tensors');
    const hash = createHash('sha256');
    const pass = await BinPass.begin(path, scan, hash, changed);
    expect([...new Float32Array((await pass.tensor(slice)).slice().buffer)]).toEqual(
      Array.from({ length: 16 }, (_, i) => i + 8),
    );
    const range = pass.range(whole);
    if (!range) throw new Error('a contiguous STORED tensor is a range');
    // as the GGUF writer does: in pieces, each handed to onBytes
    const got = new Uint8Array(range.length);
    for (let at = 0; at < range.length; at += 24) {
      const piece = got.subarray(at, Math.min(range.length, at + 24));
      range.file.readSync(piece, range.position + at);
      range.onBytes?.(piece);
    }
    expect(got).toEqual(data);
    await pass.finish(pass.opened);
    await pass.close();
    expect(hash.digest('hex')).toBe(createHash('sha256').update(bytes).digest('hex'));
  });

  it('refuses a file whose pickle is not the one scanned (fault injection: the scan of another file)', async () => {
    const scanned = join(dir, 'scanned.bin');
    const other = join(dir, 'other.bin');
    await writeFile(scanned, peftBinBytes(ADAPTER_SPECS.plain as AdapterSpec));
    await writeFile(other, peftBinBytes(ADAPTER_SPECS.rslora as AdapterSpec));
    const scan = await scanTorchBin(scanned);
    await expect(BinPass.begin(other, scan, createHash('sha256'), changed)).rejects.toMatchObject({
      code: 'SOURCE_CHANGED',
      message: 'it changed',
    });
  });

  it('refuses a file that grew after the pass opened it', async () => {
    const path = join(dir, 'grows.bin');
    const bytes = peftBinBytes(ADAPTER_SPECS.plain as AdapterSpec);
    await writeFile(path, bytes);
    const scan = await scanTorchBin(path);
    const pass = await BinPass.begin(path, scan, createHash('sha256'), changed);
    for (const t of scan.tensors) await pass.tensor(t);
    await writeFile(path, Buffer.concat([bytes, Buffer.from('more')]));
    await expect(pass.finish(null)).rejects.toMatchObject({ code: 'SOURCE_CHANGED', message: 'it grew' });
    await pass.close();
  });
});
