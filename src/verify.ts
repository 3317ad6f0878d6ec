/**
 * `verify`: proves an adapter directory is what it claims: layout, adapter_config.json, the weights
 * header, the tensors against the config, metadata.json and every file's sha256. Every check runs
 * even after an earlier one failed, so one run reports everything that is wrong.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beginSha256, sha256File, type HashProgressCallback, type PendingHash } from './checksum.js';
import { CodiError, ExitCode, environmentError, isCodiError } from './errors.js';
import {
  capFindings,
  countFindings,
  findingFromError,
  isEnvironmentFinding,
  type Finding,
} from './findings.js';
import { formatBytes, plural, thousands } from './text.js';
import { trace } from './trace.js';
import { readSafetensorsHeader, type SafetensorsHeader } from './formats/safetensors.js';
import {
  BIN_FILE,
  CONFIG_FILE,
  METADATA_FILE,
  METADATA_LOCK_FILE,
  isPromoteFile,
  SAFETENSORS_FILE,
  scanLayout,
  UNREADABLE_HINT,
  type AdapterLayout,
} from './layout.js';
import { adapterIdFinding, parseMetadata, uncoveredFileFindings, type AdapterMetadata } from './metadata.js';
import { describeConfig, parseLoraConfig, type LoraConfig } from './peft-config.js';
import { analyzeTensors, type LoraModule, type TensorDescriptor, type TensorStats } from './peft-tensors.js';
import { nowMs } from './clock.js';

export type CheckName = 'layout' | 'config' | 'weights' | 'tensors' | 'metadata' | 'checksums' | 'base';
export type CheckStatus = 'pass' | 'warn' | 'fail' | 'skip';

export interface CheckResult {
  name: CheckName;
  status: CheckStatus;
  summary: string;
}

export interface ChecksumResult {
  file: string;
  expected: string;
  actual: string | null;
  ok: boolean;
}

export interface VerifyReport {
  ok: boolean;
  adapter: { id: string | null; version: string | null; base_model: string | null; path: string };
  findings: Finding[];
  checks: CheckResult[];
  tensors: TensorStats;
  checksums: ChecksumResult[];
  durationMs: number;
}

export interface VerifyProgress {
  file: string;
  bytesDone: number;
  bytesTotal: number;
}

export interface VerifyOptions {
  strict?: boolean;
  /** called while large files are hashed */
  onHashProgress?: (progress: VerifyProgress) => void;
  /**
   * Who hashes the weights file: by default a worker thread started at once (`beginSha256`); convert
   * adopts the hash it began before anything was loaded (`adoptEarly`).
   */
  weightsHash?: (path: string, size: number, onProgress?: HashProgressCallback) => PendingHash;
  /** extra checks against a base model, given the parsed adapter (convert's compatibility check) */
  baseCheck?: (adapter: VerifiedAdapter) => Promise<{ findings: Finding[]; summary: string }>;
}

/** What verify learned, for the commands that act on a verified adapter. */
export interface VerifiedAdapter {
  layout: AdapterLayout;
  /** the parsed safetensors header, when the weights are safetensors */
  safetensors: SafetensorsHeader | null;
  config: LoraConfig | null;
  metadata: AdapterMetadata | null;
  modules: LoraModule[];
  tensors: TensorDescriptor[];
  checksums: ChecksumResult[];
}

/** The resolution printed with a checksum failure (the README's troubleshooting table says the same). */
export const CHECKSUM_HINT =
  're-copy the adapter files, or regenerate metadata.json checksums if the change is intended';

const CHECK_FILES: Record<Exclude<CheckName, 'base'>, (f: Finding) => boolean> = {
  layout: (f) => f.code.startsWith('LAYOUT_') || f.code === 'FILE_UNCOVERED' || f.code === 'PROMOTE_LEFTOVER',
  config: (f) => f.code.startsWith('CONFIG_'),
  weights: (f) =>
    f.code.startsWith('SAFETENSORS_') ||
    f.code.startsWith('PICKLE_') ||
    f.code.startsWith('BIN_') ||
    f.code.startsWith('JSON_'),
  tensors: (f) => f.code.startsWith('TENSOR_') || f.code === 'TARGET_UNMATCHED',
  metadata: (f) => f.code.startsWith('METADATA_') || f.code === 'ADAPTER_ID_MISMATCH',
  checksums: (f) => f.code.startsWith('CHECKSUM_'),
};

