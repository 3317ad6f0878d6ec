/**
 * The gateway: the HTTP server on LLM_HOST:LLM_PORT in front of llama-server (which listens on
 * loopback only). Its routes are the table below; every other path is 404, so llama-server's runtime
 * API (`POST /lora-adapters`, `/slots`, `/props`…) cannot be reached from outside. A request's
 * `model` picks the adapter: the gateway alone writes the `lora` list llama-server gets (the adapter
 * at scale 1, every other at 0), and refuses one from the client. To add a route: one row in
 * `ROUTES` (a model route is forwarded as it is, with `lora` added; a local one answers here).
 */
import { createServer, Agent, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { timingSafeEqual } from 'node:crypto';
import { once } from 'node:events';
import { nowMs } from '../clock.js';
import { discardBody, GatewayError, parseJsonObject, readBody, sendError, sendJson } from './answers.js';
import { NO_ADAPTER, type GatewayMetrics } from './metrics.js';
import { forward } from './proxy.js';
import type { Serving } from './serving.js';

type Local = 'health' | 'models' | 'metrics';

interface RouteRow {
  method: 'GET' | 'POST';
  /** forwarded with a `lora` list (`model`), forwarded without one (`plain`), or answered here */
  kind: 'model' | 'plain' | Local;
}

/** Every route of the gateway. */
export const ROUTES: Readonly<Record<string, RouteRow>> = {
  '/v1/chat/completions': { method: 'POST', kind: 'model' },
  '/v1/completions': { method: 'POST', kind: 'model' },
  '/completion': { method: 'POST', kind: 'model' },
  '/tokenize': { method: 'POST', kind: 'plain' },
  '/detokenize': { method: 'POST', kind: 'plain' },
  '/health': { method: 'GET', kind: 'health' },
  '/v1/models': { method: 'GET', kind: 'models' },
  '/metrics': { method: 'GET', kind: 'metrics' },
};

/** Routes anyone may call without LLM_API_KEY (probes and scrapes), as llama-server's /health. */
const PUBLIC: ReadonlySet<Local | 'model' | 'plain'> = new Set(['health', 'metrics']);

export interface HealthAnswer {
  ok: boolean;
  reason: string;
  [detail: string]: unknown;
}

export interface GatewayOptions {
  host: string;
  port: number;
  maxBody: number;
  headersTimeoutMs: number;
  idleTimeoutMs: number;
  apiKey: string | null;
  metrics: GatewayMetrics;
  /** the set served now */
  serving: () => Serving;
  health: () => Promise<HealthAnswer>;
  models: () => unknown;
}

export interface Gateway {
  readonly server: Server;
  readonly agent: Agent;
  close(): Promise<void>;
}

export async function startGateway(o: GatewayOptions): Promise<Gateway> {
  // llama-server answers every request with `Connection: close`: a connection each, none kept
  const agent = new Agent({ keepAlive: false, maxSockets: 256 });
  const server = createServer({
    requestTimeout: o.headersTimeoutMs,
    headersTimeout: o.headersTimeoutMs,
    // how often slow requests are looked for (Node's default, 30 s, would let one overstay the timeout)
    connectionsCheckingInterval: Math.min(1000, o.headersTimeoutMs),
  });
  server.keepAliveTimeout = 5000;
  // silence both ways for this long closes the connection (an answer being streamed is not silent)
  server.setTimeout(o.idleTimeoutMs, (socket) => socket.destroy());
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    void handle(o, agent, req, res);
  });
  server.on('clientError', (e: NodeJS.ErrnoException, socket) => {
    // too slow (GATEWAY_HEADERS_TIMEOUT) is 408, anything else that is not HTTP is 400
    const status = e.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? '408 Request Timeout' : '400 Bad Request';
    if (socket.writable) socket.end(`HTTP/1.1 ${status}\r\nconnection: close\r\n\r\n`);
    else socket.destroy();
  });
  server.listen({ host: o.host.replace(/^\[|\]$/gu, ''), port: o.port, exclusive: true });
  await Promise.race([
    once(server, 'listening'),
    once(server, 'error').then(([e]) => {
      throw e;
    }),
  ]);
  return {
    server,
    agent,
    close: async () => {
      const closed = new Promise<void>((r) => {
        server.close(() => {
          r();
        });
      });
      server.closeAllConnections();
      agent.destroy();
      await closed;
    },
  };
}

