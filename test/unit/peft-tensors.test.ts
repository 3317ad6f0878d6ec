import { describe, expect, it } from 'vitest';
import { parseLoraConfig, type LoraConfig } from '../../src/peft-config.js';
import { analyzeTensors, parsePeftName, type TensorDescriptor } from '../../src/peft-tensors.js';

function config(overrides: Record<string, unknown> = {}): LoraConfig {
  const parsed = parseLoraConfig(
    JSON.stringify({
      peft_type: 'LORA',
      r: 4,
      lora_alpha: 8,
      target_modules: ['q_proj', 'v_proj'],
      ...overrides,
    }),
  );
  if (!parsed.config) throw new Error(JSON.stringify(parsed.findings));
  return parsed.config;
}

function pair(module: string, r: number, inF: number, outF: number): TensorDescriptor[] {
  return [
    { name: `base_model.model.${module}.lora_A.weight`, dtype: 'F32', shape: [r, inF] },
    { name: `base_model.model.${module}.lora_B.weight`, dtype: 'F32', shape: [outF, r] },
  ];
}

const good = [
  ...pair('model.layers.0.self_attn.q_proj', 4, 64, 64),
  ...pair('model.layers.0.self_attn.v_proj', 4, 64, 32),
  ...pair('model.layers.1.self_attn.q_proj', 4, 64, 64),
  ...pair('model.layers.1.self_attn.v_proj', 4, 64, 32),
];

const codes = (ts: TensorDescriptor[], c: LoraConfig | null = config()): string[] =>
  analyzeTensors(ts, c, 'adapter_model.safetensors').findings.map((f) => f.code);

