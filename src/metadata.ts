/**
 * metadata.json: identity, provenance and the checksums that cover the adapter. The one place that
 * reads its checksum format: the short form `"sha256:<hex>"` (the weights file alone) or
 * `{ algorithm: "sha256", files: { name: hex } }`.
 */
import { CodiError } from './errors.js';
import { finding, type Finding } from './findings.js';
import { parseJson, StrictJsonError } from './formats/strict-json.js';
import { METADATA_FILE, needsNoChecksum } from './layout.js';
import { formatViolation, validateAgainst } from './schemas.js';

export interface EvaluationRecord {
  suite: string;
  evaluated_at: string;
  base_model: string;
  metrics: Record<string, number>;
  [extra: string]: unknown;
}

export interface AdapterMetadata {
  schema_version: 1;
  id: string;
  version: string;
  base_model: string;
  created_at: string;
  training: { dataset: string; [extra: string]: unknown };
  checksum: string | { algorithm: 'sha256'; files: Record<string, string> };
  /** written by mount --to-safetensors: where converted weights came from */
  converted_from?: ConvertedFrom;
  evaluations?: EvaluationRecord[];
  /** the base model GGUF it is bound to (mount --base, promote --base) */
  base?: { sha256: string; name?: string; file?: string };
  [extra: string]: unknown;
}

/** The provenance of converted weights: the original file, its sha256, the converter and when. */
export interface ConvertedFrom {
  file: string;
  sha256: string;
  converter: string;
  converted_at: string;
}

export interface ParsedMetadata {
  metadata: AdapterMetadata | null;
  /** file name → expected lowercase sha256, with the short form expanded */
  checksums: Map<string, string>;
  findings: Finding[];
}

const SHA256_PREFIX = 'sha256:';

/**
 * `sha256:<hex>`: metadata.json's short checksum form, and how `mount`, `list`, `promote` and
 * rules.yml name the weights file's checksum.
 */
export function sha256Ref(hex: string): string {
  return `${SHA256_PREFIX}${hex}`;
}

/** The hex digits of a `sha256:<hex>` reference; null for anything else. */
export function sha256Hex(ref: string): string | null {
  return ref.startsWith(SHA256_PREFIX) ? ref.slice(SHA256_PREFIX.length) : null;
}

/**
 * The sha256 each file must have, from a validated `checksum`: the short form stands for
 * `weightsFile` (and for nothing without one). An entry for metadata.json itself is left out: no value
 * can match it (parseMetadata reports it as CHECKSUM_SELF).
 */
export function expectedChecksums(
  checksum: AdapterMetadata['checksum'],
  weightsFile: string | null,
): Map<string, string> {
  const checksums = new Map<string, string>();
  if (typeof checksum === 'string') {
    const hex = sha256Hex(checksum);
    if (weightsFile && hex !== null) checksums.set(weightsFile, hex);
    return checksums;
  }
  for (const [file, hex] of Object.entries(checksum.files)) {
    if (file !== METADATA_FILE) checksums.set(file, hex);
  }
  return checksums;
}

/**
 * Parses and validates metadata.json text. `weightsFile` is the file the short checksum form stands
 * for, and the file that must always be covered.
 */
export function parseMetadata(text: string, weightsFile: string | null): ParsedMetadata {
  const findings: Finding[] = [];
  let data: unknown;
  try {
    data = parseJson(text);
  } catch (e) {
    if (!(e instanceof StrictJsonError)) throw e;
    findings.push(finding('METADATA_JSON', `not valid JSON: ${e.message}`, METADATA_FILE));
    return { metadata: null, checksums: new Map(), findings };
  }
  for (const v of validateAgainst('metadata', data)) {
    findings.push(finding('METADATA_INVALID', formatViolation(v), METADATA_FILE, { pointer: v.pointer }));
  }
  if (findings.length > 0) return { metadata: null, checksums: new Map(), findings };
  const metadata = data as AdapterMetadata;

  if (typeof metadata.checksum !== 'string' && Object.hasOwn(metadata.checksum.files, METADATA_FILE)) {
    // writing the hash into the file changes the hash: no value can ever match
    findings.push(
      finding(
        'CHECKSUM_SELF',
        'metadata.json lists its own checksum: a file cannot hold its own sha256',
        METADATA_FILE,
        { pointer: '/checksum/files/metadata.json' },
      ),
    );
  }
  const checksums = expectedChecksums(metadata.checksum, weightsFile);
  if (weightsFile && !checksums.has(weightsFile)) {
    findings.push(
      finding(
        'CHECKSUM_WEIGHTS_UNCOVERED',
        `the checksums do not cover the weights file ${weightsFile}`,
        METADATA_FILE,
        {
          pointer: '/checksum',
          hint: `add "${weightsFile}": "<sha256>" to checksum.files (sha256sum ${weightsFile})`,
        },
      ),
    );
  }
  return { metadata, checksums, findings };
}

