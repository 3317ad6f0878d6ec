/**
 * One request passed to llama-server and its answer passed back as it comes (`node:http`: see
 * bench/gateway.js for the measurement behind the choice): `pipe` gives
 * backpressure both ways, nothing is buffered whole, and a client that goes away destroys the
 * upstream request, which makes llama-server cancel the task. A llama-server that dies mid-answer
 * ends the client's answer with an error (the connection is destroyed: no clean end of a chunked
 * body). The token counts come from the last bytes of the answer, where llama-server puts `usage` and
 * `timings` (its JSON keys are sorted, the final SSE event carries them).
 */
import {
  request,
  type Agent,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type ServerResponse,
} from 'node:http';
import { nowMs } from '../clock.js';
import { GatewayError, sendError } from './answers.js';
import type { GatewayMetrics } from './metrics.js';
import type { Serving } from './serving.js';

const TAIL_BYTES = 16 * 1024;

/** Headers that belong to one connection, not to the answer. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'proxy-connection', 'upgrade']);

export interface Forward {
  serving: Serving;
  path: string;
  body: Buffer;
  /** the label of the metrics: adapter id, base id */
  label: string;
  started: number;
  apiKey: string | null;
  agent: Agent;
  metrics: GatewayMetrics;
}

/** Sends `f.body` to llama-server and pipes the answer to `res`; resolves with the status sent. */
export function forward(f: Forward, clientReq: IncomingMessage, res: ServerResponse): Promise<number> {
  const { serving, metrics, label } = f;
  serving.begin();
  metrics.inFlight.inc({ adapter: label });
  return new Promise<number>((resolve) => {
    let done = false;
    const finish = (status: number): void => {
      if (done) return;
      done = true;
      serving.end();
      metrics.inFlight.dec({ adapter: label });
      metrics.duration.observe({ adapter: label }, (nowMs() - f.started) / 1000);
      metrics.requests.inc({ adapter: label, status: String(status) });
      resolve(status);
    };
    const headers: Record<string, string | number> = {
      'content-type': 'application/json',
      'content-length': f.body.length,
    };
    const accept = clientReq.headers.accept;
    if (accept !== undefined) headers.accept = accept;
    if (f.apiKey !== null) headers.authorization = `Bearer ${f.apiKey}`;
    const up = request(
      { host: '127.0.0.1', port: serving.port, method: 'POST', path: f.path, headers, agent: f.agent },
      (upRes) => {
        passAnswer(f, upRes, res, finish);
      },
    );
    up.on('error', (e) => {
      if (!res.headersSent) {
        sendError(
          res,
          new GatewayError(502, 'server_error', 'upstream_unavailable', `llama-server: ${e.message}`),
        );
        finish(502);
        return;
      }
      // mid-answer: the client must see it fail, not a truncated answer that looks whole
      res.destroy(e);
      finish(res.statusCode);
    });
    // the client went away before its answer ended: llama-server stops working on it
    res.once('close', () => {
      if (!res.writableFinished) {
        up.destroy();
        finish(499);
      }
    });
    up.end(f.body);
  });
}

function passAnswer(
  f: Forward,
  upRes: IncomingMessage,
  res: ServerResponse,
  finish: (status: number) => void,
): void {
  const status = upRes.statusCode ?? 502;
  res.writeHead(status, answerHeaders(upRes.headers));
  let first = true;
  let tail: Buffer = Buffer.alloc(0);
  upRes.on('data', (chunk: Buffer) => {
    if (first) {
      first = false;
      f.metrics.ttfb.observe({ adapter: f.label }, (nowMs() - f.started) / 1000);
    }
    tail = chunk.length >= TAIL_BYTES ? chunk.subarray(chunk.length - TAIL_BYTES) : keepTail(tail, chunk);
  });
  upRes.once('end', () => {
    const tokens = tokenCounts(tail.toString('latin1'));
    if (tokens.prompt !== null) f.metrics.promptTokens.inc({ adapter: f.label }, tokens.prompt);
    if (tokens.generated !== null) f.metrics.generatedTokens.inc({ adapter: f.label }, tokens.generated);
  });
  upRes.once('aborted', () => {
    res.destroy(new Error('llama-server ended its answer early'));
    finish(status);
  });
  upRes.once('error', () => {
    res.destroy(new Error('llama-server ended its answer early'));
    finish(status);
  });
  res.once('finish', () => {
    finish(status);
  });
  upRes.pipe(res);
}

function keepTail(tail: Buffer, chunk: Buffer): Buffer {
  const joined = Buffer.concat([tail, chunk]);
  return joined.length > TAIL_BYTES ? joined.subarray(joined.length - TAIL_BYTES) : joined;
}

function answerHeaders(h: IncomingHttpHeaders): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(h)) {
    if (value === undefined || HOP_BY_HOP.has(name)) continue;
    out[name] = value;
  }
  return out;
}

/**
 * Prompt and generated tokens from the end of an answer: OpenAI `usage` (`prompt_tokens`,
 * `completion_tokens`), else llama.cpp's `tokens_evaluated`/`tokens_predicted`, else its `timings`
 * (`prompt_n`, `predicted_n`); the last occurrence wins (a stream's final event).
 */
export function tokenCounts(text: string): { prompt: number | null; generated: number | null } {
  const last = (names: readonly string[]): number | null => {
    for (const name of names) {
      const all = [...text.matchAll(new RegExp(`"${name}"\\s*:\\s*(\\d+)`, 'gu'))];
      const m = all[all.length - 1];
      if (m) return Number(m[1]);
    }
    return null;
  };
  return {
    prompt: last(['prompt_tokens', 'tokens_evaluated', 'prompt_n']),
    generated: last(['completion_tokens', 'tokens_predicted', 'predicted_n']),
  };
}
