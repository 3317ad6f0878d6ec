/**
 * `run`, the container entrypoint, step by step: configuration → paths → verify → GGUF (cached) →
 * llama-server on loopback → GET /health → GET /lora-adapters → the gateway on LLM_HOST:LLM_PORT →
 * LLM_ENDPOINT → environment.json → the app → supervision. Everything the user should see is reported through `onEvent` (the command renders it);
 * the children's own lines go to `output`, prefixed.
 *
 * Exit status: a CodiError ends it (1 invalid adapter, 2 configuration, 3 environment, 4 LLM failed or
 * unhealthy, 5 the app died); a normal return is exit 0: stopped by a signal, or the app finished with
 * exit code 0 (a finished job is not a crash; see docs/notes-run.md).
 */
import { nowMs } from '../clock.js';
import { CodiError } from '../errors.js';
import { checkAirgap, type LlmMode } from './config.js';
import { appEnvironment, checkApp, startApp } from './app.js';
import { createContext, type RunContext, type RunOptions } from './context.js';
import { routeText } from './egress.js';
import { servedSelection } from '../gateway/served-set.js';
import { startGatewayLlm } from './gateway-run.js';
import {
  environmentFile,
  removeEnvironment,
  writeEnvironment,
  type EnvironmentRecord,
  type LlmReady,
} from './environment.js';
import { servedSetArgs } from './served-llm.js';
import { connectRemoteLlm } from './remote-llm.js';
import { checkSpawnable } from './spawn-limits.js';
import { prepareStateDir } from './state-dir.js';
import { stopEarly, stopLeftovers, supervise, type Ended, type RunOutcome } from './supervise.js';
import type { StopResult } from './supervisor.js';

export type { RunEvent, RunOptions } from './context.js';
export { ENVIRONMENT_FILE, type EnvironmentRecord } from './environment.js';
export type { RunOutcome } from './supervise.js';

export interface RunResult {
  ok: true;
  exitCode: 0;
  outcome: RunOutcome;
  signal: NodeJS.Signals | null;
  mode: LlmMode;
  endpoint: string | null;
  environmentFile: string | null;
  environment: EnvironmentRecord | null;
  children: StopResult[];
  durationMs: number;
}

export async function runServices(options: RunOptions): Promise<RunResult> {
  const started = nowMs();
  const ctx = createContext(options);
  const result = (ended: Ended, record: EnvironmentRecord | null): RunResult => ({
    ok: true,
    exitCode: 0,
    outcome: ended.outcome,
    signal: ctx.trap.signal,
    mode: ctx.config.llmMode,
    endpoint: record?.llm.endpoint ?? null,
    environmentFile: record ? environmentFile(ctx.config) : null,
    environment: record,
    children: ended.children,
    durationMs: Math.round(nowMs() - started),
  });
  try {
    await announce(ctx);
    // before anything is started: finding out only when the LLM is up would waste the model load
    await prepareStateDir(ctx.config.stateDir);
    await removeEnvironment(ctx.config);
    const llm = await startLlm(ctx);
    if (llm === null) return result(await stopEarly(ctx), null);
    const record = await writeEnvironment(ctx, llm);
    if (ctx.trap.stopRequested()) return result(await stopEarly(ctx), record);
    await startApp(ctx);
    return result(await supervise(ctx), record);
  } finally {
    await ctx.gateway?.close();
    await stopLeftovers(ctx);
    ctx.trap.dispose();
  }
}

/** The configuration, what is wrong with where `run` runs, and settings that cannot work together. */
async function announce(ctx: RunContext): Promise<void> {
  ctx.report.emit({ kind: 'config', config: ctx.config });
  if (ctx.init === null && process.platform === 'linux') {
    ctx.report.warn(
      process.pid === 1
        ? "running as PID 1 without an init: orphaned grandchildren will not be reaped, and a process that leaves the app's session may outlive run"
        : "not running under an init that adopts orphans: a process that leaves the app's session (setsid, a daemon) may outlive run",
      'build codi-adapter with a C compiler (npm run build makes dist/codi-init), or put tini on PATH',
    );
  }
  await checkAirgap(ctx.config);
  checkEgress(ctx);
  checkChildrenSpawnable(ctx);
}

/**
 * The truth about the air gap: proxy variables stop well-behaved clients only. When the network lets
 * this process out (a default route, a route beyond the allowlist), AIRGAP=true warns with the fix
 * and AIRGAP=strict refuses to start.
 */
function checkEgress(ctx: RunContext): void {
  const { config, egress } = ctx;
  if (!config.airgap || (egress.known && egress.outside.length === 0)) return;
  // a default route first: the message names it as such
  const outside = [...egress.outside].sort(
    (a, b) => Number(b.block.prefix === 0) - Number(a.block.prefix === 0),
  );
  const routes = outside.slice(0, 4).map(routeText).join('; ');
  const more = egress.outside.length > 4 ? ` and ${egress.outside.length - 4} more` : '';
  const what = egress.known
    ? `the network lets this process reach beyond loopback and the allowlist (${egress.defaultRoute ? 'a default route: ' : ''}${routes}${more})`
    : 'whether the network lets this process out cannot be told here (no /proc/net/route)';
  if (config.airgapMode === 'strict') {
    throw new CodiError('AIRGAP_NOT_ENFORCED', `AIRGAP=strict, and ${what}`, {
      details: { routes: egress.outside.map(routeText) },
    });
  }
  ctx.report.warn(
    `air gap not enforced: ${what}; AIRGAP=true only gives the children proxy variables, which raw sockets, DNS and clients that ignore them pass by`,
    'enforce it in the network: docker run --network none, an internal network whose address block is in AIRGAP_ALLOWLIST, or a Kubernetes NetworkPolicy (docs/reference.md, "The air gap"); AIRGAP=strict refuses to start until then',
  );
}

/**
 * What the children will be given must fit Linux's limits (an allowlist large enough to break them
 * would otherwise be found only when llama-server or the app is spawned).
 */
function checkChildrenSpawnable(ctx: RunContext): void {
  const { config } = ctx;
  if (config.llmMode === 'embedded') {
    // the longest port a loopback one can be; the set's size is not known yet: one adapter per --lora
    const args = servedSetArgs(ctx, 65_535, 1);
    checkSpawnable('llama-server', [config.llamaServerBin, ...args], ctx.childEnv);
  }
  if (config.app) checkSpawnable('the app', config.app.argv, appEnvironment(ctx));
}

/** The LLM as configured: embedded, remote or none; null when a signal came while starting it. */
async function startLlm(ctx: RunContext): Promise<LlmReady | null> {
  const { config } = ctx;
  const endpoint = config.llmEndpoint;
  if (config.llmMode === 'embedded' && endpoint !== null) {
    const selection = (await servedSelection(config)) ?? { kind: 'single' };
    return startGatewayLlm(ctx, selection);
  }
  if (config.llmMode === 'remote' && endpoint !== null) return connectRemoteLlm(ctx, endpoint);
  await checkApp(ctx);
  ctx.report.info('LLM disabled (LLM_ENABLED=false): starting the app without one');
  return { adapter: null, llamaServer: null, lora: null, healthyMs: null };
}
