/**
 * Pause points for the crash-safety tests. Inert unless `CODI_TEST_PAUSE_AT` names the step: then the
 * process announces the step on stderr and waits for SIGUSR2 (continue) or a kill. This lets a test
 * SIGKILL `mount`/`promote` exactly between two steps, or change a file while the process waits, instead
 * of hoping a random delay lands there.
 */

/** What a paused process prints on stderr, followed by the step name and a newline. */
export const PAUSE_MARKER = 'CODI_TEST_PAUSED';

export function pausePoint(step: string): Promise<void> {
  const wanted = process.env.CODI_TEST_PAUSE_AT;
  if (wanted === undefined || wanted === '' || !wanted.split(',').includes(step)) return Promise.resolve();
  return new Promise((resolve) => {
    // a signal listener does not keep Node's event loop alive; without this the process would exit
    const keepAlive = setInterval(() => undefined, 60_000);
    // registered before announcing, so a signal sent right after the marker is never missed
    process.once('SIGUSR2', () => {
      clearInterval(keepAlive);
      resolve();
    });
    // stderr is synchronous for pipes and files on Linux: the marker is out before we wait
    process.stderr.write(`${PAUSE_MARKER} ${step}\n`);
  });
}

/**
 * Test hook: `CODI_TEST_PROGRESS_MIN_BYTES` lowers the file size from which `verify` shows its hashing
 * progress on a terminal (64 MiB), so a test can see the indicator without hashing 64 MiB. Unset (or
 * not a non-negative integer), the command's own threshold applies.
 */
export function progressMinBytes(threshold: number): number {
  const raw = process.env.CODI_TEST_PROGRESS_MIN_BYTES;
  if (raw === undefined || !/^\d+$/u.test(raw)) return threshold;
  return Number(raw);
}
