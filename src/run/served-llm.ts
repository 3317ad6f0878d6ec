/**
 * A served set made ready and started: every adapter of the plan verified and converted (cached),
 * those that fail left out with their finding (the default's failure is `run`'s), the cap applied,
 * then one llama-server on a free loopback port with every kept adapter as `--lora /dev/fd/N` (the
 * proven files, as for one adapter) in id order, healthy, and listing exactly those adapters at the
 * ids the gateway will use. Used at start and by every reload.
 */
import { createServer } from 'node:net';
import { once } from 'node:events';
import { CodiError, isCodiError } from '../errors.js';
import {
  applyCap,
  planServedSet,
  planSingle,
  type NotServed,
  type ServedPlan,
} from '../gateway/served-set.js';
import { Serving, type ServedAdapter } from '../gateway/serving.js';
import { sha256Hex } from '../metadata.js';
import type { AdapterSelection } from './settings.js';
import { requireUnchanged, verifyAndConvert, type ServableAdapter } from './adapter.js';
import type { RunContext } from './context.js';
import { slowInferenceWatch, untilStopped } from './embedded-llm.js';
import type { AdapterRecord } from './environment.js';
import {
  llamaServerVersion,
  loraAdapters,
  SLOW_HINT,
  waitUntilHealthy,
  type LoraAdapterInfo,
} from './llama-server.js';
import { validatePaths } from './paths.js';
import { SupervisedChild } from './supervisor.js';

export interface PreparedSet {
  plan: ServedPlan;
  /** the adapters to serve, in id order (their index) */
  adapters: { id: string; servable: ServableAdapter }[];
  notServed: NotServed[];
}

export interface LaunchedSet {
  serving: Serving;
  prepared: PreparedSet;
  records: AdapterRecord[];
  lora: LoraAdapterInfo[];
  healthyMs: number;
}

/** Verifies and converts the plan's adapters; null when a signal came meanwhile. */
export async function prepareSet(ctx: RunContext, selection: AdapterSelection): Promise<PreparedSet | null> {
  const plan =
    selection.kind === 'single'
      ? await planSingle(ctx.config, await validatePaths(ctx.config, ctx.report.emit))
      : await planServedSet(ctx.config, selection);
  const notServed = [...plan.notServed];
  for (const n of plan.notServed) ctx.report.warn(`adapter ${n.id} not served: ${n.code}: ${n.message}`);
  const ready: { id: string; servable: ServableAdapter; promotedAt: string | null }[] = [];
  const closeAll = async (): Promise<void> => {
    await Promise.all(ready.map((r) => r.servable.file.close()));
  };
  try {
    for (const c of plan.candidates) {
      const isDefault = c.id === plan.defaultId;
      const work = verifyAndConvert(isDefault ? ctx : quiet(ctx), c.dir);
      let servable: ServableAdapter | null;
      try {
        servable = await untilStopped(ctx, work);
      } catch (e) {
        if (isDefault || !isCodiError(e)) throw e;
        const left: NotServed = { id: c.id, code: e.code, message: e.message };
        notServed.push(left);
        ctx.report.warn(`adapter ${c.id} not served: ${left.code}: ${e.message}`);
        continue;
      }
      if (servable === null) {
        void work.then(
          (a) => a.file.close(),
          () => undefined,
        );
        await closeAll();
        return null;
      }
      ready.push({ id: c.id, servable, promotedAt: c.promotedAt });
    }
  } catch (e) {
    await closeAll();
    throw e;
  }
  const { kept, over } = applyCap(
    ready.map((r) => ({ id: r.id, dir: r.servable.record.path, promotedAt: r.promotedAt })),
    plan.defaultId,
    ctx.config.maxAdapters,
  );
  for (const o of over) {
    await ready.find((r) => r.id === o.id)?.servable.file.close();
    const message = `over LLM_MAX_ADAPTERS=${ctx.config.maxAdapters}: the ${ctx.config.maxAdapters} most recently promoted are served`;
    notServed.push({ id: o.id, code: 'ADAPTER_OVER_CAP', message });
    ctx.report.warn(`adapter ${o.id} not served: ADAPTER_OVER_CAP: ${message}`);
  }
  const adapters = kept.map((k) => ({ id: k.id, servable: ready.find((r) => r.id === k.id)?.servable }));
  if (adapters.length === 0) {
    throw new CodiError(
      'SERVED_SET_EMPTY',
      `no adapter to serve (ADAPTERS=${ctx.config.settings.ADAPTERS || 'promoted'}): ${notServed.map((n) => `${n.id} ${n.code}`).join(', ') || 'none listed'}`,
      { details: { not_served: notServed } },
    );
  }
  return {
    plan,
    adapters: adapters.map((a) => ({ id: a.id, servable: a.servable as ServableAdapter })),
    notServed,
  };
}

