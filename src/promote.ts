/**
 * `promote`: release an adapter into patterns/rules.yml (its `llm_assist` section). Verify (fail closed), check
 * the evaluation against the gates the rules file sets, record the adapter in `llm_assist`, and append
 * the evaluation to the adapter's metadata.json. Both files are replaced atomically while a lock beside
 * rules.yml is held, so concurrent promotes serialise instead of losing each other's entries.
 */
import { readFile, realpath, stat } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { createTwoFilesPatch } from 'diff';
import { AtomicFile, removeDeadTemps } from './atomic.js';
import { CodiError, ExitCode, environmentError, isCodiError } from './errors.js';
import { parseJson, StrictJsonError } from './formats/strict-json.js';
import { decodeUtf8, describeInvalidUtf8 } from './formats/utf8.js';
import { METADATA_FILE, METADATA_LOCK_FILE } from './layout.js';
import { withLock, type Lock, type LockOptions, type LockOwner } from './lock.js';
import {
  editMetadataText,
  sha256Ref,
  withBase,
  type AdapterMetadata,
  type EvaluationRecord,
} from './metadata.js';
import type { BaseModel } from './base-model.js';
import {
  baseRecord,
  baseSha256,
  describeRecorded,
  recordedBaseOf,
  type RecordedBase,
} from './base-identity.js';
import { finding, type Finding } from './findings.js';
import {
  adapterEntry,
  declaredBaseModel,
  minMetricGates,
  parseRules,
  recordAdapter,
  revocationOf,
  type RulesAdapterEntry,
  type RulesDocument,
} from './rules.js';
import { formatViolation, validateAgainst } from './schemas.js';
import { compareSemver } from './semver.js';
import { pausePoint } from './test-hooks.js';
import type { TrustedKeys } from './signing/keys.js';
import { requireValid, verifyAdapter, weightsSha256, type VerifyOptions } from './verify.js';

export interface PromoteOptions {
  /** patterns/rules.yml */
  rules: string;
  /** eval.json; without it, the newest record in metadata.json `evaluations` is used */
  eval?: string;
  /** compute and return the diff, write nothing */
  dryRun?: boolean;
  /** allow a version downgrade, or new weights under an already promoted version */
  force?: boolean;
  /** make this adapter `default_adapter` (it becomes the default anyway when none is set) */
  setDefault?: boolean;
  /** how long to wait for another promote's lock (default 10 s) */
  lockTimeoutMs?: number;
  /** called once when the lock is held by someone else and waiting starts */
  onLockWait?: (owner: LockOwner | null) => void;
  /** the promotion time (tests) */
  now?: Date;
  /**
   * The base model GGUF the adapter is served on: checked (compatibility, and the sha256 metadata.json
   * records), then recorded in the rules and, when it records none, in metadata.json
   */
  base?: string;
  /** the adapter must be signed by one of these keys; its fingerprint is recorded as `signed_by` */
  trust?: TrustedKeys;
}

export interface GateResult {
  metric: string;
  /** the minimum the rules require */
  threshold: number;
  /** the evaluation's value; null when the evaluation lacks the metric */
  value: number | null;
  ok: boolean;
}

export interface PromoteEvaluation {
  suite: string;
  evaluated_at: string;
  base_model: string;
  metrics: Record<string, number>;
  /** where it came from: the --eval file, or metadata.json */
  source: 'eval-file' | 'metadata';
}

export interface PromoteResult {
  /** the rules file records this adapter version and checksum after the command (false on a dry run that would change it) */
  promoted: boolean;
  /** it already did: nothing was (or would be) changed */
  already: boolean;
  dry_run: boolean;
  adapter: { id: string; version: string; base_model: string; checksum: string; path: string };
  /** the base model recorded for it: from --base, else from metadata.json; null when neither says */
  base: RecordedBase | null;
  /** verification's warnings (e.g. BASE_UNRECORDED): promoted all the same */
  warnings: Finding[];
  /** the trusted key whose model.sig was verified (with --trust), recorded in the entry */
  signed_by: string | null;
  /**
   * The adapter carries model.sig: its metadata.json was left as it is, since appending the
   * evaluation would break the signature (the rules file records the evaluation all the same).
   */
  metadata_kept: boolean;
  rules_file: string;
  ruleset_version: string;
  default_adapter: string | null;
  evaluation: PromoteEvaluation | null;
  gates: GateResult[];
  /** which files were (or, on a dry run, would be) written */
  changed: { rules: boolean; metadata: boolean };
  /** unified diff of every change; only with --dry-run */
  diff?: string;
}