export async function verifyAdapter(
  dir: string,
  options: VerifyOptions = {},
): Promise<VerifyReport & { verified: VerifiedAdapter }> {
  const inspection = await inspectAdapter(dir, options);
  try {
    return await inspection.finish();
  } finally {
    inspection.cancel();
  }
}

/**
 * Verification in two phases, so a caller can start work that only needs the structure (convert
 * writes its GGUF) while the checksums are still being computed, and gate the result on `finish`.
 */
export interface Inspection {
  /** what is known before the checksums: everything else */
  readonly verified: VerifiedAdapter;
  /** errors found so far (every check but the checksums) */
  readonly errors: readonly Finding[];
  /** the sha256 metadata.json expects for the weights file, if it lists one */
  readonly expectedWeightsSha256: string | null;
  /** waits for the checksums and returns the full report (once; later calls return the same) */
  finish(): Promise<VerifyReport & { verified: VerifiedAdapter }>;
  /** stops hashing that is no longer wanted */
  cancel(): void;
}

export async function inspectAdapter(dir: string, options: VerifyOptions = {}): Promise<Inspection> {
  const started = nowMs();
  const layout = await scanLayout(dir);
  // The weights file must be covered by the checksums anyway: hash it from the start, in a worker
  // thread, while everything else is checked here.
  const early = layout.weightsFile
    ? {
        file: layout.weightsFile,
        hash: (options.weightsHash ?? beginSha256)(
          join(layout.dir, layout.weightsFile),
          layout.files.find((f) => f.name === layout.weightsFile)?.size ?? 0,
          progressFor(options, layout.weightsFile),
        ),
      }
    : null;
  try {
    return await inspect(layout, early, options, started);
  } catch (e) {
    early?.hash.cancel();
    throw e;
  }
}

function progressFor(options: VerifyOptions, file: string): HashProgressCallback | undefined {
  const report = options.onHashProgress;
  if (!report) return undefined;
  return (done, total) => {
    report({ file, bytesDone: done, bytesTotal: total });
  };
}

/**
 * How verify reads an adapter's files. `fileReads` by default; `list`, which reads a thousand adapters
 * and does nothing else meanwhile, passes blocking ones.
 */
export interface AdapterReads {
  scan(dir: string): Promise<AdapterLayout>;
  read(path: string): Promise<Buffer>;
  header(path: string): Promise<SafetensorsHeader>;
}

export const fileReads: AdapterReads = {
  scan: scanLayout,
  read: (path) => readFile(path),
  header: readSafetensorsHeader,
};

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false });

/** One adapter's checks as they run: the findings so far, and the summaries of the checklist lines. */
class AdapterChecks {
  readonly findings: Finding[];
  readonly summaries: Partial<Record<CheckName, string>> = {};
  readonly present: ReadonlySet<string>;
  /** files a read failed on (not readable: an environment error): reported once, by the first reader */
  private readonly unreadable = new Set<string>();

  constructor(
    readonly layout: AdapterLayout,
    readonly reads: AdapterReads,
  ) {
    this.findings = [...layout.findings];
    this.present = new Set(layout.files.map((f) => f.name));
  }

  /**
   * One at a time: `push(...list)` passes every finding as an argument, and a hostile file yields
   * hundreds of thousands of them (more than the stack holds).
   */
  add(list: readonly Finding[]): void {
    for (const f of list) this.findings.push(f);
  }

  /** What a reader of `file` threw, as a finding (a file that cannot be read, once). */
  report(e: unknown, file: string): void {
    const finding = asFinding(e, file, this.layout.dir);
    if (isEnvironmentFinding(finding)) {
      if (this.unreadable.has(file)) return;
      this.unreadable.add(file);
      finding.hint ??= UNREADABLE_HINT;
    }
    this.findings.push(finding);
  }

  /** `file` as UTF-8 text; null (and a finding) when it cannot be read or is not UTF-8. */
  async readText(file: string, jsonCode: string): Promise<string | null> {
    let bytes: Buffer;
    try {
      bytes = await this.reads.read(join(this.layout.dir, file));
    } catch (e) {
      this.report(environmentError(e, file, 'read'), file);
      return null;
    }
    try {
      return utf8.decode(bytes);
    } catch {
      this.findings.push({ level: 'error', code: jsonCode, message: `${file} is not valid UTF-8`, file });
      return null;
    }
  }
}

