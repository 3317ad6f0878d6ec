/**
 * Linux's limits on what a new program is given (fs/exec.c): each argument or `NAME=value` string
 * at most MAX_ARG_STRLEN (32 pages), and all of them with their pointers at most a quarter of the
 * stack limit (no more than 6 MiB, no less than 128 KiB). Past either, execve fails with E2BIG. A
 * large AIRGAP_ALLOWLIST is the usual cause: the children get it three times (the variable itself,
 * NO_PROXY and no_proxy). `run` checks the children's environment before it starts anything, and
 * turns an E2BIG at spawn into the same error (exit 3) naming the variable to shorten.
 */
import { readFileSync } from 'node:fs';
import { CodiError } from '../errors.js';
import { formatBytes, thousands } from '../text.js';

const PAGE = 4096;
/** the longest single argument or environment string, its NUL included */
export const MAX_ARG_STRLEN = 32 * PAGE;
const MIN_ARG_MAX = 32 * PAGE;
const MAX_ARG_MAX = 6 * 1024 * 1024;
const POINTER = 8;

/** The variables `run` makes for its children, and the setting each one comes from. */
const SOURCE: Readonly<Record<string, string>> = {
  NO_PROXY: 'AIRGAP_ALLOWLIST',
  no_proxy: 'AIRGAP_ALLOWLIST',
};

/** The soft stack limit from /proc/self/limits; null when unlimited or unknown. */
function stackLimit(): number | null {
  try {
    const limits = readFileSync('/proc/self/limits', 'utf8');
    const m = /^Max stack size\s+(\S+)/mu.exec(limits);
    return m?.[1] === undefined || m[1] === 'unlimited' ? null : Number(m[1]);
  } catch {
    return null;
  }
}

/** How many bytes of strings and pointers a new program may be given here. */
export function argMax(stack: number | null = stackLimit()): number {
  const quarter = stack === null ? MAX_ARG_MAX : Math.floor(stack / 4);
  return Math.max(MIN_ARG_MAX, Math.min(MAX_ARG_MAX, quarter));
}

interface Entry {
  name: string;
  bytes: number;
}

function entries(argv: readonly string[], env: NodeJS.ProcessEnv): { args: Entry[]; vars: Entry[] } {
  const size = (s: string): number => Buffer.byteLength(s) + 1;
  return {
    args: argv.map((a, i) => ({ name: `argument ${i}`, bytes: size(a) })),
    vars: Object.entries(env)
      .filter((e): e is [string, string] => e[1] !== undefined)
      .map(([k, v]) => ({ name: k, bytes: size(`${k}=${v}`) })),
  };
}

/** What to tell the user about a variable: where it comes from, and its size. */
function described(e: Entry, exact = false): string {
  const from = SOURCE[e.name];
  const size = exact ? `${thousands(e.bytes)} bytes` : formatBytes(e.bytes);
  return `${e.name}${from ? ` (made from ${from})` : ''} is ${size}`;
}

/** Why `argv` with `env` cannot be executed here, or null when it fits. */
export function spawnProblem(
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
  limit: number = argMax(),
): Problem | null {
  const { args, vars } = entries(argv, env);
  const tooLong = [...vars, ...args].find((e) => e.bytes > MAX_ARG_STRLEN);
  if (tooLong) {
    const setting = SOURCE[tooLong.name] ?? tooLong.name;
    return {
      message: `${described(tooLong, true)}, longer than one ${tooLong.name.startsWith('argument') ? 'argument' : 'environment variable'} may be (${thousands(MAX_ARG_STRLEN)} bytes)`,
      variable: setting,
      single: true,
    };
  }
  const all = [...vars, ...args];
  const total = all.reduce((n, e) => n + e.bytes + POINTER, POINTER * 2);
  if (total <= limit) return null;
  const largest = [...vars].sort((a, b) => b.bytes - a.bytes).slice(0, 3);
  return {
    message: `the environment and command line come to ${formatBytes(total)}, more than a program may be given here (${formatBytes(limit)}, a quarter of the stack limit); the largest variables: ${largest.map((e) => described(e)).join('; ')}`,
    variable: largest[0] ? (SOURCE[largest[0].name] ?? largest[0].name) : null,
    single: false,
  };
}

interface Problem {
  message: string;
  /** the setting or variable to shorten */
  variable: string | null;
  /** one string over the limit (which no stack limit changes) */
  single: boolean;
}

function tooLargeError(role: string, problem: Problem): CodiError {
  const what = problem.variable ?? 'the environment';
  const how =
    problem.variable === 'AIRGAP_ALLOWLIST'
      ? ' (list domains with a leading dot, ".example.com", rather than each host)'
      : '';
  return new CodiError('ENV_TOO_LARGE', `cannot start ${role}: ${problem.message}`, {
    hint: `shorten ${what}${how}${problem.single ? '' : ', or raise the stack limit (ulimit -s)'}`,
    details: { variable: problem.variable },
  });
}

/** Throws ENV_TOO_LARGE (exit 3) when `argv` with `env` cannot be executed here. */
export function checkSpawnable(role: string, argv: readonly string[], env: NodeJS.ProcessEnv): void {
  const problem = spawnProblem(argv, env);
  if (problem) throw tooLargeError(role, problem);
}

/** The error for an E2BIG that spawn reported anyway (a limit this module does not know). */
export function spawnTooLarge(role: string, argv: readonly string[], env: NodeJS.ProcessEnv): CodiError {
  return tooLargeError(
    role,
    spawnProblem(argv, env, 0) ?? { message: 'the system refused it (E2BIG)', variable: null, single: false },
  );
}
