/** The lock file: exclusive, bounded waiting, stale locks broken only when their owner is gone. */
import { spawnSync } from 'node:child_process';
import { readFile, readdir, stat, utimes, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  acquireLock,
  lockIsStale,
  pidAlive,
  readLockOwner,
  withLock,
  type LockOwner,
} from '../../src/lock.js';
import { openTempDir as tempDir } from '../helpers/catalog.js';
import { rejected } from '../helpers/errors.js';

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
    const e = await rejected(acquireLock(path, { timeoutMs: 300, onWait: () => (waited = true) }));
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
    expect((await rejected(acquireLock(live, { timeoutMs: 0 }))).code).toBe('LOCK_HELD');

    const foreign = join(dir, 'foreign.lock');
    await writeFile(foreign, owner({ hostname: 'another-host', pid: deadPid() }));
    expect((await rejected(acquireLock(foreign, { timeoutMs: 0 }))).code).toBe('LOCK_HELD');
    const old = new Date(Date.now() - 11 * 60_000);
    await utimes(foreign, old, old);
    const lock = await acquireLock(foreign, { timeoutMs: 0 });
    await lock.release();
  });

  it('the next holder removes what a taker killed mid-way left: its temp record, a dead breaker', async () => {
    const dir = await tempDir();
    const path = join(dir, 'rules.yml.lock');
    const dead = deadPid();
    const old = new Date(Date.now() - 60_000);
    // older than the heartbeat bound: a taker that died, whatever its pid (pid 1 is alive here, but a
    // temp name carries no host: it may be another container's)
    for (const name of [`.rules.yml.lock.${dead}.0123456789ab.tmp`, `.rules.yml.lock.1.0123456789ab.tmp`]) {
      await writeFile(join(dir, name), owner({ pid: 1 }));
      await utimes(join(dir, name), old, old);
    }
    // fresh, with a pid that is gone here: a taker at work in another container, unless its record
    // says it was made on this host
    await writeFile(
      join(dir, `.rules.yml.lock.${dead}.ba9876543210.tmp`),
      owner({ pid: dead, hostname: 'another-host' }),
    );
    await writeFile(join(dir, `.rules.yml.lock.${dead}.cccccccccccc.tmp`), owner({ pid: dead }));
    // fresh and empty (killed between creating it and writing the record): the pid in its name decides
    await writeFile(join(dir, `.rules.yml.lock.${dead}.dddddddddddd.tmp`), '');
    await writeFile(join(dir, `.rules.yml.lock.${process.pid}.eeeeeeeeeeee.tmp`), '');
    await writeFile(join(dir, 'rules.yml.lock.break'), '');
    await utimes(join(dir, 'rules.yml.lock.break'), old, old);
    const lock = await acquireLock(path);
    await lock.release();
    expect((await readdir(dir)).sort()).toEqual(
      [`.rules.yml.lock.${dead}.ba9876543210.tmp`, `.rules.yml.lock.${process.pid}.eeeeeeeeeeee.tmp`].sort(),
    );
  });

  it("a holder keeps a heartbeat: the lock file's mtime is refreshed while it is held, recorded in the lock", async () => {
    const path = join(await tempDir(), 'x.lock');
    const saved = process.env.CODI_TEST_HEARTBEAT_STALE_MS;
    process.env.CODI_TEST_HEARTBEAT_STALE_MS = '300';
    try {
      const lock = await acquireLock(path);
      expect(lock.owner.heartbeat_ms).toBe(50);
      expect((await readLockOwner(path))?.heartbeat_ms).toBe(50);
      const old = new Date(Date.now() - 60_000);
      await utimes(path, old, old);
      await new Promise((r) => setTimeout(r, 200));
      expect(Date.now() - (await stat(path)).mtimeMs).toBeLessThan(1000);
      await lock.release();
      await expect(stat(path)).rejects.toThrow();
    } finally {
      if (saved === undefined) delete process.env.CODI_TEST_HEARTBEAT_STALE_MS;
      else process.env.CODI_TEST_HEARTBEAT_STALE_MS = saved;
    }
  });

  it("another host's lock: respected while its heartbeat is fresh, broken once it stops for the bound", async () => {
    const dir = await tempDir();
    const path = join(dir, 'x.lock');
    // pid 1 exists here too: only the heartbeat can tell (a restarted container under the same name)
    for (const host of ['another-host', hostname()]) {
      await writeFile(path, owner({ hostname: host, pid: 1, heartbeat_ms: 5000 }));
      expect((await rejected(acquireLock(path, { timeoutMs: 0 }))).code).toBe('LOCK_HELD');
      const quiet = new Date(Date.now() - 31_000);
      await utimes(path, quiet, quiet);
      const lock = await acquireLock(path, { timeoutMs: 0 });
      expect((await readLockOwner(path))?.nonce).toBe(lock.owner.nonce);
      await lock.release();
    }
  });

  it("stale by heartbeat: the bound, three of the holder's own beats if slower, never for a lock without one", () => {
    const base = { pid: 1, hostname: 'another-host', nonce: 'n', acquired_at: '' };
    expect(lockIsStale({ ...base, heartbeat_ms: 5000 }, 29_000, undefined, 30_000)).toBe(false);
    expect(lockIsStale({ ...base, heartbeat_ms: 5000 }, 31_000, undefined, 30_000)).toBe(true);
    expect(lockIsStale({ ...base, heartbeat_ms: 5000 }, 600, undefined, 500)).toBe(false);
    expect(lockIsStale({ ...base, heartbeat_ms: 100 }, 600, undefined, 500)).toBe(true);
    expect(lockIsStale({ ...base, heartbeat_ms: 20_000 }, 50_000, undefined, 30_000)).toBe(false);
    // written before heartbeats existed: only its age makes it stale
    expect(lockIsStale(base, 31_000, undefined, 30_000)).toBe(false);
    expect(lockIsStale(base, 11 * 60_000)).toBe(true);
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
    const e = await rejected(acquireLock('/nonexistent/dir/x.lock', { timeoutMs: 0 }));
    expect(e.exitCode).toBe(3);
  });
});
