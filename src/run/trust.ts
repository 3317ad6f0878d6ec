/**
 * What `run` serves: with ADAPTER_TRUST_KEYS, only an adapter whose model.sig a trusted key signed;
 * never one PATTERNS_RULES revokes (same id and weights checksum). The signature is checked by the
 * verification itself (the keys go to `convertAdapter`); what is decided here is what becomes of an
 * adapter that fails: the default adapter fails `run` (exit 1), any other adapter of a served set is
 * left out with its finding (`refusalOf`), and the record carries the signer of each one served.
 */
import { CodiError, ExitCode } from '../errors.js';
import { finding, type Finding } from '../findings.js';
import { NO_REVOCATIONS, readRevocations, type Revocations } from '../revocations.js';
import { loadTrustedKeys, type TrustedKeys } from '../signing/keys.js';
import type { RunContext } from './context.js';

export interface AdapterPolicy {
  /** ADAPTER_TRUST_KEYS, read; null when no signature is required */
  trust: TrustedKeys | null;
  revocations: Revocations;
}

/**
 * The policy of this run. Unusable trusted keys stop it (exit 1, or 3 when the path is missing): a
 * policy that cannot be applied must not turn into none. Revocations in a rules file that cannot be
 * read are only warned about, like its ruleset version.
 */
export async function adapterPolicy(ctx: RunContext): Promise<AdapterPolicy> {
  const { config, report } = ctx;
  const trust = config.trustKeys === null ? null : await loadTrustedKeys(config.trustKeys);
  if (trust) {
    report.info(
      `ADAPTER_TRUST_KEYS: ${trust.keys.length} trusted key(s): ${trust.keys.map((k) => k.fingerprint).join(', ')}`,
    );
  }
  let revocations = NO_REVOCATIONS;
  try {
    revocations = await readRevocations(config.patternsRules, true);
  } catch (e) {
    report.warn(
      `revocations not checked: ${(e as Error).message}`,
      'fix PATTERNS_RULES, or a revoked adapter could be served',
    );
  }
  return { trust, revocations };
}

/** Why an adapter that verified (signature included) may not be served: revoked; null when it may. */
export function refusalOf(policy: AdapterPolicy, id: string | null, checksum: string): Finding | null {
  const revoked = id === null ? null : policy.revocations.of(id, checksum);
  if (!revoked) return null;
  return finding(
    'ADAPTER_REVOKED',
    `${id ?? '?'} (${checksum}) is revoked in ${policy.revocations.file ?? 'the rules file'} since ${revoked.revoked_at}: ${revoked.reason}`,
    'metadata.json',
  );
}

/** The default adapter refused: run fails with the refusal's code, exit 1. */
export function defaultRefused(refusal: Finding): CodiError {
  return new CodiError(refusal.code, refusal.message, {
    exitCode: ExitCode.INVALID,
    ...(refusal.hint ? { hint: refusal.hint } : {}),
  });
}
