/**
 * What the steps of `run` share: the configuration, the environments, how progress is reported, the
 * signal trap, and the children started so far (whatever ends `runServices` stops them).
 */
import type { AdapterStatus } from '../catalog/volume.js';
import type { Finding } from '../findings.js';
import { airgapProxyEnv, type RunConfig } from './config.js';
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
  return {
    config,
    env,
    childEnv: { ...env, ...airgapProxyEnv(config) },
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
  };
}

/** The children still to stop, in stop order: the app before the LLM it uses. */
export function stopOrder(ctx: RunContext): SupervisedChild[] {
  return [ctx.children.app, ctx.children.llm].filter((c): c is SupervisedChild => c !== null);
}

/** Stops `children` in order, each with the grace period, and says how each one ended. */
export function stopChildren(
  ctx: RunContext,
  children: readonly SupervisedChild[],
  sig: NodeJS.Signals,
): Promise<StopResult[]> {
  return stopInOrder(children, ctx.config.stopGraceMs, sig, ctx.trap, (c, r) => {
    ctx.report.info(stoppedText(c, r));
  });
}

function stoppedText(child: SupervisedChild, r: StopResult): string {
  const name = child.role === 'llm' ? 'llama-server' : 'app';
  if (r.alreadyExited) return `${name} (pid ${r.pid}) ${describeExit(r.exit)}`;
  return `${name} (pid ${r.pid}) stopped: ${describeExit(r.exit)}${r.forced ? ' (SIGKILL after the grace period)' : ''}`;
}
