/**
 * What mounts leave in `<root>/adapters` while they work, or when they die: hidden staging folders
 * (`.staging-…`, filled without the mount lock), the old copy of a replaced adapter (`.trash-…`) and
 * temp links of the active link (`.active.….tmp`). The next mount cleans a dead mount's, or puts an
 * adapter back; readers that find an id missing while it is in `.trash-…` wait for the replacement.
 *
 * What a reader sees during `mount --force` (Node has no renameat2(RENAME_EXCHANGE), and a folder
 * cannot be renamed over a non-empty one): `<id>` is the complete old adapter, then for the moment
 * between the two renames (both under the mount lock) it is absent while `.trash-<id>-…` holds the old
 * one, then it is the complete new adapter. Never a partial one. Readers (`list`, `run`) that find
 * `<id>` absent while such a trash folder exists and the mount lock is alive wait for the swap
 * (`awaitReplacement`, bounded) instead of reporting the adapter as gone.
 */
import { createHash, randomBytes } from 'node:crypto';
import { lstat, readdir, readlink, rename, rm, stat } from 'node:fs/promises';
import { hostname } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { fsyncDir } from '../atomic.js';
import { finding, type Finding } from '../findings.js';
import { isValidAdapterId } from '../layout.js';
import { heartbeatStaleMs, lockFileIsStale, pidAlive } from '../lock.js';
import { ACTIVE_LINK, MOUNT_LOCK } from './volume.js';

/** How long a reader waits for a `mount --force` between its two renames (they take milliseconds). */
export const REPLACEMENT_WAIT_MS = 2000;

const HOST_TAG = createHash('sha256').update(hostname()).digest('hex').slice(0, 8);
/** `.staging-<id>-<host>-<pid>-<random>` / `.trash-…`: the id may contain "-", so it is matched from the end */
const LEFTOVER = /^\.(staging|trash)-(.+)-([0-9a-f]{8})-(\d+)-([0-9a-f]{12})$/u;
const ACTIVE_TEMP = new RegExp(`^\\.${ACTIVE_LINK}\\.(\\d+)\\.[0-9a-f]{12}\\.tmp$`, 'u');

/** A fresh name for this mount's staging folder, or for the old copy it moves aside. */
export function leftoverName(kind: 'staging' | 'trash', id: string): string {
  return `.${kind}-${id}-${HOST_TAG}-${process.pid}-${randomBytes(6).toString('hex')}`;
}

export function isLeftoverName(name: string): boolean {
  return LEFTOVER.test(name) || ACTIVE_TEMP.test(name);
}

/** The id whose old copy the `.trash-…` folder `name` holds; null for any other name. */
export function trashedId(name: string): string | null {
  const m = LEFTOVER.exec(name);
  return m?.[1] === 'trash' ? (m[2] ?? null) : null;
}

export interface Cleaned {
  /** leftovers deleted */
  removed: string[];
  /** adapters put back from `.trash-…` (a replacement that died between its two renames) */
  restored: string[];
}

/** Newest mtime of a folder and its direct entries: a copy in progress keeps touching them. */
async function lastTouched(path: string): Promise<number> {
  const st = await lstat(path).catch(() => null);
  if (!st) return 0;
  let newest = st.mtimeMs;
  if (st.isDirectory()) {
    for (const name of await readdir(path).catch(() => [] as string[])) {
      const s = await lstat(join(path, name)).catch(() => null);
      if (s) newest = Math.max(newest, s.mtimeMs);
    }
  }
  return newest;
}

/**
 * Whether the mount that fills this staging folder is gone. Staging folders are filled without the
 * mount lock (a copy can take minutes), so the lock says nothing about them; their mount keeps a
 * heartbeat on the folder's mtime instead. On this host a dead pid shows it at once; otherwise (a
 * mount in another container, or one killed with a container whose hostname is gone) a heartbeat
 * silent for `staleMs` does.
 */
async function stagingIsDead(path: string, m: RegExpExecArray, staleMs: number): Promise<boolean> {
  const sameHost = m[3] === HOST_TAG;
  const pid = Number(m[4]);
  if (sameHost && pid === process.pid) return false;
  if (sameHost && !pidAlive(pid)) return true;
  return Date.now() - (await lastTouched(path)) > staleMs;
}

/** Whether a mount holds the catalog's lock now (a lock whose holder is gone does not count). */
async function mountLockHeld(adaptersDir: string): Promise<boolean> {
  const lock = join(adaptersDir, MOUNT_LOCK);
  if (!(await lstat(lock).catch(() => null))) return false;
  return !(await lockFileIsStale(lock));
}

/**
 * Cleans what dead mounts left in `<root>/adapters`. Callers hold the mount lock, and everything but
 * copying happens under it, so a `.trash-…` folder or `.active.….tmp` link seen now belongs to a mount
 * that died, whatever host it ran on: a trash folder whose id is missing is a replacement that died
 * between its two renames and is put back; other trash and temp links are removed. A staging folder is
 * removed once its mount is gone (`stagingIsDead`).
 */
