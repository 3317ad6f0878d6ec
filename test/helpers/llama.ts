/**
 * The real llama-server for tests: find the binary (built by scripts/build-llama-server.sh, which
 * waits for a build in progress), start it on a free loopback port, wait for GET /health 200, stop it.
 * Every server started here is killed when the test process exits, whatever happened.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { freeLoopbackPort } from '../../src/run/served-llm.js';

const SCRIPT = fileURLToPath(new URL('../../scripts/build-llama-server.sh', import.meta.url));

let binary: Promise<string> | undefined;

/**
 * The llama-server path: `LLAMA_SERVER_BIN` if set, else the last stdout line of the build script
 * (instant when cached; otherwise it builds or waits for the build holding the lock).
 */
export function llamaServerBinary(): Promise<string> {
  binary ??= new Promise<string>((resolve, reject) => {
    const fromEnv = process.env.LLAMA_SERVER_BIN;
    if (fromEnv !== undefined && fromEnv !== '') {
      resolve(fromEnv);
      return;
    }
    const child = spawn('bash', [SCRIPT], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-4000)));
    child.on('error', reject);
    child.on('close', (code) => {
      const last = out.trim().split('\n').pop() ?? '';
      if (code === 0 && last.startsWith('/')) resolve(last);
      else reject(new Error(`build-llama-server.sh exited with ${code}:\n${err}`));
    });
  });
  return binary;
}

/** A loopback port that was free a moment ago: run's own helper. */
export const freePort = freeLoopbackPort;

const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

export interface LlamaServerOptions {
  model: string;
  /** `--lora` adapters */
  lora?: readonly string[];
  threads?: number;
  ctxSize?: number;
  /** more arguments, appended last */
  args?: readonly string[];
  /** how long to wait for /health (default 120 s) */
  timeoutMs?: number;
}

export interface LlamaServer {
  readonly url: string;
  readonly port: number;
  readonly pid: number;
  /** what the server printed (stdout and stderr, the last 64 KB) */
  output(): string;
  /** SIGTERM, then SIGKILL after 5 s; resolves once the process is gone */
  stop(): Promise<void>;
}

/** Whether a process with this pid still exists. */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function healthy(url: string): Promise<boolean> {
  try {
    const res = await fetch(`${url}/health`, { signal: AbortSignal.timeout(2000) });
    await res.body?.cancel();
    return res.status === 200;
  } catch {
    return false;
  }
}

async function startOnce(bin: string, options: LlamaServerOptions, port: number): Promise<LlamaServer> {
  const args = [
    '-m',
    options.model,
    ...(options.lora ?? []).flatMap((l) => ['--lora', l]),
    '--host',
    '127.0.0.1',
    '--port',
    String(port),
    '-t',
    String(options.threads ?? 2),
    '-c',
    String(options.ctxSize ?? 256),
    '--no-webui',
    '--offline',
    ...(options.args ?? []),
  ];
  // LLAMA_ARG_* variables would silently change the server's settings
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('LLAMA_ARG_')));
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
  live.add(child);
  let log = '';
  const collect = (d: Buffer): void => {
    log = (log + d.toString()).slice(-65536);
  };
  child.stdout.on('data', collect);
  child.stderr.on('data', collect);
  let exitCode: number | null | undefined;
  // 'close', not 'exit': the process can exit before its last output has been read from the pipes
  const exited = new Promise<void>((resolve) => {
    child.on('close', (code, signal) => {
      exitCode = code ?? (signal === null ? -1 : -2);
      live.delete(child);
      resolve();
    });
  });
  child.on('error', (e) => {
    log += `\nspawn error: ${e.message}`;
  });

  const url = `http://127.0.0.1:${port}`;
  const stop = async (): Promise<void> => {
    if (exitCode !== undefined) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  };
  const server: LlamaServer = { url, port, pid: child.pid ?? -1, output: () => log, stop };

  const deadline = Date.now() + (options.timeoutMs ?? 120_000);
  while (Date.now() < deadline) {
    if (exitCode !== undefined) {
      throw Object.assign(
        new Error(`llama-server exited (${exitCode}) before it was healthy:\n${log.slice(-4000)}`),
        {
          bindFailure: /bind|address already in use/i.test(log),
        },
      );
    }
    if (await healthy(url)) return server;
    await new Promise((r) => setTimeout(r, 100));
  }
  await stop();
  throw new Error(
    `llama-server was not healthy within ${options.timeoutMs ?? 120_000} ms:\n${log.slice(-4000)}`,
  );
}

/** Starts llama-server and waits until GET /health answers 200. */
export async function startLlamaServer(options: LlamaServerOptions): Promise<LlamaServer> {
  const bin = await llamaServerBinary();
  for (let attempt = 0; ; attempt++) {
    try {
      return await startOnce(bin, options, await freePort());
    } catch (e) {
      // another process took the port between freePort() and bind: try another one
      if (attempt < 3 && (e as { bindFailure?: boolean }).bindFailure === true) continue;
      throw e;
    }
  }
}

export interface TokenLogprob {
  id: number;
  token: string;
  bytes: number[];
  logprob: number;
}

export interface CompletionProbability extends TokenLogprob {
  top_logprobs: TokenLogprob[];
}

export interface CompletionResponse {
  content: string;
  tokens_predicted: number;
  completion_probabilities?: CompletionProbability[];
  [key: string]: unknown;
}

export async function postJson<T>(server: LlamaServer, path: string, body: unknown): Promise<T> {
  const res = await fetch(`${server.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(60_000),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`POST ${path}: ${res.status} ${text}`);
  return JSON.parse(text) as T;
}

/** POST /completion */
export function completion(server: LlamaServer, body: Record<string, unknown>): Promise<CompletionResponse> {
  return postJson<CompletionResponse>(server, '/completion', body);
}
