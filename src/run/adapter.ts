/**
 * Step 2 of `run`: the adapter verified and converted in one pass. `convertAdapter` verifies it (fail
 * closed: exit 1) and its compatibility with the base, then finds the GGUF in a cache, wherever it is,
 * and proves it byte for byte, or writes it. `run` opens the proven file and hands llama-server that
 * open file (as /dev/fd/3): a file put in its place afterwards is never what llama-server reads, and a
 * write into it shows in its times, checked once llama-server has loaded it.
 *
 * Where: an entry is looked for in CODI_GGUF_CACHE, the models volume's cache
 * (`<MODEL_MOUNT_PATH>/adapters/.gguf-cache`, where `mount --base` puts it), the cache beside the
 * adapter, the state directory's (`<CODI_STATE_DIR>/gguf-cache`) and the user cache; a new one is
 * written to CODI_GGUF_CACHE, the volume's cache (only for an adapter on the volume), or the state
 * directory's: never beside an adapter elsewhere.
 */
import { readFile, realpath } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { RegularFile, sameFile } from '../byte-source.js';
import { convertAdapter, type ConvertResult } from '../convert.js';
import { asCodiError, CodiError, ExitCode, isCodiError } from '../errors.js';
import type { Finding } from '../findings.js';
import { unique, userCacheDir, type CacheLocations } from '../gguf-cache.js';
import { formatDuration } from '../text.js';
import { sha256Ref } from '../metadata.js';
import type { RunContext } from './context.js';
import type { AdapterRecord } from './environment.js';
import { adapterPolicy, defaultRefused, refusalOf, type AdapterPolicy } from './trust.js';

/** In the files metadata.json lists: the weights file, whichever it is (the short checksum form). */
const WEIGHTS = '<weights>';

export interface ServableAdapter {
  /** where the GGUF is */
  gguf: string;
  /** the GGUF, open: proven to be the adapter's conversion; llama-server reads this file */
  file: RegularFile;
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
  for (const f of converted.warnings) report.warn(`${f.code}: ${f.message}`, f.hint);
  report.info(
    converted.cached
      ? `GGUF from cache, every byte compared with the conversion of the verified adapter: ${converted.output}`
      : `GGUF converted in ${formatDuration(converted.durationMs)}: ${converted.output}`,
  );
  const file = await openProven(converted);
  report.emit({
    kind: 'adapter-status',
    status: 'mounted',
    reason: `${id ?? '?'} ${version ?? '?'}, sha256 verified, serving on ${config.codeModel}`,
  });
  return {
    gguf: converted.output,
    file,
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
      gguf_proof: converted.proof.kind,
      findings: converted.warnings.map((f) => ({ level: f.level, code: f.code, message: f.message })),
    },
  };
}

/**
 * The GGUF the conversion proved, opened: the file must be the one proven (same device, inode, size
 * and modification time; and change time, for a cached file, which no rename has touched since).
 */
async function openProven(converted: ConvertResult): Promise<RegularFile> {
  const file = await RegularFile.open(converted.output, { noFollow: true });
  const now = file.identity;
  const was = converted.proof.identity;
  const same =
    now.dev === was.dev &&
    now.ino === was.ino &&
    now.size === was.size &&
    now.mtimeMs === was.mtimeMs &&
    (converted.proof.kind === 'written' || now.ctimeMs === was.ctimeMs);
  if (same) return file;
  await file.close();
  throw new CodiError('GGUF_CHANGED', `${converted.output} was replaced or written to after it was proven`, {
    file: converted.output,
  });
}

/** After llama-server has loaded it: the file it read is still the one opened, unwritten since. */
export async function requireUnchanged(file: RegularFile): Promise<void> {
  if (sameFile(file.identity, await file.currentIdentity())) return;
  throw new CodiError('GGUF_CHANGED', `${file.path} was written to while llama-server loaded it`, {
    file: file.path,
  });
}

/** Where `run` looks for a cached GGUF, and where it writes one (see the top of this file). */
export async function runCacheLocations(
  config: RunContext['config'],
  adapterDir: string,
  env: NodeJS.ProcessEnv,
): Promise<CacheLocations> {
  const adapters = join(config.modelMountPath, 'adapters');
  const volume = join(adapters, '.gguf-cache');
  const state = join(config.stateDir, 'gguf-cache');
  const onVolume = dirname(adapterDir) === (await realpath(adapters).catch(() => adapters));
  return {
    search: unique([
      env.CODI_GGUF_CACHE,
      volume,
      join(dirname(adapterDir), '.gguf-cache'),
      state,
      userCacheDir(env),
    ]),
    write: unique([env.CODI_GGUF_CACHE, onVolume ? volume : null, state]),
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
      cache: await runCacheLocations(ctx.config, adapterDir, ctx.env),
      signal: ctx.trap.stopping,
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