async function checkConfig(c: AdapterChecks): Promise<LoraConfig | null> {
  if (!c.present.has(CONFIG_FILE)) return null;
  const text = await c.readText(CONFIG_FILE, 'CONFIG_JSON');
  if (text === null) return null;
  const parsed = parseLoraConfig(text);
  c.add(parsed.findings);
  if (parsed.config) c.summaries.config = describeConfig(parsed.config);
  return parsed.config;
}

interface Weights {
  tensors: TensorDescriptor[];
  /** the parsed safetensors header, when the weights are safetensors */
  safetensors: SafetensorsHeader | null;
  readable: boolean;
}

/** The weights: the safetensors header or the pickle scanned, never the tensor data. */
async function checkWeights(c: AdapterChecks): Promise<Weights> {
  const { layout } = c;
  const weights: Weights = { tensors: [], safetensors: null, readable: false };
  if (layout.weightsFile === SAFETENSORS_FILE) {
    try {
      const header = await c.reads.header(join(layout.dir, SAFETENSORS_FILE));
      weights.safetensors = header;
      // the header's own entries (a TensorDescriptor and more): a copy would cost an object per tensor
      weights.tensors = header.tensors;
      weights.readable = true;
      c.summaries.weights = `safetensors, ${plural(header.tensors.length, 'tensor')}, header ${formatBytes(header.headerLength)}`;
    } catch (e) {
      c.report(e, SAFETENSORS_FILE);
    }
  }
  if (c.present.has(BIN_FILE)) {
    // scanned even beside a safetensors file: some loaders still pick a .bin up
    try {
      // the pickle scanner (and the zip reader under it) loads only for the adapters that need it
      const { scanTorchBin } = await import('./formats/pickle.js');
      const scan = await scanTorchBin(join(layout.dir, BIN_FILE));
      if (layout.weightsFile === BIN_FILE) {
        weights.tensors = scan.tensors;
        weights.readable = true;
        c.summaries.weights = `PyTorch pickle (scanned, not loaded), ${plural(scan.tensors.length, 'tensor')}`;
        c.findings.push({
          level: 'warning',
          code: 'BIN_PREFER_SAFETENSORS',
          message: `${BIN_FILE} is a pickle; safetensors is preferred (no code can hide in it)`,
          file: BIN_FILE,
          hint: 'convert it: load with torch.load(weights_only=True) and save with safetensors.torch.save_file',
        });
      }
    } catch (e) {
      c.report(e, BIN_FILE);
    }
  }
  return weights;
}

/** The tensors against the config. */
function checkTensors(
  c: AdapterChecks,
  weights: Weights,
  config: LoraConfig | null,
): { modules: LoraModule[]; stats: TensorStats } {
  if (!weights.readable || !c.layout.weightsFile) {
    return {
      modules: [],
      stats: { count: 0, parameters: 0, dtypes: {}, ranks: {}, modules: [], layers: [] },
    };
  }
  const analysis = analyzeTensors(weights.tensors, config, c.layout.weightsFile);
  c.add(analysis.findings);
  c.summaries.tensors = describeTensors(analysis.stats, analysis.found);
  return { modules: analysis.modules, stats: analysis.stats };
}

/** metadata.json, and the sha256 it expects of each file. */
async function checkMetadata(
  c: AdapterChecks,
): Promise<{ metadata: AdapterMetadata | null; expected: Map<string, string> }> {
  const text = c.present.has(METADATA_FILE) ? await c.readText(METADATA_FILE, 'METADATA_JSON') : null;
  if (text === null) return { metadata: null, expected: new Map() };
  const parsed = parseMetadata(text, c.layout.weightsFile);
  c.add(parsed.findings);
  const { metadata } = parsed;
  if (metadata) {
    c.summaries.metadata = `${metadata.id} ${metadata.version} for ${metadata.base_model}`;
    const idFinding = adapterIdFinding(c.layout.dir, metadata);
    if (idFinding) c.findings.push(idFinding);
  }
  return { metadata, expected: parsed.checksums };
}

