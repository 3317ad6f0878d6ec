/**
 * What the embedded LLM's steps share: waiting on work until a signal comes, and the slow-inference
 * watch on llama-server's output (src/run/served-llm.ts starts llama-server).
 */
import { nowMs } from '../clock.js';
import type { RunContext } from './context.js';
import { abortedPromise, parseEvalTiming, type EvalTiming } from './llama-server.js';
import type { LineSink } from './supervisor.js';

/**
 * `work`, or null as soon as a signal comes: `run` then stops at once, and the work, told by the
 * trap's abort signal, ends by itself (a conversion removes the GGUF it was writing).
 */
export async function untilStopped<T>(ctx: RunContext, work: Promise<T>): Promise<T | null> {
  work.catch(() => undefined);
  return Promise.race([work, abortedPromise(ctx.trap.stopping).then(() => null)]);
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
