/**
 * verify's checks of an adapter's files short of hashing: the layout, adapter_config.json, the
 * weights header (or the pickle scanned), the tensors against the config, metadata.json and the files
 * beside them. verify runs them all and then the checksums; `list` runs them without the tensor
 * analysis (`quickCheck`), with blocking reads.
 */
import { join } from 'node:path';
import { readRegularFile } from './byte-source.js';
import { asCodiError, environmentError, isCodiError } from './errors.js';
import { codeRow } from './codes.js';
import { finding, findingFromError, isEnvironmentFinding, type Finding } from './findings.js';
import { readSafetensorsHeader } from './files/safetensors.js';
import type { SafetensorsHeader } from './formats/safetensors.js';
import type { TorchBinScan } from './formats/torch-bin.js';
import { decodeUtf8 } from './formats/utf8.js';
import {
  BIN_FILE,
  CONFIG_FILE,
  isPromoteFile,
  METADATA_FILE,
  METADATA_LOCK_FILE,
  SAFETENSORS_FILE,
  scanLayout,
  UNREADABLE_HINT,
  type AdapterLayout,
} from './layout.js';
import { adapterIdFinding, parseMetadata, uncoveredFileFindings, type AdapterMetadata } from './metadata.js';
import { describeConfig, parseLoraConfig, type LoraConfig } from './peft-config.js';
import { analyzeTensors, type LoraModule, type TensorDescriptor, type TensorStats } from './peft-tensors.js';
import { formatBytes, plural, thousands } from './text.js';
import type { CheckName } from './verify.js';

/**
 * How verify reads an adapter's files. `fileReads` by default; `list`, which reads a thousand adapters
 * and does nothing else meanwhile, passes blocking ones.
 */
export interface AdapterReads {
  scan(dir: string): Promise<AdapterLayout>;
  read(path: string): Promise<Uint8Array>;
  header(path: string): Promise<SafetensorsHeader>;
}

export const fileReads: AdapterReads = {
  scan: scanLayout,
  read: (path) => readRegularFile(path, { noFollow: true }),
  header: readSafetensorsHeader,
};

/** One adapter's checks as they run: the findings so far, and the summaries of the checklist lines. */
export class AdapterChecks {
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
    const found = asFinding(e, file, this.layout.dir);
    if (isEnvironmentFinding(found)) {
      if (this.unreadable.has(file)) return;
      this.unreadable.add(file);
      found.hint ??= UNREADABLE_HINT;
    }
    this.findings.push(found);
  }

  /** `file` as UTF-8 text; null (and a finding) when it cannot be read or is not UTF-8. */
  async readText(file: string, jsonCode: 'CONFIG_JSON' | 'METADATA_JSON'): Promise<string | null> {
    let bytes: Uint8Array;
    try {
      bytes = await this.reads.read(join(this.layout.dir, file));
    } catch (e) {
      this.report(isCodiError(e) ? e : environmentError(e, file, 'read'), file);
      return null;
    }
    // a byte order mark is kept, for the JSON parser to refuse like every other JSON file's
    const decoded = decodeUtf8(bytes);
    if ('text' in decoded) return decoded.text;
    this.findings.push(finding(jsonCode, `${file} is not valid UTF-8`, file));
    return null;
  }
}

export async function checkConfig(c: AdapterChecks): Promise<LoraConfig | null> {
  if (!c.present.has(CONFIG_FILE)) return null;
  const text = await c.readText(CONFIG_FILE, 'CONFIG_JSON');
  if (text === null) return null;
  const parsed = parseLoraConfig(text);
  c.add(parsed.findings);
  if (parsed.config) c.summaries.config = describeConfig(parsed.config);
  return parsed.config;
}

export interface Weights {
  tensors: TensorDescriptor[];
  /** the parsed safetensors header, when the weights are safetensors */
  safetensors: SafetensorsHeader | null;
  /** the scanned pickle and archive, when the weights are a `.bin` */
  bin: TorchBinScan | null;
  readable: boolean;
}

/** The weights: the safetensors header or the pickle scanned, never the tensor data. */
export async function checkWeights(c: AdapterChecks): Promise<Weights> {
  const { layout } = c;
  const weights: Weights = { tensors: [], safetensors: null, bin: null, readable: false };
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
      const { scanTorchBin } = await import('./files/torch-bin.js');
      const scan = await scanTorchBin(join(layout.dir, BIN_FILE));
      for (const w of scan.warnings) c.findings.push(finding(w.code, w.message, BIN_FILE));
      if (layout.weightsFile === BIN_FILE) {
        weights.bin = scan;
        weights.tensors = scan.tensors;
        weights.readable = true;
        c.summaries.weights = `PyTorch pickle (scanned, not loaded), ${plural(scan.tensors.length, 'tensor')}`;
        c.findings.push(
          finding(
            'BIN_PREFER_SAFETENSORS',
            `${BIN_FILE} is a pickle; safetensors is preferred (no code can hide in it)`,
            BIN_FILE,
          ),
        );
      }
    } catch (e) {
      c.report(e, BIN_FILE);
    }
  }
  return weights;
}

/** The tensors against the config. */
export function checkTensors(
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
export async function checkMetadata(
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
export async function checkOtherFiles(
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
      c.findings.push(
        finding(
          'PROMOTE_LEFTOVER',
          `${f.name} was left by a promote that did not finish (no live promote holds the adapter's lock)`,
          f.name,
        ),
      );
    }
  }
  if (metadata) c.add(uncoveredFileFindings(layout.files, expected, layout.weightsFile));
  c.summaries.layout = `${plural(layout.files.length, 'file')}${layout.weightsFile ? `, weights in ${layout.weightsFile}` : ''}`;
}

/**
 * CHECKSUM_FILE_MISSING for a file metadata.json lists that is not there; null when the layout check
 * refused it already or it could not be read (one finding is enough).
 */
export function listedFileMissing(file: string, findings: readonly Finding[]): Finding | null {
  const refused = findings.some(
    (f) => f.file === file && (codeRow(f.code).check === 'layout' || isEnvironmentFinding(f)),
  );
  if (refused) return null;
  return finding('CHECKSUM_FILE_MISSING', `${file} is listed in the checksums but missing`, file);
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

/** Whether a live promote holds the adapter's metadata lock (one whose holder is gone does not count). */
async function promoteLockLive(layout: AdapterLayout): Promise<boolean> {
  if (!layout.files.some((f) => f.name === METADATA_LOCK_FILE)) return false;
  const { lockFileIsStale } = await import('./lock.js');
  return !(await lockFileIsStale(join(layout.dir, METADATA_LOCK_FILE)));
}

/**
 * A thrown CodiError (or format error) as a finding about `file`, relative to the adapter: readers
 * name the absolute path they opened, which the report states once, as `adapter.path`.
 */
function asFinding(e: unknown, file: string, dir: string): Finding {
  const error = asCodiError(e);
  if (!error) throw e;
  const found = findingFromError(error, file);
  const absolute = join(dir, file);
  if (found.file === absolute) found.file = file;
  found.message = found.message.split(absolute).join(file);
  return found;
}

function describeTensors(stats: TensorStats, moduleCount: number): string {
  const ranks = Object.keys(stats.ranks).join('/');
  const layers =
    stats.layers.length === 0
      ? 'no layers'
      : `layers ${stats.layers[0] ?? 0}–${stats.layers[stats.layers.length - 1] ?? 0}`;
  return `${plural(moduleCount, 'module')} (${stats.modules.join(', ')}), rank ${ranks || '-'}, ${layers}, ${thousands(stats.parameters)} parameters (${Object.keys(stats.dtypes).join(', ')})`;
}
