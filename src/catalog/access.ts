/**
 * Whether the runtime user (UID 1000 in the container) can read an adapter and reach it: computed from
 * mode bits and owners, as the kernel would decide for that user. ACLs and supplementary groups are
 * not known here and are not considered.
 */
import { lstatSync } from 'node:fs';
import { lstat, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { CodiError } from '../errors.js';
import { finding, type Finding } from '../findings.js';
import type { AdapterLayout } from '../layout.js';
import {
  ancestorsOf,
  notMountedHint,
  RUNTIME_USER,
  statusError,
  type Catalog,
  type RuntimeUser,
} from './volume.js';

export interface AccessProblem {
  path: string;
  kind: 'file' | 'directory';
  /** `uid:gid` */
  owner: string;
  /** octal permission bits, e.g. `0600` */
  mode: string;
  needs: 'r' | 'r+x' | 'x';
}

type Owned = { mode: number; uid: number; gid: number };

/**
 * Whether `user` has the `need` bits (4 r, 2 w, 1 x) on a file with this mode and owner, by the POSIX
 * class rule: the owner class applies to the owner even when it grants less than "other" does.
 */
export function userCan(st: Owned, need: number, user: RuntimeUser): boolean {
  if (user.uid === 0) return true;
  const bits =
    st.uid === user.uid ? (st.mode >> 6) & 7 : st.gid === user.gid ? (st.mode >> 3) & 7 : st.mode & 7;
  return (bits & need) === need;
}

export function describeAccess(
  path: string,
  st: Owned,
  kind: AccessProblem['kind'],
  needs: AccessProblem['needs'],
): AccessProblem {
  return {
    path,
    kind,
    owner: `${st.uid}:${st.gid}`,
    mode: `0${(st.mode & 0o777).toString(8).padStart(3, '0')}`,
    needs,
  };
}

/**
 * What `user` could not read in the adapter at `dir` (files need r; folders r and x), and which of
 * `ancestors` it could not pass through (x).
 */
export async function accessProblems(
  layout: AdapterLayout | null,
  ancestors: readonly string[],
  user: RuntimeUser = RUNTIME_USER,
): Promise<AccessProblem[]> {
  const problems: AccessProblem[] = [];
  for (const a of ancestors) {
    const st = await stat(a).catch(() => null);
    if (st && !userCan(st, 1, user)) problems.push(describeAccess(a, st, 'directory', 'x'));
  }
  if (!layout) return problems;
  const folders = await Promise.all(
    layoutFolders(layout).map(async (p): Promise<Folder> => [p, await lstat(p).catch(() => null)]),
  );
  return [...problems, ...layoutProblems(layout, folders, user)];
}

/** accessProblems for `list`'s blocking reads, of the adapter alone (the files' modes come from the scan). */
export function accessProblemsSync(layout: AdapterLayout, user: RuntimeUser): AccessProblem[] {
  const folders = layoutFolders(layout).map((p): Folder => [
    p,
    lstatSync(p, { throwIfNoEntry: false }) ?? null,
  ]);
  return layoutProblems(layout, folders, user);
}

/** A folder of the adapter and its lstat (null: gone since the scan). */
type Folder = readonly [string, Owned | null];

/** The adapter folder and the folders below it. */
function layoutFolders(layout: AdapterLayout): string[] {
  return [layout.dir, ...layout.directories.map((rel) => join(layout.dir, rel))];
}

/** The problems in the adapter: its folders need r and x, its files r. */
function layoutProblems(
  layout: AdapterLayout,
  folders: readonly Folder[],
  user: RuntimeUser,
): AccessProblem[] {
  const problems: AccessProblem[] = [];
  for (const [path, st] of folders) {
    if (st && !userCan(st, 5, user)) problems.push(describeAccess(path, st, 'directory', 'r+x'));
  }
  for (const f of layout.files) {
    if (!userCan(f, 4, user)) problems.push(describeAccess(join(layout.dir, f.name), f, 'file', 'r'));
  }
  return problems;
}

/** How to let `user` in: x on the folders it cannot pass through, else read access to all of `dir`. */
export function accessFix(problems: readonly AccessProblem[], dir: string, user: RuntimeUser): string {
  const closed = problems.filter((p) => p.needs === 'x').map((p) => p.path);
  return closed.length > 0
    ? `chmod a+x ${closed.join(' ')}`
    : `chown -R ${user.uid}:${user.gid} ${dir}   or   chmod -R a+rX ${dir}`;
}

/** ADAPTER_UNREADABLE (exit 3, not_mounted): what `user` cannot read or pass, and the fix. */
export function unreadableError(
  dir: string,
  root: string,
  id: string,
  problems: AccessProblem[],
  user: RuntimeUser,
): CodiError {
  const shown = problems
    .slice(0, 4)
    .map((p) => `${p.path} (${p.owner} ${p.mode}, needs ${p.needs})`)
    .join(', ');
  const more = problems.length > 4 ? ` and ${problems.length - 4} more` : '';
  const fix = accessFix(problems, dir, user);
  const verb = problems.every((p) => p.needs === 'x') ? 'pass through' : 'read';
  return statusError(
    'not_mounted',
    'ADAPTER_UNREADABLE',
    `UID ${user.uid} (the runtime user) cannot ${verb} ${shown}${more}`,
    {
      file: dir,
      hint: `${fix} — ${notMountedHint(root, id, user)}`,
      details: { problems },
    },
  );
}

/**
 * A folder above the volume that UID 1000 cannot pass: a warning, not an error. In the container the
 * volume is /models and these folders are not on its way; only a `run` on this host as UID 1000 would
 * not reach the adapters.
 */
export async function aboveVolumeWarning(cat: Catalog, user: RuntimeUser): Promise<Finding | null> {
  const problems = await accessProblems(null, ancestorsOf(cat).above, user);
  if (problems.length === 0) return null;
  const shown = problems.map((p) => `${p.path} (${p.owner} ${p.mode})`).join(', ');
  return finding(
    'ROOT_PATH_UNREACHABLE',
    `UID ${user.uid} cannot pass through ${shown} above the models volume ${cat.root}: fine when the volume is bind-mounted into the container, but codi-adapter run on this host as UID ${user.uid} would not reach it`,
    cat.root,
    {
      hint: `chmod a+x ${problems.map((p) => p.path).join(' ')}   (only if run reads the volume at this path)`,
    },
  );
}
