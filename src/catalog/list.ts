/**
 * `list`: every adapter in `<root>/adapters` with its status, as verify sees it: without `--verify`
 * verify's checks short of hashing (`quickCheck`), with it the full verification.
 */
import { readFileSync } from 'node:fs';
import { lstat, readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { nowMs } from '../clock.js';
import { ExitCode, environmentError, isCodiError } from '../errors.js';
import { finding, findingFromError, type Finding } from '../findings.js';
import { readSafetensorsHeaderSync } from '../files/safetensors.js';
import { isValidAdapterId, scanLayout, scanPlainLayoutSync } from '../layout.js';
import { sha256Ref } from '../metadata.js';
import type { Revocations } from '../revocations.js';
import type { Revocation } from '../rules.js';
import { quickCheck, type AdapterReads, type QuickCheck } from '../adapter-checks.js';
import {
  aboveVolumeWarning,
  accessFix,
  accessProblems,
  accessProblemsSync,
  type AccessProblem,
} from './access.js';
import { readActive } from './active.js';
import {
  awaitReplacement,
  classifyLeftovers,
  isLeftoverName,
  replacementFinding,
  trashedId,
  type Replacement,
} from './leftovers.js';
import {
  ACTIVE_LINK,
  adapterIdProblem,
  ancestorsOf,
  openCatalog,
  RUNTIME_USER,
  type AdapterStatus,
  type RuntimeUser,
} from './volume.js';

export interface CatalogEntry {
  id: string;
  path: string;
  version: string | null;
  base_model: string | null;
  /** the base model GGUF metadata.json binds it to (mount --base, promote --base); null: none recorded */
  base: { sha256: string; name?: string; file?: string } | null;
  /** `sha256:<hex>` of the weights: recorded in metadata.json, or computed with --verify */
  checksum: string | null;
  checksum_verified: boolean;
  /** bytes, all files */
  size: number;
  /** `revoked`: valid, but its id and weights checksum are revoked in the rules file (`--rules`) */
  status: AdapterStatus | 'revoked';
  /** why and since when, when it is revoked */
  revoked: Revocation | null;
  active: boolean;
  /** the first error (or why the runtime user cannot read it); null when mounted */
  finding: Finding | null;
  /** the first warning (e.g. ADAPTER_ID_MISMATCH), with or without --verify */
  warning: Finding | null;
  errors: number;
  warnings: number;
}

export interface CatalogListing {
  root: string;
  adapters_dir: string;
  /** the id `active` points to */
  active: string | null;
  /** `active` points to an id that is not there */
  active_dangling: boolean;
  /** the checksums were recomputed (--verify) */
  verified: boolean;
  adapters: CatalogEntry[];
  /** hidden leftovers of interrupted mounts (the next mount cleans them, or puts an adapter back) */
  leftovers: string[];
  /** hidden staging or trash folders of mounts at work now */
  in_progress: string[];
  /** a folder above the volume UID 1000 cannot pass (ROOT_PATH_UNREACHABLE), or null */
  root_warning: Finding | null;
  durationMs: number;
}

export interface ListOptions {
  root: string;
  /** recompute every checksum (full verify); without it only headers and metadata are read */
  verify?: boolean;
  /** adapters inspected at once */
  concurrency?: number;
  runtimeUser?: RuntimeUser;
  /** the revocations of the rules file (`--rules`): a revoked adapter shows as such */
  revocations?: Revocations;
}

/**
 * Blocking reads for `list`: a thousand adapters are some twenty thousand tiny metadata reads, and
 * Node's promise file API costs more per call (thread pool hop, FileHandle objects, GC) than the
 * system calls themselves. Blocking is harmless in a command that does nothing else meanwhile.
 */
const blockingReads: AdapterReads = {
  // folders with anything but regular files (links, sub-folders, devices) take the full scan
  scan: async (dir) => scanPlainLayoutSync(dir) ?? scanLayout(dir),
  read: (path) => Promise.resolve(readFileSync(path)),
  header: (path) => Promise.resolve(readSafetensorsHeaderSync(path)),
};

/** The folder's entries by kind: adapter folders, links other than `active`, hidden leftovers. */
interface Dirents {
  names: string[];
  links: string[];
  hidden: string[];
}

export async function listAdapters(options: ListOptions): Promise<CatalogListing> {
  const started = nowMs();
  const cat = await openCatalog(options.root);
  const user = options.runtimeUser ?? RUNTIME_USER;
  const listing: CatalogListing = {
    root: cat.root,
    adapters_dir: cat.adapters,
    active: null,
    active_dangling: false,
    verified: options.verify === true,
    adapters: [],
    leftovers: [],
    in_progress: [],
    root_warning: null,
    durationMs: 0,
  };
  if (cat.adaptersReal !== null) {
    const dirents = await readCatalog(cat.adapters);
    listing.active = await readActive(cat.adapters);
    const missing = await readLeftovers(cat.adapters, dirents, listing);
    // the runtime user reaches nothing below a folder it cannot pass through: checked once for all
    const reach = await accessProblems(null, ancestorsOf(cat).volume, user);
    listing.root_warning = await aboveVolumeWarning(cat, user);
    const inspect = async (path: string, id: string): Promise<CatalogEntry> =>
      markRevoked(await inspectEntry(path, id, options.verify === true, user, reach), options.revocations);
    const entries = await mapPool(dirents.names, options.concurrency ?? 32, (name) =>
      inspectListed(join(cat.adapters, name), name, inspect),
    );
    entries.push(
      ...(await Promise.all(dirents.links.map((name) => linkEntry(join(cat.adapters, name), name)))),
    );
    entries.push(...missing);
    entries.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    for (const e of entries) e.active = e.id === listing.active;
    listing.adapters = entries;
    listing.active_dangling = listing.active !== null && !entries.some((e) => e.active);
  }
  listing.durationMs = Math.round(nowMs() - started);
  return listing;
}

async function readCatalog(adapters: string): Promise<Dirents> {
  let dirents;
  try {
    dirents = await readdir(adapters, { withFileTypes: true });
  } catch (e) {
    throw environmentError(e, adapters, 'read');
  }
  const out: Dirents = { names: [], links: [], hidden: [] };
  for (const d of dirents) {
    if (d.name.startsWith('.')) {
      if (isLeftoverName(d.name)) out.hidden.push(d.name);
      continue;
    }
    if (d.name === ACTIVE_LINK && d.isSymbolicLink()) continue;
    (d.isSymbolicLink() ? out.links : out.names).push(d.name);
  }
  return out;
}

/**
 * Sorts the hidden leftovers into the listing's `leftovers` and `in_progress`. An id whose folder is
 * in `.trash-…` right now is a mount --force between its two renames: once it is back it joins
 * `dirents.names`; still missing, it is returned as an entry that says why.
 */
async function readLeftovers(
  adapters: string,
  dirents: Dirents,
  listing: CatalogListing,
): Promise<CatalogEntry[]> {
  if (dirents.hidden.length === 0) return [];
  ({ dead: listing.leftovers, live: listing.in_progress } = await classifyLeftovers(
    adapters,
    dirents.hidden,
  ));
  const listed = new Set([...dirents.names, ...dirents.links]);
  const missing: CatalogEntry[] = [];
  for (const id of new Set(dirents.hidden.map(trashedId))) {
    if (id === null || listed.has(id) || !isValidAdapterId(id)) continue;
    const r = await awaitReplacement(join(adapters, id));
    if (r.state === 'present') dirents.names.push(id);
    else if (r.state !== 'absent') missing.push(replacedEntry(join(adapters, id), id, r));
  }
  return missing;
}

/** An adapter folder listed; one gone since the listing is perhaps being replaced under our feet. */
async function inspectListed(
  path: string,
  name: string,
  inspect: (path: string, id: string) => Promise<CatalogEntry>,
): Promise<CatalogEntry> {
  const entry = await inspect(path, name);
  if (entry.status === 'mounted' || (await lstat(path).catch(() => null))) return entry;
  const r = await awaitReplacement(path);
  if (r.state === 'present') return inspect(path, name);
  return r.state === 'absent' ? entry : replacedEntry(path, name, r);
}

async function mapPool<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

function blankEntry(path: string, id: string): CatalogEntry {
  return {
    id,
    path,
    version: null,
    base_model: null,
    base: null,
    checksum: null,
    checksum_verified: false,
    size: 0,
    status: 'invalid',
    revoked: null,
    active: false,
    finding: null,
    warning: null,
    errors: 0,
    warnings: 0,
  };
}

/**
 * A link in the catalog other than `active`: refused like a link inside an adapter (LAYOUT_SYMLINK),
 * since it can point anywhere, off the volume the runtime mounts included.
 */
async function linkEntry(path: string, id: string): Promise<CatalogEntry> {
  const to = await readlink(path).catch(() => '?');
  return {
    ...blankEntry(path, id),
    status: 'invalid',
    errors: 1,
    finding: finding(
      'LAYOUT_SYMLINK',
      `${id} is a symbolic link (to ${to}); an adapter in the catalog must be a folder on the volume, not a link that can point anywhere`,
      '.',
      {
        hint: `replace the link with the adapter folder itself, or install a copy: codi-adapter mount <its target> --id ${id} --force`,
      },
    ),
  };
}

function replacedEntry(path: string, id: string, r: Replacement): CatalogEntry {
  return { ...blankEntry(path, id), status: 'not_mounted', errors: 1, finding: replacementFinding(r) };
}

/**
 * What verify says of one adapter (the full verification, or its checks short of hashing), and the
 * weights' sha256: as hashed, or as metadata.json records it.
 */
async function check(
  path: string,
  full: boolean,
): Promise<Pick<QuickCheck, 'findings' | 'layout' | 'metadata'> & { sum: string | null }> {
  if (full) {
    // verify and its hashing, loaded for --verify only
    const { verifyAdapter, weightsSha256 } = await import('../verify.js');
    const report = await verifyAdapter(path);
    const { layout, metadata } = report.verified;
    return { findings: report.findings, layout, metadata, sum: weightsSha256(report) };
  }
  const quick = await quickCheck(path, blockingReads);
  const { weightsFile } = quick.layout;
  return { ...quick, sum: weightsFile ? (quick.checksums.get(weightsFile) ?? null) : null };
}

async function inspectEntry(
  path: string,
  id: string,
  full: boolean,
  user: RuntimeUser,
  reach: readonly AccessProblem[],
): Promise<CatalogEntry> {
  const entry = blankEntry(path, id);
  let checked;
  try {
    checked = await check(path, full);
  } catch (e) {
    if (!isCodiError(e)) throw e;
    entry.finding = findingFromError(e, id);
    entry.status = e.exitCode === ExitCode.ENVIRONMENT ? 'not_mounted' : 'invalid';
    entry.errors = 1;
    return entry;
  }
  const { findings, layout, metadata, sum } = checked;
  entry.checksum = sum ? sha256Ref(sum) : null;
  entry.checksum_verified = full && sum !== null;
  entry.version = metadata?.version ?? null;
  entry.base_model = metadata?.base_model ?? null;
  entry.base = metadata?.base ?? null;
  entry.size = layout.files.reduce((n, f) => n + f.size, 0);
  const problem = adapterIdProblem(id);
  if (problem) {
    findings.unshift(
      finding('MOUNT_ID_INVALID', `the folder name is not a valid adapter id: ${problem}`, '.'),
    );
  }
  const errors = findings.filter((f) => f.level === 'error');
  entry.errors = errors.length;
  entry.warnings = findings.length - errors.length;
  entry.finding = errors[0] ?? null;
  entry.warning = findings.find((f) => f.level === 'warning') ?? null;
  entry.status = errors.length > 0 ? 'invalid' : 'mounted';
  if (entry.status === 'mounted') {
    const problems = [
      ...reach,
      ...(full ? await accessProblems(layout, [], user) : accessProblemsSync(layout, user)),
    ];
    if (problems.length > 0) unreadableEntry(entry, problems, user);
  }
  return entry;
}

/** A valid adapter whose id and weights checksum are revoked: `revoked`, with the revocation. */
function markRevoked(entry: CatalogEntry, revocations: Revocations | undefined): CatalogEntry {
  if (!revocations || entry.status !== 'mounted' || entry.checksum === null) return entry;
  const revoked = revocations.of(entry.id, entry.checksum);
  if (!revoked) return entry;
  entry.status = 'revoked';
  entry.revoked = revoked;
  entry.errors += 1;
  entry.finding = finding(
    'ADAPTER_REVOKED',
    `revoked in ${revocations.file ?? 'the rules file'} since ${revoked.revoked_at}: ${revoked.reason}`,
    '.',
  );
  return entry;
}

/** A valid adapter the runtime user cannot read or reach: not_mounted, with the fix. */
function unreadableEntry(entry: CatalogEntry, problems: readonly AccessProblem[], user: RuntimeUser): void {
  const [first] = problems;
  if (!first) return;
  entry.status = 'not_mounted';
  entry.finding = finding(
    'ADAPTER_UNREADABLE',
    `UID ${user.uid} cannot ${first.needs === 'x' ? 'pass through' : 'read'} ${first.path} (${first.owner} ${first.mode})${problems.length > 1 ? ` and ${problems.length - 1} more` : ''}`,
    first.path,
    { hint: accessFix(problems, entry.path, user) },
  );
}
