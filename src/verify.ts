/**
 * `verify`: proves an adapter directory is what it claims: its layout, config, weights, tensors,
 * metadata and checksums. Every check runs even after an earlier one failed, so one run reports
 * everything that is wrong.
 */
import { join } from 'node:path';
import { readRegularFile } from './byte-source.js';
import { beginSha256, sha256File, type HashProgressCallback, type PendingHash } from './checksum.js';
import { CodiError, ExitCode, isCodiError } from './errors.js';
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

/** What to do about a checksum failure, printed with it. */
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

async function inspect(
  layout: AdapterLayout,
  early: { file: string; hash: PendingHash } | null,
  options: VerifyOptions,
  started: number,
): Promise<Inspection> {
  trace('verify: layout scanned');
  const findings: Finding[] = [...layout.findings];
  // one at a time: `push(...list)` passes every finding as an argument, and a hostile file yields
  // hundreds of thousands of them (more than the stack holds)
  const add = (list: readonly Finding[]): void => {
    for (const f of list) findings.push(f);
  };
  const summaries: Partial<Record<CheckName, string>> = {};
  const present = new Set(layout.files.map((f) => f.name));
  // files a read failed on (not readable: an environment error): reported once, by the first reader
  const unreadable = new Set<string>();
  const report = (e: unknown, file: string): void => {
    const finding = asFinding(e, file, layout.dir);
    if (isEnvironmentFinding(finding)) {
      if (unreadable.has(file)) return;
      unreadable.add(file);
      finding.hint ??= UNREADABLE_HINT;
    }
    findings.push(finding);
  };

  // adapter_config.json
  let config: LoraConfig | null = null;
  if (present.has(CONFIG_FILE)) {
    const text = await readText(layout.dir, CONFIG_FILE, findings, 'CONFIG_JSON', report);
    if (text !== null) {
      const parsed = parseLoraConfig(text);
      add(parsed.findings);
      config = parsed.config;
      if (config) summaries.config = describeConfig(config);
    }
  }

  trace('verify: config checked');
  // weights: header / pickle only, never the tensor data
  let tensors: TensorDescriptor[] = [];
  let weightsReadable = false;
  let safetensors: SafetensorsHeader | null = null;
  if (layout.weightsFile === SAFETENSORS_FILE) {
    try {
      const header = await readSafetensorsHeader(join(layout.dir, SAFETENSORS_FILE));
      safetensors = header;
      // the header's own entries (a TensorDescriptor and more): a copy would cost an object per tensor
      tensors = header.tensors;
      weightsReadable = true;
      summaries.weights = `safetensors, ${plural(tensors.length, 'tensor')}, header ${formatBytes(header.headerLength)}`;
    } catch (e) {
      report(e, SAFETENSORS_FILE);
    }
  }
  if (present.has(BIN_FILE)) {
    // scanned even beside a safetensors file: some loaders still pick a .bin up
    try {
      // the pickle scanner (and the zip reader under it) loads only for the adapters that need it
      const { scanTorchBin } = await import('./formats/torch-bin.js');
      const scan = await scanTorchBin(join(layout.dir, BIN_FILE));
      if (layout.weightsFile === BIN_FILE) {
        tensors = scan.tensors;
        weightsReadable = true;
        summaries.weights = `PyTorch pickle (scanned, not loaded), ${plural(tensors.length, 'tensor')}`;
        findings.push({
          level: 'warning',
          code: 'BIN_PREFER_SAFETENSORS',
          message: `${BIN_FILE} is a pickle; safetensors is preferred (no code can hide in it)`,
          file: BIN_FILE,
          hint: 'convert it: load with torch.load(weights_only=True) and save with safetensors.torch.save_file',
        });
      }
    } catch (e) {
      report(e, BIN_FILE);
    }
  }

  trace('verify: weights header read');
  // tensors against the config
  let modules: LoraModule[] = [];
  let stats: TensorStats = { count: 0, parameters: 0, dtypes: {}, ranks: {}, modules: [], layers: [] };
  if (weightsReadable && layout.weightsFile) {
    const analysis = analyzeTensors(tensors, config, layout.weightsFile);
    add(analysis.findings);
    modules = analysis.modules;
    stats = analysis.stats;
    summaries.tensors = describeTensors(stats, analysis.found);
  }

  trace('verify: tensors checked');
  // metadata.json
  let metadata: AdapterMetadata | null = null;
  let expected = new Map<string, string>();
  if (present.has(METADATA_FILE)) {
    const text = await readText(layout.dir, METADATA_FILE, findings, 'METADATA_JSON', report);
    if (text !== null) {
      const parsed = parseMetadata(text, layout.weightsFile);
      add(parsed.findings);
      metadata = parsed.metadata;
      expected = parsed.checksums;
      if (metadata) {
        summaries.metadata = `${metadata.id} ${metadata.version} for ${metadata.base_model}`;
        const idFinding = adapterIdFinding(layout.dir, metadata);
        if (idFinding) findings.push(idFinding);
      }
    }
  }

  trace('verify: metadata checked');
  // checksums, streamed, all files at once (each in its own worker thread)
  const pending = new Map<string, Promise<string>>();
  for (const file of expected.keys()) {
    if (!present.has(file)) continue;
    pending.set(
      file,
      file === early?.file
        ? early.hash.result
        : sha256File(join(layout.dir, file), progressFor(options, file)),
    );
  }
  for (const p of pending.values()) p.catch(() => undefined);
  // a promote's lock and temp files, not files of the adapter: there while one runs (nothing to say),
  // or left by one that was killed. Its temp files are written only under the lock, so they are
  // leftovers once no live lock is there (whatever their pid: it may be another container's).
  const promoteFiles = layout.files.filter((f) => isPromoteFile(f.name));
  if (promoteFiles.length > 0 && !(await promoteLockLive(layout))) {
    for (const f of promoteFiles) {
      findings.push({
        level: 'warning',
        code: 'PROMOTE_LEFTOVER',
        message: `${f.name} was left by a promote that did not finish (no live promote holds the adapter's lock)`,
        file: f.name,
        hint: 'the next promote of this adapter removes it; or delete it',
      });
    }
  }
  if (metadata) add(uncoveredFileFindings(layout.files, expected, layout.weightsFile));
  summaries.layout = `${plural(layout.files.length, 'file')}${layout.weightsFile ? `, weights in ${layout.weightsFile}` : ''}`;

  const verified: VerifiedAdapter = {
    layout,
    safetensors,
    config,
    metadata,
    modules,
    tensors,
    checksums: [],
  };
  let baseRan = false;
  if (options.baseCheck) {
    const base = await options.baseCheck(verified);
    add(base.findings);
    summaries.base = base.summary;
    baseRan = true;
  }

  const cancel = (): void => {
    early?.hash.cancel();
  };
  let finished: Promise<VerifyReport & { verified: VerifiedAdapter }> | undefined;
  const finish = (): Promise<VerifyReport & { verified: VerifiedAdapter }> => {
    finished ??= complete();
    return finished;
  };
  const complete = async (): Promise<VerifyReport & { verified: VerifiedAdapter }> => {
    const checksums: ChecksumResult[] = [];
    for (const [file, hex] of expected) {
      const hashing = pending.get(file);
      if (!hashing) {
        const refused = findings.some(
          (f) => f.file === file && (f.code.startsWith('LAYOUT_') || isEnvironmentFinding(f)),
        );
        if (!refused) {
          findings.push({
            level: 'error',
            code: 'CHECKSUM_FILE_MISSING',
            message: `${file} is listed in the checksums but missing`,
            file,
            hint: CHECKSUM_HINT,
          });
        }
        checksums.push({ file, expected: hex, actual: null, ok: false });
        continue;
      }
      let actual: string;
      try {
        actual = await hashing;
      } catch (e) {
        report(e, file);
        checksums.push({ file, expected: hex, actual: null, ok: false });
        continue;
      }
      const ok = actual === hex;
      checksums.push({ file, expected: hex, actual, ok });
      if (!ok) {
        findings.push({
          level: 'error',
          code: 'CHECKSUM_MISMATCH',
          message: `${file}: sha256 is ${actual}, metadata.json expects ${hex}`,
          file,
          hint: CHECKSUM_HINT,
        });
      }
    }
    if (checksums.length > 0) {
      const good = checksums.filter((c) => c.ok).length;
      summaries.checksums = `${good}/${checksums.length} files sha256 ok`;
    }
    verified.checksums = checksums;
    if (options.strict) for (const f of findings) f.level = 'error';

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
    if (baseRan) {
      checks.push(checkResult('base', findings.filter(isBaseFinding), summaries.base));
    }

    return {
      ok: !findings.some((f) => f.level === 'error'),
      adapter: {
        id: metadata?.id ?? null,
        version: metadata?.version ?? null,
        base_model: metadata?.base_model ?? null,
        path: layout.dir,
      },
      findings: capFindings(findings),
      checks,
      tensors: stats,
      checksums,
      durationMs: Math.round(nowMs() - started),
      verified,
    };
  };
  return {
    verified,
    errors: findings.filter((f) => f.level === 'error'),
    expectedWeightsSha256: layout.weightsFile ? (expected.get(layout.weightsFile) ?? null) : null,
    finish,
    cancel,
  };
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

async function readText(
  dir: string,
  file: string,
  findings: Finding[],
  jsonCode: string,
  report: (e: unknown, file: string) => void,
): Promise<string | null> {
  let bytes: Uint8Array;
  try {
    bytes = await readRegularFile(join(dir, file), { noFollow: true });
  } catch (e) {
    report(e, file);
    return null;
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false }).decode(bytes);
  } catch {
    findings.push({ level: 'error', code: jsonCode, message: `${file} is not valid UTF-8`, file });
    return null;
  }
  return text;
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
