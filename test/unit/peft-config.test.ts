import { describe, expect, it } from 'vitest';
import {
  alphaFor,
  layerIndexOf,
  parseLoraConfig,
  patternRuleConflicts,
  patternRulesOf,
  rankAndAlpha,
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

describe('rank_pattern / alpha_pattern across PEFT releases (peft/tuners/lora/model.py, get_pattern_key)', () => {
  const q0 = 'model.layers.0.self_attn.q_proj';
  const q1 = 'model.layers.1.self_attn.q_proj';
  const v0 = 'model.layers.0.self_attn.v_proj';

  it('reads the release from peft_version (PEFT writes it since 0.18); current PEFT without it', () => {
    expect(patternRulesOf(null)).toBe('peft-0.15');
    expect(patternRulesOf('0.13.2')).toBe('peft-0.13');
    expect(patternRulesOf('0.10.0')).toBe('peft-0.13');
    expect(patternRulesOf('0.14.0')).toBe('peft-0.14');
    expect(patternRulesOf('0.15.2')).toBe('peft-0.15');
    expect(patternRulesOf('0.18.0.dev0@0123abc')).toBe('peft-0.15');
    expect(patternRulesOf('1.0.0')).toBe('peft-0.15');
    expect(patternRulesOf('unknown')).toBe('peft-0.15');
    expect(config().patternRules).toBe('peft-0.15');
    expect(config({ peft_version: '0.13.2' })).toMatchObject({
      peftVersion: '0.13.2',
      patternRules: 'peft-0.13',
    });
  });

  it('PEFT ≤ 0.13 looks rank and alpha up under ONE key (rank keys first); later releases under one key each', () => {
    const overlap = { rank_pattern: { q_proj: 4 }, alpha_pattern: { 'layers.0.self_attn.q_proj': 32 } };
    const c = config(overlap);
    // 0.15: rank from q_proj, alpha from the layer-0 key: 32/4
    expect(rankAndAlpha(c, q0)).toEqual({ rank: 4, alpha: 32 });
    expect(scaleFor(c, q0)).toBe(8);
    expect(rankAndAlpha(c, q0, 'peft-0.14')).toEqual({ rank: 4, alpha: 32 });
    // 0.13: the key is q_proj (the first rank key that matches), and alpha_pattern has no q_proj: 16/4
    expect(rankAndAlpha(c, q0, 'peft-0.13')).toEqual({ rank: 4, alpha: 16 });
    expect(scaleFor(c, q0, 'peft-0.13')).toBe(4);
    // a module only one key selects is the same in every release
    expect(scaleFor(c, q1, 'peft-0.13')).toBe(scaleFor(c, q1));
    // recorded as 0.13: that release's rules are the config's own
    expect(scaleFor(config({ ...overlap, peft_version: '0.13.2' }), q0)).toBe(4);
  });

  it('PEFT ≤ 0.14 pasted the key into .*\\.{key}$ ungrouped: an alternation only binds its first branch', () => {
    const c = config({ alpha_pattern: { 'q_proj|v_proj': 32 } });
    expect(alphaFor(c, q0)).toBe(32);
    expect(alphaFor(c, v0)).toBe(32);
    expect(rankAndAlpha(c, q0, 'peft-0.14').alpha).toBe(32);
    expect(rankAndAlpha(c, v0, 'peft-0.14').alpha).toBe(16);
    expect(rankAndAlpha(c, v0, 'peft-0.13').alpha).toBe(16);
    // an exact module name is found by every release (the dict lookup falls back to the name)
    const exact = config({ rank_pattern: { [q0]: 2 } });
    for (const rules of ['peft-0.13', 'peft-0.14', 'peft-0.15'] as const) {
      expect(rankAndAlpha(exact, q0, rules).rank).toBe(2);
    }
  });

  it('conflicts: only without peft_version, and only where the older release matches the tensor rank', () => {
    const overlap = { rank_pattern: { q_proj: 4 }, alpha_pattern: { 'layers.0.self_attn.q_proj': 32 } };
    const modules = [
      { module: q0, rank: 4 },
      { module: q1, rank: 4 },
    ];
    expect(patternRuleConflicts(config(overlap), modules)).toEqual([
      {
        module: q0,
        used: { rules: 'peft-0.15', rank: 4, alpha: 32, scale: 8 },
        other: { rules: 'peft-0.13', rank: 4, alpha: 16, scale: 4 },
      },
    ]);
    expect(patternRuleConflicts(config({ ...overlap, peft_version: '0.18.0' }), modules)).toEqual([]);
    expect(patternRuleConflicts(config(), modules)).toEqual([]);
    // here PEFT 0.13 gives another rank: its regex needs a dot before the key, so the full-name rank key
    // loses to the alpha key q_proj, under which rank_pattern has nothing (rank 8, not 4)
    const ranks = config({ rank_pattern: { [q0]: 4 }, alpha_pattern: { q_proj: 32 } });
    expect(rankAndAlpha(ranks, q0)).toEqual({ rank: 4, alpha: 32 });
    expect(rankAndAlpha(ranks, q0, 'peft-0.13')).toEqual({ rank: 8, alpha: 32 });
    // a rank-4 tensor cannot come from PEFT 0.13 (it would not load there): nothing to warn about
    expect(patternRuleConflicts(ranks, [{ module: q0, rank: 4 }])).toEqual([]);
    expect(patternRuleConflicts(ranks, [{ module: q0, rank: 8 }])).toHaveLength(1);
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
