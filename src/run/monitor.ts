/** Health checks while `run` supervises (every LLM_HEALTH_INTERVAL; the app's APP_HEALTH_URL). */
import { nowMs } from '../clock.js';
import { redactUrl } from '../redact.js';
import type { RunEvent } from './context.js';
import { probeHealthUrl } from './http.js';
import { probeHealth } from './llama-server.js';
import type { EndReason } from './supervisor.js';

/**
 * Health checks while supervising, logged when the state changes. With `failAfter` > 0 that many
 * failed checks in a row end supervision (the embedded LLM: exit 4); the app and a remote LLM are only
 * logged. `untilFirst` polls every second until the first success (an app that is still starting).
 */
export class HealthMonitor {
  readonly fatal: Promise<EndReason>;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private failures = 0;
  private healthy: boolean | null = null;
  private resolveFatal: (r: EndReason) => void = () => undefined;
  private readonly started = nowMs();
  /** the URL as it is shown: credentials and tokens redacted */
  private readonly shown: string;

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
    this.shown = redactUrl(url);
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
        this.emit({ kind: 'log', level: 'info', message: `${name} healthy${after} (${this.shown})` });
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
          message: `${name} not healthy yet after ${this.failures} s (${this.shown}: ${what})`,
        });
      }
    } else {
      this.failures++;
      if (this.healthy !== false || this.failures === this.failAfter - 1) {
        this.emit({
          kind: 'log',
          level: 'warn',
          message: `${name} unhealthy (${this.shown}: ${what})${this.failAfter > 0 ? `, ${this.failures}/${this.failAfter}` : ''}`,
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
