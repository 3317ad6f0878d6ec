/**
 * `verify`: proves an adapter directory is what it claims: the checks of its files (adapter-checks.ts:
 * layout, adapter_config.json, the weights header, the tensors against the config, metadata.json),
 * then every listed file's sha256, as one report with a checklist. Every check runs even after an
 * earlier one failed, so one run reports everything that is wrong.
 */
import { join } from 'node:path';
import {
  AdapterChecks,
  checkConfig,
  checkMetadata,
  checkOtherFiles,
  checkTensors,
  checkWeights,
  fileReads,
  listedFileMissing,
} from './adapter-checks.js';
import { beginSha256, sha256File, type HashProgressCallback, type PendingHash } from './checksum.js';
import { CHECK_NAMES, codeRow, type CheckName, type Code } from './codes.js';
import { CodiError, ExitCode } from './errors.js';
import { capFindings, countFindings, finding, isEnvironmentFinding, type Finding } from './findings.js';
import { plural, thousands } from './text.js';
import { trace } from './trace.js';
import type { SafetensorsHeader } from './formats/safetensors.js';
import type { TorchBinScan } from './formats/torch-bin.js';
import {
  BIN_FILE,
  CONFIG_FILE,
  METADATA_FILE,
  SAFETENSORS_FILE,
  scanLayout,
  type AdapterLayout,
} from './layout.js';
import type { AdapterMetadata } from './metadata.js';
import type { LoraConfig } from './peft-config.js';
import type { LoraModule, TensorDescriptor, TensorStats } from './peft-tensors.js';
import { nowMs } from './clock.js';

export type { CheckName } from './codes.js';
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
  /** the scanned pickle and archive, when the weights are a `.bin` */
  bin: TorchBinScan | null;
  config: LoraConfig | null;
  metadata: AdapterMetadata | null;
  modules: LoraModule[];
  tensors: TensorDescriptor[];
  checksums: ChecksumResult[];
}

/** The lines every report has, in order; `base` follows when a base model was checked. */
const FILE_CHECKS = CHECK_NAMES.filter((name) => name !== 'base');

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
    bin: weights.bin,
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
      i.c.findings.push(
        finding('CHECKSUM_MISMATCH', `${file}: sha256 is ${actual}, metadata.json expects ${hex}`, file),
      );
    }
  }
  return checksums;
}

/** The checklist: each check's line from the findings that belong to it. */
function checkLines(i: Inspected, checksums: readonly ChecksumResult[]): CheckResult[] {
  const { findings, summaries, layout } = i.c;
  // a listed file that could not be hashed (refused, unreadable) fails the checksums line too
  const unhashed = new Set(checksums.filter((c) => c.actual === null).map((c) => c.file));
  const belongs = (name: CheckName, f: Finding): boolean =>
    checklistLine(f.code, f.file, layout.weightsFile) === name ||
    (name === 'checksums' && f.level === 'error' && unhashed.has(f.file));
  const names = i.baseRan ? CHECK_NAMES : FILE_CHECKS;
  return names.map((name) =>
    checkResult(
      name,
      findings.filter((f) => belongs(name, f)),
      summaries[name],
    ),
  );
}

/**
 * The line a finding of `code` about `file` fails (or warns): its code's line, else the line of the
 * check that reads the file, so that no finding can make a report invalid without failing a line.
 */
export function checklistLine(code: Code, file: string, weightsFile: string | null): CheckName {
  const line = codeRow(code).check;
  return line === null || line === 'reader' ? readerOf(file, weightsFile) : line;
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

/** The check that reads `file`: where a finding that it could not be read belongs. */
function readerOf(file: string, weightsFile: string | null): CheckName {
  if (file === CONFIG_FILE) return 'config';
  if (file === METADATA_FILE) return 'metadata';
  if (file === weightsFile || file === SAFETENSORS_FILE || file === BIN_FILE) return 'weights';
  return 'layout';
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
