import { describe, expect, it } from 'vitest';
import {
  alphaFor,
  describeConfig,
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

  it('layers_to_transform as PEFT reads it: an empty list is every layer, a module named whole is never filtered', () => {
    expect(targetsModule(config({ layers_to_transform: [] }), 'model.layers.0.self_attn.q_proj')).toBe(true);
    const whole = config({
      target_modules: ['model.layers.0.self_attn.q_proj', 'v_proj'],
      layers_to_transform: [1],
    });
    expect(targetsModule(whole, 'model.layers.0.self_attn.q_proj')).toBe(true);
    expect(targetsModule(whole, 'model.layers.0.self_attn.v_proj')).toBe(false);
    expect(
      targetsModule(
        config({ layers_to_transform: 1, layers_pattern: '' }),
        'model.layers.1.self_attn.q_proj',
      ),
    ).toBe(true);
  });

  it('the layer index of a nested module by PEFT release: the first numbered segment from 0.20, the last before', () => {
    const expert = 'model.layers.1.mlp.experts.0.gate_proj';
    expect(layerIndexOf(expert, null, 'peft-0.20')).toBe(1);
    expect(layerIndexOf(expert, null, 'peft-0.19')).toBe(0);
    expect(layerIndexOf(expert, ['layers'], 'peft-0.19')).toBe(1);
    expect(layerIndexOf(expert, ['experts'], 'peft-0.20')).toBe(0);
    expect(layerIndexOf('layers.3.q_proj')).toBeNull();
    const targets = { target_modules: ['gate_proj'], layers_to_transform: [1] };
    expect(targetsModule(config({ ...targets, peft_version: '0.20.0' }), expert)).toBe(true);
    expect(targetsModule(config({ ...targets, peft_version: '0.19.1' }), expert)).toBe(false);
    // which release made it is unknown: either rule's selection is consistent with the config
    expect(targetsModule(config(targets), expert)).toBe(true);
    expect(targetsModule(config({ ...targets, layers_to_transform: [0] }), expert)).toBe(true);
    expect(targetsModule(config({ ...targets, layers_to_transform: [2] }), expert)).toBe(false);
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

describe('PEFT features a llama.cpp LoRA cannot serve as PEFT means them', () => {
  const codesOf = (overrides: Record<string, unknown>): string[] =>
    parse(overrides).findings.map((f) => f.code);

  it.each(['pissa', 'pissa_niter_4', 'olora', 'OLoRA', 'corda', 'loftq', 'lora_ga'])(
    'init_lora_weights %s changes the base weights: refused (CONFIG_BASE_MODIFIED)',
    (init) => {
      const found = parse({ init_lora_weights: init }).findings;
      expect(found.map((f) => f.code)).toEqual(['CONFIG_BASE_MODIFIED']);
      expect(found[0]).toMatchObject({ level: 'error', pointer: '/init_lora_weights' });
      expect(found[0]?.hint).toContain('path_initial_model_for_weight_conversion');
    },
  );

  it('KaSA truncates the base: refused whatever init_lora_weights says', () => {
    expect(codesOf({ kasa_config: { beta: 1e-4, gamma: 1e-3 } })).toEqual(['CONFIG_BASE_MODIFIED']);
  });

  it.each([true, false, null, 'gaussian', 'eva', 'orthogonal', 'mica', 'Gaussian'])(
    'init_lora_weights %s leaves the base as it is: accepted',
    (init) => {
      expect(codesOf({ init_lora_weights: init })).toEqual([]);
    },
  );

  it('the converted-back form (init_lora_weights true, its sub-config still there) is an ordinary LoRA', () => {
    expect(
      codesOf({
        init_lora_weights: true,
        r: 16,
        lora_alpha: 32,
        corda_config: { corda_method: 'ipm' },
        lora_ga_config: { direction: 'ArB2r' },
      }),
    ).toEqual([]);
  });

  it('an init_lora_weights it does not know is refused: it might change the base', () => {
    const found = parse({ init_lora_weights: 'shiny_new_init' }).findings;
    expect(found.map((f) => f.code)).toEqual(['CONFIG_UNSUPPORTED']);
    expect(found[0]?.message).toContain('shiny_new_init');
  });

  it.each([[[0, 5, 9]], [{ embed_tokens: [1, 2] }]])(
    'trainable_token_indices %j: refused even without its tensor (CONFIG_TRAINABLE_TOKENS)',
    (indices) => {
      expect(codesOf({ trainable_token_indices: indices })).toEqual(['CONFIG_TRAINABLE_TOKENS']);
    },
  );

  it.each([
    ['use_qalora', true],
    ['use_bdlora', { target_modules_bd_a: ['q_proj'] }],
    ['arrow_config', { top_k: 2 }],
    ['monteclora_config', { num_samples: 4 }],
    ['megatron_config', { tensor_model_parallel_size: 2 }],
  ])('%s: a LoRA variant whose forward pass is not W·x + s·B·A·x, refused', (key, value) => {
    const found = parse({ [key]: value }).findings;
    expect(found.map((f) => f.code)).toEqual(['CONFIG_UNSUPPORTED']);
    expect(found[0]?.pointer).toBe(`/${key}`);
  });

  it('the same variants switched off, as PEFT writes them, are fine', () => {
    expect(
      codesOf({
        use_qalora: false,
        use_bdlora: null,
        arrow_config: null,
        monteclora_config: null,
        kasa_config: null,
      }),
    ).toEqual([]);
  });

  it('activated LoRA: alora_invocation_tokens read, validated, described', () => {
    const c = config({ alora_invocation_tokens: [300, 45, 201] });
    expect(c.aloraInvocationTokens).toEqual([300, 45, 201]);
    expect(describeConfig(c)).toContain('activated by 3 tokens');
    expect(config({}).aloraInvocationTokens).toBeNull();
    for (const bad of [[], [-1], [1.5], ['a'], [2 ** 31]]) {
      expect(new Set(codesOf({ alora_invocation_tokens: bad })), JSON.stringify(bad)).toEqual(
        new Set(['CONFIG_INVALID']),
      );
    }
  });

  it('a one-token invocation is a warning: llama-server starts one token early for it', () => {
    const found = parse({ alora_invocation_tokens: [201] }).findings;
    expect(found).toEqual([expect.objectContaining({ code: 'CONFIG_ALORA_ONE_TOKEN', level: 'warning' })]);
  });

  it('invocation_string without the tokens is refused with the way to record them', () => {
    const found = parse({ invocation_string: '<|start_of_role|>certainty<|end_of_role|>' }).findings;
    expect(found.map((f) => f.code)).toEqual(['CONFIG_ALORA_STRING']);
    expect(found[0]?.hint).toContain('alora_invocation_tokens');
    // with the tokens, the tokens are what applies (as in llama.cpp's converter)
    expect(codesOf({ invocation_string: 'x', alora_invocation_tokens: [1, 2] })).toEqual([]);
  });
});

describe('all-linear, as PEFT resolves it', () => {
  it('is matched case-insensitively', () => {
    expect(config({ target_modules: 'ALL-LINEAR' }).targets.kind).toBe('all-linear');
  });

  it('selects linear layers, but not the output head nor embeddings', () => {
    const c = config({ target_modules: 'all-linear' });
    expect(targetsModule(c, 'model.layers.3.mlp.down_proj')).toBe(true);
    expect(targetsModule(c, 'model.layers.3.mlp.gate')).toBe(true);
    expect(targetsModule(c, 'lm_head')).toBe(false);
    expect(targetsModule(c, 'model.embed_tokens')).toBe(false);
    expect(targetsModule(c, 'model.language_model.embed_tokens')).toBe(false);
    expect(targetsModule(c, 'model.layers.0.self_attn.q_proj', 'embedding')).toBe(false);
  });
});
