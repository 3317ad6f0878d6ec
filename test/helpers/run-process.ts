/**
 * The built CLI as a long-running process the test can watch and signal (`codi-adapter run`), and the
 * process checks every run test ends with: nothing it started may be left.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { BIN, REPO } from './cli.js';

export interface RunProcess {
  readonly pid: number;
  readonly child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** resolves once stdout or stderr matches (rejects when the process ends first or on timeout) */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<void>;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number }>;
}

const started = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of started) c.kill('SIGKILL');
});

/**
 * Starts `bin/run.js <args>`; `prefix` runs it under another command (e.g. `unshare --pid --fork` to make
 * it PID 1), whose pid is then the one returned.
 */
export function startRun(
  args: readonly string[],
  env: Record<string, string | undefined>,
  prefix: readonly string[] = [],
): RunProcess {
  const merged: Record<string, string | undefined> = { ...process.env, NO_COLOR: '1', ...env };
  const clean = Object.fromEntries(Object.entries(merged).filter(([, v]) => v !== undefined));
  const t0 = performance.now();
  const argv = [...prefix, process.execPath, BIN, ...args];
  const child = spawn(argv[0] ?? process.execPath, argv.slice(1), {
    cwd: REPO,
    env: clean,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  started.add(child);
  let out = '';
  let err = '';
  const listeners = new Set<() => void>();
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
    for (const l of listeners) l();
  });
  child.stderr.on('data', (d: Buffer) => {
    err += d.toString();
    for (const l of listeners) l();
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number }>(
    (resolve) => {
      child.on('close', (code, signal) => {
        started.delete(child);
        resolve({ code, signal, ms: performance.now() - t0 });
        for (const l of listeners) l();
      });
    },
  );
  let done = false;
  void exited.then(() => (done = true));
  return {
    pid: child.pid ?? -1,
    child,
    stdout: () => out,
    stderr: () => err,
    exited,
    waitFor(pattern, timeoutMs = 60_000) {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          if (pattern.test(out) || pattern.test(err)) {
            cleanup();
            resolve();
          } else if (done) {
            cleanup();
            reject(new Error(`run ended before ${String(pattern)}:\n${out}\n${err}`));
          }
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(new Error(`no ${String(pattern)} within ${timeoutMs} ms:\n${out}\n${err}`));
        }, timeoutMs);
        const cleanup = (): void => {
          clearTimeout(timer);
          listeners.delete(check);
        };
        listeners.add(check);
        check();
      });
    },
  };
}

/** A live process (a zombie waiting to be reaped does not count: it runs nothing and holds no port). */
export function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

export interface ProcessInfo {
  pid: number;
  ppid: number;
  /** the /proc state letter: R, S, D, Z (zombie), … */
  state: string;
  comm: string;
}

/** Every process below `root` (zombies included), read from /proc. */
export function descendants(root: number): ProcessInfo[] {
  const all: ProcessInfo[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/u.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const close = stat.lastIndexOf(')');
      const fields = stat.slice(close + 2).split(' ');
      all.push({
        pid: Number(name),
        ppid: Number(fields[1]),
        state: fields[0] ?? '?',
        comm: stat.slice(stat.indexOf('(') + 1, close),
      });
    } catch {
      // ended while we looked
    }
  }
  const found: ProcessInfo[] = [];
  const parents = new Set([root]);
  for (let grew = true; grew;) {
    grew = false;
    for (const p of all) {
      if (parents.has(p.ppid) && !parents.has(p.pid)) {
        parents.add(p.pid);
        found.push(p);
        grew = true;
      }
    }
  }
  return found;
}

/** Live processes whose command line mentions `text` (a test's temp folder), other than us. */
export function processesMentioning(text: string): { pid: number; cmdline: string }[] {
  const found: { pid: number; cmdline: string }[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/u.test(name)) continue;
    const pid = Number(name);
    if (pid === process.pid) continue;
    let cmdline: string;
    try {
      cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/gu, ' ');
    } catch {
      continue;
    }
    if (cmdline.includes(text) && alive(pid)) found.push({ pid, cmdline });
  }
  return found;
}

/** Waits up to `ms` for every pid to be gone; returns the ones still alive. */
export async function waitGone(pids: readonly number[], ms = 5000): Promise<number[]> {
  const deadline = Date.now() + ms;
  for (;;) {
    const left = pids.filter(alive);
    if (left.length === 0 || Date.now() > deadline) return left;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Live processes whose command line or environment mentions `text` (a test's folder: every process a
 * `run` started inherits its CODI_STATE_DIR), waited for up to `waitMs` to go.
 */
export async function processesLeft(
  text: string,
  waitMs = 2000,
): Promise<{ pid: number; cmdline: string }[]> {
  const scan = (): { pid: number; cmdline: string }[] => {
    const found: { pid: number; cmdline: string }[] = [];
    for (const name of readdirSync('/proc')) {
      if (!/^\d+$/u.test(name) || Number(name) === process.pid) continue;
      try {
        const cmdline = readFileSync(`/proc/${name}/cmdline`, 'utf8').replace(/\0/gu, ' ');
        const environ = readFileSync(`/proc/${name}/environ`, 'utf8');
        if ((cmdline.includes(text) || environ.includes(text)) && alive(Number(name)))
          found.push({ pid: Number(name), cmdline });
      } catch {
        // gone meanwhile, or not ours to read
      }
    }
    return found;
  };
  let left = scan();
  for (let waited = 0; waited < waitMs && left.length > 0; waited += 50) {
    await new Promise((r) => setTimeout(r, 50));
    left = scan();
  }
  return left;
}
