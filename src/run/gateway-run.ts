/**
 * `run` serving a set of adapters: the served set made ready and started (src/run/served-llm.ts),
 * the gateway in front of it (src/gateway/server.ts), and reloads. The gateway runs in `run`'s own
 * process: one process less to supervise and start, and its cost is measured by bench/gateway.js.
 *
 * A reload (SIGHUP, `codi-adapter reload`, a change seen every CATALOG_POLL_INTERVAL) prepares the
 * new set, starts a second llama-server with it on another loopback port, waits for its health and
 * its adapter list, then switches the gateway in one assignment; the old server finishes the
 * requests it has (bounded by DRAIN_TIMEOUT) and is stopped. If anything fails before the switch,
 * the old server keeps serving. Reloads run one at a time; those asked for meanwhile become one
 * more, which sees the latest catalog. Only the server serving now is supervised: one stopped after
 * a switch is not a crash, the current one exiting is (exit 4, as with one adapter).
 */
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../atomic.js';
import { nowMs } from '../clock.js';
import { isCodiError } from '../errors.js';
import { GatewayMetrics, parseUpstreamLoad } from '../gateway/metrics.js';
import { startGateway, type Gateway, type HealthAnswer } from '../gateway/server.js';
import { modelsList } from '../gateway/models.js';
import { CatalogWatch } from '../gateway/catalog-watch.js';
import { RELOAD_FILE, RUN_FILE, type ReloadOutcome } from '../gateway/reload-client.js';
import { formatDuration } from '../text.js';
import { checkApp } from './app.js';
import type { RunContext } from './context.js';
import type { LlmReady } from './environment.js';
import { writeEnvironment } from './environment.js';
import {
  assertPortFree,
  llamaServerVersion,
  portError,
  probeHealth,
  resolveLlamaServer,
} from './llama-server.js';
import { httpGet } from './http.js';
import { launchSet, prepareSet, setProblem, type LaunchedSet } from './served-llm.js';
import type { AdapterSelection } from './settings.js';
import type { EndReason, SupervisedChild } from './supervisor.js';

export { RELOAD_FILE, RUN_FILE, type ReloadOutcome };

export class GatewayRun {
  readonly fatal: Promise<EndReason>;
  private resolveFatal: (e: EndReason) => void = () => undefined;
  private readonly retired = new Set<SupervisedChild>();
  private chain: Promise<unknown> = Promise.resolve();
  private pending: Promise<ReloadOutcome> | null = null;
  private seq = 0;
  private closing = false;
  private gateway: Gateway | null = null;
  private watch: CatalogWatch | null = null;
  private readonly onHup = (): void => {
    // kept until run exits: without a listener, a SIGHUP while stopping would kill run at once
    if (!this.closing) void this.reload('SIGHUP');
  };

  constructor(
    private readonly ctx: RunContext,
    private readonly selection: AdapterSelection,
    private readonly binPath: string,
    public current: LaunchedSet,
    readonly metrics: GatewayMetrics,
    private readonly onSwitch: (set: LaunchedSet) => void = () => undefined,
  ) {
    this.fatal = new Promise((r) => {
      this.resolveFatal = r;
    });
    this.supervise(current);
  }

  async open(): Promise<void> {
    const { config } = this.ctx;
    try {
      this.gateway = await startGateway({
        host: config.llmHost,
        port: config.llmPort,
        maxBody: config.gatewayMaxBody,
        headersTimeoutMs: config.gatewayHeadersTimeoutMs,
        idleTimeoutMs: config.gatewayIdleTimeoutMs,
        apiKey: config.llmApiKey,
        metrics: this.metrics,
        serving: () => this.current.serving,
        health: () => this.health(),
        models: () => modelsList(this.current.serving),
      });
    } catch (e) {
      const errno = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
      throw portError(config.llmHost, config.llmPort, errno === 'EADDRINUSE' ? 'EADDRINUSE' : errno);
    }
    this.ctx.trap.release('SIGHUP');
    process.on('SIGHUP', this.onHup);
    if (config.catalogPollMs > 0) {
      this.watch = new CatalogWatch(config, config.catalogPollMs, () => void this.reload('catalog change'));
    }
    await writeFileAtomic(
      join(config.stateDir, RUN_FILE),
      `${JSON.stringify({ pid: process.pid, gateway: config.llmEndpoint, started_at: new Date().toISOString() })}\n`,
      0o600,
    );
  }

  /** 200 only when llama-server is healthy and lists exactly the served set at the expected ids. */
  async health(): Promise<HealthAnswer> {
    const s = this.current.serving;
    const probe = await probeHealth(s.upstream, 2000);
    if (!probe.ok) {
      return {
        ok: false,
        reason: `llama-server is not healthy: ${probe.status ?? 'no answer'} ${probe.detail}`,
      };
    }
    const set = await setProblem(s.upstream, s.adapters.length, this.ctx.config.llmApiKey);
    if (set.reason !== null) return { ok: false, reason: set.reason };
    return { ok: true, reason: 'serving', adapters: s.adapters.map((a) => a.id), default: s.defaultId };
  }

