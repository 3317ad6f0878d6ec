/**
 * What the gateway serves at one moment: one llama-server (its loopback port, its child) with the
 * served adapters loaded in a fixed order (adapter `i` is `--lora` number `i`, llama-server's id
 * `i`), the base id and the default. A reload builds a new `Serving` and the gateway switches to it
 * in one assignment; a request keeps the one it started with, so its adapter ids always match its
 * server. Each `Serving` counts its requests in flight, which the drain after a switch waits for.
 */
import type { SupervisedChild } from '../run/supervisor.js';

export interface ServedAdapter {
  id: string;
  /** llama-server's id for it: its place in the `--lora` list */
  index: number;
  version: string | null;
  /** the weights file's sha256 (hex) */
  sha256: string;
  /** the adapter's folder */
  path: string;
  /** the GGUF llama-server loaded */
  gguf: string;
}

/** The `lora` list llama-server gets: every adapter named, so none is applied by default. */
export type LoraList = { id: number; scale: number }[];

/** What a request's `model` resolves to. */
export type Route =
  | { kind: 'adapter'; adapter: ServedAdapter }
  | { kind: 'base' }
  | { kind: 'unknown'; model: string }
  | { kind: 'no-default' };

export class Serving {
  private inFlight = 0;
  private idleWaiters: (() => void)[] = [];
  readonly byId: ReadonlyMap<string, ServedAdapter>;

  constructor(
    /** llama-server's base URL on loopback */
    readonly upstream: string,
    readonly port: number,
    readonly child: SupervisedChild,
    readonly adapters: readonly ServedAdapter[],
    readonly baseId: string,
    readonly defaultId: string | null,
    /** when this set started serving (unix ms) */
    readonly since: number,
  ) {
    this.byId = new Map(adapters.map((a) => [a.id, a]));
  }

  /** `model` → the adapter, the base, or why neither (absent: the default adapter). */
  route(model: unknown): Route {
    if (model === undefined || model === null || model === '') {
      const d = this.defaultId === null ? undefined : this.byId.get(this.defaultId);
      return d ? { kind: 'adapter', adapter: d } : { kind: 'no-default' };
    }
    const name = typeof model === 'string' ? model : JSON.stringify(model);
    if (name === this.baseId) return { kind: 'base' };
    const adapter = this.byId.get(name);
    return adapter ? { kind: 'adapter', adapter } : { kind: 'unknown', model: name };
  }

  /** The adapter at scale 1 and every other at 0 (all at 0 for the base). */
  loraFor(adapter: ServedAdapter | null): LoraList {
    return this.adapters.map((a) => ({ id: a.index, scale: a === adapter ? 1 : 0 }));
  }

  begin(): void {
    this.inFlight++;
  }

  end(): void {
    this.inFlight--;
    if (this.inFlight === 0) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
  }

  get requestsInFlight(): number {
    return this.inFlight;
  }

  /** Resolves true once no request is in flight, false after `timeoutMs`. */
  idle(timeoutMs: number): Promise<boolean> {
    if (this.inFlight === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        resolve(false);
      }, timeoutMs);
      this.idleWaiters.push(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }
}
