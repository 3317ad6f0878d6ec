/**
 * `run`, the container entrypoint (CONTRACT §7), in the contract's order: configuration → paths →
 * verify → GGUF (cached) → llama-server → GET /health → GET /lora-adapters → LLM_ENDPOINT →
 * environment.json → the app → supervision. Everything the user should see is reported through
 * `onEvent` (the command renders it); the children's own lines go to `output`, prefixed.
 *
 * Exit status: a CodiError ends it (1 invalid adapter, 2 configuration, 3 environment, 4 LLM failed or
 * unhealthy, 5 the app died); a normal return is exit 0: stopped by a signal, or the app finished with
 * exit code 0 (a finished job is not a crash; see docs/notes-run.md).
 */
import { lstat, mkdir, readFile, realpath, rm } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { writeFileAtomic } from './atomic.js';
import { awaitReplacement, notMountedHint, replacementFinding, type AdapterStatus } from './catalog.js';
import { convertAdapter, type ConvertResult } from './convert.js';
import { CodiError, ExitCode, environmentError, isCodiError } from './errors.js';
import type { Finding } from './findings.js';
import { SAFETENSORS_FILE } from './layout.js';
import {
  httpGet,
  llamaServerArgs,
  llamaServerVersion,
  loraAdapters,
  probeHealth,
  parseEvalTiming,
  requireLoraServed,
  resolveLlamaServer,
  SLOW_HINT,
  assertPortFree,
  waitUntilHealthy,
  UNREACHABLE_HINT,
  type EvalTiming,
  type LlamaServerVersion,
  type LoraAdapterInfo,
} from './llama-server.js';
import { airgapProxyEnv, checkAirgap, type LlmMode, type RunConfig } from './run-config.js';
import type { SettingName } from './run/settings.js';
import {
  describeExit,
  findExecutable,
  firstEnd,
  forwardedSignal,
  parentDeathWrapper,
  sleep,
  SignalTrap,
  stopInOrder,
  SupervisedChild,
  type EndReason,
  type LineSink,
  type StopResult,
} from './supervisor.js';
import { VERSION } from './version.js';
import { nowMs } from './clock.js';

export const ENVIRONMENT_FILE = 'environment.json';
export type { AdapterStatus };

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

export interface EnvironmentRecord {
  schema_version: 1;
  written_at: string;
  codi_adapter: { version: string; pid: number };
  adapter: {
    id: string | null;
    version: string | null;
    base_model: string | null;
    path: string;
    /** the weights file, in the §5 form */
    checksum: string;
    checksum_verified: boolean;
    checksums: { file: string; ok: boolean }[];
    gguf: string;
    gguf_cached: boolean;
  } | null;
  ruleset: { path: string; version: string | null; error?: string };
  base_model: { id: string; path: string | null };
  llm: {
    enabled: boolean;
    mode: LlmMode;
    endpoint: string | null;
    pid: number | null;
    llama_server: { path: string; version: string; build: number | null; commit: string | null } | null;
    lora_adapters: LoraAdapterInfo[] | null;
    healthy_after_ms: number | null;
  };
  app: { command: string | null; argv: string[] | null; shell: boolean };
  airgap: { enabled: boolean; allowlist: string[]; proxy: string | null; no_proxy: string | null };
  settings: Record<SettingName, string>;
}

export type RunOutcome = 'signal' | 'app-finished';

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

const defaultOutput: LineSink = (role, line) => {
  process.stdout.write(`[${role}] ${line}\n`);
};

/** Slow-inference reports at most this often: a busy server logs a timing line per request. */
const SLOW_REPORT_EVERY_MS = 5 * 60_000;