export const DEFAULT_PROMOTE_LOCK_TIMEOUT_MS = 10_000;

export async function promoteAdapter(dir: string, options: PromoteOptions): Promise<PromoteResult> {
  // the adapter, fail closed (the slow part, hashing, happens before the lock is taken)
  const checked = options.base === undefined ? null : await checkedBase(options.base);
  const model = checked?.model ?? null;
  const verifyOptions: VerifyOptions = {
    ...(checked ? { baseCheck: checked.baseCheck } : {}),
    ...(options.trust ? { trust: options.trust } : {}),
  };
  const report = await verifyAdapter(dir, verifyOptions);
  requireValid(report);
  const signedBy = report.signature?.ok ? (report.signature.signer?.fingerprint ?? null) : null;
  const signed = report.signature?.present === true;
  const { metadata, layout } = report.verified;
  const weights = weightsSha256(report);
  if (!metadata || !layout.weightsFile || !weights) {
    throw new CodiError('INTERNAL', 'a verified adapter has no metadata or weights checksum');
  }
  const adapter = {
    id: metadata.id,
    version: metadata.version,
    base_model: metadata.base_model,
    checksum: sha256Ref(weights),
    path: layout.dir,
  };
  const base = model
    ? baseRecord(model.path, (await baseSha256(model.path)).sha256, model.name)
    : recordedBaseOf(metadata);
  // with --base, the base is recorded by this promote: verification's BASE_UNRECORDED no longer holds
  const warnings = report.findings.filter(
    (f) => f.level === 'warning' && !(model && f.code === 'BASE_UNRECORDED'),
  );
  if (!base) warnings.push(unrecordedBase(metadata.id));

  const evaluation = options.eval ? await readEvaluation(options.eval, metadata) : latestEvaluation(metadata);

  // through a symlinked rules.yml to the real file: the rename must replace the file, not the link
  const rulesPath = await realpath(resolve(options.rules)).catch(() => resolve(options.rules));
  await pausePoint('promote:verified');
  const promotion: Promotion = { rulesPath, adapter, base, warnings, evaluation, options, signedBy, signed };
  if (options.dryRun) return plan(promotion, null);

  // the rest under the lock: the rules file is read again there, so a concurrent promote's entry is kept
  const lockOptions = (purpose: string): LockOptions => ({
    timeoutMs: options.lockTimeoutMs ?? DEFAULT_PROMOTE_LOCK_TIMEOUT_MS,
    purpose,
    ...(options.onLockWait ? { onWait: options.onLockWait } : {}),
  });
  const purpose = `promote ${adapter.id} ${adapter.version}`;
  return withLock(`${rulesPath}.lock`, lockOptions(purpose), (lock) =>
    // and the adapter's metadata.json, which promotes into other rules files may append to as well;
    // always taken second, so two promotes never wait for each other's first lock
    withLock(
      join(adapter.path, METADATA_LOCK_FILE),
      lockOptions(`${purpose} into ${rulesPath}`),
      async () => {
        await pausePoint('promote:locked');
        return plan(promotion, lock);
      },
    ),
  );
}

type AdapterSummary = PromoteResult['adapter'];

/** One promote: the adapter, its evaluation, the rules file and the options. */
interface Promotion {
  rulesPath: string;
  adapter: AdapterSummary;
  base: RecordedBase | null;
  warnings: Finding[];
  evaluation: PromoteEvaluation | null;
  options: PromoteOptions;
  /** the trusted signer's fingerprint (--trust) */
  signedBy: string | null;
  /** the adapter carries model.sig */
  signed: boolean;
}

