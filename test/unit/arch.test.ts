import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';

import { ARCH_NAMES, ARCHS, archOf, type ArchName, type ArchTensor } from '../../src/arch.js';
import { checkCompatibility, readBaseModel, type BaseModel } from '../../src/base-model.js';
import { adaptedTensor, ggufTensorFor } from '../../src/gguf-names.js';
import { parseLoraConfig } from '../../src/peft-config.js';
import type { LoraModule } from '../../src/peft-tensors.js';
import { TINY_HPARAMS, tinyModelTensors, tinyVocab, writeTinyModel } from '../../src/testkit/tiny-model.js';
import { tempDir } from '../helpers/tmp.js';

/** every tensor a LoRA can adapt in a model of `arch` with `layers` layers, as a PEFT module path */
function adaptableModules(
  arch: ArchName,
  layers: number,
): { module: string; tensor: ArchTensor; name: string }[] {
  const row = archOf(arch);
  const adaptable = (t: ArchTensor): boolean => t.role !== 'norm' && t.role !== 'bias';
  const out = [...row.head, ...row.tail]
    .filter(adaptable)
    .map((t) => ({ module: t.hf.replace(/\.weight$/u, ''), tensor: t, name: t.gguf }));
  for (let i = 0; i < layers; i++) {
    for (const t of row.layer.filter(adaptable)) {
      out.push({
        module: `${row.hfLayers}.${i}.${t.hf.replace(/\.weight$/u, '')}`,
        tensor: t,
        name: `blk.${i}.${t.gguf}`,
      });
    }
  }
  return out;
}

/** A LoRA of rank 4 on `module`, shaped for `shape` (the base tensor, PyTorch order). */
function loraOn(module: string, tensor: ArchTensor, shape: readonly number[]): LoraModule {
  const embedding = tensor.role === 'embedding';
  const [rows = 0, cols = 0] = shape;
  const inFeatures = embedding ? rows : cols;
  const outFeatures = embedding ? cols : rows;
  const descriptor = (name: string, s: number[]): LoraModule['a'] => ({
    name,
    dtype: 'F32',
    shape: s,
  });
  return {
    module,
    kind: embedding ? 'embedding' : 'linear',
    a: descriptor(`${module}.a`, [4, inFeatures]),
    b: descriptor(`${module}.b`, [outFeatures, 4]),
    rank: 4,
    inFeatures,
    outFeatures,
  };
}

const config = parseLoraConfig(
  JSON.stringify({ peft_type: 'LORA', r: 4, lora_alpha: 8, target_modules: 'all-linear' }),
).config;

describe.each(ARCH_NAMES.map((name) => [name]))('architecture %s', (arch) => {
  let dir: string;
  let tied: BaseModel;
  let untied: BaseModel;
  const layers = 2;

  beforeAll(async () => {
    dir = await tempDir('codi-arch-');
    await writeTinyModel(join(dir, 'tied.gguf'), { arch, nLayer: layers });
    await writeTinyModel(join(dir, 'untied.gguf'), { arch, nLayer: layers, tiedEmbeddings: false });
    tied = await readBaseModel(join(dir, 'tied.gguf'));
    untied = await readBaseModel(join(dir, 'untied.gguf'));
  });

  it('its tiny model reads back as a base of that architecture, head counts and tying included', () => {
    expect(tied).toMatchObject({
      arch,
      headCount: TINY_HPARAMS.nHead,
      headCountKv: TINY_HPARAMS.nHeadKv,
      tiedEmbeddings: true,
    });
    expect(untied.tiedEmbeddings).toBe(false);
    const row = archOf(arch);
    expect(untied.shapes.size).toBe(row.head.length + layers * row.layer.length + row.tail.length);
    for (const t of tinyModelTensors({ arch, nLayer: layers, tiedEmbeddings: false })) {
      expect(untied.shapes.get(t.name), t.name).toEqual(t.shape);
    }
    expect(untied.shapes.get('token_embd.weight')).toEqual([tinyVocab().tokens.length, TINY_HPARAMS.nEmbd]);
  });

  it('maps every module a LoRA can target to its tensor, and nothing else', () => {
    for (const { module, name } of adaptableModules(arch, layers)) {
      expect(ggufTensorFor(arch, module), module).toBe(name);
      expect(untied.shapes.has(name), name).toBe(true);
    }
    expect(ggufTensorFor(arch, 'model.norm')).toBeNull();
    expect(ggufTensorFor(arch, `${archOf(arch).hfLayers}.0.input_layernorm`)).toBeNull();
    expect(ggufTensorFor(arch, `${archOf(arch).hfLayers}.0.self_attn.rotary_emb`)).toBeNull();
  });

  it('plans a LoRA on every such module of an untied base, permuting q/k rows only where llama.cpp does', () => {
    if (!config) throw new Error('config');
    const targets = adaptableModules(arch, layers);
    const modules = targets.map((t) => loraOn(t.module, t.tensor, untied.shapes.get(t.name) ?? []));
    const { findings, plan } = checkCompatibility(untied, config, modules, 'adapter_model.safetensors');
    expect(findings).toEqual([]);
    expect(plan.map((p) => p.target)).toEqual(targets.map((t) => t.name));
    for (const p of plan) {
      const heads = adaptedTensor(arch, p.module.module)?.tensor.heads;
      const expected = !archOf(arch).permutesQk || heads === undefined ? null : heads === 'q' ? 4 : 2;
      expect(p.permuteHeads, p.target).toBe(expected);
    }
  });

  it('refuses LoRAs on the embedding and the output head of a tied base', () => {
    if (!config) throw new Error('config');
    const targets = adaptableModules(arch, layers).filter((t) => t.tensor.role !== 'linear');
    const modules = targets.map((t) => loraOn(t.module, t.tensor, untied.shapes.get(t.name) ?? []));
    const { findings, plan } = checkCompatibility(tied, config, modules, 'adapter_model.safetensors');
    expect(plan).toEqual([]);
    expect(findings.map((f) => f.code).sort()).toEqual(['BASE_TIED_EMBEDDINGS', 'BASE_TIED_LM_HEAD']);
  });
});

describe('the architecture table', () => {
  it('names each architecture once, with unique tensor names in each row', () => {
    expect(new Set(ARCH_NAMES).size).toBe(ARCHS.length);
    for (const row of ARCHS) {
      const layer = row.layer.map((t) => t.gguf);
      const model = [...row.head, ...row.tail].map((t) => t.gguf);
      expect(new Set(layer).size, row.name).toBe(layer.length);
      expect(new Set(model).size, row.name).toBe(model.length);
    }
  });
});
