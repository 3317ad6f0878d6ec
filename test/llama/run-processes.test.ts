/**
 * `run` never hangs, and nothing it started outlives it: the built CLI with the real llama-server and
 * the tiny model, each case as PID 1 of a PID namespace (a container without an init) and not. The
 * processes an app leaves behind are found by what they are (their pids, recorded by the app, and
 * their command lines), since a daemon has left `run`'s process tree by design.
 */
import { cp, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { REPO } from '../helpers/cli.js';
import { freePort, llamaServerBinary } from '../helpers/llama.js';
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
const HANGS = join(REPO, 'test/fixtures/fault-server-hangs-health.js');
const asUser = process.getuid?.() === 0 ? [] : ['--user', '--map-root-user'];
const PID1 = ['unshare', ...asUser, '--pid', '--fork', '--mount-proc', '--kill-child'];

let root: string;
let bin: string;
let seq = 0;
const runs: RunProcess[] = [];
/** processes a test made that must be gone when it ends: command-line markers */
const markers: string[] = [];

beforeAll(async () => {
  bin = await llamaServerBinary();
  root = await tempDir('codi-run-proc-');
  await mkdir(join(root, 'adapters'), { recursive: true });
  await mkdir(join(root, 'base'), { recursive: true });
  await cp(join(REPO, 'examples/adapters', ADAPTER), join(root, 'adapters', ADAPTER), { recursive: true });
  await cp(join(REPO, 'examples/base/tiny-qwen2.gguf'), join(root, 'base/tiny-qwen2.gguf'));
}, 45 * 60_000);

afterEach(async () => {
  const stillRunning: number[] = [];
  for (const r of runs.splice(0)) {
    if (alive(r.pid)) {
      stillRunning.push(r.pid);
      r.child.kill('SIGKILL');
    }
  }
  expect(stillRunning, 'run processes still running after the test').toEqual([]);
  // `ps` shows nothing of the test's: nothing naming its folder, nothing carrying its markers
  const left = (): { pid: number; cmdline: string }[] => [
    ...processesMentioning(root),
    ...markers.flatMap((m) => processesMentioning(m)),
  ];
  for (let i = 0; i < 60 && left().length > 0; i++) await new Promise((r) => setTimeout(r, 50));
  expect(left(), 'processes left behind').toEqual([]);
  markers.splice(0);
});

async function env(
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
    PATTERNS_RULES: join(root, 'no-rules.yml'),
    STOP_GRACE_PERIOD: '3',
    LLM_HEALTH_INTERVAL: '1',
    AIRGAP: 'false',
    AIRGAP_ALLOWLIST: undefined,
    LLM_ENDPOINT: undefined,
    LLM_ENABLED: undefined,
    APP_COMMAND: 'none',
    ...extra,
  };
}

function start(e: Record<string, string | undefined>, prefix: readonly string[]): RunProcess {
  const r = startRun(['run'], e, prefix);
  runs.push(r);
  return r;
}

/** The `run` doing the work: the node below codi-init, below the front `run` (and unshare, as PID 1). */
function supervisor(r: RunProcess): number {
  const init = descendants(r.pid).find((p) => p.comm === 'codi-init');
  const below = init
    ? descendants(init.pid).find((p) => p.ppid === init.pid && p.comm === 'node')
    : undefined;
  if (!below) throw new Error(`no run below codi-init in ${JSON.stringify(descendants(r.pid))}`);
  return below.pid;
}

/** The front `run` the user started (PID 1 of the namespace, under unshare). */
function front(r: RunProcess, pid1: boolean): number {
  if (!pid1) return r.pid;
  const p = descendants(r.pid).find((d) => d.ppid === r.pid);
  if (!p) throw new Error('no PID 1 below unshare');
  return p.pid;
}

/** The live processes whose command line mentions `text` (host pids, whatever namespace they are in). */
function running(text: string): number[] {
  return processesMentioning(text).map((p) => p.pid);
}

async function until(check: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 400; i++) {
    if (check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`never: ${what}`);
}

