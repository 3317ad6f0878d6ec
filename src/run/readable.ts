/**
 * Whether the user `run` runs as (UID 1000 in the image) can read what it is about to serve. Asked of
 * the kernel with access(2), so ACLs, supplementary groups and read-only mounts count as they will when
 * the files are opened; an existing folder it cannot read is `not_mounted`, not a verification failure.
 */
import { constants } from 'node:fs';
import { access, lstat, readdir } from 'node:fs/promises';
import { join, parse, resolve, sep } from 'node:path';
import { describeAccess, type AccessProblem } from '../catalog/access.js';
import { RUNTIME_USER, type RuntimeUser } from '../catalog/volume.js';

/** The user this process runs as; where the platform has no UIDs, the image's. */
export function currentUser(): RuntimeUser {
  return { uid: process.getuid?.() ?? RUNTIME_USER.uid, gid: process.getgid?.() ?? RUNTIME_USER.gid };
}

/**
 * Whom a hint asks to make the files readable for: this user, but for root (who reads everything) the
 * image's user, who is the one that will serve the volume.
 */
export function hintUser(): RuntimeUser {
  const user = currentUser();
  return user.uid === 0 ? RUNTIME_USER : user;
}

// as deep and as many entries as the adapter layout scan reads; anything past it is refused there
const MAX_DEPTH = 8;
const MAX_ENTRIES = 10_000;

function canAccess(path: string, mode: number): Promise<boolean> {
  return access(path, mode).then(
    () => true,
    () => false,
  );
}

async function problem(path: string, needs: AccessProblem['needs']): Promise<AccessProblem | null> {
  const st = await lstat(path).catch(() => null);
  return st ? describeAccess(path, st, needs === 'r' ? 'file' : 'directory', needs) : null;
}

/**
 * What this process cannot read in the adapter folder `dir`: the folder and the folders below it need
 * read and search (r+x), its regular files read. Symlinks and special files are the layout check's.
 */
export async function unreadableParts(dir: string): Promise<AccessProblem[]> {
  const problems: AccessProblem[] = [];
  let budget = MAX_ENTRIES;
  const walk = async (folder: string, depth: number): Promise<void> => {
    if (!(await canAccess(folder, constants.R_OK | constants.X_OK))) {
      const p = await problem(folder, 'r+x');
      if (p) problems.push(p);
      return;
    }
    for (const entry of await readdir(folder, { withFileTypes: true })) {
      if (--budget < 0) return;
      const path = join(folder, entry.name);
      if (entry.isFile() && !(await canAccess(path, constants.R_OK))) {
        const p = await problem(path, 'r');
        if (p) problems.push(p);
      } else if (entry.isDirectory() && depth < MAX_DEPTH) {
        await walk(path, depth + 1);
      }
    }
  };
  await walk(dir, 0);
  return problems;
}

/** The first folder on the way to `path` that this process cannot pass through (x), if any. */
export async function unpassableFolder(path: string): Promise<AccessProblem | null> {
  const full = resolve(path);
  const { root } = parse(full);
  const parts = full.slice(root.length).split(sep).filter(Boolean);
  let folder = root;
  // the last part is the target itself: reaching it needs x on every folder above it
  for (const part of parts.slice(0, -1)) {
    folder = join(folder, part);
    if (!(await canAccess(folder, constants.X_OK))) return problem(folder, 'x');
  }
  return null;
}
