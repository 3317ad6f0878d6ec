/**
 * A lock file beside the file it guards (`rules.yml.lock`), so that read-modify-write cycles by
 * separate processes never interleave. The lock is created complete or not at all: the owner record
 * (pid, host, nonce) is written to a temp file that is then hard-linked to the lock name, and link(2)
 * fails if the name exists. A waiter retries for a bounded time, then gives up with LOCK_HELD (exit 3).
 *
 * A lock whose owner died is stale. On the same host that shows at once: its pid no longer exists. A
 * holder in another container or on another host (a shared volume) has a pid we cannot see, and a
 * container restarted under a new hostname never comes back for its lock; so every holder keeps a
 * heartbeat, refreshing the lock file's mtime every few seconds, and a lock whose heartbeat stopped
 * for `heartbeatStaleMs()` (30 s) is stale whoever holds it. Breaking a stale lock is itself
 * serialised by a second lock file (`.break`), so two waiters that both saw the same stale lock cannot
 * end up removing each other's fresh one.
 */
import { randomBytes } from 'node:crypto';
import { link, open, readdir, readFile, stat, unlink, type FileHandle } from 'node:fs/promises';
import { hostname } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { pidAlive, tempPathFor } from './atomic.js';
import { CodiError, environmentError } from './errors.js';

// where its callers have always found it; it lives beside the temp files whose writers it checks
export { pidAlive };

export interface LockOwner {
  pid: number;
  hostname: string;
  /** tells this acquisition apart from a later one by a process that reused the pid */
  nonce: string;
  acquired_at: string;
  purpose?: string;
  /**
   * how often the holder refreshes the lock's mtime. Absent in locks written before heartbeats
   * existed: those are only stale by their pid (same host) or `staleMs`.
   */
  heartbeat_ms?: number;
}

export interface LockOptions {
  /** how long to wait for a held lock; 0 tries once (default 10 s) */
  timeoutMs?: number;
  /** poll interval while waiting, jittered (default 50 ms) */
  pollMs?: number;
  /** a lock older than this is stale whoever holds it, heartbeat or not (default 10 min) */
  staleMs?: number;
  /** recorded in the lock, shown to whoever waits for it */
  purpose?: string;
  /** called once, when the lock turns out to be held and waiting starts */
  onWait?: (owner: LockOwner | null) => void;
}

export interface Lock {
  readonly path: string;
  readonly owner: LockOwner;
  /** Removes the lock if it is still ours (a lock broken as stale and re-taken is left alone). */
  release(): Promise<void>;
}

export const DEFAULT_LOCK_TIMEOUT_MS = 10_000;
export const DEFAULT_LOCK_STALE_MS = 10 * 60_000;
/** a `.break` file older than this belongs to a breaker that died; breaking takes milliseconds */
const BREAKER_STALE_MS = 30_000;
/** A heartbeat silent for this long belongs to a holder that is gone, on whatever host. */
export const DEFAULT_HEARTBEAT_STALE_MS = 30_000;

/**
 * The heartbeat bound: DEFAULT_HEARTBEAT_STALE_MS, or `CODI_TEST_HEARTBEAT_STALE_MS` (tests, so that
 * a dead holder on another host is taken over in a moment instead of 30 s).
 */
export function heartbeatStaleMs(): number {
  const v = Number(process.env.CODI_TEST_HEARTBEAT_STALE_MS);
  return Number.isFinite(v) && v > 0 ? v : DEFAULT_HEARTBEAT_STALE_MS;
}

/** How often a holder beats: six beats fit in the bound, so a slow disk or a busy moment is no death. */
export function heartbeatIntervalMs(staleMs = heartbeatStaleMs()): number {
  return Math.max(10, Math.min(5000, Math.floor(staleMs / 6)));
}

/**
 * Calls `touch` every `intervalMs` (never two at once, failures ignored) until the returned function
 * is called. The timer does not keep the process alive.
 */
export function startHeartbeat(touch: () => Promise<unknown>, intervalMs: number): () => void {
  let busy = false;
  const timer = setInterval(() => {
    if (busy) return;
    busy = true;
    touch()
      .catch(() => undefined)
      .finally(() => {
        busy = false;
      });
  }, intervalMs);
  timer.unref();
  return () => {
    clearInterval(timer);
  };
}

