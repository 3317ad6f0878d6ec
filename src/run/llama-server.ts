/**
 * llama.cpp's llama-server as `run` uses it: finding the binary, its version, its command line, the
 * port it will bind, and its HTTP API (`GET /health`: 503 while the model loads, 200 `{"status":"ok"}`
 * when ready; `GET /lora-adapters`: `[{id, path, scale}]`). Facts from the pinned source,
 * tools/server/server.cpp and server-http.cpp.
 */
import { execFile } from 'node:child_process';
import { createServer } from 'node:net';
import { resolve } from 'node:path';
import { CodiError } from '../errors.js';
import { findExecutable, whyNotExecutable } from './executable.js';
import { describeExit, sleep, type SupervisedChild } from './supervisor.js';
import { nowMs } from '../clock.js';
import { codeRow } from '../codes.js';
import { redactUrl } from '../redact.js';
import { formatDuration } from '../text.js';
import { httpGet, probeUrl, type HealthProbe, type HttpOptions } from './http.js';

/** What to do when the LLM is ready but generates slowly. */
export const SLOW_HINT = "raise LLAMA_CPP_THREADS (up to the host's cores) or lower token limits";

export interface EvalTiming {
  tokens: number;
  tokensPerSecond: number;
}

/**
 * The generation timing llama-server logs after each completion, e.g.
 * `print_timing: id  3 | task 2 |        eval time =  8.38 ms /  24 tokens (  0.36 ms per token,  2745.29 tokens per second)`;
 * null for any other line (the `prompt eval time` line included: prompt processing is not generation).
 */
export function parseEvalTiming(line: string): EvalTiming | null {
  const m =
    /\|\s+eval time =\s*[\d.]+ ms \/\s*(\d+) tokens \([^,]*,\s*([\d.]+|inf) tokens per second\)/u.exec(line);
  if (!m) return null;
  const tokensPerSecond = m[2] === 'inf' ? Infinity : Number(m[2]);
  return { tokens: Number(m[1]), tokensPerSecond };
}

export interface LlamaServerVersion {
  /** what `llama-server --version` printed, e.g. `version: 0.4.0-dev (build 1, commit 80fb11a)` and the compiler */
  text: string;
  version: string | null;
  build: number | null;
  commit: string | null;
}

export interface LoraAdapterInfo {
  id: number;
  path: string;
  scale: number;
}

/**
 * The binary named by LLAMA_SERVER_BIN (a path, or a name looked up on PATH). Missing or not executable
 * is an environment error (exit 3) that says what to set.
 */
export async function resolveLlamaServer(
  setting: string,
  env: NodeJS.ProcessEnv = process.env,
  cwd: string = process.cwd(),
): Promise<string> {
  const found = await findExecutable(setting, env, cwd);
  if (found !== null) return found;
  const isPath = setting.includes('/');
  const where = isPath
    ? `${resolve(cwd, setting)} ${await whyNotExecutable(resolve(cwd, setting))}`
    : 'not on PATH';
  throw new CodiError(
    'LLAMA_SERVER_NOT_FOUND',
    `llama-server not found: LLAMA_SERVER_BIN=${setting} (${where})`,
    {
      file: setting,
    },
  );
}

