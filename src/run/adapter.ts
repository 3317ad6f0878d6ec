/**
 * Step 2 of `run`: the adapter verified and converted in one pass. `convertAdapter` verifies it (fail
 * closed: exit 1) and its compatibility with the base, then finds the GGUF in its cache or writes it.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { convertAdapter, type ConvertResult } from '../convert.js';
import { asCodiError, CodiError, ExitCode, isCodiError } from '../errors.js';
import type { Finding } from '../findings.js';
import { sha256Ref } from '../metadata.js';
import type { RunContext } from './context.js';
import type { AdapterRecord } from './environment.js';
import { adapterPolicy, defaultRefused, refusalOf, type AdapterPolicy } from './trust.js';

/** In the files metadata.json lists: the weights file, whichever it is (the short checksum form). */
const WEIGHTS = '<weights>';

export interface ServableAdapter {
  /** the GGUF llama-server is given */
  gguf: string;
  record: AdapterRecord;
}

export async function verifyAndConvert(ctx: RunContext, adapterDir: string): Promise<ServableAdapter> {
  const { config, report } = ctx;
  const peek = await peekMetadata(adapterDir);
  if (peek?.base_model !== undefined && peek.base_model !== config.codeModel) {
    const reason = `the adapter was trained for base_model ${JSON.stringify(peek.base_model)}, but CODE_MODEL is ${JSON.stringify(config.codeModel)}`;
    report.emit({ kind: 'adapter-status', status: 'invalid', reason });
    throw new CodiError('BASE_MODEL_MISMATCH', reason, {
      file: 'metadata.json',
      hint: `serve it on its own base (set CODE_MODEL=${peek.base_model} and BASE_MODEL_PATH), or mount an adapter made for ${config.codeModel}`,
    });
  }
  const policy = await adapterPolicy(ctx);
  const converted = await convertReporting(ctx, adapterDir, policy);
  // served all the same: e.g. BASE_UNRECORDED, an adapter not bound to one base
  if (converted.warnings.length > 0) report.emit({ kind: 'findings', findings: converted.warnings });
  // the short checksum form stands for the weights file, whichever it is
  const files = (peek?.files ?? [WEIGHTS]).map((f) => (f === WEIGHTS ? converted.adapter.weightsFile : f));
  const { id, version, weightsSha256 } = converted.adapter;
  const refusal = refusalOf(policy, id, sha256Ref(weightsSha256));
  if (refusal) {
    report.emit({ kind: 'adapter-status', status: 'invalid', reason: `${refusal.code}: ${refusal.message}` });
    throw defaultRefused(refusal);
  }
  if (converted.signedBy) report.info(`adapter signed by ${converted.signedBy} (a trusted key)`);
  report.info(
    `adapter ${id ?? '?'} ${version ?? '?'} (${adapterDir}): verified, checksums ${files.length}/${files.length} files sha256 ok (weights ${weightsSha256.slice(0, 12)}…)`,
  );
  report.info(
    `GGUF ${converted.cached ? 'from cache' : `converted in ${(converted.durationMs / 1000).toFixed(2)} s`}: ${converted.output}`,
  );
  report.emit({
    kind: 'adapter-status',
    status: 'mounted',
    reason: `${id ?? '?'} ${version ?? '?'}, sha256 verified, serving on ${config.codeModel}`,
  });
  return {
    gguf: converted.output,
    record: {
      id,
      version,
      base_model: peek?.base_model ?? null,
      path: adapterDir,
      checksum: sha256Ref(weightsSha256),
      checksum_verified: true,
      checksums: files.map((file) => ({ file, ok: true })),
      signed_by: converted.signedBy,
      gguf: converted.output,
      gguf_cached: converted.cached,
    },
  };
}

/** `convertAdapter`; when the adapter is invalid, its status and findings are reported before the error. */
async function convertReporting(
  ctx: RunContext,
  adapterDir: string,
  policy: AdapterPolicy,
): Promise<ConvertResult> {
  try {
    return await convertAdapter(adapterDir, {
      base: ctx.config.baseModelPath,
      stateDir: ctx.config.stateDir,
      ...(policy.trust ? { trust: policy.trust } : {}),
    });
  } catch (thrown) {
    const e = asCodiError(thrown) ?? thrown;
    if (isCodiError(e) && e.exitCode === ExitCode.INVALID) {
      // the error itself is reported last; the other findings are shown here
      const findings = findingsOf(e);
      const errors = findings.filter((f) => f.level === 'error');
      if (findings.length > 1) ctx.report.emit({ kind: 'findings', findings });
      const codes = errors.length > 0 ? [...new Set(errors.map((f) => f.code))].join(', ') : e.code;
      ctx.report.emit({
        kind: 'adapter-status',
        status: 'invalid',
        reason: `${errors.length || 1} error${errors.length > 1 ? 's' : ''}: ${codes}`,
      });
    } else if (isCodiError(e) && e.code === 'PATH_INACCESSIBLE') {
      // made unreadable after step 1 looked: still an adapter this user cannot read
      ctx.report.emit({ kind: 'adapter-status', status: 'not_mounted', reason: e.message });
    }
    throw e;
  }
}

/** The findings a failed verification carries (requireValid puts them in the error's details). */
function findingsOf(e: CodiError): Finding[] {
  const findings = e.details?.findings;
  return Array.isArray(findings) ? (findings as Finding[]) : [];
}

/**
 * id, version, base_model and the checksummed files from metadata.json, read without validation: the
 * base model is checked before a conversion is spent on the wrong one; convertAdapter verifies it all.
 */
async function peekMetadata(dir: string): Promise<{ base_model?: string; files: string[] } | null> {
  try {
    const data = JSON.parse(await readFile(join(dir, 'metadata.json'), 'utf8')) as Record<string, unknown>;
    const checksum = data.checksum;
    const files =
      typeof checksum === 'string'
        ? [WEIGHTS]
        : checksum !== null && typeof checksum === 'object' && 'files' in checksum
          ? Object.keys((checksum as { files: Record<string, unknown> }).files).sort()
          : [];
    return typeof data.base_model === 'string' ? { base_model: data.base_model, files } : { files };
  } catch {
    return null;
  }
}
