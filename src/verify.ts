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
  SIGNATURE_FILE,
  type AdapterLayout,
} from './layout.js';
import type { PendingSignature, SignatureReport } from './signing/check.js';
import type { TrustedKeys } from './signing/keys.js';
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
  /** model.sig: null when there is none and no trusted keys were given */
  signature: SignatureReport | null;
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
  /** check model.sig against these keys: the adapter must be signed by one of them */
  trust?: TrustedKeys;
  /** hash every file a signature would cover, not only the ones metadata.json lists (`sign`) */
  hashAll?: boolean;
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
  /** the sha256 of every file hashed (listed, signed, or all with `hashAll`), each hashed once */
  digests: Map<string, string>;
  /** model.sig as checked (or only seen, without trusted keys); null when there is none */
  signature: SignatureReport | null;
}

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
  signature: PendingSignature | null;
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
  const signature = await signatureOf(c, options);
  const signed = options.hashAll ? (await import('./signing/manifest.js')).signingSet(c.layout).files : [];
  const pending = startHashes(c, filesToHash(expected, signature, signed), early, options);
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
    digests: new Map(),
    signature: signature?.report ?? null,
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
    signature,
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

/**
 * model.sig: checked against the trusted keys when there are some (before hashing, so the files it
 * signs are hashed in the same pass as the checksums); only noted otherwise. The signing modules
 * are loaded only then: an unsigned adapter verified without keys does without them.
 */
async function signatureOf(c: AdapterChecks, options: VerifyOptions): Promise<PendingSignature | null> {
  if (!options.trust && !c.present.has(SIGNATURE_FILE)) return null;
  const { emptySignatureReport, readSignature } = await import('./signing/check.js');
  if (options.trust) {
    const read = await readSignature(c.layout, options.trust, c.findings);
    trace('verify: signature read');
    return read;
  }
  return { report: emptySignatureReport(true), statement: null, comparison: null };
}

/**
 * Every file to hash, once: those metadata.json lists, those the signature is compared with, every
 * file a signature covers (`hashAll`), and model.sig itself (its sha256 tells two signatures apart).
 */
function filesToHash(
  expected: ReadonlyMap<string, string>,
  signature: PendingSignature | null,
  signed: readonly string[],
): Set<string> {
  const files = new Set(expected.keys());
  for (const f of signature?.comparison?.compared ?? []) files.add(f);
  for (const f of signed) files.add(f);
  if (signature && signature.report.sha256 === null) files.add(SIGNATURE_FILE);
  return files;
}

/** The checksums, streamed, all files at once (each in its own worker thread). */
function startHashes(
  c: AdapterChecks,
  files: ReadonlySet<string>,
  early: { file: string; hash: PendingHash } | null,
  options: VerifyOptions,
): Map<string, Promise<string>> {
  const pending = new Map<string, Promise<string>>();
  for (const file of files) {
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
  const names = CHECK_NAMES.filter(
    (n) => (n !== 'base' || i.baseRan) && (n !== 'signature' || i.signature !== null),
  );
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

/** Every file's sha256 as hashed; one that could not be hashed is reported (once: a listed one is already). */
async function digestsOf(i: Inspected): Promise<Map<string, string>> {
  const digests = new Map<string, string>();
  for (const [file, hashing] of i.pending) {
    try {
      digests.set(file, await hashing);
    } catch (e) {
      if (!i.expected.has(file)) i.c.report(e, file);
    }
  }
  return digests;
}

/** model.sig against the files' digests: its findings, and its line of the checklist. */
async function signatureResult(
  i: Inspected,
  digests: ReadonlyMap<string, string>,
): Promise<SignatureReport | null> {
  const pending = i.signature;
  if (!pending) return null;
  const { finishSignature } = await import('./signing/check.js');
  const report = finishSignature(pending, digests, i.c.findings);
  if (report.sha256 === null) report.sha256 = digests.get(SIGNATURE_FILE) ?? null;
  if (report.ok && report.signer) {
    i.c.summaries.signature = `signed by ${report.signer.fingerprint.slice(0, 19)}… (${report.signer.curve}), ${plural(report.signed_files ?? 0, 'file')} as signed`;
  }
  return report;
}

async function complete(i: Inspected): Promise<VerifyReport & { verified: VerifiedAdapter }> {
  const checksums = await checksumResults(i);
  const { findings, summaries } = i.c;
  if (checksums.length > 0) {
    const good = checksums.filter((c) => c.ok).length;
    summaries.checksums = `${good}/${checksums.length} files sha256 ok`;
  }
  i.verified.checksums = checksums;
  i.verified.digests = await digestsOf(i);
  const signature = await signatureResult(i, i.verified.digests);
  i.verified.signature = signature;
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
    signature,
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
  if (file === SIGNATURE_FILE) return 'signature';
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