/**
 * Passes llama-server's lines on, and calls `onSlow` when one of its timing lines shows generation
 * below `minTokensPerSecond` (CONTRACT §9, "ready but slow"); short answers (under 4 tokens) are too
 * noisy to judge. 0 turns it off.
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

export async function runServices(options: RunOptions): Promise<RunResult> {
  const started = nowMs();
  const { config } = options;
  const env = options.env ?? process.env;
  const emit = options.onEvent ?? (() => undefined);
  const info = (message: string): void => {
    emit({ kind: 'log', level: 'info', message });
  };
  const warn = (message: string, hint?: string): void => {
    emit({ kind: 'log', level: 'warn', message, ...(hint ? { hint } : {}) });
  };
  const output = options.output ?? defaultOutput;

  // installed first: a SIGTERM during verification must stop us cleanly, not kill us half-way
  const trap = new SignalTrap();
  let llm: SupervisedChild | null = null;
  let app: SupervisedChild | null = null;
  const monitors: Monitor[] = [];

  const finish = (
    outcome: RunOutcome,
    children: StopResult[],
    record: EnvironmentRecord | null,
  ): RunResult => ({
    ok: true,
    exitCode: 0,
    outcome,
    signal: trap.signal,
    mode: config.llmMode,
    endpoint: record?.llm.endpoint ?? null,
    environmentFile: record ? join(config.stateDir, ENVIRONMENT_FILE) : null,
    environment: record,
    children,
    durationMs: Math.round(nowMs() - started),
  });
  const stoppedEarly = async (record: EnvironmentRecord | null): Promise<RunResult> => {
    info(`received ${trap.signal ?? 'a signal'} while starting: stopping`);
    const children = await stopInOrder(
      [app, llm].filter((c): c is SupervisedChild => c !== null),
      config.stopGraceMs,
      forwardedSignal(trap.signal ?? 'SIGTERM'),
      trap,
      (c, r) => {
        info(stoppedText(c, r));
      },
    );
    return finish('signal', children, record);
  };

  try {
    emit({ kind: 'config', config });
    if (process.pid === 1) {
      warn(
        'running as PID 1 without an init: orphaned grandchildren will not be reaped',
        'build codi-adapter with a C compiler (dist/codi-init), put tini on PATH, or start run under an init (docker run --init)',
      );
    }
    checkAirgap(config);
    const wrapperPromise = parentDeathWrapper(env);
    const stateFile = join(config.stateDir, ENVIRONMENT_FILE);
    // a file from an earlier run must not make a HEALTHCHECK or the app believe we are up
    await rm(stateFile, { force: true }).catch(() => undefined);

    const childEnv: NodeJS.ProcessEnv = { ...env, ...airgapProxyEnv(config) };
    // the app's executable is looked up before a model is loaded for it (after the adapter checks,
    // which the contract orders first)
    const checkApp = async (): Promise<void> => {
      if (!config.app || config.app.shell) return;
      const found = await findExecutable(config.app.argv[0], childEnv);
      if (found === null) {
        throw new CodiError(
          'APP_NOT_FOUND',
          `APP_COMMAND: ${config.app.argv[0]} not found (PATH=${childEnv.PATH ?? ''})`,
          {
            exitCode: ExitCode.ENVIRONMENT,
            hint: 'install the app in the image, fix APP_COMMAND, or set APP_COMMAND=none to run the LLM alone',
          },
        );
      }
    };

    let adapterRecord: EnvironmentRecord['adapter'] = null;
    let llamaRecord: EnvironmentRecord['llm']['llama_server'] = null;
    let lora: LoraAdapterInfo[] | null = null;
    let healthyMs: number | null = null;
    const endpoint = config.llmEndpoint;

    if (config.llmMode === 'embedded' && endpoint !== null) {
      // 1. paths
      const adapterDir = await validatePaths(config, emit);
      // the binary is looked up while the adapter is verified; a missing one is reported in step order
      const binary = resolveLlamaServer(config.llamaServerBin, env);
      binary.catch(() => undefined);

      // 2. verify and convert, in one pass: convertAdapter verifies the adapter (fail closed: exit 1)
      // and its compatibility with the base, then finds the GGUF in its cache or writes it
      const peek = await peekMetadata(adapterDir);
      if (peek?.base_model !== undefined && peek.base_model !== config.codeModel) {
        const reason = `the adapter was trained for base_model ${JSON.stringify(peek.base_model)}, but CODE_MODEL is ${JSON.stringify(config.codeModel)}`;
        emit({ kind: 'adapter-status', status: 'invalid', reason });
        throw new CodiError('BASE_MODEL_MISMATCH', reason, {
          exitCode: ExitCode.INVALID,
          file: 'metadata.json',
          hint: `serve it on its own base (set CODE_MODEL=${peek.base_model} and BASE_MODEL_PATH), or mount an adapter made for ${config.codeModel}`,
        });
      }
      let converted: ConvertResult;
      try {
        converted = await convertAdapter(adapterDir, { base: config.baseModelPath });
      } catch (e) {
        if (isCodiError(e) && e.exitCode === ExitCode.INVALID) {
          // the error itself is reported last; the other findings are shown here
          const findings = findingsOf(e);
          const errors = findings.filter((f) => f.level === 'error');
          if (findings.length > 1) emit({ kind: 'findings', findings });
          const codes = errors.length > 0 ? [...new Set(errors.map((f) => f.code))].join(', ') : e.code;
          emit({
            kind: 'adapter-status',
            status: 'invalid',
            reason: `${errors.length || 1} error${errors.length > 1 ? 's' : ''}: ${codes}`,
          });
        }
        throw e;
      }
      const files = peek?.files ?? [SAFETENSORS_FILE];
      info(
        `adapter ${converted.adapter.id ?? '?'} ${converted.adapter.version ?? '?'} (${adapterDir}): verified, checksums ${files.length}/${files.length} files sha256 ok (weights ${converted.adapter.weightsSha256.slice(0, 12)}…)`,
      );
      info(
        `GGUF ${converted.cached ? 'from cache' : `converted in ${(converted.durationMs / 1000).toFixed(2)} s`}: ${converted.output}`,
      );
      emit({
        kind: 'adapter-status',
        status: 'mounted',
        reason: `${converted.adapter.id ?? '?'} ${converted.adapter.version ?? '?'}, sha256 verified, serving on ${config.codeModel}`,
      });
      adapterRecord = {
        id: converted.adapter.id,
        version: converted.adapter.version,
        base_model: peek?.base_model ?? null,
        path: adapterDir,
        checksum: `sha256:${converted.adapter.weightsSha256}`,
        checksum_verified: true,
        checksums: files.map((file) => ({ file, ok: true })),
        gguf: converted.output,
        gguf_cached: converted.cached,
      };
      if (trap.stopRequested()) return await stoppedEarly(null);

      // 3. llama-server
      const binPath = await binary;
      await checkApp();
      await assertPortFree(config.llmHost, config.llmPort);
      if (trap.stopRequested()) return await stoppedEarly(null);
      const wrapper = await wrapperPromise;
      if (wrapper === null && process.platform === 'linux') {
        warn(
          'setpriv (util-linux) with --pdeathsig not found: if run is SIGKILLed, its children keep running',
          'install util-linux, or run under a container runtime (the PID namespace ends with run)',
        );
      }
      const tuned = Object.keys(env).filter((k) => k.startsWith('LLAMA_ARG_'));
      if (tuned.length > 0) info(`llama-server also reads ${tuned.join(', ')} (command-line arguments win)`);
      const args = llamaServerArgs({
        model: config.baseModelPath,
        lora: converted.output,
        host: config.llmHost,
        port: config.llmPort,
        threads: config.threads,
      });
      info(`starting llama-server ${args.join(' ')}`);
      llm = await SupervisedChild.start(
        { role: 'llm', command: binPath, args, env: childEnv, wrapper },
        slowInferenceWatch(output, config.slowTokensPerSecond, (timing) => {
          warn(
            `slow inference: llama-server generated ${timing.tokens} tokens at ${timing.tokensPerSecond.toFixed(1)} tokens/s (below LLM_SLOW_TOKENS_PER_SECOND=${config.slowTokensPerSecond})`,
            SLOW_HINT,
          );
        }),
      );

      // 4. health, bounded by LLM_READY_TIMEOUT
      let healthy: Awaited<ReturnType<typeof waitUntilHealthy>>;
      try {
        healthy = await waitUntilHealthy(endpoint, {
          timeoutMs: config.readyTimeoutMs,
          child: llm,
          cancel: trap.received,
        });
      } catch (e) {
        // a binary that cannot even print its version is broken (missing libraries…): exit 3, not 4
        const broken =
          isCodiError(e) && e.code === 'LLM_EXITED'
            ? await llamaServerVersion(binPath, env).then(
                () => null,
                (v: unknown) => v,
              )
            : null;
        throw broken ?? e;
      }
      if (!healthy.healthy) return await stoppedEarly(null);
      healthyMs = healthy.ms;
      info(
        `LLM healthy: GET ${endpoint}/health 200 after ${(healthy.ms / 1000).toFixed(2)} s (pid ${llm.pid})`,
      );

      // 5. the adapter must be served at scale 1; `--version` (for environment.json) meanwhile: it is
      // not needed to start, and would only compete with the model load for the CPU
      const versionPromise = llamaServerVersion(binPath, env);
      versionPromise.catch(() => undefined);
      lora = await requireLoraServed(endpoint, converted.output);
      info(`LLM serves the adapter at scale 1: ${converted.output}`);
      const version = await versionPromise.catch((e: unknown): LlamaServerVersion => ({
        text: `unknown: ${e instanceof Error ? e.message : String(e)}`,
        version: null,
        build: null,
        commit: null,
      }));
      llamaRecord = { path: binPath, version: version.text, build: version.build, commit: version.commit };
      info(`llama-server ${binPath}: ${firstLine(version)}`);
    } else if (config.llmMode === 'remote' && endpoint !== null) {
      await checkApp();
      const result = await checkRemote(endpoint, config, trap, info);
      if (result === null) return await stoppedEarly(null);
      healthyMs = result.ms;
      lora = await loraAdapters(endpoint).catch(() => null);
      info(
        `remote LLM healthy: GET ${endpoint}/health 200${lora ? `; it serves ${lora.length} LoRA adapter(s): ${lora.map((l) => `${l.path} ×${l.scale}`).join(', ')}` : ''}`,
      );
    } else {
      await checkApp();
      info('LLM disabled (LLM_ENABLED=false): starting the app without one');
    }

    // 6. LLM_ENDPOINT, 7. environment.json
    const ruleset = await readRulesetVersion(config.patternsRules);
    if (ruleset.error) warn(`ruleset version not recorded: ${ruleset.error}`);
    const proxy = airgapProxyEnv(config);
    const record: EnvironmentRecord = {
      schema_version: 1,
      written_at: new Date().toISOString(),
      codi_adapter: { version: VERSION, pid: process.pid },
      adapter: adapterRecord,
      ruleset,
      base_model: { id: config.codeModel, path: config.llmMode === 'embedded' ? config.baseModelPath : null },
      llm: {
        enabled: config.llmEnabled,
        mode: config.llmMode,
        endpoint,
        pid: llm?.pid ?? null,
        llama_server: llamaRecord,
        lora_adapters: lora,
        healthy_after_ms: healthyMs,
      },
      app: {
        command: config.app?.text ?? null,
        argv: config.app ? [...config.app.argv] : null,
        shell: config.app?.shell ?? false,
      },
      airgap: {
        enabled: config.airgap,
        allowlist: config.airgapAllowlist,
        proxy: proxy.HTTP_PROXY ?? null,
        no_proxy: proxy.NO_PROXY ?? null,
      },
      settings: config.settings,
    };
    try {
      await mkdir(config.stateDir, { recursive: true });
    } catch (e) {
      throw withHint(
        environmentError(e, config.stateDir, 'created'),
        'set CODI_STATE_DIR to a writable directory',
      );
    }
    await writeFileAtomic(stateFile, `${JSON.stringify(record, null, 2)}\n`);
    if (endpoint !== null) info(`LLM_ENDPOINT=${endpoint}`);
    info(`environment recorded in ${stateFile}`);
    if (trap.stopRequested()) return await stoppedEarly(record);

    // 8. the app
    if (config.app) {
      const appEnv: NodeJS.ProcessEnv = {
        ...childEnv,
        CODI_ENVIRONMENT_FILE: stateFile,
        LLM_ENABLED: String(config.llmEnabled),
      };
      if (endpoint !== null) appEnv.LLM_ENDPOINT = endpoint;
      else delete appEnv.LLM_ENDPOINT;
      const [command, ...args] = config.app.argv;
      app = await SupervisedChild.start(
        { role: 'app', command, args, env: appEnv, wrapper: await wrapperPromise },
        output,
      );
      info(
        `app started (pid ${app.pid}): ${config.app.shell ? `/bin/sh -c ${config.app.text}` : config.app.text}`,
      );
    } else {
      info('no app (APP_COMMAND=none): serving the LLM until stopped');
    }

    // 9. supervise
    if (config.healthIntervalMs > 0 && endpoint !== null) {
      monitors.push(
        new Monitor(
          'llm',
          endpoint,
          config.healthIntervalMs,
          config.llmMode === 'embedded' ? config.healthRetries : 0,
          emit,
        ),
      );
    }
    if (config.appHealthUrl !== null && app !== null) {
      monitors.push(
        new Monitor('app', config.appHealthUrl, config.healthIntervalMs || 10_000, 0, emit, true),
      );
    }
    const children = [app, llm].filter((c): c is SupervisedChild => c !== null);
    const end = await firstEnd(
      children,
      trap,
      monitors.map((m) => m.fatal),
    );
    for (const m of monitors) m.stop();
    return await endOf(end, { app, llm, record, config, trap, info, finish });
  } finally {
    for (const m of monitors) m.stop();
    // an error thrown while starting leaves children behind: stop them before the error is reported
    const left = [app, llm].filter((c): c is SupervisedChild => c !== null && c.groupAlive());
    if (left.length > 0) {
      await stopInOrder(left, config.stopGraceMs, 'SIGTERM', trap, (c, r) => {
        info(stoppedText(c, r));
      });
    }
    trap.dispose();
  }
}

interface EndContext {
  app: SupervisedChild | null;
  llm: SupervisedChild | null;
  record: EnvironmentRecord;
  config: RunConfig;
  trap: SignalTrap;
  info: (message: string) => void;
  finish: (outcome: RunOutcome, children: StopResult[], record: EnvironmentRecord | null) => RunResult;
}

/** Stops what is left and turns the reason supervision ended into the result or the error. */
async function endOf(end: EndReason, ctx: EndContext): Promise<RunResult> {
  const { app, llm, config, trap, info } = ctx;
  const order = [app, llm].filter((c): c is SupervisedChild => c !== null);
  const stop = (sig: NodeJS.Signals): Promise<StopResult[]> =>
    stopInOrder(order, config.stopGraceMs, sig, trap, (c, r) => {
      info(stoppedText(c, r));
    });

  if (end.kind === 'signal') {
    const sig = forwardedSignal(end.signal);
    info(
      `received ${end.signal}: stopping ${order.map((c) => c.role).join(', then ')} (${sig}, SIGKILL after ${config.stopGraceMs / 1000} s each)`,
    );
    return ctx.finish('signal', await stop(sig), ctx.record);
  }
  if (end.kind === 'child-exit' && end.role === 'app') {
    const finished = end.exit.code === 0;
    info(`app ${describeExit(end.exit)}${llm ? ': stopping the LLM' : ''}`);
    const children = await stop('SIGTERM');
    if (finished) return ctx.finish('app-finished', children, ctx.record);
    // its last lines may still be in the pipe: the error shows them
    await app?.drained;
    const tail = app?.tail(20) ?? [];
    throw new CodiError(
      'APP_EXITED',
      `the app ${describeExit(end.exit)}${llm ? '; the LLM was stopped' : ''}`,
      {
        exitCode: ExitCode.CHILD_DIED,
        hint: 'the [app] lines above say why',
        details: { exit: end.exit, tail, children },
      },
    );
  }
  if (end.kind === 'child-exit') {
    await llm?.drained;
    const tail = llm?.tail(20) ?? [];
    info(`llama-server ${describeExit(end.exit)}${app ? ': stopping the app' : ''}`);
    const children = await stop('SIGTERM');
    throw new CodiError(
      'LLM_EXITED',
      `llama-server ${describeExit(end.exit)} while serving${app ? '; the app was stopped' : ''}; its last lines:\n${tail
        .slice(-10)
        .map((l) => `    ${l}`)
        .join('\n')}`,
      {
        exitCode: ExitCode.LLM_FAILED,
        hint: 'the [llm] lines above say why (out of memory is a common one: see dmesg)',
        details: { exit: end.exit, tail, children },
      },
    );
  }
  info(`${end.detail}: stopping ${order.map((c) => c.role).join(', then ')}`);
  const children = await stop('SIGTERM');
  throw new CodiError('LLM_UNHEALTHY', end.detail, {
    exitCode: ExitCode.LLM_FAILED,
    hint: `raise LLAMA_CPP_THREADS (up to the host's cores) if it is merely slow, or LLM_HEALTH_RETRIES / LLM_HEALTH_INTERVAL to be more patient`,
    details: { children },
  });
}

