/**
 * `codi-adapter run` end to end: the built CLI, the real llama-server and the tiny model. Every test
 * ends by checking that no process it caused is left (each command line mentions the test's folder).
 */
import { spawnSync } from 'node:child_process';
import { createHash, generateKeyPairSync } from 'node:crypto';
import { chmod, cp, mkdir, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { REPO, runCli } from '../helpers/cli.js';
import { freePort, llamaServerBinary, startLlamaServer } from '../helpers/llama.js';
import {
  alive,
  descendants,
  processesMentioning,
  startRun,
  waitGone,
  type RunProcess,
} from '../helpers/run-process.js';
import { tempDir } from '../helpers/tmp.js';

const ADAPTER = 'tiny-qwen2-lora';
/** the same adapter, signed (sign) by the key in <root>/trusted */
const SIGNED = 'signed';
let signer = '';
const APP = join(REPO, 'test/fixtures/run-app.js');
const FAULT_503 = join(REPO, 'test/fixtures/fault-server-503-forever.js');
const FAULT_CRASH = join(REPO, 'test/fixtures/fault-server-crashes-while-loading.js');
const FAULT_OTHER_SET = join(REPO, 'test/fixtures/fault-server-lora-other-set.js');
const GRACE_S = 3;

let root: string;
let bin: string;
let seq = 0;
const runs: RunProcess[] = [];

beforeAll(async () => {
  bin = await llamaServerBinary();
  root = await tempDir('codi-run-');
  await mkdir(join(root, 'adapters'), { recursive: true });
  await mkdir(join(root, 'base'), { recursive: true });
  await cp(join(REPO, 'examples/adapters', ADAPTER), join(root, 'adapters', ADAPTER), { recursive: true });
  await cp(join(REPO, 'examples/adapters/broken-checksum'), join(root, 'adapters/broken-checksum'), {
    recursive: true,
  });
  await cp(join(REPO, 'examples/base/tiny-qwen2.gguf'), join(root, 'base/tiny-qwen2.gguf'));
  await writeFile(join(root, 'rules.yml'), 'version: "2026.11.0"\nllm_assist:\n  adapters: {}\n');
  // a signed copy (the key pair made here), for ADAPTER_TRUST_KEYS; the trusted folder holds its key
  await cp(join(REPO, 'examples/adapters', ADAPTER), join(root, 'adapters', SIGNED), { recursive: true });
  await mkdir(join(root, 'trusted'));
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-384' });
  const pem = publicKey.export({ type: 'spki', format: 'pem' });
  await writeFile(join(root, 'release.key'), privateKey.export({ type: 'sec1', format: 'pem' }));
  await writeFile(join(root, 'trusted', 'release.pem'), pem);
  signer = `sha256:${createHash('sha256').update(pem).digest('hex')}`;
  const signed = spawnSync(
    process.execPath,
    [join(REPO, 'bin/run.js'), 'sign', join(root, 'adapters', SIGNED), '--key', join(root, 'release.key')],
    { encoding: 'utf8' },
  );
  expect(signed.status, signed.stderr).toBe(0);
}, 45 * 60_000);

afterEach(async () => {
  // every test waits for its run to end; one still running is a failure (killed so the next test is clean)
  const stillRunning: number[] = [];
  for (const r of runs.splice(0)) {
    if (alive(r.pid)) {
      stillRunning.push(r.pid);
      r.child.kill('SIGKILL');
    }
  }
  expect(stillRunning, 'run processes still running after the test').toEqual([]);
  // nothing started by the test may outlive it
  let left = processesMentioning(root);
  for (let i = 0; i < 40 && left.length > 0; i++) {
    await new Promise((r) => setTimeout(r, 50));
    left = processesMentioning(root);
  }
  expect(left, 'processes left behind').toEqual([]);
});

async function baseEnv(
  extra: Record<string, string | undefined> = {},
): Promise<Record<string, string | undefined>> {
  return {
    LLAMA_SERVER_BIN: bin,
    MODEL_MOUNT_PATH: root,
    ADAPTER_PATH: join(root, 'adapters', ADAPTER),
    CODE_MODEL: 'tiny-qwen2',
    LLM_PORT: String(await freePort()),
    LLAMA_CPP_THREADS: '2',
    CODI_STATE_DIR: join(root, `state-${++seq}`),
    PATTERNS_RULES: join(root, 'rules.yml'),
    STOP_GRACE_PERIOD: String(GRACE_S),
    LLM_HEALTH_INTERVAL: '1',
    AIRGAP: undefined,
    AIRGAP_ALLOWLIST: undefined,
    LLM_ENDPOINT: undefined,
    LLM_ENABLED: undefined,
    APP_COMMAND: 'none',
    ...extra,
  };
}

function start(env: Record<string, string | undefined>, args: string[] = []): RunProcess {
  const r = startRun(['run', ...args], env);
  runs.push(r);
  return r;
}

async function readJson<T>(file: string, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return JSON.parse(await readFile(file, 'utf8')) as T;
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

interface AppRecord {
  pid: number;
  env: Record<string, string | null>;
  completion?: { status: number; content: string };
}

interface EnvironmentJson {
  adapter: {
    id: string;
    version: string;
    checksum: string;
    checksum_verified: boolean;
    gguf: string;
    signed_by: string | null;
  };
  ruleset: { version: string | null };
  base_model: { id: string; path: string };
  llm: {
    pid: number;
    endpoint: string;
    llama_server: { version: string; commit: string | null };
    lora_adapters: { id: number; path: string; scale: number }[];
  };
  gateway: { upstream: string; default: string | null; served: { id: string }[] } | null;
  codi_adapter: { version: string };
  settings: Record<string, string>;
}

describe('run, embedded llama-server', () => {
  it('becomes ready, serves the adapter to the app, and stops cleanly on SIGTERM (exit 0)', async () => {
    const appPort = await freePort();
    const env = await baseEnv({
      APP_HEALTH_PORT: String(appPort),
      APP_HEALTH_URL: `http://127.0.0.1:${appPort}/healthz`,
    });
    const record = join(root, 'happy.json');
    const r = start({ ...env, APP_COMMAND: `node ${APP} record ${record}` });
    const app = await readJson<AppRecord>(record);
    const environment = await readJson<EnvironmentJson>(join(env.CODI_STATE_DIR ?? '', 'environment.json'));

    // the app got the endpoint, the environment file and the air-gap proxy guard, and a completion
    expect(app.env.LLM_ENDPOINT).toBe(`http://127.0.0.1:${env.LLM_PORT ?? ''}`);
    expect(app.env.CODI_ENVIRONMENT_FILE).toBe(join(env.CODI_STATE_DIR ?? '', 'environment.json'));
    expect(app.env.HTTP_PROXY).toBe('http://127.0.0.1:9');
    expect(app.env.https_proxy).toBe('http://127.0.0.1:9');
    expect(app.env.NO_PROXY).toBe('localhost,127.0.0.1,::1');
    expect(app.completion?.status).toBe(200);
    expect(typeof app.completion?.content).toBe('string');
    expect(app.completion?.content.length).toBeGreaterThan(0);

    // environment.json records what is served
    expect(environment.adapter).toMatchObject({
      id: ADAPTER,
      version: '0.1.0',
      checksum: 'sha256:601dd4a90ee933effd9995bd15bebf30e9ad00f9813684caad8d34faa300a8ce',
      checksum_verified: true,
    });
    expect(environment.ruleset.version).toBe('2026.11.0');
    expect(environment.base_model).toEqual({ id: 'tiny-qwen2', path: join(root, 'base/tiny-qwen2.gguf') });
    expect(environment.llm.llama_server.version).toMatch(/^version: \S+ \(build \d+, commit [0-9a-f]+\)/u);
    // llama-server reads the GGUF run proved through the descriptor run gave it (each request's scale
    // is the `lora` list the gateway writes)
    expect(environment.llm.lora_adapters).toEqual([expect.objectContaining({ id: 0, path: '/dev/fd/3' })]);
    // the one adapter is a set of one behind the gateway, llama-server on loopback only
    expect(environment.gateway?.default).toBe(ADAPTER);
    expect(environment.gateway?.served.map((a) => a.id)).toEqual([ADAPTER]);
    expect(environment.gateway?.upstream).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/u);
    expect(environment.gateway?.upstream).not.toBe(`http://127.0.0.1:${env.LLM_PORT ?? ''}`);
    expect(environment.settings.LLM_PORT).toBe(env.LLM_PORT);
    expect(environment.settings.LLAMA_CPP_THREADS).toBe('2');
    expect(Object.keys(environment.settings)).toContain('AIRGAP_ALLOWLIST');

    // the supervision health checks: the LLM every second, the app until it first answers
    await r.waitFor(/LLM healthy \(/u, 10_000);
    await r.waitFor(/app healthy after \d+\.\d s \(http:\/\/127\.0\.0\.1:\d+\/healthz\)/u, 10_000);
    const out = r.stdout();
    expect(out).toContain('MODEL_MOUNT_PATH');
    expect(out).toMatch(/Adapter Status: mounted/u);
    expect(out).toMatch(/checksums 2\/2 files sha256 ok/u);
    expect(out).toMatch(/^\[llm\] /mu);
    expect(out).toMatch(/^\[app\] run-app: recorded/mu);
    expect(out).toMatch(
      /gateway listening on http:\/\/127\.0\.0\.1:\d+ \(llama-server on http:\/\/127\.0\.0\.1:\d+, loopback only\)/u,
    );
    expect(out).toMatch(/serving tiny-qwen2-lora \(default tiny-qwen2-lora\)/u);

    // LLM_PORT is the gateway: llama-server's runtime API is not reachable there
    const llm = `http://127.0.0.1:${env.LLM_PORT ?? ''}`;
    const post = (path: string, body: unknown): Promise<Response> =>
      fetch(`${llm}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(60_000),
      });
    expect((await post('/lora-adapters', [{ id: 0, scale: 0 }])).status).toBe(404);
    expect((await fetch(`${llm}/slots`)).status).toBe(404);
    const models = (await (await fetch(`${llm}/v1/models`)).json()) as {
      data: { id: string; parent: string | null; default?: boolean }[];
    };
    expect(models.data.map((m) => [m.id, m.parent, m.default ?? null])).toEqual([
      ['tiny-qwen2', null, null],
      [ADAPTER, 'tiny-qwen2', true],
    ]);
    // the adapter by name, the default and the base: the adapter changes the answer
    const answer = async (model?: string): Promise<string> => {
      const res = await post('/completion', {
        ...(model === undefined ? {} : { model }),
        prompt: 'def fibonacci(n):',
        n_predict: 12,
        temperature: 0,
        cache_prompt: false,
      });
      expect(res.status).toBe(200);
      return ((await res.json()) as { content: string }).content;
    };
    const byDefault = await answer();
    expect(await answer(ADAPTER)).toBe(byDefault);
    expect(await answer('tiny-qwen2')).not.toBe(byDefault);
    expect((await post('/completion', { model: 'nope', prompt: 'x', n_predict: 1 })).status).toBe(404);
    expect(out).not.toMatch(/slow inference/u);

    // the image's HEALTHCHECK agrees
    const health = spawnSync(process.execPath, [join(REPO, 'docker/healthcheck.js')], {
      env: { ...process.env, CODI_STATE_DIR: env.CODI_STATE_DIR },
      encoding: 'utf8',
    });
    expect(health.status, health.stdout).toBe(0);
    expect(health.stdout).toMatch(/^healthy: adapter tiny-qwen2-lora 0\.1\.0, LLM embedded/u);

    const t0 = performance.now();
    r.child.kill('SIGTERM');
    const exit = await r.exited;
    const stopMs = performance.now() - t0;
    expect(exit.code, r.stderr()).toBe(0);
    expect(stopMs).toBeLessThan(2 * GRACE_S * 1000 + 2000);
    expect(await waitGone([environment.llm.pid, app.pid], 100)).toEqual([]);
    expect(r.stdout()).toMatch(/received SIGTERM: stopping app, then llm/u);
    const after = spawnSync(process.execPath, [join(REPO, 'docker/healthcheck.js')], {
      env: { ...process.env, CODI_STATE_DIR: env.CODI_STATE_DIR },
      encoding: 'utf8',
    });
    expect(after.status).toBe(1);
    expect(after.stdout).toMatch(/^unhealthy: LLM .*ECONNREFUSED/u);
  }, 120_000);

  it('kills the app and exits 4 when llama-server dies', async () => {
    const env = await baseEnv();
    const record = join(root, 'llm-dies.json');
    const r = start({ ...env, APP_COMMAND: `node ${APP} record ${record}` });
    const app = await readJson<AppRecord>(record);
    const environment = await readJson<EnvironmentJson>(join(env.CODI_STATE_DIR ?? '', 'environment.json'));
    process.kill(environment.llm.pid, 'SIGKILL');
    const exit = await r.exited;
    expect(exit.code, r.stderr()).toBe(4);
    expect(r.stderr()).toMatch(
      /LLM_EXITED: llama-server was killed by SIGKILL while serving; the app was stopped/u,
    );
    expect(await waitGone([app.pid], 100)).toEqual([]);
  }, 120_000);

  it('stops llama-server and exits 5 when the app exits with code 3', async () => {
    const env = await baseEnv();
    const record = join(root, 'app-dies.json');
    const r = start({ ...env, APP_COMMAND: `node ${APP} exit 3 ${record}` });
    const exit = await r.exited;
    expect(exit.code, r.stderr()).toBe(5);
    expect(r.stderr()).toMatch(/APP_EXITED: the app exited with code 3; the LLM was stopped/u);
    const environment = await readJson<EnvironmentJson>(join(env.CODI_STATE_DIR ?? '', 'environment.json'));
    expect(await waitGone([environment.llm.pid], 100)).toEqual([]);
    expect(r.stdout()).toMatch(/llama-server \(pid \d+\) stopped: exited with code 0/u);
  }, 120_000);

  it('stops the app and exits 4 when the LLM fails its health checks while serving (fault injection)', async () => {
    const env = await baseEnv({
      LLAMA_SERVER_BIN: join(REPO, 'test/fixtures/fault-server-healthy-then-503.js'),
      LLM_HEALTH_INTERVAL: '0.3',
      LLM_HEALTH_RETRIES: '3',
    });
    const record = join(root, 'unhealthy.json');
    const r = start({ ...env, APP_COMMAND: `node ${APP} record ${record}` });
    const exit = await r.exited;
    expect(exit.code, r.stderr()).toBe(4);
    expect(r.stderr()).toMatch(
      /LLM_UNHEALTHY: the LLM failed 3 health checks in a row \(last: HTTP 503 llama-server is not healthy: 503 injected fault\)/u,
    );
    expect(r.stdout()).toMatch(/LLM unhealthy \(.*\), 1\/3/u);
    const app = await readJson<AppRecord>(record);
    expect(alive(app.pid)).toBe(false);
  }, 60_000);

  it('SIGKILLs an app that ignores SIGTERM after the grace period', async () => {
    const env = await baseEnv({ STOP_GRACE_PERIOD: '1' });
    const record = join(root, 'stubborn.json');
    const r = start({ ...env, APP_COMMAND: `node ${APP} ignore-term ${record}` });
    const app = await readJson<AppRecord>(record);
    r.child.kill('SIGTERM');
    const exit = await r.exited;
    expect(exit.code, r.stderr()).toBe(0);
    expect(r.stdout()).toMatch(
      /app \(pid \d+\) stopped: was killed by SIGKILL \(SIGKILL after the grace period\)/u,
    );
    expect(alive(app.pid)).toBe(false);
  }, 120_000);

  it('serves the LLM alone with APP_COMMAND=none until SIGINT; with ADAPTER_TRUST_KEYS, a signed adapter, its signer recorded', async () => {
    const env = await baseEnv({
      APP_COMMAND: 'none',
      ADAPTER_PATH: join(root, 'adapters', SIGNED),
      ADAPTER_TRUST_KEYS: join(root, 'trusted'),
    });
    const r = start(env);
    await r.waitFor(/serving the LLM until stopped/u);
    const environment = await readJson<EnvironmentJson>(join(env.CODI_STATE_DIR ?? '', 'environment.json'));
    expect(environment.adapter.signed_by).toBe(signer);
    expect(r.stdout()).toContain(`adapter signed by ${signer} (a trusted key)`);
    r.child.kill('SIGINT');
    const exit = await r.exited;
    expect(exit.code, r.stderr()).toBe(0);
    expect(alive(environment.llm.pid)).toBe(false);
  }, 120_000);

  it('leaves no child behind when run itself is SIGKILLed (parent-death signal)', async () => {
    const env = await baseEnv();
    const record = join(root, 'sigkill.json');
    const r = start({ ...env, APP_COMMAND: `node ${APP} record ${record}` });
    const app = await readJson<AppRecord>(record);
    const environment = await readJson<EnvironmentJson>(join(env.CODI_STATE_DIR ?? '', 'environment.json'));
    r.child.kill('SIGKILL');
    await r.exited;
    expect(await waitGone([environment.llm.pid, app.pid], 3000)).toEqual([]);
  }, 120_000);

  it('is safe as PID 1: orphans are reaped, SIGTERM stops everything (exit 0), nothing is left', async () => {
    const env = await baseEnv();
    const record = join(root, 'pid1.json');
    // the app leaves three orphans behind (each subshell exits at once), which the kernel reparents
    const app = `sh -c '(sleep 0.3 &); (sleep 0.3 &); (sleep 0.3 &); exec node ${APP} record ${record}'`;
    // a PID namespace of its own: run is its PID 1, as in a container started without an init
    // (not root: in a user namespace of its own too, which an unprivileged user may make)
    const asUser = process.getuid?.() === 0 ? [] : ['--user', '--map-root-user'];
    const r = startRun(['run'], { ...env, APP_COMMAND: app }, [
      'unshare',
      ...asUser,
      '--pid',
      '--fork',
      '--mount-proc',
      '--kill-child',
    ]);
    runs.push(r);
    const recorded = await readJson<AppRecord>(record);
    expect(recorded.completion?.status).toBe(200);
    await new Promise((resolve) => setTimeout(resolve, 800));
    const tree = descendants(r.pid);
    const pid1 = tree.find((p) => p.ppid === r.pid);
    expect(pid1?.comm).toBe('node');
    // the sleeps have ended by now; none may be left as a zombie
    expect(tree.filter((p) => p.state === 'Z')).toEqual([]);
    // PID 1 started run again under codi-init (a child subreaper) and passes signals on
    expect(tree.some((p) => p.comm === 'codi-init' && p.ppid === pid1?.pid)).toBe(true);
    expect(tree.some((p) => p.comm === 'llama-server')).toBe(true);
    expect(r.stdout()).not.toMatch(/running as PID 1 without an init/u);

    process.kill(pid1?.pid ?? -1, 'SIGTERM');
    const exit = await r.exited;
    expect(exit.code, r.stderr()).toBe(0);
    expect(r.stdout()).toMatch(/received SIGTERM: stopping app, then llm/u);
    // the namespace is gone with its PID 1: nothing of it is left
    expect(descendants(pid1?.pid ?? -1)).toEqual([]);
  }, 120_000);

  it('reports slow inference with the resolution, from llama-server’s own timing lines', async () => {
    // the tiny model generates thousands of tokens a second: a threshold above that makes it "slow"
    const env = await baseEnv({ LLM_SLOW_TOKENS_PER_SECOND: '1000000' });
    const record = join(root, 'slow.json');
    const r = start({ ...env, APP_COMMAND: `node ${APP} exit 0 ${record}` });
    const exit = await r.exited;
    expect(exit.code, r.stderr()).toBe(0);
    expect((await readJson<AppRecord>(record)).completion?.status).toBe(200);
    expect(r.stdout()).toMatch(
      /\[run\] ⚠ slow inference: llama-server generated \d+ tokens at [\d.]+ tokens\/s \(below LLM_SLOW_TOKENS_PER_SECOND=1000000\)\n\s+hint: raise LLAMA_CPP_THREADS \(up to the host's cores\) or lower token limits/u,
    );
  }, 120_000);

  it('prints one JSON object on exit with --json, the logs going to stderr', async () => {
    const env = await baseEnv();
    const record = join(root, 'json.json');
    const r = start({ ...env, APP_COMMAND: `node ${APP} exit 0 ${record}` }, ['--json']);
    const exit = await r.exited;
    expect(exit.code, r.stderr()).toBe(0);
    const result = JSON.parse(r.stdout()) as Record<string, unknown>;
    expect(result).toMatchObject({ ok: true, exitCode: 0, outcome: 'app-finished', mode: 'embedded' });
    expect(r.stderr()).toMatch(/^\[llm\] /mu);
    expect(r.stderr()).toMatch(/Adapter Status: mounted/u);
  }, 120_000);
});

describe('run, failures before anything is served', () => {
  it('exits 4 once LLM_READY_TIMEOUT passes when the server answers 503 forever (fault injection)', async () => {
    const env = await baseEnv({ LLAMA_SERVER_BIN: FAULT_503, LLM_READY_TIMEOUT: '2', APP_COMMAND: 'none' });
    const r = start(env);
    await r.waitFor(/starting llama-server/u);
    const t0 = performance.now();
    const exit = await r.exited;
    expect(exit.code, r.stderr()).toBe(4);
    expect(r.stderr()).toMatch(
      /LLM_NOT_READY: .* not healthy within 2 s \(last GET \/health: 503 Loading model\)/u,
    );
    expect(r.stderr()).toMatch(/LLM_READY_TIMEOUT/u);
    expect(performance.now() - t0).toBeLessThan(2000 + GRACE_S * 1000 + 2000);
    expect(r.stdout()).toMatch(/^\[llm\] fault-server-503-forever: answering 503/mu);
  }, 60_000);

  it('exits 4 with its last lines when llama-server exits before it is healthy (fault injection)', async () => {
    const env = await baseEnv({ LLAMA_SERVER_BIN: FAULT_CRASH, APP_COMMAND: 'none' });
    const r = start(env);
    const exit = await r.exited;
    expect(exit.code, r.stderr()).toBe(4);
    expect(r.stderr()).toMatch(/LLM_EXITED: .*exited with code 1 before it was healthy/u);
    // the server's own last lines are in the message, not only in the [llm] stream
    expect(r.stderr()).toMatch(/error loading model: injected fault: cannot allocate 1234 MiB/u);
    expect(r.stdout()).toMatch(/^\[llm\] fault-server-crashes-while-loading: loading/mu);
    expect(r.stdout()).not.toMatch(/LLM_ENDPOINT=/u);
  }, 60_000);

  it('exits 4 when /lora-adapters lists another set than the one verified (fault injection)', async () => {
    const env = await baseEnv({ LLAMA_SERVER_BIN: FAULT_OTHER_SET });
    const record = join(root, 'other-set.json');
    const r = start({ ...env, APP_COMMAND: `node ${APP} record ${record}` });
    const exit = await r.exited;
    expect(exit.code, r.stderr()).toBe(4);
    expect(r.stderr()).toMatch(
      /LLM_LORA_MISSING: llama-server does not serve the set: .*lists 2 adapters, not 1/u,
    );
    // nothing was handed to an app: no environment.json, no app
    expect(r.stdout()).not.toMatch(/app started/u);
    await expect(readFile(join(env.CODI_STATE_DIR ?? '', 'environment.json'))).rejects.toThrow(/ENOENT/u);
  }, 60_000);

  it('stops promptly and exits 0 on SIGTERM while waiting for health', async () => {
    const env = await baseEnv({ LLAMA_SERVER_BIN: FAULT_503, LLM_READY_TIMEOUT: '60', APP_COMMAND: 'none' });
    const r = start(env);
    await r.waitFor(/fault-server-503-forever: answering 503/u);
    r.child.kill('SIGTERM');
    const exit = await r.exited;
    expect(exit.code, r.stderr()).toBe(0);
    expect(r.stdout()).toMatch(/received SIGTERM while starting: stopping/u);
  }, 60_000);

  it('exits 3 saying what to set when LLAMA_SERVER_BIN is missing', async () => {
    const env = await baseEnv({ LLAMA_SERVER_BIN: join(root, 'no/such/llama-server') });
    const r = start(env);
    const exit = await r.exited;
    expect(exit.code).toBe(3);
    expect(r.stderr()).toMatch(
      /LLAMA_SERVER_NOT_FOUND: llama-server not found: LLAMA_SERVER_BIN=.* does not exist/u,
    );
    expect(r.stderr()).toMatch(/hint: rebuild the image \(make build-complete\) or set LLAMA_SERVER_BIN/u);
  }, 60_000);

  it('exits 3 when LLAMA_SERVER_BIN cannot run (missing libraries)', async () => {
    const broken = join(root, 'broken-llama-server');
    await writeFile(
      broken,
      '#!/bin/sh\necho "llama-server: error while loading shared libraries: libllama.so.0" >&2\nexit 127\n',
    );
    await chmod(broken, 0o755);
    const r = start(await baseEnv({ LLAMA_SERVER_BIN: broken }));
    const exit = await r.exited;
    expect(exit.code, r.stderr()).toBe(3);
    expect(r.stderr()).toMatch(/LLAMA_SERVER_BROKEN: .*error while loading shared libraries/u);
    expect(r.stderr()).toMatch(/rebuild the image \(make build-complete\) or set LLAMA_SERVER_BIN/u);
  }, 60_000);

  it('exits 3 when llama-server is not on PATH and LLAMA_SERVER_BIN is unset', async () => {
    const env = await baseEnv({
      LLAMA_SERVER_BIN: undefined,
      PATH: `${join(root, 'empty-bin')}:/usr/bin:/bin`,
    });
    const r = start(env);
    const exit = await r.exited;
    expect(exit.code).toBe(3);
    expect(r.stderr()).toMatch(/LLAMA_SERVER_BIN=llama-server \(not on PATH\)/u);
  }, 60_000);

  it('exits 3 with a clear error when the LLM port is already in use', async () => {
    const env = await baseEnv();
    const blocker: Server = createServer();
    await new Promise<void>((resolve) => blocker.listen(Number(env.LLM_PORT), '127.0.0.1', resolve));
    try {
      const r = start(env);
      const exit = await r.exited;
      expect(exit.code).toBe(3);
      expect(r.stderr()).toMatch(
        new RegExp(`LLM_PORT_IN_USE: LLM port ${env.LLM_PORT ?? ''} on 127.0.0.1 is already in use`, 'u'),
      );
      expect(r.stderr()).toMatch(/set LLM_PORT to a free port/u);
      expect(r.stdout()).not.toMatch(/starting llama-server/u);
    } finally {
      blocker.close();
    }
  }, 60_000);

  it('prints Adapter Status: not_mounted and exits 3 when the adapter is missing', async () => {
    const env = await baseEnv({ ADAPTER_PATH: join(root, 'adapters/qwen15b-lora-v0.1') });
    const r = start(env);
    const exit = await r.exited;
    expect(exit.code).toBe(3);
    expect(r.stdout()).toMatch(
      /Adapter Status: not_mounted \(ADAPTER_PATH .*qwen15b-lora-v0.1 does not exist\)/u,
    );
    // the hint names the actual volume and id
    expect(r.stderr()).toContain(
      `hint: mount the host folder at ${join(root, 'adapters', 'qwen15b-lora-v0.1')}, readable by UID 1000`,
    );
  }, 60_000);

  it('exits 1 when the adapter fails verification', async () => {
    const env = await baseEnv({ ADAPTER_PATH: join(root, 'adapters/broken-checksum') });
    const r = start(env);
    const exit = await r.exited;
    expect(exit.code).toBe(1);
    expect(r.stdout()).toMatch(/Adapter Status: invalid \(1 error: CHECKSUM_MISMATCH\)/u);
    expect(r.stderr()).toMatch(/CHECKSUM_MISMATCH/u);
    expect(r.stderr()).toMatch(/re-copy the adapter files/u);
  }, 60_000);

  it("exits 1 when the adapter's base_model is not CODE_MODEL", async () => {
    const env = await baseEnv({
      CODE_MODEL: 'qwen2.5-coder-1.5b',
      BASE_MODEL_PATH: join(root, 'base/tiny-qwen2.gguf'),
    });
    const r = start(env);
    const exit = await r.exited;
    expect(exit.code).toBe(1);
    expect(r.stderr()).toMatch(
      /BASE_MODEL_MISMATCH: the adapter was trained for base_model "tiny-qwen2", but CODE_MODEL is "qwen2.5-coder-1.5b"/u,
    );
  }, 60_000);

  it('exits 1 with ADAPTER_TRUST_KEYS when the default adapter is unsigned, or signed by another key', async () => {
    const unsigned = start(await baseEnv({ ADAPTER_TRUST_KEYS: join(root, 'trusted') }));
    const other = join(root, 'other.pem');
    await writeFile(
      other,
      generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'pem' }),
    );
    const untrusted = start(
      await baseEnv({ ADAPTER_PATH: join(root, 'adapters', SIGNED), ADAPTER_TRUST_KEYS: other }),
    );
    expect((await unsigned.exited).code).toBe(1);
    expect(unsigned.stdout()).toMatch(/Adapter Status: invalid \(1 error: SIGNATURE_MISSING\)/u);
    expect(unsigned.stderr()).toMatch(/SIGNATURE_MISSING: the adapter has no model\.sig/u);
    expect((await untrusted.exited).code).toBe(1);
    expect(untrusted.stderr()).toContain(`SIGNATURE_UNTRUSTED_KEY: model.sig is signed by the key ${signer}`);
    for (const r of [unsigned, untrusted]) {
      expect(r.stdout()).not.toMatch(/starting llama-server/u);
      expect(r.stderr()).not.toMatch(/\n\s+at /u);
    }
  }, 60_000);

  it('exits 1 when PATTERNS_RULES revokes the adapter (same id and weights checksum)', async () => {
    const rules = join(root, 'revoked.yml');
    await writeFile(
      rules,
      `version: "2026.11.0"\nllm_assist:\n  revoked:\n    ${ADAPTER}: { checksum: "sha256:601dd4a90ee933effd9995bd15bebf30e9ad00f9813684caad8d34faa300a8ce", reason: leaked, revoked_at: "2026-12-01T00:00:00Z" }\n`,
    );
    const r = start(await baseEnv({ PATTERNS_RULES: rules }));
    expect((await r.exited).code).toBe(1);
    expect(r.stdout()).toMatch(/Adapter Status: invalid \(ADAPTER_REVOKED: /u);
    expect(r.stderr()).toMatch(
      /ADAPTER_REVOKED: tiny-qwen2-lora \(sha256:601dd4a9.*\) is revoked in .*revoked\.yml since 2026-12-01T00:00:00Z: leaked/u,
    );
    expect(r.stdout()).not.toMatch(/starting llama-server/u);
  }, 60_000);

  it('exits 2 naming the variable for a malformed setting', async () => {
    const r = start(await baseEnv({ LLM_ENABLED: 'maybe' }));
    const exit = await r.exited;
    expect(exit.code, r.stderr()).toBe(2);
    expect(r.stderr()).toMatch(/CONFIG_INVALID: LLM_ENABLED must be true or false, got "maybe"/u);
  }, 60_000);
});

describe('run, other modes', () => {
  it('runs the app alone with LLM_ENABLED=false, and exits 0 when it finishes', async () => {
    const env = await baseEnv({ LLM_ENABLED: 'false', LLM_ENDPOINT: 'http://127.0.0.1:1' });
    const record = join(root, 'no-llm.json');
    const r = start({ ...env, APP_COMMAND: `node ${APP} exit 0 ${record}` });
    const exit = await r.exited;
    expect(exit.code, r.stderr()).toBe(0);
    const app = await readJson<AppRecord>(record);
    expect(app.env.LLM_ENDPOINT).toBeNull();
    expect(app.env.LLM_ENABLED).toBe('false');
    expect(app.completion).toBeUndefined();
    expect(r.stdout()).not.toMatch(/^\[llm\]/mu);
    expect(r.stdout()).toMatch(/LLM disabled/u);
  }, 60_000);

  it('serves <MODEL_MOUNT_PATH>/adapters/active by default (mount --activate)', async () => {
    await symlink(ADAPTER, join(root, 'adapters/active'));
    try {
      const env = await baseEnv({ ADAPTER_PATH: undefined });
      const r = start({ ...env, APP_COMMAND: `node ${APP} exit 0 ${join(root, 'active.json')}` });
      const exit = await r.exited;
      expect(exit.code, r.stderr()).toBe(0);
      const environment = await readJson<EnvironmentJson & { adapter: { path: string } }>(
        join(env.CODI_STATE_DIR ?? '', 'environment.json'),
      );
      expect(environment.adapter.path).toBe(join(root, 'adapters', ADAPTER));
      expect(environment.settings.ADAPTER_PATH).toBe(join(root, 'adapters/active'));
    } finally {
      await rm(join(root, 'adapters/active'));
    }
  }, 120_000);

  it('reloads its one adapter: once active points elsewhere, codi-adapter reload serves that adapter', async () => {
    await symlink(ADAPTER, join(root, 'adapters/active'));
    try {
      const env = await baseEnv({ ADAPTER_PATH: undefined, APP_COMMAND: 'none' });
      const r = start(env);
      await r.waitFor(/environment recorded in /u, 120_000);
      const llm = `http://127.0.0.1:${env.LLM_PORT ?? ''}`;
      const roots = async (): Promise<string[]> => {
        const res = await fetch(`${llm}/v1/models`, { signal: AbortSignal.timeout(30_000) });
        return ((await res.json()) as { data: { root: string }[] }).data.map((m) => m.root);
      };
      expect(await roots()).toEqual(['tiny-qwen2', join(root, 'adapters', ADAPTER)]);
      await rm(join(root, 'adapters/active'));
      await symlink(SIGNED, join(root, 'adapters/active'));
      const reload = await runCli(['reload', '--state-dir', env.CODI_STATE_DIR ?? ''], {
        timeoutMs: 120_000,
      });
      expect(reload.code, reload.stderr).toBe(0);
      expect(await roots()).toEqual(['tiny-qwen2', join(root, 'adapters', SIGNED)]);
      r.child.kill('SIGTERM');
      expect((await r.exited).code, r.stderr()).toBe(0);
    } finally {
      await rm(join(root, 'adapters/active'), { force: true });
    }
  }, 180_000);

  it('never serves a tampered cache entry: the alpha changed in the volume’s GGUF is found, reported and rebuilt', async () => {
    const cacheDir = join(root, 'adapters/.gguf-cache');
    const first = await baseEnv({ CODI_GGUF_CACHE: undefined });
    const r1 = start({ ...first, APP_COMMAND: `node ${APP} exit 0 ${join(root, 'tamper-1.json')}` });
    expect((await r1.exited).code, r1.stderr()).toBe(0);
    const env1 = await readJson<EnvironmentJson>(join(first.CODI_STATE_DIR ?? '', 'environment.json'));
    expect(env1.adapter.gguf.startsWith(`${cacheDir}/`)).toBe(true);
    const pristine = await readFile(env1.adapter.gguf);

    // the same adapter converted with another alpha: its f32 value (after the key and its type) doubled
    const key = Buffer.from('adapter.lora.alpha');
    expect(pristine.indexOf(key)).toBeGreaterThan(0);
    const at = pristine.indexOf(key) + key.length + 4;
    const tampered = Buffer.from(pristine);
    tampered.writeFloatLE(pristine.readFloatLE(at) * 2, at);
    await writeFile(env1.adapter.gguf, tampered);

    const second = await baseEnv({ CODI_GGUF_CACHE: undefined });
    const record = join(root, 'tamper-2.json');
    const r2 = start({ ...second, APP_COMMAND: `node ${APP} exit 0 ${record}` });
    expect((await r2.exited).code, r2.stderr()).toBe(0);
    const out = `${r2.stdout()}${r2.stderr()}`;
    expect(out).toMatch(/GGUF_CACHE_TAMPERED: the cached GGUF .* is not this adapter's conversion/u);
    expect(out).not.toMatch(/GGUF from cache/u);
    const env2 = await readJson<
      EnvironmentJson & { adapter: { gguf_cached: boolean; findings: { code: string }[] } }
    >(join(second.CODI_STATE_DIR ?? '', 'environment.json'));
    expect(env2.adapter).toMatchObject({
      gguf: env1.adapter.gguf,
      gguf_cached: false,
      checksum_verified: true,
    });
    // (the example adapter records no base: BASE_UNRECORDED is beside the point here)
    expect(env2.adapter.findings.map((f) => f.code).filter((c) => c !== 'BASE_UNRECORDED')).toEqual([
      'GGUF_CACHE_TAMPERED',
    ]);
    // rebuilt in place, byte for byte the conversion, and the app was served
    expect(Buffer.compare(await readFile(env1.adapter.gguf), pristine)).toBe(0);
    expect((await readJson<AppRecord>(record)).completion?.status).toBe(200);
  }, 180_000);

  it('writes no .gguf-cache beside an adapter outside MODEL_MOUNT_PATH: the state directory’s cache instead', async () => {
    const elsewhere = join(root, 'elsewhere');
    await cp(join(root, 'adapters', ADAPTER), join(elsewhere, ADAPTER), { recursive: true });
    // MODEL_MOUNT_PATH is a volume of its own, which the adapter is not on
    const volume = join(root, 'volume');
    await mkdir(volume, { recursive: true });
    const env = await baseEnv({
      MODEL_MOUNT_PATH: volume,
      ADAPTER_PATH: join(elsewhere, ADAPTER),
      BASE_MODEL_PATH: join(root, 'base/tiny-qwen2.gguf'),
      CODI_GGUF_CACHE: undefined,
    });
    const r = start({ ...env, APP_COMMAND: `node ${APP} exit 0 ${join(root, 'elsewhere.json')}` });
    expect((await r.exited).code, r.stderr()).toBe(0);
    const environment = await readJson<EnvironmentJson>(join(env.CODI_STATE_DIR ?? '', 'environment.json'));
    expect(environment.adapter.gguf.startsWith(join(env.CODI_STATE_DIR ?? '', 'gguf-cache/'))).toBe(true);
    await expect(readdir(elsewhere)).resolves.toEqual([ADAPTER]);
    await expect(readdir(volume)).resolves.toEqual([]);
  }, 120_000);

  it('exits 3 naming both variables for a remote endpoint that is not allow-listed', async () => {
    const r = start(await baseEnv({ LLM_ENDPOINT: 'http://llm.internal.example.com:8081', AIRGAP: 'true' }));
    const exit = await r.exited;
    expect(exit.code).toBe(3);
    expect(r.stderr()).toMatch(
      /AIRGAP_BLOCKED: LLM_ENDPOINT http:\/\/llm.internal.example.com:8081 is not allowed under AIRGAP: llm.internal.example.com is not loopback/u,
    );
    expect(r.stderr()).toMatch(/AIRGAP_ALLOWLIST/u);
  }, 60_000);

  it('exits 4 with the resolution when an allow-listed remote endpoint is unreachable', async () => {
    const port = await freePort();
    const r = start(
      await baseEnv({
        LLM_ENDPOINT: `http://localhost:${port}`,
        LLM_HEALTH_RETRIES: '2',
        APP_COMMAND: 'none',
      }),
    );
    const exit = await r.exited;
    expect(exit.code).toBe(4);
    expect(r.stderr()).toMatch(/LLM_UNREACHABLE: .* in 2 attempt\(s\)/u);
    expect(r.stderr()).toMatch(
      /check port mappings and container network, or add the host to AIRGAP_ALLOWLIST/u,
    );
  }, 60_000);

  it('uses a healthy remote llama-server and hands its endpoint to the app', async () => {
    const remote = await startLlamaServer({ model: join(root, 'base/tiny-qwen2.gguf'), threads: 1 });
    try {
      const record = join(root, 'remote.json');
      const env = await baseEnv({
        LLM_ENDPOINT: `${remote.url}/`,
        ADAPTER_PATH: join(root, 'adapters/absent'),
      });
      const r = start({ ...env, APP_COMMAND: `node ${APP} exit 0 ${record}` });
      const exit = await r.exited;
      expect(exit.code, r.stderr()).toBe(0);
      const app = await readJson<AppRecord>(record);
      expect(app.env.LLM_ENDPOINT).toBe(remote.url);
      expect(app.completion?.status).toBe(200);
      expect(r.stdout()).toMatch(/remote LLM healthy/u);
      expect(r.stdout()).not.toMatch(/^\[llm\]/mu);
    } finally {
      await remote.stop();
    }
  }, 120_000);
});
