/**
 * Proof of `convert` against the real llama-server: for every generated adapter, the base served
 * with `--lora converted.gguf` gives the same next-token log-probs as a base into which the project
 * merged W + scale·B·A with PEFT's own per-module scale.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convertAdapter, type OutType } from '../../src/convert.js';
import { GgmlType, gv } from '../../src/formats/ggml-types.js';
import { writeGguf } from '../../src/files/gguf-writer.js';
import { writeMergedModel } from '../../src/testkit/merge.js';
import {
  ALL_PROJECTIONS,
  decoderTargets,
  generateLoraTensors,
  type AdapterSpec,
} from '../../src/testkit/peft-adapter.js';
import { TINY_HPARAMS, writeTinyModel } from '../../src/testkit/tiny-model.js';
import { verifyAdapter } from '../../src/verify.js';
import { baseCheckFor, readBaseForCheck } from '../../src/base-model.js';
import { ADAPTER_SPECS, TINY_DIMS, writeAdapter } from '../helpers/fixtures.js';
import { changedFrom, maxDiff, PRECISE, probs, type Probs } from '../helpers/logprobs.js';
import {
  llamaServerBinary,
  postJson,
  processAlive,
  startLlamaServer,
  type LlamaServer,
} from '../helpers/llama.js';
import { runCli } from '../helpers/cli.js';
import { writeReferenceMerged, type ReferenceOptions } from '../helpers/reference.js';
import { tempDir } from '../helpers/tmp.js';

let dir: string;
let base: string;
let baseUntied: string;
let baseLlama: string;
const servers: LlamaServer[] = [];

beforeAll(async () => {
  await llamaServerBinary();
  dir = await tempDir('codi-convert-');
  base = join(dir, 'tiny-qwen2.gguf');
  baseUntied = join(dir, 'tiny-qwen2-untied.gguf');
  baseLlama = join(dir, 'tiny-llama.gguf');
  await writeTinyModel(base);
  await writeTinyModel(baseUntied, { tiedEmbeddings: false });
  await writeTinyModel(baseLlama, { arch: 'llama' });
}, 45 * 60_000);

afterAll(async () => {
  await Promise.all(servers.map((s) => s.stop()));
  for (const s of servers) expect(processAlive(s.pid), `llama-server ${s.pid} left running`).toBe(false);
});

async function serve(model: string, lora: string[] = []): Promise<LlamaServer> {
  const s = await startLlamaServer({ model, lora, args: PRECISE });
  servers.push(s);
  return s;
}

async function stop(s: LlamaServer): Promise<void> {
  await s.stop();
  servers.splice(servers.indexOf(s), 1);
}

async function convertTo(adapterDir: string, model: string, outtype: OutType): Promise<string> {
  const out = join(
    dir,
    `${adapterDir.split('/').pop() ?? 'a'}.${outtype}.${model.split('/').pop() ?? ''}.gguf`,
  );
  const result = await convertAdapter(adapterDir, { base: model, out, outtype });
  expect(result.cached).toBe(false);
  return result.output;
}

/** Log-probs of one llama-server run: start, ask every prompt, stop. */
async function served(
  model: string,
  lora: string[] = [],
  before?: (s: LlamaServer) => Promise<void>,
): Promise<Probs> {
  const s = await serve(model, lora);
  await before?.(s);
  const p = await probs(s);
  await stop(s);
  return p;
}

/** The adapter's GGUF on `baseModel`, and the model the project merged W + scale·B·A into. */
async function loraAndMerged(
  adapterDir: string,
  baseModel: string,
  gguf: string,
): Promise<{ lora: Probs; merged: Probs }> {
  const mergedModel = join(
    dir,
    `${adapterDir.split('/').pop() ?? 'a'}.${baseModel.split('/').pop() ?? ''}.merged.gguf`,
  );
  await writeMergedModel(baseModel, adapterDir, mergedModel);
  return { lora: await served(baseModel, [gguf]), merged: await served(mergedModel) };
}

