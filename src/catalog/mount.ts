/**
 * `mount`: puts a verified adapter on the models volume. A folder already in `<root>/adapters/` is
 * registered in place; anything else is installed (install.ts). Either way the runtime user must be
 * able to read it, and `--activate` points the `active` link at it.
 */
import { lstat, readlink, realpath, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { asCodiError, CodiError, ExitCode, environmentError } from '../errors.js';
import { isEnvironmentFinding, type Finding } from '../findings.js';
import { BIN_FILE } from '../layout.js';
import { sha256Ref, type AdapterMetadata } from '../metadata.js';
import { requireNotRevoked, type Revocations } from '../revocations.js';
import type { TrustedKeys } from '../signing/keys.js';
import { verifyAdapter, weightsSha256, type VerifyOptions } from '../verify.js';
import { aboveVolumeWarning, accessProblems, unreadableError } from './access.js';
import { readActive, switchActive } from './active.js';
import { install, type Mount, type MountAction, type Placed, type VerifiedReport } from './install.js';
import { notBinError, type Converted } from './to-safetensors.js';
import { cleanLeftovers, type Cleaned } from './leftovers.js';
import type { BaseBinding } from './base-record.js';
import type { BaseModel } from '../base-model.js';
import {
  ancestorsOf,
  catalogWritable,
  DEFAULT_MOUNT_LOCK_TIMEOUT_MS,
  notMountedHint,
  openCatalog,
  requireId,
  requireWritable,
  RUNTIME_USER,
  statusError,
  withMountLock,
  type Catalog,
  type RuntimeUser,
} from './volume.js';

export interface MountOptions {
  /** the models volume (MODEL_MOUNT_PATH) */
  root: string;
  /** install under this id instead of metadata.json `id` */
  id?: string;
  /** base model GGUF: checked at mount, and the llama.cpp adapter built into the cache */
  base?: string;
  /** point `<root>/adapters/active` at this adapter */
  activate?: boolean;
  /** replace an existing id whose contents differ */
  force?: boolean;
  /**
   * install a `.bin` adapter with adapter_model.safetensors converted from it (natively) instead; a
   * folder already in the catalog is converted and swapped in place
   */
  toSafetensors?: boolean;
  lockTimeoutMs?: number;
  /** the user that must be able to read the adapter (default 1000:1000) */
  runtimeUser?: RuntimeUser;
  /** install only an adapter signed by one of these keys (the copy is checked too) */
  trust?: TrustedKeys;
  /** refuse an adapter these revocations list (`--rules`) */
  revocations?: Revocations;
}

export interface MountResult {
  status: 'mounted';
  /** why, in words: the text after `Adapter Status: mounted` */
  reason: string;
  action: MountAction;
  /** the id held this very adapter already (same checksums): nothing was changed */
  already: boolean;
  id: string;
  path: string;
  source: string;
  adapter: { id: string; version: string; base_model: string; checksum: string };
  /** the trusted key whose model.sig was verified (`--trust`) */
  signed_by: string | null;
  /** `active` points at this adapter after the command */
  active: boolean;
  /** the command switched `active` */
  activated: boolean;
  gguf: { path: string; cached: boolean } | null;
  /**
   * --to-safetensors: the weights file installed and its sha256, and the file it was converted from;
   * null without it, or when the id held the converted adapter already
   */
  converted: Converted | null;
  /** with `--base`: the base model recorded in the adapter's metadata.json */
  base: BaseBinding | null;
  /** verification warnings */
  findings: Finding[];
  cleaned: Cleaned;
  readable_by: RuntimeUser;
}

export async function mountAdapter(source: string, options: MountOptions): Promise<MountResult> {
  if (options.id !== undefined) requireId(options.id, '--id', ExitCode.USAGE);
  const cat = await openCatalog(options.root, options.id);
  const src = await resolveSource(source, cat);
  const inPlace = cat.adaptersReal !== null && dirname(src) === cat.adaptersReal;
  const { verifyOptions: baseOptions, model } = await baseCheckOptions(options.base, options.force === true);
  const verifyOptions: VerifyOptions = {
    ...baseOptions,
    ...(options.trust ? { trust: options.trust } : {}),
  };
  const report = await verifyAdapter(src, verifyOptions);
  requireMountable(report, src);
  if (options.revocations) refuseRevoked(options.revocations, report);
  const toSafetensors = options.toSafetensors === true;
  const { layout } = report.verified;
  if (toSafetensors && layout.weightsFile !== BIN_FILE) {
    throw notBinError(
      src,
      layout.weightsFile,
      layout.files.some((f) => f.name === BIN_FILE),
    );
  }
  const m: Mount = {
    cat,
    id: inPlace ? inPlaceId(src, cat, options.id) : newId(report, options.id),
    src,
    report,
    verifyOptions,
    // converting a folder in the catalog replaces it with its converted copy: that is what was asked
    force: options.force === true || (inPlace && toSafetensors),
    toSafetensors,
    lockTimeoutMs: options.lockTimeoutMs ?? DEFAULT_MOUNT_LOCK_TIMEOUT_MS,
    user: options.runtimeUser ?? RUNTIME_USER,
  };
  const placed = inPlace && !toSafetensors ? await register(m) : await install(m);
  return finish(m, placed, options, model);
}

/**
 * With `--base`: the compatibility check against the base model (loaded only then), and whether the
 * base is the one metadata.json records, unless `--force` is to bind the adapter to this one.
 */
async function baseCheckOptions(
  base: string | undefined,
  force: boolean,
): Promise<{ verifyOptions: VerifyOptions; model: BaseModel | null }> {
  if (!base) return { verifyOptions: {}, model: null };
  // loaded on demand: `list` and plain mounts need none of the GGUF code
  const { baseCheckFor, readBaseForCheck } = await import('../base-model.js');
  const model = await readBaseForCheck(resolve(base));
  return {
    verifyOptions: { baseCheck: baseCheckFor(model, { identity: !force }) },
    model: model instanceof CodiError ? null : model,
  };
}

/** The source folder, resolved: a folder, not a link in the catalog, not the catalog itself. */
async function resolveSource(source: string, cat: Catalog): Promise<string> {
  let st;
  try {
    st = await stat(source);
  } catch (e) {
    const error = environmentError(e, source, 'read');
    throw statusError('not_mounted', error.code, `the adapter source ${error.message}`, {
      file: source,
      hint: notMountedHint(cat.root),
      cause: e,
    });
  }
  if (!st.isDirectory()) {
    throw statusError('not_mounted', 'PATH_NOT_DIRECTORY', `${source} is a file, not an adapter folder`, {
      file: source,
      hint: 'give the folder that holds adapter_config.json, metadata.json and the weights, not one of its files',
    });
  }
  await refuseCatalogLink(source, cat);
  const src = await realpath(source);
  if (src === cat.rootReal || src === cat.adaptersReal) {
    throw statusError(
      'not_mounted',
      'MOUNT_SOURCE_IS_CATALOG',
      `${source} is the catalog itself, not an adapter`,
      {
        hint: `give one adapter folder, e.g. ${join(cat.adapters, '<id>')}`,
      },
    );
  }
  return src;
}

/** A symbolic link in `<root>/adapters` is what list reports as invalid: refused (LAYOUT_SYMLINK). */
async function refuseCatalogLink(source: string, cat: Catalog): Promise<void> {
  const lexical = resolve(source);
  if (
    cat.adaptersReal === null ||
    (await realpath(dirname(lexical)).catch(() => null)) !== cat.adaptersReal ||
    !(await lstat(lexical)).isSymbolicLink()
  ) {
    return;
  }
  // the files are wherever the link points, perhaps off the volume
  const to = await readlink(lexical).catch(() => '?');
  throw statusError(
    'invalid',
    'LAYOUT_SYMLINK',
    `${source} is a symbolic link in the catalog (to ${to}); an adapter there must be a folder on the volume`,
    {
      file: source,
      hint: `replace the link with the adapter folder itself, or install a copy: codi-adapter mount ${await realpath(lexical).catch(() => to)} --id ${basename(lexical)} --force`,
    },
  );
}

/** Fails closed on any error finding: status invalid, exit 1, the first finding's code. */
function requireMountable(report: VerifiedReport, path: string): void {
  const errors = report.findings.filter((f) => f.level === 'error');
  const first = errors[0];
  if (!report.ok && first) {
    const more = errors.length > 1 ? ` (and ${errors.length - 1} more)` : '';
    const unreadable = report.findings.some(isEnvironmentFinding);
    // a failed verification: its first error's code, and exit 3 when some file could not be read
    throw statusError(unreadable ? 'not_mounted' : 'invalid', first.code, `${first.message}${more}`, {
      exitCode: unreadable ? ExitCode.ENVIRONMENT : ExitCode.INVALID,
      file: path,
      ...(first.hint ? { hint: first.hint } : {}),
      details: { findings: report.findings },
    });
  }
}

/** ADAPTER_REVOKED (Adapter Status: invalid) for an adapter the rules file revokes. */
function refuseRevoked(revocations: Revocations, report: VerifiedReport): void {
  const metadata = report.verified.metadata as AdapterMetadata;
  try {
    requireNotRevoked(
      revocations,
      metadata.id,
      sha256Ref(weightsSha256(report) ?? ''),
      `${metadata.id} ${metadata.version}`,
    );
  } catch (e) {
    const error = asCodiError(e);
    if (!error) throw e;
    throw statusError('invalid', error.code, error.message, {
      ...(error.file === undefined ? {} : { file: error.file }),
      hint: error.hint ?? 'mount another version',
    });
  }
}

/** The id of a folder already in the catalog: its name (`--id` may only repeat it). */
function inPlaceId(src: string, cat: Catalog, wanted: string | undefined): string {
  const id = basename(src);
  requireId(id, 'the folder name', ExitCode.INVALID);
  if (wanted !== undefined && wanted !== id) {
    throw statusError(
      'not_mounted',
      'MOUNT_ID_MISMATCH',
      `${src} is already in ${cat.adapters} under the name ${id}; it cannot be registered as ${wanted}`,
    );
  }
  return id;
}

/** The id an installed copy gets: `--id`, else metadata.json's. */
function newId(report: VerifiedReport, wanted: string | undefined): string {
  const id = wanted ?? (report.verified.metadata as AdapterMetadata).id;
  requireId(id, 'metadata.json id', ExitCode.INVALID);
  return id;
}

/** A folder already in the catalog: readable by the runtime user, and nothing to copy. */
async function register(m: Mount): Promise<Placed> {
  const problems = await accessProblems(m.report.verified.layout, ancestorsOf(m.cat).volume, m.user);
  if (problems.length > 0) throw unreadableError(m.src, m.cat.root, m.id, problems, m.user);
  // every mount cleans what interrupted ones left, when it may write there (registering needs no write)
  const cleaned = (await catalogWritable(m.cat))
    ? await withMountLock(m.cat, m.lockTimeoutMs, 'clean', () => cleanLeftovers(m.cat.adapters))
    : { removed: [], restored: [] };
  return {
    action: 'registered',
    path: m.src,
    findings: m.report.findings,
    cleaned,
    report: m.report,
    converted: null,
  };
}

/** The adapter is in place: its base recorded and the GGUF built with `--base`, `--activate`, the result. */
async function finish(
  m: Mount,
  placed: Placed,
  options: MountOptions,
  model: BaseModel | null,
): Promise<MountResult> {
  const base =
    options.base && model
      ? await bindBase(m, placed.path, resolve(options.base), model, options.force === true)
      : null;
  let activated = false;
  if (options.activate) {
    await requireWritable(m.cat);
    activated = await withMountLock(m.cat, m.lockTimeoutMs, `activate ${m.id}`, () =>
      switchActive(m.cat.adapters, m.id),
    );
  }
  const gguf = options.base ? await buildGguf(placed.path, options.base, m.id) : null;
  // recorded now: what verification said of the source no longer holds for the mounted adapter
  const findings = base ? placed.findings.filter((f) => f.code !== 'BASE_UNRECORDED') : placed.findings;
  const metadata = placed.report.verified.metadata as AdapterMetadata;
  const adapter = {
    id: metadata.id,
    version: metadata.version,
    base_model: metadata.base_model,
    checksum: sha256Ref(weightsSha256(placed.report) ?? ''),
  };
  const warning = await aboveVolumeWarning(m.cat, m.user);
  return {
    status: 'mounted',
    reason: reasonFor(placed, m.src, `${adapter.id} ${adapter.version}`),
    action: placed.action,
    already: placed.action === 'unchanged',
    path: placed.path,
    id: m.id,
    source: m.src,
    adapter,
    signed_by: m.report.signature?.ok ? (m.report.signature.signer?.fingerprint ?? null) : null,
    readable_by: m.user,
    active: (await readActive(m.cat.adapters)) === m.id,
    activated,
    gguf,
    converted: placed.converted,
    base,
    findings: warning ? [...findings, warning] : findings,
    cleaned: placed.cleaned,
  };
}

/** The base recorded in the mounted adapter's metadata.json (the code loaded only for `--base`). */
async function bindBase(
  m: Mount,
  path: string,
  basePath: string,
  model: BaseModel,
  force: boolean,
): Promise<BaseBinding> {
  const { bindToBase } = await import('./base-record.js');
  // only --force rebinds (a --to-safetensors in place forces the replacement, not the binding)
  return bindToBase(path, basePath, model.name, { force, lockTimeoutMs: m.lockTimeoutMs, id: m.id });
}

function reasonFor(placed: Placed, src: string, name: string): string {
  const converted = placed.converted
    ? `, ${placed.converted.from.file} converted to ${placed.converted.file}`
    : '';
  if (placed.converted && placed.path === src) return `converted in place at ${src}${converted}`;
  return `${placedReason(placed, src, name)}${converted}`;
}

function placedReason(placed: Placed, src: string, name: string): string {
  switch (placed.action) {
    case 'registered':
      return `registered in place at ${src}`;
    case 'unchanged':
      return `already mounted at ${placed.path} with the same checksums; nothing changed`;
    case 'replaced':
      return `replaced ${placed.path} with ${name}`;
    case 'installed':
      return `installed ${name} at ${placed.path}`;
  }
}

async function buildGguf(
  dir: string,
  basePath: string,
  id: string,
): Promise<{ path: string; cached: boolean }> {
  try {
    const { convertAdapter } = await import('../convert.js');
    // the volume may be served after a crash or on another machine: the new entry is fsynced
    const r = await convertAdapter(dir, { base: basePath, durable: true });
    return { path: r.output, cached: r.cached };
  } catch (thrown) {
    const e = asCodiError(thrown);
    if (!e) throw thrown;
    // the adapter is in place and verified; only the prebuilt GGUF is missing (run builds it later)
    throw new CodiError(e.code, `${id} is mounted, but its GGUF could not be built: ${e.message}`, {
      exitCode: e.exitCode,
      ...(e.hint === undefined ? {} : { hint: e.hint }),
      ...(e.file === undefined ? {} : { file: e.file }),
      details: { ...e.details, status: 'mounted' },
      cause: e,
    });
  }
}