/** The files beside the adapter's own: a promote's leftovers, files the checksums do not cover. */
async function checkOtherFiles(
  c: AdapterChecks,
  metadata: AdapterMetadata | null,
  expected: ReadonlyMap<string, string>,
): Promise<void> {
  const { layout } = c;
  // a promote's lock and temp files, not files of the adapter: there while one runs (nothing to say),
  // or left by one that was killed. Its temp files are written only under the lock, so they are
  // leftovers once no live lock is there (whatever their pid: it may be another container's).
  const promoteFiles = layout.files.filter((f) => isPromoteFile(f.name));
  if (promoteFiles.length > 0 && !(await promoteLockLive(layout))) {
    for (const f of promoteFiles) {
      c.findings.push({
        level: 'warning',
        code: 'PROMOTE_LEFTOVER',
        message: `${f.name} was left by a promote that did not finish (no live promote holds the adapter's lock)`,
        file: f.name,
        hint: 'the next promote of this adapter removes it; or delete it',
      });
    }
  }
  if (metadata) c.add(uncoveredFileFindings(layout.files, expected, layout.weightsFile));
  c.summaries.layout = `${plural(layout.files.length, 'file')}${layout.weightsFile ? `, weights in ${layout.weightsFile}` : ''}`;
}

/**
 * CHECKSUM_FILE_MISSING for a file metadata.json lists that is not there; null when the layout check
 * refused it already or it could not be read (one finding is enough).
 */
function listedFileMissing(file: string, findings: readonly Finding[]): Finding | null {
  const refused = findings.some(
    (f) => f.file === file && (f.code.startsWith('LAYOUT_') || isEnvironmentFinding(f)),
  );
  if (refused) return null;
  return {
    level: 'error',
    code: 'CHECKSUM_FILE_MISSING',
    message: `${file} is listed in the checksums but missing`,
    file,
    hint: CHECKSUM_HINT,
  };
}

export interface QuickCheck {
  findings: Finding[];
  layout: AdapterLayout;
  metadata: AdapterMetadata | null;
  /** file name → the sha256 metadata.json expects */
  checksums: Map<string, string>;
}

/**
 * verify without hashing and without the tensor analysis: the layout, adapter_config.json, the weights
 * header (strict) or the pickle scan, metadata.json and the files it lists. What `list` shows without
 * --verify; a changed weights byte that keeps the header intact, or tensors that do not match the
 * config, are found by verify itself (the tensor analysis would cost `list` as much again as the rest).
 */
export async function quickCheck(dir: string, reads: AdapterReads = fileReads): Promise<QuickCheck> {
  const layout = await reads.scan(dir);
  const c = new AdapterChecks(layout, reads);
  await checkConfig(c);
  await checkWeights(c);
  const { metadata, expected } = await checkMetadata(c);
  await checkOtherFiles(c, metadata, expected);
  for (const file of expected.keys()) {
    const missing = c.present.has(file) ? null : listedFileMissing(file, c.findings);
    if (missing) c.findings.push(missing);
  }
  return { findings: c.findings, layout, metadata, checksums: expected };
}

/** What the checks before the hashing found, for `complete`. */
interface Inspected {
  c: AdapterChecks;
  verified: VerifiedAdapter;
  stats: TensorStats;
  expected: ReadonlyMap<string, string>;
  pending: ReadonlyMap<string, Promise<string>>;
  baseRan: boolean;
  strict: boolean;
  started: number;
}

async function inspect(
  layout: AdapterLayout,
  early: { file: string; hash: PendingHash } | null,
  options: VerifyOptions,
  started: number,
): Promise<Inspection> {
  trace('verify: layout scanned');
  const c = new AdapterChecks(layout, fileReads);
  const config = await checkConfig(c);
  trace('verify: config checked');
  const weights = await checkWeights(c);
  trace('verify: weights header read');
  const { modules, stats } = checkTensors(c, weights, config);
  trace('verify: tensors checked');
  const { metadata, expected } = await checkMetadata(c);
  trace('verify: metadata checked');
  const pending = startHashes(c, expected, early, options);
  await checkOtherFiles(c, metadata, expected);

  const verified: VerifiedAdapter = {
    layout,
    safetensors: weights.safetensors,
    config,
    metadata,
    modules,
    tensors: weights.tensors,
    checksums: [],
  };
  let baseRan = false;
  if (options.baseCheck) {
    const base = await options.baseCheck(verified);
    c.add(base.findings);
    c.summaries.base = base.summary;
    baseRan = true;
  }
  const inspected: Inspected = {
    c,
    verified,
    stats,
    expected,
    pending,
    baseRan,
    strict: options.strict === true,
    started,
  };
  let finished: Promise<VerifyReport & { verified: VerifiedAdapter }> | undefined;
  return {
    verified,
    errors: c.findings.filter((f) => f.level === 'error'),
    expectedWeightsSha256: layout.weightsFile ? (expected.get(layout.weightsFile) ?? null) : null,
    finish: () => (finished ??= complete(inspected)),
    cancel: () => {
      early?.hash.cancel();
    },
  };
}

