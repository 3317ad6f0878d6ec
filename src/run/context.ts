/**
 * What the steps of `run` share: the configuration, the environments, how progress is reported, the
 * signal trap, and the children started so far (whatever ends `runServices` stops them).
 */
import type { AdapterStatus } from '../catalog/volume.js';
import type { Finding } from '../findings.js';
import { airgapProxyEnv, type RunConfig } from './config.js';
import {
  descendantsOf,
  processTable,
  readProcess,
  sweep,
  type ProcessEntry,
  type SweepScope,
} from './descendants.js';
import { detectEgress, type Egress } from './egress.js';
import { initParent, INIT_VARIABLES } from './init.js';
import {
  describeExit,
  parentDeathWrapper,
  SignalTrap,
  stopInOrder,
  type LineSink,
  type StopResult,
  type SupervisedChild,
} from './supervisor.js';

export type RunEvent =
  | { kind: 'config'; config: RunConfig }
  | { kind: 'adapter-status'; status: AdapterStatus; reason: string; hint?: string }
  /** what verification found wrong, when it failed */
  | { kind: 'findings'; findings: Finding[] }
  | { kind: 'log'; level: 'info' | 'warn'; message: string; hint?: string };

export interface RunOptions {
  config: RunConfig;
  onEvent?: (event: RunEvent) => void;
  /** the children's lines; default: `[role] line` on stdout */
  output?: LineSink;
  /** the environment the children inherit (default: process.env) */
  env?: NodeJS.ProcessEnv;
  /** the init adopting orphans below `run` (default: the parent, when it is the init run was started under) */
  init?: number | null;
  /** what the network lets out (default: read from /proc) */
  egress?: Egress;
}

export interface Reporter {
  readonly emit: (event: RunEvent) => void;
  readonly info: (message: string) => void;
  readonly warn: (message: string, hint?: string) => void;
}

export interface RunContext {
  readonly config: RunConfig;
  /** the environment `run` was given */
  readonly env: NodeJS.ProcessEnv;
  /** what the children inherit: `env` with the air-gap proxy */
  readonly childEnv: NodeJS.ProcessEnv;
  readonly report: Reporter;
  /** the children's lines */
  readonly output: LineSink;
  readonly trap: SignalTrap;
  /** the command prefix that makes a child die with `run`; looked up while the adapter is checked */
  readonly wrapper: Promise<readonly string[] | null>;
  /** the children started so far */
  readonly children: { llm: SupervisedChild | null; app: SupervisedChild | null };
  /** the init `run` runs under, which adopts the orphans below it (src/run/init.ts); null without one */
  readonly init: number | null;
  /** what the network lets out, read at start (src/run/egress.ts) */
  readonly egress: Egress;
}

const defaultOutput: LineSink = (role, line) => {
  process.stdout.write(`[${role}] ${line}\n`);
};

export function createContext(options: RunOptions): RunContext {
  // installed first: a SIGTERM during verification must stop us cleanly, not kill us half-way
  const trap = new SignalTrap();
  const { config } = options;
  const env = options.env ?? process.env;
  const emit = options.onEvent ?? (() => undefined);
  const childEnv: NodeJS.ProcessEnv = Object.fromEntries(
    Object.entries({ ...env, ...airgapProxyEnv(config) }).filter(
      ([name]) => !(INIT_VARIABLES as readonly string[]).includes(name),
    ),
  );
  return {
    config,
    env,
    childEnv,
    report: {
      emit,
      info: (message) => {
        emit({ kind: 'log', level: 'info', message });
      },
      warn: (message, hint) => {
        emit({ kind: 'log', level: 'warn', message, ...(hint ? { hint } : {}) });
      },
    },
    output: options.output ?? defaultOutput,
    trap,
    wrapper: parentDeathWrapper(env),
    children: { llm: null, app: null },
    init: options.init === undefined ? initParent(env) : options.init,
    egress: options.egress ?? detectEgress(config.airgapAllowlist),
  };
}

/** The children still to stop, in stop order: the app before the LLM it uses. */
export function stopOrder(ctx: RunContext): SupervisedChild[] {
  return [ctx.children.app, ctx.children.llm].filter((c): c is SupervisedChild => c !== null);
}

/**
 * Stops `children` in order, each with the grace period, and says how each one ended; then stops
 * whatever is left below `run` (a daemon the app forked, a process holding its pipes).
 */
export async function stopChildren(
  ctx: RunContext,
  children: readonly SupervisedChild[],
  sig: NodeJS.Signals,
): Promise<StopResult[]> {
  const scope = sweepScope(ctx, children);
  const results = await stopInOrder(children, ctx.config.stopGraceMs, sig, ctx.trap, (c, r) => {
    ctx.report.info(stoppedText(c, r));
  });
  await sweepLeftovers(ctx, scope);
  return results;
}

/**
 * Where what is left will be: below the init, which adopts every orphan; without one, the process
 * trees of the children as they are now, before stopping them orphans their members.
 */
function sweepScope(ctx: RunContext, children: readonly SupervisedChild[]): SweepScope {
  if (ctx.init !== null) return { kind: 'below', root: ctx.init };
  const table = processTable() ?? [];
  const processes: ProcessEntry[] = [];
  for (const child of children) {
    const self = readProcess(child.pid);
    if (self) processes.push(self);
    processes.push(...descendantsOf(child.pid, table));
  }
  return { kind: 'known', processes };
}

/** Stops what is left in `scope` (SIGTERM, SIGKILL after the grace period) and says what it was. */
export async function sweepLeftovers(
  ctx: RunContext,
  scope: SweepScope = sweepScope(ctx, []),
): Promise<void> {
  const result = await sweep(scope, ctx.config.stopGraceMs, () => ctx.trap.count >= 2);
  if (result.stopped.length === 0) return;
  const names = result.stopped.map((p) => `${p.pid} (${p.comm})`).join(', ');
  ctx.report.info(
    `stopped ${processes(result.stopped.length)} left behind: ${names}${result.forced ? ' (SIGKILL after the grace period)' : ''}`,
  );
  if (result.left.length > 0) {
    ctx.report.warn(
      `${processes(result.left.length)} did not die even by SIGKILL: ${result.left.join(', ')}`,
      'a process stuck in the kernel (D state, e.g. on a hung network file system) ends when its I/O does',
    );
  }
}

function stoppedText(child: SupervisedChild, r: StopResult): string {
  const name = child.role === 'llm' ? 'llama-server' : 'app';
  if (r.alreadyExited) return `${name} (pid ${r.pid}) ${describeExit(r.exit)}`;
  return `${name} (pid ${r.pid}) stopped: ${describeExit(r.exit)}${r.forced ? ' (SIGKILL after the grace period)' : ''}`;
}

function processes(n: number): string {
  return `${n} process${n === 1 ? '' : 'es'}`;
}
