/**
 * The embedded LLM: the adapter checked and converted, llama-server started on the base model with it,
 * `GET /health` until ready (bounded by LLM_READY_TIMEOUT), and `GET /lora-adapters` listing the adapter
 * at scale 1. A signal while starting ends the step with null: `run` then stops what it started.
 */
import { isCodiError } from '../errors.js';
import { nowMs } from '../clock.js';
import { requireUnchanged, verifyAndConvert, type ServableAdapter } from './adapter.js';
import { checkApp } from './app.js';
import type { RunContext } from './context.js';
import type { LlamaServerRecord, LlmReady } from './environment.js';
import { formatDuration } from '../text.js';
import {
  abortedPromise,
  assertPortFree,
  llamaServerArgs,
  llamaServerVersion,
  parseEvalTiming,
  requireLoraServed,
  resolveLlamaServer,
  SLOW_HINT,
  waitUntilHealthy,
  type EvalTiming,
  type LlamaServerVersion,
  type LoraAdapterInfo,
} from './llama-server.js';
import { validatePaths } from './paths.js';
import { SupervisedChild, type LineSink } from './supervisor.js';

export async function startEmbeddedLlm(ctx: RunContext, endpoint: string): Promise<LlmReady | null> {
  const { config } = ctx;
  const adapterDir = await validatePaths(config, ctx.report.emit);
  // the binary is looked up while the adapter is verified; a missing one is reported in step order
  const binary = resolveLlamaServer(config.llamaServerBin, ctx.env);
  binary.catch(() => undefined);
  const work = verifyAndConvert(ctx, adapterDir);
  const adapter = await untilStopped(ctx, work);
  if (adapter === null || ctx.trap.stopRequested()) {
    void work.then(
      (a) => a.file.close(),
      () => undefined,
    );
    return null;
  }
  try {
    const binPath = await binary;
    // the app's executable is looked up before a model is loaded for it
    await checkApp(ctx);
    await assertPortFree(config.llmHost, config.llmPort);
    if (ctx.trap.stopRequested()) return null;
    const llm = await startLlamaServer(ctx, binPath, adapter);
    const healthyMs = await awaitHealthy(ctx, llm, endpoint, binPath);
    if (healthyMs === null) return null;
    const served = await checkServed(ctx, endpoint, binPath, SERVED_GGUF);
    // what llama-server read is what was proven: the file was not written to meanwhile
    await requireUnchanged(adapter.file);
    return { adapter: adapter.record, llamaServer: served.llamaServer, lora: served.lora, healthyMs };
  } finally {
    await adapter.file.close();
  }
}

/** The proven GGUF as llama-server opens it: the file `run` opened and proved, its descriptor 3. */
const SERVED_GGUF = '/dev/fd/3';

async function startLlamaServer(
  ctx: RunContext,
  binPath: string,
  adapter: ServableAdapter,
): Promise<SupervisedChild> {
  const { config, report } = ctx;
  const wrapper = await ctx.wrapper;
  if (wrapper === null && process.platform === 'linux') {
    report.warn(
      'setpriv (util-linux) with --pdeathsig not found: if run is SIGKILLed, its children keep running',
      'install util-linux, or run under a container runtime (the PID namespace ends with run)',
    );
  }
  const tuned = Object.keys(ctx.env).filter((k) => k.startsWith('LLAMA_ARG_'));
  if (tuned.length > 0)
    report.info(`llama-server also reads ${tuned.join(', ')} (command-line arguments win)`);
  const args = llamaServerArgs({
    model: config.baseModelPath,
    lora: SERVED_GGUF,
    host: config.llmHost,
    port: config.llmPort,
    threads: config.threads,
  });
  report.info(`starting llama-server ${args.join(' ')} (${SERVED_GGUF}: ${adapter.gguf}, as proven)`);
  const sink = slowInferenceWatch(ctx.output, config.slowTokensPerSecond, (timing) => {
    report.warn(
      `slow inference: llama-server generated ${timing.tokens} tokens at ${timing.tokensPerSecond.toFixed(1)} tokens/s (below LLM_SLOW_TOKENS_PER_SECOND=${config.slowTokensPerSecond})`,
      SLOW_HINT,
    );
  });
  // the key in llama-server's environment, not on its command line (where ps would show it)
  const env = config.llmApiKey === null ? ctx.childEnv : { ...ctx.childEnv, LLAMA_API_KEY: config.llmApiKey };
  const llm = await SupervisedChild.start(
    { role: 'llm', command: binPath, args, env, wrapper, fds: [adapter.file.fd] },
    sink,
  );
  ctx.children.llm = llm;
  return llm;
}