let plainCache: Promise<Probs> | undefined;
/** Log-probs of the plain tiny base, without adapter (computed once). */
function plainBase(): Promise<Probs> {
  plainCache ??= served(base);
  return plainCache;
}

describe('convert: merged comparison with the real llama-server', () => {
  it.each(Object.keys(ADAPTER_SPECS))(
    '%s adapter: --lora converted.gguf equals the merged model within 1e-3',
    async (name) => {
      const spec = ADAPTER_SPECS[name] as AdapterSpec;
      const adapterDir = await writeAdapter(dir, spec);
      const gguf = await convertTo(adapterDir, base, 'f32');
      const { lora: loraProbs, merged: mergedProbs } = await loraAndMerged(adapterDir, base, gguf);
      const diff = maxDiff(loraProbs, mergedProbs);
      console.log(`[convert] ${name}: max |Δ logprob| lora vs merged = ${diff.toExponential(2)}`);
      expect(diff).toBeLessThanOrEqual(1e-3);
      // the adapter must actually change the model, or the comparison proves nothing
      expect(changedFrom(loraProbs, await plainBase())).toBeGreaterThan(0.05);
    },
  );

  it('at adapter scale 0 (POST /lora-adapters) the log-probs equal the plain base', async () => {
    const adapterDir = await writeAdapter(dir, ADAPTER_SPECS.plain as AdapterSpec);
    const gguf = await convertTo(adapterDir, base, 'f32');
    const zero = await served(base, [gguf], async (s) => {
      const listed = await fetch(`${s.url}/lora-adapters`).then((r) => r.json() as Promise<unknown[]>);
      expect(listed).toEqual([expect.objectContaining({ id: 0, scale: 1 })]);
      await postJson(s, '/lora-adapters', [{ id: 0, scale: 0 }]);
    });
    const diff = maxDiff(zero, await plainBase());
    console.log(`[convert] scale 0 vs plain base: ${diff.toExponential(2)}`);
    expect(diff).toBeLessThanOrEqual(1e-3);
  });

  // Lossy outtypes: llama.cpp also rounds the activations to the weight type in the LoRA matmuls,
  // so the error is larger than the weight rounding alone. Stated tolerances (next-token log-probs
  // on the tiny model, whose adapter moves log-probs by ~1): f16 0.02, bf16 0.2, q8_0 0.25, and
  // always under a quarter of the adapter's own effect.
  it.each([
    ['f16', 2e-2],
    ['bf16', 0.2],
    ['q8_0', 0.25],
  ] as const)(
    'outtype %s loads in llama-server and stays within %d of the merged model',
    async (outtype, tol) => {
      const spec = ADAPTER_SPECS.plain as AdapterSpec;
      const adapterDir = await writeAdapter(dir, spec);
      const gguf = await convertTo(adapterDir, base, outtype);
      const { lora: got, merged: want } = await loraAndMerged(adapterDir, base, gguf);
      const diff = maxDiff(got, want, 1);
      const effect = changedFrom(want, await plainBase());
      console.log(
        `[convert] outtype ${outtype}: max |Δ logprob| vs merged = ${diff.toExponential(2)} (adapter effect ${effect.toFixed(3)})`,
      );
      expect(diff).toBeLessThanOrEqual(tol);
      expect(diff).toBeLessThan(effect / 4);
    },
  );

  it('an embed_tokens LoRA on an untied base matches the merged model (lora_a laid out for get_rows)', async () => {
    const spec: AdapterSpec = {
      id: 'tiny-embed',
      r: 8,
      alpha: 16,
      targetModules: ['embed_tokens', 'q_proj'],
      modules: [
        { module: 'model.embed_tokens', inFeatures: 484, outFeatures: TINY_HPARAMS.nEmbd, kind: 'embedding' },
        ...decoderTargets(TINY_DIMS).filter((m) => m.module.endsWith('q_proj')),
      ],
      seed: 105,
    };
    const adapterDir = await writeAdapter(dir, spec);
    const gguf = await convertTo(adapterDir, baseUntied, 'f32');
    const { lora, merged } = await loraAndMerged(adapterDir, baseUntied, gguf);
    expect(maxDiff(lora, merged)).toBeLessThanOrEqual(1e-3);
  });

  it('a llama-arch adapter (q/k rows permuted for llama.cpp RoPE) matches the merged model', async () => {
    const spec: AdapterSpec = { ...(ADAPTER_SPECS.plain as AdapterSpec), id: 'tiny-llama-lora', seed: 106 };
    const adapterDir = await writeAdapter(dir, spec);
    const gguf = await convertTo(adapterDir, baseLlama, 'f32');
    const { lora, merged } = await loraAndMerged(adapterDir, baseLlama, gguf);
    expect(maxDiff(lora, merged)).toBeLessThanOrEqual(1e-3);
  });
});

