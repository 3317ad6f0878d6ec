import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';

import { ARCH_NAMES, ARCHS, archOf, type ArchName, type ArchTensor } from '../../src/arch.js';
import { checkCompatibility, readBaseModel, type BaseModel } from '../../src/base-model.js';
import { readGgufHeader, readTensorData } from '../../src/files/gguf.js';
import { writeGguf } from '../../src/files/gguf-writer.js';
import { adaptedTensor, ggufTensorFor } from '../../src/gguf-names.js';
import { parseLoraConfig } from '../../src/peft-config.js';
import type { LoraModule } from '../../src/peft-tensors.js';
import {
  TINY_HPARAMS,
  tinyLoraTargets,
  tinyModelTensors,
  tinyVocab,
  writeTinyModel,
} from '../../src/testkit/tiny-model.js';
import { rejected } from '../helpers/errors.js';
import { tempDir } from '../helpers/tmp.js';

/** every tensor a LoRA can adapt in a model of `arch` with `layers` layers, as PEFT module paths */
function adaptableModules(
  arch: ArchName,
  layers: number,
): { module: string; tensor: ArchTensor; name: string; expert: number | null }[] {
  const row = archOf(arch);
  const adaptable = (t: ArchTensor): boolean => t.role !== 'norm' && t.role !== 'bias';
  const out: { module: string; tensor: ArchTensor; name: string; expert: number | null }[] = [
    ...row.head,
    ...row.tail,
  ]
    .filter(adaptable)
    .map((t) => ({ module: t.hf.replace(/\.weight$/u, ''), tensor: t, name: t.gguf, expert: null }));
  for (let i = 0; i < layers; i++) {
    for (const t of row.layer.filter(adaptable)) {
      const module = `${row.hfLayers}.${i}.${t.hf.replace(/\.weight$/u, '')}`;
      const name = `blk.${i}.${t.gguf}`;
      if (!t.experts) {
        out.push({ module, tensor: t, name, expert: null });
        continue;
      }
      for (let e = 0; e < TINY_HPARAMS.nExpert; e++) {
        out.push({ module: module.replace('.experts.', `.experts.${e}.`), tensor: t, name, expert: e });
      }
    }
  }
  return out;
}

/** A LoRA of rank 4 on `module`, shaped for `shape` (the base tensor, PyTorch order; one expert's). */
function loraOn(module: string, tensor: ArchTensor, shape: readonly number[], rank = 4): LoraModule {
  const embedding = tensor.role === 'embedding';
  const [rows = 0, cols = 0] = tensor.experts ? shape.slice(1) : shape;
  const inFeatures = embedding ? rows : cols;
  const outFeatures = embedding ? cols : rows;
  const descriptor = (name: string, s: number[]): LoraModule['a'] => ({ name, dtype: 'F32', shape: s });
  return {
    module,
    kind: embedding ? 'embedding' : 'linear',
    a: descriptor(`${module}.a`, [rank, inFeatures]),
    b: descriptor(`${module}.b`, [outFeatures, rank]),
    rank,
    inFeatures,
    outFeatures,
  };
}

const config = parseLoraConfig(
  JSON.stringify({ peft_type: 'LORA', r: 4, lora_alpha: 8, target_modules: 'all-linear' }),
).config;

function plan(base: BaseModel, modules: LoraModule[]): ReturnType<typeof checkCompatibility> {
  if (!config) throw new Error('config');
  return checkCompatibility(base, config, modules, 'adapter_model.safetensors');
}

