/**
 * `.bin` adapters served for real: the built CLI's `run` with the real llama-server and the tiny
 * model. The same LoRA three ways — as the safetensors PEFT writes, as a `.bin` installed with
 * `mount --to-safetensors`, and as a `.bin` that `run` converts itself — gives the same next-token
 * log-probs, and they differ from the base's (the adapter is applied).
 */
import { cp, mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { sha256Bytes } from '../../src/checksum.js';
import { writePeftBinAdapter, writeSafetensorsTwin } from '../../src/testkit/bin-adapter.js';
import type { AdapterSpec } from '../../src/testkit/peft-adapter.js';
import { makeVolume } from '../helpers/catalog.js';
import { REPO, runCli } from '../helpers/cli.js';
import { ADAPTER_SPECS } from '../helpers/fixtures.js';
import { freePort, llamaServerBinary, type CompletionResponse } from '../helpers/llama.js';
import { alive, startRun, type RunProcess } from '../helpers/run-process.js';

const PROMPTS = ['def add(a, b):', 'The quick brown fox', 'for i in range(10):'];
const N_PREDICT = 3;

type Probs = { token: number; top: Map<number, number> }[][];

let bin: string;
let root: string;
let src: string;
const runs: RunProcess[] = [];

function spec(id: string): AdapterSpec {
  return { ...(ADAPTER_SPECS.plain as AdapterSpec), id, baseModel: 'tiny-qwen2' };
}

beforeAll(async () => {
  bin = await llamaServerBinary();
  ({ root, src } = await makeVolume());
  await mkdir(join(root, 'base'), { recursive: true });
  await cp(join(REPO, 'examples/base/tiny-qwen2.gguf'), join(root, 'base/tiny-qwen2.gguf'));
}, 45 * 60_000);

afterEach(() => {
  const left = runs.splice(0).filter((r) => alive(r.pid));
  for (const r of left) r.child.kill('SIGKILL');
  expect(
    left.map((r) => r.pid),
    'run processes still running after the test',
  ).toEqual([]);
});

async function post(port: number, path: string, body: unknown): Promise<unknown> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(60_000),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`POST ${path}: ${res.status} ${text}`);
  return text === '' ? null : (JSON.parse(text) as unknown);
}

/** Greedy next-token log-probs (top 20) of every prompt; `model` as the gateway takes it (none: the default adapter). */
async function probs(port: number, model?: string): Promise<Probs> {
  const out: Probs = [];
  for (const prompt of PROMPTS) {
    const res = (await post(port, '/completion', {
      ...(model === undefined ? {} : { model }),
      prompt,
      n_predict: N_PREDICT,
      temperature: 0,
      n_probs: 20,
      cache_prompt: false,
    })) as CompletionResponse;
    const steps = res.completion_probabilities ?? [];
    expect(steps.length).toBe(N_PREDICT);
    out.push(steps.map((s) => ({ token: s.id, top: new Map(s.top_logprobs.map((t) => [t.id, t.logprob])) })));
  }
  return out;
}

/** Largest log-prob difference over the tokens both top lists hold; `sameGreedy`: the greedy tokens must agree. */
function maxDiff(a: Probs, b: Probs, sameGreedy = true): number {
  let worst = 0;
  a.forEach((all, p) => {
    all.forEach((step, i) => {
      const other = b[p]?.[i];
      if (sameGreedy) expect(other?.token, `prompt ${p} step ${i}: greedy token`).toBe(step.token);
      for (const [id, lp] of step.top) {
        const lp2 = other?.top.get(id);
        if (lp2 !== undefined) worst = Math.max(worst, Math.abs(lp - lp2));
      }
    });
  });
  return worst;
}

interface Served {
  probs: Probs;
  /** with `model` = the base id (the adapter at scale 0): the base alone */
  baseProbs: Probs | null;
  environment: { adapter: { checksum: string; gguf: string } };
  stdout: string;
}

