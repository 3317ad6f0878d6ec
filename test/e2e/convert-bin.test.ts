/**
 * `codi-adapter convert` on `.bin` adapters, as a user runs it: the GGUF is the one the same
 * adapter's safetensors gives, byte for byte (but for the weights checksum it records), and bad,
 * damaged or changing `.bin` files are refused with a code, the right exit status and nothing written.
 */
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { sha256Bytes } from '../../src/checksum.js';
import { ZipArchive } from '../../src/formats/zip.js';
import {
  binLayout,
  peftBinBytes,
  viewsBin,
  writeAdapterWith,
  writePeftBinAdapter,
  writeSafetensorsTwin,
  type BinWriteOptions,
} from '../../src/testkit/bin-adapter.js';
import { generateLoraTensors, type AdapterSpec } from '../../src/testkit/peft-adapter.js';
import { PICKLE_OP, PickleBuilder, zipBytes } from '../../src/testkit/torch-bin.js';
import { runCli, startCli, type CliResult } from '../helpers/cli.js';
import { ADAPTER_SPECS } from '../helpers/fixtures.js';
import { tempDir } from '../helpers/tmp.js';

const BASE = 'examples/base/tiny-qwen2.gguf';
const SPEC = { ...(ADAPTER_SPECS.plain as AdapterSpec), baseModel: 'tiny-qwen2' };

interface ConvertJson {
  output: string;
  tensors: number;
  adapter: { weightsFile: string; weightsSha256: string };
}

interface ErrorJson {
  ok: false;
  error: { code: string; exitCode: number; message: string; hint?: string };
}

/** A .bin adapter (and its safetensors twin) in a fresh folder each. */
async function pair(options: BinWriteOptions): Promise<{ bin: string; st: string; dir: string }> {
  const dir = await tempDir('codi-convert-bin-');
  const bin = join(dir, 'bin', SPEC.id);
  const st = join(dir, 'st', SPEC.id);
  await writePeftBinAdapter(bin, SPEC, options);
  await writeSafetensorsTwin(st, SPEC);
  return { bin, st, dir };
}

async function convert(adapter: string, out: string, extra: string[] = []): Promise<CliResult> {
  return runCli(['convert', adapter, '--base', BASE, '--out', out, '--json', ...extra]);
}

describe('convert a .bin adapter (built CLI)', () => {
  it.each([
    ['contiguous storages, protocol 2', { layout: 'contiguous' }],
    ['shared and non-contiguous storages, protocol 4', { layout: 'shared-transposed', protocol: 4 }],
  ] as const)('%s: the GGUF of the safetensors twin, byte for byte', async (_name, options) => {
    const { bin, st, dir } = await pair(options);
    const fromBin = await convert(bin, join(dir, 'bin.gguf'));
    const fromSt = await convert(st, join(dir, 'st.gguf'));
    expect(fromBin.code, fromBin.stderr).toBe(0);
    expect(fromSt.code).toBe(0);
    const b = fromBin.json as ConvertJson;
    const s = fromSt.json as ConvertJson;
    expect(b.adapter.weightsFile).toBe('adapter_model.bin');
    expect(b.adapter.weightsSha256).toBe(sha256Bytes(await readFile(join(bin, 'adapter_model.bin'))));
    expect(b.tensors).toBe(s.tensors);
    const binGguf = await readFile(b.output);
    const stGguf = await readFile(s.output);
    // the GGUF records the checksum of the file it came from; everything else is the same bytes
    const at = binGguf.indexOf(b.adapter.weightsSha256);
    expect(at).toBeGreaterThan(0);
    binGguf.write(s.adapter.weightsSha256, at, 'latin1');
    expect(binGguf.equals(stGguf)).toBe(true);
  });

  it('with both files present, the safetensors is the weights converted', async () => {
    const { bin, dir } = await pair({});
    const both = join(dir, 'both', SPEC.id);
    const st = join(dir, 'st', SPEC.id);
    await writeAdapterWith(
      both,
      SPEC,
      'adapter_model.safetensors',
      await readFile(join(st, 'adapter_model.safetensors')),
    );
    // the .bin beside it, covered by the checksums too
    const metadata = JSON.parse(await readFile(join(both, 'metadata.json'), 'utf8')) as {
      checksum: { files: Record<string, string> };
    };
    const binBytes = await readFile(join(bin, 'adapter_model.bin'));
    await writeFile(join(both, 'adapter_model.bin'), binBytes);
    metadata.checksum.files['adapter_model.bin'] = sha256Bytes(binBytes);
    await writeFile(join(both, 'metadata.json'), JSON.stringify(metadata, null, 2));
    const r = await convert(both, join(dir, 'both.gguf'));
    expect(r.code, r.stderr).toBe(0);
    expect((r.json as ConvertJson).adapter).toMatchObject({
      weightsFile: 'adapter_model.safetensors',
      weightsSha256: sha256Bytes(await readFile(join(st, 'adapter_model.safetensors'))),
    });
  });

  it.each([
    ['a byte of a storage flipped', 'flip'],
    ['the .bin rewritten with the same bytes', 'rewrite'],
  ])('refuses to commit when the .bin changes between hashing and converting: %s', async (_name, how) => {
    const { bin, dir } = await pair({ layout: 'shared' });
    const run = startCli(['convert', bin, '--base', BASE, '--out', join(dir, 'x.gguf'), '--json'], {
      pauseAt: ['convert:before-pass'],
    });
    expect(await run.reached('convert:before-pass')).toBe(true);
    const path = join(bin, 'adapter_model.bin');
    const bytes = await readFile(path);
    if (how === 'flip') {
      const zip = await ZipArchive.fromBytes(bytes);
      const storage = zip.get('adapter_model/data/0');
      if (!storage) throw new Error('no storage 0');
      bytes[storage.dataOffset] = (bytes[storage.dataOffset] ?? 0) ^ 1;
    }
    await writeFile(path, bytes);
    run.resume();
    const r = await run.done;
    expect(r.code).toBe(1);
    expect(r.json).toMatchObject({ ok: false, error: { code: 'SOURCE_CHANGED' } });
    // nothing written: no output, no temp file
    expect((await readdir(dir)).sort()).toEqual(['bin', 'st']);
  });

  it('SIGINT while a .bin is converted: exit 130, the temp GGUF removed', async () => {
    const { bin, dir } = await pair({ layout: 'transposed' });
    const run = startCli(['convert', bin, '--base', BASE, '--out', join(dir, 'x.gguf'), '--json'], {
      pauseAt: ['convert:writing'],
    });
    expect(await run.reached('convert:writing')).toBe(true);
    expect((await readdir(dir)).some((f) => f.endsWith('.tmp'))).toBe(true);
    run.kill('SIGINT');
    const r = await run.done;
    expect(r.code).toBe(130);
    expect(r.json).toMatchObject({ ok: false, error: { code: 'INTERRUPTED' } });
    expect((await readdir(dir)).sort()).toEqual(['bin', 'st']);
  });
});

