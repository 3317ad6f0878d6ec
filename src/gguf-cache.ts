/**
 * The cache of converted GGUFs: where entries are looked for and written, and what they are named.
 * An entry is found wherever it is (every folder of `search`), and it is never trusted for its name,
 * its folder or anything beside it: whoever can write a cache folder can write any name and any
 * sidecar. It is used only once convert has proven, by content, that it is exactly the GGUF convert
 * would write from the verified adapter (src/convert.ts, `proveEntry`); an entry that is not is
 * reported (GGUF_CACHE_TAMPERED) and rebuilt.
 */
import { access, constants, mkdir } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { CodiError } from './errors.js';

export interface CacheLocations {
  /** every folder an entry may be in, in the order they are tried */
  search: readonly string[];
  /** where a new entry goes: the first of these that is writable */
  write: readonly string[];
}

/** `$XDG_CACHE_HOME/codi-adapter/gguf` (or `~/.cache/…`). */
export function userCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return join(env.XDG_CACHE_HOME ?? join(env.HOME ?? '/tmp', '.cache'), 'codi-adapter', 'gguf');
}

/**
 * `convert`'s (and `mount --base`'s) cache: `$CODI_GGUF_CACHE` when set, the `.gguf-cache` folder
 * beside the adapter (on the models volume: `<root>/adapters/.gguf-cache`), then the user cache.
 */
export function defaultCacheLocations(
  adapterDir: string,
  env: NodeJS.ProcessEnv = process.env,
): CacheLocations {
  const dirs = unique([env.CODI_GGUF_CACHE, join(dirname(adapterDir), '.gguf-cache'), userCacheDir(env)]);
  return { search: dirs, write: dirs };
}

/** The folders, without empty and repeated ones, in order. */
export function unique(dirs: readonly (string | null | undefined)[]): string[] {
  return [...new Set(dirs.filter((d): d is string => typeof d === 'string' && d !== ''))];
}

/**
 * `<adapter folder>.<first 12 hex of the weights sha256>.<first 16 of the key>.<outtype>.gguf`: the
 * same on every machine for the same adapter, base shapes and converter, so an entry made by
 * `mount --base` on the host is the one `run` looks for in the container.
 */
export function cacheFileName(
  adapterDir: string,
  weightsSha256: string,
  key: string,
  outtype: string,
): string {
  return `${basename(adapterDir)}.${weightsSha256.slice(0, 12)}.${key.slice(0, 16)}.${outtype}.gguf`;
}

/** The first of `dirs` that exists or can be made, and can be written; CACHE_UNWRITABLE (exit 3) if none. */
export async function writableCacheDir(dirs: readonly string[]): Promise<string> {
  for (const dir of dirs) {
    try {
      await mkdir(dir, { recursive: true });
      await access(dir, constants.W_OK);
      return dir;
    } catch {
      // read-only volume: try the next place
    }
  }
  throw new CodiError(
    'CACHE_UNWRITABLE',
    `no writable place for the converted GGUF (tried ${dirs.join(', ')})`,
  );
}
