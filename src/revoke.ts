/**
 * `revoke`: records an adapter version as revoked in patterns/rules.yml, under
 * `llm_assist.revoked.<id>: {checksum, reason, revoked_at}`, keeping every other byte of the file as
 * `promote` does, under the same lock. `run`, `mount` and `promote` refuse a revoked adapter (same id
 * and weights checksum); `list` shows it.
 */
import { realpath } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import { createTwoFilesPatch } from 'diff';
import { removeDeadTemps } from './atomic.js';
import { CodiError, ExitCode, isCodiError } from './errors.js';
import { isValidAdapterId } from './layout.js';
import { withLock, type LockOwner } from './lock.js';
import { sha256Hex } from './metadata.js';
import { DEFAULT_PROMOTE_LOCK_TIMEOUT_MS, isoSeconds, readText, replaceFile } from './promote.js';
import { adapterEntry, parseRules, recordRevocation, revocationOf, type Revocation } from './rules.js';

export interface RevokeOptions {
  /** patterns/rules.yml */
  rules: string;
  reason: string;
  /** the weights checksum to revoke (`sha256:<hex>`); default: the one promoted under the id */
  checksum?: string;
  dryRun?: boolean;
  lockTimeoutMs?: number;
  onLockWait?: (owner: LockOwner | null) => void;
  /** the revocation time (tests) */
  now?: Date;
}

export interface RevokeResult {
  /** the rules file records the revocation after the command (false on a dry run that would add it) */
  revoked: boolean;
  /** it did already: nothing was (or would be) changed */
  already: boolean;
  dry_run: boolean;
  id: string;
  revocation: Revocation;
  rules_file: string;
  /** the id is the rules file's default adapter: run refuses it until another one is the default */
  is_default: boolean;
  diff?: string;
}

export async function revokeAdapter(id: string, options: RevokeOptions): Promise<RevokeResult> {
  if (!isValidAdapterId(id)) {
    throw new CodiError('MOUNT_ID_INVALID', `${JSON.stringify(id)} is not an adapter id`, {
      exitCode: ExitCode.USAGE,
    });
  }
  if (options.checksum !== undefined && sha256Hex(options.checksum) === null) {
    throw new CodiError(
      'USAGE',
      `--checksum must be sha256:<64 lowercase hex>, got ${JSON.stringify(options.checksum)}`,
    );
  }
  const rulesPath = await realpath(resolve(options.rules)).catch(() => resolve(options.rules));
  const apply = async (write: boolean): Promise<RevokeResult> => {
    const before = await readText(rulesPath, 'the rules file', 'RULES_YAML_INVALID');
    const rules = parseRulesAt(before, rulesPath);
    const checksum = options.checksum ?? adapterEntry(rules, id)?.checksum;
    if (checksum === undefined) {
      throw new CodiError(
        'REVOKE_CHECKSUM_UNKNOWN',
        `${id} is not promoted in ${rulesPath}, so which weights to revoke is not known`,
        {
          file: rulesPath,
        },
      );
    }
    const existing = revocationOf(rules, id, checksum);
    const revocation: Revocation = existing ?? {
      checksum,
      reason: options.reason,
      revoked_at: isoSeconds(options.now ?? new Date()),
    };
    let after = before;
    try {
      if (!existing) after = recordRevocation(rules, id, revocation).text;
    } catch (e) {
      if (isCodiError(e)) throw e.withFile(rulesPath);
      throw e;
    }
    const result: RevokeResult = {
      revoked: existing !== null || write,
      already: existing !== null,
      dry_run: !write,
      id,
      revocation,
      rules_file: rulesPath,
      is_default: rules.llmAssist?.default_adapter === id,
    };
    if (!write) {
      result.diff =
        before === after
          ? ''
          : createTwoFilesPatch(rulesPath, rulesPath, before, after, undefined, undefined, { context: 3 });
    } else if (after !== before) {
      await removeDeadTemps(dirname(rulesPath), [basename(rulesPath)], { lockHeld: true });
      await replaceFile(rulesPath, after, 'revoke:rules-temp');
    }
    return result;
  };
  if (options.dryRun) return apply(false);
  return withLock(
    `${rulesPath}.lock`,
    {
      timeoutMs: options.lockTimeoutMs ?? DEFAULT_PROMOTE_LOCK_TIMEOUT_MS,
      purpose: `revoke ${id}`,
      ...(options.onLockWait ? { onWait: options.onLockWait } : {}),
    },
    () => apply(true),
  );
}

function parseRulesAt(text: string, path: string): ReturnType<typeof parseRules> {
  try {
    return parseRules(text);
  } catch (e) {
    if (isCodiError(e)) throw e.withFile(path);
    throw e;
  }
}
