/**
 * `CODI_TRACE=1` prints where a command's time goes, one line per phase on stderr (milliseconds since
 * the process started). For benchmarks and slow-path hunting; silent otherwise.
 */
const enabled = process.env.CODI_TRACE === '1';

export function trace(label: string): void {
  if (enabled) process.stderr.write(`[trace] ${performance.now().toFixed(1).padStart(8)} ms  ${label}\n`);
}
