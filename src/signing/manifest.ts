/**
 * Which files a signature covers, and how the files present compare with the ones signed. The rules
 * are model_signing's: every regular file below the folder, by its `/`-separated path, except the
 * signature itself, the top-level git paths (`.git`, `.gitattributes`, `.github`, `.gitignore`) and
 * the paths the signer recorded as ignored. An adapter adds one rule of its own: its own files
 * (adapter_config.json, the weights, metadata.json) must be signed, so a signature whose ignored
 * paths leave one out does not vouch for the adapter.
 */
import { finding, type Finding } from '../findings.js';
import {
  BIN_FILE,
  CONFIG_FILE,
  isPromoteFile,
  METADATA_FILE,
  SIGNATURE_FILE,
  type AdapterLayout,
} from '../layout.js';
import { pathProblem, type Statement } from './statement.js';

/** What model_signing leaves out by default (its `ignore_git_paths`), relative to the folder. */
export const GIT_PATHS: readonly string[] = ['.git', '.gitattributes', '.github', '.gitignore'];

/** Whether `name` is one of `paths` or lies below one (component-wise: `a` covers `a/b`, not `ab`). */
export function isUnder(name: string, paths: readonly string[]): boolean {
  return paths.some((p) => p === '.' || name === p || name.startsWith(`${p}/`));
}

/**
 * What `sign` signs: every file verification saw, less the signature, a promote's lock and temp
 * files, and anything in a subfolder (mount does not copy subfolders, so a signature over them could
 * never verify on the mounted copy). What it leaves out is recorded as ignored, as model_signing
 * records its own ignores, so its verifier leaves them out too.
 */
export function signingSet(layout: AdapterLayout): { files: string[]; ignorePaths: string[] } {
  const ignore = new Set<string>([...GIT_PATHS, SIGNATURE_FILE]);
  for (const d of layout.directories) if (!d.includes('/')) ignore.add(d);
  const files: string[] = [];
  for (const f of layout.files) {
    if (isPromoteFile(f.name)) ignore.add(f.name);
    else if (!isUnder(f.name, [...ignore])) files.push(f.name);
  }
  return { files, ignorePaths: [...ignore].sort() };
}

/**
 * The signer's ignored paths that can name something in the folder: relative, without `..`; a
 * trailing `/` dropped. `.` (the folder itself) ignores everything, as in model_signing.
 */
function signedIgnores(statement: Statement): string[] {
  return statement.serialization.ignore_paths
    .map((p) => p.replace(/\/+$/u, ''))
    .filter((p) => p === '.' || pathProblem(p) === null);
}

/** The adapter files a signature must cover: it says nothing about the adapter otherwise. */
function requiredFiles(layout: AdapterLayout): string[] {
  const present = new Set(layout.files.map((f) => f.name));
  return [CONFIG_FILE, METADATA_FILE, layout.weightsFile, BIN_FILE].filter(
    (n): n is string => n !== null && present.has(n),
  );
}

export interface Comparison {
  /** the files present that the signature is compared with (each must be hashed) */
  compared: string[];
  /** the adapter's own files the signer's ignored paths leave out */
  uncovered: string[];
}

/** Which files present are compared with the signed ones. */
export function comparedFiles(layout: AdapterLayout, statement: Statement): Comparison {
  const ignore = [...GIT_PATHS, SIGNATURE_FILE, ...signedIgnores(statement)];
  const required = requiredFiles(layout);
  const compared: string[] = [];
  const uncovered: string[] = [];
  for (const f of layout.files) {
    if (isPromoteFile(f.name)) continue;
    if (!isUnder(f.name, ignore)) compared.push(f.name);
    else if (required.includes(f.name)) uncovered.push(f.name);
  }
  return { compared, uncovered };
}

/**
 * SIGNATURE_FILES_DIFFER for every difference between the files present and the ones signed: a file
 * added, one missing, one whose sha256 changed, and an adapter file the signature leaves out. A file
 * that could not be hashed (`digests` has no entry) is reported by whoever failed to read it.
 */
export function compareWithSigned(
  statement: Statement,
  comparison: Comparison,
  digests: ReadonlyMap<string, string>,
): Finding[] {
  const findings: Finding[] = [];
  const differ = (message: string, file: string): void => {
    findings.push(finding('SIGNATURE_FILES_DIFFER', message, file));
  };
  for (const name of comparison.uncovered) {
    differ(`${name} is not covered by the signature: the signer listed it among the ignored paths`, name);
  }
  const signed = new Map(statement.resources.map((r) => [r.name, r.digest]));
  const present = new Set(comparison.compared);
  for (const name of comparison.compared) {
    const expected = signed.get(name);
    if (expected === undefined) {
      differ(`${name} is not in the signed files: it was added (or renamed) after signing`, name);
      continue;
    }
    const actual = digests.get(name);
    if (actual !== undefined && actual !== expected) {
      differ(
        `${name} changed since it was signed: sha256 is ${actual}, the signature says ${expected}`,
        name,
      );
    }
  }
  for (const r of statement.resources) {
    if (!present.has(r.name)) {
      differ(`${r.name} is signed but missing: it was removed (or renamed) after signing`, r.name);
    }
  }
  return findings;
}
