/**
 * `run` as PID 1 (a container started without an init): it must still reap every process. Node reaps the
 * children it spawned, not the orphans the kernel reparents to PID 1, so they would stay zombies. As PID 1, bin/run.js therefore starts `run` again
 * under an init that reaps: the project's own `dist/codi-init` (native/codi-init.c, built by
 * `npm run build`), else `tini` on PATH. This process stays PID 1: it passes signals on and exits with
 * the init's status. With neither available, `run` goes on and warns (src/run/services.ts).
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { signalExitStatus } from '../errors.js';
import { findExecutable } from './executable.js';

/** Set in the environment of the `run` started under the init, so it does not start another. */
export const UNDER_INIT = 'CODI_UNDER_INIT';

export const OWN_INIT = fileURLToPath(new URL('../../dist/codi-init', import.meta.url));

/** The init command to start `run` under: the project's, else tini as a child subreaper; null if none. */
export async function findInit(
  env: NodeJS.ProcessEnv = process.env,
  ownInit: string = OWN_INIT,
): Promise<string[] | null> {
  const own = await findExecutable(ownInit, env);
  if (own !== null) return [own];
  const tini = await findExecutable('tini', env);
  return tini === null ? null : [tini, '-s', '--'];
}

/** Whether this process should hand `run` to an init: it is PID 1 and not already under one. */
export function needsInit(pid: number = process.pid, env: NodeJS.ProcessEnv = process.env): boolean {
  return pid === 1 && env[UNDER_INIT] !== '1';
}

const FORWARDED: readonly NodeJS.Signals[] = ['SIGTERM', 'SIGINT', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2'];

/**
 * Runs `command` under `init` with stdio inherited, passing our signals on; resolves to its exit status
 * (128 + the signal's number when it was killed).
 */
export function runUnderInit(
  init: readonly string[],
  command: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  const [file = '', ...initArgs] = init;
  const child = spawn(file, [...initArgs, ...command], {
    stdio: 'inherit',
    env: { ...env, [UNDER_INIT]: '1' },
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