describe.each(ARCH_NAMES.map((name) => [name]))('architecture %s', (arch) => {
  let dir: string;
  /** a base of each kind the architecture allows */
  let tied: BaseModel | null;
  let untied: BaseModel | null;
  const layers = 2;
  const row = archOf(arch);

  beforeAll(async () => {
    dir = await tempDir('codi-arch-');
    tied = null;
    untied = null;
    if (row.output !== 'required') {
      await writeTinyModel(join(dir, 'tied.gguf'), { arch, nLayer: layers });
      tied = await readBaseModel(join(dir, 'tied.gguf'));
    }
    if (row.output !== 'tied') {
      await writeTinyModel(join(dir, 'untied.gguf'), { arch, nLayer: layers, tiedEmbeddings: false });
      untied = await readBaseModel(join(dir, 'untied.gguf'));
    }
  });

  it('its tiny model reads back as a base of that architecture, head counts and tying included', () => {
    const base = untied ?? tied;
    if (!base) throw new Error('no base');
    expect(base).toMatchObject({ arch, headCount: TINY_HPARAMS.nHead, headCountKv: TINY_HPARAMS.nHeadKv });
    expect(tied?.tiedEmbeddings ?? true).toBe(true);
    expect(untied?.tiedEmbeddings ?? false).toBe(false);
    // the tiny model has exactly the row's tensors (llama.cpp refuses a model with any other)
    const outputs = untied ? 0 : 1;
    expect(base.shapes.size).toBe(row.head.length + layers * row.layer.length + row.tail.length - outputs);
    for (const t of tinyModelTensors({ arch, nLayer: layers, tiedEmbeddings: untied === null })) {
      expect(base.shapes.get(t.name), t.name).toEqual(t.shape);
    }
    expect(base.shapes.get('token_embd.weight')).toEqual([tinyVocab().tokens.length, TINY_HPARAMS.nEmbd]);
  });

  it('maps every module a LoRA can target to its tensor (experts to their place), and nothing else', () => {
    const base = untied ?? tied;
    for (const { module, name, expert } of adaptableModules(arch, layers)) {
      expect(adaptedTensor(arch, module), module).toMatchObject({ name, expert });
      if (name !== 'output.weight' || untied) expect(base?.shapes.has(name), name).toBe(true);
    }
    expect(ggufTensorFor(arch, 'model.norm')).toBeNull();
    expect(ggufTensorFor(arch, `${row.hfLayers}.0.input_layernorm`)).toBeNull();
    expect(ggufTensorFor(arch, `${row.hfLayers}.0.self_attn.rotary_emb`)).toBeNull();
    // a stacked tensor's name without an expert is not one expert's module
    expect(ggufTensorFor(arch, `${row.hfLayers}.0.mlp.experts.up_proj`)).toBeNull();
  });

  it('plans a LoRA on every linear module, permuting q/k rows only where llama.cpp does, experts stacked', () => {
    const base = untied ?? tied;
    if (!base) throw new Error('no base');
    const targets = adaptableModules(arch, layers).filter((t) => base.shapes.has(t.name));
    const usable = targets.filter((t) => t.tensor.role === 'linear' || !base.tiedEmbeddings);
    const modules = usable.map((t) => loraOn(t.module, t.tensor, base.shapes.get(t.name) ?? []));
    const { findings, plan: planned } = plan(base, modules);
    expect(findings).toEqual([]);
    expect(planned.map((p) => p.target)).toEqual(usable.map((t) => t.name));
    for (const p of planned) {
      const adapted = adaptedTensor(arch, p.module.module);
      const heads = adapted?.tensor.heads;
      const expected = !row.permutesQk || heads === undefined ? null : heads === 'q' ? 4 : 2;
      expect(p.permuteHeads, p.target).toBe(expected);
      expect(p.expert, p.target).toEqual(
        adapted?.expert === null ? null : { index: adapted?.expert, count: TINY_HPARAMS.nExpert },
      );
    }
  });
});

describe.each(ARCH_NAMES.filter((a) => archOf(a).output !== 'required').map((name) => [name]))(
  'architecture %s, tied',
  (arch) => {
    it('refuses LoRAs on the embedding and the output head of a tied base', async () => {
      const dir = await tempDir('codi-arch-tied-');
      await writeTinyModel(join(dir, 'tied.gguf'), { arch });
      const tied = await readBaseModel(join(dir, 'tied.gguf'));
      const targets = adaptableModules(arch, 2).filter((t) => t.tensor.role !== 'linear');
      const vocab = [tinyVocab().tokens.length, TINY_HPARAMS.nEmbd];
      const modules = targets.map((t) => loraOn(t.module, t.tensor, vocab));
      const { findings, plan: planned } = plan(tied, modules);
      expect(planned).toEqual([]);
      expect(findings.map((f) => f.code).sort()).toEqual(['BASE_TIED_EMBEDDINGS', 'BASE_TIED_LM_HEAD']);
    });
  },
);

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

  it('covers the architectures convert supports', () => {
    expect([...ARCH_NAMES].sort()).toEqual(
      [
        'gemma2',
        'gemma3',
        'granite',
        'llama',
        'olmo2',
        'phi3',
        'qwen2',
        'qwen2moe',
        'qwen3',
        'qwen3moe',
      ].sort(),
    );
  });
});