/** Step 1: the models volume, the adapter (not_mounted: exit 3) and the base model. */
async function validatePaths(config: RunConfig, emit: (e: RunEvent) => void): Promise<string> {
  const notMounted = (reason: string, cause?: unknown): CodiError => {
    // the hint is printed with the error that follows
    emit({ kind: 'adapter-status', status: 'not_mounted', reason });
    return new CodiError('ADAPTER_NOT_MOUNTED', reason, {
      exitCode: ExitCode.ENVIRONMENT,
      file: config.adapterPath,
      hint: notMountedHint(config.modelMountPath, basename(config.adapterPath)),
      cause,
    });
  };
  const mount = await lstat(config.modelMountPath).catch((e: unknown) => e as NodeJS.ErrnoException);
  if (mount instanceof Error || !mount.isDirectory()) {
    throw notMounted(
      `MODEL_MOUNT_PATH ${config.modelMountPath} ${mount instanceof Error ? describeErrno(mount) : 'is not a directory'} (mount the models volume there)`,
    );
  }
  let adapterDir: string;
  try {
    adapterDir = await realpath(config.adapterPath).catch(async (e: unknown) => {
      // perhaps a `mount --force` between its two renames: the adapter is back in milliseconds
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      const r = await awaitReplacement(config.adapterPath);
      if (r.state === 'present') return realpath(config.adapterPath);
      if (r.state === 'absent') throw e;
      const f = replacementFinding(r);
      throw notMounted(`ADAPTER_PATH ${config.adapterPath}: ${f.message} (${f.hint ?? ''})`);
    });
    const st = await lstat(adapterDir);
    if (!st.isDirectory()) throw notMounted(`ADAPTER_PATH ${config.adapterPath} is not a directory`);
  } catch (e) {
    if (isCodiError(e)) throw e;
    throw notMounted(`ADAPTER_PATH ${config.adapterPath} ${describeErrno(e as NodeJS.ErrnoException)}`, e);
  }
  try {
    const st = await lstat(await realpath(config.baseModelPath));
    if (!st.isFile()) throw new Error('not a file');
  } catch (e) {
    throw new CodiError(
      'BASE_MODEL_MISSING',
      `BASE_MODEL_PATH ${config.baseModelPath} ${e instanceof Error && 'code' in e ? describeErrno(e as NodeJS.ErrnoException) : 'is not a file'}`,
      {
        exitCode: ExitCode.ENVIRONMENT,
        file: config.baseModelPath,
        hint: `place the ${config.codeModel} GGUF at <MODEL_MOUNT_PATH>/base/${config.codeModel}.gguf, or set BASE_MODEL_PATH`,
      },
    );
  }
  return adapterDir;
}

