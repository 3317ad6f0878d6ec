/**
 * The children of `run` (llama-server and the app) and their supervision: each child runs
 * in its own process group (so a shell's or uvicorn's own children are signalled with it), its output
 * goes to our stdout line by line behind a `[role]` prefix, and it is stopped gracefully, then by force
 * after a bounded grace period. No child outlives `run`:
 *  - `run` exits normally only after every group is gone and the processes left below it are swept
 *    (src/run/descendants.ts); a last-resort `exit` hook SIGKILLs the groups of children still
 *    registered (an exception that escaped everything).
 *  - `run` runs under an init that is a child subreaper (src/run/init.ts): orphans are adopted and
 *    reaped there, and if `run` is SIGKILLed the init ends everything below it.
 *  - Each child is also started through `setpriv --pdeathsig KILL` (util-linux) where it exists, so
 *    the kernel kills a direct child when `run` dies even without the init.
 *  - A child's stdout and stderr are released once it is stopped: a process that holds them (a daemon
 *    that kept the app's pipes) never keeps `run` alive.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import { CodiError, environmentError } from '../errors.js';
import { nowMs } from '../clock.js';
import { isLive, processTable } from './descendants.js';
import { findExecutable } from './executable.js';
import { spawnTooLarge } from './spawn-limits.js';

export interface ChildExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** Receives each complete line of a child's stdout and stderr. */
export type LineSink = (role: string, line: string) => void;

export interface ChildSpec {
  /** `llm` or `app`: the output prefix and the name in messages */
  role: string;
  command: string;
  args: readonly string[];
  env: NodeJS.ProcessEnv;
  cwd?: string;
  /** a command prefix that makes the child die with us (see `parentDeathWrapper`), or null */
  wrapper?: readonly string[] | null;
  /** open descriptors the child gets as fd 3, 4, … (a proven GGUF llama-server reads as /dev/fd/3) */
  fds?: readonly number[];
}

export interface StopResult {
  role: string;
  pid: number;
  exit: ChildExit | null;
  /** SIGKILL was needed */
  forced: boolean;
  alreadyExited: boolean;
}

const TAIL_LINES = 50;
const POLL_MS = 25;

/** Children whose process group may still exist: SIGKILLed if the process exits with them around. */
const live = new Set<SupervisedChild>();
let exitHook = false;

function installExitHook(): void {
  if (exitHook) return;
  exitHook = true;
  process.on('exit', () => {
    for (const child of live) child.signal('SIGKILL');
  });
}

export class SupervisedChild {
  exit: ChildExit | undefined;
  /** resolves when the child itself has exited (its group may live on) */
  readonly exited: Promise<ChildExit>;
  /** resolves when its stdout and stderr are closed (or shortly after exit, if a grandchild holds them) */
  readonly drained: Promise<void>;
  private readonly lines: string[] = [];
  private readonly streams: Readable[] = [];

  private constructor(
    readonly role: string,
    readonly pid: number,
    readonly argv: readonly string[],
    proc: ChildProcess,
    sink: LineSink,
  ) {
    this.exited = new Promise((resolveExit) => {
      proc.once('exit', (code, signal) => {
        this.exit = { code, signal };
        resolveExit(this.exit);
      });
    });
    let open = 0;
    let closeAll: () => void = () => undefined;
    this.drained = new Promise((resolveDrain) => {
      closeAll = resolveDrain;
    });
    for (const stream of [proc.stdout, proc.stderr]) {
      if (!stream) continue;
      this.streams.push(stream);
      open++;
      const decoder = new StringDecoder('utf8');
      let partial = '';
      const push = (part: string): void => {
        const line = part.endsWith('\r') ? part.slice(0, -1) : part;
        this.lines.push(line);
        if (this.lines.length > TAIL_LINES) this.lines.shift();
        sink(role, line);
      };
      const emit = (text: string, final: boolean): void => {
        const parts = (partial + text).split('\n');
        partial = parts.pop() ?? '';
        for (const part of parts) push(part);
        if (final && partial !== '') push(partial);
        if (final) partial = '';
      };
      stream.on('data', (chunk: Buffer) => {
        emit(decoder.write(chunk), false);
      });
      stream.once('close', () => {
        emit(decoder.end(), true);
        if (--open === 0) closeAll();
      });
    }
    if (open === 0) closeAll();
    // a grandchild can keep the pipes open after the child exits; the tail must not wait for it
    void this.exited.then(() => setTimeout(closeAll, 300).unref());
  }

