/**
 * Where `convert` puts its GGUF and how a cached one is trusted: an entry found in any cache folder
 * is used only once a pass over the weights has compared it, byte for byte, with what that pass
 * would write (src/gguf-cache.ts says where the folders are and why nothing else proves an entry).
 * A pass is given by convert.ts: here it is only a function that writes or compares.
 */
import { basename, dirname, join } from 'node:path';
import { removeDeadTemps } from './atomic.js';
import { RegularFile, sameFile, type FileIdentity } from './byte-source.js';
import type { GgufCompareResult, GgufWriteResult } from './files/gguf-writer.js';
import { PassHash, sourceChanged } from './convert-pass.js';
import { finding, type Finding } from './findings.js';
import { unique, writableCacheDir, type CacheLocations } from './gguf-cache.js';

/**
 * How the GGUF at `output` is known to be this adapter's conversion: `compared` (a cached file whose
 * every byte a pass compared with what it would write) or `written` (this conversion wrote it), and
 * the identity it had then: whoever opens `output` later must find that file (for `written`, device,
 * inode, size and mtime: the rename into place changed its ctime).
 */
export interface GgufProof {
  kind: 'compared' | 'written';
  identity: FileIdentity;
}

/** Where a pass's GGUF bytes go, and what it gives back. */
export type PassTarget =
  { kind: 'write'; path: string; durable: boolean } | { kind: 'compare'; file: RegularFile };
export type PassResult<T extends PassTarget> = T extends { kind: 'write' }
  ? GgufWriteResult
  : GgufCompareResult;
/** One pass over the weights, writing the GGUF or comparing it with a file. */
export type GgufPass = <T extends PassTarget>(target: T) => Promise<PassResult<T>>;

/**
 * Passes over the weights (`run` makes one with the hash it is given): the first one hashes them for
 * verification (`passHash`); any other one (a rebuild after a tampered entry was compared) must hash
 * to the sha256 that was verified.
 */
export function passes(
  run: <T extends PassTarget>(target: T, hash: PassHash) => Promise<PassResult<T>>,
  passHash: PassHash,
  weightsSha256: string,
  weightsPath: string,
): GgufPass {
  let hash = passHash;
  return async <T extends PassTarget>(target: T): Promise<PassResult<T>> => {
    const own = hash;
    hash = new PassHash();
    const out = await run(target, own);
    if (own !== passHash && (await own.result) !== weightsSha256) throw sourceChanged(weightsPath, 'changed');
    return out;
  };
}

/**
 * The cache entry named `name`: the first one found (in `locations.search`) that a pass proves to be
 * this conversion; else a new one, written where a tampered entry was (if that is a place to write),
 * else in the first writable folder of `locations.write`. Tampered entries add their finding.
 */
export async function cachedOrWritten(
  name: string,
  locations: CacheLocations,
  pass: GgufPass,
  findings: Finding[],
  { force, durable }: { force: boolean; durable: boolean },
): Promise<{ path: string; bytes: number; proof: GgufProof }> {
  const tampered: string[] = [];
  for (const dir of force ? [] : locations.search) {
    const proven = await proveEntry(join(dir, name), pass);
    if (proven === null) continue;
    if ('identity' in proven) {
      return {
        path: join(dir, name),
        bytes: proven.bytes,
        proof: { kind: 'compared', identity: proven.identity },
      };
    }
    findings.push(proven.finding);
    tampered.push(dir);
  }
  const dir = await writableCacheDir(
    unique([...tampered.filter((d) => locations.write.includes(d)), ...locations.write]),
  );
  const written = await writeEntry(join(dir, name), pass, durable);
  return { path: written.path, bytes: written.bytes, proof: { kind: 'written', identity: written.identity } };
}

/**
 * Writes the GGUF at `path` (temp files of killed conversions to it go first); fsynced when `durable`
 * (a cache entry need not be: it is proven by content before every use).
 */
export async function writeEntry(path: string, pass: GgufPass, durable: boolean): Promise<GgufWriteResult> {
  await removeDeadTemps(dirname(path), [basename(path)]);
  return pass({ kind: 'write', path, durable });
}

/**
 * The entry at `path`, if there is one: proven (its identity when the proof began, which must still
 * be its identity when the pass ended), or the finding that it is not this conversion; null when
 * there is none to read.
 */
async function proveEntry(
  path: string,
  pass: GgufPass,
): Promise<(GgufProof & { bytes: number }) | { finding: Finding } | null> {
  const file = await RegularFile.open(path, { noFollow: true }).catch(() => null);
  if (file === null) return null;
  try {
    const compared = await pass({ kind: 'compare', file });
    const unchanged = sameFile(file.identity, await file.currentIdentity());
    if (compared.same && unchanged)
      return { kind: 'compared', identity: file.identity, bytes: compared.bytes };
    const why = !unchanged
      ? 'it changed while it was being compared'
      : `its bytes differ from the conversion of the verified adapter from byte ${compared.firstDifference ?? 0}`;
    return {
      finding: finding(
        'GGUF_CACHE_TAMPERED',
        `the cached GGUF ${path} is not this adapter's conversion: ${why}; it is not used, and is rebuilt`,
        path,
      ),
    };
  } finally {
    await file.close();
  }
}
