/**
 * Supervision once everything is up: health monitors, then whatever comes first (a signal, a child's
 * exit, the embedded LLM failing its health checks) decides how `run` ends. Stop order is always the
 * app, then the LLM it uses. Ending normally (a signal, or the app finishing with exit code 0: a
 * finished job is not a crash) resolves; otherwise the error carries the exit status: 4 when the LLM
 * exited or became unhealthy, 5 when the app died.
 */
import { CodiError } from '../errors.js';
import { formatDuration } from '../text.js';
import { stopChildren, stopOrder, sweepLeftovers, type RunContext } from './context.js';
import { HealthMonitor } from './monitor.js';
import { describeExit, firstEnd, forwardedSignal, type EndReason, type StopResult } from './supervisor.js';

export type RunOutcome = 'signal' | 'app-finished';

export interface Ended {
  outcome: RunOutcome;
  children: StopResult[];
}

/** Supervises the children until the end; stops them before it resolves or throws. */
export async function supervise(ctx: RunContext): Promise<Ended> {
  const monitors = startMonitors(ctx);
  let end: EndReason;
  try {
    end = await firstEnd(
      stopOrder(ctx),
      ctx.trap,
      monitors.map((m) => m.fatal),
    );
  } finally {
    for (const m of monitors) m.stop();
  }
  return endOf(ctx, end);
}

/** A signal came while starting: what was started is stopped, and `run` ends as if stopped later. */
export async function stopEarly(ctx: RunContext): Promise<Ended> {
  const { trap } = ctx;
  ctx.report.info(`received ${trap.signal ?? 'a signal'} while starting: stopping`);
  const children = await stopChildren(ctx, stopOrder(ctx), forwardedSignal(trap.signal ?? 'SIGTERM'));
  return { outcome: 'signal', children };
}

/** An error thrown while starting leaves children behind: they are stopped before it is reported. */
export async function stopLeftovers(ctx: RunContext): Promise<void> {
  const children = stopOrder(ctx);
  const left = children.filter((c) => c.groupAlive());
  if (left.length > 0) await stopChildren(ctx, left, 'SIGTERM');
  else await sweepLeftovers(ctx);
  // nothing of theirs may keep run alive: a process outside their groups may hold their pipes
  await Promise.all(children.map((c) => c.release()));
}

function startMonitors(ctx: RunContext): HealthMonitor[] {
  const { config, report } = ctx;
  const monitors: HealthMonitor[] = [];
  const endpoint = config.llmEndpoint;
  if (config.healthIntervalMs > 0 && endpoint !== null) {
    const failAfter = config.llmMode === 'embedded' ? config.healthRetries : 0;
    monitors.push(new HealthMonitor('llm', endpoint, config.healthIntervalMs, failAfter, report.emit));
  }
  if (config.appHealthUrl !== null && ctx.children.app !== null) {
    const intervalMs = config.healthIntervalMs || 10_000;
    monitors.push(new HealthMonitor('app', config.appHealthUrl, intervalMs, 0, report.emit, true));
  }
  return monitors;
}

/** Stops what is left and turns the reason supervision ended into the outcome or the error. */
async function endOf(ctx: RunContext, end: EndReason): Promise<Ended> {
  const { config, report } = ctx;
  const { app, llm } = ctx.children;
  const order = stopOrder(ctx);
  const stop = (sig: NodeJS.Signals): Promise<StopResult[]> => stopChildren(ctx, order, sig);

  if (end.kind === 'signal') {
    const sig = forwardedSignal(end.signal);
    report.info(
      `received ${end.signal}: stopping ${order.map((c) => c.role).join(', then ')} (${sig}, SIGKILL after ${formatDuration(config.stopGraceMs)} each)`,
    );
    return { outcome: 'signal', children: await stop(sig) };
  }
  if (end.kind === 'child-exit' && end.role === 'app') {
    const finished = end.exit.code === 0;
    report.info(`app ${describeExit(end.exit)}${llm ? ': stopping the LLM' : ''}`);
    const children = await stop('SIGTERM');
    if (finished) return { outcome: 'app-finished', children };
    // its last lines may still be in the pipe: the error shows them
    await app?.drained;
    const tail = app?.tail(20) ?? [];
    throw new CodiError(
      'APP_EXITED',
      `the app ${describeExit(end.exit)}${llm ? '; the LLM was stopped' : ''}`,
      {
        details: { exit: end.exit, tail, children },
      },
    );
  }
  if (end.kind === 'child-exit') {
    await llm?.drained;
    const tail = llm?.tail(20) ?? [];
    report.info(`llama-server ${describeExit(end.exit)}${app ? ': stopping the app' : ''}`);
    const children = await stop('SIGTERM');
    const lines = tail
      .slice(-10)
      .map((l) => `    ${l}`)
      .join('\n');
    throw new CodiError(
      'LLM_EXITED',
      `llama-server ${describeExit(end.exit)} while serving${app ? '; the app was stopped' : ''}; its last lines:\n${lines}`,
      {
        hint: 'the [llm] lines above say why (out of memory is a common one: see dmesg)',
        details: { exit: end.exit, tail, children },
      },
    );
  }
  report.info(`${end.detail}: stopping ${order.map((c) => c.role).join(', then ')}`);
  const children = await stop('SIGTERM');
  throw new CodiError('LLM_UNHEALTHY', end.detail, {
    details: { children },
  });
}
