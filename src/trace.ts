/**
 * `CODI_TRACE=1` prints where a command's time goes, one line per phase on stderr: milliseconds since
 * the process started, and the minor page faults so far (a page of memory touched for the first time
 * costs a fault, so memory a phase touches shows up in its time; bench/convert.js reports what one
 * costs). For benchmarks and slow-path hunting; silent otherwise.
 */
import { nowMs } from './clock.js';

const enabled = process.env.CODI_TRACE === '1';

export function trace(label: string): void {
  if (!enabled) return;
  const ms = nowMs().toFixed(1).padStart(8);
  const faults = String(process.resourceUsage().minorPageFault).padStart(6);
  process.stderr.write(`[trace] ${ms} ms ${faults} faults  ${label}\n`);
}