/**
 * PEFT's scale of every module of each fixture, as literal numbers read off the fixture specs
 * (test/helpers/fixtures.ts): not computed by the project's scaleFor.
 */
const LITERAL_SCALES: Record<string, (module: string) => number> = {
  // r 8, lora_alpha 16: 16/8
  plain: () => 16 / 8,
  // r 16, lora_alpha 8, use_rslora: 8/sqrt(16)
  rslora: () => 8 / 4,
  // r 8, lora_alpha 16; rank_pattern {layers.0.self_attn.q_proj: 4, down_proj: 2},
  // alpha_pattern {v_proj: 32, layers.1.mlp.up_proj: 4}
  patterns: (module) =>
    module === 'model.layers.0.self_attn.q_proj'
      ? 16 / 4
      : module.endsWith('.mlp.down_proj')
        ? 16 / 2
        : module.endsWith('.self_attn.v_proj')
          ? 32 / 8
          : module === 'model.layers.1.mlp.up_proj'
            ? 4 / 8
            : 16 / 8,
  f16: () => 16 / 8,
};

describe('convert against a reference merged apart from the project (literal scales, llama.cpp permute by definition)', () => {
  it.each(Object.keys(LITERAL_SCALES))(
    '%s adapter: --lora converted.gguf equals W + s·B·A with the literal PEFT scales within 1e-3',
    async (name) => {
      const spec = ADAPTER_SPECS[name] as AdapterSpec;
      const scale = LITERAL_SCALES[name] ?? (() => Number.NaN);
      const adapterDir = await writeAdapter(dir, spec);
      const gguf = await convertTo(adapterDir, base, 'f32');
      const diff = await againstReference(spec, gguf, base, { model: {}, scale });
      console.log(
        `[convert] ${name}: max |Δ logprob| lora vs independent reference = ${diff.toExponential(2)}`,
      );
      expect(diff).toBeLessThanOrEqual(1e-3);
    },
  );

  it("llama arch, GQA (4 heads, 2 KV heads): q/k deltas permuted by a routine written from llama.cpp's numpy expression", async () => {
    const spec: AdapterSpec = {
      ...(ADAPTER_SPECS.plain as AdapterSpec),
      id: 'tiny-llama-reference',
      seed: 110,
    };
    const adapterDir = await writeAdapter(dir, spec);
    const gguf = await convertTo(adapterDir, baseLlama, 'f32');
    const diff = await againstReference(spec, gguf, baseLlama, {
      model: { arch: 'llama' },
      scale: () => 16 / 8,
      // llama.cpp convert_hf_to_gguf: q_proj permute(n_head = 4), k_proj permute(n_head_kv = 2)
      permuteHeads: (name) =>
        /\.attn_q\.weight$/u.test(name) ? 4 : /\.attn_k\.weight$/u.test(name) ? 2 : null,
    });
    console.log(
      `[convert] llama GQA: max |Δ logprob| lora vs independent reference = ${diff.toExponential(2)}`,
    );
    expect(diff).toBeLessThanOrEqual(1e-3);
  });
});