/**
 * The warning when the folder's name is not the id in metadata.json: mount installs an adapter under
 * its id, so the folder a user names and the one the catalog shows would differ. verify and list say it
 * alike.
 */
export function adapterIdFinding(dir: string, metadata: AdapterMetadata): Finding | null {
  const dirName = dir.slice(dir.lastIndexOf('/') + 1);
  if (dirName === metadata.id) return null;
  return finding(
    'ADAPTER_ID_MISMATCH',
    `the directory is named ${JSON.stringify(dirName)} but metadata.json says id ${JSON.stringify(metadata.id)}`,
    METADATA_FILE,
    { pointer: '/id', hint: `mount installs it as <root>/adapters/${metadata.id}` },
  );
}

/**
 * A warning for each file in the adapter folder that the checksums do not cover, so a file could change
 * unseen. An uncovered weights file is already an error (CHECKSUM_WEIGHTS_UNCOVERED); a file in a
 * subfolder cannot be listed (plain names only): its folder is the finding (LAYOUT_SUBDIRECTORY).
 */
export function uncoveredFileFindings(
  files: readonly { name: string }[],
  checksums: ReadonlyMap<string, string>,
  weightsFile: string | null,
): Finding[] {
  const findings: Finding[] = [];
  for (const { name } of files) {
    if (name.includes('/') || name === weightsFile || checksums.has(name) || needsNoChecksum(name)) continue;
    findings.push(
      finding('FILE_UNCOVERED', `${name} is not covered by the checksums in metadata.json`, name),
    );
  }
  return findings;
}

/**
 * metadata.json of an adapter whose weights file `from.file` became `to`: the checksum of the old file
 * replaced by the new one's (in the same place, in either form), and `converted_from` recording the
 * original file and its sha256, after `checksum`. Every other key, the file's indentation and its
 * line endings are kept. `text` must be valid metadata (verification read it).
 */
export function convertedMetadataText(
  text: string,
  from: ConvertedFrom,
  to: { file: string; sha256: string },
  path = 'metadata.json',
): string {
  return editMetadataText(
    text,
    (data) => {
      const checksum: AdapterMetadata['checksum'] =
        typeof data.checksum === 'string'
          ? sha256Ref(to.sha256)
          : {
              ...data.checksum,
              files: Object.fromEntries(
                Object.entries(data.checksum.files).map(([file, hex]) =>
                  file === from.file ? [to.file, to.sha256] : [file, hex],
                ),
              ),
            };
      const out: Record<string, unknown> = {};
      for (const [key, value] of Object.entries(data)) {
        if (key === 'converted_from') continue;
        out[key] = key === 'checksum' ? checksum : value;
        if (key === 'checksum') out.converted_from = from;
      }
      return out as AdapterMetadata;
    },
    path,
  );
}

/**
 * metadata.json text with `change` made to its data, in the file's own indentation and line ends (so
 * the diff is the change); the result must still be valid metadata.json. `change` returns the data to
 * write, or the same object.
 */
export function editMetadataText(
  text: string,
  change: (data: AdapterMetadata) => AdapterMetadata,
  path: string,
): string {
  const data = change(JSON.parse(text) as AdapterMetadata);
  const indent = /^\{\r?\n([ \t]+)"/u.exec(text)?.[1] ?? '  ';
  const eol = text.includes('\r\n') ? '\r\n' : '\n';
  let out = JSON.stringify(data, null, indent);
  if (eol !== '\n') out = out.replace(/\n/gu, eol);
  out += text.endsWith('\n') ? eol : '';
  const problem = parseMetadata(out, null).findings.find((f) => f.level === 'error');
  if (problem) {
    throw new CodiError('INTERNAL', `the change would make metadata.json invalid: ${problem.message}`, {
      file: path,
    });
  }
  return out;
}

/** `data` with `base` recorded, right after `base_model` (where a reader looks for it). */
export function withBase(data: AdapterMetadata, base: NonNullable<AdapterMetadata['base']>): AdapterMetadata {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(data)) {
    if (key === 'base') continue;
    out[key] = value;
    if (key === 'base_model') out.base = base;
  }
  if (!('base' in out)) out.base = base;
  return out as AdapterMetadata;
}