/** Decides every change; writes them when holding the lock, returns the diff on a dry run. */
async function plan(p: Promotion, lock: Lock | null): Promise<PromoteResult> {
  const { adapter } = p;
  const { rules, rulesetVersion } = await readRules(p.rulesPath);
  requireNotRevoked(rules, p);
  const gates = checkGates(rules, p);
  requireRulesBase(rules, p);
  const existing = adapterEntry(rules, adapter.id);
  if (existing && !p.options.force) {
    requireNewVersion(existing, p);
    requireSameBase(existing, p);
  }
  // a promote without --trust leaves a recorded signer as it is; with it, a new signer is recorded
  const recorded =
    existing !== null &&
    existing.version === adapter.version &&
    existing.checksum === adapter.checksum &&
    existing.base_model === adapter.base_model &&
    (p.base === null || existing.base?.sha256 === p.base.sha256) &&
    (p.signedBy === null || existing.signed_by === p.signedBy)
      ? existing
      : null;
  const newRules = recordInRules(rules, rulesetVersion, recorded, p);
  const changes: Changes = {
    rules: { path: p.rulesPath, before: rules.text, after: newRules.text },
    metadata: await metadataChange(recorded, p),
  };
  const changed = {
    rules: changes.rules.after !== changes.rules.before,
    metadata: changes.metadata.after !== changes.metadata.before,
  };
  const result: PromoteResult = {
    promoted: false,
    already: recorded !== null && !changed.rules && !changed.metadata,
    dry_run: lock === null,
    adapter,
    base: p.base,
    warnings: p.warnings,
    signed_by: p.signedBy ?? recorded?.signed_by ?? null,
    metadata_kept: p.signed && p.evaluation?.source === 'eval-file',
    rules_file: p.rulesPath,
    ruleset_version: rulesetVersion,
    default_adapter: newRules.defaultAdapter,
    evaluation: p.evaluation,
    gates,
    changed,
  };
  if (lock === null) {
    result.promoted = recorded !== null && !changed.rules;
    result.diff = patch(changes.rules) + patch(changes.metadata);
    return result;
  }
  await writeChanges(changes, adapter.path);
  result.promoted = true;
  return result;
}

/**
 * metadata.json with the evaluation from --eval appended to `evaluations`, once. Also after an earlier
 * promote died between its two writes: the rules record it (`recorded`), the metadata does not yet.
 */
async function metadataChange(recorded: RulesAdapterEntry | null, p: Promotion): Promise<Change> {
  const { evaluation } = p;
  const path = join(p.adapter.path, METADATA_FILE);
  const before = await readText(path, 'metadata.json', 'METADATA_JSON');
  // a signed adapter's metadata.json is signed too: appending to it would break the signature
  const record = evaluation?.source === 'eval-file' && !p.signed ? evaluationRecord(evaluation) : null;
  const sameAsRecorded =
    recorded === null ||
    (recorded.evaluation !== undefined &&
      evaluation !== null &&
      recorded.evaluation.suite === evaluation.suite &&
      sameJson(recorded.evaluation.metrics, evaluation.metrics));
  const evaluated = record && sameAsRecorded ? appendEvaluation(before, record, path) : before;
  // the base --base named, when metadata.json records none yet (a different one failed verification);
  // not into a signed adapter's metadata.json (the rules file records it)
  const base = p.signed ? null : p.base;
  const bound =
    base && (JSON.parse(evaluated) as AdapterMetadata).base === undefined
      ? editMetadataText(evaluated, (data) => withBase(data, base), path)
      : evaluated;
  return { path, before, after: bound };
}

/** A release keeps the base it was promoted on (without --force). */
function requireSameBase(existing: RulesAdapterEntry, { adapter, base, rulesPath }: Promotion): void {
  const was = existing.base?.sha256;
  if (was === undefined || base === null || was === base.sha256) return;
  if (existing.version !== adapter.version) return;
  throw new CodiError(
    'BASE_MISMATCH',
    `${adapter.id} ${adapter.version} is promoted on base ${was}${existing.base?.name ? ` (${existing.base.name})` : ''}, but this promote names base ${describeRecorded(base)}`,
    {
      file: rulesPath,
      hint: 'promote it with the base it was released on, or add --force to record this one',
    },
  );
}

