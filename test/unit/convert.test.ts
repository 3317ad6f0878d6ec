import { link, readdir, readFile, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { baseCheckFor, permuteRopeRows, readBaseForCheck } from '../../src/base-model.js';
import { convertAdapter } from '../../src/convert.js';
import { sameHeader } from '../../src/convert-pass.js';
import { GgmlType } from '../../src/formats/ggml-types.js';
import { getF32, getString } from '../../src/formats/gguf.js';
import { readGgufHeader, readTensorData, readTensorF32 } from '../../src/files/gguf.js';
import { verifyAdapter } from '../../src/verify.js';
import { hfToGgufPermute } from '../helpers/reference.js';
import { writeGguf } from '../../src/files/gguf-writer.js';
import { encodeSafetensors, parseSafetensorsHeader } from '../../src/formats/safetensors.js';
import { sha256Bytes } from '../../src/checksum.js';
import { generateLoraTensors, writeMetadata, type AdapterSpec } from '../../src/testkit/peft-adapter.js';
import { writeTinyModel } from '../../src/testkit/tiny-model.js';
import { ADAPTER_SPECS, writeAdapter, writeUnsupportedBase } from '../helpers/fixtures.js';
import { tempDir } from '../helpers/tmp.js';
import { rejected } from '../helpers/errors.js';

let dir: string;
let base: string;
/** metadata.json `base` binding an adapter to `base` */
let bound: NonNullable<AdapterSpec['base']>;

beforeAll(async () => {
  dir = await tempDir('codi-convert-unit-');
  base = join(dir, 'base.gguf');
  await writeTinyModel(base);
  bound = { sha256: sha256Bytes(await readFile(base)), name: 'codi-tiny-qwen2' };
});

async function adapter(spec: AdapterSpec): Promise<string> {
  return writeAdapter(dir, spec);
}

/** A copy of the GGUF `src` whose attention head counts say `heads` and `kv`, the rest unchanged. */
async function withHeadCounts(src: string, dst: string, heads: number, kv: number): Promise<void> {
  const g = await readGgufHeader(src);
  const arch = getString(g, 'general.architecture') ?? '';
  const changed: Record<string, number> = {
    [`${arch}.attention.head_count`]: heads,
    [`${arch}.attention.head_count_kv`]: kv,
  };
  await writeGguf(
    dst,
    {
      metadata: [...g.metadata.values()].map(
        (e) => [e.key, { type: e.type, value: changed[e.key] ?? e.value }] as const,
      ),
      tensors: g.tensors.map((t) => ({ name: t.name, ne: t.ne, type: t.type })),
      alignment: g.alignment,
    },
    (spec) => readTensorData(src, g, spec.name),
  );
}

/** The PEFT tensor `name` of `spec`, as generated (values rounded to its dtype). */
function peftTensor(
  spec: AdapterSpec,
  name: string,
): { shape: number[]; values: Float32Array; data: Uint8Array } {
  const t = generateLoraTensors(spec).find((x) => x.name === `base_model.model.${name}`);
  if (!t) throw new Error(`no tensor ${name}`);
  return t;
}

describe('convert', () => {
  it('writes a llama.cpp LoRA GGUF: metadata, names, layouts, types', async () => {
    const a = await adapter(ADAPTER_SPECS.plain as AdapterSpec);
    const out = join(dir, 'plain.gguf');
    const r = await convertAdapter(a, { base, out });
    expect(r).toMatchObject({
      output: out,
      cached: false,
      outtype: 'f32',
      alpha: 16,
      tensors: 28,
      folded: [],
    });
    const g = await readGgufHeader(out);
    expect(getString(g, 'general.type')).toBe('adapter');
    expect(getString(g, 'general.architecture')).toBe('qwen2');
    expect(getString(g, 'adapter.type')).toBe('lora');
    expect(getF32(g, 'adapter.lora.alpha')).toBe(16);
    expect(getString(g, 'codi.adapter.weights_sha256')).toBe(r.adapter.weightsSha256);
    const byName = new Map(g.tensors.map((t) => [t.name, t]));
    // lora_a ne = [in, r], lora_b ne = [r, out] (src/llama-adapter.cpp)
    expect(byName.get('blk.0.attn_q.weight.lora_a')?.ne).toEqual([64, 8]);
    expect(byName.get('blk.0.attn_q.weight.lora_b')?.ne).toEqual([8, 64]);
    expect(byName.get('blk.1.attn_k.weight.lora_b')?.ne).toEqual([8, 32]);
    expect(byName.get('blk.1.ffn_down.weight.lora_a')?.ne).toEqual([128, 8]);
    expect([...byName.values()].every((t) => t.type === GgmlType.F32)).toBe(true);

    // values are PEFT's, unchanged when no folding is needed
    const peft = generateLoraTensors(ADAPTER_SPECS.plain as AdapterSpec);
    const b = peft.find((t) => t.name === 'base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight');
    expect(await readTensorF32(out, g, 'blk.0.attn_q.weight.lora_b')).toEqual(b?.values);
  });

  it('writes rsLoRA as alpha·sqrt(r) so llama.cpp applies alpha/sqrt(r), with nothing folded', async () => {
    const r = await convertAdapter(await adapter(ADAPTER_SPECS.rslora as AdapterSpec), {
      base,
      out: join(dir, 'rs.gguf'),
    });
    expect(r.alpha).toBe(8 * Math.sqrt(16));
    expect(r.folded).toEqual([]);
  });

  it('folds rank_pattern/alpha_pattern scales into lora_b exactly', async () => {
    const spec = ADAPTER_SPECS.patterns as AdapterSpec;
    const out = join(dir, 'pat.gguf');
    const r = await convertAdapter(await adapter(spec), { base, out });
    // r=8, alpha=16 → llama.cpp applies 16/rank; PEFT wants alpha_m/rank_m
    const folded = new Map(r.folded.map((f) => [f.module, f]));
    expect(folded.get('model.layers.0.self_attn.v_proj')).toEqual({
      module: 'model.layers.0.self_attn.v_proj',
      scale: 4,
      factor: 2,
    });
    expect(folded.get('model.layers.1.mlp.up_proj')?.factor).toBeCloseTo(0.25, 12);
    // a rank_pattern entry alone needs no fold: llama.cpp divides by the tensor's own rank
    expect(folded.has('model.layers.0.self_attn.q_proj')).toBe(false);
    expect(folded.has('model.layers.0.mlp.down_proj')).toBe(false);
    const g = await readGgufHeader(out);
    expect(g.tensorsByName.get('blk.0.attn_q.weight.lora_a')?.ne).toEqual([64, 4]);
    const peft = generateLoraTensors(spec).find(
      (t) => t.name === 'base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight',
    );
    const got = await readTensorF32(out, g, 'blk.0.attn_v.weight.lora_b');
    expect(got).toEqual(peft?.values.map((v) => Math.fround(v * 2)));
  });

  it('q8_0 keeps rows that are not a multiple of 32 in f16 and says so', async () => {
    const r = await convertAdapter(await adapter(ADAPTER_SPECS.plain as AdapterSpec), {
      base,
      out: join(dir, 'q8.gguf'),
      outtype: 'q8_0',
    });
    expect(r.f16Fallback).toHaveLength(14);
    expect(r.f16Fallback.every((n) => n.endsWith('.lora_b'))).toBe(true);
    const g = await readGgufHeader(join(dir, 'q8.gguf'));
    expect(g.tensorsByName.get('blk.0.attn_q.weight.lora_a')?.type).toBe(GgmlType.Q8_0);
    expect(g.tensorsByName.get('blk.0.attn_q.weight.lora_b')?.type).toBe(GgmlType.F16);
  });

  it('caches by weights, config, outtype and arch next to the adapter', async () => {
    const a = await adapter({ ...(ADAPTER_SPECS.plain as AdapterSpec), id: 'cached' });
    const first = await convertAdapter(a, { base });
    expect(first.cached).toBe(false);
    expect(first.output).toBe(join(dir, '.gguf-cache', first.output.split('/').pop() ?? ''));
    const again = await convertAdapter(a, { base });
    expect(again).toMatchObject({ cached: true, output: first.output });
    const f16 = await convertAdapter(a, { base, outtype: 'f16' });
    expect(f16.output).not.toBe(first.output);
    // same weights, another alpha: another GGUF (the folded scales differ)
    const spec = { ...(ADAPTER_SPECS.plain as AdapterSpec), id: 'cached', alpha: 32 };
    await writeAdapter(dir, spec);
    const otherAlpha = await convertAdapter(a, { base });
    expect(otherAlpha.cached).toBe(false);
    expect(otherAlpha.output).not.toBe(first.output);
  });

  it('the pass converts only under the header the plan was made from (whatever the timestamps say)', () => {
    const file = encodeSafetensors([
      { name: 'a', dtype: 'F32', shape: [2], data: new Uint8Array(8) },
      { name: 'b', dtype: 'F32', shape: [1], data: new Uint8Array(4) },
    ]);
    const header = parseSafetensorsHeader(file, file.length);
    const prefix = file.subarray(0, header.dataOffset);
    expect(sameHeader(prefix, header)).toBe(true);
    // same length, another name; the same tensors at swapped offsets; not a header at all
    const renamed = Buffer.from(Buffer.from(prefix).toString('latin1').replace('"a"', '"c"'), 'latin1');
    expect(renamed.length).toBe(prefix.length);
    expect(sameHeader(renamed, header)).toBe(false);
    const swapped = encodeSafetensors([
      { name: 'b', dtype: 'F32', shape: [1], data: new Uint8Array(4) },
      { name: 'a', dtype: 'F32', shape: [2], data: new Uint8Array(8) },
    ]);
    expect(sameHeader(swapped.subarray(0, header.dataOffset), header)).toBe(false);
    expect(sameHeader(new Uint8Array(header.dataOffset), header)).toBe(false);
  });

  it('q8_0: a cache hit reports the same f16 fallbacks as the conversion that filled the cache', async () => {
    const a = await adapter({ ...(ADAPTER_SPECS.plain as AdapterSpec), id: 'q8-cached' });
    const first = await convertAdapter(a, { base, outtype: 'q8_0' });
    const again = await convertAdapter(a, { base, outtype: 'q8_0' });
    expect(first.cached).toBe(false);
    expect(again.cached).toBe(true);
    expect(first.f16Fallback).toHaveLength(14);
    expect(again.f16Fallback).toEqual(first.f16Fallback);
    expect(again.tensors).toBe(first.tensors);
    expect(again.folded).toEqual(first.folded);
  });

  it('the cache key holds what the conversion takes from the base: llama bases differing only in head counts', async () => {
    const llama4 = join(dir, 'llama-h4.gguf');
    const llama2 = join(dir, 'llama-h2.gguf');
    await writeTinyModel(llama4, { arch: 'llama' });
    await withHeadCounts(llama4, llama2, 2, 1);
    const spec = { ...(ADAPTER_SPECS.plain as AdapterSpec), id: 'llama-heads' };
    const a = await adapter(spec);
    const four = await convertAdapter(a, { base: llama4 });
    const two = await convertAdapter(a, { base: llama2 });
    expect(two.cached).toBe(false);
    expect(two.output).not.toBe(four.output);
    expect((await convertAdapter(a, { base: llama4 })).output).toBe(four.output);
    // and each GGUF has its own base's permutation
    const b = peftTensor(spec, 'model.layers.0.self_attn.q_proj.lora_B.weight');
    for (const [r, heads] of [
      [four, 4],
      [two, 2],
    ] as const) {
      const g = await readGgufHeader(r.output);
      expect(await readTensorF32(r.output, g, 'blk.0.attn_q.weight.lora_b')).toEqual(
        hfToGgufPermute(b.values, 64, 8, heads),
      );
    }
  });

  it("llama q/k rows against llama.cpp's permute written from its definition (GQA: 4 heads, 2 KV heads)", async () => {
    const llama = join(dir, 'llama.gguf');
    await writeTinyModel(llama, { arch: 'llama' });
    const spec = { ...(ADAPTER_SPECS.plain as AdapterSpec), id: 'llama-gqa' };
    const out = join(dir, 'llama-gqa.gguf');
    await convertAdapter(await adapter(spec), { base: llama, out });
    const g = await readGgufHeader(out);
    const q = peftTensor(spec, 'model.layers.1.self_attn.q_proj.lora_B.weight');
    const k = peftTensor(spec, 'model.layers.1.self_attn.k_proj.lora_B.weight');
    const v = peftTensor(spec, 'model.layers.1.self_attn.v_proj.lora_B.weight');
    expect(k.shape).toEqual([32, 8]);
    const gotQ = await readTensorF32(out, g, 'blk.1.attn_q.weight.lora_b');
    const gotK = await readTensorF32(out, g, 'blk.1.attn_k.weight.lora_b');
    expect(gotQ).toEqual(hfToGgufPermute(q.values, 64, 8, 4));
    // k_proj is permuted with head_count_kv (llama.cpp: permute(data, n_head, n_head_kv) uses n_head_kv)
    expect(gotK).toEqual(hfToGgufPermute(k.values, 32, 8, 2));
    expect(gotK).not.toEqual(hfToGgufPermute(k.values, 32, 8, 4));
    expect(gotK).not.toEqual(k.values);
    // v and lora_a are not permuted
    expect(await readTensorF32(out, g, 'blk.1.attn_v.weight.lora_b')).toEqual(v.values);
    expect(await readTensorF32(out, g, 'blk.1.attn_k.weight.lora_a')).toEqual(
      peftTensor(spec, 'model.layers.1.self_attn.k_proj.lora_A.weight').values,
    );
  });

  it('a llama base whose head count does not split q/k: verify --base and convert both refuse it, naming the tensor', async () => {
    const llama = join(dir, 'llama-for-h3.gguf');
    const h3 = join(dir, 'llama-h3.gguf');
    await writeTinyModel(llama, { arch: 'llama' });
    await withHeadCounts(llama, h3, 3, 3);
    const a = await adapter({ ...(ADAPTER_SPECS.plain as AdapterSpec), id: 'h3' });
    const report = await verifyAdapter(a, { baseCheck: baseCheckFor(await readBaseForCheck(h3)) });
    expect(report.ok).toBe(false);
    const q = report.findings.find((f) => f.message.startsWith('blk.0.attn_q.weight'));
    expect(q).toMatchObject({ level: 'error', code: 'BASE_INCOMPATIBLE' });
    expect(q?.message).toContain('cannot split 64 rows into 3 heads');
    expect(q?.message).toContain('llama.attention.head_count = 3');
    const k = report.findings.find((f) => f.message.startsWith('blk.0.attn_k.weight'));
    expect(k?.message).toContain('cannot split 32 rows into 3 heads');
    expect(k?.message).toContain('head_count_kv = 3');
    const target = join(dir, 'never-h3.gguf');
    const e = await rejected(convertAdapter(a, { base: h3, out: target }));
    expect(e.code).toBe('BASE_INCOMPATIBLE');
    expect(e.message).toMatch(/cannot split (64|32) rows into 3 heads/);
    await expect(stat(target)).rejects.toThrow();
  });

  it('F16 weights: converted to f32 exactly, and to f16 bit for bit', async () => {
    const spec = ADAPTER_SPECS.f16 as AdapterSpec;
    const a = await adapter(spec);
    const f32 = join(dir, 'f16-in.f32.gguf');
    const f16 = join(dir, 'f16-in.f16.gguf');
    const r = await convertAdapter(a, { base, out: f32 });
    await convertAdapter(a, { base, out: f16, outtype: 'f16' });
    expect(r.tensors).toBe(28);
    const g32 = await readGgufHeader(f32);
    const g16 = await readGgufHeader(f16);
    for (const [peft, name] of [
      ['model.layers.0.self_attn.q_proj.lora_A.weight', 'blk.0.attn_q.weight.lora_a'],
      ['model.layers.1.mlp.down_proj.lora_B.weight', 'blk.1.ffn_down.weight.lora_b'],
    ] as const) {
      const t = peftTensor(spec, peft);
      expect(g32.tensorsByName.get(name)?.type).toBe(GgmlType.F32);
      expect(await readTensorF32(f32, g32, name)).toEqual(t.values);
      expect(g16.tensorsByName.get(name)?.type).toBe(GgmlType.F16);
      expect(Buffer.from(await readTensorData(f16, g16, name))).toEqual(Buffer.from(t.data));
    }
  });

  it('llama q/k permutation: HF half-split rows become interleaved pairs within each head', () => {
    // 2 heads × head_dim 4, one column: HF rows [h0: a0 a1 b0 b1 | h1: …] → [a0 b0 a1 b1 | …]
    const src = Float32Array.from([0, 1, 2, 3, 10, 11, 12, 13]);
    expect([...permuteRopeRows(src, 8, 1, 2)]).toEqual([0, 2, 1, 3, 10, 12, 11, 13]);
  });
});

describe('convert refuses, with a clear code and no output file', () => {
  const out = (): string => join(dir, `never-${Math.random().toString(36).slice(2)}.gguf`);

  async function refuses(a: string, baseFile: string, code: string, message?: RegExp): Promise<void> {
    const target = out();
    const e = await rejected(convertAdapter(a, { base: baseFile, out: target }));
    expect(e.code).toBe(code);
    if (message) expect(e.message).toMatch(message);
    await expect(stat(target)).rejects.toThrow();
  }

  it('a checksum mismatch: the write that started during hashing is aborted, nothing is committed', async () => {
    const spec = { ...(ADAPTER_SPECS.plain as AdapterSpec), id: 'tampered' };
    const a = await adapter(spec);
    const weights = join(a, 'adapter_model.safetensors');
    const bytes = await readFile(weights);
    bytes[bytes.length - 1] = (bytes[bytes.length - 1] ?? 0) ^ 0xff;
    await writeFile(weights, bytes);
    await refuses(a, base, 'CHECKSUM_MISMATCH');
    // nor into the default cache
    const e = await rejected(convertAdapter(a, { base }));
    expect(e.code).toBe('CHECKSUM_MISMATCH');
    const cache = await readdir(join(dir, '.gguf-cache')).catch(() => []);
    expect(cache.filter((f) => f.startsWith('tampered.'))).toEqual([]);
  });

  it('the pass hashes every byte it reads: a change in the header, a middle tensor or a cached adapter fails', async () => {
    const spec = { ...(ADAPTER_SPECS.plain as AdapterSpec), id: 'tampered-here' };
    const a = await adapter(spec);
    const weights = join(a, 'adapter_model.safetensors');
    const pristine = await readFile(weights);
    const headerEnd = 8 + Number(pristine.readBigUInt64LE(0));
    // the header one space longer (still valid, the same tensors), then a byte in the middle of the data
    const longer = Buffer.alloc(pristine.length + 1);
    longer.writeBigUInt64LE(BigInt(headerEnd - 8 + 1), 0);
    longer[8] = 0x20;
    pristine.copy(longer, 9, 8);
    const flipped = Buffer.from(pristine);
    const middle = headerEnd + Math.floor((pristine.length - headerEnd) / 2);
    flipped[middle] = (flipped[middle] ?? 0) ^ 0x01;
    for (const bytes of [longer, flipped]) {
      await writeFile(weights, bytes);
      await refuses(a, base, 'CHECKSUM_MISMATCH');
    }
    // converted once, intact; then changed: the cached GGUF is not handed out for it
    await writeFile(weights, pristine);
    expect((await convertAdapter(a, { base })).cached).toBe(false);
    expect((await convertAdapter(a, { base })).cached).toBe(true);
    const bytes = Buffer.from(pristine);
    bytes[headerEnd] = (bytes[headerEnd] ?? 0) ^ 0x01;
    await writeFile(weights, bytes);
    expect((await rejected(convertAdapter(a, { base }))).code).toBe('CHECKSUM_MISMATCH');
  });

  it('DoRA', async () => {
    const a = await adapter({
      ...(ADAPTER_SPECS.plain as AdapterSpec),
      id: 'dora',
      extraConfig: { use_dora: true },
    });
    await refuses(a, base, 'CONFIG_UNSUPPORTED', /DoRA/);
  });

  it('modules_to_save', async () => {
    const a = await adapter({
      ...(ADAPTER_SPECS.plain as AdapterSpec),
      id: 'mts',
      extraConfig: { modules_to_save: ['lm_head'] },
    });
    await refuses(a, base, 'CONFIG_UNSUPPORTED', /modules_to_save/);
  });

  it('lm_head on a base with tied embeddings', async () => {
    const a = await adapter({
      id: 'lmhead',
      r: 4,
      alpha: 8,
      targetModules: ['lm_head'],
      modules: [{ module: 'lm_head', inFeatures: 64, outFeatures: 484 }],
      seed: 9,
    });
    await refuses(a, base, 'BASE_TIED_LM_HEAD', /tie/);
    const untied = join(dir, 'untied.gguf');
    await writeTinyModel(untied, { tiedEmbeddings: false });
    const ok = await convertAdapter(a, { base: untied, out: out() });
    expect(ok.tensors).toBe(2);
  });

  it('an adapted tensor the base lacks, and a shape mismatch, naming the tensor and both shapes', async () => {
    const a = await adapter({
      ...(ADAPTER_SPECS.plain as AdapterSpec),
      id: 'wide',
      modules: [{ module: 'model.layers.0.self_attn.q_proj', inFeatures: 96, outFeatures: 64 }],
      targetModules: ['q_proj'],
    });
    await refuses(a, base, 'BASE_INCOMPATIBLE', /blk\.0\.attn_q\.weight.*\[64, 96\].*\[64, 64\]/);
    const deep = await adapter({
      ...(ADAPTER_SPECS.plain as AdapterSpec),
      id: 'deep',
      modules: [{ module: 'model.layers.7.self_attn.q_proj', inFeatures: 64, outFeatures: 64 }],
      targetModules: ['q_proj'],
    });
    await refuses(deep, base, 'BASE_INCOMPATIBLE', /blk\.7\.attn_q\.weight.*does not exist/);
  });

  it('an unsupported architecture', async () => {
    const gemma = await writeUnsupportedBase(join(dir, 'gemma.gguf'));
    await refuses(await adapter(ADAPTER_SPECS.plain as AdapterSpec), gemma, 'BASE_ARCH_UNSUPPORTED', /gemma/);
  });

  it('a base that is not a model: an adapter GGUF passed as --base', async () => {
    const a = await adapter(ADAPTER_SPECS.plain as AdapterSpec);
    const lora = join(dir, 'as-base.gguf');
    await convertAdapter(a, { base, out: lora });
    await refuses(a, lora, 'BASE_NOT_MODEL', /adapter GGUF/);
  });

  it('a truncated base, bad magic, bad version', async () => {
    const a = await adapter(ADAPTER_SPECS.plain as AdapterSpec);
    const bytes = await readFile(base);
    const truncated = join(dir, 'truncated.gguf');
    await writeFile(truncated, bytes.subarray(0, 1000));
    await refuses(a, truncated, 'GGUF_TRUNCATED');
    const magic = join(dir, 'magic.gguf');
    await writeFile(magic, Buffer.concat([Buffer.from('GGML'), bytes.subarray(4)]));
    await refuses(a, magic, 'GGUF_MAGIC');
    const version = join(dir, 'version.gguf');
    const v = Buffer.from(bytes);
    v.writeUInt32LE(1, 4);
    await writeFile(version, v);
    await refuses(a, version, 'GGUF_VERSION');
  });

  it('adapter tensors in an unsupported dtype (I64)', async () => {
    const spec = { ...(ADAPTER_SPECS.plain as AdapterSpec), id: 'int64' };
    const d = join(dir, spec.id);
    await writeAdapter(dir, spec);
    const tensors = generateLoraTensors(spec).map(({ name, shape, data }, i) =>
      i === 0
        ? { name, dtype: 'I64' as const, shape, data: new Uint8Array(data.length * 2) }
        : { name, dtype: 'F32' as const, shape, data },
    );
    const weights = encodeSafetensors(tensors);
    await writeFile(join(d, 'adapter_model.safetensors'), weights);
    await writeMetadata(d, spec, {
      'adapter_config.json': sha256Bytes(await readFile(join(d, 'adapter_config.json'))),
      'adapter_model.safetensors': sha256Bytes(weights),
    });
    await refuses(d, base, 'TENSOR_DTYPE', /I64/);
  });

  it('--out naming the base model, by path, symlink or hard link: a usage error, the base untouched', async () => {
    const a = await adapter({ ...(ADAPTER_SPECS.plain as AdapterSpec), id: 'out-base' });
    const own = join(dir, 'own-base.gguf');
    await writeTinyModel(own);
    const before = await readFile(own);
    const sym = join(dir, 'own-base-symlink.gguf');
    const hard = join(dir, 'own-base-hardlink.gguf');
    await symlink(own, sym);
    await link(own, hard);
    for (const out of [own, join(dir, '.', 'x', '..', 'own-base.gguf'), sym, hard]) {
      const e = await rejected(convertAdapter(a, { base: own, out }));
      expect(e.code, out).toBe('OUT_IS_BASE');
      expect(e.exitCode).toBe(2);
    }
    // the base named through the link, --out the file itself
    expect((await rejected(convertAdapter(a, { base: sym, out: own }))).code).toBe('OUT_IS_BASE');
    expect(await readFile(own)).toEqual(before);
  });

  it('--out inside the adapter folder (its files, a new file, the folder, through a symlink or a hard link): a usage error', async () => {
    const a = await adapter({ ...(ADAPTER_SPECS.plain as AdapterSpec), id: 'out-adapter' });
    const files = await readdir(a);
    const weights = await readFile(join(a, 'adapter_model.safetensors'));
    const alias = join(dir, 'out-adapter-alias');
    await symlink(a, alias);
    const hard = join(dir, 'weights-hardlink.safetensors');
    await link(join(a, 'adapter_model.safetensors'), hard);
    for (const out of [
      join(a, 'adapter_model.safetensors'),
      join(a, 'metadata.json'),
      join(a, 'adapter.gguf'),
      join(a, 'sub', 'adapter.gguf'),
      a,
      join(alias, 'adapter.gguf'),
      hard,
    ]) {
      const e = await rejected(convertAdapter(a, { base, out }));
      expect(e.code, out).toBe('OUT_IN_ADAPTER');
      expect(e.exitCode).toBe(2);
    }
    expect(await readdir(a)).toEqual(files);
    expect(await readFile(join(a, 'adapter_model.safetensors'))).toEqual(weights);
    // beside the adapter is fine
    expect((await convertAdapter(a, { base, out: join(dir, 'out-adapter.gguf') })).cached).toBe(false);
  });

  it('a missing base file is an environment error (exit 3)', async () => {
    const e = await rejected(
      convertAdapter(await adapter(ADAPTER_SPECS.plain as AdapterSpec), { base: join(dir, 'nope.gguf') }),
    );
    expect(e.exitCode).toBe(3);
  });
});

describe('rank_pattern and alpha_pattern keys that PEFT releases read differently', () => {
  // layer 0's q_proj: rank key q_proj and alpha key layers.0.self_attn.q_proj both select it. PEFT ≥ 0.14
  // looks each up separately (rank 4, alpha 32: scale 8); PEFT 0.13 used the first matching key for both
  // (q_proj: rank 4, alpha 16: scale 4). llama.cpp applies 16/4, so scale 8 is a fold of 2.
  const overlapping = (id: string, extraConfig?: Record<string, unknown>): AdapterSpec => ({
    ...(ADAPTER_SPECS.plain as AdapterSpec),
    id,
    rankPattern: { q_proj: 4 },
    alphaPattern: { 'layers.0.self_attn.q_proj': 32 },
    // bound to its base: the only warning left is the one about the patterns
    base: bound,
    ...(extraConfig ? { extraConfig } : {}),
  });
  const q0 = 'model.layers.0.self_attn.q_proj';

  it('no peft_version: the current PEFT scale, with a warning that names both results (convert, verify with and without --base, once)', async () => {
    const a = await adapter(overlapping('pattern-ambiguous'));
    const r = await convertAdapter(a, { base, out: join(dir, 'pattern-ambiguous.gguf') });
    expect(r.folded.find((f) => f.module === q0)).toEqual({ module: q0, scale: 8, factor: 2 });
    expect(r.warnings).toHaveLength(1);
    const w = r.warnings[0];
    expect(w).toMatchObject({
      level: 'warning',
      code: 'CONFIG_PATTERN_AMBIGUOUS',
      file: 'adapter_config.json',
    });
    expect(w?.message).toContain(`${q0}: PEFT ≥ 0.15 gives rank 4, alpha 32, scale 8`);
    expect(w?.message).toContain('PEFT ≤ 0.13 gives rank 4, alpha 16, scale 4');
    expect(w?.hint).toContain('peft_version');
    const report = await verifyAdapter(a, { baseCheck: baseCheckFor(await readBaseForCheck(base)) });
    expect(report.ok).toBe(true);
    expect(report.findings).toEqual([w]);
    // the config and the module names decide it: verify without a base says the same
    const alone = await verifyAdapter(a);
    expect(alone.ok).toBe(true);
    expect(alone.findings).toEqual([w]);
  });

  it.each([
    ['0.13.2', 4, 1],
    ['0.18.0', 8, 2],
  ])(
    'peft_version %s recorded: the scale of that release (%d), no warning',
    async (version, scale, factor) => {
      const a = await adapter(overlapping(`pattern-${version}`, { peft_version: version }));
      const out = join(dir, `pattern-${version}.gguf`);
      const r = await convertAdapter(a, { base, out });
      expect(r.warnings).toEqual([]);
      expect(r.folded.find((f) => f.module === q0)).toEqual(
        factor === 1 ? undefined : { module: q0, scale, factor },
      );
      const spec = overlapping('x');
      const b = peftTensor(spec, `${q0}.lora_B.weight`);
      const g = await readGgufHeader(out);
      expect(await readTensorF32(out, g, 'blk.0.attn_q.weight.lora_b')).toEqual(
        b.values.map((v) => Math.fround(v * factor)),
      );
    },
  );
});