/** The context with its adapter status lines kept for the default adapter alone. */
function quiet(ctx: RunContext): RunContext {
  return {
    ...ctx,
    report: {
      ...ctx.report,
      emit: (event) => {
        if (event.kind === 'adapter-status' || event.kind === 'findings') return;
        ctx.report.emit(event);
      },
    },
  };
}

/** The path llama-server opens adapter `i` by: the proven file, inherited as descriptor 3 + i. */
export function servedPath(index: number): string {
  return `/dev/fd/${3 + index}`;
}

export function servedSetArgs(ctx: RunContext, port: number, count: number): string[] {
  const { config } = ctx;
  return [
    '-m',
    config.baseModelPath,
    ...Array.from({ length: count }, (_, i) => ['--lora', servedPath(i)]).flat(),
    // a request without a `lora` list gets the base alone, never the sum of every adapter
    '--lora-init-without-apply',
    '--host',
    '127.0.0.1',
    '--port',
    String(port),
    '-t',
    String(config.threads),
    '--metrics',
    '--no-webui',
    '--offline',
  ];
}

/**
 * Starts llama-server with the prepared set and waits until it is healthy and lists the set; its
 * files are closed whatever happens. null when a signal came meanwhile. `adopt` (at start): the server
 * is run's LLM child from its spawn on, so run's own stop ends it whatever happens (a second signal
 * kills it at once); otherwise (a reload) it is stopped here when it does not become the set served.
 */
export async function launchSet(
  ctx: RunContext,
  binPath: string,
  prepared: PreparedSet,
  adopt = false,
): Promise<LaunchedSet | null> {
  const { config, report } = ctx;
  const files = prepared.adapters.map((a) => a.servable.file);
  let child: SupervisedChild | null = null;
  try {
    const port = await freeLoopbackPort();
    const args = servedSetArgs(ctx, port, files.length);
    report.info(
      `starting llama-server ${args.join(' ')} (${prepared.adapters.map((a, i) => `${servedPath(i)}: ${a.id}`).join(', ')})`,
    );
    const sink = slowInferenceWatch(ctx.output, config.slowTokensPerSecond, (t) => {
      report.warn(
        `slow inference: llama-server generated ${t.tokens} tokens at ${t.tokensPerSecond.toFixed(1)} tokens/s (below LLM_SLOW_TOKENS_PER_SECOND=${config.slowTokensPerSecond})`,
        SLOW_HINT,
      );
    });
    const env =
      config.llmApiKey === null ? ctx.childEnv : { ...ctx.childEnv, LLAMA_API_KEY: config.llmApiKey };
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
    child = await SupervisedChild.start(
      { role: 'llm', command: binPath, args, env, wrapper, fds: files.map((f) => f.fd) },
      sink,
    );
    if (adopt) ctx.children.llm = child;
    const upstream = `http://127.0.0.1:${port}`;
    const healthy = await waitUntilHealthy(upstream, {
      timeoutMs: config.readyTimeoutMs,
      child,
      signal: ctx.trap.stopping,
    }).catch(async (e: unknown) => {
      throw (await brokenBinary(ctx, binPath, e)) ?? e;
    });
    if (!healthy.healthy) {
      if (!adopt) await child.stop(config.stopGraceMs);
      return null;
    }
    const lora = await requireSet(upstream, prepared.adapters.length, config.llmApiKey);
    for (const f of files) await requireUnchanged(f);
    const adapters = prepared.adapters.map((a, index) => servedAdapter(a.id, index, a.servable));
    const serving = new Serving(
      upstream,
      port,
      child,
      adapters,
      config.codeModel,
      defaultServed(prepared),
      Date.now(),
    );
    report.info(
      `llama-server (pid ${child.pid}) healthy after ${(healthy.ms / 1000).toFixed(2)} s on ${upstream}, serving ${adapters.map((a) => a.id).join(', ')}${serving.defaultId ? ` (default ${serving.defaultId})` : ''}`,
    );
    return {
      serving,
      prepared,
      records: prepared.adapters.map((a) => a.servable.record),
      lora,
      healthyMs: healthy.ms,
    };
  } catch (e) {
    if (child !== null && !adopt) await child.stop(config.stopGraceMs);
    throw e;
  } finally {
    await Promise.all(files.map((f) => f.close()));
  }
}