/**
 * `work`, or null as soon as a signal comes: `run` then stops at once, and the work, told by the
 * trap's abort signal, ends by itself (a conversion removes the GGUF it was writing).
 */
export async function untilStopped<T>(ctx: RunContext, work: Promise<T>): Promise<T | null> {
  work.catch(() => undefined);
  return Promise.race([work, abortedPromise(ctx.trap.stopping).then(() => null)]);
}

/** The time to the first `GET /health` 200, or null when a signal came first. */
async function awaitHealthy(
  ctx: RunContext,
  llm: SupervisedChild,
  endpoint: string,
  binPath: string,
): Promise<number | null> {
  let healthy: Awaited<ReturnType<typeof waitUntilHealthy>>;
  try {
    healthy = await waitUntilHealthy(endpoint, {
      timeoutMs: ctx.config.readyTimeoutMs,
      child: llm,
      signal: ctx.trap.stopping,
    });
  } catch (e) {
    // a binary that cannot even print its version is broken (missing libraries…): exit 3, not 4
    const broken =
      isCodiError(e) && e.code === 'LLM_EXITED'
        ? await llamaServerVersion(binPath, ctx.env).then(
            () => null,
            (v: unknown) => v,
          )
        : null;
    throw broken ?? e;
  }
  if (!healthy.healthy) return null;
  ctx.report.info(
    `LLM healthy: GET ${endpoint}/health 200 after ${formatDuration(healthy.ms)} (pid ${llm.pid})`,
  );
  return healthy.ms;
}

/**
 * The adapter must be served at scale 1. `--version` (for environment.json) runs meanwhile: it is not
 * needed to start, and would only compete with the model load for the CPU.
 */
async function checkServed(
  ctx: RunContext,
  endpoint: string,
  binPath: string,
  gguf: string,
): Promise<{ lora: LoraAdapterInfo[]; llamaServer: LlamaServerRecord }> {
  const versionPromise = llamaServerVersion(binPath, ctx.env);
  versionPromise.catch(() => undefined);
  const lora = await requireLoraServed(endpoint, gguf, { apiKey: ctx.config.llmApiKey });
  ctx.report.info(`LLM serves the adapter at scale 1 (${gguf})`);
  const version = await versionPromise.catch((e: unknown): LlamaServerVersion => ({
    text: `unknown: ${e instanceof Error ? e.message : String(e)}`,
    version: null,
    build: null,
    commit: null,
  }));
  ctx.report.info(`llama-server ${binPath}: ${version.text.split('\n')[0] ?? version.text}`);
  return {
    lora,
    llamaServer: { path: binPath, version: version.text, build: version.build, commit: version.commit },
  };
}

/** Slow-inference reports at most this often: a busy server logs a timing line per request. */
const SLOW_REPORT_EVERY_MS = 5 * 60_000;

/**
 * Passes llama-server's lines on, and calls `onSlow` when one of its timing lines shows generation
 * below `minTokensPerSecond` (the LLM is ready but slow); short answers (under 4 tokens) are too noisy
 * to judge. 0 turns it off.
 */
export function slowInferenceWatch(
  sink: LineSink,
  minTokensPerSecond: number,
  onSlow: (timing: EvalTiming) => void,
  now: () => number = nowMs,
): LineSink {
  if (minTokensPerSecond <= 0) return sink;
  let last = -Infinity;
  return (role, line) => {
    sink(role, line);
    const timing = parseEvalTiming(line);
    if (timing === null || timing.tokens < 4 || timing.tokensPerSecond >= minTokensPerSecond) return;
    if (now() - last < SLOW_REPORT_EVERY_MS) return;
    last = now();
    onSlow(timing);
  };
}
