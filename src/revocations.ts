/**
 * The revocations of a rules file (`llm_assist.revoked`), for the commands that refuse a revoked
 * adapter (`mount`, `run`) or show one (`list`); `promote` and `revoke` read them under their lock.
 */
import { readFile } from 'node:fs/promises';
import { CodiError, environmentError, isCodiError } from './errors.js';
import { decodeUtf8 } from './formats/utf8.js';
import type { Revocation, RulesDocument } from './rules.js';

export interface Revocations {
  /** the rules file read; null when an optional one is not there */
  file: string | null;
  /** the revocation of adapter `id` with weights `checksum` (`sha256:<hex>`), if it is revoked */
  of(id: string, checksum: string): Revocation | null;
}

export const NO_REVOCATIONS: Revocations = { file: null, of: () => null };

/**
 * The revocations in `path`. A rules file that does not exist is an environment error (exit 3), or,
 * when `optional` (run's PATTERNS_RULES), no revocations at all; one that is not valid is refused
 * (exit 1): revocations that cannot be read must not pass for none.
 */
export async function readRevocations(path: string, optional = false): Promise<Revocations> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (e) {
    const errno = (e as NodeJS.ErrnoException).code;
    if (optional && (errno === 'ENOENT' || errno === 'ENOTDIR')) return NO_REVOCATIONS;
    throw environmentError(e, path, 'read');
  }
  const decoded = decodeUtf8(bytes);
  if (!('text' in decoded)) {
    throw new CodiError('RULES_YAML_INVALID', `${path} is not UTF-8 (byte ${decoded.invalidAt})`, {
      file: path,
    });
  }
  // the YAML parser (some seventy modules) only for a rules file that is there
  const { parseRules, revocationOf } = await import('./rules.js');
  let rules: RulesDocument;
  try {
    rules = parseRules(decoded.text);
  } catch (e) {
    if (isCodiError(e)) throw e.withFile(path);
    throw e;
  }
  return { file: path, of: (id, checksum) => revocationOf(rules, id, checksum) };
}

/** ADAPTER_REVOKED for a revoked adapter; `what` names it in the message (id, version). */
export function requireNotRevoked(
  revocations: Revocations,
  id: string,
  checksum: string,
  what: string,
): void {
  const revoked = revocations.of(id, checksum);
  if (!revoked) return;
  throw new CodiError(
    'ADAPTER_REVOKED',
    `${what} (${checksum}) is revoked in ${revocations.file ?? 'the rules file'} since ${revoked.revoked_at}: ${revoked.reason}`,
    { file: revocations.file ?? undefined, details: { revocation: revoked } },
  );
}
