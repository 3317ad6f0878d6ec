/**
 * `codi-adapter reload`: finds the `run` serving through a gateway by the file it keeps in
 * CODI_STATE_DIR (`run.json`: its pid), sends it SIGHUP, and waits for the outcome it writes
 * (`reload.json`, numbered): switched (exit 0) or failed, the old set still served (exit 4).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { sleep } from '../run/supervisor.js';
import { CodiError } from '../errors.js';
import { nowMs } from '../clock.js';

export const RUN_FILE = 'run.json';
export const RELOAD_FILE = 'reload.json';

export interface ReloadOutcome {
  seq: number;
  trigger: string;
  outcome: 'switched' | 'failed' | 'cancelled';
  message: string;
  served: string[];
  default: string | null;
  ms: number;
  at: string;
}

export interface ReloadResult {
  ok: boolean;
  pid: number;
  gateway: string | null;
  /** null with `wait: false` */
  reload: ReloadOutcome | null;
}

export interface ReloadOptions {
  stateDir: string;
  /** wait for the outcome (default true), at most this long */
  wait: boolean;
  timeoutMs: number;
}

export async function requestReload(o: ReloadOptions): Promise<ReloadResult> {
  const run = await readRunFile(o.stateDir);
  const before = (await readOutcome(o.stateDir))?.seq ?? 0;
  try {
    process.kill(run.pid, 'SIGHUP');
  } catch (e) {
    throw noRun(
      o.stateDir,
      `the run recorded there (pid ${run.pid}) is gone (${(e as NodeJS.ErrnoException).code ?? ''})`,
    );
  }
  if (!o.wait) return { ok: true, pid: run.pid, gateway: run.gateway, reload: null };
  const deadline = nowMs() + o.timeoutMs;
  for (;;) {
    const now = await readOutcome(o.stateDir);
    if (now !== null && now.seq > before) {
      if (now.outcome === 'switched') return { ok: true, pid: run.pid, gateway: run.gateway, reload: now };
      throw new CodiError('RELOAD_FAILED', `reload #${now.seq} ${now.outcome}: ${now.message}`, {
        details: { reload: now },
      });
    }
    if (!alive(run.pid)) throw noRun(o.stateDir, `run (pid ${run.pid}) ended before the reload was done`);
    if (nowMs() > deadline) {
      throw new CodiError(
        'RELOAD_FAILED',
        `no outcome from run (pid ${run.pid}) within ${o.timeoutMs / 1000} s`,
        {
          hint: 'a large model takes long to load: raise --timeout, or see the [run] lines of run',
        },
      );
    }
    await sleep(100);
  }
}

async function readRunFile(stateDir: string): Promise<{ pid: number; gateway: string | null }> {
  const file = join(stateDir, RUN_FILE);
  let data: { pid?: unknown; gateway?: unknown };
  try {
    data = JSON.parse(await readFile(file, 'utf8')) as typeof data;
  } catch (e) {
    const why = (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no run.json there' : (e as Error).message;
    throw noRun(stateDir, why);
  }
  if (typeof data.pid !== 'number' || !Number.isSafeInteger(data.pid) || data.pid <= 0) {
    throw noRun(stateDir, `${file} names no pid`);
  }
  if (!alive(data.pid)) throw noRun(stateDir, `the run recorded there (pid ${data.pid}) is gone`);
  return { pid: data.pid, gateway: typeof data.gateway === 'string' ? data.gateway : null };
}

async function readOutcome(stateDir: string): Promise<ReloadOutcome | null> {
  try {
    return JSON.parse(await readFile(join(stateDir, RELOAD_FILE), 'utf8')) as ReloadOutcome;
  } catch {
    return null;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function noRun(stateDir: string, why: string): CodiError {
  return new CodiError('RELOAD_NO_RUN', `no run serving through a gateway in ${stateDir}: ${why}`, {
    file: join(stateDir, RUN_FILE),
  });
}