/** `codi-adapter run` on the adapter `id` of the volume: its log-probs, then SIGTERM (exit 0). */
async function serve(id: string, withBase = false): Promise<Served> {
  const port = await freePort();
  const state = join(root, `state-${id}`);
  const r = startRun(['run'], {
    LLAMA_SERVER_BIN: bin,
    MODEL_MOUNT_PATH: root,
    ADAPTER_PATH: join(root, 'adapters', id),
    CODE_MODEL: 'tiny-qwen2',
    LLM_PORT: String(port),
    LLAMA_CPP_THREADS: '2',
    CODI_STATE_DIR: state,
    APP_COMMAND: 'none',
    STOP_GRACE_PERIOD: '3',
    AIRGAP: undefined,
    LLM_ENDPOINT: undefined,
    LLM_ENABLED: undefined,
  });
  runs.push(r);
  await r.waitFor(/gateway listening on /u, 120_000);
  // written just after: on a loaded machine the log-probs can come back first
  await r.waitFor(/environment recorded in /u, 60_000);
  const served = await probs(port);
  let baseProbs: Probs | null = null;
  if (withBase) {
    baseProbs = await probs(port, 'tiny-qwen2');
  }
  const environment = JSON.parse(
    await readFile(join(state, 'environment.json'), 'utf8'),
  ) as Served['environment'];
  r.child.kill('SIGTERM');
  const exit = await r.exited;
  expect(exit.code, r.stderr()).toBe(0);
  return { probs: served, baseProbs, environment, stdout: r.stdout() };
}

describe('.bin adapters served by run with the real llama-server', () => {
  it('mount --to-safetensors and a .bin converted by run serve exactly what the safetensors serves', async () => {
    const reference = join(src, 'lora-st');
    await writeSafetensorsTwin(reference, spec('lora-st'));
    await writePeftBinAdapter(join(src, 'lora-conv'), spec('lora-conv'), { layout: 'shared-transposed' });
    await writePeftBinAdapter(join(src, 'lora-bin'), spec('lora-bin'), { layout: 'transposed', protocol: 4 });
    expect((await runCli(['mount', reference, '--root', root])).code).toBe(0);
    const converted = await runCli(['mount', join(src, 'lora-conv'), '--root', root, '--to-safetensors']);
    expect(converted.code, converted.stderr).toBe(0);
    expect((await runCli(['mount', join(src, 'lora-bin'), '--root', root])).code).toBe(0);

    const st = await serve('lora-st', true);
    const conv = await serve('lora-conv');
    const direct = await serve('lora-bin');

    // the adapter is applied: the log-probs move away from the base's
    expect(maxDiff(st.probs, st.baseProbs ?? [], false)).toBeGreaterThan(0.05);
    const dConv = maxDiff(conv.probs, st.probs);
    const dDirect = maxDiff(direct.probs, st.probs);
    console.log(`[bin] max |Δ logprob| vs safetensors: --to-safetensors ${dConv}, .bin by run ${dDirect}`);
    // the same tensors in the same GGUF layout: the same numbers
    expect(dConv).toBeLessThanOrEqual(1e-6);
    expect(dDirect).toBeLessThanOrEqual(1e-6);

    // what run served: the converted safetensors, and the .bin itself (its own checksum)
    const stSha = sha256Bytes(await readFile(join(root, 'adapters/lora-conv/adapter_model.safetensors')));
    expect(conv.environment.adapter.checksum).toBe(`sha256:${stSha}`);
    const binSha = sha256Bytes(await readFile(join(root, 'adapters/lora-bin/adapter_model.bin')));
    expect(direct.environment.adapter.checksum).toBe(`sha256:${binSha}`);
    expect(direct.stdout).toMatch(/Adapter Status: mounted/u);
    expect(direct.stdout).toMatch(/checksums 2\/2 files sha256 ok/u);
  }, 300_000);
});