describe('gemma3 names', () => {
  it('maps the multimodal names (model.language_model.) and the text-only ones alike', () => {
    for (const prefix of ['model.language_model.', 'model.', 'language_model.model.']) {
      expect(ggufTensorFor('gemma3', `${prefix}layers.3.self_attn.q_proj`), prefix).toBe(
        'blk.3.attn_q.weight',
      );
      expect(ggufTensorFor('gemma3', `${prefix}embed_tokens`), prefix).toBe('token_embd.weight');
    }
    expect(ggufTensorFor('gemma3', 'lm_head')).toBe('output.weight');
    expect(ggufTensorFor('gemma3', 'language_model.lm_head')).toBe('output.weight');
    // the prefix belongs to gemma3 alone
    expect(ggufTensorFor('qwen2', 'model.language_model.layers.3.self_attn.q_proj')).toBeNull();
  });

  it("leaves the vision tower's modules out with one warning, and plans the text model's", async () => {
    const dir = await tempDir('codi-arch-gemma3-');
    await writeTinyModel(join(dir, 'g3.gguf'), { arch: 'gemma3' });
    const base = await readBaseModel(join(dir, 'g3.gguf'));
    const text = tinyLoraTargets({ arch: 'gemma3' }).slice(0, 3);
    const vision = [
      'model.vision_tower.vision_model.encoder.layers.0.self_attn.q_proj',
      'model.vision_tower.vision_model.encoder.layers.0.mlp.fc1',
      'model.multi_modal_projector.mm_input_projection',
    ];
    const tensor = { gguf: '', hf: '', role: 'linear', shape: () => [] } as const;
    const modules = [
      ...text.map((t) => loraOn(t.module, tensor, [t.outFeatures, t.inFeatures])),
      ...vision.map((m) => loraOn(m, tensor, [32, 32])),
    ];
    const { findings, plan: planned } = plan(base, modules);
    expect(planned.map((p) => p.module.module)).toEqual(text.map((t) => t.module));
    expect(findings.map((f) => [f.code, f.level])).toEqual([['BASE_OTHER_TOWER_SKIPPED', 'warning']]);
    expect(findings[0]?.message).toMatch(/3 LoRA modules of another tower.*vision_tower/);
  });
});

describe('experts', () => {
  let base: BaseModel;
  beforeAll(async () => {
    const dir = await tempDir('codi-arch-moe-');
    await writeTinyModel(join(dir, 'moe.gguf'), { arch: 'qwen3moe' });
    base = await readBaseModel(join(dir, 'moe.gguf'));
  });
  const expertTensor = archOf('qwen3moe').layer.find((t) => t.gguf === 'ffn_up_exps.weight') as ArchTensor;

  it('stacks experts of different ranks at the largest, folding each scale for it', () => {
    const shape = base.shapes.get('blk.0.ffn_up_exps.weight') ?? [];
    const modules = [
      loraOn('model.layers.0.mlp.experts.0.up_proj', expertTensor, shape, 4),
      loraOn('model.layers.0.mlp.experts.2.up_proj', expertTensor, shape, 8),
    ];
    const { findings, plan: planned } = plan(base, modules);
    expect(findings).toEqual([]);
    // r 4 / alpha 8 in the config: each module's PEFT scale 8/4 = 2, llama.cpp's alpha/rank 8/8
    expect(planned.map((p) => [p.expert?.index, p.tensorRank, p.scale, p.fold])).toEqual([
      [0, 8, 2, 2],
      [2, 8, 2, 2],
    ]);
  });

  it('refuses an expert the base does not have, and an expert of another shape', () => {
    const shape = base.shapes.get('blk.0.ffn_up_exps.weight') ?? [];
    const { findings } = plan(base, [
      loraOn('model.layers.0.mlp.experts.4.up_proj', expertTensor, shape),
      loraOn('model.layers.1.mlp.experts.0.up_proj', expertTensor, [4, 48, 64]),
    ]);
    expect(findings.map((f) => f.code)).toEqual(['BASE_INCOMPATIBLE', 'BASE_INCOMPATIBLE']);
    expect(findings[0]?.message).toMatch(/expert 4, but the base has 4 experts/);
    expect(findings[1]?.message).toMatch(/\[48, 64\] per expert but the base tensor is \[4, 32, 64\]/);
  });
});