/** A binary that cannot even print its version is broken (missing libraries…): exit 3, not 4. */
async function brokenBinary(ctx: RunContext, binPath: string, e: unknown): Promise<unknown> {
  if (!isCodiError(e) || e.code !== 'LLM_EXITED') return null;
  return llamaServerVersion(binPath, ctx.env).then(
    () => null,
    (v: unknown) => v,
  );
}

/** The default adapter when it is served (an invalid default has already ended run). */
function defaultServed(prepared: PreparedSet): string | null {
  const id = prepared.plan.defaultId;
  return id !== null && prepared.adapters.some((a) => a.id === id) ? id : null;
}

function servedAdapter(id: string, index: number, s: ServableAdapter): ServedAdapter {
  return {
    id,
    index,
    version: s.record.version,
    sha256: sha256Hex(s.record.checksum) ?? s.record.checksum,
    path: s.record.path,
    gguf: s.gguf,
  };
}

/**
 * llama-server must list exactly `count` adapters, adapter `i` at id `i` from `/dev/fd/(3+i)` (scale 0
 * until a request names it): anything else means it is not serving what was verified (exit 4).
 */
export async function requireSet(
  upstream: string,
  count: number,
  apiKey: string | null,
): Promise<LoraAdapterInfo[]> {
  const problem = await setProblem(upstream, count, apiKey);
  if (problem.reason === null) return problem.lora;
  throw new CodiError('LLM_LORA_MISSING', `llama-server does not serve the set: ${problem.reason}`, {
    hint: 'remove LLAMA_ARG_LORA* settings that change the adapters llama-server loads',
    details: { lora_adapters: problem.lora },
  });
}

/** What is wrong with llama-server's `GET /lora-adapters` for a set of `count`, or null. */
export async function setProblem(
  upstream: string,
  count: number,
  apiKey: string | null,
): Promise<{ reason: string | null; lora: LoraAdapterInfo[] }> {
  let lora: LoraAdapterInfo[];
  try {
    lora = await loraAdapters(upstream, 5000, { apiKey });
  } catch (e) {
    return { reason: `GET /lora-adapters failed: ${(e as Error).message}`, lora: [] };
  }
  if (lora.length !== count) {
    return { reason: `GET /lora-adapters lists ${lora.length} adapters, not ${count}`, lora };
  }
  const wrong = lora.find((a, i) => a.id !== i || a.path !== servedPath(i));
  if (wrong !== undefined) {
    return { reason: `adapter ${wrong.id} is ${wrong.path}, not where the gateway expects it`, lora };
  }
  return { reason: null, lora };
}

/** A loopback port that was free a moment ago (llama-server binds it; a race shows as a bind failure). */
export async function freeLoopbackPort(): Promise<number> {
  const srv = createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const addr = srv.address();
  srv.close();
  await once(srv, 'close');
  if (addr === null || typeof addr === 'string') throw new Error('no free loopback port');
  return addr.port;
}