  /** Spawns `spec` in a new process group; resolves once it is running. */
  static start(spec: ChildSpec, sink: LineSink): Promise<SupervisedChild> {
    installExitHook();
    const argv = [...(spec.wrapper ?? []), spec.command, ...spec.args];
    const [file = spec.command, ...rest] = argv;
    return new Promise((resolveStart, reject) => {
      const proc = spawn(file, rest, {
        env: spec.env,
        cwd: spec.cwd,
        // detached: setsid(), so the child leads its own process group and session: we signal the
        // whole group, and a Ctrl-C on the terminal reaches only us (we stop the children in order)
        detached: true,
        stdio: ['ignore', 'pipe', 'pipe', ...(spec.fds ?? [])],
      });
      // kept for the child's lifetime: a later 'error' (a failed kill) without a listener would throw
      proc.on('error', (e: NodeJS.ErrnoException) => {
        reject(
          e.code === 'E2BIG'
            ? spawnTooLarge(spec.role, argv, spec.env)
            : environmentError(e, file, 'executed'),
        );
      });
      proc.once('spawn', () => {
        if (proc.pid === undefined) {
          reject(new CodiError('SPAWN_FAILED', `${spec.role}: ${file} did not start`));
          return;
        }
        const child = new SupervisedChild(spec.role, proc.pid, argv, proc, sink);
        live.add(child);
        resolveStart(child);
      });
    });
  }

  /** The last lines the child printed (stdout and stderr interleaved). */
  tail(n = 20): string[] {
    return this.lines.slice(-n);
  }

  /** Signals the child's whole process group; false when no member is left. */
  signal(sig: NodeJS.Signals | 0): boolean {
    try {
      process.kill(-this.pid, sig);
      return true;
    } catch {
      // the group leader may not have called setsid yet (a few µs after spawn): try the child itself
      if (this.exit !== undefined) return false;
      try {
        process.kill(this.pid, sig);
        return true;
      } catch {
        return false;
      }
    }
  }

  /**
   * Whether the child or any member of its process group still runs. A zombie does not count: once its
   * parent is gone only init can reap it (promptly under tini, lazily elsewhere), and it holds nothing.
   */
  groupAlive(): boolean {
    if (this.exit === undefined) return true;
    if (!this.signal(0)) return false;
    return process.platform === 'linux' ? groupHasLiveMember(this.pid) : true;
  }

  /**
   * `sig` to the group, then SIGKILL after `graceMs` if anything of it is left. Resolves once the
   * child has exited and its group is empty (or, for zombies nobody reaps, after a short bound).
   */
  async stop(graceMs: number, sig: NodeJS.Signals = 'SIGTERM'): Promise<StopResult> {
    const alreadyExited = this.exit !== undefined;
    let forced = false;
    if (this.groupAlive()) {
      this.signal(sig);
      if (!(await this.waitGone(graceMs))) {
        forced = true;
        this.signal('SIGKILL');
        await this.waitGone(2000);
      }
    }
    if (this.exit !== undefined) live.delete(this);
    await this.release();
    return { role: this.role, pid: this.pid, exit: this.exit ?? null, forced, alreadyExited };
  }

  /**
   * Lets go of the child's stdout and stderr once what is in them has been read (or after a short
   * bound): a process outside the group may hold the pipes open forever, and an open pipe would keep
   * `run` alive.
   */
  async release(): Promise<void> {
    await Promise.race([this.drained, sleep(300)]);
    for (const stream of this.streams) stream.destroy();
  }

  /** SIGKILL now, without a grace period (a second Ctrl-C). */
  async kill(): Promise<StopResult> {
    return this.stop(0, 'SIGKILL');
  }

  private async waitGone(ms: number): Promise<boolean> {
    const deadline = nowMs() + ms;
    for (;;) {
      if (this.exit !== undefined && !this.groupAlive()) return true;
      const left = deadline - nowMs();
      if (left <= 0) return false;
      if (this.exit === undefined) {
        await Promise.race([this.exited, sleep(Math.min(left, 250))]);
      } else {
        await sleep(Math.min(left, POLL_MS));
      }
    }
  }
}

export type EndReason =
  | { kind: 'signal'; signal: NodeJS.Signals }
  | { kind: 'child-exit'; role: string; exit: ChildExit }
  | { kind: 'unhealthy'; role: string; detail: string };

/** Resolves with whatever comes first: a signal, a child's exit, or one of `others` (health monitors). */
export function firstEnd(
  children: readonly SupervisedChild[],
  trap: SignalTrap,
  others: readonly Promise<EndReason>[] = [],
): Promise<EndReason> {
  return Promise.race([
    trap.received.then((signal): EndReason => ({ kind: 'signal', signal })),
    ...children.map((c) => c.exited.then((exit): EndReason => ({ kind: 'child-exit', role: c.role, exit }))),
    ...others,
  ]);
}