/** A remote LLM_ENDPOINT: GET /health, retried LLM_HEALTH_RETRIES times 1 s apart (exit 4 if never 200). */
async function checkRemote(
  endpoint: string,
  config: RunConfig,
  trap: SignalTrap,
  info: (m: string) => void,
): Promise<{ ms: number } | null> {
  const started = nowMs();
  let last = '';
  for (let attempt = 1; attempt <= config.healthRetries; attempt++) {
    if (trap.stopRequested()) return null;
    const probe = await probeHealth(endpoint, 2000);
    if (probe.ok) return { ms: Math.round(nowMs() - started) };
    last = probe.status === null ? probe.detail : `HTTP ${probe.status} ${probe.detail}`;
    info(`remote LLM ${endpoint}: attempt ${attempt}/${config.healthRetries}: ${last}`);
    if (attempt < config.healthRetries) await Promise.race([sleep(1000), trap.received]);
  }
  throw new CodiError(
    'LLM_UNREACHABLE',
    `LLM_ENDPOINT ${endpoint} not reachable: GET /health did not answer 200 in ${config.healthRetries} attempt(s) (last: ${last})`,
    { exitCode: ExitCode.LLM_FAILED, hint: UNREACHABLE_HINT, details: { endpoint, last } },
  );
}

/** The ruleset version: the rules file's top-level `version`, if the file is there. */
export async function readRulesetVersion(path: string): Promise<EnvironmentRecord['ruleset']> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    const errno = (e as NodeJS.ErrnoException).code;
    if (errno === 'ENOENT' || errno === 'ENOTDIR') return { path, version: null };
    return { path, version: null, error: `${path}: ${describeErrno(e as NodeJS.ErrnoException)}` };
  }
  try {
    // loaded here, after the LLM is up: the YAML parser is a noticeable part of start-up otherwise
    const { parse } = await import('yaml');
    const doc: unknown = parse(text);
    const v = doc !== null && typeof doc === 'object' ? (doc as Record<string, unknown>).version : undefined;
    if (typeof v === 'string' || typeof v === 'number') return { path, version: String(v) };
    return { path, version: null, error: `${path} has no top-level version` };
  } catch (e) {
    return {
      path,
      version: null,
      error: `${path} is not valid YAML: ${(e as Error).message.split('\n')[0] ?? ''}`,
    };
  }
}

