/**
 * patterns/rules.yml, section `llm_assist` (its shape: schemas/llm-assist.schema.json): read it, and
 * record a promoted adapter in it without disturbing anything else in the file (see yaml-edit.ts for
 * how the bytes are kept).
 */
import { isDeepStrictEqual } from 'node:util';
import { isMap, isScalar } from 'yaml';
import { CodiError, isCodiError } from './errors.js';
import { formatViolation, validateAgainst } from './schemas.js';
import { applyYamlEdits, parseYaml, type YamlEdit, type YamlPath } from './yaml-edit.js';

export const LLM_ASSIST_KEY = 'llm_assist';

export interface RulesEvaluation {
  suite: string;
  metrics: Record<string, number>;
  evaluated_at?: string;
}

export interface RulesAdapterEntry {
  version: string;
  base_model: string;
  /** the weights file's sha256 as `sha256:<64 hex>` (`sha256Ref` in metadata.ts) */
  checksum: string;
  /** the base model GGUF it is served on (sha256 of the file, its name) */
  base?: { sha256: string; name?: string };
  /** the fingerprint of the trusted key whose signature promote verified */
  signed_by?: string;
  ruleset_version?: string;
  promoted_at?: string;
  evaluation?: RulesEvaluation;
  [extra: string]: unknown;
}

/** One revoked adapter version: its id (the key it sits under) and the weights it had. */
export interface Revocation {
  /** the weights file's sha256 as `sha256:<64 hex>` */
  checksum: string;
  reason: string;
  revoked_at: string;
  [extra: string]: unknown;
}

export interface LlmAssist {
  base_model?: string;
  gates?: { min_metrics?: Record<string, number> | null; [extra: string]: unknown } | null;
  default_adapter?: string | null;
  adapters?: Record<string, RulesAdapterEntry> | null;
  /** one revocation per id, or a list when several versions of an id are revoked */
  revoked?: Record<string, Revocation | Revocation[]> | null;
  [extra: string]: unknown;
}

export interface RulesDocument {
  text: string;
  /** the top-level `version` as written (a number keeps its digits: `2026.10`, not `2026.1`) */
  rulesetVersion: string | null;
  /** null when the file has no llm_assist section yet */
  llmAssist: LlmAssist | null;
}

/** The keys promote owns in an adapter entry, in the order it writes them. */
export const ENTRY_KEYS = [
  'version',
  'base_model',
  'base',
  'checksum',
  'signed_by',
  'ruleset_version',
  'promoted_at',
  'evaluation',
] as const;

/**
 * Parses rules.yml text. Throws (exit 1): RULES_YAML_INVALID (not YAML, duplicate keys, several
 * documents), RULES_NOT_MAPPING (the top level is not a mapping), RULES_VERSION_INVALID (a `version`
 * that is not a scalar), RULES_LLM_ASSIST_INVALID (the section does not match its schema).
 */