function unrecordedBase(id: string): Finding {
  return finding(
    'BASE_UNRECORDED',
    `${id} records no base model sha256 and no --base was given: the rules cannot say which base model it is served on`,
    METADATA_FILE,
    { pointer: '/base' },
  );
}

/**
 * The --base GGUF as a base model, and verify's check against it; a file that is not one fails the
 * promote (exit 1, or 3 if unreadable). The GGUF code is loaded only for --base.
 */
async function checkedBase(
  path: string,
): Promise<{ model: BaseModel; baseCheck: VerifyOptions['baseCheck'] }> {
  const { baseCheckFor, readBaseForCheck } = await import('./base-model.js');
  const model = await readBaseForCheck(resolve(path));
  if (model instanceof CodiError) throw model;
  return { model, baseCheck: baseCheckFor(model) };
}

/** The rules file, parsed; it must name its ruleset version (promote records it). */
async function readRules(rulesPath: string): Promise<{ rules: RulesDocument; rulesetVersion: string }> {
  const rules = parseRulesAt(await readText(rulesPath, 'the rules file', 'RULES_YAML_INVALID'), rulesPath);
  if (rules.rulesetVersion === null) {
    throw new CodiError(
      'RULES_VERSION_MISSING',
      `${rulesPath} has no top-level \`version\` (the ruleset version)`,
      {
        file: rulesPath,
      },
    );
  }
  return { rules, rulesetVersion: rules.rulesetVersion };
}

/** The gates against the evaluation (GATE_FAILED): a metric the evaluation lacks fails its gate. */
function checkGates(rules: RulesDocument, { evaluation, rulesPath }: Promotion): GateResult[] {
  const gates = Object.entries(minMetricGates(rules)).map(([metric, threshold]): GateResult => {
    const value = evaluation?.metrics[metric];
    return { metric, threshold, value: value ?? null, ok: value !== undefined && value >= threshold };
  });
  const failed = gates.filter((g) => !g.ok);
  if (failed.length === 0) return gates;
  const what = failed
    .map((g) =>
      g.value === null
        ? `${g.metric} is missing (gate: ≥ ${g.threshold})`
        : `${g.metric} ${g.value} is below the gate ${g.threshold}`,
    )
    .join('; ');
  throw new CodiError(
    'GATE_FAILED',
    `${failed.length === 1 ? 'a gate failed' : `${failed.length} gates failed`}: ${what}`,
    {
      file: rulesPath,
      hint: evaluation
        ? 'the adapter does not meet llm_assist.gates.min_metrics; nothing was changed'
        : 'give the evaluation with --eval <eval.json>; the rules file sets gates',
      details: { gates, evaluation },
    },
  );
}

/** A revoked adapter (same id and weights) is never promoted again (ADAPTER_REVOKED). */
function requireNotRevoked(rules: RulesDocument, { adapter, rulesPath }: Promotion): void {
  const revoked = revocationOf(rules, adapter.id, adapter.checksum);
  if (!revoked) return;
  throw new CodiError(
    'ADAPTER_REVOKED',
    `${adapter.id} ${adapter.version} (${adapter.checksum}) was revoked at ${revoked.revoked_at}: ${revoked.reason}`,
    { file: rulesPath },
  );
}

/** The adapter must be for the base model the rules are for (PROMOTE_BASE_MISMATCH). */
function requireRulesBase(rules: RulesDocument, { adapter, rulesPath }: Promotion): void {
  const declared = declaredBaseModel(rules);
  if (!declared || declared.base_model === adapter.base_model) return;
  throw new CodiError(
    'PROMOTE_BASE_MISMATCH',
    `${adapter.id} is for base model ${JSON.stringify(adapter.base_model)}, but the rules are for ${JSON.stringify(declared.base_model)} (${declared.from})`,
    {
      file: rulesPath,
    },
  );
}

/** Versions never go backwards, and a released version never gets new weights (without --force). */
function requireNewVersion(existing: RulesAdapterEntry, { adapter, rulesPath }: Promotion): void {
  const order = compareSemver(adapter.version, existing.version);
  if (order < 0) {
    throw new CodiError(
      'PROMOTE_DOWNGRADE',
      `${adapter.id} ${existing.version} is promoted; ${adapter.version} would be a downgrade`,
      {
        file: rulesPath,
      },
    );
  }
  if (order === 0 && existing.checksum !== adapter.checksum) {
    throw new CodiError(
      'PROMOTE_VERSION_REUSED',
      `${adapter.id} ${adapter.version} is already promoted with other weights (${existing.checksum}, now ${adapter.checksum})`,
      {
        file: rulesPath,
      },
    );
  }
}

