/**
 * Next-token log-probs from llama-server and their comparison: what every proof against the real
 * server measures.
 */
import { expect } from 'vitest';
import { completion, type LlamaServer } from './llama.js';

export const PROMPTS = [
  'def add(a, b):',
  'The quick brown fox',
  'import numpy as np\n',
  'for i in range(10):',
];
export const N_PREDICT = 3;

export type Probs = { token: number; top: Map<number, number> }[][];

/**
 * Both sides of every comparison run attention in f32 (no flash attention, f32 KV cache): with
 * llama.cpp's defaults its f16 attention alone moves log-probs between two mathematically equal
 * models by more than the tolerance the proofs hold them to.
 */
export const PRECISE = ['-fa', 'off', '-ctk', 'f32', '-ctv', 'f32'];

/**
 * Greedy next-token log-probs (top 20) for every prompt; `lora`, when given, is the request's
 * adapter list (llama-server applies exactly the listed scales, the unlisted adapters at 0).
 */
export async function probs(
  server: LlamaServer,
  lora?: readonly { id: number; scale: number }[],
): Promise<Probs> {
  const out: Probs = [];
  for (const prompt of PROMPTS) {
    const res = await completion(server, {
      prompt,
      n_predict: N_PREDICT,
      temperature: 0,
      n_probs: 20,
      cache_prompt: false,
      // a random tiny model may well pick an end-of-generation token: the comparison needs every step
      ignore_eos: true,
      ...(lora ? { lora } : {}),
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
export function maxDiff(a: Probs, b: Probs, steps = N_PREDICT): number {
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

/** How far the first generated position's log-probs moved between two runs (an adapter's effect). */
export function changedFrom(a: Probs, b: Probs): number {
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
