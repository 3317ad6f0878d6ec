/**
 * `mount --base` binds the mounted adapter to its base model: the base GGUF's sha256 and name go into
 * the adapter's metadata.json (`base`), which verify --base, convert and run then hold every base to.
 * The file is rewritten atomically under its lock, the one promote takes to append evaluations.
 */
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { AtomicFile, removeDeadTemps } from '../atomic.js';
import {
  baseRecord,
  baseSha256,
  defaultStateDir,
  describeRecorded,
  type RecordedBase,
} from '../base-identity.js';
import { CodiError, environmentError } from '../errors.js';
import { METADATA_FILE, METADATA_LOCK_FILE } from '../layout.js';
import { withLock } from '../lock.js';
import { editMetadataText, withBase, type AdapterMetadata } from '../metadata.js';

export interface BaseBinding extends RecordedBase {
  /** metadata.json was written (false: it recorded this very base already) */
  recorded: boolean;
  /** another base was recorded before, and --force replaced it */
  replaced: string | null;
}

/**
 * Records the base at `basePath` (whose `general.name` is `name`) in `<adapterDir>/metadata.json`.
 * Another base recorded there is BASE_MISMATCH unless `force`.
 */
export async function bindToBase(
  adapterDir: string,
  basePath: string,
  name: string | null,
  options: { force: boolean; lockTimeoutMs: number; id: string },
): Promise<BaseBinding> {
  const { sha256 } = await baseSha256(basePath, { stateDir: defaultStateDir() });
  const wanted = baseRecord(basePath, sha256, name);
  const path = join(adapterDir, METADATA_FILE);
  return withLock(
    join(adapterDir, METADATA_LOCK_FILE),
    { timeoutMs: options.lockTimeoutMs, purpose: `mount ${options.id} --base` },
    async () => {
      const text = await readFile(path, 'utf8').catch((e: unknown) => {
        throw environmentError(e, path, 'read');
      });
      const before = (JSON.parse(text) as AdapterMetadata).base;
      if (before?.sha256 === sha256) return { ...before, recorded: false, replaced: null };
      if (before && !options.force) {
        throw new CodiError(
          'BASE_MISMATCH',
          `${options.id} is bound to base ${describeRecorded(before)}, but --base ${basePath} has sha256 ${sha256}`,
          {
            file: path,
            hint: `mount it with --base ${before.file ?? '<its base>'}, or add --force to bind it to ${basePath} instead`,
          },
        );
      }
      const after = editMetadataText(text, (data) => withBase(data, wanted), path);
      await removeDeadTemps(adapterDir, [METADATA_FILE], { lockHeld: true });
      await replaceText(path, after);
      return { ...wanted, recorded: true, replaced: before ? before.sha256 : null };
    },
  );
}

/** Writes `text` over `path` atomically, keeping the file's mode. */
async function replaceText(path: string, text: string): Promise<void> {
  const st = await stat(path).catch(() => null);
  const mode = st ? st.mode & 0o7777 : 0o644;
  const file = await AtomicFile.open(path, mode);
  try {
    await file.handle.writeFile(text);
    await file.handle.chmod(mode);
  } catch (e) {
    await file.abort();
    throw environmentError(e, path, 'written');
  }
  await file.commit();
}
