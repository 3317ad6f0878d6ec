/** The lock file: exclusive, bounded waiting, stale locks broken only when their owner is gone. */
import { spawnSync } from 'node:child_process';
import { readFile, readdir, stat, utimes, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CodiError } from '../../src/errors.js';
import {
  acquireLock,
  lockIsStale,
  pidAlive,
  readLockOwner,
  withLock,
  type LockOwner,
} from '../../src/lock.js';
import { openTempDir as tempDir } from '../helpers/catalog.js';

/** A pid that existed a moment ago and is gone now. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']);
  return Number(r.stdout.toString());
}

function owner(over: Partial<LockOwner>): string {
  return JSON.stringify({
    pid: process.pid,
    hostname: hostname(),
    nonce: 'feedfacefeedface',
    acquired_at: new Date().toISOString(),
    ...over,
  });
}

async function heldError(promise: Promise<unknown>): Promise<CodiError> {
  try {
    await promise;
  } catch (e) {
    if (e instanceof CodiError) return e;
    throw e;
  }
  throw new Error('the lock was acquired');
}

describe('lock', () => {
  it('records who holds it, and removes it on release', async () => {
    const path = join(await tempDir(), 'rules.yml.lock');
    const lock = await acquireLock(path, { purpose: 'test' });
    const recorded = await readLockOwner(path);
    expect(recorded).toMatchObject({ pid: process.pid, hostname: hostname(), purpose: 'test' });
    expect(recorded?.nonce).toBe(lock.owner.nonce);
    await lock.release();
    await expect(stat(path)).rejects.toThrow();
    // no temp files are left next to it
    expect((await readdir(join(path, '..'))).filter((n) => n.includes('.tmp'))).toEqual([]);
  });

  it('a second taker waits the bounded time, then fails with LOCK_HELD (exit 3) naming the holder', async () => {
    const path = join(await tempDir(), 'rules.yml.lock');
    const lock = await acquireLock(path, { purpose: 'first' });
    const started = Date.now();
    let waited = false;
    const e = await heldError(acquireLock(path, { timeoutMs: 300, onWait: () => (waited = true) }));
    expect(Date.now() - started).toBeGreaterThanOrEqual(290);
    expect(waited).toBe(true);
    expect(e.code).toBe('LOCK_HELD');
    expect(e.exitCode).toBe(3);
    expect(e.message).toContain(`pid ${process.pid}`);
    expect(e.message).toContain('(first)');
    await lock.release();
  });

  it('a waiter gets the lock as soon as it is released', async () => {
    const path = join(await tempDir(), 'x.lock');
    const lock = await acquireLock(path);
    setTimeout(() => void lock.release(), 100);
    const second = await acquireLock(path, { timeoutMs: 5000, pollMs: 10 });
    expect((await readLockOwner(path))?.nonce).toBe(second.owner.nonce);
    await second.release();
  });

  it('breaks a lock whose process on this host is gone', async () => {
    const path = join(await tempDir(), 'x.lock');
    await writeFile(path, owner({ pid: deadPid() }));
    const lock = await acquireLock(path, { timeoutMs: 0 });
    expect((await readLockOwner(path))?.pid).toBe(process.pid);
    await lock.release();
  });

  it('does not break a live lock, nor one from another host until it is old', async () => {
    const dir = await tempDir();
    const live = join(dir, 'live.lock');
    await writeFile(live, owner({}));
    expect((await heldError(acquireLock(live, { timeoutMs: 0 }))).code).toBe('LOCK_HELD');

    const foreign = join(dir, 'foreign.lock');
    await writeFile(foreign, owner({ hostname: 'another-host', pid: deadPid() }));
    expect((await heldError(acquireLock(foreign, { timeoutMs: 0 }))).code).toBe('LOCK_HELD');
    const old = new Date(Date.now() - 11 * 60_000);
    await utimes(foreign, old, old);
    const lock = await acquireLock(foreign, { timeoutMs: 0 });
    await lock.release();
  });

  it('the next holder removes what a taker killed mid-way left: its temp record, a dead breaker', async () => {
    const dir = await tempDir();
    const path = join(dir, 'rules.yml.lock');
    const dead = deadPid();
    await writeFile(join(dir, `.rules.yml.lock.${dead}.0123456789ab.tmp`), owner({ pid: dead }));
    await writeFile(join(dir, `.rules.yml.lock.1.0123456789ab.tmp`), owner({ pid: 1 }));
    await writeFile(join(dir, 'rules.yml.lock.break'), '');
    const old = new Date(Date.now() - 60_000);
    await utimes(join(dir, 'rules.yml.lock.break'), old, old);
    const lock = await acquireLock(path);
    await lock.release();
    // pid 1 is alive: its record may be a taker at work
    expect((await readdir(dir)).sort()).toEqual(['.rules.yml.lock.1.0123456789ab.tmp']);
  });

  it('treats an unreadable record as held until it is stale', () => {
    expect(lockIsStale(null, 1000)).toBe(false);
    expect(lockIsStale(null, 11 * 60_000)).toBe(true);
    expect(pidAlive(process.pid)).toBe(true);
    expect(pidAlive(deadPid())).toBe(false);
  });

  it('release leaves a lock alone that is no longer ours', async () => {
    const path = join(await tempDir(), 'x.lock');
    const lock = await acquireLock(path);
    await writeFile(path, owner({ nonce: 'someoneelse00000' }));
    await lock.release();
    expect((await readLockOwner(path))?.nonce).toBe('someoneelse00000');
  });

  it('serialises read-modify-write cycles: 40 concurrent increments, none lost', async () => {
    const dir = await tempDir();
    const counter = join(dir, 'counter');
    await writeFile(counter, '0');
    await Promise.all(
      Array.from({ length: 40 }, () =>
        withLock(join(dir, 'counter.lock'), { timeoutMs: 20_000, pollMs: 5 }, async () => {
          const n = Number(await readFile(counter, 'utf8'));
          await new Promise((r) => setTimeout(r, 1));
          await writeFile(counter, String(n + 1));
        }),
      ),
    );
    expect(await readFile(counter, 'utf8')).toBe('40');
  });

  it('a missing folder is an environment error (exit 3)', async () => {
    const e = await heldError(acquireLock('/nonexistent/dir/x.lock', { timeoutMs: 0 }));
    expect(e.exitCode).toBe(3);
  });
});