/**
 * The rules text with the adapter's entry: a new record unless this very one is `recorded` already
 * (then only an explicit --default may still change), and the default adapter after it.
 */
function recordInRules(
  rules: RulesDocument,
  rulesetVersion: string,
  recorded: RulesAdapterEntry | null,
  p: Promotion,
): { text: string; defaultAdapter: string | null } {
  const { adapter, evaluation, options, rulesPath, signedBy } = p;
  const current = { text: rules.text, defaultAdapter: rules.llmAssist?.default_adapter ?? null };
  let value: RulesAdapterEntry;
  let setDefault = options.setDefault ?? false;
  if (recorded) {
    // idempotent: the record stays as it is
    if (!options.setDefault || current.defaultAdapter === adapter.id) return current;
    value = { ...recorded };
    setDefault = true;
  } else {
    value = {
      version: adapter.version,
      base_model: adapter.base_model,
      ...(p.base ? { base: { sha256: p.base.sha256, ...(p.base.name ? { name: p.base.name } : {}) } } : {}),
      checksum: adapter.checksum,
      ...(signedBy ? { signed_by: signedBy } : {}),
      ruleset_version: rulesetVersion,
      promoted_at: isoSeconds(options.now ?? new Date()),
    };
    if (evaluation) value.evaluation = { suite: evaluation.suite, metrics: evaluation.metrics };
  }
  try {
    const r = recordAdapter(rules, adapter.id, value, { setDefault });
    return { text: r.text, defaultAdapter: r.defaultAdapter };
  } catch (e) {
    // e.g. YAML_EDIT_ANCHORED: about this file
    if (isCodiError(e)) throw e.withFile(rulesPath);
    throw e;
  }
}

interface Change {
  path: string;
  before: string;
  after: string;
}

interface Changes {
  rules: Change;
  metadata: Change;
}

/**
 * Atomic writes, rules first: the release record is what matters; the metadata follows it. Only a
 * promote holding the lock of a file writes its temp, and this one holds both: any temp there is a
 * killed promote's. The locks' own temp files are lock.ts's to clean.
 */
async function writeChanges(changes: Changes, adapterDir: string): Promise<void> {
  const { rules, metadata } = changes;
  await removeDeadTemps(dirname(rules.path), [basename(rules.path)], { lockHeld: true });
  await removeDeadTemps(adapterDir, [METADATA_FILE], { lockHeld: true });
  if (rules.after !== rules.before) {
    await replaceFile(rules.path, rules.after, 'promote:rules-temp');
    await pausePoint('promote:rules-written');
  }
  if (metadata.after !== metadata.before) {
    await replaceFile(metadata.path, metadata.after, 'promote:metadata-temp');
    await pausePoint('promote:metadata-written');
  }
}

function parseRulesAt(text: string, path: string): RulesDocument {
  try {
    return parseRules(text);
  } catch (e) {
    if (isCodiError(e)) throw e.withFile(path);
    throw e;
  }
}

/**
 * A file promote reads (and for rules.yml and metadata.json, writes back): strictly UTF-8. A byte that
 * is not would otherwise come back as U+FFFD, changing a part of the file the edit never touched.
 * `code` is the file's own code for unreadable content (exit 1).
 */
export async function readText(
  path: string,
  what: string,
  code: 'METADATA_JSON' | 'RULES_YAML_INVALID' | 'EVAL_JSON',
): Promise<string> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (e) {
    const error = environmentError(e, path, 'read');
    throw error.with({ message: `${what} ${error.message}` });
  }
  const decoded = decodeUtf8(bytes);
  if ('text' in decoded) return decoded.text;
  throw new CodiError(code, `${what} ${path} is ${describeInvalidUtf8(bytes, decoded.invalidAt)}`, {
    exitCode: ExitCode.INVALID,
    file: path,
    pointer: String(decoded.invalidAt),
    hint: 'save it as UTF-8 (e.g. iconv -f latin1 -t utf-8, or -f utf-16); nothing was changed',
    details: { offset: decoded.invalidAt },
  });
}

