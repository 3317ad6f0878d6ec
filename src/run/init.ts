/**
 * `run` always runs under an init that is a child subreaper: the project's own `dist/codi-init`
 * (native/codi-init.c, built by `npm run build`), else `tini -s -p SIGTERM` on PATH. Why not the Node
 * process itself: Node has no binding for prctl(PR_SET_CHILD_SUBREAPER); libuv reaps only the children
 * it spawned, so adopted orphans would stay zombies; and a SIGKILLed process can stop nothing, while
 * the init outlives `run` and ends whatever is left below it (codi-init SIGKILLs it; tini, as PID 1 of
 * a container, takes it with the namespace). So the command `run` (this front process) starts
 * `run` again under the init, passes its signals on, and exits with the init's status; the `run`
 * below the init does the work and stops what the app left behind (src/run/descendants.ts).
 */
import { spawn } from 'node:child_process';
import { readlinkSync, realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { signalExitStatus } from '../errors.js';
import { findExecutable } from './executable.js';

/**
 * Set by the front process in the environment of the `run` it starts under an init: the init's path.
 * `run` checks that its parent really runs that program before it counts on it (`initParent`).
 */
export const UNDER_INIT = 'CODI_UNDER_INIT';
/** Set by codi-init in its child's environment: its own pid. */
export const INIT_PID = 'CODI_INIT_PID';

export const OWN_INIT = fileURLToPath(new URL('../../dist/codi-init', import.meta.url));

/** The init command to start `run` under: the project's, else tini as a child subreaper; null if none. */
export async function findInit(
  env: NodeJS.ProcessEnv = process.env,
  ownInit: string = OWN_INIT,
): Promise<string[] | null> {
  const own = await findExecutable(ownInit, env);
  if (own !== null) return [own];
  const tini = await findExecutable('tini', env);
  // -s: a child subreaper when not PID 1; -p: our death is its SIGTERM, which it passes on to run
  return tini === null ? null : [tini, '-s', '-p', 'SIGTERM', '--'];
}

/**
 * The pid of this process's parent when it is the init the front process started it under (it runs
 * the program UNDER_INIT names): the process that adopts the orphans below `run`. null otherwise, e.g.
 * a `run` started by hand with the variable set, or one whose init has died.
 */
export function initParent(env: NodeJS.ProcessEnv = process.env, ppid: number = process.ppid): number | null {
  const expected = env[UNDER_INIT];
  if (!expected || ppid <= 1) return null;
  try {
    return realpathSync(readlinkSync(`/proc/${ppid}/exe`)) === realpathSync(expected) ? ppid : null;
  } catch {
    return null;
  }
}

/** The variables that tell a `run` it is under an init: not for its children (an app may start run). */
export const INIT_VARIABLES = [UNDER_INIT, INIT_PID] as const;

const FORWARDED: readonly NodeJS.Signals[] = ['SIGTERM', 'SIGINT', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2'];

/**
 * Runs `command` under `init` with stdio inherited, passing our signals on; resolves to its exit status
 * (128 + the signal's number when it was killed). The init runs in a session of its own, so a Ctrl-C
 * on the terminal reaches this process only and is passed on once, not twice.
 */
export function runUnderInit(
  init: readonly string[],
  command: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  const [file = '', ...initArgs] = init;
  const child = spawn(file, [...initArgs, ...command], {
    stdio: 'inherit',
    detached: true,
    env: { ...env, [UNDER_INIT]: file },
  });
  const pass = (sig: NodeJS.Signals): void => {
    child.kill(sig);
  };
  for (const sig of FORWARDED) process.on(sig, pass);
  return new Promise((resolve) => {
    const done = (status: number): void => {
      for (const sig of FORWARDED) process.off(sig, pass);
      resolve(status);
    };
    child.once('error', (e) => {
      process.stderr.write(`codi-adapter: cannot start ${file}: ${e.message}\n`);
      done(3);
    });
    child.once('exit', (code, signal) => {
      done(code ?? (signal ? signalExitStatus(signal) : 128));
    });
  });
}