/** Serves `gguf` on `baseModel` and the independently merged reference; the largest log-prob difference. */
async function againstReference(
  spec: AdapterSpec,
  gguf: string,
  baseModel: string,
  options: ReferenceOptions,
): Promise<number> {
  const reference = join(dir, `${spec.id}.${baseModel.split('/').pop() ?? ''}.reference.gguf`);
  await writeReferenceMerged(reference, spec, options);
  const lora = await served(baseModel, [gguf]);
  const want = await served(reference);
  // the reference must be what the adapter does to the model, not the model unchanged
  expect(changedFrom(want, baseModel === base ? await plainBase() : await served(baseModel))).toBeGreaterThan(
    0.05,
  );
  return maxDiff(lora, want);
}

/**
 * An adapter GGUF written straight from the PEFT tensors, with none of convert's checks: what a
 * converter without a pre-flight would hand llama-server. Names map by hand (q_proj → attn_q, …).
 */
async function uncheckedLoraGguf(path: string, spec: AdapterSpec, modules: readonly string[]): Promise<void> {
  const names: Record<string, string> = {
    'self_attn.q_proj': 'attn_q',
    'self_attn.k_proj': 'attn_k',
    'self_attn.v_proj': 'attn_v',
    'self_attn.o_proj': 'attn_output',
    'mlp.gate_proj': 'ffn_gate',
    'mlp.up_proj': 'ffn_up',
    'mlp.down_proj': 'ffn_down',
  };
  const peft = new Map(generateLoraTensors(spec).map((t) => [t.name, t]));
  const tensors: { name: string; ne: number[]; type: GgmlType; values: Float32Array }[] = [];
  for (const module of modules) {
    const m = /^model\.layers\.(\d+)\.(.+)$/u.exec(module);
    const target = `blk.${m?.[1] ?? ''}.${names[m?.[2] ?? ''] ?? ''}.weight`;
    for (const [half, suffix] of [
      ['lora_A', 'lora_a'],
      ['lora_B', 'lora_b'],
    ] as const) {
      const t = peft.get(`base_model.model.${module}.${half}.weight`);
      if (!t) throw new Error(`no ${half} for ${module}`);
      tensors.push({
        name: `${target}.${suffix}`,
        ne: [...t.shape].reverse(),
        type: GgmlType.F32,
        values: t.values,
      });
    }
  }
  await writeGguf(
    path,
    {
      metadata: [
        ['general.architecture', gv.str('qwen2')],
        ['general.type', gv.str('adapter')],
        ['adapter.type', gv.str('lora')],
        ['adapter.lora.alpha', gv.f32(spec.alpha)],
      ],
      tensors,
    },
    (_spec, i) => tensors[i]?.values ?? new Float32Array(0),
  );
}