describe('analyzeTensors', () => {
  it('accepts a consistent adapter and reports its statistics', () => {
    const a = analyzeTensors(good, config(), 'adapter_model.safetensors');
    expect(a.findings).toEqual([]);
    expect(a.modules).toHaveLength(4);
    expect(a.stats).toEqual({
      count: 8,
      parameters: (4 * (4 * 64 + 64 * 4)) / 2 + 2 * (4 * 64 + 32 * 4),
      dtypes: { F32: 8 },
      ranks: { '4': 4 },
      modules: ['q_proj', 'v_proj'],
      layers: [0, 1],
    });
  });

  it('parses PEFT names for linear and embedding LoRAs', () => {
    expect(parsePeftName('base_model.model.model.embed_tokens.lora_embedding_A')).toEqual({
      module: 'model.embed_tokens',
      kind: 'embedding',
      role: 'A',
    });
    expect(parsePeftName('model.layers.0.self_attn.q_proj.lora_A.weight')).toBeNull();
  });

  it('finds lora_A without lora_B, and lora_B without lora_A', () => {
    expect(codes(good.slice(1))).toContain('TENSOR_UNPAIRED');
    expect(codes(good.filter((t) => !t.name.endsWith('q_proj.lora_B.weight')))).toContain('TENSOR_UNPAIRED');
  });

  it('finds a rank that disagrees with r', () => {
    const bad = [...pair('model.layers.0.self_attn.q_proj', 8, 64, 64), ...good.slice(2)];
    expect(codes(bad)).toContain('TENSOR_RANK');
  });

  it('uses rank_pattern for the expected rank', () => {
    const mixed = [...pair('model.layers.0.self_attn.q_proj', 2, 64, 64), ...good.slice(2)];
    expect(codes(mixed, config({ rank_pattern: { 'layers.0.self_attn.q_proj': 2 } }))).toEqual([]);
  });

  it('warns CONFIG_PATTERN_AMBIGUOUS where PEFT releases give a module another scale, with no peft_version', () => {
    // q_proj keys the rank, layers.0's q_proj the alpha: PEFT ≥ 0.14 takes each (rank 4, alpha 32),
    // PEFT 0.13 the first matching key for both (rank 4, no alpha under q_proj: lora_alpha 8)
    const overlap = { r: 4, rank_pattern: { q_proj: 4 }, alpha_pattern: { 'layers.0.self_attn.q_proj': 32 } };
    const a = analyzeTensors(good, config(overlap), 'adapter_model.safetensors');
    expect(a.findings).toHaveLength(1);
    expect(a.findings[0]).toMatchObject({
      level: 'warning',
      code: 'CONFIG_PATTERN_AMBIGUOUS',
      file: 'adapter_config.json',
      pointer: '/alpha_pattern',
    });
    expect(a.findings[0]?.message).toMatch(
      /^model\.layers\.0\.self_attn\.q_proj: PEFT ≥ 0\.15 gives rank 4, alpha 32, scale 8, but PEFT ≤ 0\.13 gives rank 4, alpha 8, scale 2:/u,
    );
    expect(codes(good, config({ ...overlap, peft_version: '0.18.0' }))).toEqual([]);
  });

  it('finds A and B whose ranks disagree', () => {
    const bad = [
      {
        name: 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight',
        dtype: 'F32',
        shape: [4, 64],
      },
      {
        name: 'base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight',
        dtype: 'F32',
        shape: [64, 3],
      },
    ];
    expect(codes(bad)).toContain('TENSOR_SHAPE');
  });

  it('finds a target module that matched no tensor', () => {
    const onlyQ = good.filter((t) => t.name.includes('q_proj'));
    const found = analyzeTensors(onlyQ, config(), 'adapter_model.safetensors').findings;
    expect(found.map((f) => f.code)).toEqual(['TARGET_UNMATCHED']);
    expect(found[0]?.message).toContain('"v_proj"');
  });

  it('finds tensors for modules the config does not target', () => {
    expect(codes([...good, ...pair('model.layers.0.mlp.up_proj', 4, 64, 128)])).toContain(
      'TENSOR_UNTARGETED',
    );
  });

  it('refuses DoRA magnitudes, full weights, bad names and integer tensors', () => {
    expect(
      codes([
        ...good,
        {
          name: 'base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector',
          dtype: 'F32',
          shape: [64],
        },
      ]),
    ).toContain('TENSOR_UNSUPPORTED');
    expect(
      codes([...good, { name: 'base_model.model.lm_head.weight', dtype: 'F32', shape: [10, 64] }]),
    ).toContain('TENSOR_UNEXPECTED');
    expect(
      codes([...good, { name: 'model.layers.0.q.lora_A.weight', dtype: 'F32', shape: [4, 64] }]),
    ).toContain('TENSOR_NAME');
    const ints = good.map((t, i) => (i === 0 ? { ...t, dtype: 'I64' } : t));
    expect(codes(ints)).toContain('TENSOR_DTYPE');
  });

  it('reports an empty weights file', () => {
    expect(codes([])).toContain('TENSOR_NONE');
  });
});

