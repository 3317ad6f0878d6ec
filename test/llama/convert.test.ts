/**
 * Proof of `convert` against the real llama-server: for every generated adapter, the base served
 * with `--lora converted.gguf` gives the same next-token log-probs as a base into which the project
 * merged W + scale·B·A with PEFT's own per-module scale.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convertAdapter, type OutType } from '../../src/convert.js';
import { writeMergedModel } from '../../src/testkit/merge.js';
import { ALL_PROJECTIONS, decoderTargets, type AdapterSpec } from '../../src/testkit/peft-adapter.js';
import { TINY_HPARAMS, writeTinyModel } from '../../src/testkit/tiny-model.js';
import { verifyAdapter } from '../../src/verify.js';
import { baseCheckFor, readBaseForCheck } from '../../src/base-model.js';
import { ADAPTER_SPECS, TINY_DIMS, writeAdapter } from '../helpers/fixtures.js';
import {
  completion,
  llamaServerBinary,
  postJson,
  processAlive,
  startLlamaServer,
  type LlamaServer,
} from '../helpers/llama.js';
import { tempDir } from '../helpers/tmp.js';

const PROMPTS = ['def add(a, b):', 'The quick brown fox', 'import numpy as np\n', 'for i in range(10):'];
const N_PREDICT = 3;

type Probs = { token: number; top: Map<number, number> }[][];

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

/**
 * Both sides of every comparison run attention in f32 (no flash attention, f32 KV cache): with
 * llama.cpp's defaults its f16 attention alone moves log-probs by ~2e-3 between two mathematically
 * equal models, which would hide what this test is about (measured: 1.8e-3 → 4e-6).
 */
const PRECISE = ['-fa', 'off', '-ctk', 'f32', '-ctv', 'f32'];

async function serve(model: string, lora: string[] = []): Promise<LlamaServer> {
  const s = await startLlamaServer({ model, lora, args: PRECISE });
  servers.push(s);
  return s;
}

async function stop(s: LlamaServer): Promise<void> {
  await s.stop();
  servers.splice(servers.indexOf(s), 1);
}

/** Greedy next-token log-probs (top 20) for every prompt. */
async function probs(server: LlamaServer): Promise<Probs> {
  const out: Probs = [];
  for (const prompt of PROMPTS) {
    const res = await completion(server, {
      prompt,
      n_predict: N_PREDICT,
      temperature: 0,
      n_probs: 20,
      cache_prompt: false,
    });
    const steps = res.completion_probabilities ?? [];
    expect(steps.length).toBe(N_PREDICT);
    out.push(steps.map((s) => ({ token: s.id, top: new Map(s.top_logprobs.map((t) => [t.id, t.logprob])) })));
  }
  return out;
}

/**
 * Largest log-prob difference over the tokens both top lists contain; the greedy paths must agree.
 * `steps` limits the comparison to the first generated positions (lossy outtypes may pick another
 * token later, after which the contexts differ).
 */
function maxDiff(a: Probs, b: Probs, steps = N_PREDICT): number {
  let worst = 0;
  a.forEach((all, p) => {
    all.slice(0, steps).forEach((step, i) => {
      const other = b[p]?.[i];
      expect(other?.token, `prompt ${p} step ${i}: greedy token`).toBe(step.token);
      let shared = 0;
      for (const [id, lp] of step.top) {
        const lp2 = other?.top.get(id);
        if (lp2 === undefined) continue;
        shared++;
        worst = Math.max(worst, Math.abs(lp - lp2));
      }
      expect(shared, `prompt ${p} step ${i}: shared top tokens`).toBeGreaterThanOrEqual(15);
    });
  });
  return worst;
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

describe('verify --base: pre-flight catches what llama-server would fail on', () => {
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

function changedFrom(a: Probs, b: Probs): number {
  let worst = 0;
  a.forEach((steps, p) => {
    const first = steps[0];
    const other = b[p]?.[0];
    if (!first || !other) return;
    for (const [id, lp] of first.top) {
      const lp2 = other.top.get(id);
      if (lp2 !== undefined) worst = Math.max(worst, Math.abs(lp - lp2));
    }
  });
  return worst;
}
