/**
 * Installing an adapter into `<root>/adapters/<id>` without ever exposing a partial one there: the copy
 * is made in a hidden staging folder in the same directory (same file system), verified there,
 * fsynced, and renamed into place. Replacing (`--force`) moves the old folder aside first and deletes
 * it only once the new one is in place; a crash between those two renames leaves the old adapter
 * intact under `.trash-…`, and the next mount puts it back (leftovers.ts).
 */
import { chmod, lstat, mkdir, rename, rm, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { fsyncDir } from '../atomic.js';
import { CodiError, environmentError, isCodiError } from '../errors.js';
import { finding, type Finding } from '../findings.js';
import { METADATA_FILE } from '../layout.js';
import { heartbeatIntervalMs, startHeartbeat } from '../lock.js';
import { pausePoint } from '../test-hooks.js';
import { verifyAdapter, type VerifiedAdapter, type VerifyOptions, type VerifyReport } from '../verify.js';
import { accessProblems, unreadableError } from './access.js';
import { copyAdapter } from './copy.js';
import { cleanLeftovers, leftoverName, type Cleaned } from './leftovers.js';
import { writeSafetensorsCopy, type Converted } from './to-safetensors.js';
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
  /** install the `.bin` weights as adapter_model.safetensors (mount --to-safetensors) */
  toSafetensors: boolean;
  lockTimeoutMs: number;
  user: RuntimeUser;
}

/** Where the adapter is now, and what it took. */
export interface Placed {
  action: MountAction;
  path: string;
  findings: Finding[];
  cleaned: Cleaned;
  /** the verification of the adapter as installed (a converted copy's own; else the source's) */
  report: VerifiedReport;
  /** what --to-safetensors made; null without it, or when the id held the converted adapter already */
  converted: Converted | null;
}

/** Installs the verified source as `<root>/adapters/<id>` (or finds it there already). */
export async function install(m: Mount): Promise<Placed> {
  await requireWritable(m.cat);
  // the runtime user must be able to reach <root>/adapters/<id> at all: x on the volume's folders
  const reach = await accessProblems(null, ancestorsOf(m.cat).volume, m.user);
  if (reach.length > 0) throw unreadableError(m.cat.adapters, m.cat.root, m.id, reach, m.user);

  const path = join(m.cat.adapters, m.id);
  const cleaned = await withMountLock(m.cat, m.lockTimeoutMs, 'clean', () => cleanLeftovers(m.cat.adapters));
  // a converted copy's contents are known once it is made: then the comparison is made at the swap
  if (!m.toSafetensors) {
    const before = await compareExisting(path, contentKey(m.report));
    if (before.kind === 'differs' && !m.force) throw conflict(m.id, path, before.why);
    if (before.kind === 'same') {
      return {
        action: 'unchanged',
        path,
        findings: m.report.findings,
        cleaned,
        report: m.report,
        converted: null,
      };
    }
  }
  return { ...(await stageAndSwap(m, path)), path, cleaned };
}

/**
 * The identity mount compares: every covered file's sha256, who the adapter says it is, and its
 * signature (the same adapter signed anew, or by another key, is other contents).
 */
function contentKey(report: VerifyReport, converted: Converted | null = null): string {
  const sums = report.checksums.map((c) =>
    converted && c.file === converted.from.file
      ? `${converted.file}=${converted.sha256}`
      : `${c.file}=${c.actual ?? '-'}`,
  );
  const m = report.adapter;
  return JSON.stringify([m.id, m.version, m.base_model, sums.sort(), report.signature?.sha256 ?? null]);
}

type Existing = { kind: 'absent' } | { kind: 'same' } | { kind: 'differs'; why: string };

async function compareExisting(path: string, wanted: string): Promise<Existing> {
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
  if (contentKey(report) === wanted) return { kind: 'same' };
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

/**
 * Copies (or, with --to-safetensors, converts) into a staging folder, verifies the copy, and renames
 * it into place under the mount lock.
 */
async function stageAndSwap(
  m: Mount,
  final: string,
): Promise<{
  action: MountAction;
  findings: Finding[];
  report: VerifiedReport;
  converted: Converted | null;
}> {
  const staging = await makeStaging(m);
  // the staging folder is filled without the mount lock: its mtime is our sign of life for the
  // cleaner of another mount, which cannot see our pid from another container or host
  const stopHeartbeat = startHeartbeat(async () => {
    const now = new Date();
    await utimes(staging, now, now);
  }, heartbeatIntervalMs());
  try {
    await pausePoint('mount:staged');
    const converted = m.toSafetensors ? await writeSafetensorsCopy(m.src, staging, m.report) : null;
    if (!converted) await copyAdapter(m.src, staging, m.report.verified.layout);
    await pausePoint('mount:copied');
    const expected = contentKey(m.report, converted);
    const { findings, report } = await verifyCopy(m, staging, expected);
    await pausePoint('mount:verified-copy');
    const action = await withMountLock(m.cat, m.lockTimeoutMs, `mount ${m.id}`, () =>
      swapIn(m, staging, final, expected),
    );
    return { action, findings, report, converted: action === 'unchanged' ? null : converted };
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
async function verifyCopy(
  m: Mount,
  staging: string,
  expected: string,
): Promise<{ findings: Finding[]; report: VerifiedReport }> {
  const copy = await verifyAdapter(staging, m.verifyOptions);
  const firstError = copy.findings.find((f) => f.level === 'error');
  if (!copy.ok || contentKey(copy) !== expected) {
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
  return { findings, report: copy };
}

/**
 * Under the mount lock: the staging folder becomes `<id>`, the old copy (with --force) goes. The
 * adapter there already (installed while we copied; with --to-safetensors, not compared before) is
 * left as it is when it holds the same contents.
 */
async function swapIn(m: Mount, staging: string, final: string, expected: string): Promise<MountAction> {
  const now = await lstat(final).catch(() => null);
  if (!now) {
    await rename(staging, final);
    await fsyncDir(m.cat.adapters);
    await pausePoint('mount:renamed');
    return 'installed';
  }
  if (!m.force || m.toSafetensors) {
    const there = await compareExisting(final, expected);
    if (there.kind === 'same') return 'unchanged';
    if (!m.force) {
      throw conflict(m.id, final, there.kind === 'differs' ? there.why : 'it appeared during the mount');
    }
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
