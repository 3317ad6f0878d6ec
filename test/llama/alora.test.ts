/**
 * Activated LoRA against the real llama-server: an adapter converted by the built CLI applies to the
 * positions PEFT applies it to. PEFT's semantics are stated by a forward pass of the tiny model written
 * apart from llama.cpp and the converter (test/helpers/forward.ts): the base model's weights before the
 * last invocation sequence, W + s·B·A from its first token on. The server's log-probs must equal it,
 * and must not equal the same pass started one token earlier (what llama-server does with the
 * invocation written as it is, which this file proves too).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ALORA_INVOCATION_KEY } from '../../src/alora.js';
import { GgufValueType } from '../../src/formats/ggml-types.js';
import { writeGguf } from '../../src/files/gguf-writer.js';
import { readGgufHeader, readTensorData } from '../../src/files/gguf.js';
import { peftActivationStart, serverActivationStart } from '../../src/testkit/alora.js';
import { ALL_PROJECTIONS, decoderTargets, type AdapterSpec } from '../../src/testkit/peft-adapter.js';
import { writeTinyModel } from '../../src/testkit/tiny-model.js';
import { runCli } from '../helpers/cli.js';
import { TINY_DIMS, writeAdapter } from '../helpers/fixtures.js';
import { lastLogProbs, type ForwardLora } from '../helpers/forward.js';
import {
  completion,
  llamaServerBinary,
  processAlive,
  startLlamaServer,
  type LlamaServer,
} from '../helpers/llama.js';
import { tempDir } from '../helpers/tmp.js';

/** The invocation sequence (ordinary token ids of the tiny vocabulary) and its one-token sibling. */
const INVOCATION = [300, 45, 201];
const ONE_TOKEN = [201];

const spec = (id: string, tokens: number[], seed: number): AdapterSpec => ({
  id,
  r: 8,
  alpha: 16,
  targetModules: ALL_PROJECTIONS,
  modules: decoderTargets(TINY_DIMS),
  seed,
  extraConfig: { alora_invocation_tokens: tokens, peft_version: '0.18.0' },
});
const ALORA = spec('tiny-alora', INVOCATION, 131);
const ALORA_ONE = spec('tiny-alora-one', ONE_TOKEN, 132);
// r 8, lora_alpha 16 on every module: 16/8, as PEFT scales it
const SCALE = (): number => 16 / 8;

/** Prompts as token ids: every one an ordinary token, none of them the invocation's by accident. */
const PREFIX = [104, 101, 108, 108, 111, 32, 119, 111, 114, 108, 100, 58];
const SUFFIX = [70, 71, 72];
const PROMPTS = {
  /** the usual case: a conversation, then the invocation at the end of the prompt, then a little more */
  middle: [...PREFIX, ...INVOCATION, ...SUFFIX],
  /** the invocation ends the prompt */
  end: [...PREFIX, ...INVOCATION],
  /** twice: the last one counts */
  twice: [...PREFIX.slice(0, 4), ...INVOCATION, ...PREFIX.slice(4), ...INVOCATION, ...SUFFIX],
  /** at the very start: every position is adapted */
  start: [...INVOCATION, ...PREFIX],
  /** absent: the adapter stays off */
  absent: [...PREFIX, ...SUFFIX],
};

const TOLERANCE = 1e-3;
/** PRECISE (as test/llama/convert.test.ts): f32 attention on the server side too */
const PRECISE = ['-fa', 'off', '-ctk', 'f32', '-ctv', 'f32'];
const MODEL = {};

let dir: string;
let base: string;
let server: LlamaServer | undefined;
/** adapter ids on the server: 0 as converted, 1 the same with the invocation written whole, 2 one token */
const AS_CONVERTED = 0;
const WRITTEN_WHOLE = 1;
const ONE = 2;
let convertJson: { alora: { invocation_tokens: number[]; written: number[] }; warnings: { code: string }[] };
let oneTokenJson: { warnings: { code: string }[] };

beforeAll(async () => {
  await llamaServerBinary();
  dir = await tempDir('codi-alora-');
  base = join(dir, 'tiny-qwen2.gguf');
  await writeTinyModel(base);
  const converted = join(dir, 'alora.gguf');
  const r = await runCli([
    'convert',
    await writeAdapter(dir, ALORA),
    '--base',
    base,
    '--out',
    converted,
    '--json',
  ]);
  expect(r.code, r.stderr).toBe(0);
  convertJson = r.json as typeof convertJson;
  const whole = join(dir, 'alora-whole.gguf');
  await withInvocation(converted, whole, INVOCATION);
  const one = join(dir, 'alora-one.gguf');
  const r1 = await runCli([
    'convert',
    await writeAdapter(dir, ALORA_ONE),
    '--base',
    base,
    '--out',
    one,
    '--json',
  ]);
  expect(r1.code, r1.stderr).toBe(0);
  oneTokenJson = r1.json as typeof oneTokenJson;
  server = await startLlamaServer({ model: base, lora: [converted, whole, one], args: PRECISE });
}, 45 * 60_000);

