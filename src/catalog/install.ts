/**
 * Installing an adapter into `<root>/adapters/<id>` without ever exposing a partial one there: the copy
 * is made in a hidden staging folder in the same directory (same file system), verified there,
 * fsynced, and renamed into place. Replacing (`--force`) moves the old folder aside first and deletes
 * it only once the new one is in place; a crash between those two renames leaves the old adapter
 * intact under `.trash-…`, and the next mount puts it back (leftovers.ts).
 */
import { chmod, constants, lstat, mkdir, open, rename, rm, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { fsyncDir } from '../atomic.js';
import { CodiError, environmentError, isCodiError } from '../errors.js';
import { finding, type Finding } from '../findings.js';
import { isPromoteFile, METADATA_FILE, type AdapterLayout } from '../layout.js';
import { heartbeatIntervalMs, startHeartbeat } from '../lock.js';
import { pausePoint } from '../test-hooks.js';
import { verifyAdapter, type VerifiedAdapter, type VerifyOptions, type VerifyReport } from '../verify.js';
import { accessProblems, unreadableError } from './access.js';
import { cleanLeftovers, leftoverName, type Cleaned } from './leftovers.js';
import {
  ancestorsOf,
  requireWritable,
  statusError,
  withMountLock,
  type Catalog,
  type RuntimeUser,
} from './volume.js';

export type VerifiedReport = VerifyReport & { verified: VerifiedAdapter };

export type MountAction = 'registered' | 'installed' | 'replaced' | 'unchanged';

/** One mount at work: what its steps share. */
export interface Mount {
  cat: Catalog;
  id: string;
  /** the source folder, resolved */
  src: string;
  /** the source's verification */
  report: VerifiedReport;
  verifyOptions: VerifyOptions;
  /** replace an id whose contents differ */
  force: boolean;
  lockTimeoutMs: number;
  user: RuntimeUser;
}

/** Where the adapter is now, and what it took. */
export interface Placed {
  action: MountAction;
  path: string;
  findings: Finding[];
  cleaned: Cleaned;
}

/** Installs the verified source as `<root>/adapters/<id>` (or finds it there already). */
export async function install(m: Mount): Promise<Placed> {
  await requireWritable(m.cat);
  // the runtime user must be able to reach <root>/adapters/<id> at all: x on the volume's folders
  const reach = await accessProblems(null, ancestorsOf(m.cat).volume, m.user);
  if (reach.length > 0) throw unreadableError(m.cat.adapters, m.cat.root, m.id, reach, m.user);

  const path = join(m.cat.adapters, m.id);
  const cleaned = await withMountLock(m.cat, m.lockTimeoutMs, 'clean', () => cleanLeftovers(m.cat.adapters));
  const before = await compareExisting(path, m.report);
  if (before.kind === 'differs' && !m.force) throw conflict(m.id, path, before.why);
  if (before.kind === 'same') return { action: 'unchanged', path, findings: m.report.findings, cleaned };
  return { ...(await stageAndSwap(m, path)), path, cleaned };
}

/**
 * The identity mount compares: every covered file's sha256, who the adapter says it is, and its
 * signature (the same adapter signed anew, or by another key, is other contents).
 */
function contentKey(report: VerifyReport): string {
  const sums = report.checksums.map((c) => `${c.file}=${c.actual ?? '-'}`).sort();
  const m = report.adapter;
  return JSON.stringify([m.id, m.version, m.base_model, sums, report.signature?.sha256 ?? null]);
}

type Existing = { kind: 'absent' } | { kind: 'same' } | { kind: 'differs'; why: string };

async function compareExisting(path: string, wanted: VerifyReport): Promise<Existing> {
  const st = await lstat(path).catch(() => null);
  if (!st) return { kind: 'absent' };
  if (!st.isDirectory()) return { kind: 'differs', why: `${path} is not a folder` };
  let report: VerifyReport;
  try {
    report = await verifyAdapter(path);
  } catch (e) {
    return { kind: 'differs', why: isCodiError(e) ? e.message : String(e) };
  }
  if (!report.ok) {
    const first = report.findings.find((f) => f.level === 'error');
    return {
      kind: 'differs',
      why: `the adapter there is invalid (${first?.code ?? 'invalid'}: ${first?.message ?? ''})`,
    };
  }
  if (contentKey(report) === contentKey(wanted)) return { kind: 'same' };
  const v = report.adapter.version ?? '?';
  return { kind: 'differs', why: `it holds ${report.adapter.id ?? '?'} ${v} with other checksums` };
}

function conflict(id: string, path: string, why: string): CodiError {
  return statusError(
    'not_mounted',
    'MOUNT_CONFLICT',
    `${path} exists and differs: ${why}; it was left as it is`,
    {
      file: path,
      details: { id },
    },
  );
}

/** Copies into a staging folder, verifies the copy, and renames it into place under the mount lock. */
async function stageAndSwap(m: Mount, final: string): Promise<{ action: MountAction; findings: Finding[] }> {
  const staging = await makeStaging(m);
  // the staging folder is filled without the mount lock: its mtime is our sign of life for the
  // cleaner of another mount, which cannot see our pid from another container or host
  const stopHeartbeat = startHeartbeat(async () => {
    const now = new Date();
    await utimes(staging, now, now);
  }, heartbeatIntervalMs());
  try {
    await pausePoint('mount:staged');
    await copyAdapter(m.src, staging, m.report.verified.layout);
    await pausePoint('mount:copied');
    const findings = await verifyCopy(m, staging);
    await pausePoint('mount:verified-copy');
    const action = await withMountLock(m.cat, m.lockTimeoutMs, `mount ${m.id}`, () =>
      swapIn(m, staging, final),
    );
    return { action, findings };
  } finally {
    stopHeartbeat();
    await rm(staging, { recursive: true, force: true }).catch(() => undefined);
  }
}

async function makeStaging(m: Mount): Promise<string> {
  const staging = join(m.cat.adapters, leftoverName('staging', m.id));
  try {
    await mkdir(staging, { mode: 0o755 });
    await chmod(staging, 0o755);
  } catch (e) {
    throw statusError(
      'not_mounted',
      'ROOT_NOT_WRITABLE',
      `cannot create ${staging}: ${environmentError(e, staging).message}`,
      {
        file: m.cat.adapters,
        cause: e,
      },
    );
  }
  return staging;
}

/**
 * The copy is what will be served: verifies it, and proves it is what was verified at the source.
 * Returns its findings, as they stand for the adapter under its id.
 */
async function verifyCopy(m: Mount, staging: string): Promise<Finding[]> {
  const copy = await verifyAdapter(staging, m.verifyOptions);
  const firstError = copy.findings.find((f) => f.level === 'error');
  if (!copy.ok || contentKey(copy) !== contentKey(m.report)) {
    throw statusError(
      'invalid',
      'MOUNT_SOURCE_CHANGED',
      firstError
        ? `the copy does not verify (${firstError.code}: ${firstError.message}): the source changed while it was being copied, or the copy is damaged; nothing was mounted`
        : 'the copy differs from the adapter that was verified: the source changed while it was being copied; nothing was mounted',
      {
        file: m.src,
        details: { findings: copy.findings },
      },
    );
  }
  // verify named the staging folder; what counts is the name it will have
  const findings = copy.findings.filter((f) => f.code !== 'ADAPTER_ID_MISMATCH');
  for (const d of m.report.verified.layout.directories.filter((name) => !name.includes('/'))) {
    findings.push(
      finding(
        'MOUNT_SUBDIRECTORY_SKIPPED',
        `${d}/ is not part of a PEFT adapter and was not copied`,
        `${d}/`,
      ),
    );
  }
  if (copy.adapter.id !== m.id) {
    findings.push(
      finding(
        'ADAPTER_ID_MISMATCH',
        `installed as ${JSON.stringify(m.id)}, but metadata.json says id ${JSON.stringify(copy.adapter.id)}`,
        METADATA_FILE,
        { pointer: '/id' },
      ),
    );
  }
  const problems = await accessProblems(copy.verified.layout, [], m.user);
  if (problems.length > 0) throw unreadableError(staging, m.cat.root, m.id, problems, m.user);
  return findings;
}

/** Under the mount lock: the staging folder becomes `<id>`, the old copy (with --force) goes. */
async function swapIn(m: Mount, staging: string, final: string): Promise<MountAction> {
  const now = await lstat(final).catch(() => null);
  if (!now) {
    await rename(staging, final);
    await fsyncDir(m.cat.adapters);
    await pausePoint('mount:renamed');
    return 'installed';
  }
  if (!m.force) {
    // someone installed this id while we copied
    const there = await compareExisting(final, m.report);
    if (there.kind === 'same') return 'unchanged';
    throw conflict(m.id, final, there.kind === 'differs' ? there.why : 'it appeared during the mount');
  }
  const trash = join(m.cat.adapters, leftoverName('trash', m.id));
  await rename(final, trash);
  await fsyncDir(m.cat.adapters);
  await pausePoint('mount:old-moved');
  try {
    await rename(staging, final);
  } catch (e) {
    await rename(trash, final).catch(() => undefined);
    throw environmentError(e, final, 'written');
  }
  await fsyncDir(m.cat.adapters);
  await pausePoint('mount:swapped');
  await rm(trash, { recursive: true, force: true });
  return 'replaced';
}

/**
 * Copies the verified files into `dest`: regular files only (O_NOFOLLOW, so a file swapped for a link
 * after verification is not followed), made readable by everyone (0644, folders 0755), each fsynced,
 * then the folders.
 */
async function copyAdapter(src: string, dest: string, layout: AdapterLayout): Promise<void> {
  const buffer = Buffer.allocUnsafe(4 * 1024 * 1024);
  // a promote's lock and temp file (its own, or left by one that was killed) are not the adapter's, nor
  // is anything in a subfolder (LAYOUT_SUBDIRECTORY: a trainer's checkpoint-N/, say, often gigabytes)
  for (const f of layout.files.filter((file) => !isPromoteFile(file.name) && !file.name.includes('/'))) {
    await copyOneFile(join(src, f.name), join(dest, f.name), f.name, buffer);
    await pausePoint(`mount:copied:${f.name}`);
  }
  for (const d of [...layout.directories].reverse()) await fsyncDir(join(dest, d));
  await fsyncDir(dest);
}

/** One file of the adapter, through `buffer`: written 0644 and fsynced. */
async function copyOneFile(from: string, to: string, name: string, buffer: Buffer): Promise<void> {
  let input;
  try {
    input = await open(from, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (e) {
    throw sourceChanged(name, e);
  }
  try {
    if (!(await input.stat()).isFile()) throw sourceChanged(name, new Error('no longer a regular file'));
    const output = await open(to, 'wx', 0o644).catch((e: unknown) => {
      throw environmentError(e, to, 'written');
    });
    try {
      for (;;) {
        const { bytesRead } = await input.read(buffer, 0, buffer.length, null);
        if (bytesRead === 0) break;
        let written = 0;
        while (written < bytesRead) {
          const { bytesWritten } = await output.write(buffer, written, bytesRead - written);
          written += bytesWritten;
        }
      }
      await output.chmod(0o644);
      await output.sync();
    } catch (e) {
      throw isCodiError(e) ? e : environmentError(e, to, 'written');
    } finally {
      await output.close();
    }
  } finally {
    await input.close();
  }
}

function sourceChanged(file: string, cause: unknown): CodiError {
  return statusError(
    'invalid',
    'MOUNT_SOURCE_CHANGED',
    `${file} could not be copied (${(cause as Error).message}): the source changed while it was being copied; nothing was mounted`,
    {
      file,
      hint: 'make sure nothing writes to the source folder during the mount',
      cause,
    },
  );
}
