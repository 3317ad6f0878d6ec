/**
 * `run`, the container entrypoint, step by step: configuration → paths → verify → GGUF (cached) →
 * llama-server → GET /health → GET /lora-adapters → LLM_ENDPOINT → environment.json → the app →
 * supervision. Everything the user should see is reported through `onEvent` (the command renders it);
 * the children's own lines go to `output`, prefixed.
 *
 * Exit status: a CodiError ends it (1 invalid adapter, 2 configuration, 3 environment, 4 LLM failed or
 * unhealthy, 5 the app died); a normal return is exit 0: stopped by a signal, or the app finished with
 * exit code 0 (a finished job is not a crash; see docs/notes-run.md).
 */
import { nowMs } from '../clock.js';
import { checkAirgap, type LlmMode } from './config.js';
import { checkApp, startApp } from './app.js';
import { createContext, type RunContext, type RunOptions } from './context.js';
import { startEmbeddedLlm } from './embedded-llm.js';
import {
  environmentFile,
  removeEnvironment,
  writeEnvironment,
  type EnvironmentRecord,
  type LlmReady,
} from './environment.js';
import { connectRemoteLlm } from './remote-llm.js';
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
    announce(ctx);
    await removeEnvironment(ctx.config);
    const llm = await startLlm(ctx);
    if (llm === null) return result(await stopEarly(ctx), null);
    const record = await writeEnvironment(ctx, llm);
    if (ctx.trap.stopRequested()) return result(await stopEarly(ctx), record);
    await startApp(ctx);
    return result(await supervise(ctx), record);
  } finally {
    await stopLeftovers(ctx);
    ctx.trap.dispose();
  }
}

/** The configuration, what is wrong with where `run` runs, and settings that cannot work together. */
function announce(ctx: RunContext): void {
  ctx.report.emit({ kind: 'config', config: ctx.config });
  if (process.pid === 1) {
    ctx.report.warn(
      'running as PID 1 without an init: orphaned grandchildren will not be reaped',
      'build codi-adapter with a C compiler (dist/codi-init), put tini on PATH, or start run under an init (docker run --init)',
    );
  }
  checkAirgap(ctx.config);
}

/** The LLM as configured: embedded, remote or none; null when a signal came while starting it. */
async function startLlm(ctx: RunContext): Promise<LlmReady | null> {
  const { config } = ctx;
  const endpoint = config.llmEndpoint;
  if (config.llmMode === 'embedded' && endpoint !== null) return startEmbeddedLlm(ctx, endpoint);
  if (config.llmMode === 'remote' && endpoint !== null) return connectRemoteLlm(ctx, endpoint);
  await checkApp(ctx);
  ctx.report.info('LLM disabled (LLM_ENABLED=false): starting the app without one');
  return { adapter: null, llamaServer: null, lora: null, healthyMs: null };
}
