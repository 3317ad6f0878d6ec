/**
 * Cache entries bound to the boot that wrote them, instead of fsynced. Fsyncing a GGUF of hundreds of
 * MB is most of a conversion's time on a slow disk, and a cache entry can always be made again. Data
 * that was written but not fsynced stays in the kernel's page cache, where every reader sees it (the
 * containers of the machine share that kernel); only a crash of the machine can lose it, and after a
 * crash the kernel's boot id (`/proc/sys/kernel/random/boot_id`) is another. So an entry written
 * without fsync carries the boot id in its name, and is looked for only under this boot's name: one
 * a crash may have emptied is never used, it is converted again. Entries meant to outlive the boot or
 * to move to another machine (`mount --base`) are fsynced and named without a tag; they are looked
 * for under every boot. Where the boot id cannot be read, every entry is fsynced and untagged.
 *
 * This is all of it: convert asks `cacheNames` what to look for and what to write, and
 * `removeSuperseded` once it has written an entry.
 */
import { readFileSync } from 'node:fs';
import { readdir, unlink } from 'node:fs/promises';
import { join } from 'node:path';

const BOOT_ID_FILE = '/proc/sys/kernel/random/boot_id';
const TAG = '.boot-';
/** hex digits of the boot id kept in names: enough that two boots of one machine never share them */
const TAG_DIGITS = 16;

/** This boot of the machine's kernel, as 32 hex digits, or null where it cannot be read. */
export function bootId(): string | null {
  try {
    const id = readFileSync(BOOT_ID_FILE, 'utf8').trim().replace(/-/gu, '');
    return /^[0-9a-f]{32}$/u.test(id) ? id : null;
  } catch {
    return null;
  }
}

export interface CacheNames {
  /** the name to write the entry under */
  write: string;
  /** whether it must be fsynced before the rename into place */
  durable: boolean;
  /** names that hold this entry, in the order to look for them */
  lookFor: string[];
}

/**
 * The names of the cache entry `<stem>.gguf`: written untagged and fsynced when `durable` (or when
 * the boot id cannot be read), else tagged with this boot (`<stem>.boot-<id>.gguf`) and not fsynced.
 * A durable write looks only for a durable entry: finding this boot's would leave nothing that
 * outlives it.
 */
export function cacheNames(stem: string, durable: boolean, boot: string | null = bootId()): CacheNames {
  const plain = `${stem}.gguf`;
  if (durable || boot === null) return { write: plain, durable: true, lookFor: [plain] };
  const tagged = `${stem}${TAG}${boot.slice(0, TAG_DIGITS)}.gguf`;
  return { write: tagged, durable: false, lookFor: [tagged, plain] };
}

/**
 * Once the entry `keep` of `stem` is in place in `dir`: removes the boot-tagged entries of that stem
 * beside it (of earlier boots, never to be used again; or of this boot, when `keep` is durable).
 */
export async function removeSuperseded(dir: string, stem: string, keep: string): Promise<void> {
  const pattern = new RegExp(`^${escaped(stem)}${escaped(TAG)}[0-9a-f]{${TAG_DIGITS}}\\.gguf$`, 'u');
  for (const entry of await readdir(dir).catch(() => [])) {
    if (entry !== keep && pattern.test(entry)) await unlink(join(dir, entry)).catch(() => undefined);
  }
}

function escaped(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/gu, '\\$&');
}
