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
