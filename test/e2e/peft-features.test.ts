/**
 * PEFT features a llama.cpp LoRA would serve differently from PEFT, through the built CLI: each is
 * refused with its code, hint and exit status, or served as PEFT means it (and said so).
 */
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { readGgufHeader } from '../../src/files/gguf.js';
import { exampleSpec } from '../../src/testkit/examples.js';
import {
  ALL_PROJECTIONS,
  decoderTargets,
  writePeftAdapter,
  type AdapterSpec,
} from '../../src/testkit/peft-adapter.js';
import { TINY_HPARAMS, writeTinyModel } from '../../src/testkit/tiny-model.js';
import { runCli, type CliResult } from '../helpers/cli.js';
import { TINY_DIMS, TINY_VOCAB_SIZE } from '../helpers/fixtures.js';
import { tempDir } from '../helpers/tmp.js';

const BASE = 'examples/base/tiny-qwen2.gguf';

interface ReportJson {
  ok: boolean;
  findings: { code: string; level: string; message: string; hint?: string; pointer?: string }[];
  checks: { name: string; status: string; summary: string }[];
}
interface ErrorJson {
  ok: false;
  error: { code: string; message: string; exitCode: number; hint?: string };
}

let dir: string;
let untied: string;

beforeAll(async () => {
  dir = await tempDir('codi-peft-features-');
  untied = join(dir, 'tiny-qwen2-untied.gguf');
  await writeTinyModel(untied, { tiedEmbeddings: false });
});

async function adapter(id: string, changes: Partial<AdapterSpec> = {}): Promise<string> {
  const path = join(dir, id);
  await writePeftAdapter(path, { ...exampleSpec(id), ...changes });
  return path;
}

async function verify(path: string, ...args: string[]): Promise<{ r: CliResult; report: ReportJson }> {
  const r = await runCli(['verify', path, ...args, '--json']);
  return { r, report: r.json as ReportJson };
}

const codes = (report: ReportJson): string[] => report.findings.map((f) => f.code);

describe('activated LoRA (alora_invocation_tokens)', () => {
  it('verify describes it; convert writes the invocation for llama-server and reports both', async () => {
    const a = await adapter('alora', { extraConfig: { alora_invocation_tokens: [300, 45, 201] } });
    const { r, report } = await verify(a);
    expect(r.code).toBe(0);
    expect(report.checks.find((c) => c.name === 'config')?.summary).toContain('activated by 3 tokens');
    const out = join(dir, 'alora.gguf');
    const c = await runCli(['convert', a, '--base', BASE, '--out', out, '--json']);
    expect(c.code, c.stderr).toBe(0);
    expect(c.json).toMatchObject({ alora: { invocation_tokens: [300, 45, 201], written: [45, 201] } });
    const g = await readGgufHeader(out);
    expect(g.metadata.get('adapter.alora.invocation_tokens')?.value).toMatchObject({
      items: Uint32Array.from([45, 201]),
    });
    // an ordinary LoRA has no such key
    const plainOut = join(dir, 'plain.gguf');
    const plain = await adapter('plain');
    expect((await runCli(['convert', plain, '--base', BASE, '--out', plainOut])).code).toBe(0);
    expect((await readGgufHeader(plainOut)).metadata.has('adapter.alora.invocation_tokens')).toBe(false);
  });

  it('invocation_string without the tokens: refused (exit 1) with how to record them', async () => {
    const a = await adapter('alora-string', {
      extraConfig: { invocation_string: '<|start_of_role|>certainty<|end_of_role|>' },
    });
    const { r, report } = await verify(a);
    expect(r.code).toBe(1);
    expect(codes(report)).toEqual(['CONFIG_ALORA_STRING']);
    const human = await runCli(['verify', a]);
    expect(human.stdout).toContain('CONFIG_ALORA_STRING');
    expect(human.stdout).toMatch(/hint: record the token ids .*alora_invocation_tokens/u);
    const c = await runCli(['convert', a, '--base', BASE, '--out', join(dir, 'x.gguf'), '--json']);
    expect(c.code).toBe(1);
    expect((c.json as ErrorJson).error.code).toBe('CONFIG_ALORA_STRING');
  });

  it('token ids the base vocabulary lacks: BASE_ALORA_TOKENS with --base (it would never activate)', async () => {
    const a = await adapter('alora-vocab', {
      extraConfig: { alora_invocation_tokens: [12, TINY_VOCAB_SIZE + 5] },
    });
    expect((await verify(a)).r.code).toBe(0);
    const { r, report } = await verify(a, '--base', BASE);
    expect(r.code).toBe(1);
    expect(codes(report)).toEqual(['BASE_ALORA_TOKENS', 'BASE_UNRECORDED']);
    expect(report.findings[0]?.message).toContain(String(TINY_VOCAB_SIZE + 5));
  });

  it('with an embedding LoRA: refused (TENSOR_ALORA_EMBEDDING)', async () => {
    const a = await adapter('alora-embed', {
      targetModules: [...ALL_PROJECTIONS, 'embed_tokens'],
      modules: [
        ...decoderTargets(TINY_DIMS),
        {
          module: 'model.embed_tokens',
          inFeatures: TINY_VOCAB_SIZE,
          outFeatures: TINY_HPARAMS.nEmbd,
          kind: 'embedding',
        },
      ],
      extraConfig: { alora_invocation_tokens: [300, 45] },
    });
    const { r, report } = await verify(a);
    expect(r.code).toBe(1);
    expect(codes(report)).toEqual(['TENSOR_ALORA_EMBEDDING']);
  });
});