describe('analyzeTensors: PEFT features', () => {
  const findings = (ts: TensorDescriptor[], c: LoraConfig): ReturnType<typeof analyzeTensors>['findings'] =>
    analyzeTensors(ts, c, 'adapter_model.safetensors').findings;
  const embedding = (module: string, r: number, vocab: number, dim: number): TensorDescriptor[] => [
    { name: `base_model.model.${module}.lora_embedding_A`, dtype: 'F32', shape: [r, vocab] },
    { name: `base_model.model.${module}.lora_embedding_B`, dtype: 'F32', shape: [dim, r] },
  ];

  it("skips PEFT's copies of targeted embedding layers, with a warning naming each", () => {
    const copies: TensorDescriptor[] = [
      { name: 'base_model.model.model.embed_tokens.base_layer.weight', dtype: 'F32', shape: [484, 64] },
      { name: 'base_model.model.lm_head.base_layer.weight', dtype: 'F32', shape: [484, 64] },
    ];
    const c = config({ target_modules: ['q_proj', 'v_proj', 'embed_tokens', 'lm_head'] });
    const ts = [
      ...good,
      ...embedding('model.embed_tokens', 4, 484, 64),
      ...pair('lm_head', 4, 64, 484),
      ...copies,
    ];
    const a = analyzeTensors(ts, c, 'adapter_model.safetensors');
    expect(a.findings.map((f) => [f.code, f.level])).toEqual([
      ['TENSOR_EMBEDDING_COPY', 'warning'],
      ['TENSOR_EMBEDDING_COPY', 'warning'],
    ]);
    expect(a.findings[0]?.message).toContain('base_model.model.model.embed_tokens.base_layer.weight');
    expect(a.findings[1]?.message).toContain('base_model.model.lm_head.base_layer.weight');
    // not a module of the adapter: nothing is converted from them
    expect(a.modules.map((m) => m.module)).not.toContain('model.embed_tokens.base_layer');
    expect(a.modules).toHaveLength(6);
  });

  it('a base_layer copy of any other layer, or a full embedding weight, is not skipped', () => {
    const other = [
      {
        name: 'base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight',
        dtype: 'F32',
        shape: [64, 64],
      },
    ];
    expect(codes([...good, ...other])).toEqual(['TENSOR_UNEXPECTED']);
    const full = [{ name: 'base_model.model.model.embed_tokens.weight', dtype: 'F32', shape: [500, 64] }];
    const found = findings([...good, ...full], config());
    expect(found.map((f) => f.code)).toEqual(['TENSOR_UNEXPECTED']);
    expect(found[0]?.message).toContain('resized vocabulary');
  });

  it('trained token rows (trainable_token_indices) are named as such', () => {
    const delta = [
      {
        name: 'base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta',
        dtype: 'F32',
        shape: [3, 64],
      },
    ];
    const found = findings([...good, ...delta], config());
    expect(found.map((f) => f.code)).toEqual(['TENSOR_UNSUPPORTED']);
    expect(found[0]?.message).toContain('trainable_token_indices');
  });

  it('a target entry that matches nothing is a warning; none matching at all is an error', () => {
    const some = findings(good, config({ target_modules: ['q_proj', 'v_proj', 'o_proj'] }));
    expect(some.map((f) => [f.code, f.level])).toEqual([['TARGET_UNMATCHED', 'warning']]);
    const none = findings(good, config({ target_modules: ['o_proj', 'down_proj'] }));
    expect(none.map((f) => f.code)).toEqual([
      'TENSOR_UNTARGETED',
      'TENSOR_UNTARGETED',
      'TENSOR_UNTARGETED',
      'TENSOR_UNTARGETED',
      'TARGET_NONE',
    ]);
    expect(none.at(-1)?.message).toContain('"o_proj", "down_proj"');
  });

  it('all-linear: an lm_head or embedding LoRA is not one it selects (an error, as in PEFT)', () => {
    const c = config({ target_modules: 'all-linear' });
    expect(findings(good, c)).toEqual([]);
    const head = findings([...good, ...pair('lm_head', 4, 64, 484)], c);
    expect(head.map((f) => f.code)).toEqual(['TENSOR_UNTARGETED']);
    expect(head[0]?.message).toContain('all-linear');
    const embed = findings([...good, ...embedding('model.embed_tokens', 4, 484, 64)], c);
    expect(embed.map((f) => f.code)).toEqual(['TENSOR_UNTARGETED']);
    // only an lm_head LoRA: nothing matches at all
    expect(findings(pair('lm_head', 4, 64, 484), c).map((f) => f.code)).toEqual([
      'TENSOR_UNTARGETED',
      'TARGET_NONE',
    ]);
  });

  it('an activated LoRA with an embedding LoRA is refused: PEFT applies that one to every token', () => {
    const c = config({
      target_modules: ['q_proj', 'v_proj', 'embed_tokens'],
      alora_invocation_tokens: [1, 2],
    });
    const found = findings([...good, ...embedding('model.embed_tokens', 4, 484, 64)], c);
    expect(found.map((f) => f.code)).toEqual(['TENSOR_ALORA_EMBEDDING']);
    // without activation, the same tensors are an ordinary LoRA
    const plain = config({ target_modules: ['q_proj', 'v_proj', 'embed_tokens'] });
    expect(findings([...good, ...embedding('model.embed_tokens', 4, 484, 64)], plain)).toEqual([]);
  });
});
