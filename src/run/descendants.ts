/**
 * The processes below `run`, read from /proc (Linux), and the sweep that stops what is left of them
 * once the children are stopped: a daemon the app double-forked, a `setsid` child holding the app's
 * output pipes, a grandchild orphaned when its parent was stopped. Under the init (src/run/init.ts)
 * every one of them is below the init, which adopts orphans; without it only those still attached to
 * a child's tree can be found (taken before the child is stopped).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { nowMs } from '../clock.js';

export interface ProcessEntry {
  pid: number;
  ppid: number;
  pgid: number;
  /** the /proc state letter: R, S, D, Z (zombie), … */
  state: string;
  /** start time in clock ticks since boot: with the pid, it names one process even if the pid is reused */
  start: number;
  comm: string;
}

/** Every process of this PID namespace, or null when /proc cannot be read (not Linux). */
export function processTable(): ProcessEntry[] | null {
  let names: string[];
  try {
    names = readdirSync('/proc');
  } catch {
    return null;
  }
  const table: ProcessEntry[] = [];
  for (const name of names) {
    if (name.charCodeAt(0) < 48 || name.charCodeAt(0) > 57) continue;
    const entry = readProcess(Number(name));
    if (entry !== null) table.push(entry);
  }
  return table;
}

/** One process's /proc/<pid>/stat (the fields after the command name, which may hold spaces). */
export function readProcess(pid: number): ProcessEntry | null {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch {
    // ended while we looked
    return null;
  }
  const close = stat.lastIndexOf(')');
  const fields = stat.slice(close + 2).split(' ');
  return {
    pid,
    ppid: Number(fields[1]),
    pgid: Number(fields[2]),
    state: fields[0] ?? '?',
    start: Number(fields[19]),
    comm: stat.slice(stat.indexOf('(') + 1, close),
  };
}

/** Whether a process runs (a zombie does not: it holds nothing, and only its parent can reap it). */
export function isLive(p: ProcessEntry): boolean {
  return p.state !== 'Z' && p.state !== 'X';
}

/** The processes below `root` in `table` (children, their children, …). */
export function descendantsOf(root: number, table: readonly ProcessEntry[]): ProcessEntry[] {
  const byParent = new Map<number, ProcessEntry[]>();
  for (const p of table) {
    const siblings = byParent.get(p.ppid);
    if (siblings) siblings.push(p);
    else byParent.set(p.ppid, [p]);
  }
  const found: ProcessEntry[] = [];
  const queue = [root];
  for (let pid = queue.pop(); pid !== undefined; pid = queue.pop()) {
    for (const child of byParent.get(pid) ?? []) {
      if (child.pid === root) continue;
      found.push(child);
      queue.push(child.pid);
    }
  }
  return found;
}

/** Where the sweep looks: below the init (every orphan is there), else the trees taken earlier. */
export type SweepScope = { kind: 'below'; root: number } | { kind: 'known'; processes: ProcessEntry[] };

/** The live processes of `scope` now, other than this process (and never PID 1). */
export function leftovers(scope: SweepScope): ProcessEntry[] {
  const table = processTable();
  if (table === null) return [];
  if (scope.kind === 'below') {
    return descendantsOf(scope.root, table).filter((p) => isLive(p) && p.pid !== process.pid && p.pid > 1);
  }
  const now = new Map(table.map((p) => [p.pid, p]));
  // a pid seen earlier is the same process only if it started at the same moment
  const known = scope.processes.filter((p) => now.get(p.pid)?.start === p.start);
  // and whatever those started since
  const below = known.flatMap((p) => descendantsOf(p.pid, table));
  const all = new Map([...known, ...below].map((p) => [p.pid, now.get(p.pid) ?? p]));
  return [...all.values()].filter((p) => isLive(p) && p.pid !== process.pid && p.pid > 1);
}

export interface SweepResult {
  /** what was found and signalled */
  stopped: { pid: number; comm: string }[];
  /** SIGKILL was needed */
  forced: boolean;
  /** still alive when the sweep gave up (a process stuck in the kernel) */
  left: number[];
}

const POLL_MS = 25;
/** after SIGKILL, how long to wait for the kernel to take them */
const KILL_WAIT_MS = 2000;

/**
 * Stops every process of `scope`: SIGTERM, then SIGKILL for what is left after `graceMs`. Processes
 * that appear meanwhile (a daemon forking on SIGTERM) are signalled as they are seen. A second
 * signal to `run` (`hurry`) turns the rest of the grace period into an immediate SIGKILL.
 */
export async function sweep(
  scope: SweepScope,
  graceMs: number,
  hurry: () => boolean = () => false,
): Promise<SweepResult> {
  const stopped = new Map<number, string>();
  const signal = (list: readonly ProcessEntry[], sig: NodeJS.Signals): void => {
    for (const p of list) {
      try {
        process.kill(p.pid, sig);
        if (!stopped.has(p.pid)) stopped.set(p.pid, p.comm);
      } catch {
        // gone already
      }
    }
  };
  const result = (forced: boolean, left: number[]): SweepResult => ({
    stopped: [...stopped].map(([pid, comm]) => ({ pid, comm })),
    forced,
    left,
  });
  let found = leftovers(scope);
  if (found.length === 0) return result(false, []);
  const deadline = nowMs() + graceMs;
  while (found.length > 0 && nowMs() < deadline && !hurry()) {
    signal(
      found.filter((p) => !stopped.has(p.pid)),
      'SIGTERM',
    );
    await sleep(POLL_MS);
    found = leftovers(scope);
  }
  if (found.length === 0) return result(false, []);
  const killDeadline = nowMs() + KILL_WAIT_MS;
  while (found.length > 0 && nowMs() < killDeadline) {
    signal(found, 'SIGKILL');
    await sleep(POLL_MS);
    found = leftovers(scope);
  }
  return result(
    true,
    found.map((p) => p.pid),
  );
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
