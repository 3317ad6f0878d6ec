import { describe, expect, it } from 'vitest';
import {
  alphaFor,
  layerIndexOf,
  parseLoraConfig,
  rankFor,
  scaleFor,
  targetsModule,
  type LoraConfig,
} from '../../src/peft-config.js';
import { peftConfigJson } from '../../src/testkit/peft-adapter.js';

const base = { id: 'x', r: 8, alpha: 16, targetModules: ['q_proj', 'v_proj'], modules: [], seed: 1 };

function parse(overrides: Record<string, unknown> = {}): ReturnType<typeof parseLoraConfig> {
  return parseLoraConfig(JSON.stringify({ ...peftConfigJson(base), ...overrides }));
}

function config(overrides: Record<string, unknown> = {}): LoraConfig {
  const parsed = parse(overrides);
  expect(parsed.findings).toEqual([]);
  if (!parsed.config) throw new Error('no config');
  return parsed.config;
}

describe('parseLoraConfig', () => {
  it('accepts a config as PEFT writes it (nulls, empty patterns, extra keys)', () => {
    const c = config({ some_future_option: { nested: true }, eva_config: null, corda_config: null });
    expect(c.r).toBe(8);
    expect(c.loraAlpha).toBe(16);
    expect(c.useRslora).toBe(false);
    expect(c.targets).toEqual({ kind: 'list', names: ['q_proj', 'v_proj'] });
  });

  it('accepts target_modules as a regex string and as all-linear', () => {
    expect(config({ target_modules: '.*\\.(q|v)_proj' }).targets.kind).toBe('regex');
    expect(config({ target_modules: 'all-linear' }).targets.kind).toBe('all-linear');
  });

  it.each([
    [{ use_dora: true }, /DoRA/],
    [{ modules_to_save: ['lm_head'] }, /modules_to_save/],
    [{ bias: 'all' }, /bias/],
    [{ bias: 'lora_only' }, /bias/],
    [{ peft_type: 'IA3' }, /only LoRA/],
    [{ lora_bias: true }, /lora_bias/],
  ])('refuses %j as CONFIG_UNSUPPORTED with the reason', (overrides, reason) => {
    const { findings } = parse(overrides);
    expect(findings).toHaveLength(1);
    expect(findings[0]?.code).toBe('CONFIG_UNSUPPORTED');
    expect(findings[0]?.message).toMatch(reason);
    expect(findings[0]?.message).toMatch(/llama\.cpp|LoRA/);
  });

  it('allows an empty modules_to_save and bias none', () => {
    expect(parse({ modules_to_save: [], bias: 'none', use_dora: false }).findings).toEqual([]);
  });

  it.each([
    [{ r: 0 }, '/r'],
    [{ r: 2.5 }, '/r'],
    [{ r: undefined }, '/r'],
    [{ lora_alpha: 'big' }, '/lora_alpha'],
    [{ target_modules: [] }, '/target_modules'],
    [{ rank_pattern: { q_proj: 0 } }, '/rank_pattern/q_proj'],
  ])('reports schema violations with their pointer: %j', (overrides, pointer) => {
    const { findings, config: c } = parse(overrides);
    expect(c).toBeNull();
    expect(findings.map((f) => f.code)).toContain('CONFIG_INVALID');
    expect(findings.map((f) => f.pointer)).toContain(pointer);
  });

  it('reports invalid JSON', () => {
    expect(parseLoraConfig('{"r": 8,').findings[0]?.code).toBe('CONFIG_JSON');
  });
});

describe('PEFT module rules', () => {
  it('matches list targets by exact name or dotted suffix, like PEFT', () => {
    const c = config();
    expect(targetsModule(c, 'model.layers.0.self_attn.q_proj')).toBe(true);
    expect(targetsModule(c, 'model.layers.0.self_attn.k_proj')).toBe(false);
    // a suffix must start at a dot
    expect(targetsModule(c, 'model.layers.0.self_attn.xq_proj')).toBe(false);
  });

  it('fully matches a regex target', () => {
    const c = config({ target_modules: '.*\\.layers\\.1\\..*q_proj' });
    expect(targetsModule(c, 'model.layers.1.self_attn.q_proj')).toBe(true);
    expect(targetsModule(c, 'model.layers.0.self_attn.q_proj')).toBe(false);
  });

  it('honours layers_to_transform', () => {
    const c = config({ layers_to_transform: [1] });
    expect(targetsModule(c, 'model.layers.1.self_attn.q_proj')).toBe(true);
    expect(targetsModule(c, 'model.layers.0.self_attn.q_proj')).toBe(false);
    expect(layerIndexOf('model.layers.12.mlp.up_proj')).toBe(12);
  });

  it('computes the PEFT scale: alpha/r, alpha/sqrt(r) under rsLoRA, and per-module patterns', () => {
    const plain = config();
    expect(scaleFor(plain, 'model.layers.0.self_attn.q_proj')).toBe(2);
    const rs = config({ use_rslora: true, r: 16, lora_alpha: 8 });
    expect(scaleFor(rs, 'model.layers.0.self_attn.q_proj')).toBe(2);
    const pat = config({
      rank_pattern: { 'layers.1.self_attn.q_proj': 4, v_proj: 2 },
      alpha_pattern: { v_proj: 32 },
    });
    expect(rankFor(pat, 'model.layers.1.self_attn.q_proj')).toBe(4);
    expect(rankFor(pat, 'model.layers.0.self_attn.q_proj')).toBe(8);
    expect(alphaFor(pat, 'model.layers.0.self_attn.v_proj')).toBe(32);
    expect(scaleFor(pat, 'model.layers.0.self_attn.v_proj')).toBe(16);
    expect(scaleFor(pat, 'model.layers.1.self_attn.q_proj')).toBe(4);
  });

  it('matches pattern keys at a dot boundary only', () => {
    const pat = config({ rank_pattern: { q_proj: 4 } });
    expect(rankFor(pat, 'model.layers.0.self_attn.q_proj')).toBe(4);
    expect(rankFor(pat, 'model.layers.0.self_attn.xq_proj')).toBe(8);
  });
});

describe('duplicate keys', () => {
  it('refuses an adapter_config.json with a duplicate key', () => {
    const { findings } = parseLoraConfig(
      '{"peft_type": "LORA", "r": 8, "r": 64, "lora_alpha": 16, "target_modules": ["q_proj"]}',
    );
    expect(findings[0]?.code).toBe('CONFIG_JSON');
    expect(findings[0]?.message).toMatch(/duplicate/i);
  });
});
