/**
 * Which adapters the gateway serves, before any of them is verified: ADAPTERS (ids, `promoted`,
 * `all`), the rules file (`llm_assist.adapters`, `default_adapter`) and the catalog
 * (`<MODEL_MOUNT_PATH>/adapters/<id>`, the `active` link). An adapter's id is its metadata.json `id`
 * (its folder's name without one); two folders claiming one id, or an adapter claiming the base's id,
 * make a request naming it ambiguous, and are refused (ADAPTER_ID_CLAIMED). Verification, conversion
 * and the cap come after (src/run/gateway-llm.ts).
 */
import { readdir, readFile, realpath, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { readActive } from '../catalog/active.js';
import { ACTIVE_LINK, ADAPTERS_DIR, notMountedHint } from '../catalog/volume.js';
import type { Code } from '../codes.js';
import { CodiError } from '../errors.js';
import { parseRules, type LlmAssist } from '../rules.js';
import type { RunConfig } from '../run/config.js';
import type { AdapterSelection } from '../run/settings.js';

export interface Candidate {
  id: string;
  /** the adapter's folder (real path) */
  dir: string;
  /** `llm_assist.adapters.<id>.promoted_at`, when promoted */
  promotedAt: string | null;
}

/** An adapter left out of the served set, and why (a registered code). */
export interface NotServed {
  id: string;
  code: Code;
  message: string;
}

export interface ServedPlan {
  selection: AdapterSelection;
  /** the adapters to verify, default included, in id order */
  candidates: Candidate[];
  defaultId: string | null;
  /** where the default came from */
  defaultFrom: 'default_adapter' | 'active' | 'single' | null;
  notServed: NotServed[];
}

interface RulesView {
  llmAssist: LlmAssist | null;
}

interface CatalogAdapter {
  id: string;
  dir: string;
  folder: string;
}

/**
 * The selection an embedded `run` serves through the gateway (null when the LLM is not embedded):
 * ADAPTERS when set; else `promoted` when the rules file lists adapters, unless ADAPTER_PATH was
 * given (an explicit single adapter wins over an implicit default); else the one adapter at
 * ADAPTER_PATH or `active`, as before, as a set of one.
 */
export async function servedSelection(config: RunConfig): Promise<AdapterSelection | null> {
  if (config.llmMode !== 'embedded') return null;
  if (config.adapters !== null) return config.adapters;
  if (config.sources.ADAPTER_PATH !== 'default') return { kind: 'single' };
  const rules = await readRules(config.patternsRules, false);
  const listed = Object.keys(rules.llmAssist?.adapters ?? {});
  return listed.length > 0 ? { kind: 'promoted' } : { kind: 'single' };
}

/**
 * The plan for the one adapter in `dir` (ADAPTER_PATH or `active`, already checked; it may lie
 * outside the catalog): its id is its metadata.json `id` (else its folder's name), and it is the
 * default. An id equal to the base's would make a request naming it ambiguous.
 */
export async function planSingle(config: RunConfig, dir: string): Promise<ServedPlan> {
  const id = (await metadataId(dir)) ?? basename(dir);
  if (id === config.codeModel) {
    throw new CodiError(
      'ADAPTER_ID_CLAIMED',
      `the adapter ${dir} claims the id ${id}, which is the base model's (CODE_MODEL)`,
      { details: { id } },
    );
  }
  return {
    selection: { kind: 'single' },
    candidates: [{ id, dir, promotedAt: null }],
    defaultId: id,
    defaultFrom: 'single',
    notServed: [],
  };
}

/** The adapters to verify for `selection`, their default, and those left out already. */
export async function planServedSet(config: RunConfig, selection: AdapterSelection): Promise<ServedPlan> {
  const rules = await readRules(config.patternsRules, selection.kind === 'promoted');
  const adaptersDir = join(config.modelMountPath, ADAPTERS_DIR);
  const catalog = await readCatalog(adaptersDir);
  const promoted = rules.llmAssist?.adapters ?? {};
  const wanted =
    selection.kind === 'ids'
      ? selection.ids
      : selection.kind === 'promoted'
        ? Object.keys(promoted)
        : [...new Set(catalog.map((a) => a.id))];
  const notServed: NotServed[] = [];
  const chosen = new Map<string, Candidate>();
  const pick = (id: string): Candidate | null => {
    const found = claimOf(catalog, id, config.codeModel);
    if (found === null) return null;
    const entry = promoted[id];
    const candidate = { id, dir: found.dir, promotedAt: entry?.promoted_at ?? null };
    chosen.set(id, candidate);
    return candidate;
  };
  for (const id of wanted) {
    if (pick(id) === null) {
      notServed.push({
        id,
        code: 'ADAPTER_NOT_MOUNTED',
        message: `${id} is not in the catalog (${join(adaptersDir, id)})`,
      });
    }
  }
  const { id: defaultId, from } = await defaultOf(rules, adaptersDir, catalog, chosen);
  if (defaultId !== null && !chosen.has(defaultId) && pick(defaultId) === null) {
    throw new CodiError(
      'ADAPTER_NOT_MOUNTED',
      `the default adapter ${defaultId} (${from === 'active' ? 'adapters/active' : 'llm_assist.default_adapter'}) is not in the catalog ${adaptersDir}`,
      { file: join(adaptersDir, defaultId), hint: notMountedHint(config.modelMountPath, defaultId) },
    );
  }
  const candidates = [...chosen.values()].sort((a, b) => a.id.localeCompare(b.id));
  return { selection, candidates, defaultId, defaultFrom: from, notServed };
}

/** The one catalog adapter claiming `id`; two claiming it is an error, as is the base's id. */
function claimOf(catalog: readonly CatalogAdapter[], id: string, baseId: string): CatalogAdapter | null {
  const claims = catalog.filter((a) => a.id === id);
  const dirs = [...new Set(claims.map((a) => a.dir))];
  if (dirs.length > 1) {
    throw new CodiError(
      'ADAPTER_ID_CLAIMED',
      `${dirs.length} adapters claim the id ${id}: ${claims.map((a) => `adapters/${a.folder}`).join(', ')}`,
      { details: { id, folders: claims.map((a) => a.folder) } },
    );
  }
  if (dirs.length === 1 && id === baseId) {
    throw new CodiError(
      'ADAPTER_ID_CLAIMED',
      `the adapter adapters/${claims[0]?.folder ?? id} claims the id ${id}, which is the base model's (CODE_MODEL)`,
      { details: { id } },
    );
  }
  return claims[0] ?? null;
}

/** `llm_assist.default_adapter`, else `active`, else the only adapter chosen. */
async function defaultOf(
  rules: RulesView,
  adaptersDir: string,
  catalog: readonly CatalogAdapter[],
  chosen: ReadonlyMap<string, Candidate>,
): Promise<{ id: string | null; from: ServedPlan['defaultFrom'] }> {
  const fromRules = rules.llmAssist?.default_adapter;
  if (typeof fromRules === 'string' && fromRules !== '') return { id: fromRules, from: 'default_adapter' };
  const active = await readActive(adaptersDir);
  if (active !== null) {
    // the link names a folder; the adapter in it may carry another id
    const real = await realpath(join(adaptersDir, active)).catch(() => null);
    const claimed = catalog.find((a) => a.dir === real)?.id ?? active;
    return { id: claimed, from: 'active' };
  }
  if (chosen.size === 1) return { id: [...chosen.keys()][0] ?? null, from: 'single' };
  return { id: null, from: null };
}

/** Every adapter folder of the catalog with the id it claims (metadata.json `id`, else its name). */
async function readCatalog(adaptersDir: string): Promise<CatalogAdapter[]> {
  const names = await readdir(adaptersDir).catch(() => [] as string[]);
  const out: CatalogAdapter[] = [];
  for (const folder of names.sort()) {
    if (folder.startsWith('.') || folder === ACTIVE_LINK) continue;
    const path = join(adaptersDir, folder);
    const st = await stat(path).catch(() => null);
    if (!st?.isDirectory()) continue;
    const dir = await realpath(path).catch(() => path);
    out.push({ id: (await metadataId(dir)) ?? folder, dir, folder });
  }
  return out;
}

async function metadataId(dir: string): Promise<string | null> {
  try {
    const data = JSON.parse(await readFile(join(dir, 'metadata.json'), 'utf8')) as { id?: unknown };
    return typeof data.id === 'string' && data.id !== '' ? data.id : null;
  } catch {
    // verification reports what is wrong with it
    return null;
  }
}

/** The rules file's `llm_assist`; a missing file has none, a broken one is an error when needed. */
async function readRules(path: string, required: boolean): Promise<RulesView> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if (required) {
      throw new CodiError(
        'SERVED_SET_EMPTY',
        `ADAPTERS=promoted, and the rules file PATTERNS_RULES cannot be read (${path}): ${(e as Error).message}`,
        { file: path, hint: 'set PATTERNS_RULES to the rules file, or ADAPTERS to ids or all' },
      );
    }
    return { llmAssist: null };
  }
  try {
    return { llmAssist: parseRules(text).llmAssist };
  } catch (e) {
    if (required) throw e;
    return { llmAssist: null };
  }
}

/**
 * The cap: at most `max` adapters, the default always, then the most recently promoted (never
 * promoted ones last, by id). Returns the ids kept, in id order.
 */
export function applyCap(
  served: readonly Candidate[],
  defaultId: string | null,
  max: number,
): { kept: Candidate[]; over: Candidate[] } {
  if (served.length <= max) return { kept: [...served], over: [] };
  const ranked = [...served].sort((a, b) => {
    if (a.id === defaultId) return -1;
    if (b.id === defaultId) return 1;
    const pa = a.promotedAt ?? '';
    const pb = b.promotedAt ?? '';
    if (pa !== pb) return pb.localeCompare(pa);
    return a.id.localeCompare(b.id);
  });
  const kept = ranked.slice(0, max).sort((a, b) => a.id.localeCompare(b.id));
  const over = ranked.slice(max).sort((a, b) => a.id.localeCompare(b.id));
  return { kept, over };
}