  /** Asks for a reload; resolves with its outcome (one already waiting is shared). */
  reload(trigger: string): Promise<ReloadOutcome> {
    if (this.pending !== null) return this.pending;
    const next = this.chain.then(() => {
      this.pending = null;
      return this.swap(trigger);
    });
    this.pending = next;
    this.chain = next.catch(() => undefined);
    return next;
  }

  private async swap(trigger: string): Promise<ReloadOutcome> {
    const { report } = this.ctx;
    const started = nowMs();
    const seq = ++this.seq;
    if (this.closing) return this.outcome(seq, trigger, 'cancelled', 'run is stopping', started);
    report.info(`reload #${seq} (${trigger}): preparing the served set`);
    const scoped = scopedToReload(this.ctx);
    try {
      const prepared = await prepareSet(scoped.ctx, this.selection);
      const launched =
        prepared && !this.stopping() ? await launchSet(scoped.ctx, this.binPath, prepared) : null;
      if (launched === null) return await this.outcome(seq, trigger, 'cancelled', 'run is stopping', started);
      if (this.stopping()) {
        await launched.serving.child.stop(this.ctx.config.stopGraceMs);
        return await this.outcome(seq, trigger, 'cancelled', 'run is stopping', started);
      }
      const old = this.current;
      // the switch: requests from here on get the new server; those under way keep the old one
      this.current = launched;
      this.onSwitch(launched);
      this.ctx.children.llm = launched.serving.child;
      this.supervise(launched);
      this.metrics.served(
        launched.serving.adapters.map((a) => a.id),
        launched.prepared.notServed,
        launched.serving.adapters.length,
      );
      this.metrics.reloads.inc({ outcome: 'success' });
      const message = `switched to llama-server pid ${launched.serving.child.pid} serving ${launched.serving.adapters.map((a) => a.id).join(', ')} in ${formatDuration(nowMs() - started)}`;
      report.info(`reload #${seq}: ${message}`);
      void this.retire(old);
      await writeEnvironment(this.ctx, this.ready(launched)).catch((e: unknown) => {
        report.warn(`environment.json not rewritten: ${(e as Error).message}`);
      });
      return await this.outcome(seq, trigger, 'switched', message, started);
    } catch (e) {
      this.metrics.reloads.inc({ outcome: 'failure' });
      const what = isCodiError(e) ? `${e.code}: ${e.message}` : String(e);
      report.warn(
        `reload #${seq} failed, still serving ${this.current.serving.adapters.map((a) => a.id).join(', ')}: ${what}`,
        isCodiError(e) ? e.hint : undefined,
      );
      return await this.outcome(seq, trigger, 'failed', what, started);
    } finally {
      scoped.dispose();
    }
  }

  /** Whether run is stopping (a method: the field changes behind any await). */
  private stopping(): boolean {
    return this.closing;
  }

  /** The old server finishes what it has (at most DRAIN_TIMEOUT), then stops. */
  private async retire(old: LaunchedSet): Promise<void> {
    const { config, report } = this.ctx;
    const child = old.serving.child;
    this.retired.add(child);
    const drained = await old.serving.idle(config.drainTimeoutMs);
    if (!drained) {
      report.warn(
        `llama-server pid ${child.pid}: ${old.serving.requestsInFlight} requests still running after DRAIN_TIMEOUT (${formatDuration(config.drainTimeoutMs)}): stopping it`,
      );
    }
    const r = await child.stop(config.stopGraceMs);
    this.retired.delete(child);
    report.info(
      `old llama-server (pid ${child.pid}) ${drained ? 'drained and ' : ''}stopped${r.forced ? ' (SIGKILL)' : ''}`,
    );
  }

  private supervise(set: LaunchedSet): void {
    void set.serving.child.exited.then((exit) => {
      if (this.current === set && !this.closing) this.resolveFatal({ kind: 'child-exit', role: 'llm', exit });
    });
  }

  private async outcome(
    seq: number,
    trigger: string,
    outcome: ReloadOutcome['outcome'],
    message: string,
    started: number,
  ): Promise<ReloadOutcome> {
    const s = this.current.serving;
    const o: ReloadOutcome = {
      seq,
      trigger,
      outcome,
      message,
      served: s.adapters.map((a) => a.id),
      default: s.defaultId,
      ms: Math.round(nowMs() - started),
      at: new Date().toISOString(),
    };
    await writeFileAtomic(join(this.ctx.config.stateDir, RELOAD_FILE), `${JSON.stringify(o)}\n`, 0o600).catch(
      () => undefined,
    );
    return o;
  }

