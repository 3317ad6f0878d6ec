/**
 * The HTTP calls `run` makes to the LLM and the app: one connection a call, bounded answers, and health
 * probes that never throw.
 */
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { formatDuration } from '../text.js';

export interface HttpResult {
  status: number;
  body: string;
}

export interface HealthProbe {
  ok: boolean;
  /** HTTP status, null when there was no answer */
  status: number | null;
  /** the server's message (e.g. "Loading model") or the connection error */
  detail: string;
}

export interface HttpOptions {
  /** ends the call at once (a signal to `run` while a probe is in flight) */
  signal?: AbortSignal;
  /** sent as `Authorization: Bearer <key>` (LLM_API_KEY) */
  apiKey?: string | null;
}

/** GET with a connection of its own (no keep-alive: a held connection would pin a server thread). */
export function httpGet(url: string, timeoutMs: number, options: HttpOptions = {}): Promise<HttpResult> {
  return httpCall('GET', url, timeoutMs, options);
}

export function httpPostJson(
  url: string,
  body: unknown,
  timeoutMs: number,
  options: HttpOptions = {},
): Promise<HttpResult> {
  return httpCall('POST', url, timeoutMs, options, JSON.stringify(body));
}

async function httpCall(
  method: string,
  url: string,
  timeoutMs: number,
  options: HttpOptions,
  body?: string,
): Promise<HttpResult> {
  const u = new URL(url);
  // TLS is loaded only for an https endpoint: it is a noticeable part of start-up, and rare here
  const request = u.protocol === 'https:' ? (await import('node:https')).request : httpRequest;
  const timeout = Math.max(1, Math.round(timeoutMs));
  return new Promise((resolveCall, reject) => {
    const headers: Record<string, string> = { accept: 'application/json' };
    if (body !== undefined) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = String(Buffer.byteLength(body));
    }
    if (options.apiKey) headers.authorization = `Bearer ${options.apiKey}`;
    const settings = {
      method,
      agent: false as const,
      headers,
      timeout,
      ...(options.signal ? { signal: options.signal } : {}),
    };
    const req = request(u, settings, (res: IncomingMessage) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        // a health answer is tiny; a huge one is not a llama.cpp server
        size += c.length;
        if (size <= 1024 * 1024) chunks.push(c);
      });
      res.on('end', () => {
        resolveCall({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') });
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${formatDuration(timeout)}`)));
    req.on('error', reject);
    req.end(body);
  });
}

/** One GET of a health URL, judged by `read`. Never throws: no answer is a probe with a null status. */
export async function probeUrl(
  url: string,
  timeoutMs: number,
  read: (res: HttpResult) => HealthProbe,
  options: HttpOptions = {},
): Promise<HealthProbe> {
  try {
    return read(await httpGet(url, timeoutMs, options));
  } catch (e) {
    const errno = (e as NodeJS.ErrnoException).code;
    return { ok: false, status: null, detail: errno ?? (e instanceof Error ? e.message : String(e)) };
  }
}

/** Any health URL (the app's): 2xx is healthy. */
export function probeHealthUrl(
  url: string,
  timeoutMs: number,
  options: HttpOptions = {},
): Promise<HealthProbe> {
  return probeUrl(
    url,
    timeoutMs,
    (res) => ({
      ok: res.status >= 200 && res.status < 300,
      status: res.status,
      detail: res.body.trim().slice(0, 120),
    }),
    options,
  );
}