/** The LoRA tensors of SPEC as views and storages, for the damaged files below. */
function plainViews(): ReturnType<typeof binLayout> {
  return binLayout(generateLoraTensors(SPEC), 'shared');
}

/** A DEFLATE .bin whose first storage's compressed bytes are garbage (its headers, CRC and sizes intact). */
async function garbledDeflate(): Promise<Uint8Array> {
  const bytes = peftBinBytes(SPEC, { layout: 'shared', deflate: true });
  const zip = await ZipArchive.fromBytes(bytes);
  const entry = zip.get('adapter_model/data/0');
  if (!entry) throw new Error('no storage 0');
  for (let i = 0; i < entry.compressedSize; i++) bytes[entry.dataOffset + i] = 0xff;
  return bytes;
}

/** A DEFLATE .bin whose first storage's stream is cut: it inflates to fewer bytes than declared. */
async function shortDeflate(): Promise<Uint8Array> {
  const { views, storages } = plainViews();
  const zipped = viewsBin(views, storages, { deflate: true });
  const zip = await ZipArchive.fromBytes(zipped);
  const entry = zip.get('adapter_model/data/0');
  if (!entry) throw new Error('no storage 0');
  // a stored (uncompressed) deflate block of the first half only, marked final
  const half = (storages[0]?.data ?? new Uint8Array()).subarray(0, 64);
  const block = new Uint8Array(5 + half.length);
  block[0] = 1;
  new DataView(block.buffer).setUint16(1, half.length, true);
  new DataView(block.buffer).setUint16(3, ~half.length & 0xffff, true);
  block.set(half, 5);
  // rebuild the archive with this stream in place of the real one, sizes kept as declared
  const out = new Uint8Array(zipped.length - entry.compressedSize + block.length);
  out.set(zipped.subarray(0, entry.dataOffset));
  out.set(block, entry.dataOffset);
  out.set(zipped.subarray(entry.dataOffset + entry.compressedSize), entry.dataOffset + block.length);
  return fixSizes(out, entry.localHeaderOffset, block.length, entry.compressedSize - block.length);
}

/** `bytes` with the compressed size of the entry at `local` set to `size`, and every later offset moved by `-shift`. */
async function fixSizes(bytes: Uint8Array, local: number, size: number, shift: number): Promise<Uint8Array> {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  dv.setUint32(local + 18, size, true);
  // the end record: where the central directory starts
  const eocd = bytes.length - 22;
  const cdOffset = dv.getUint32(eocd + 16, true) - shift;
  dv.setUint32(eocd + 16, cdOffset, true);
  for (let at = cdOffset; dv.getUint32(at, true) === 0x02014b50;) {
    const offset = dv.getUint32(at + 42, true);
    if (offset === local) dv.setUint32(at + 20, size, true);
    if (offset > local) dv.setUint32(at + 42, offset - shift, true);
    at += 46 + dv.getUint16(at + 28, true) + dv.getUint16(at + 30, true) + dv.getUint16(at + 32, true);
  }
  await ZipArchive.fromBytes(bytes);
  return bytes;
}