afterAll(async () => {
  if (!server) return;
  await server.stop();
  expect(processAlive(server.pid)).toBe(false);
});

function theServer(): LlamaServer {
  if (!server) throw new Error('llama-server did not start');
  return server;
}

/** A copy of the adapter GGUF `src` whose invocation tokens are `tokens`, everything else the same. */
async function withInvocation(src: string, dst: string, tokens: number[]): Promise<void> {
  const g = await readGgufHeader(src);
  await writeGguf(
    dst,
    {
      metadata: [...g.metadata.values()].map((e) =>
        e.key === ALORA_INVOCATION_KEY
          ? ([
              e.key,
              {
                type: GgufValueType.ARRAY,
                value: { itemType: GgufValueType.UINT32, items: Uint32Array.from(tokens) },
              },
            ] as const)
          : ([e.key, { type: e.type, value: e.value }] as const),
      ),
      tensors: g.tensors.map((t) => ({ name: t.name, ne: t.ne, type: t.type })),
      alignment: g.alignment,
    },
    (t) => readTensorData(src, g, t.name),
  );
}

/** The server's next-token log-probs (top 20) after `prompt`, with only adapter `id` on (none: -1). */
async function served(prompt: readonly number[], id: number): Promise<Map<number, number>> {
  const [first] = await generated(prompt, id, 1);
  if (!first) throw new Error('no log-probs');
  return first.top;
}

/** `n` greedy steps after `prompt`: each step's token and top-20 log-probs. */
async function generated(
  prompt: readonly number[],
  id: number,
  n: number,
): Promise<{ token: number; top: Map<number, number> }[]> {
  const res = await completion(theServer(), {
    prompt,
    n_predict: n,
    temperature: 0,
    n_probs: 20,
    cache_prompt: false,
    // every adapter listed: unlisted ones would be off anyway, but an empty list means "as loaded"
    lora: [AS_CONVERTED, WRITTEN_WHOLE, ONE].map((i) => ({ id: i, scale: i === id ? 1 : 0 })),
  });
  return (res.completion_probabilities ?? []).map((step) => ({
    token: step.id,
    top: new Map(step.top_logprobs.map((t) => [t.id, t.logprob])),
  }));
}

/** The reference: the LoRA of `adapter` from position `from` on (null: the base model alone). */
function reference(prompt: readonly number[], adapter: AdapterSpec, from: number | null): Float64Array {
  const lora: ForwardLora = { spec: adapter, scale: SCALE, from };
  return lastLogProbs(prompt, MODEL, lora);
}

/** Largest |Δ| over the server's top tokens. */
function diff(got: Map<number, number>, want: Float64Array): number {
  let worst = 0;
  for (const [id, lp] of got) worst = Math.max(worst, Math.abs(lp - (want[id] ?? Number.NaN)));
  return worst;
}