/**
 * Health checks while supervising, logged when the state changes. With `failAfter` > 0 that many
 * failed checks in a row end supervision (the embedded LLM: exit 4); the app and a remote LLM are only
 * logged. `untilFirst` polls every second until the first success (an app that is still starting).
 */
class Monitor {
  readonly fatal: Promise<EndReason>;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private failures = 0;
  private healthy: boolean | null = null;
  private resolveFatal: (r: EndReason) => void = () => undefined;
  private readonly started = nowMs();

  constructor(
    private readonly role: 'llm' | 'app',
    private readonly url: string,
    private readonly intervalMs: number,
    private readonly failAfter: number,
    private readonly emit: (e: RunEvent) => void,
    private readonly untilFirst = false,
  ) {
    this.fatal = new Promise((r) => {
      this.resolveFatal = r;
    });
    this.schedule(untilFirst ? 1000 : intervalMs);
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => void this.check(), ms);
    // health checks alone must not keep the process alive
    this.timer.unref();
  }

  private async check(): Promise<void> {
    const probe =
      this.role === 'llm'
        ? await probeHealth(this.url, Math.min(5000, this.intervalMs))
        : await probeHealthUrl(this.url, Math.min(5000, this.intervalMs));
    if (this.stopped) return;
    const name = this.role === 'llm' ? 'LLM' : 'app';
    const what = probe.status === null ? probe.detail : `HTTP ${probe.status} ${probe.detail}`;
    const starting = this.untilFirst && this.healthy === null;
    if (probe.ok) {
      if (this.healthy !== true) {
        const after = starting ? ` after ${((nowMs() - this.started) / 1000).toFixed(1)} s` : '';
        this.emit({ kind: 'log', level: 'info', message: `${name} healthy${after} (${this.url})` });
      }
      this.healthy = true;
      this.failures = 0;
    } else if (starting) {
      // an app that has not answered yet is starting, not unhealthy: said every 30 s, never fatal
      this.failures++;
      if (this.failures % 30 === 0) {
        this.emit({
          kind: 'log',
          level: 'warn',
          message: `${name} not healthy yet after ${this.failures} s (${this.url}: ${what})`,
        });
      }
    } else {
      this.failures++;
      if (this.healthy !== false || this.failures === this.failAfter - 1) {
        this.emit({
          kind: 'log',
          level: 'warn',
          message: `${name} unhealthy (${this.url}: ${what})${this.failAfter > 0 ? `, ${this.failures}/${this.failAfter}` : ''}`,
        });
      }
      this.healthy = false;
      if (this.failAfter > 0 && this.failures >= this.failAfter) {
        this.resolveFatal({
          kind: 'unhealthy',
          role: this.role,
          detail: `the LLM failed ${this.failures} health checks in a row (last: ${what})`,
        });
        return;
      }
    }
    this.schedule(this.untilFirst && this.healthy === null ? 1000 : this.intervalMs);
  }
}

