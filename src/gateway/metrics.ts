/**
 * The gateway's Prometheus metrics (prom-client, in a registry of its own so nothing else leaks into
 * `/metrics`). Each name is documented in docs/reference.md ("Metrics"); `vllm:lora_requests_info`
 * and `vllm:num_requests_*` follow the model-server protocol of the Kubernetes Gateway API Inference
 * Extension, so its endpoint picker can route by LoRA affinity to this server as to vLLM.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { NotServed } from './served-set.js';

/** Requests that named no adapter (or none that is served) count under this label. */
export const NO_ADAPTER = '';

/** The `code` label of a served adapter: nothing left it out. */
const NO_CODE = '';

const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

export interface UpstreamLoad {
  running: number;
  waiting: number;
}

export class GatewayMetrics {
  readonly registry = new Registry();
  readonly requests = new Counter({
    name: 'codi_gateway_requests_total',
    help: 'Requests answered by the gateway, by adapter (the base id for the base model, empty when none was resolved) and HTTP status',
    labelNames: ['adapter', 'status'],
    registers: [this.registry],
  });
  readonly promptTokens = new Counter({
    name: 'codi_gateway_prompt_tokens_total',
    help: 'Prompt tokens llama-server reported (usage, timings) for the requests of each adapter, streaming included',
    labelNames: ['adapter'],
    registers: [this.registry],
  });
  readonly generatedTokens = new Counter({
    name: 'codi_gateway_generated_tokens_total',
    help: 'Tokens llama-server reported generating (usage, timings) for the requests of each adapter, streaming included',
    labelNames: ['adapter'],
    registers: [this.registry],
  });
  readonly ttfb = new Histogram({
    name: 'codi_gateway_time_to_first_byte_seconds',
    help: "Seconds from a request's arrival to the first byte of llama-server's answer passed on",
    labelNames: ['adapter'],
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });
  readonly duration = new Histogram({
    name: 'codi_gateway_request_duration_seconds',
    help: "Seconds from a request's arrival to the end of its answer",
    labelNames: ['adapter'],
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });
  readonly inFlight = new Gauge({
    name: 'codi_gateway_in_flight_requests',
    help: 'Requests being answered, by adapter',
    labelNames: ['adapter'],
    registers: [this.registry],
  });
  readonly reloads = new Counter({
    name: 'codi_gateway_reloads_total',
    help: 'Reloads of the served set by outcome: success (a new llama-server serves), failure (the old one kept serving)',
    labelNames: ['outcome'],
    registers: [this.registry],
  });
  readonly adapters = new Gauge({
    name: 'codi_gateway_adapters',
    help: 'Adapters by state: served, or not_served (invalid, made for another base, missing, or over LLM_MAX_ADAPTERS)',
    labelNames: ['state'],
    registers: [this.registry],
  });
  readonly adapterInfo = new Gauge({
    name: 'codi_gateway_adapter_info',
    help: 'One series per adapter of the last served set (value 1): served or not_served, with the code that left it out',
    labelNames: ['adapter', 'state', 'code'],
    registers: [this.registry],
  });
  readonly loraInfo = new Gauge({
    name: 'vllm:lora_requests_info',
    help: 'LoRA adapters loaded and ready (running_lora_adapters) and waiting to be loaded (waiting_lora_adapters, always empty: every served adapter is loaded), with max_lora; the value is when it last changed (unix seconds)',
    labelNames: ['running_lora_adapters', 'waiting_lora_adapters', 'max_lora'],
    registers: [this.registry],
  });

  constructor(load: () => Promise<UpstreamLoad | null>) {
    new Gauge({
      name: 'vllm:num_requests_running',
      help: 'Requests llama-server is processing (its requests_processing), read when scraped',
      registers: [this.registry],
      async collect() {
        const l = await load();
        if (l !== null) this.set(l.running);
      },
    });
    new Gauge({
      name: 'vllm:num_requests_waiting',
      help: 'Requests waiting for a free llama-server slot (its requests_deferred), read when scraped',
      registers: [this.registry],
      async collect() {
        const l = await load();
        if (l !== null) this.set(l.waiting);
      },
    });
  }

  /** The served set changed: its gauges describe the new one. */
  served(ids: readonly string[], notServed: readonly NotServed[], maxLora: number): void {
    this.adapters.set({ state: 'served' }, ids.length);
    this.adapters.set({ state: 'not_served' }, notServed.length);
    this.adapterInfo.reset();
    for (const id of ids) this.adapterInfo.set({ adapter: id, state: 'served', code: NO_CODE }, 1);
    for (const n of notServed) this.adapterInfo.set({ adapter: n.id, state: 'not_served', code: n.code }, 1);
    this.loraInfo.reset();
    this.loraInfo.set(
      { running_lora_adapters: ids.join(','), waiting_lora_adapters: '', max_lora: String(maxLora) },
      Date.now() / 1000,
    );
  }
}

/** llama-server's own `/metrics` (started with `--metrics`): requests processing and deferred. */
export function parseUpstreamLoad(text: string): UpstreamLoad | null {
  const value = (name: string): number | null => {
    const m = new RegExp(`^llamacpp:${name}(?:\\{[^}]*\\})?\\s+([0-9.eE+-]+)`, 'mu').exec(text);
    return m ? Number(m[1]) : null;
  };
  const running = value('requests_processing');
  const waiting = value('requests_deferred');
  if (running === null || waiting === null) return null;
  return { running, waiting };
}
