/**
 * The gateway's parts that need no llama-server: the served set's plan (claims, the default, the
 * cap), token counts from an answer's end, llama-server's load from its metrics, the route table,
 * and the body limits. The gateway end to end is test/llama/gateway.test.ts.
 */
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseUpstreamLoad } from '../../src/gateway/metrics.js';
import { tokenCounts } from '../../src/gateway/proxy.js';
import { applyCap, planServedSet, planSingle, servedSelection } from '../../src/gateway/served-set.js';
import { resolveRunConfig } from '../../src/run/config.js';
import { rejected } from '../helpers/errors.js';
import { tempDir } from '../helpers/tmp.js';

async function volume(adapters: Record<string, string | null>, rules: string | null): Promise<string> {
  const root = await tempDir('codi-served-');
  for (const [folder, id] of Object.entries(adapters)) {
    await mkdir(join(root, 'adapters', folder), { recursive: true });
    if (id !== null) await writeFile(join(root, 'adapters', folder, 'metadata.json'), JSON.stringify({ id }));
  }
  if (rules !== null) await writeFile(join(root, 'rules.yml'), rules);
  return root;
}

function config(root: string, env: Record<string, string> = {}) {
  return resolveRunConfig({
    env: {
      MODEL_MOUNT_PATH: root,
      PATTERNS_RULES: join(root, 'rules.yml'),
      CODE_MODEL: 'tiny-qwen2',
      ...env,
    },
    cwd: root,
  });
}

const RULES = `version: "1"
llm_assist:
  default_adapter: tiny-b
  adapters:
    tiny-a: {version: 0.1.0, base_model: tiny-qwen2, checksum: "sha256:${'0'.repeat(64)}", promoted_at: "2026-01-02T00:00:00Z"}
    tiny-b: {version: 0.1.0, base_model: tiny-qwen2, checksum: "sha256:${'0'.repeat(64)}", promoted_at: "2026-01-01T00:00:00Z"}
    tiny-gone: {version: 0.1.0, base_model: tiny-qwen2, checksum: "sha256:${'0'.repeat(64)}"}
`;

