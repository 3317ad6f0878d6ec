import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { GgmlType } from '../../src/formats/ggml-types.js';
import { getBool, getF32, getString, getStringArray, getU32, torchShape } from '../../src/formats/gguf.js';
import { readGgufHeader, readTensorF32 } from '../../src/files/gguf.js';
import {
  TINY_HPARAMS,
  byteToUnicode,
  tinyModelTensors,
  tinyModelWeights,
  tinyTensorWeights,
  tinyVocab,
  writeTinyModel,
  writeTinyQwen2Model,
} from '../../src/testkit/tiny-model.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'codi-tiny-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('tiny vocabulary', () => {
  const vocab = tinyVocab();
  const unicodeToByte = new Map(byteToUnicode().map((ch, b) => [ch, b]));

  it('maps bytes like GPT-2', () => {
    const map = byteToUnicode();
    expect(map[0x41]).toBe('A');
    expect(map[0x20]).toBe('Ġ');
    expect(map[0x0a]).toBe('Ċ');
    expect(map[0x00]).toBe('Ā');
    expect(map[0x7f]).toBe('ġ');
    expect(new Set(map).size).toBe(256);
  });

  it('has only tokens that decode to complete ASCII, plus three control tokens', () => {
    const special = vocab.tokens.slice(-3);
    expect(special).toEqual(['<|endoftext|>', '<|im_start|>', '<|im_end|>']);
    for (const [id, token] of vocab.tokens.entries()) {
      if (vocab.tokenTypes[id] === 3) continue;
      expect(vocab.tokenTypes[id]).toBe(1);
      const bytes = Array.from(token, (ch) => unicodeToByte.get(ch));
      for (const b of bytes) expect(b !== undefined && b < 0x80, `token ${id} '${token}'`).toBe(true);
    }
    expect(vocab.tokens.slice(0, 128).map((t) => unicodeToByte.get(t))).toEqual([...Array(128).keys()]);
    expect(new Set(vocab.tokens).size).toBe(vocab.tokens.length);
  });

  it('has merges of existing tokens into existing tokens', () => {
    const ids = new Set(vocab.tokens);
    expect(vocab.merges.length).toBeGreaterThan(100);
    for (const m of vocab.merges) {
      const [left, right, ...rest] = m.split(' ');
      expect(rest).toEqual([]);
      expect(ids.has(left ?? ''), m).toBe(true);
      expect(ids.has(right ?? ''), m).toBe(true);
      expect(ids.has(`${left ?? ''}${right ?? ''}`), m).toBe(true);
    }
    expect(ids.has('Ġreturn')).toBe(true);
    expect(ids.has('def')).toBe(true);
  });
});

