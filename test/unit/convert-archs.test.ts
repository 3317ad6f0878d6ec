/**
 * What convert writes for the architectures whose LoRA tensors are not one-to-one with PEFT's:
 * experts stacked into one tensor per projection (mixed ranks padded, experts without a LoRA zero,
 * each expert's scale folded), phi3's fused projections, gemma3's names.
 */
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { convertAdapter } from '../../src/convert.js';
import { getF32 } from '../../src/formats/gguf.js';
import { readGgufHeader, readTensorF32 } from '../../src/files/gguf.js';
import { generateLoraTensors, type AdapterSpec } from '../../src/testkit/peft-adapter.js';
import { TINY_HPARAMS, tinyLoraTargets, writeTinyModel } from '../../src/testkit/tiny-model.js';
import { writeAdapter } from '../helpers/fixtures.js';
import { tempDir } from '../helpers/tmp.js';

let dir: string;

beforeAll(async () => {
  dir = await tempDir('codi-convert-archs-');
});

const E = TINY_HPARAMS.nExpert;
const H = TINY_HPARAMS.nEmbd;
const FF = TINY_HPARAMS.nFfExp;

describe('experts (qwen3moe)', () => {
  // r 8, alpha 16; expert 1's up_proj has r 4, expert 2's gate_proj alpha 4; layer 1 has no LoRA on expert 2
  const spec = (): AdapterSpec => ({
    id: 'moe-layout',
    r: 8,
    alpha: 16,
    rankPattern: { 'experts.1.up_proj': 4 },
    alphaPattern: { 'experts.2.gate_proj': 4 },
    targetModules: ['gate_proj', 'up_proj', 'down_proj', 'q_proj'],
    modules: tinyLoraTargets({ arch: 'qwen3moe' }).filter(
      (t) =>
        /experts\.\d+\.|q_proj$/u.test(t.module) && !t.module.startsWith('model.layers.1.mlp.experts.2.'),
    ),
    seed: 41,
  });
  let out: string;
  let peft: Map<string, Float32Array>;

  beforeAll(async () => {
    const base = join(dir, 'moe.gguf');
    await writeTinyModel(base, { arch: 'qwen3moe' });
    const s = spec();
    out = join(dir, 'moe-lora.gguf');
    await convertAdapter(await writeAdapter(dir, s), { base, out });
    peft = new Map(generateLoraTensors(s).map((t) => [t.name, t.values]));
  });

  const lora = (module: string, half: 'A' | 'B'): Float32Array =>
    peft.get(`base_model.model.${module}.lora_${half}.weight`) ?? new Float32Array(0);

  it('writes one A and one B per stacked projection, ne {in, r, experts} and {r, out, experts}', async () => {
    const g = await readGgufHeader(out);
    const byName = new Map(g.tensors.map((t) => [t.name, t.ne]));
    expect(byName.get('blk.0.ffn_gate_exps.weight.lora_a')).toEqual([H, 8, E]);
    expect(byName.get('blk.0.ffn_gate_exps.weight.lora_b')).toEqual([8, FF, E]);
    expect(byName.get('blk.1.ffn_down_exps.weight.lora_a')).toEqual([FF, 8, E]);
    expect(byName.get('blk.1.ffn_down_exps.weight.lora_b')).toEqual([8, H, E]);
    // 2 layers × (q + 3 stacked projections) × (A, B); no per-expert tensor
    expect(g.tensors).toHaveLength(16);
    expect(getF32(g, 'adapter.lora.alpha')).toBe(16);
  });

  it("puts each expert's A in its slice, rows past its own rank zero, an expert without a LoRA all zero", async () => {
    const g = await readGgufHeader(out);
    const a = await readTensorF32(out, g, 'blk.1.ffn_up_exps.weight.lora_a');
    const slice = (e: number): Float32Array => a.subarray(e * 8 * H, (e + 1) * 8 * H);
    expect(slice(0)).toEqual(lora('model.layers.1.mlp.experts.0.up_proj', 'A'));
    // expert 1: rank 4, padded to 8 with zero rows
    expect(slice(1).subarray(0, 4 * H)).toEqual(lora('model.layers.1.mlp.experts.1.up_proj', 'A'));
    expect(
      slice(1)
        .subarray(4 * H)
        .every((v) => v === 0),
    ).toBe(true);
    expect(slice(2).every((v) => v === 0)).toBe(true);
    expect(slice(3)).toEqual(lora('model.layers.1.mlp.experts.3.up_proj', 'A'));
  });

  it("folds each expert's own scale into its B, columns past its rank zero", async () => {
    const g = await readGgufHeader(out);
    const b = await readTensorF32(out, g, 'blk.0.ffn_up_exps.weight.lora_b');
    // expert 1 has r 4, so PEFT's scale is 16/4 = 4 and llama.cpp's 16/8 = 2: its B is doubled
    const peftB = lora('model.layers.0.mlp.experts.1.up_proj', 'B');
    const block = b.subarray(FF * 8, 2 * FF * 8);
    for (let o = 0; o < FF; o++) {
      for (let k = 0; k < 8; k++) {
        expect(block[o * 8 + k]).toBe(k < 4 ? Math.fround((peftB[o * 4 + k] ?? 0) * 2) : 0);
      }
    }
    // expert 2's gate_proj: alpha 4, r 8 → scale 0.5 against llama.cpp's 2: a quarter
    const gate = await readTensorF32(out, g, 'blk.0.ffn_gate_exps.weight.lora_b');
    const peftGate = lora('model.layers.0.mlp.experts.2.gate_proj', 'B');
    expect(gate.subarray(2 * FF * 8, 3 * FF * 8)).toEqual(peftGate.map((v) => v * 0.25));
    // the others unchanged
    expect(gate.subarray(0, FF * 8)).toEqual(lora('model.layers.0.mlp.experts.0.gate_proj', 'B'));
  });
});