/** Reads and checks eval.json (schema, and that it evaluated this adapter's base model). */
export async function readEvaluation(path: string, metadata: AdapterMetadata): Promise<PromoteEvaluation> {
  const text = await readText(path, 'the evaluation file', 'EVAL_JSON');
  let data: unknown;
  try {
    // strict (a key given twice is refused), as plain objects for comparing and writing back
    data = parseJson(text);
  } catch (e) {
    if (!(e instanceof StrictJsonError)) throw e;
    throw new CodiError('EVAL_JSON', `${path}: ${e.message}`, { file: path });
  }
  const violations = validateAgainst('eval', data);
  const first = violations[0];
  if (first) {
    const more = violations.length > 1 ? ` (and ${violations.length - 1} more)` : '';
    throw new CodiError('EVAL_INVALID', `${basename(path)} ${formatViolation(first)}${more}`, {
      file: path,
      pointer: first.pointer,
      details: { violations },
    });
  }
  const record = data as EvaluationRecord;
  if (record.base_model !== metadata.base_model) {
    throw new CodiError(
      'EVAL_BASE_MISMATCH',
      `${basename(path)} evaluated base model ${JSON.stringify(record.base_model)}, but ${metadata.id} is for ${JSON.stringify(metadata.base_model)}`,
      { file: path },
    );
  }
  return {
    ...record,
    suite: record.suite,
    evaluated_at: record.evaluated_at,
    base_model: record.base_model,
    metrics: record.metrics,
    source: 'eval-file',
  };
}

/** The newest evaluation metadata.json already holds, by `evaluated_at`. */
function latestEvaluation(metadata: AdapterMetadata): PromoteEvaluation | null {
  let best: EvaluationRecord | null = null;
  for (const e of metadata.evaluations ?? []) {
    if (best === null || Date.parse(e.evaluated_at) >= Date.parse(best.evaluated_at)) best = e;
  }
  return best ? { ...best, source: 'metadata' } : null;
}

/** The record appended to metadata.json: eval.json as given (its extra keys included). */
function evaluationRecord(evaluation: PromoteEvaluation): EvaluationRecord {
  const { source: _source, ...record } = evaluation;
  return record;
}

function appendEvaluation(text: string, record: EvaluationRecord, path: string): string {
  const data = JSON.parse(text) as AdapterMetadata;
  const evaluations = data.evaluations ?? [];
  if (evaluations.some((e) => sameJson(e, record))) return text;
  return editMetadataText(text, (d) => ({ ...d, evaluations: [...evaluations, record] }), path);
}

/** Writes `text` over `path` atomically, keeping the file's mode (and owner, when we may). */
export async function replaceFile(path: string, text: string, pauseStep: string): Promise<void> {
  const st = await stat(path).catch(() => null);
  const mode = st ? st.mode & 0o7777 : 0o644;
  const file = await AtomicFile.open(path, mode);
  try {
    await file.handle.writeFile(text);
    await file.handle.chmod(mode);
    if (st && process.getuid?.() === 0) await file.handle.chown(st.uid, st.gid);
    await file.handle.sync();
  } catch (e) {
    await file.abort();
    throw environmentError(e, path, 'written');
  }
  await pausePoint(pauseStep);
  await file.commit();
}

/** Equal as JSON data, whatever the objects' prototypes (YAML, strict and plain JSON parsers differ). */
function sameJson(a: unknown, b: unknown): boolean {
  return isDeepStrictEqual(JSON.parse(JSON.stringify(a)), JSON.parse(JSON.stringify(b)));
}

function patch({ path, before, after }: Change): string {
  if (before === after) return '';
  // a path inside the working directory reads like `git diff`; anything else stays absolute
  const rel = relative(process.cwd(), path);
  const name = rel === '' || rel.startsWith('..') || isAbsolute(rel) ? path : rel;
  return createTwoFilesPatch(name, name, before, after, undefined, undefined, { context: 3 });
}

export function isoSeconds(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/u, 'Z');
}