/**
 * Stops the children one after the other, in the order given (the app before the LLM it uses), each
 * with its own grace period. Another signal while stopping (a second Ctrl-C) kills what is left at once.
 */
export async function stopInOrder(
  children: readonly SupervisedChild[],
  graceMs: number,
  sig: NodeJS.Signals,
  trap: SignalTrap | null,
  onStop: (child: SupervisedChild, result: StopResult) => void = () => undefined,
): Promise<StopResult[]> {
  // a second signal, whenever it came (even while a health probe was in flight, before this began),
  // means "now": what is left is killed without a grace period
  let hurry = false;
  const results: StopResult[] = [];
  for (const child of children) {
    hurry ||= (trap?.count ?? 0) >= 2;
    let result: StopResult;
    if (hurry) {
      result = await child.kill();
    } else {
      const stopping = child.stop(graceMs, sig);
      const repeat = trap?.next().then(() => {
        hurry = true;
        child.signal('SIGKILL');
      });
      result = await stopping;
      void repeat;
    }
    results.push(result);
    onStop(child, result);
  }
  return results;
}

/**
 * Catches SIGTERM, SIGINT and SIGHUP for the whole of `run`: without handlers Node would die at once
 * (leaving the children to the parent-death signal), and as PID 1 the kernel would ignore them.
 */
export class SignalTrap {
  signal: NodeJS.Signals | null = null;
  count = 0;
  readonly received: Promise<NodeJS.Signals>;
  /** aborted by the first signal: what is under way (a health probe, a conversion) ends at once */
  readonly stopping: AbortSignal;
  private readonly abort = new AbortController();
  private resolveFirst: (sig: NodeJS.Signals) => void = () => undefined;
  private waiters: ((sig: NodeJS.Signals) => void)[] = [];
  private readonly handler = (sig: NodeJS.Signals): void => {
    this.count++;
    if (this.signal === null) {
      this.signal = sig;
      this.abort.abort(new Error(`stopped by ${sig}`));
      this.resolveFirst(sig);
      return;
    }
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w(sig);
  };

  constructor(readonly signals: readonly NodeJS.Signals[] = ['SIGTERM', 'SIGINT', 'SIGHUP']) {
    this.received = new Promise((r) => {
      this.resolveFirst = r;
    });
    this.stopping = this.abort.signal;
    for (const s of signals) process.on(s, this.handler);
  }

  /** Whether a stop was asked for (a method: the value changes behind any `await`). */
  stopRequested(): boolean {
    return this.signal !== null;
  }

  /** The next signal after the first. */
  next(): Promise<NodeJS.Signals> {
    return new Promise((r) => this.waiters.push(r));
  }

  dispose(): void {
    for (const s of this.signals) process.off(s, this.handler);
  }
}

/** The signal to pass on: SIGHUP (terminal gone) is a plain "stop" for the children. */
export function forwardedSignal(sig: NodeJS.Signals): NodeJS.Signals {
  return sig === 'SIGINT' ? 'SIGINT' : 'SIGTERM';
}

let wrapper: Promise<readonly string[] | null> | undefined;

/**
 * `setpriv --pdeathsig KILL --` where util-linux's setpriv supports it (Linux): the kernel then
 * SIGKILLs the child when `run` dies, even by SIGKILL. null elsewhere: the children are then only
 * stopped by `run` itself (or by the container's end).
 */
export function parentDeathWrapper(env: NodeJS.ProcessEnv = process.env): Promise<readonly string[] | null> {
  if (process.platform !== 'linux') return Promise.resolve(null);
  wrapper ??= findExecutable('setpriv', env).then(async (path) => {
    if (path === null) return null;
    // --pdeathsig came with util-linux 2.33; its name is in the binary's option table. Reading the small
    // binary is cheaper than starting `setpriv --help` on run's critical path.
    const binary = await readFile(path).catch(() => null);
    return binary?.includes('pdeathsig') ? [path, '--pdeathsig', 'KILL', '--'] : null;
  });
  return wrapper;
}

/** Linux: a non-zombie process in group `pgid`, read from /proc. */
function groupHasLiveMember(pgid: number): boolean {
  const table = processTable();
  return table === null || table.some((p) => p.pgid === pgid && isLive(p));
}

export function describeExit(exit: ChildExit | null | undefined): string {
  if (!exit) return 'is still running';
  if (exit.signal) return `was killed by ${exit.signal}`;
  return `exited with code ${exit.code ?? '?'}`;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