export function parseRules(text: string): RulesDocument {
  let parsed;
  try {
    parsed = parseYaml(text);
  } catch (e) {
    if (isCodiError(e)) {
      throw new CodiError('RULES_YAML_INVALID', e.message, {
        ...(e.pointer === undefined ? {} : { pointer: e.pointer }),
      });
    }
    throw e;
  }
  const { doc, data } = parsed;
  if (!isMap(doc.contents) || data === null || typeof data !== 'object' || Array.isArray(data)) {
    throw new CodiError(
      'RULES_NOT_MAPPING',
      'the rules file is not a YAML mapping (key: value pairs at the top)',
    );
  }
  const record = data as Record<string, unknown>;

  let rulesetVersion: string | null = null;
  const versionNode = doc.contents.get('version', true);
  if (versionNode !== undefined) {
    if (
      !isScalar(versionNode) ||
      !(typeof versionNode.value === 'string' || typeof versionNode.value === 'number')
    ) {
      throw new CodiError(
        'RULES_VERSION_INVALID',
        'the top-level `version` (the ruleset version) must be a string',
        {
          pointer: '/version',
        },
      );
    }
    rulesetVersion =
      typeof versionNode.value === 'string'
        ? versionNode.value
        : (versionNode.source ?? String(versionNode.value));
  }

  const section = record[LLM_ASSIST_KEY];
  if (section === undefined || section === null) return { text, rulesetVersion, llmAssist: null };
  // the most specific place first: a bad key is reported both at its map and at the key itself
  const violations = validateAgainst('llm-assist', section).sort(
    (a, b) => b.pointer.length - a.pointer.length,
  );
  const first = violations[0];
  if (first) {
    const more = violations.length > 1 ? ` (and ${violations.length - 1} more)` : '';
    throw new CodiError(
      'RULES_LLM_ASSIST_INVALID',
      `llm_assist${formatViolation({ ...first, pointer: first.pointer === '/' ? '' : first.pointer })}${more}`,
      {
        pointer: `/${LLM_ASSIST_KEY}${first.pointer === '/' ? '' : first.pointer}`,
        details: { violations },
      },
    );
  }
  return { text, rulesetVersion, llmAssist: section as LlmAssist };
}

export function adapterEntry(rules: RulesDocument, id: string): RulesAdapterEntry | null {
  const adapters = rules.llmAssist?.adapters;
  if (!adapters || !Object.hasOwn(adapters, id)) return null;
  return adapters[id] ?? null;
}

/** The revocations recorded for `id` (none, one, or several versions). */
export function revocationsOf(rules: RulesDocument, id: string): Revocation[] {
  const revoked = rules.llmAssist?.revoked;
  if (!revoked || !Object.hasOwn(revoked, id)) return [];
  const entry = revoked[id];
  if (entry === undefined) return [];
  return Array.isArray(entry) ? entry : [entry];
}

/** The revocation of the adapter `id` with these weights (`sha256:<hex>`), if it is revoked. */
export function revocationOf(rules: RulesDocument, id: string, checksum: string): Revocation | null {
  return revocationsOf(rules, id).find((r) => r.checksum === checksum) ?? null;
}

/**
 * Records `revocation` under `llm_assist.revoked.<id>`, keeping every other byte: as one mapping,
 * or, when another version of the id is revoked already, as a list of both. A revocation of the same
 * checksum again changes nothing.
 */
export function recordRevocation(
  rules: RulesDocument,
  id: string,
  revocation: Revocation,
): { text: string; changed: boolean } {
  const existing = revocationsOf(rules, id);
  if (existing.some((r) => r.checksum === revocation.checksum)) return { text: rules.text, changed: false };
  const value = existing.length === 0 ? revocation : [...existing, revocation];
  const text = applyYamlEdits(rules.text, [{ path: [LLM_ASSIST_KEY, 'revoked', id], value }], (path) =>
    path[path.length - 1] === 'revoked_at' ? 'quoted' : undefined,
  );
  parseRules(text);
  return { text, changed: text !== rules.text };
}

export function minMetricGates(rules: RulesDocument): Record<string, number> {
  return rules.llmAssist?.gates?.min_metrics ?? {};
}

export interface DeclaredBaseModel {
  base_model: string;
  /** where the rules declare it */
  from: string;
}

/**
 * The base model the rules file is for: `llm_assist.base_model` when set; otherwise that of the
 * default adapter's entry; otherwise the one base model every recorded adapter shares. null when the
 * file does not say (a first promotion, or entries that disagree without a declaration).
 */
export function declaredBaseModel(rules: RulesDocument): DeclaredBaseModel | null {
  const llm = rules.llmAssist;
  if (!llm) return null;
  if (typeof llm.base_model === 'string')
    return { base_model: llm.base_model, from: 'llm_assist.base_model' };
  const def = llm.default_adapter;
  if (typeof def === 'string') {
    const entry = adapterEntry(rules, def);
    if (entry)
      return { base_model: entry.base_model, from: `llm_assist.adapters.${def} (the default adapter)` };
  }
  const bases = new Set(Object.values(llm.adapters ?? {}).map((e) => e.base_model));
  if (bases.size === 1) {
    const [only] = bases;
    if (only !== undefined) return { base_model: only, from: 'llm_assist.adapters (every recorded adapter)' };
  }
  return null;
}