/**
 * A state dict whose tensors are float32 views (`_rebuild_tensor_v3` with dtype torch.float32) of
 * storages declared as HalfStorage of twice the elements: the bytes fit, the element types do not.
 */
function dtypeMismatch(): Uint8Array {
  const tensors = generateLoraTensors(SPEC);
  const p = new PickleBuilder(2).proto().op(PICKLE_OP.EMPTY_DICT).memoize().op(PICKLE_OP.MARK);
  tensors.forEach((t, i) => {
    p.cachedStr(t.name).cachedGlobal('torch._utils', '_rebuild_tensor_v3').op(PICKLE_OP.MARK);
    p.op(PICKLE_OP.MARK)
      .cachedStr('storage')
      .cachedGlobal('torch', 'HalfStorage')
      .cachedStr(String(i))
      .cachedStr('cpu')
      .int(t.data.length / 2)
      .op(PICKLE_OP.TUPLE)
      .op(PICKLE_OP.BINPERSID);
    p.int(0)
      .intTuple(t.shape)
      .intTuple([t.shape[1] ?? 1, 1])
      .op(PICKLE_OP.NEWFALSE);
    p.cachedGlobal('collections', 'OrderedDict').op(PICKLE_OP.EMPTY_TUPLE).op(PICKLE_OP.REDUCE);
    p.cachedGlobal('torch', 'float32').op(PICKLE_OP.TUPLE).op(PICKLE_OP.REDUCE);
  });
  const pickle = p.op(PICKLE_OP.SETITEMS).stop().bytes();
  return zipBytes([
    { name: 'adapter_model/data.pkl', data: pickle },
    { name: 'adapter_model/byteorder', data: new TextEncoder().encode('little') },
    ...tensors.map((t, i) => ({ name: `adapter_model/data/${i}`, data: t.data })),
    { name: 'adapter_model/version', data: new TextEncoder().encode('3\n') },
  ]);
}

const BAD: Record<string, { bytes: () => Uint8Array | Promise<Uint8Array>; code: string; message: RegExp }> =
  {
    'a tensor that points outside its storage': {
      bytes: () => {
        const { views, storages } = plainViews();
        const b = views[1];
        if (b) b.storageOffset += 1;
        return viewsBin(views, storages);
      },
      code: 'BIN_STORAGE_MISMATCH',
      message: /reaches byte/u,
    },
    'a storage entry missing from the archive': {
      bytes: () => {
        const { views, storages } = plainViews();
        return viewsBin(views, storages, { omit: ['3'] });
      },
      code: 'BIN_STORAGE_MISSING',
      message: /"adapter_model\/data\/3"/u,
    },
    'a compressed storage whose stream is garbage': {
      bytes: garbledDeflate,
      code: 'BIN_ZIP_INVALID',
      message: /storage entry "adapter_model\/data\/0" is damaged: it does not inflate/u,
    },
    'a compressed storage that inflates to fewer bytes than declared': {
      bytes: shortDeflate,
      code: 'BIN_ZIP_INVALID',
      message: /inflates to 64 bytes, not its declared/u,
    },
    'float32 tensors over storages of float16 elements': {
      bytes: dtypeMismatch,
      code: 'BIN_STORAGE_MISMATCH',
      message: /is F32 but views storage "\d+" of F16/u,
    },
  };

describe('convert refuses a damaged .bin: code, exit 1, one JSON object, nothing written', () => {
  it.each(Object.keys(BAD))('%s', async (name) => {
    const c = BAD[name];
    if (!c) throw new Error(`no case ${name}`);
    const dir = await tempDir('codi-convert-bad-bin-');
    const adapter = join(dir, 'adapter', SPEC.id);
    await writeAdapterWith(adapter, SPEC, 'adapter_model.bin', await c.bytes());
    const outDir = join(dir, 'out');
    await mkdir(outDir);
    const r = await runCli(['convert', adapter, '--base', BASE, '--out', join(outDir, 'x.gguf'), '--json']);
    expect(r.code, r.stderr).toBe(1);
    const e = r.json as ErrorJson;
    expect(e).toMatchObject({ ok: false, error: { code: c.code, exitCode: 1 } });
    expect(e.error.message).toMatch(c.message);
    expect(r.stderr).not.toMatch(/\n\s+at /u);
    // no GGUF, no temp file, no cache
    expect(await readdir(outDir)).toEqual([]);
    expect(await readdir(join(dir, 'adapter'))).toEqual([SPEC.id]);
  });
});