for (const [mode, prefix] of [
  ['not PID 1', []],
  ['as PID 1 of a PID namespace', PID1],
] as const) {
  const pid1 = prefix.length > 0;

  describe(`run ${mode}`, () => {
    it('an app that leaves a setsid child and a daemon holding its pipes, then exits: run stops llama-server and exits, and they are gone', async () => {
      const marker = `100${++seq}.5`;
      markers.push(`sleep ${marker}`);
      // a child in a session of its own, and a daemon that double-forked out of the app's group,
      // both keeping the app's stdout and stderr open; then the app exits 0
      const app = `sh -c 'setsid sleep ${marker} & (setsid sh -c "exec sleep ${marker}" &); sleep 0.3; echo leaving; exit 0'`;
      const r = start(await env({ APP_COMMAND: app }), prefix);
      const exit = await r.exited;
      expect(exit.code, r.stderr()).toBe(0);
      expect(running(`sleep ${marker}`)).toEqual([]);
      expect(r.stdout()).toMatch(/\[app\] leaving/u);
      expect(r.stdout()).toMatch(/app exited with code 0: stopping the LLM/u);
      expect(r.stdout()).toMatch(/llama-server \(pid \d+\) stopped: exited with code 0/u);
      expect(r.stdout()).toMatch(/stopped 2 processes left behind: \d+ \(sleep\), \d+ \(sleep\)/u);
    }, 120_000);

    it('a shell-mode app (cd /tmp && sleep): when run is SIGKILLed, the sleep goes with it', async () => {
      const marker = `99${++seq}.25`;
      markers.push(`sleep ${marker}`);
      const r = start(await env({ APP_COMMAND: `cd /tmp && sleep ${marker}` }), prefix);
      await r.waitFor(/app started/u);
      await until(() => running(`sleep ${marker}`).length > 0, 'the app sleeps');
      const sleeps = running(`sleep ${marker}`);
      process.kill(front(r, pid1), 'SIGKILL');
      await r.exited;
      // llama-server (its command line names the test's folder) and the app's sleep
      await until(() => running(root).length === 0 && running(`sleep ${marker}`).length === 0, 'all gone');
      expect(sleeps.length).toBeGreaterThan(0);
    }, 120_000);

    it('the run doing the work SIGKILLed: its init ends everything below it', async () => {
      const marker = `98${++seq}.75`;
      markers.push(`sleep ${marker}`);
      // the app keeps running, and has left a daemon in a session of its own
      const app = `sh -c '(setsid sh -c "exec sleep ${marker}" &); exec sleep ${marker}'`;
      const r = start(await env({ APP_COMMAND: app }), prefix);
      await r.waitFor(/app started/u);
      await until(() => running(`sleep ${marker}`).length === 2, 'the app and its daemon sleep');
      const daemon = running(`sleep ${marker}`);
      process.kill(supervisor(r), 'SIGKILL');
      const exit = await r.exited;
      // the front run exits with the status of the one that was killed
      expect(exit.code).toBe(137);
      expect(await waitGone(daemon, 5000)).toEqual([]);
    }, 120_000);

    it('SIGTERM, then SIGINT 0.3 s later, while a health probe hangs: stopped at once, not after the grace period (fault injection)', async () => {
      const r = start(
        await env({ LLAMA_SERVER_BIN: HANGS, STOP_GRACE_PERIOD: '60', LLM_READY_TIMEOUT: '120' }),
        prefix,
      );
      await r.waitFor(/fault-server-hangs-health: accepting/u);
      // the first probe is in flight now (the server never answers it)
      await new Promise((res) => setTimeout(res, 300));
      const t0 = performance.now();
      process.kill(front(r, pid1), 'SIGTERM');
      await r.waitFor(/received SIGTERM while starting: stopping/u, 20_000);
      await new Promise((res) => setTimeout(res, 300));
      process.kill(front(r, pid1), 'SIGINT');
      const exit = await r.exited;
      expect(exit.code, r.stderr()).toBe(0);
      // far inside the 60 s grace period the server was given: the second signal killed it
      expect(performance.now() - t0).toBeLessThan(30_000);
      expect(r.stdout()).toMatch(/fault-server-hangs-health: ignoring SIGTERM/u);
      expect(r.stdout()).toMatch(/llama-server \(pid \d+\) stopped: was killed by SIGKILL/u);
    }, 120_000);
  });
}

describe('run without an init to start itself under', () => {
  it('warns that a process leaving the app’s session may outlive it, and still stops what it can find', async () => {
    // no dist/codi-init and no tini on this PATH: the front runs the work itself
    await writeFile(join(root, 'no-init'), '');
    const r = start(
      await env({
        APP_COMMAND: `sh -c 'sleep 0.2; exit 0'`,
        CODI_UNDER_INIT: join(root, 'no-init'),
      }),
      [],
    );
    const exit = await r.exited;
    expect(exit.code, r.stderr()).toBe(0);
    expect(r.stdout()).toMatch(/not running under an init that adopts orphans/u);
  }, 120_000);
});