describe('tiny model', () => {
  it('lists its tensors with PyTorch shapes and HF names', () => {
    const tensors = tinyModelTensors();
    const byName = new Map(tensors.map((t) => [t.name, t]));
    const nVocab = tinyVocab().tokens.length;
    expect(byName.get('token_embd.weight')?.shape).toEqual([nVocab, 64]);
    expect(byName.get('blk.0.attn_q.weight')?.shape).toEqual([64, 64]);
    expect(byName.get('blk.0.attn_k.weight')?.shape).toEqual([32, 64]);
    expect(byName.get('blk.1.attn_v.bias')?.shape).toEqual([32]);
    expect(byName.get('blk.1.ffn_down.weight')).toMatchObject({
      shape: [64, 128],
      ne: [128, 64],
      hfName: 'model.layers.1.mlp.down_proj.weight',
    });
    expect(byName.has('output.weight')).toBe(false);
    expect(tensors.filter((t) => t.name.startsWith('blk.')).length).toBe(2 * 12);
    const llama = tinyModelTensors({ arch: 'llama', nLayer: 3, tiedEmbeddings: false });
    expect(llama.some((t) => t.name.endsWith('.bias'))).toBe(false);
    expect(llama.find((t) => t.name === 'output.weight')?.hfName).toBe('lm_head.weight');
    expect(llama.filter((t) => t.name.startsWith('blk.2.')).length).toBe(9);
  });

  it('gives a tensor the same weights whatever model it is in', () => {
    const q = tinyModelTensors().find((t) => t.name === 'blk.1.attn_q.weight');
    const ql = tinyModelTensors({ arch: 'llama', nLayer: 3 }).find((t) => t.name === 'blk.1.attn_q.weight');
    if (q === undefined || ql === undefined) throw new Error('missing');
    expect(tinyTensorWeights(q)).toEqual(tinyTensorWeights(ql));
    expect(tinyTensorWeights(q, 1)).not.toEqual(tinyTensorWeights(q));
    const [first] = tinyModelWeights();
    expect(first?.[0].name).toBe('token_embd.weight');
  });

  it('writes a small GGUF that reads back with llama.cpp keys and the generated weights', async () => {
    const path = join(dir, 'tiny.gguf');
    const info = await writeTinyQwen2Model(path);
    expect(info.bytes).toBeLessThan(1024 * 1024);
    const f = await readGgufHeader(path);
    expect(getString(f, 'general.architecture')).toBe('qwen2');
    expect(getU32(f, 'qwen2.block_count')).toBe(2);
    expect(getU32(f, 'qwen2.embedding_length')).toBe(TINY_HPARAMS.nEmbd);
    expect(getU32(f, 'qwen2.attention.head_count')).toBe(4);
    expect(getU32(f, 'qwen2.attention.head_count_kv')).toBe(2);
    expect(getF32(f, 'qwen2.attention.layer_norm_rms_epsilon')).toBeCloseTo(1e-6, 12);
    expect(getString(f, 'tokenizer.ggml.model')).toBe('gpt2');
    expect(getString(f, 'tokenizer.ggml.pre')).toBe('qwen2');
    expect(getStringArray(f, 'tokenizer.ggml.tokens')).toEqual(tinyVocab().tokens);
    expect(getBool(f, 'tokenizer.ggml.add_bos_token')).toBe(false);
    const q = f.tensorsByName.get('blk.0.attn_q.weight');
    expect(q && torchShape(q)).toEqual([64, 64]);
    const spec = tinyModelTensors().find((t) => t.name === 'blk.0.attn_q.weight');
    if (spec === undefined) throw new Error('missing');
    expect(await readTensorF32(path, f, spec.name)).toEqual(tinyTensorWeights(spec));
  });

  it('is byte-identical for the same seed and different for another', async () => {
    const a = join(dir, 'a.gguf');
    const b = join(dir, 'b.gguf');
    const c = join(dir, 'c.gguf');
    await writeTinyQwen2Model(a);
    await writeTinyQwen2Model(b);
    await writeTinyQwen2Model(c, { seed: 1 });
    const [ba, bb, bc] = await Promise.all([readFile(a), readFile(b), readFile(c)]);
    expect(Buffer.compare(ba, bb)).toBe(0);
    expect(Buffer.compare(ba, bc)).not.toBe(0);
    expect(ba.length).toBe(bc.length);
  });

  it('applies a transform and a weight type', async () => {
    const path = join(dir, 'q8.gguf');
    await writeTinyModel(path, {
      weightType: 'Q8_0',
      transform: (t, data) => (t.name === 'blk.0.ffn_up.weight' ? data.map(() => 0.5) : data),
    });
    const f = await readGgufHeader(path);
    expect(f.tensorsByName.get('blk.0.ffn_up.weight')?.type).toBe(GgmlType.Q8_0);
    expect(f.tensorsByName.get('blk.0.attn_norm.weight')?.type).toBe(GgmlType.F32);
    expect(getU32(f, 'general.file_type')).toBe(7);
    const up = await readTensorF32(path, f, 'blk.0.ffn_up.weight');
    // q8_0 of a constant row: d = 0.5/127 stored as f16, so 127·d is 0.5 up to f16 rounding
    expect(up.every((v) => Math.abs(v - 0.5) < 1e-3)).toBe(true);
  });
});