/** The checksums, streamed, all files at once (each in its own worker thread). */
function startHashes(
  c: AdapterChecks,
  expected: ReadonlyMap<string, string>,
  early: { file: string; hash: PendingHash } | null,
  options: VerifyOptions,
): Map<string, Promise<string>> {
  const pending = new Map<string, Promise<string>>();
  for (const file of expected.keys()) {
    if (!c.present.has(file)) continue;
    pending.set(
      file,
      file === early?.file
        ? early.hash.result
        : sha256File(join(c.layout.dir, file), progressFor(options, file)),
    );
  }
  for (const p of pending.values()) p.catch(() => undefined);
  return pending;
}

/** Each listed file's sha256 against what metadata.json expects. */
async function checksumResults(i: Inspected): Promise<ChecksumResult[]> {
  const checksums: ChecksumResult[] = [];
  for (const [file, hex] of i.expected) {
    const hashing = i.pending.get(file);
    if (!hashing) {
      const missing = listedFileMissing(file, i.c.findings);
      if (missing) i.c.findings.push(missing);
      checksums.push({ file, expected: hex, actual: null, ok: false });
      continue;
    }
    let actual: string;
    try {
      actual = await hashing;
    } catch (e) {
      i.c.report(e, file);
      checksums.push({ file, expected: hex, actual: null, ok: false });
      continue;
    }
    const ok = actual === hex;
    checksums.push({ file, expected: hex, actual, ok });
    if (!ok) {
      i.c.findings.push({
        level: 'error',
        code: 'CHECKSUM_MISMATCH',
        message: `${file}: sha256 is ${actual}, metadata.json expects ${hex}`,
        file,
        hint: CHECKSUM_HINT,
      });
    }
  }
  return checksums;
}

/** The checklist: each check's line from the findings that belong to it. */
function checkLines(i: Inspected, checksums: readonly ChecksumResult[]): CheckResult[] {
  const { findings, summaries, layout } = i.c;
  // a listed file that could not be hashed (refused, unreadable) fails the checksums line too
  const unhashed = new Set(checksums.filter((c) => c.actual === null).map((c) => c.file));
  const belongs = (name: Exclude<CheckName, 'base'>, f: Finding): boolean =>
    CHECK_FILES[name](f) ||
    (isEnvironmentFinding(f) && readerOf(f.file, layout.weightsFile) === name) ||
    (name === 'checksums' && f.level === 'error' && unhashed.has(f.file));
  const checks: CheckResult[] = (Object.keys(CHECK_FILES) as Exclude<CheckName, 'base'>[]).map((name) =>
    checkResult(
      name,
      findings.filter((f) => belongs(name, f)),
      summaries[name],
    ),
  );
  if (i.baseRan) checks.push(checkResult('base', findings.filter(isBaseFinding), summaries.base));
  return checks;
}

async function complete(i: Inspected): Promise<VerifyReport & { verified: VerifiedAdapter }> {
  const checksums = await checksumResults(i);
  const { findings, summaries } = i.c;
  if (checksums.length > 0) {
    const good = checksums.filter((c) => c.ok).length;
    summaries.checksums = `${good}/${checksums.length} files sha256 ok`;
  }
  i.verified.checksums = checksums;
  if (i.strict) for (const f of findings) f.level = 'error';
  const checks = checkLines(i, checksums);
  const { metadata } = i.verified;
  return {
    ok: !findings.some((f) => f.level === 'error'),
    adapter: {
      id: metadata?.id ?? null,
      version: metadata?.version ?? null,
      base_model: metadata?.base_model ?? null,
      path: i.verified.layout.dir,
    },
    findings: capFindings(findings),
    checks,
    tensors: i.stats,
    checksums,
    durationMs: Math.round(nowMs() - i.started),
    verified: i.verified,
  };
}

