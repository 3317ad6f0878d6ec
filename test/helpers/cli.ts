/**
 * Runs the built CLI (bin/run.js → dist/) as a user would, and reads its output and exit status; a
 * test can also steer it: stop it at a pause point (CODI_TEST_PAUSE_AT, see src/test-hooks.ts),
 * SIGKILL it there or after a delay, let it continue, or run it as another user.
 * test/global-setup.ts rebuilds dist/ when src/ is newer.
 */
import { spawn, spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { PAUSE_MARKER } from '../../src/test-hooks.js';

export const BIN = fileURLToPath(new URL('../../bin/run.js', import.meta.url));
export const REPO = fileURLToPath(new URL('../../', import.meta.url));

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** stdout parsed as JSON, when it is */
  json: unknown;
}

export interface StartOptions {
  env?: Record<string, string | undefined>;
  /** pause points to stop at */
  pauseAt?: readonly string[];
  /** run as this user (the test runs as root) */
  user?: { uid: number; gid: number };
  timeoutMs?: number;
}

export interface RunningCli {
  readonly pid: number;
  /** resolves true when the process announced `step`, false if it ended first */
  reached(step: string): Promise<boolean>;
  /** lets a paused process go on */
  resume(): void;
  kill(signal?: NodeJS.Signals): void;
  readonly done: Promise<CliResult>;
}

export function startCli(args: readonly string[], options: StartOptions = {}): RunningCli {
  const merged: Record<string, string | undefined> = {
    ...process.env,
    NO_COLOR: '1',
    ...(options.user ? { HOME: tmpdir() } : {}),
    ...(options.pauseAt ? { CODI_TEST_PAUSE_AT: options.pauseAt.join(',') } : {}),
    ...options.env,
  };
  const env = Object.fromEntries(
    Object.entries(merged).filter(([, v]) => v !== undefined),
  ) as NodeJS.ProcessEnv;
  const child = spawn(process.execPath, [BIN, ...args], {
    cwd: REPO,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(options.user ? { uid: options.user.uid, gid: options.user.gid } : {}),
  });
  let stdout = '';
  let stderr = '';
  let ended = false;
  const waiters: { step: string; resolve: (ok: boolean) => void }[] = [];
  const check = (): void => {
    for (const w of [...waiters]) {
      if (stderr.includes(`${PAUSE_MARKER} ${w.step}\n`)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(true);
      } else if (ended) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(false);
      }
    }
  };
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
    check();
  });
  const done = new Promise<CliResult>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`codi-adapter ${args.join(' ')} did not finish in time\n${stderr}`));
    }, options.timeoutMs ?? 60_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      ended = true;
      check();
      let json: unknown;
      try {
        json = JSON.parse(stdout);
      } catch {
        json = undefined;
      }
      resolve({ code, signal, stdout, stderr, json });
    });
  });
  return {
    pid: child.pid ?? -1,
    reached: (step) =>
      new Promise<boolean>((resolve) => {
        waiters.push({ step, resolve });
        check();
      }),
    resume: () => child.kill('SIGUSR2'),
    kill: (signal = 'SIGKILL') => child.kill(signal),
    done,
  };
}

/**
 * A user's terminal, not a CI log: chalk keeps a CI job's output plain (CI=true, as CI runners set
 * it), so the variables that tell it so are taken out; a test puts one back through `prefix`.
 */
function terminalEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, TERM: 'xterm-256color', NO_COLOR: '' };
  for (const name of [
    'CI',
    'CONTINUOUS_INTEGRATION',
    'BUILD_NUMBER',
    'RUN_ID',
    'TEAMCITY_VERSION',
    'FORCE_COLOR',
  ]) {
    Reflect.deleteProperty(env, name);
  }
  return env;
}

/** An SGR colour code, what the terminal tests look for. */
// eslint-disable-next-line no-control-regex -- the escape character is the point
export const SGR = /\u001b\[[0-9;]*m/u;

/**
 * Runs the built CLI on a real terminal: script(1) gives it a pty 200 columns wide for stdout and
 * stderr, both read back as `output`. `command` is the shell words after the binary (`list --root
 * /x`), `prefix` what goes before it (`NO_COLOR=1`). Bounded: it must not hang the suite.
 */
export function runOnTerminal(
  command: string,
  prefix = '',
): { status: number | null; output: string; stderr: string } {
  const r = spawnSync(
    'script',
    ['-qefc', `stty cols 200; ${prefix} ${process.execPath} ${BIN} ${command}`, '/dev/null'],
    { encoding: 'utf8', timeout: 60_000, env: terminalEnv() },
  );
  return { status: r.status, output: r.stdout, stderr: r.stderr };
}

/** Runs to the end (no pausing). */
export function runCli(args: readonly string[], options: StartOptions = {}): Promise<CliResult> {
  return startCli(args, options).done;
}

/**
 * How long a command takes from `step` to its successful end here: the span a kill trial's random
 * delay is drawn from.
 */
export async function msFromStepToEnd(start: () => RunningCli, step: string): Promise<number> {
  const run = start();
  if (!(await run.reached(step))) throw new Error(`the command never reached ${step}`);
  const t0 = Date.now();
  run.resume();
  const result = await run.done;
  if (result.code !== 0) throw new Error(`the command failed after ${step}: ${result.stderr}`);
  return Date.now() - t0;
}

/**
 * Starts a command paused at `step`, lets it run on for a random part of `spanMs`, then SIGKILLs it
 * (crash-safety trials); it may also have finished by then.
 */
export async function killAfterRandomDelay(
  start: () => RunningCli,
  step: string,
  spanMs: number,
): Promise<{ result: CliResult; delay: number }> {
  const run = start();
  if (!(await run.reached(step))) throw new Error(`the command never reached ${step}`);
  const delay = Math.floor(Math.random() * spanMs);
  run.resume();
  await new Promise((r) => setTimeout(r, delay));
  run.kill('SIGKILL');
  return { result: await run.done, delay };
}
