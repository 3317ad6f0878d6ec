/**
 * The gateway's own answers: OpenAI-style errors (`{"error": {"message", "type", "code"}}`, as vLLM
 * and llama-server answer them), JSON bodies, and the request body read within GATEWAY_MAX_BODY.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';

export type ErrorType = 'invalid_request_error' | 'not_found_error' | 'server_error' | 'authentication_error';

export class GatewayError extends Error {
  constructor(
    readonly status: number,
    readonly type: ErrorType,
    /** the `code` of the error body (model_not_found, …): the API's, not one of codi-adapter's codes */
    readonly slug: string,
    message: string,
  ) {
    super(message);
  }
}

export function sendJson(res: ServerResponse, status: number, body: unknown, close = false): void {
  const text = JSON.stringify(body);
  const headers: Record<string, string | number> = {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
  };
  if (close) headers.connection = 'close';
  res.writeHead(status, headers);
  res.end(text);
}

export function sendError(res: ServerResponse, e: GatewayError, close = false): void {
  sendJson(res, e.status, { error: { message: e.message, type: e.type, code: e.slug } }, close);
}

/**
 * The body, at most `max` bytes: a declared length over it is refused before a byte is read, a body
 * that grows past it as soon as it does (413 either way).
 */
export function readBody(req: IncomingMessage, max: number): Promise<Buffer> {
  const tooLarge = (): GatewayError =>
    new GatewayError(
      413,
      'invalid_request_error',
      'request_too_large',
      `the request body is larger than GATEWAY_MAX_BODY (${max} bytes)`,
    );
  const declared = Number(req.headers['content-length'] ?? NaN);
  if (Number.isFinite(declared) && declared > max) return Promise.reject(tooLarge());
  // what is not read is discarded (see `discardBody`), so the client can read the refusal
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > max) {
        req.off('data', onData);
        reject(tooLarge());
        return;
      }
      chunks.push(chunk);
    };
    req.on('data', onData);
    req.once('end', () => {
      resolve(Buffer.concat(chunks, size));
    });
    req.once('error', reject);
  });
}

/**
 * After a refusal, the rest of the body is read and thrown away, so the client, still sending, can read
 * the answer (closing at once would make it fail to write instead); a body that does not end within
 * `ms` ends the connection.
 */
export function discardBody(req: IncomingMessage, ms: number): void {
  if (req.complete) return;
  const timer = setTimeout(() => req.socket.destroy(), ms);
  timer.unref();
  req.once('end', () => {
    clearTimeout(timer);
  });
  req.once('close', () => {
    clearTimeout(timer);
  });
  req.resume();
}

/** The body as a JSON object; anything else is a 400 that says what is wrong. */
export function parseJsonObject(body: Buffer): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(body.toString('utf8'));
  } catch (e) {
    throw new GatewayError(
      400,
      'invalid_request_error',
      'invalid_json',
      `the request body is not valid JSON: ${(e as Error).message}`,
    );
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new GatewayError(
      400,
      'invalid_request_error',
      'invalid_json',
      'the request body must be a JSON object',
    );
  }
  return value as Record<string, unknown>;
}