describe('the output head as each architecture has it', () => {
  /** the tiny model of `arch` rewritten with `output.weight` dropped, or added as a copy of the embedding */
  async function rewritten(arch: ArchName, output: 'drop' | 'add'): Promise<string> {
    const dir = await tempDir('codi-arch-output-');
    const from = join(dir, 'from.gguf');
    await writeTinyModel(from, { arch });
    const g = await readGgufHeader(from);
    const embd = g.tensors.find((t) => t.name === 'token_embd.weight');
    const tensors = g.tensors
      .filter((t) => t.name !== 'output.weight')
      .map((t) => ({ name: t.name, ne: t.ne, type: t.type }));
    if (output === 'add' && embd) tensors.push({ name: 'output.weight', ne: embd.ne, type: embd.type });
    const path = join(dir, `${arch}-${output}.gguf`);
    await writeGguf(
      path,
      {
        metadata: [...g.metadata.values()].map((e) => [e.key, { type: e.type, value: e.value }] as const),
        tensors,
      },
      (spec) => readTensorData(from, g, spec.name === 'output.weight' ? 'token_embd.weight' : spec.name),
    );
    return path;
  }

  it.each([
    ['olmo2', 'without', 'drop', /has no output\.weight, which llama\.cpp's olmo2 architecture requires/],
    ['qwen2moe', 'without', 'drop', /qwen2moe architecture requires/],
    ['gemma2', 'with', 'add', /has an output\.weight, which llama\.cpp's gemma2 architecture never loads/],
  ] as const)('%s %s output.weight: not a model llama.cpp loads', async (arch, _with, how, message) => {
    const e = await rejected(readBaseModel(await rewritten(arch, how)));
    expect(e).toMatchObject({ code: 'BASE_NOT_MODEL' });
    expect(e.message).toMatch(message);
  });
});

describe('shapes llama.cpp reads alike', () => {
  it("a one-row weight stored as a vector (qwen2moe's shared expert gate) takes a LoRA", async () => {
    const dir = await tempDir('codi-arch-vector-');
    await writeTinyModel(join(dir, 'moe.gguf'), { arch: 'qwen2moe' });
    const base = await readBaseModel(join(dir, 'moe.gguf'));
    expect(base.shapes.get('blk.0.ffn_gate_inp_shexp.weight')).toEqual([1, TINY_HPARAMS.nEmbd]);
    base.shapes.set('blk.0.ffn_gate_inp_shexp.weight', [TINY_HPARAMS.nEmbd]);
    const gate = archOf('qwen2moe').layer.find((t) => t.gguf === 'ffn_gate_inp_shexp.weight') as ArchTensor;
    const { findings, plan: planned } = plan(base, [
      loraOn('model.layers.0.mlp.shared_expert_gate', gate, [1, TINY_HPARAMS.nEmbd]),
      loraOn('model.layers.0.mlp.shared_expert_gate', gate, [2, TINY_HPARAMS.nEmbd]),
    ]);
    expect(planned.map((p) => p.target)).toEqual(['blk.0.ffn_gate_inp_shexp.weight']);
    expect(findings.map((f) => f.code)).toEqual(['BASE_INCOMPATIBLE']);
  });

  it('a module of experts on a base without experts, and separate q/k/v on phi3, have no tensor to adapt', async () => {
    const dir = await tempDir('codi-arch-unmapped-');
    await writeTinyModel(join(dir, 'q3.gguf'), { arch: 'qwen3' });
    await writeTinyModel(join(dir, 'phi3.gguf'), { arch: 'phi3' });
    const tensor = { gguf: '', hf: '', role: 'linear', shape: () => [] } as const;
    const moe = plan(await readBaseModel(join(dir, 'q3.gguf')), [
      loraOn('model.layers.0.mlp.experts.0.up_proj', tensor, [32, 64]),
    ]);
    const phi3 = plan(await readBaseModel(join(dir, 'phi3.gguf')), [
      loraOn('model.layers.0.self_attn.q_proj', tensor, [64, 64]),
    ]);
    expect([...moe.findings, ...phi3.findings].map((f) => f.code)).toEqual([
      'BASE_UNMAPPED_MODULE',
      'BASE_UNMAPPED_MODULE',
    ]);
    expect(phi3.findings[0]?.message).toMatch(/phi3 architecture has no tensor/);
  });

  it('an unsupported architecture is refused with the supported list, as the table has it', async () => {
    const dir = await tempDir('codi-arch-unsupported-');
    const { writeUnsupportedBase } = await import('../helpers/fixtures.js');
    const e = await rejected(readBaseModel(await writeUnsupportedBase(join(dir, 'gemma.gguf'))));
    expect(e.code).toBe('BASE_ARCH_UNSUPPORTED');
    expect(e.message).toContain(`(supported: ${ARCH_NAMES.join(', ')})`);
  });
});