/** Any health URL (the app's): 2xx is healthy. */
async function probeHealthUrl(
  url: string,
  timeoutMs: number,
): Promise<{ ok: boolean; status: number | null; detail: string }> {
  try {
    const res = await httpGet(url, timeoutMs);
    return {
      ok: res.status >= 200 && res.status < 300,
      status: res.status,
      detail: res.body.trim().slice(0, 120),
    };
  } catch (e) {
    return { ok: false, status: null, detail: (e as NodeJS.ErrnoException).code ?? (e as Error).message };
  }
}

function stoppedText(child: SupervisedChild, r: StopResult): string {
  const name = child.role === 'llm' ? 'llama-server' : 'app';
  if (r.alreadyExited) return `${name} (pid ${r.pid}) ${describeExit(r.exit)}`;
  return `${name} (pid ${r.pid}) stopped: ${describeExit(r.exit)}${r.forced ? ' (SIGKILL after the grace period)' : ''}`;
}

/** The findings a failed verification carries (requireValid puts them in the error's details). */
function findingsOf(e: CodiError): Finding[] {
  const findings = e.details?.findings;
  return Array.isArray(findings) ? (findings as Finding[]) : [];
}

/**
 * id, version, base_model and the checksummed files from metadata.json, read without validation: the
 * base model is checked before a conversion is spent on the wrong one; convertAdapter verifies it all.
 */