export async function readLockOwner(path: string): Promise<LockOwner | null> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    return null;
  }
  try {
    const data = JSON.parse(text) as Partial<LockOwner>;
    if (
      typeof data.pid === 'number' &&
      typeof data.hostname === 'string' &&
      typeof data.nonce === 'string' &&
      typeof data.acquired_at === 'string'
    ) {
      const owner = data as LockOwner;
      if (
        owner.heartbeat_ms !== undefined &&
        !(
          typeof owner.heartbeat_ms === 'number' &&
          owner.heartbeat_ms > 0 &&
          Number.isFinite(owner.heartbeat_ms)
        )
      ) {
        delete owner.heartbeat_ms;
      }
      return owner;
    }
  } catch {
    // a lock written by the O_EXCL fallback may be caught half-written: treated as unknown owner
  }
  return null;
}

/**
 * Whether the lock `owner` (null: unreadable) whose mtime is `ageMs` old may be broken: its pid is
 * gone on this host, or its heartbeat stopped (any host), or it is older than `staleMs`.
 */
export function lockIsStale(
  owner: LockOwner | null,
  ageMs: number,
  staleMs = DEFAULT_LOCK_STALE_MS,
  heartbeatStale = heartbeatStaleMs(),
): boolean {
  if (ageMs > staleMs) return true;
  if (owner === null) return false;
  if (owner.hostname === hostname() && !pidAlive(owner.pid)) return true;
  // a holder that beats more slowly than we expect still gets three of its beats
  return owner.heartbeat_ms !== undefined && ageMs > Math.max(heartbeatStale, 3 * owner.heartbeat_ms);
}

/** Whether the lock file at `path` is stale (see lockIsStale). A lock that is gone is not. */
export async function lockFileIsStale(path: string, staleMs = DEFAULT_LOCK_STALE_MS): Promise<boolean> {
  const st = await stat(path).catch(() => null);
  if (!st) return false;
  return lockIsStale(await readLockOwner(path), Date.now() - st.mtimeMs, staleMs);
}

export async function acquireLock(path: string, options: LockOptions = {}): Promise<Lock> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS;
  const pollMs = options.pollMs ?? 50;
  const staleMs = options.staleMs ?? DEFAULT_LOCK_STALE_MS;
  const started = Date.now();
  const beat = heartbeatIntervalMs();
  const owner: LockOwner = {
    pid: process.pid,
    hostname: hostname(),
    nonce: randomBytes(8).toString('hex'),
    acquired_at: new Date().toISOString(),
    ...(options.purpose === undefined ? {} : { purpose: options.purpose }),
    heartbeat_ms: beat,
  };
  const record = `${JSON.stringify(owner)}\n`;
  let waiting = false;
  let lastSeen: LockOwner | null = null;

  for (;;) {
    if (await tryCreate(path, record)) {
      await removeDeadTakerFiles(path);
      return await lockHandle(path, owner, beat);
    }

    const st = await stat(path).catch(() => null);
    if (st) {
      lastSeen = await readLockOwner(path);
      if (lockIsStale(lastSeen, Date.now() - st.mtimeMs, staleMs)) {
        await breakStale(path, lastSeen, st.ino);
        continue;
      }
      if (!waiting) {
        waiting = true;
        options.onWait?.(lastSeen);
      }
    }
    // the lock vanished between our attempt and the stat: try again at once
    if (!st) continue;

    const remaining = started + timeoutMs - Date.now();
    if (remaining <= 0) throw lockHeld(path, lastSeen, Date.now() - started);
    const jittered = pollMs * (0.5 + Math.random());
    await sleep(Math.min(jittered, remaining));
  }
}

/** Runs `fn` holding the lock; releases it however `fn` ends. */
export async function withLock<T>(
  path: string,
  options: LockOptions,
  fn: (lock: Lock) => Promise<T>,
): Promise<T> {
  const lock = await acquireLock(path, options);
  try {
    return await fn(lock);
  } finally {
    await lock.release();
  }
}

/** true: the lock is ours. false: someone holds it. Environment problems throw (exit 3). */
async function tryCreate(path: string, record: string): Promise<boolean> {
  const temp = tempPathFor(path);
  try {
    const fh = await open(temp, 'wx', 0o644);
    try {
      await fh.writeFile(record);
      await fh.sync();
    } finally {
      await fh.close();
    }
  } catch (e) {
    throw environmentError(e, dirname(path), 'written');
  }
  try {
    await link(temp, path);
    return true;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return false;
    if (code === 'EPERM' || code === 'ENOTSUP' || code === 'EOPNOTSUPP' || code === 'ENOSYS') {
      // no hard links on this file system: O_EXCL create, which can be seen half-written
      return await createExclusive(path, record);
    }
    throw environmentError(e, path, 'written');
  } finally {
    await unlink(temp).catch(() => undefined);
  }
}

