/** HTTP to the gateway for tests: JSON calls, SSE streams read to the end, metrics read back. */

export interface Answer {
  status: number;
  text: string;
  json: unknown;
}

export async function call(
  base: string,
  path: string,
  init: { method?: string; body?: unknown; raw?: string; headers?: Record<string, string> } = {},
): Promise<Answer> {
  const body = init.raw ?? (init.body === undefined ? undefined : JSON.stringify(init.body));
  const res = await fetch(`${base}${path}`, {
    method: init.method ?? (body === undefined ? 'GET' : 'POST'),
    headers: { 'content-type': 'application/json', ...init.headers },
    ...(body === undefined ? {} : { body }),
    signal: AbortSignal.timeout(120_000),
  });
  const text = await res.text();
  let json: unknown = null;
  try {
    json = JSON.parse(text);
  } catch {
    // not JSON: the text says it
  }
  return { status: res.status, text, json };
}

export interface Stream {
  status: number;
  /** the `data:` payloads, in order */
  events: string[];
  /** the stream ended with llama.cpp's last event (`stop: true`) or OpenAI's `[DONE]` */
  complete: boolean;
}

/** POSTs a streaming request and reads every event; rejects when the connection fails mid-stream. */
export async function stream(
  base: string,
  path: string,
  body: unknown,
  signal?: AbortSignal,
): Promise<Stream> {
  const res = await fetch(`${base}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: signal ?? AbortSignal.timeout(120_000),
  });
  const text = await res.text();
  const events = text
    .split('\n')
    .filter((l) => l.startsWith('data: '))
    .map((l) => l.slice(6));
  const last = events[events.length - 1] ?? '';
  const complete = last === '[DONE]' || /"stop":\s*true/u.test(last);
  return { status: res.status, events, complete };
}

/** One series of the gateway's /metrics (0 when absent). */
export async function metric(
  base: string,
  name: string,
  labels: Record<string, string> = {},
): Promise<number> {
  const text = (await call(base, '/metrics')).text;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([^{\s]+)(\{[^}]*\})?\s+(\S+)$/u.exec(line);
    if (!m || m[1] !== name) continue;
    const got = Object.fromEntries(
      [...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/gu)].map((x) => [x[1] ?? '', x[2] ?? '']),
    );
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) return Number(m[3]);
  }
  return 0;
}

export interface TopLogprob {
  id: number;
  logprob: number;
}

export interface Probs {
  content: string;
  tokens: { id: number; logprob: number; top: TopLogprob[] }[];
}

/** `completion_probabilities` of a /completion answer, reduced to what is compared. */
export function probsOf(json: unknown): Probs {
  const o = json as {
    content: string;
    completion_probabilities?: { id: number; logprob: number; top_logprobs: TopLogprob[] }[];
  };
  return {
    content: o.content,
    tokens: (o.completion_probabilities ?? []).map((p) => ({
      id: p.id,
      logprob: p.logprob,
      top: p.top_logprobs.map((t) => ({ id: t.id, logprob: t.logprob })),
    })),
  };
}

/** The largest difference between two answers' log-probs (Infinity when their tokens differ). */
export function probsDistance(a: Probs, b: Probs): number {
  if (a.tokens.length !== b.tokens.length || a.tokens.length === 0) return Infinity;
  let max = 0;
  for (let i = 0; i < a.tokens.length; i++) {
    const x = a.tokens[i];
    const y = b.tokens[i];
    if (!x || !y || x.id !== y.id) return Infinity;
    max = Math.max(max, Math.abs(x.logprob - y.logprob));
    for (const t of x.top) {
      const u = y.top.find((v) => v.id === t.id);
      if (u) max = Math.max(max, Math.abs(t.logprob - u.logprob));
    }
  }
  return max;
}