export interface RecordOptions {
  /** make this adapter `default_adapter` (it also becomes the default when none is set) */
  setDefault: boolean;
}

export interface RecordResult {
  text: string;
  /** the default adapter after the change */
  defaultAdapter: string | null;
  changed: boolean;
}

/**
 * Records `entry` as `llm_assist.adapters.<id>`. An existing entry is updated key by key, so its
 * comments and any keys promote does not own (`notes`, `x-…`) survive; `evaluation` is replaced
 * whole, since its metrics belong to the version being promoted.
 */
export function recordAdapter(
  rules: RulesDocument,
  id: string,
  entry: RulesAdapterEntry,
  options: RecordOptions,
): RecordResult {
  const base: YamlPath = [LLM_ASSIST_KEY, 'adapters', id];
  const edits: YamlEdit[] = [];
  const current = rules.llmAssist?.default_adapter ?? null;
  const defaultAdapter = options.setDefault || current === null ? id : current;
  if (defaultAdapter !== current) {
    edits.push({ path: [LLM_ASSIST_KEY, 'default_adapter'], value: id, before: 'adapters' });
  }

  const existing = adapterEntry(rules, id);
  if (!existing) {
    edits.push({ path: base, value: ordered(entry) });
  } else {
    const dropped = ENTRY_KEYS.filter((k) => existing[k] !== undefined && entry[k] === undefined);
    if (dropped.length > 0) {
      // a key must go (e.g. no evaluation this time): rewrite the entry, keeping keys promote does not own
      const kept = Object.fromEntries(
        Object.entries(existing).filter(([k]) => !(ENTRY_KEYS as readonly string[]).includes(k)),
      );
      edits.push({ path: base, value: { ...ordered(entry), ...kept } });
    } else {
      for (const key of ENTRY_KEYS) {
        const value = entry[key];
        if (value !== undefined && !isDeepStrictEqual(existing[key], value)) {
          edits.push({ path: [...base, key], value });
        }
      }
    }
  }
  if (edits.length === 0) return { text: rules.text, defaultAdapter, changed: false };

  const text = applyYamlEdits(rules.text, edits, (path) => {
    const last = path[path.length - 1];
    if (last === 'ruleset_version') return 'quoted';
    // an evaluation reads best on one line, as the documented example writes it; one that would not fit
    // ~100 columns reads better as a block
    if (last === 'evaluation' && path.length === 4) {
      return JSON.stringify(entryValueAt(edits, path) ?? {}).length <= 80 ? 'flow' : undefined;
    }
    return undefined;
  });
  // the result must still be a valid rules file
  parseRules(text);
  return { text, defaultAdapter, changed: text !== rules.text };
}

function ordered(entry: RulesAdapterEntry): RulesAdapterEntry {
  const out: Record<string, unknown> = {};
  for (const key of ENTRY_KEYS) if (entry[key] !== undefined) out[key] = entry[key];
  for (const [k, v] of Object.entries(entry)) if (!(k in out)) out[k] = v;
  return out as RulesAdapterEntry;
}

/** The value an edit writes at `path` (edits may write a parent of it). */
function entryValueAt(edits: readonly YamlEdit[], path: YamlPath): unknown {
  for (const edit of edits) {
    if (edit.path.length > path.length || !edit.path.every((k, i) => path[i] === k)) continue;
    let v: unknown = edit.value;
    for (const k of path.slice(edit.path.length)) {
      v = v !== null && typeof v === 'object' ? (v as Record<string, unknown>)[k] : undefined;
    }
    return v;
  }
  return undefined;
}