describe('adapters that need a modified base', () => {
  it.each(['pissa', 'pissa_niter_16', 'olora', 'corda', 'loftq', 'lora_ga'])(
    'init_lora_weights %s: refused (exit 1, CONFIG_BASE_MODIFIED) by verify and convert',
    async (init) => {
      const a = await adapter(`init-${init.replace(/_/gu, '-')}`, {
        extraConfig: { init_lora_weights: init },
      });
      const { r, report } = await verify(a);
      expect(r.code).toBe(1);
      expect(codes(report)).toEqual(['CONFIG_BASE_MODIFIED']);
      expect(report.findings[0]?.hint).toContain('path_initial_model_for_weight_conversion');
      const c = await runCli(['convert', a, '--base', BASE, '--out', join(dir, `${init}.gguf`), '--json']);
      expect((c.json as ErrorJson).error).toMatchObject({ code: 'CONFIG_BASE_MODIFIED', exitCode: 1 });
    },
  );

  it('converted back to a plain LoRA (init_lora_weights true, twice the rank): converts', async () => {
    const a = await adapter('pissa-converted', {
      r: 16,
      alpha: 32,
      extraConfig: { init_lora_weights: true, corda_config: null, lora_ga_config: null },
    });
    const c = await runCli([
      'convert',
      a,
      '--base',
      BASE,
      '--out',
      join(dir, 'pissa-converted.gguf'),
      '--json',
    ]);
    expect(c.code, c.stderr).toBe(0);
  });

  it.each(['eva', 'orthogonal', 'gaussian', 'mica'])(
    'init_lora_weights %s leaves the base alone: accepted',
    async (init) => {
      const { r } = await verify(
        await adapter(`init-ok-${init}`, { extraConfig: { init_lora_weights: init } }),
      );
      expect(r.code).toBe(0);
    },
  );

  it('KaSA (kasa_config) truncates the base: refused', async () => {
    const { r, report } = await verify(
      await adapter('kasa', { extraConfig: { kasa_config: { beta: 0.0001 } } }),
    );
    expect(r.code).toBe(1);
    expect(codes(report)).toEqual(['CONFIG_BASE_MODIFIED']);
  });
});

describe('trainable_token_indices', () => {
  it('refused even when its tensor is missing; its tensor alone is named too', async () => {
    const { r, report } = await verify(
      await adapter('tokens', { extraConfig: { trainable_token_indices: [5, 9] } }),
    );
    expect(r.code).toBe(1);
    expect(codes(report)).toEqual(['CONFIG_TRAINABLE_TOKENS']);
    const withTensor = await adapter('tokens-delta', {
      extraConfig: { trainable_token_indices: [5, 9] },
      extraTensors: [
        { name: 'base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta', shape: [2, 64] },
      ],
    });
    const both = await verify(withTensor);
    expect(codes(both.report)).toEqual(['CONFIG_TRAINABLE_TOKENS', 'TENSOR_UNSUPPORTED']);
  });
});

