/**
 * `run` and the base an adapter is bound to, with the built CLI and the real llama-server: an adapter
 * mounted with `--base` is served on that base (its hash taken from the state directory `mount` filled),
 * refused on another base of the same shapes before llama-server starts (BASE_MISMATCH, both hashes
 * named), and an adapter that records no base is served with a warning.
 */
import { cp, mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { sha256Bytes } from '../../src/checksum.js';
import { writeTinyModel } from '../../src/testkit/tiny-model.js';
import { REPO, runCli } from '../helpers/cli.js';
import { freePort, llamaServerBinary } from '../helpers/llama.js';
import { alive, processesMentioning, startRun, type RunProcess } from '../helpers/run-process.js';
import { openTempDir } from '../helpers/catalog.js';

let root: string;
let bin: string;
let state: string;
let baseSha: string;
let otherSha: string;
const runs: RunProcess[] = [];

beforeAll(async () => {
  bin = await llamaServerBinary();
  root = await openTempDir('codi-run-base-');
  state = join(root, 'state');
  await mkdir(join(root, 'base'), { recursive: true });
  const base = join(root, 'base', 'tiny-qwen2.gguf');
  await cp(join(REPO, 'examples/base/tiny-qwen2.gguf'), base);
  baseSha = sha256Bytes(await readFile(base));
  // the same shapes, other weights: only its identity tells it from the real base
  const other = join(root, 'base', 'tiny-qwen2-other.gguf');
  await writeTinyModel(other, { seed: 5, name: 'other-tiny' });
  otherSha = sha256Bytes(await readFile(other));
  // bound: mounted with --base, through the built CLI, sharing run's state directory
  const mounted = await runCli(
    ['mount', join(REPO, 'examples/adapters/tiny-qwen2-lora'), '--root', root, '--base', base, '--json'],
    { env: { CODI_STATE_DIR: state, CODI_TRACE: '1' } },
  );
  expect(mounted.code, mounted.stderr).toBe(0);
  expect(mounted.stderr).toMatch(/base: hashing/u);
  // not bound: a copy registered in place, without --base
  await cp(join(REPO, 'examples/adapters/tiny-qwen2-lora'), join(root, 'adapters', 'unbound'), {
    recursive: true,
  });
}, 45 * 60_000);

afterEach(async () => {
  for (const r of runs.splice(0)) {
    if (alive(r.pid)) r.child.kill('SIGKILL');
  }
  let left = processesMentioning(root);
  for (let i = 0; i < 40 && left.length > 0; i++) {
    await new Promise((r) => setTimeout(r, 50));
    left = processesMentioning(root);
  }
  expect(left, 'processes left behind').toEqual([]);
});

async function start(adapter: string, baseFile: string): Promise<RunProcess> {
  const r = startRun(['run'], {
    LLAMA_SERVER_BIN: bin,
    MODEL_MOUNT_PATH: root,
    ADAPTER_PATH: join(root, 'adapters', adapter),
    CODE_MODEL: 'tiny-qwen2',
    BASE_MODEL_PATH: join(root, 'base', baseFile),
    LLM_PORT: String(await freePort()),
    LLAMA_CPP_THREADS: '2',
    CODI_STATE_DIR: state,
    CODI_TRACE: '1',
    STOP_GRACE_PERIOD: '3',
    LLM_HEALTH_INTERVAL: '0',
    APP_COMMAND: 'none',
    AIRGAP: undefined,
    LLM_ENDPOINT: undefined,
    LLM_ENABLED: undefined,
  });
  runs.push(r);
  return r;
}

/** Serves until llama-server is ready and listed the adapter, then SIGTERM: exit 0. */
async function servedThenStopped(r: RunProcess): Promise<void> {
  await r.waitFor(/LLM_ENDPOINT=/u, 120_000);
  r.child.kill('SIGTERM');
  const exit = await r.exited;
  expect(exit.code, r.stderr()).toBe(0);
}

describe('run and the recorded base', () => {
  it('the base it was mounted with: served, the hash read from the cache mount filled', async () => {
    const r = await start('tiny-qwen2-lora', 'tiny-qwen2.gguf');
    await servedThenStopped(r);
    expect(r.stdout()).toMatch(/^\[llm\] /mu);
    expect(r.stdout() + r.stderr()).not.toMatch(/BASE_UNRECORDED|BASE_MISMATCH/u);
    expect(r.stderr()).not.toMatch(/base: hashing/u);
  }, 180_000);

  it('another base of the same shapes: exit 1, BASE_MISMATCH naming both hashes, llama-server never started', async () => {
    const r = await start('tiny-qwen2-lora', 'tiny-qwen2-other.gguf');
    const exit = await r.exited;
    expect(exit.code, r.stderr()).toBe(1);
    expect(r.stderr()).toMatch(/BASE_MISMATCH: /u);
    expect(r.stderr()).toContain(baseSha);
    expect(r.stderr()).toContain(otherSha);
    expect(r.stdout()).toMatch(/Adapter Status: invalid/u);
    expect(r.stdout()).not.toMatch(/^\[llm\] /mu);
    expect(r.stdout()).not.toMatch(/starting llama-server/u);
  }, 120_000);

  it('an adapter that records no base: served, with the BASE_UNRECORDED warning', async () => {
    const r = await start('unbound', 'tiny-qwen2.gguf');
    await servedThenStopped(r);
    expect(r.stdout()).toMatch(/BASE_UNRECORDED/u);
  }, 180_000);
});
