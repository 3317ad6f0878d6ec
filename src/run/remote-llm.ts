/**
 * A remote LLM (LLM_ENDPOINT set): nothing is started; the endpoint must answer `GET /health` 200, and
 * the LoRA adapters it serves are recorded when it lists them.
 */
import { CodiError } from '../errors.js';
import { nowMs } from '../clock.js';
import { redactUrl } from '../redact.js';
import { checkApp } from './app.js';
import type { RunContext } from './context.js';
import type { LlmReady } from './environment.js';
import { loraAdapters, probeHealth } from './llama-server.js';
import { sleep } from './supervisor.js';

/** The remote LLM checked; null when a signal came first. */
export async function connectRemoteLlm(ctx: RunContext, endpoint: string): Promise<LlmReady | null> {
  await checkApp(ctx);
  const result = await checkRemote(ctx, endpoint);
  if (result === null) return null;
  const lora = await loraAdapters(endpoint, 5000, { apiKey: ctx.config.llmApiKey }).catch(() => null);
  ctx.report.info(
    `remote LLM healthy: GET ${redactUrl(endpoint)}/health 200${lora ? `; it serves ${lora.length} LoRA adapter(s): ${lora.map((l) => `${l.path} ×${l.scale}`).join(', ')}` : ''}`,
  );
  return { adapter: null, llamaServer: null, lora, healthyMs: result.ms };
}

/** A remote LLM_ENDPOINT: GET /health, retried LLM_HEALTH_RETRIES times 1 s apart (exit 4 if never 200). */
async function checkRemote(ctx: RunContext, endpoint: string): Promise<{ ms: number } | null> {
  const { config, trap } = ctx;
  const started = nowMs();
  let last = '';
  for (let attempt = 1; attempt <= config.healthRetries; attempt++) {
    if (trap.stopRequested()) return null;
    const probe = await probeHealth(endpoint, 2000, { signal: trap.stopping, apiKey: config.llmApiKey });
    if (trap.stopRequested()) return null;
    if (probe.ok) return { ms: Math.round(nowMs() - started) };
    last = probe.status === null ? probe.detail : `HTTP ${probe.status} ${probe.detail}`;
    ctx.report.info(`remote LLM ${redactUrl(endpoint)}: attempt ${attempt}/${config.healthRetries}: ${last}`);
    if (attempt < config.healthRetries) await Promise.race([sleep(1000), trap.received]);
  }
  throw new CodiError(
    'LLM_UNREACHABLE',
    `LLM_ENDPOINT ${redactUrl(endpoint)} not reachable: GET /health did not answer 200 in ${config.healthRetries} attempt(s) (last: ${last})`,
    { details: { endpoint: redactUrl(endpoint), last } },
  );
}