describe('save_embedding_layers copies', () => {
  it('skipped with a warning naming each; the GGUF holds the LoRAs only', async () => {
    const copies = [
      {
        name: 'base_model.model.model.embed_tokens.base_layer.weight',
        shape: [TINY_VOCAB_SIZE, TINY_HPARAMS.nEmbd],
      },
      { name: 'base_model.model.lm_head.base_layer.weight', shape: [TINY_VOCAB_SIZE, TINY_HPARAMS.nEmbd] },
    ];
    const a = await adapter('embedding-copies', {
      targetModules: ['q_proj', 'embed_tokens', 'lm_head'],
      modules: [
        ...decoderTargets(TINY_DIMS).filter((m) => m.module.endsWith('q_proj')),
        {
          module: 'model.embed_tokens',
          inFeatures: TINY_VOCAB_SIZE,
          outFeatures: TINY_HPARAMS.nEmbd,
          kind: 'embedding',
        },
        { module: 'lm_head', inFeatures: TINY_HPARAMS.nEmbd, outFeatures: TINY_VOCAB_SIZE },
      ],
      extraTensors: copies,
    });
    const { r, report } = await verify(a, '--base', untied);
    expect(r.code, r.stderr).toBe(0);
    const skipped = report.findings.filter((f) => f.code === 'TENSOR_EMBEDDING_COPY');
    expect(skipped.map((f) => f.level)).toEqual(['warning', 'warning']);
    expect(skipped.map((f) => f.message).join('\n')).toContain(copies[0]?.name);
    expect(skipped.map((f) => f.message).join('\n')).toContain(copies[1]?.name);
    const human = await runCli(['verify', a]);
    expect(human.code).toBe(0);
    expect(human.stdout).toContain('lm_head.base_layer.weight');

    const out = join(dir, 'embedding-copies.gguf');
    const c = await runCli(['convert', a, '--base', untied, '--out', out, '--json']);
    expect(c.code, c.stderr).toBe(0);
    const names = (await readGgufHeader(out)).tensors.map((t) => t.name).sort();
    expect(names).toEqual(
      [
        'blk.0.attn_q.weight.lora_a',
        'blk.0.attn_q.weight.lora_b',
        'blk.1.attn_q.weight.lora_a',
        'blk.1.attn_q.weight.lora_b',
        'output.weight.lora_a',
        'output.weight.lora_b',
        'token_embd.weight.lora_a',
        'token_embd.weight.lora_b',
      ].sort(),
    );
    expect((c.json as { warnings: { code: string }[] }).warnings.map((w) => w.code)).toContain(
      'TENSOR_EMBEDDING_COPY',
    );
  });
});

describe('target_modules entries', () => {
  it('an entry that matches nothing is a warning; the adapter converts', async () => {
    const a = await adapter('unmatched-entry', { targetModules: [...ALL_PROJECTIONS, 'lm_head', 'c_attn'] });
    const { r, report } = await verify(a);
    expect(r.code).toBe(0);
    expect(report.findings.map((f) => [f.code, f.level])).toEqual([
      ['TARGET_UNMATCHED', 'warning'],
      ['TARGET_UNMATCHED', 'warning'],
    ]);
    const c = await runCli(['convert', a, '--base', BASE, '--out', join(dir, 'unmatched.gguf')]);
    expect(c.code, c.stderr).toBe(0);
  });

  it('no entry matching anything: exit 1 (TARGET_NONE), as PEFT refuses it', async () => {
    const a = await adapter('no-entry', { targetModules: ['c_attn', 'c_proj'] });
    const { r, report } = await verify(a);
    expect(r.code).toBe(1);
    expect(codes(report)).toContain('TARGET_NONE');
    const c = await runCli(['convert', a, '--base', BASE, '--out', join(dir, 'none.gguf'), '--json']);
    expect(c.code).toBe(1);
  });
});

describe('all-linear', () => {
  it('every linear layer, the shorthand in any case: converts', async () => {
    const a = await adapter('all-linear', { targetModules: 'ALL-Linear' });
    const c = await runCli(['convert', a, '--base', BASE, '--out', join(dir, 'all-linear.gguf'), '--json']);
    expect(c.code, c.stderr).toBe(0);
    expect(c.json).toMatchObject({ tensors: 28 });
  });

  it('an lm_head LoRA under all-linear is an error: PEFT never puts one there', async () => {
    const a = await adapter('all-linear-head', {
      targetModules: 'all-linear',
      modules: [
        ...decoderTargets(TINY_DIMS),
        { module: 'lm_head', inFeatures: TINY_HPARAMS.nEmbd, outFeatures: TINY_VOCAB_SIZE },
      ],
    });
    const { r, report } = await verify(a, '--base', untied);
    expect(r.code).toBe(1);
    expect(codes(report)).toContain('TENSOR_UNTARGETED');
    expect(report.findings.find((f) => f.code === 'TENSOR_UNTARGETED')?.message).toMatch(
      /^lm_head .*all-linear/u,
    );
  });

  it('an embedding LoRA under all-linear is an error too', async () => {
    const a = await adapter('all-linear-embed', {
      targetModules: 'all-linear',
      modules: [
        ...decoderTargets(TINY_DIMS),
        {
          module: 'model.embed_tokens',
          inFeatures: TINY_VOCAB_SIZE,
          outFeatures: TINY_HPARAMS.nEmbd,
          kind: 'embedding',
        },
      ],
    });
    const { r, report } = await verify(a);
    expect(r.code).toBe(1);
    expect(codes(report)).toEqual(['TENSOR_UNTARGETED']);
  });
});