export async function cleanLeftovers(adaptersDir: string, staleMs = heartbeatStaleMs()): Promise<Cleaned> {
  const cleaned: Cleaned = { removed: [], restored: [] };
  let names: string[];
  try {
    names = await readdir(adaptersDir);
  } catch {
    return cleaned;
  }
  for (const name of names.sort()) {
    const path = join(adaptersDir, name);
    const m = LEFTOVER.exec(name);
    if (!m && !ACTIVE_TEMP.test(name)) continue;
    if (m?.[1] === 'staging' && !(await stagingIsDead(path, m, staleMs))) continue;
    const id = trashedId(name);
    if (id !== null) {
      const outcome = await restoreTrash(adaptersDir, name, id);
      if (outcome === 'restored') cleaned.restored.push(id);
      if (outcome !== 'leftover') continue;
    }
    await rm(path, { recursive: true, force: true }).catch(() => undefined);
    cleaned.removed.push(name);
  }
  if (cleaned.removed.length + cleaned.restored.length > 0) await fsyncDir(adaptersDir);
  return cleaned;
}

/**
 * Puts the old copy in `.trash-…` back under its id when the id is missing (a replacement that died
 * between its two renames): `restored`, or `kept` when that rename failed. `leftover` when the id is
 * there (or is not a valid id): the trash is only an old copy.
 */
async function restoreTrash(
  adaptersDir: string,
  name: string,
  id: string,
): Promise<'restored' | 'kept' | 'leftover'> {
  const home = join(adaptersDir, id);
  if (!isValidAdapterId(id) || (await lstat(home).catch(() => null))) return 'leftover';
  try {
    await rename(join(adaptersDir, name), home);
    return 'restored';
  } catch {
    // never delete the only copy of an adapter: leave it for the operator (list shows it)
    return 'kept';
  }
}

/**
 * The hidden leftovers in `<root>/adapters` by what the next mount does with them: `dead` ones (of
 * mounts that are gone) it cleans, or puts back; `live` ones belong to a mount at work.
 */
export async function classifyLeftovers(
  adaptersDir: string,
  names: readonly string[],
  staleMs = heartbeatStaleMs(),
): Promise<{ dead: string[]; live: string[] }> {
  const out = { dead: [] as string[], live: [] as string[] };
  let lockHeld: boolean | undefined;
  for (const name of [...names].sort()) {
    const m = LEFTOVER.exec(name);
    let live: boolean;
    if (m?.[1] === 'staging') live = !(await stagingIsDead(join(adaptersDir, name), m, staleMs));
    else live = lockHeld ??= await mountLockHeld(adaptersDir);
    (live ? out.live : out.dead).push(name);
  }
  return out;
}

export interface Replacement {
  /**
   * present: the path is there (perhaps after waiting); absent: it is not, and no replacement explains
   * it; replacing: a `mount --force` is between its two renames and did not finish within the wait;
   * interrupted: a replacement died between them (the next mount puts the old copy back)
   */
  state: 'present' | 'absent' | 'replacing' | 'interrupted';
  /** the id being replaced (the link's target for `active`), when replacing or interrupted */
  id?: string;
  /** the `.trash-<id>-…` folder holding the old copy, when replacing or interrupted */
  trash?: string;
}

/**
 * For a reader that finds `<adapters>/<id>` (or the `active` link's target) missing: waits, at most
 * `timeoutMs`, while a `mount --force` is between its two renames, so a replacement is not mistaken for
 * a missing adapter. Cheap when nothing is being replaced: one lstat and one readdir.
 */
export async function awaitReplacement(path: string, timeoutMs = REPLACEMENT_WAIT_MS): Promise<Replacement> {
  let target = resolve(path);
  const link = await lstat(target).catch(() => null);
  if (link?.isSymbolicLink()) {
    if (await stat(target).catch(() => null)) return { state: 'present' };
    // `active` → `<id>`: the id is what is being replaced
    target = resolve(dirname(target), await readlink(target));
  }
  const dir = dirname(target);
  const id = basename(target);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const trash = (await readdir(dir).catch(() => [] as string[])).find((n) => trashedId(n) === id);
    // after the listing: a swap that ends between the two is seen as done
    if (await lstat(target).catch(() => null)) return { state: 'present' };
    if (trash === undefined) return { state: 'absent' };
    if (!(await mountLockHeld(dir))) return { state: 'interrupted', id, trash };
    if (Date.now() >= deadline) return { state: 'replacing', id, trash };
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** What a reader says about an adapter missing because of a replacement (`awaitReplacement`). */
export function replacementFinding(r: Replacement): Finding {
  const id = r.id ?? 'the adapter';
  return r.state === 'replacing'
    ? finding(
        'ADAPTER_BEING_REPLACED',
        `${id} is being replaced by a mount --force in progress (the old copy is in ${r.trash ?? '.trash-…'})`,
        '.',
      )
    : finding(
        'ADAPTER_REPLACE_INTERRUPTED',
        `${id} is missing: a mount --force died between its two renames; the old copy is in ${r.trash ?? '.trash-…'}`,
        '.',
      );
}
