/**
 * Every base architecture proven against the real llama-server: a tiny model of the architecture
 * (generated from its row of the table), an adapter on every linear module it has (each expert of
 * the mixture-of-experts ones, the fused projections of phi3), converted by the built CLI. The
 * base served with `--lora` must give the log-probs of a model merged apart from the converter
 * (test/helpers/reference.ts), and the adapter must change the model.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ArchName } from '../../src/arch.js';
import type { AdapterSpec, LoraTargetSpec } from '../../src/testkit/peft-adapter.js';
import {
  TINY_HPARAMS,
  TINY_SHAPES,
  tinyLoraTargets,
  writeTinyModel,
  type TinyModelOptions,
} from '../../src/testkit/tiny-model.js';
import { runCli } from '../helpers/cli.js';
import { TINY_VOCAB_SIZE, writeAdapter } from '../helpers/fixtures.js';
import { changedFrom, maxDiff, PRECISE, probs } from '../helpers/logprobs.js';
import { llamaServerBinary, processAlive, startLlamaServer, type LlamaServer } from '../helpers/llama.js';
import { writeReferenceMerged } from '../helpers/reference.js';
import { tempDir } from '../helpers/tmp.js';

let dir: string;
const servers: LlamaServer[] = [];

beforeAll(async () => {
  await llamaServerBinary();
  dir = await tempDir('codi-archs-');
}, 45 * 60_000);

afterAll(async () => {
  await Promise.all(servers.map((s) => s.stop()));
  for (const s of servers) expect(processAlive(s.pid), `llama-server ${s.pid} left running`).toBe(false);
});

interface Variant {
  name: string;
  arch: ArchName;
  model: TinyModelOptions;
  /** RoPE heads whose rows llama.cpp's converter permutes, as the test states them (NORM RoPE archs) */
  permute?: { q: number; kv: number };
  /** the adapter beyond every linear module of every layer */
  adapter?: (targets: LoraTargetSpec[]) => Partial<AdapterSpec>;
  /** PEFT's scale of the modules the adapter gives another one (else `literalScale`) */
  scale?: (module: string) => number | undefined;
}

/** Experts get other ranks (padded in the stacked tensor) and some get no LoRA at all (zeros there). */
const MIXED_EXPERTS = (targets: LoraTargetSpec[]): Partial<AdapterSpec> => ({
  rankPattern: { 'experts.1.up_proj': 4, 'layers.1.mlp.experts.3.down_proj': 2 },
  alphaPattern: { 'experts.2.gate_proj': 4 },
  modules: targets.filter((t) => !/^model\.layers\.1\.mlp\.experts\.2\./u.test(t.module)),
});

/** gemma3's embedding too, on an untied base, trained with the PEFT release `peftVersion` */
const GEMMA3_EMBEDDING = (peftVersion: string | null): Pick<Variant, 'model' | 'adapter'> => ({
  model: { tiedEmbeddings: false },
  adapter: (targets) => ({
    modules: [
      {
        module: 'model.language_model.embed_tokens',
        inFeatures: TINY_VOCAB_SIZE,
        outFeatures: TINY_HPARAMS.nEmbd,
        kind: 'embedding',
      },
      ...targets,
    ],
    ...(peftVersion === null ? {} : { extraConfig: { peft_version: peftVersion } }),
  }),
});

const VARIANTS: Variant[] = [
  { name: 'qwen3, head size 32 (hidden / heads 16)', arch: 'qwen3', model: { hparams: TINY_SHAPES.qwen3 } },
  {
    name: 'llama, Mistral-shaped (head size 128 = hidden / heads)',
    arch: 'llama',
    model: { hparams: TINY_SHAPES.mistral },
    permute: { q: TINY_SHAPES.mistral.nHead, kv: TINY_SHAPES.mistral.nHeadKv },
  },
  {
    name: 'llama, Devstral-shaped (head size 128, hidden / heads 80)',
    arch: 'llama',
    model: { hparams: TINY_SHAPES.devstral },
    permute: { q: TINY_SHAPES.devstral.nHead, kv: TINY_SHAPES.devstral.nHeadKv },
  },
  { name: 'gemma2', arch: 'gemma2', model: {} },
  { name: 'gemma3 (model.language_model. names)', arch: 'gemma3', model: {} },
  {
    name: 'gemma3 untied, embedding LoRA from PEFT 0.18 (delta scaled by sqrt(hidden) as llama.cpp does)',
    arch: 'gemma3',
    ...GEMMA3_EMBEDDING('0.18.0'),
  },
  {
    name: 'gemma3 untied, embedding LoRA without peft_version (older PEFT: delta unscaled)',
    arch: 'gemma3',
    ...GEMMA3_EMBEDDING(null),
    // r 8, alpha 16, and llama.cpp's sqrt(64) after the delta undone: 2 / 8
    scale: (module) => (module.endsWith('embed_tokens') ? 2 / 8 : undefined),
  },
  { name: 'phi3 (fused qkv_proj and gate_up_proj)', arch: 'phi3', model: {} },
  {
    name: 'granite (its multipliers; q/k permuted)',
    arch: 'granite',
    model: {},
    permute: { q: TINY_HPARAMS.nHead, kv: TINY_HPARAMS.nHeadKv },
  },
  { name: 'olmo2 (its own output head, with a LoRA)', arch: 'olmo2', model: {} },
  {
    name: 'qwen2moe (router, experts of mixed ranks, shared expert and its gate, output head)',
    arch: 'qwen2moe',
    model: {},
    adapter: MIXED_EXPERTS,
  },
  { name: 'qwen3moe (router, experts of mixed ranks)', arch: 'qwen3moe', model: {}, adapter: MIXED_EXPERTS },
];