async function handle(
  o: GatewayOptions,
  agent: Agent,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const started = nowMs();
  const path = (req.url ?? '/').split('?')[0] ?? '/';
  const row = Object.hasOwn(ROUTES, path) ? ROUTES[path] : undefined;
  try {
    if (row === undefined) {
      throw new GatewayError(
        404,
        'not_found_error',
        'not_found',
        `no route ${path} (the gateway serves ${Object.keys(ROUTES).join(', ')})`,
      );
    }
    if (req.method !== row.method) {
      res.setHeader('allow', row.method);
      throw new GatewayError(
        405,
        'invalid_request_error',
        'method_not_allowed',
        `${path} takes ${row.method}`,
      );
    }
    if (!PUBLIC.has(row.kind)) requireKey(o.apiKey, req);
    if (row.kind === 'model' || row.kind === 'plain') {
      await forwardRequest(o, agent, req, res, path, row.kind, started);
      return;
    }
    await answerLocal(o, row.kind, res);
    o.metrics.requests.inc({ adapter: NO_ADAPTER, status: String(res.statusCode) });
  } catch (e) {
    const err =
      e instanceof GatewayError
        ? e
        : new GatewayError(500, 'server_error', 'internal', `the gateway failed: ${(e as Error).message}`);
    // a body left unread (too large, or refused before it was read) is read and discarded, bounded by
    // the headers timeout
    if (!res.headersSent) sendError(res, err);
    else res.destroy();
    discardBody(req, o.headersTimeoutMs);
    o.metrics.requests.inc({ adapter: NO_ADAPTER, status: String(err.status) });
  }
}

async function answerLocal(o: GatewayOptions, kind: Local, res: ServerResponse): Promise<void> {
  if (kind === 'models') {
    sendJson(res, 200, o.models());
    return;
  }
  if (kind === 'metrics') {
    const text = await o.metrics.registry.metrics();
    res.writeHead(200, { 'content-type': o.metrics.registry.contentType });
    res.end(text);
    return;
  }
  const { ok, ...h } = await o.health();
  sendJson(res, ok ? 200 : 503, { status: ok ? 'ok' : 'unavailable', ...h });
}

async function forwardRequest(
  o: GatewayOptions,
  agent: Agent,
  req: IncomingMessage,
  res: ServerResponse,
  path: string,
  kind: 'model' | 'plain',
  started: number,
): Promise<void> {
  const body = parseJsonObject(await readBody(req, o.maxBody));
  if (Object.hasOwn(body, 'lora')) {
    throw new GatewayError(
      400,
      'invalid_request_error',
      'lora_not_allowed',
      'the gateway decides which adapter a request gets: name it in "model" and leave "lora" out',
    );
  }
  const serving = o.serving();
  let label = NO_ADAPTER;
  if (kind === 'model' || body.model !== undefined) {
    const route = serving.route(body.model);
    if (route.kind === 'unknown') {
      throw new GatewayError(
        404,
        'not_found_error',
        'model_not_found',
        `The model \`${route.model}\` does not exist. Served: ${[serving.baseId, ...serving.byId.keys()].join(', ')}`,
      );
    }
    if (route.kind === 'no-default') {
      throw new GatewayError(
        400,
        'invalid_request_error',
        'model_required',
        `no default adapter is set: name one in "model" (${[serving.baseId, ...serving.byId.keys()].join(', ')})`,
      );
    }
    const adapter = route.kind === 'adapter' ? route.adapter : null;
    label = adapter?.id ?? serving.baseId;
    if (kind === 'model' && serving.adapters.length > 0) body.lora = serving.loraFor(adapter);
  }
  const payload = Buffer.from(JSON.stringify(body));
  await forward(
    {
      serving,
      path,
      body: payload,
      label,
      started,
      apiKey: o.apiKey,
      agent,
      metrics: o.metrics,
    },
    req,
    res,
  );
}

/** With LLM_API_KEY set, a request must carry it (`Authorization: Bearer`), as llama-server wants. */
function requireKey(key: string | null, req: IncomingMessage): void {
  if (key === null) return;
  const given = /^Bearer\s+(.+)$/iu.exec(req.headers.authorization ?? '')?.[1] ?? req.headers['x-api-key'];
  const a = Buffer.from(typeof given === 'string' ? given : '');
  const b = Buffer.from(key);
  if (a.length === b.length && timingSafeEqual(a, b)) return;
  throw new GatewayError(401, 'authentication_error', 'invalid_api_key', 'Invalid API Key');
}