describe('the served set', () => {
  it('serves the promoted adapters by default when the rules list some, one adapter otherwise', async () => {
    const root = await volume({ 'tiny-a': 'tiny-a', 'tiny-b': 'tiny-b' }, RULES);
    expect(await servedSelection(config(root))).toEqual({ kind: 'promoted' });
    // an ADAPTER_PATH given explicitly keeps run's one adapter, behind the gateway as a set of one
    const single = { kind: 'single' };
    expect(await servedSelection(config(root, { ADAPTER_PATH: join(root, 'adapters/tiny-a') }))).toEqual(
      single,
    );
    expect(await servedSelection(config(await volume({}, null)))).toEqual(single);
    expect(await servedSelection(config(await volume({}, 'version: "1"\n')))).toEqual(single);
    expect(await servedSelection(config(root, { ADAPTERS: 'all' }))).toEqual({ kind: 'all' });
    // a remote or disabled LLM has no gateway
    expect(await servedSelection(config(root, { LLM_ENABLED: 'false' }))).toBeNull();
  });

  it("plans run's one adapter by its metadata id, wherever it lies, as the default", async () => {
    const root = await volume({}, null);
    const outside = await volume({ 'my-folder': 'tiny-x' }, null);
    const plan = await planSingle(config(root), join(outside, 'adapters/my-folder'));
    expect(plan.candidates).toEqual([
      { id: 'tiny-x', dir: join(outside, 'adapters/my-folder'), promotedAt: null },
    ]);
    expect([plan.defaultId, plan.defaultFrom, plan.notServed]).toEqual(['tiny-x', 'single', []]);
    // without a readable id, its folder's name
    const bare = await volume({ 'tiny-y': null }, null);
    expect((await planSingle(config(root), join(bare, 'adapters/tiny-y'))).defaultId).toBe('tiny-y');
    // the base's id would make `model` ambiguous
    const clash = await volume({ x: 'tiny-qwen2' }, null);
    const e = await rejected(planSingle(config(root), join(clash, 'adapters/x')));
    expect(e).toMatchObject({ code: 'ADAPTER_ID_CLAIMED' });
  });

  it('plans the promoted set with its default, and names what is not in the catalog', async () => {
    const root = await volume({ 'tiny-a': 'tiny-a', 'tiny-b': 'tiny-b', 'tiny-c': null }, RULES);
    const plan = await planServedSet(config(root), { kind: 'promoted' });
    expect(plan.candidates.map((c) => [c.id, c.promotedAt])).toEqual([
      ['tiny-a', '2026-01-02T00:00:00Z'],
      ['tiny-b', '2026-01-01T00:00:00Z'],
    ]);
    expect([plan.defaultId, plan.defaultFrom]).toEqual(['tiny-b', 'default_adapter']);
    expect(plan.notServed).toEqual([
      expect.objectContaining({ id: 'tiny-gone', code: 'ADAPTER_NOT_MOUNTED' }),
    ]);
    // all: every folder, by the id it claims (a folder without metadata by its name)
    const all = await planServedSet(config(root), { kind: 'all' });
    expect(all.candidates.map((c) => c.id)).toEqual(['tiny-a', 'tiny-b', 'tiny-c']);
  });

  it('takes the default from active without a default_adapter, and adds it to the ids named', async () => {
    const root = await volume({ 'tiny-a': 'tiny-a', 'tiny-b': 'tiny-b' }, null);
    await symlink('tiny-b', join(root, 'adapters', 'active'));
    const plan = await planServedSet(config(root), { kind: 'ids', ids: ['tiny-a'] });
    expect([plan.defaultId, plan.defaultFrom]).toEqual(['tiny-b', 'active']);
    expect(plan.candidates.map((c) => c.id)).toEqual(['tiny-a', 'tiny-b']);
    // one adapter and no other word: it is the default
    const single = await planServedSet(config(await volume({ 'tiny-a': 'tiny-a' }, null)), { kind: 'all' });
    expect([single.defaultId, single.defaultFrom]).toEqual(['tiny-a', 'single']);
  });

  it('refuses two folders claiming one id, an adapter claiming the base id, and a default not in the catalog', async () => {
    const twice = await volume({ 'tiny-a': 'tiny-a', 'tiny-a-copy': 'tiny-a' }, null);
    const e = await rejected(planServedSet(config(twice), { kind: 'all' }));
    expect([e.code, e.exitCode]).toEqual(['ADAPTER_ID_CLAIMED', 1]);
    expect(e.message).toMatch(/adapters\/tiny-a, adapters\/tiny-a-copy/u);
    const base = await volume({ 'tiny-qwen2': 'tiny-qwen2' }, null);
    expect((await rejected(planServedSet(config(base), { kind: 'all' }))).code).toBe('ADAPTER_ID_CLAIMED');
    const noDefault = await volume(
      { 'tiny-a': 'tiny-a' },
      RULES.replace('default_adapter: tiny-b', 'default_adapter: tiny-x'),
    );
    const d = await rejected(planServedSet(config(noDefault), { kind: 'promoted' }));
    expect([d.code, d.exitCode]).toEqual(['ADAPTER_NOT_MOUNTED', 3]);
    const noRules = await rejected(planServedSet(config(await volume({}, null)), { kind: 'promoted' }));
    expect(noRules.code).toBe('SERVED_SET_EMPTY');
  });

  it('keeps the default and the most recently promoted under the cap', () => {
    const c = (id: string, promotedAt: string | null) => ({ id, dir: `/m/${id}`, promotedAt });
    const set = [c('a', '2026-01-03'), c('b', '2026-01-01'), c('c', null), c('d', '2026-01-02')];
    expect(applyCap(set, 'c', 2).kept.map((x) => x.id)).toEqual(['a', 'c']);
    expect(applyCap(set, 'c', 2).over.map((x) => x.id)).toEqual(['b', 'd']);
    expect(applyCap(set, null, 3).kept.map((x) => x.id)).toEqual(['a', 'b', 'd']);
    expect(applyCap(set, null, 4).over).toEqual([]);
  });
});

describe('what the gateway reads from llama-server', () => {
  it('counts tokens from usage, llama.cpp fields or timings; the last event of a stream wins', () => {
    expect(tokenCounts('{"usage":{"completion_tokens":8,"prompt_tokens":5,"total_tokens":13}}')).toEqual({
      prompt: 5,
      generated: 8,
    });
    expect(
      tokenCounts('"tokens_evaluated":4,"tokens_predicted":3,"timings":{"prompt_n":1,"predicted_n":3}'),
    ).toEqual({
      prompt: 4,
      generated: 3,
    });
    const sse =
      'data: {"timings":{"prompt_n":2,"predicted_n":1}}\n\ndata: {"timings":{"prompt_n":2,"predicted_n":7}}\n\n';
    expect(tokenCounts(sse)).toEqual({ prompt: 2, generated: 7 });
    expect(tokenCounts('{"error":"x"}')).toEqual({ prompt: null, generated: null });
  });

  it("reads requests processing and deferred from llama-server's metrics", () => {
    const text =
      '# HELP llamacpp:requests_processing x\nllamacpp:requests_processing 3\nllamacpp:requests_deferred 2\n';
    expect(parseUpstreamLoad(text)).toEqual({ running: 3, waiting: 2 });
    expect(parseUpstreamLoad('nothing here')).toBeNull();
  });
});