describe('fused projections (phi3)', () => {
  it('maps qkv_proj and gate_up_proj onto attn_qkv and ffn_up as they are', async () => {
    const base = join(dir, 'phi3.gguf');
    await writeTinyModel(base, { arch: 'phi3' });
    const s: AdapterSpec = {
      id: 'phi3-fused',
      r: 8,
      alpha: 16,
      targetModules: ['qkv_proj', 'gate_up_proj'],
      modules: tinyLoraTargets({ arch: 'phi3' }).filter((t) => /(qkv|gate_up)_proj$/u.test(t.module)),
      seed: 42,
    };
    const out = join(dir, 'phi3-lora.gguf');
    await convertAdapter(await writeAdapter(dir, s), { base, out });
    const g = await readGgufHeader(out);
    const kvDim = TINY_HPARAMS.nHeadKv * (H / TINY_HPARAMS.nHead);
    expect(
      Object.fromEntries(g.tensors.filter((t) => t.name.startsWith('blk.0.')).map((t) => [t.name, t.ne])),
    ).toEqual({
      'blk.0.attn_qkv.weight.lora_a': [H, 8],
      'blk.0.attn_qkv.weight.lora_b': [8, H + 2 * kvDim],
      'blk.0.ffn_up.weight.lora_a': [H, 8],
      'blk.0.ffn_up.weight.lora_b': [8, 2 * TINY_HPARAMS.nFf],
    });
    const peftB = generateLoraTensors(s).find(
      (t) => t.name === 'base_model.model.model.layers.0.self_attn.qkv_proj.lora_B.weight',
    );
    expect(await readTensorF32(out, g, 'blk.0.attn_qkv.weight.lora_b')).toEqual(peftB?.values);
  });
});

describe('gemma3 with a vision tower', () => {
  it('converts the text model, leaves the vision LoRAs out with a warning, and still hashes every byte', async () => {
    const base = join(dir, 'gemma3.gguf');
    await writeTinyModel(base, { arch: 'gemma3' });
    const text = tinyLoraTargets({ arch: 'gemma3' }).filter((t) => /q_proj$/u.test(t.module));
    // the vision LoRAs come last in the file: the pass reads past the last converted tensor to hash them
    const vision = [0, 1].map((l) => ({
      module: `model.vision_tower.vision_model.encoder.layers.${l}.self_attn.q_proj`,
      inFeatures: 32,
      outFeatures: 32,
    }));
    const s: AdapterSpec = {
      id: 'gemma3-vision',
      r: 8,
      alpha: 16,
      targetModules: ['q_proj'],
      modules: [...text, ...vision],
      seed: 43,
    };
    const out = join(dir, 'gemma3-lora.gguf');
    const r = await convertAdapter(await writeAdapter(dir, s), { base, out });
    expect(r.warnings.map((w) => w.code)).toEqual(['BASE_OTHER_TOWER_SKIPPED', 'BASE_UNRECORDED']);
    const g = await readGgufHeader(out);
    expect(g.tensors.map((t) => t.name)).toEqual([
      'blk.0.attn_q.weight.lora_a',
      'blk.0.attn_q.weight.lora_b',
      'blk.1.attn_q.weight.lora_a',
      'blk.1.attn_q.weight.lora_b',
    ]);
    // the last tensor written is layer 1's lora_b, read before the vision tensors behind it
    const peftB = generateLoraTensors(s).find(
      (t) => t.name === 'base_model.model.model.language_model.layers.1.self_attn.q_proj.lora_B.weight',
    );
    expect(await readTensorF32(out, g, 'blk.1.attn_q.weight.lora_b')).toEqual(peftB?.values);
  });
});
