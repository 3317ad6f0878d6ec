/**
 * Proof that the tiny model generator makes base models the real llama-server loads and generates
 * from, with complete, finite, reproducible log-probs.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { GgmlType, gv } from '../../src/formats/ggml-types.js';
import { writeGguf, type GgufTensorSpec } from '../../src/files/gguf-writer.js';
import { Rng } from '../../src/testkit/rng.js';
import { writeTinyModel, writeTinyQwen2Model, type TinyModelOptions } from '../../src/testkit/tiny-model.js';
import {
  completion,
  llamaServerBinary,
  processAlive,
  startLlamaServer,
  type CompletionResponse,
  type LlamaServer,
} from '../helpers/llama.js';

const REQUEST = { prompt: 'def add(a, b):', n_predict: 4, temperature: 0, n_probs: 10 };

let dir: string;
const started: LlamaServer[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'codi-llama-tiny-'));
  // builds llama-server on a fresh machine, or waits for a build in progress
  await llamaServerBinary();
}, 45 * 60_000);

afterAll(async () => {
  await Promise.all(started.map((s) => s.stop()));
  for (const s of started) expect(processAlive(s.pid), `llama-server ${s.pid} still running`).toBe(false);
  await rm(dir, { recursive: true, force: true });
});

async function serve(model: string): Promise<LlamaServer> {
  const server = await startLlamaServer({ model });
  started.push(server);
  return server;
}

/** The generated tokens with their top-10 log-probs, checked for completeness. */
function checkedProbs(res: CompletionResponse): { token: string; top: [number, number][] }[] {
  const probs = res.completion_probabilities ?? [];
  expect(res.tokens_predicted).toBe(REQUEST.n_predict);
  expect(probs.length).toBe(REQUEST.n_predict);
  return probs.map((p) => {
    expect(p.top_logprobs.length).toBe(10);
    for (const t of p.top_logprobs) {
      expect(Number.isFinite(t.logprob)).toBe(true);
      expect(t.logprob).toBeLessThanOrEqual(0);
      expect(t.logprob).toBeGreaterThan(-1e30); // llama-server sends float lowest() for probability 0
    }
    return { token: p.token, top: p.top_logprobs.map((t): [number, number] => [t.id, t.logprob]) };
  });
}

describe('tiny qwen2 model in llama-server', () => {
  let first: ReturnType<typeof checkedProbs>;
  let firstServerPid = -1;

  it('loads, answers /health, and generates with 10 finite top log-probs per token', async () => {
    const model = join(dir, 'tiny-qwen2.gguf');
    await writeTinyQwen2Model(model);
    const server = await serve(model);
    firstServerPid = server.pid;
    const res = await completion(server, REQUEST);
    first = checkedProbs(res);
    console.log(`[tiny-model] content=${JSON.stringify(res.content)}`);
    for (const p of first) {
      console.log(
        `[tiny-model] ${JSON.stringify(p.token)} top: ${p.top
          .slice(0, 3)
          .map(([id, lp]) => `${id}:${lp.toFixed(4)}`)
          .join(' ')}`,
      );
    }
    // not degenerate: the top choice is neither certain nor uniform over the vocabulary
    expect(first[0]?.top[0]?.[1]).toBeLessThan(-0.01);
    expect(first[0]?.top[0]?.[1]).toBeGreaterThan(Math.log(1 / 50));

    // The same request again on the same server. With the prompt cache the prompt is not evaluated
    // again in the same batch shape, so log-probs may differ in the last float bits; without it they
    // are identical.
    expect(checkedProbs(await completion(server, { ...REQUEST, cache_prompt: false }))).toEqual(first);
    const cached = checkedProbs(await completion(server, REQUEST));
    expect(cached.map((p) => p.token)).toEqual(first.map((p) => p.token));
    for (const [i, p] of cached.entries()) {
      for (const [j, [id, lp]] of p.top.entries()) {
        expect(id).toBe(first[i]?.top[j]?.[0]);
        expect(Math.abs(lp - (first[i]?.top[j]?.[1] ?? 0))).toBeLessThan(1e-4);
      }
    }
    await server.stop();
    expect(processAlive(server.pid)).toBe(false);
  });

  it('gives identical results from a freshly started server', async () => {
    expect(first).toBeDefined();
    const server = await serve(join(dir, 'tiny-qwen2.gguf'));
    expect(server.pid).not.toBe(firstServerPid);
    expect(checkedProbs(await completion(server, REQUEST))).toEqual(first);
    await server.stop();
  });

  it.each<[string, TinyModelOptions]>([
    ['qwen2 with an untied output.weight', { tiedEmbeddings: false }],
    ['llama (no q/k/v biases), 3 layers', { arch: 'llama', nLayer: 3 }],
    ['qwen2 with q8_0 weights', { weightType: 'Q8_0' }],
  ])('also serves %s', async (name, options) => {
    const model = join(dir, `${name.replace(/\W+/g, '-')}.gguf`);
    await writeTinyModel(model, options);
    const server = await serve(model);
    const probs = checkedProbs(await completion(server, REQUEST));
    expect(probs.length).toBe(4);
    await server.stop();
  });
});

describe('GGUF writer output as a llama.cpp LoRA adapter', () => {
  it('loads with lora tensors in f32, f16, bf16 and q8_0 and changes the log-probs', async () => {
    const model = join(dir, 'tiny-qwen2.gguf');
    await writeTinyQwen2Model(model);
    // lora_a ne = [in, r], lora_b ne = [r, out] (src/llama-adapter.cpp); r = 32 so q8_0 rows are whole blocks
    const r = 32;
    const targets: [string, number, GgmlType][] = [
      ['blk.0.attn_q.weight', 64, GgmlType.F32],
      ['blk.0.attn_k.weight', 32, GgmlType.F16],
      ['blk.0.attn_v.weight', 32, GgmlType.BF16],
      ['blk.1.ffn_up.weight', 128, GgmlType.Q8_0],
    ];
    const tensors: GgufTensorSpec[] = targets.flatMap(([name, out, type]) => [
      { name: `${name}.lora_a`, ne: [64, r], type },
      { name: `${name}.lora_b`, ne: [r, out], type },
    ]);
    const adapter = join(dir, 'writer-lora.gguf');
    const rng = new Rng(99);
    await writeGguf(
      adapter,
      {
        metadata: [
          ['general.architecture', gv.str('qwen2')],
          ['general.type', gv.str('adapter')],
          ['adapter.type', gv.str('lora')],
          ['adapter.lora.alpha', gv.f32(r)],
        ],
        tensors,
      },
      (t) =>
        rng.normals(
          t.ne.reduce((a, b) => a * b, 1),
          0.3,
        ),
    );
    const base = await serve(model);
    const baseProbs = checkedProbs(await completion(base, REQUEST));
    await base.stop();
    const server = await startLlamaServer({ model, lora: [adapter] });
    started.push(server);
    const listed = (await (await fetch(`${server.url}/lora-adapters`)).json()) as {
      path: string;
      scale: number;
    }[];
    expect(listed).toEqual([expect.objectContaining({ path: adapter, scale: 1 })]);
    const loraProbs = checkedProbs(await completion(server, REQUEST));
    expect(loraProbs).not.toEqual(baseProbs);
    await server.stop();
  });
});