async function createExclusive(path: string, record: string): Promise<boolean> {
  let fh;
  try {
    fh = await open(path, 'wx', 0o644);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw environmentError(e, path, 'written');
  }
  try {
    await fh.writeFile(record);
    await fh.sync();
  } finally {
    await fh.close();
  }
  return true;
}

/**
 * A taker killed between writing its record and linking it leaves `.<lock>.<pid>.<hex>.tmp` behind,
 * a breaker killed mid-way a `.break` file. Both live for milliseconds while their maker runs, so the
 * next holder removes any older than the heartbeat bound, and a temp whose record names this host and
 * a pid that is gone at once. Not by the pid in the name alone while there is a record: it carries no
 * host, and a taker in another container may have a pid that is free here.
 */
async function removeDeadTakerFiles(path: string): Promise<void> {
  const dir = dirname(path);
  const prefix = `.${basename(path)}.`;
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return;
  }
  for (const name of names) {
    const full = join(dir, name);
    const m = name.startsWith(prefix) ? /^(\d+)\.[0-9a-f]{12}\.tmp$/u.exec(name.slice(prefix.length)) : null;
    const isBreaker = name === `${basename(path)}.break`;
    if (!m && !isBreaker) continue;
    const st = await stat(full).catch(() => null);
    if (!st) continue;
    const age = Date.now() - st.mtimeMs;
    let dead = age > (m ? heartbeatStaleMs() : BREAKER_STALE_MS);
    if (!dead && m) {
      const record = await readLockOwner(full);
      // no record yet: killed between creating the file and writing it (microseconds apart), so the
      // pid in its name is the best word there is; a taker elsewhere that happens to have a pid free here
      // would see its link fail (exit 3), nothing worse
      dead =
        record === null ? !pidAlive(Number(m[1])) : record.hostname === hostname() && !pidAlive(record.pid);
    }
    if (dead) await unlink(full).catch(() => undefined);
  }
}

/** Removes the stale lock we saw, unless it was replaced meanwhile; only one breaker at a time. */
async function breakStale(path: string, seen: LockOwner | null, seenIno: number): Promise<void> {
  const breaker = `${path}.break`;
  let fh;
  try {
    fh = await open(breaker, 'wx', 0o644);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw environmentError(e, breaker, 'written');
    const st = await stat(breaker).catch(() => null);
    if (st && Date.now() - st.mtimeMs > BREAKER_STALE_MS) await unlink(breaker).catch(() => undefined);
    await sleep(5);
    return;
  }
  try {
    await fh.close();
    const st = await stat(path).catch(() => null);
    const now = await readLockOwner(path);
    const same =
      st !== null && st.ino === seenIno && (seen === null ? now === null : now?.nonce === seen.nonce);
    if (same) await unlink(path).catch(() => undefined);
  } finally {
    await unlink(breaker).catch(() => undefined);
  }
}

async function lockHandle(path: string, owner: LockOwner, beatMs: number): Promise<Lock> {
  // the heartbeat touches the file we created through its descriptor: should the lock ever be broken
  // and re-taken, the beat goes to our unlinked inode, never to the new holder's lock
  const fh: FileHandle | null = await open(path, 'r').catch(() => null);
  const stop = startHeartbeat(async () => {
    const now = new Date();
    await fh?.utimes(now, now);
  }, beatMs);
  let released = false;
  return {
    path,
    owner,
    async release(): Promise<void> {
      if (released) return;
      released = true;
      stop();
      const current = await readLockOwner(path);
      if (current?.nonce === owner.nonce) await unlink(path).catch(() => undefined);
      await fh?.close().catch(() => undefined);
    },
  };
}

function lockHeld(path: string, owner: LockOwner | null, waitedMs: number): CodiError {
  const who = owner
    ? `pid ${owner.pid} on ${owner.hostname}${owner.purpose ? ` (${owner.purpose})` : ''} since ${owner.acquired_at}`
    : 'an unknown process';
  return new CodiError(
    'LOCK_HELD',
    `${path} is locked by ${who}; gave up after ${(waitedMs / 1000).toFixed(1)} s`,
    {
      file: path,
      hint: owner
        ? `wait for it to finish and try again; if no codi-adapter process ${owner.pid} runs on ${owner.hostname}, remove ${path}`
        : `wait and try again; if no codi-adapter process is running, remove ${path}`,
      details: { lock: path, owner },
    },
  );
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
