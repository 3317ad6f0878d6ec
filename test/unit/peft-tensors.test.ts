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