describe('activated LoRA: where llama-server applies the converted adapter', () => {
  it('convert writes the invocation for the server (its first token left out) and reports it', async () => {
    expect(convertJson.alora).toEqual({ invocation_tokens: INVOCATION, written: INVOCATION.slice(1) });
    expect(convertJson.warnings).toEqual([expect.objectContaining({ code: 'BASE_UNRECORDED' })]);
    const listed = (await fetch(`${theServer().url}/lora-adapters`).then((r) => r.json())) as {
      id: number;
      alora_invocation_tokens?: number[];
    }[];
    expect(listed.map((a) => a.alora_invocation_tokens)).toEqual([
      INVOCATION.slice(1),
      INVOCATION,
      ONE_TOKEN,
    ]);
  });

  it('the reference is llama.cpp: with every adapter off the server gives the base model', async () => {
    for (const prompt of Object.values(PROMPTS)) {
      expect(diff(await served(prompt, -1), reference(prompt, ALORA, null))).toBeLessThan(TOLERANCE);
    }
  });

  it.each(Object.keys(PROMPTS) as (keyof typeof PROMPTS)[])(
    'prompt "%s": base model before the last invocation sequence, adapted from its first token on (as PEFT)',
    async (name) => {
      const prompt = PROMPTS[name];
      const start = peftActivationStart(prompt, INVOCATION);
      const got = await served(prompt, AS_CONVERTED);
      const peft = reference(prompt, ALORA, start);
      const d = diff(got, peft);
      console.log(`[alora] ${name}: start ${String(start)}, max |Δ logprob| vs PEFT = ${d.toExponential(2)}`);
      expect(d).toBeLessThan(TOLERANCE);
      if (start === null) {
        expect(diff(got, reference(prompt, ALORA, null))).toBeLessThan(TOLERANCE);
        return;
      }
      // what the comparison tells apart: the adapter everywhere, nowhere, or from one token earlier
      expect(diff(got, reference(prompt, ALORA, null))).toBeGreaterThan(10 * TOLERANCE);
      if (start > 0) {
        expect(diff(got, reference(prompt, ALORA, 0))).toBeGreaterThan(10 * TOLERANCE);
        const early = diff(got, reference(prompt, ALORA, start - 1));
        console.log(`[alora] ${name}: vs the adapter from one token earlier = ${early.toExponential(2)}`);
        expect(early).toBeGreaterThan(10 * TOLERANCE);
      }
    },
  );

  it('the tokens it generates are adapted, as in PEFT', async () => {
    const prompt = PROMPTS.middle;
    const start = peftActivationStart(prompt, INVOCATION);
    const steps = await generated(prompt, AS_CONVERTED, 3);
    expect(steps).toHaveLength(3);
    const sofar = [...prompt];
    for (const step of steps) {
      expect(diff(step.top, reference(sofar, ALORA, start))).toBeLessThan(TOLERANCE);
      sofar.push(step.token);
    }
  });

  it('where the two differ, as documented: the invocation without its first token, and no whole one', async () => {
    // PEFT: no whole invocation, the base model; llama-server finds the shortened one and starts the
    // adapter where the whole one would have started
    const prompt = [...PREFIX, ...INVOCATION.slice(1), ...SUFFIX];
    expect(peftActivationStart(prompt, INVOCATION)).toBeNull();
    const start = serverActivationStart(prompt, INVOCATION.slice(1));
    expect(start).toBe(PREFIX.length - 1);
    const got = await served(prompt, AS_CONVERTED);
    expect(diff(got, reference(prompt, ALORA, start))).toBeLessThan(TOLERANCE);
    expect(diff(got, reference(prompt, ALORA, null))).toBeGreaterThan(10 * TOLERANCE);
  });

  it('the invocation written whole: llama-server applies the adapter from the token before it', async () => {
    const prompt = PROMPTS.middle;
    const start = peftActivationStart(prompt, INVOCATION) ?? -1;
    expect(serverActivationStart(prompt, INVOCATION)).toBe(start - 1);
    const got = await served(prompt, WRITTEN_WHOLE);
    expect(diff(got, reference(prompt, ALORA, start - 1))).toBeLessThan(TOLERANCE);
    const off = diff(got, reference(prompt, ALORA, start));
    console.log(`[alora] invocation written whole: max |Δ logprob| vs PEFT = ${off.toExponential(2)}`);
    expect(off).toBeGreaterThan(10 * TOLERANCE);
  });

  it('a one-token invocation: converted with a warning, and served from the token before it', async () => {
    expect(oneTokenJson.warnings.map((w) => w.code)).toEqual(['CONFIG_ALORA_ONE_TOKEN', 'BASE_UNRECORDED']);
    const prompt = PROMPTS.middle;
    const start = peftActivationStart(prompt, ONE_TOKEN) ?? -1;
    const got = await served(prompt, ONE);
    expect(diff(got, reference(prompt, ALORA_ONE, start - 1))).toBeLessThan(TOLERANCE);
    expect(diff(got, reference(prompt, ALORA_ONE, start))).toBeGreaterThan(10 * TOLERANCE);
  });

  it('the converted GGUF holds the key as llama.cpp reads it: an array of uint32', async () => {
    const g = await readGgufHeader(join(dir, 'alora.gguf'));
    const kv = g.metadata.get(ALORA_INVOCATION_KEY);
    expect(kv?.type).toBe(GgufValueType.ARRAY);
    expect(kv?.value).toMatchObject({ itemType: GgufValueType.UINT32 });
    expect([...(kv?.value as { items: Uint32Array }).items]).toEqual(INVOCATION.slice(1));
    expect(await readFile(join(dir, 'alora.gguf'))).not.toEqual(
      await readFile(join(dir, 'alora-whole.gguf')),
    );
  });
});