describe('verify --base: pre-flight catches what llama-server would fail on', () => {
  it('verify --base --json (built CLI) names a missing tensor and a shape mismatch; llama-server refuses each of them', async () => {
    // three layers on the two-layer base (layer 2 missing), and layer 0's up_proj 96 wide instead of 128
    const modules = decoderTargets({ ...TINY_DIMS, layers: 3 }).map((m) =>
      m.module === 'model.layers.0.mlp.up_proj' ? { ...m, outFeatures: 96 } : m,
    );
    const spec: AdapterSpec = {
      id: 'tiny-preflight',
      r: 8,
      alpha: 16,
      targetModules: ALL_PROJECTIONS,
      modules,
      seed: 111,
    };
    const adapterDir = await writeAdapter(dir, spec);
    const r = await runCli(['verify', adapterDir, '--base', base, '--json']);
    expect(r.code).toBe(1);
    const report = r.json as { ok: boolean; findings: { level: string; code: string; message: string }[] };
    expect(report.ok).toBe(false);
    const incompatible = report.findings.filter((f) => f.code === 'BASE_INCOMPATIBLE');
    expect(incompatible.find((f) => f.message.startsWith('blk.2.attn_q.weight'))?.message).toContain(
      'does not exist in the base model',
    );
    expect(incompatible.find((f) => f.message.startsWith('blk.0.ffn_up.weight'))?.message).toMatch(
      /expects shape \[96, 64\] but the base tensor is \[128, 64\]/,
    );
    // 7 modules of layer 2, and the one shape
    expect(incompatible).toHaveLength(8);
    // and convert refuses it with the same finding
    await expect(
      convertAdapter(adapterDir, { base, out: join(dir, 'never-preflight.gguf') }),
    ).rejects.toMatchObject({
      code: 'BASE_INCOMPATIBLE',
    });

    // what llama-server does with either problem, given an adapter GGUF written without the checks: it
    // exits 1 before it is healthy; its reason is printed by its log thread, which does not always
    // flush before the exit (then the exit alone is the refusal, and the control below shows why)
    const missing = join(dir, 'unchecked-missing.gguf');
    await uncheckedLoraGguf(missing, spec, ['model.layers.2.self_attn.q_proj']);
    await expect(startLlamaServer({ model: base, lora: [missing], timeoutMs: 60_000 })).rejects.toThrow(
      /LoRA tensor 'blk\.2\.attn_q\.weight' does not exist in base model|exited \(1\) before it was healthy/,
    );
    const wrongShape = join(dir, 'unchecked-shape.gguf');
    await uncheckedLoraGguf(wrongShape, spec, ['model.layers.0.mlp.up_proj']);
    await expect(startLlamaServer({ model: base, lora: [wrongShape], timeoutMs: 60_000 })).rejects.toThrow(
      /tensor 'blk\.0\.ffn_up\.weight' has incorrect shape|exited \(1\) before it was healthy/,
    );
    // the same writer with a module that fits: llama-server takes it (the failures above are the problems')
    const fits = join(dir, 'unchecked-fits.gguf');
    await uncheckedLoraGguf(fits, spec, ['model.layers.0.self_attn.q_proj']);
    const ok = await serve(base, [fits]);
    await stop(ok);
  });

  it('a 3-layer adapter on the 2-layer base: llama-server refuses it, verify --base names the tensor first', async () => {
    const base3 = join(dir, 'tiny-qwen2-3l.gguf');
    await writeTinyModel(base3, { nLayer: 3 });
    const spec: AdapterSpec = {
      id: 'tiny-three-layers',
      r: 8,
      alpha: 16,
      targetModules: ALL_PROJECTIONS,
      modules: decoderTargets({ ...TINY_DIMS, layers: 3 }),
      seed: 107,
    };
    const adapterDir = await writeAdapter(dir, spec);
    const gguf = await convertTo(adapterDir, base3, 'f32');

    const report = await verifyAdapter(adapterDir, { baseCheck: baseCheckFor(await readBaseForCheck(base)) });
    expect(report.ok).toBe(false);
    const finding = report.findings.find(
      (f) => f.code === 'BASE_INCOMPATIBLE' && f.message.includes('blk.2.attn_q.weight'),
    );
    expect(finding?.message).toContain('does not exist in the base model');

    await expect(startLlamaServer({ model: base, lora: [gguf], timeoutMs: 60_000 })).rejects.toThrow(
      /does not exist in base model|failed to apply lora|exited/,
    );
  });
});

describe('tied embeddings: refused, because llama.cpp crashes on it', () => {
  it('an embed_tokens LoRA for a tied-embedding base: convert refuses; the same GGUF aborts llama-server', async () => {
    const spec: AdapterSpec = {
      id: 'tiny-embed-only',
      r: 8,
      alpha: 16,
      targetModules: ['embed_tokens'],
      modules: [
        { module: 'model.embed_tokens', inFeatures: 484, outFeatures: TINY_HPARAMS.nEmbd, kind: 'embedding' },
      ],
      seed: 108,
    };
    const adapterDir = await writeAdapter(dir, spec);
    await expect(convertAdapter(adapterDir, { base, out: join(dir, 'never.gguf') })).rejects.toMatchObject({
      code: 'BASE_TIED_EMBEDDINGS',
    });
    // converted against the untied twin, then served on the tied base: llama.cpp applies the
    // embedding LoRA to the output head too and aborts in its first decode
    const gguf = await convertTo(adapterDir, baseUntied, 'f32');
    await expect(startLlamaServer({ model: base, lora: [gguf], timeoutMs: 60_000 })).rejects.toThrow(
      /exited/,
    );
  });
});