  /** What environment.json records for a set. */
  ready(set: LaunchedSet, llamaServer: LlmReady['llamaServer'] = null): LlmReady {
    const s = set.serving;
    const d = set.records.find((r, i) => set.prepared.adapters[i]?.id === s.defaultId) ?? null;
    return {
      adapter: d,
      llamaServer: llamaServer ?? this.llamaServer,
      lora: set.lora,
      healthyMs: set.healthyMs,
      gateway: {
        upstream: s.upstream,
        default: s.defaultId,
        max_adapters: this.ctx.config.maxAdapters,
        served: s.adapters.map((a, i) => ({ ...a, record: set.records[i] ?? null })),
        not_served: set.prepared.notServed,
      },
    };
  }

  llamaServer: LlmReady['llamaServer'] = null;

  /** Stops reloading, closes the gateway, and stops the servers still draining. */
  async close(): Promise<void> {
    this.closing = true;
    this.watch?.stop();
    await Promise.race([this.chain, new Promise((r) => setTimeout(r, this.ctx.config.stopGraceMs).unref())]);
    await this.gateway?.close();
    await Promise.all([...this.retired].map((c) => c.stop(this.ctx.config.stopGraceMs)));
    await rm(join(this.ctx.config.stateDir, RUN_FILE), { force: true }).catch(() => undefined);
  }
}

/**
 * The LLM step when a set is served: the set ready and started, the gateway on LLM_HOST:LLM_PORT;
 * null when a signal came while starting.
 */
export async function startGatewayLlm(
  ctx: RunContext,
  selection: AdapterSelection,
): Promise<LlmReady | null> {
  const { config, report } = ctx;
  const binary = resolveLlamaServer(config.llamaServerBin, ctx.env);
  binary.catch(() => undefined);
  report.info(`serving ${describeSelection(selection)} through the gateway on ${config.llmEndpoint ?? '?'}`);
  const prepared = await prepareSet(ctx, selection);
  if (prepared === null || ctx.trap.stopRequested()) return null;
  const binPath = await binary;
  await checkApp(ctx);
  await assertPortFree(config.llmHost, config.llmPort);
  const launched = await launchSet(ctx, binPath, prepared, true);
  if (launched === null) return null;
  ctx.children.llm = launched.serving.child;
  let current: LaunchedSet = launched;
  const metrics = new GatewayMetrics(() => upstreamLoad(current.serving.upstream, config.llmApiKey));
  const run = new GatewayRun(ctx, selection, binPath, launched, metrics, (set) => {
    current = set;
  });
  ctx.gateway = run;
  await run.open();
  metrics.served(
    launched.serving.adapters.map((a) => a.id),
    prepared.notServed,
    launched.serving.adapters.length,
  );
  report.info(
    `gateway listening on ${config.llmEndpoint ?? '?'} (llama-server on ${launched.serving.upstream}, loopback only)`,
  );
  const version = await llamaServerVersion(binPath, ctx.env).catch((e: unknown) => {
    if (isCodiError(e)) report.warn(e.message);
    return null;
  });
  run.llamaServer = {
    path: binPath,
    version: version?.text ?? 'unknown',
    build: version?.build ?? null,
    commit: version?.commit ?? null,
  };
  return run.ready(launched);
}

function describeSelection(selection: AdapterSelection): string {
  switch (selection.kind) {
    case 'ids':
      return selection.ids.join(', ');
    case 'all':
      return 'every adapter of the catalog';
    case 'promoted':
      return 'the promoted adapters';
    case 'single':
      return 'the adapter of ADAPTER_PATH';
  }
}

/**
 * The context for one reload: its steps wait on an abort signal of its own, which run's stop aborts.
 * Waiting on run's own signal would leave a listener on it for every reload.
 */
function scopedToReload(ctx: RunContext): { ctx: RunContext; dispose: () => void } {
  const abort = new AbortController();
  const onStop = (): void => {
    abort.abort(ctx.trap.stopping.reason);
  };
  if (ctx.trap.stopping.aborted) onStop();
  else ctx.trap.stopping.addEventListener('abort', onStop, { once: true });
  // the trap as it is (its signal, its count), but for the signal the reload's steps wait on
  const trap = Object.create(ctx.trap, { stopping: { value: abort.signal } }) as RunContext['trap'];
  return {
    ctx: { ...ctx, trap },
    dispose: () => {
      ctx.trap.stopping.removeEventListener('abort', onStop);
      abort.abort();
    },
  };
}

async function upstreamLoad(
  upstream: string,
  apiKey: string | null,
): Promise<{ running: number; waiting: number } | null> {
  try {
    const res = await httpGet(`${upstream}/metrics`, 2000, { apiKey });
    return res.status === 200 ? parseUpstreamLoad(res.body) : null;
  } catch {
    return null;
  }
}
