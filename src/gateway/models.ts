/**
 * `GET /v1/models`: the base and each served adapter, with their lineage as vLLM lists it (an
 * adapter's `parent` is the base id and its `root` the adapter's folder; the base is its own root),
 * and what vLLM does not give: each adapter's version and weights sha256, and which is the default.
 */
import type { Serving } from './serving.js';

export interface ModelCard {
  id: string;
  object: 'model';
  created: number;
  owned_by: 'codi-adapter';
  root: string;
  parent: string | null;
  /** the adapter's version (metadata.json); null for the base */
  version?: string | null;
  /** the adapter's weights file, sha256 hex */
  weights_sha256?: string;
  /** it answers requests that name no model */
  default?: boolean;
}

export function modelsList(s: Serving): { object: 'list'; data: ModelCard[] } {
  const created = Math.floor(s.since / 1000);
  const base: ModelCard = {
    id: s.baseId,
    object: 'model',
    created,
    owned_by: 'codi-adapter',
    root: s.baseId,
    parent: null,
  };
  const adapters = s.adapters.map((a): ModelCard => ({
    id: a.id,
    object: 'model',
    created,
    owned_by: 'codi-adapter',
    root: a.path,
    parent: s.baseId,
    version: a.version,
    weights_sha256: a.sha256,
    default: a.id === s.defaultId,
  }));
  return { object: 'list', data: [base, ...adapters] };
}