/** `llama-server --version`; a binary that cannot even print it (missing libraries…) is exit 3. */
export function llamaServerVersion(
  bin: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<LlamaServerVersion> {
  return new Promise((resolveVersion, reject) => {
    execFile(bin, ['--version'], { timeout: 15_000, env, maxBuffer: 1024 * 1024 }, (err, stdout, stderr) => {
      const text = `${stdout}${stderr}`.trim();
      if (err) {
        reject(
          new CodiError(
            'LLAMA_SERVER_BROKEN',
            `${bin} --version failed (${err.message.split('\n')[0] ?? ''}): ${text.slice(-800)}`,
            {
              file: bin,
            },
          ),
        );
        return;
      }
      resolveVersion(parseLlamaServerVersion(text));
    });
  });
}

export function parseLlamaServerVersion(text: string): LlamaServerVersion {
  const m = /version:\s*(\S+)\s*\(build\s+(\d+),\s*commit\s+([0-9a-f]+)\)/iu.exec(text);
  return {
    text,
    version: m?.[1] ?? null,
    build: m?.[2] !== undefined ? Number(m[2]) : null,
    commit: m?.[3] ?? null,
  };
}

/**
 * Fails early and clearly when the port is taken (or not ours to bind): llama-server would only say
 * "couldn't bind HTTP server socket" among its start-up lines. A race with another process after this
 * check is caught from llama-server's log (`isBindFailure`).
 */
export function assertPortFree(host: string, port: number): Promise<void> {
  return new Promise((resolveFree, reject) => {
    const server = createServer();
    server.once('error', (e: NodeJS.ErrnoException) => {
      reject(portError(host, port, e.code ?? e.message));
    });
    server.listen({ host: host.replace(/^\[|\]$/gu, ''), port, exclusive: true }, () => {
      server.close(() => {
        resolveFree();
      });
    });
  });
}

export function portError(host: string, port: number, why: string): CodiError {
  if (why === 'EADDRINUSE' || why === 'bind') {
    return new CodiError('LLM_PORT_IN_USE', `LLM port ${port} on ${host} is already in use`, {
      hint: `stop what listens on ${port} (ss -ltnp 'sport = :${port}'), or set LLM_PORT to a free port`,
      details: { host, port },
    });
  }
  return new CodiError('LLM_PORT_UNAVAILABLE', `cannot bind LLM_HOST ${host} port ${port} (${why})`, {
    hint:
      why === 'EACCES'
        ? 'ports below 1024 need privileges: use LLM_PORT 1024 or above'
        : 'set LLM_HOST to an address of this machine (127.0.0.1, 0.0.0.0) and LLM_PORT to a free port',
    details: { host, port },
  });
}

/** llama-server's message when its listening socket cannot be bound (server-http.cpp). */
export function isBindFailure(lines: readonly string[]): boolean {
  return lines.some((l) => /couldn't bind HTTP server socket/u.test(l));
}

/** One `GET /health` of llama-server (its message, e.g. "Loading model", as the detail). Never throws. */
export function probeHealth(
  endpoint: string,
  timeoutMs = 2000,
  options: HttpOptions = {},
): Promise<HealthProbe> {
  return probeUrl(
    `${endpoint}/health`,
    timeoutMs,
    (res) => {
      let detail = res.body.trim().slice(0, 200);
      try {
        const json = JSON.parse(res.body) as {
          status?: unknown;
          reason?: unknown;
          error?: { message?: unknown };
        };
        if (typeof json.error?.message === 'string') detail = json.error.message;
        // the gateway's answer says why it is not serving
        else if (res.status !== 200 && typeof json.reason === 'string') detail = json.reason;
        else if (typeof json.status === 'string') detail = json.status;
      } catch {
        // not JSON: keep the text
      }
      return { ok: res.status === 200, status: res.status, detail: detail || `HTTP ${res.status}` };
    },
    options,
  );
}

export interface WaitHealthyOptions {
  timeoutMs: number;
  /** the embedded server: its exit ends the wait with its last lines */
  child?: SupervisedChild;
  /** ends the wait at once, a probe in flight included (a signal to `run`) */
  signal?: AbortSignal;
}

export type WaitHealthyResult =
  { healthy: true; ms: number; probes: number } | { healthy: false; cancelled: true };

/**
 * Polls `GET /health` until 200, bounded by `timeoutMs`. The embedded server exiting first is exit 4 with
 * its last log lines (exit 3 when it could not bind its port); never healthy in time is exit 4.
 */
export async function waitUntilHealthy(
  endpoint: string,
  options: WaitHealthyOptions,
): Promise<WaitHealthyResult> {
  const started = nowMs();
  const deadline = started + options.timeoutMs;
  const { signal } = options;
  const cancelled = signal ? abortedPromise(signal) : new Promise<never>(() => undefined);
  let last: HealthProbe | null = null;
  let probes = 0;
  const childExit = options.child?.exited.then(() => 'exited' as const);
  for (let attempt = 0; ; attempt++) {
    if (signal?.aborted) return { healthy: false, cancelled: true };
    if (options.child?.exit !== undefined) await childFailed(options.child);
    const left = deadline - nowMs();
    if (left <= 0) break;
    last = await probeHealth(endpoint, Math.max(50, Math.min(2000, left)), signal ? { signal } : {});
    probes++;
    if (last.ok) return { healthy: true, ms: Math.round(nowMs() - started), probes };
    // 10 ms while a small model loads (readiness is what `run` is measured by), easing off to 500 ms
    // for a large one
    const wait = Math.min(10 + attempt * 10, 500, Math.max(0, deadline - nowMs()));
    await Promise.race([sleep(wait), childExit, cancelled]);
  }
  const lastText = last
    ? last.status === null
      ? last.detail
      : `${last.status} ${last.detail}`
    : 'no answer';
  throw new CodiError(
    'LLM_NOT_READY',
    `the LLM at ${redactUrl(endpoint)} was not healthy within ${formatDuration(options.timeoutMs)} (last GET /health: ${lastText})`,
    {
      hint: options.child
        ? 'a large model on a slow disk needs longer: raise LLM_READY_TIMEOUT; the [llm] lines above show where it stopped'
        : codeRow('LLM_UNREACHABLE').hint,
      details: { endpoint: redactUrl(endpoint), last, tail: options.child?.tail(20) ?? [] },
    },
  );
}

/** Resolves when `signal` is aborted. */
export function abortedPromise(signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    signal.addEventListener(
      'abort',
      () => {
        resolve();
      },
      { once: true },
    );
  });
}