/** PEFT's scale of each module, read off the adapter spec below: r 8, alpha 16, and MIXED_EXPERTS' patterns */
function literalScale(module: string): number {
  if (/experts\.1\.up_proj$/u.test(module)) return 16 / 4;
  if (module.endsWith('layers.1.mlp.experts.3.down_proj')) return 16 / 2;
  if (/experts\.2\.gate_proj$/u.test(module)) return 4 / 8;
  return 16 / 8;
}

describe('each architecture: --lora on its tiny base equals an independently merged model', () => {
  it.each(VARIANTS.map((v) => [v.name, v] as const))('%s', async (_name, variant) => {
    const model: TinyModelOptions = { ...variant.model, arch: variant.arch };
    const id = `arch-${VARIANTS.indexOf(variant)}-${variant.arch}`;
    const base = join(dir, `${id}.base.gguf`);
    const info = await writeTinyModel(base, model);
    const targets = tinyLoraTargets(model, true);
    const extra = variant.adapter?.(targets) ?? {};
    const modules = extra.modules ?? targets;
    const spec: AdapterSpec = {
      id,
      r: 8,
      alpha: 16,
      targetModules: [...new Set(modules.map((t) => t.module.split('.').at(-1) ?? ''))],
      seed: 300 + VARIANTS.indexOf(variant),
      ...extra,
      modules,
    };
    const adapterDir = await writeAdapter(dir, spec);
    const gguf = join(dir, `${id}.lora.gguf`);
    const converted = await runCli(['convert', adapterDir, '--base', base, '--out', gguf, '--json']);
    expect(converted.code, converted.stderr).toBe(0);
    expect((converted.json as { base: { arch: string } }).base.arch).toBe(variant.arch);

    const reference = join(dir, `${id}.reference.gguf`);
    await writeReferenceMerged(reference, spec, {
      model,
      scale: (module) => variant.scale?.(module) ?? literalScale(module),
      ...(variant.permute
        ? {
            permuteHeads: (name: string) =>
              /\.attn_q\.weight$/u.test(name)
                ? (variant.permute?.q ?? null)
                : /\.attn_k\.weight$/u.test(name)
                  ? (variant.permute?.kv ?? null)
                  : null,
          }
        : {}),
    });

    // one server for the base with the adapter at scale 1 and at scale 0, one for the reference
    const [withLora, merged] = await Promise.all([serve(base, [gguf]), serve(reference)]);
    const lora = await probs(withLora, [{ id: 0, scale: 1 }]);
    const plain = await probs(withLora, [{ id: 0, scale: 0 }]);
    const want = await probs(merged);
    await Promise.all([stop(withLora), stop(merged)]);

    const diff = maxDiff(lora, want);
    const effect = changedFrom(want, plain);
    console.log(
      `[archs] ${variant.name}: ${info.tensors.length} base tensors, max |Δ logprob| lora vs reference ${diff.toExponential(2)}, adapter effect ${effect.toFixed(3)}`,
    );
    expect(diff).toBeLessThanOrEqual(1e-3);
    expect(effect).toBeGreaterThan(0.05);
  });
});

async function serve(model: string, lora: string[] = []): Promise<LlamaServer> {
  const s = await startLlamaServer({ model, lora, args: PRECISE, threads: 1 });
  servers.push(s);
  return s;
}

async function stop(s: LlamaServer): Promise<void> {
  await s.stop();
  servers.splice(servers.indexOf(s), 1);
}