async function peekMetadata(dir: string): Promise<{ base_model?: string; files: string[] } | null> {
  try {
    const data = JSON.parse(await readFile(join(dir, 'metadata.json'), 'utf8')) as Record<string, unknown>;
    const checksum = data.checksum;
    const files =
      typeof checksum === 'string'
        ? [SAFETENSORS_FILE]
        : checksum !== null && typeof checksum === 'object' && 'files' in checksum
          ? Object.keys((checksum as { files: Record<string, unknown> }).files).sort()
          : [];
    return typeof data.base_model === 'string' ? { base_model: data.base_model, files } : { files };
  } catch {
    return null;
  }
}

function firstLine(v: LlamaServerVersion): string {
  return v.text.split('\n')[0] ?? v.text;
}

function describeErrno(e: NodeJS.ErrnoException): string {
  switch (e.code) {
    case 'ENOENT':
      return 'does not exist';
    case 'EACCES':
    case 'EPERM':
      return 'is not readable by this user';
    case 'ENOTDIR':
      return 'is not a directory';
    default:
      return `cannot be read (${e.code ?? e.message})`;
  }
}

function withHint(e: CodiError, hint: string): CodiError {
  return new CodiError(e.code, e.message, { exitCode: e.exitCode, file: e.file, hint, cause: e.cause });
}