async function childFailed(child: SupervisedChild): Promise<never> {
  await Promise.race([child.drained, sleep(500)]);
  const tail = child.tail(20);
  if (isBindFailure(tail)) {
    throw portErrorFromTail(tail);
  }
  throw new CodiError(
    'LLM_EXITED',
    `llama-server ${describeExit(child.exit)} before it was healthy; its last lines:\n${tail.map((l) => `    ${l}`).join('\n')}`,
    {
      hint: 'the lines above say why; a model or adapter llama.cpp cannot load is the usual cause',
      details: { exit: child.exit ?? null, tail },
    },
  );
}

function portErrorFromTail(tail: readonly string[]): CodiError {
  const line = tail.find((l) => /couldn't bind/u.test(l)) ?? '';
  const m = /hostname: (\S+), port: (\d+)/u.exec(line);
  const err = portError(m?.[1] ?? '?', Number(m?.[2] ?? 0), 'bind');
  return new CodiError(err.code, `${err.message} (llama-server: ${line.trim()})`, {
    exitCode: err.exitCode,
    ...(err.hint ? { hint: err.hint } : {}),
    details: { ...err.details, tail },
  });
}

/** `GET /lora-adapters` (with LLM_API_KEY where one is set: unlike /health, it is not public). */
export async function loraAdapters(
  endpoint: string,
  timeoutMs = 5000,
  options: HttpOptions = {},
): Promise<LoraAdapterInfo[]> {
  const res = await httpGet(`${endpoint}/lora-adapters`, timeoutMs, options);
  if (res.status !== 200) throw new Error(`GET /lora-adapters: HTTP ${res.status} ${res.body.slice(0, 200)}`);
  const json: unknown = JSON.parse(res.body);
  if (!Array.isArray(json)) throw new Error('GET /lora-adapters did not return a list');
  return json.map((e: unknown) => {
    const o = (e ?? {}) as Record<string, unknown>;
    return {
      id: typeof o.id === 'number' ? o.id : -1,
      path: typeof o.path === 'string' ? o.path : '',
      scale: typeof o.scale === 'number' ? o.scale : NaN,
    };
  });
}