/** The sha256 of the weights file as hashed; null when it was not (missing, unreadable). */
export function weightsSha256(report: {
  checksums: readonly ChecksumResult[];
  verified: VerifiedAdapter;
}): string | null {
  return report.checksums.find((c) => c.file === report.verified.layout.weightsFile)?.actual ?? null;
}

/** Whether a live promote holds the adapter's metadata lock (one whose holder is gone does not count). */
async function promoteLockLive(layout: AdapterLayout): Promise<boolean> {
  if (!layout.files.some((f) => f.name === METADATA_LOCK_FILE)) return false;
  const { lockFileIsStale } = await import('./lock.js');
  return !(await lockFileIsStale(join(layout.dir, METADATA_LOCK_FILE)));
}

/** The check that reads `file`: where a finding that it could not be read belongs. */
function readerOf(file: string, weightsFile: string | null): Exclude<CheckName, 'base'> {
  if (file === CONFIG_FILE) return 'config';
  if (file === METADATA_FILE) return 'metadata';
  if (file === weightsFile || file === SAFETENSORS_FILE || file === BIN_FILE) return 'weights';
  return 'layout';
}

function isBaseFinding(f: Finding): boolean {
  return f.code.startsWith('BASE_') || f.code.startsWith('GGUF_');
}

function checkResult(name: CheckName, related: Finding[], summary: string | undefined): CheckResult {
  const { errors, warnings } = countFindings(related);
  const status: CheckStatus =
    errors > 0 ? 'fail' : warnings > 0 ? 'warn' : summary === undefined ? 'skip' : 'pass';
  const counts = [errors ? plural(errors, 'error') : '', warnings ? plural(warnings, 'warning') : '']
    .filter(Boolean)
    .join(', ');
  const text = summary ?? (status === 'skip' ? 'not checked' : '');
  return { name, status, summary: counts ? (text ? `${text} — ${counts}` : counts) : text };
}

/** The exit status a report stands for: 3 when something could not be read, else 1 unless ok. */
export function reportExitCode(report: Pick<VerifyReport, 'ok' | 'findings'>): ExitCode {
  if (report.findings.some(isEnvironmentFinding)) return ExitCode.ENVIRONMENT;
  return report.ok ? ExitCode.OK : ExitCode.INVALID;
}

/**
 * A thrown CodiError as a finding about `file`, relative to the adapter: readers name the absolute
 * path they opened, which the report states once, as `adapter.path`.
 */
function asFinding(e: unknown, file: string, dir: string): Finding {
  if (!isCodiError(e)) throw e;
  const finding = findingFromError(e, file);
  const absolute = join(dir, file);
  if (finding.file === absolute) finding.file = file;
  finding.message = finding.message.split(absolute).join(file);
  return finding;
}

function describeTensors(stats: TensorStats, moduleCount: number): string {
  const ranks = Object.keys(stats.ranks).join('/');
  const layers =
    stats.layers.length === 0
      ? 'no layers'
      : `layers ${stats.layers[0] ?? 0}–${stats.layers[stats.layers.length - 1] ?? 0}`;
  return `${plural(moduleCount, 'module')} (${stats.modules.join(', ')}), rank ${ranks || '-'}, ${layers}, ${thousands(stats.parameters)} parameters (${Object.keys(stats.dtypes).join(', ')})`;
}

/**
 * Throws unless the report is clean; for commands that act on a verified adapter (fail closed). The
 * error carries the first finding's code, so scripts see e.g. CONFIG_UNSUPPORTED, not a generic one.
 */
export function requireValid(report: VerifyReport): void {
  const errors = report.findings.filter((f) => f.level === 'error');
  const first = errors[0];
  if (report.ok || !first) return;
  // counted with the findings a capped report left out
  const total = countFindings(report.findings).errors;
  const others = [...new Set(errors.slice(1).map((f) => f.code))];
  const more =
    total > 1
      ? ` (and ${thousands(total - 1)} more: ${others.slice(0, 3).join(', ')}${others.length > 3 ? ', …' : ''})`
      : '';
  throw new CodiError(first.code, `${first.message}${more}`, {
    exitCode: reportExitCode(report),
    file: first.file,
    ...(first.hint ? { hint: first.hint } : {}),
    details: { adapter: report.adapter.path, findings: report.findings },
  });
}
