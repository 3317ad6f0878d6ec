/** `codi-adapter promote` as a release script runs it: --json, the lock, 8 at once, SIGKILL anywhere. */
import { copyFile, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { PromoteResult } from '../../src/promote.js';
import { parseRules } from '../../src/rules.js';
import { makeAdapter, openTempDir } from '../helpers/catalog.js';
import { killAfterRandomDelay, msFromStepToEnd, runCli, startCli } from '../helpers/cli.js';

const EXAMPLE_RULES = 'examples/patterns/rules.yml';
const EXAMPLE_EVAL = 'examples/eval.json';

interface ErrorJson {
  ok: false;
  error: { code: string; message: string; exitCode: number; hint?: string };
}

function commentLines(text: string): string[] {
  return text.split('\n').filter((l) => /^\s*#/u.test(l) || /\s#\s/u.test(l));
}

async function workspace(): Promise<{ dir: string; rules: string }> {
  const dir = await openTempDir('codi-promote-e2e-');
  const rules = join(dir, 'rules.yml');
  await copyFile(EXAMPLE_RULES, rules);
  return { dir, rules };
}

const metadataOf = (adapter: string): Promise<string> => readFile(join(adapter, 'metadata.json'), 'utf8');

describe('promote (built CLI)', () => {
  it('the bundled example: --dry-run prints the diff and writes nothing; then promote; then nothing again', async () => {
    const { dir, rules } = await workspace();
    const adapter = await makeAdapter(dir, 'tiny-qwen2-lora');
    const before = await readFile(rules, 'utf8');

    const dry = await runCli(['promote', adapter, '--rules', rules, '--eval', EXAMPLE_EVAL, '--dry-run']);
    expect(dry.code).toBe(0);
    expect(dry.stdout).toContain(`--- ${rules}`);
    expect(dry.stdout).toContain('+    tiny-qwen2-lora:\n');
    expect(dry.stdout).toContain('dry run: nothing was written');
    expect(await readFile(rules, 'utf8')).toBe(before);

    const r = await runCli(['promote', adapter, '--rules', rules, '--eval', EXAMPLE_EVAL, '--json']);
    expect(r.code).toBe(0);
    const j = r.json as PromoteResult;
    expect(j).toMatchObject({
      promoted: true,
      already: false,
      rules_file: rules,
      adapter: { id: 'tiny-qwen2-lora' },
    });
    expect(j.diff).toBeUndefined();
    const after = await readFile(rules, 'utf8');
    expect(commentLines(after)).toEqual(commentLines(before));
    expect(after.startsWith(before.slice(0, before.indexOf('  adapters:')))).toBe(true);

    const snapshot = [after, await metadataOf(adapter)];
    const again = await runCli(['promote', adapter, '--rules', rules, '--eval', EXAMPLE_EVAL, '--json']);
    expect(again.code).toBe(0);
    expect(again.json).toMatchObject({ promoted: true, already: true });
    expect([await readFile(rules, 'utf8'), await metadataOf(adapter)]).toEqual(snapshot);
    const human = await runCli(['promote', adapter, '--rules', rules, '--eval', EXAMPLE_EVAL]);
    expect(human.stdout).toContain('is already promoted');

    const dryJson = await runCli([
      'promote',
      adapter,
      '--rules',
      rules,
      '--eval',
      EXAMPLE_EVAL,
      '--dry-run',
      '--json',
    ]);
    expect(dryJson.json).toMatchObject({ promoted: true, already: true, dry_run: true, diff: '' });
  });

  it('a failed gate: exit 1 naming metric, value and threshold; nothing written', async () => {
    const { dir, rules } = await workspace();
    const adapter = await makeAdapter(dir, 'tiny-qwen2-lora');
    const evalPath = join(dir, 'eval.json');
    const data = JSON.parse(await readFile(EXAMPLE_EVAL, 'utf8')) as { metrics: Record<string, number> };
    data.metrics = { ranking_accuracy: 0.79 };
    await writeFile(evalPath, JSON.stringify(data));
    const before = [await readFile(rules, 'utf8'), await metadataOf(adapter)];
    const r = await runCli(['promote', adapter, '--rules', rules, '--eval', evalPath]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(
      'GATE_FAILED: 2 gates failed: ranking_accuracy 0.79 is below the gate 0.8; rationale_f1 is missing (gate: ≥ 0.55)',
    );
    expect([await readFile(rules, 'utf8'), await metadataOf(adapter)]).toEqual(before);
  });

  it('rules.yml that is not YAML: exit 1, untouched', async () => {
    const { dir, rules } = await workspace();
    const adapter = await makeAdapter(dir, 'tiny-qwen2-lora');
    await writeFile(rules, 'version: "1"\nllm_assist: {\n');
    const r = await runCli(['promote', adapter, '--rules', rules, '--eval', EXAMPLE_EVAL, '--json']);
    expect(r.code).toBe(1);
    expect((r.json as ErrorJson).error.code).toBe('RULES_YAML_INVALID');
    expect(await readFile(rules, 'utf8')).toBe('version: "1"\nllm_assist: {\n');
  });

  it('a held lock: waits --lock-timeout, then exit 3 LOCK_HELD', async () => {
    const { dir, rules } = await workspace();
    const adapter = await makeAdapter(dir, 'tiny-qwen2-lora');
    // held by this (live) test process
    await writeFile(
      `${rules}.lock`,
      JSON.stringify({
        pid: process.pid,
        hostname: hostname(),
        nonce: 'test',
        acquired_at: new Date().toISOString(),
      }),
    );
    const started = Date.now();
    const r = await runCli([
      'promote',
      adapter,
      '--rules',
      rules,
      '--eval',
      EXAMPLE_EVAL,
      '--lock-timeout',
      '1',
      '--json',
    ]);
    expect(Date.now() - started).toBeGreaterThanOrEqual(1000);
    expect(r.code).toBe(3);
    expect(r.json).toMatchObject({ ok: false, error: { code: 'LOCK_HELD', exitCode: 3 } });
    expect((r.json as ErrorJson).error.message).toContain(`pid ${process.pid}`);
  });

  it('8 concurrent promotes of different adapters into one rules.yml: all 8 recorded, file valid', async () => {
    const { dir, rules } = await workspace();
    const before = await readFile(rules, 'utf8');
    const ids = Array.from({ length: 8 }, (_, i) => `tiny-lora-${i}`);
    const adapters = await Promise.all(ids.map((id, i) => makeAdapter(dir, id, { seed: 1000 + i })));
    const results = await Promise.all(
      adapters.map((a) =>
        runCli(['promote', a, '--rules', rules, '--eval', EXAMPLE_EVAL, '--lock-timeout', '120', '--json'], {
          timeoutMs: 180_000,
        }),
      ),
    );
    for (const r of results) expect(r.code, r.stderr).toBe(0);
    const text = await readFile(rules, 'utf8');
    const parsed = parseRules(text);
    expect(Object.keys(parsed.llmAssist?.adapters ?? {}).sort()).toEqual(ids);
    expect(commentLines(text)).toEqual(commentLines(before));
    // exactly one of them set the default (the first to get the lock)
    expect(ids).toContain(parsed.llmAssist?.default_adapter);
    for (const a of adapters) {
      expect((JSON.parse(await metadataOf(a)) as { evaluations: unknown[] }).evaluations).toHaveLength(1);
    }
    expect((await readdir(dir)).filter((n) => n.startsWith('.') || n.endsWith('.lock'))).toEqual([]);
  }, 240_000);

  it('two promotes of one adapter into two rules files at once: both evaluations land in its metadata', async () => {
    const { dir, rules } = await workspace();
    const otherRules = join(dir, 'rules-other.yml');
    await copyFile(EXAMPLE_RULES, otherRules);
    const adapter = await makeAdapter(dir, 'tiny-qwen2-lora');
    const base = JSON.parse(await readFile(EXAMPLE_EVAL, 'utf8')) as Record<string, unknown>;
    const evals = ['2026-11-26T18:30:00Z', '2026-11-27T09:00:00Z'].map((at, i) =>
      join(dir, `eval-${i}.json`),
    );
    await writeFile(evals[0] ?? '', JSON.stringify({ ...base, evaluated_at: '2026-11-26T18:30:00Z' }));
    await writeFile(
      evals[1] ?? '',
      JSON.stringify({ ...base, evaluated_at: '2026-11-27T09:00:00Z', examples: 999 }),
    );
    // the first has read metadata.json and written its rules file, and pauses before writing the
    // metadata back; without a lock on the metadata the second would append meanwhile, and the first's
    // stale copy would then overwrite that append
    const first = startCli(['promote', adapter, '--rules', rules, '--eval', evals[0] ?? '', '--json'], {
      pauseAt: ['promote:rules-written'],
    });
    expect(await first.reached('promote:rules-written')).toBe(true);
    const second = startCli(['promote', adapter, '--rules', otherRules, '--eval', evals[1] ?? '', '--json']);
    await new Promise((r) => setTimeout(r, 1500));
    first.resume();
    const [a, b] = await Promise.all([first.done, second.done]);
    expect(a.code, a.stderr).toBe(0);
    expect(b.code, b.stderr).toBe(0);
    const metadata = JSON.parse(await metadataOf(adapter)) as { evaluations: { evaluated_at: string }[] };
    expect(metadata.evaluations.map((e) => e.evaluated_at).sort()).toEqual([
      '2026-11-26T18:30:00Z',
      '2026-11-27T09:00:00Z',
    ]);
    expect((await readdir(adapter)).filter((n) => n.startsWith('.'))).toEqual([]);
  }, 60_000);
});

describe('promote: crash safety', () => {
  interface Scene {
    dir: string;
    rules: string;
    adapter: string;
    oldRules: string;
    newRules: string;
    oldMetadata: string;
    newMetadata: string;
  }

  const normalise = (text: string): string =>
    text.replace(/promoted_at: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ/gu, 'promoted_at: <time>');

  interface Template {
    oldRules: string;
    newRules: string;
    newMetadata: string;
  }
  let template: Promise<Template> | undefined;

  /**
   * rules.yml with `first` promoted; `second` about to be. The one acceptable new state comes from a
   * reference run, made once: adapters are generated deterministically, so every scene is the same.
   */
  function makeTemplate(): Promise<Template> {
    template ??= (async () => {
      const { dir, rules } = await workspace();
      const first = await makeAdapter(dir, 'first', { seed: 11 });
      expect((await runCli(['promote', first, '--rules', rules, '--eval', EXAMPLE_EVAL])).code).toBe(0);
      const oldRules = await readFile(rules, 'utf8');
      const second = await makeAdapter(dir, 'second', { seed: 12 });
      expect((await runCli(['promote', second, '--rules', rules, '--eval', EXAMPLE_EVAL])).code).toBe(0);
      return {
        oldRules,
        newRules: normalise(await readFile(rules, 'utf8')),
        newMetadata: await metadataOf(second),
      };
    })();
    return template;
  }

  async function scene(): Promise<Scene> {
    const t = await makeTemplate();
    const dir = await openTempDir('codi-promote-crash-');
    const rules = join(dir, 'rules.yml');
    await writeFile(rules, t.oldRules);
    const adapter = await makeAdapter(dir, 'second', { seed: 12 });
    return { dir, rules, adapter, ...t, oldMetadata: await metadataOf(adapter) };
  }

  /** Both files old, or rules new and metadata old (between the two writes), or both new. */
  async function expectConsistent(s: Scene): Promise<string> {
    const rules = await readFile(s.rules, 'utf8');
    const metadata = await metadataOf(s.adapter);
    const rulesState = rules === s.oldRules ? 'old' : normalise(rules) === s.newRules ? 'new' : 'PARTIAL';
    const metaState = metadata === s.oldMetadata ? 'old' : metadata === s.newMetadata ? 'new' : 'PARTIAL';
    const state = `${rulesState}/${metaState}`;
    expect(['old/old', 'new/old', 'new/new']).toContain(state);
    return state;
  }

  /** The next promote completes the job: both new, the dead lock broken, temp files gone. */
  async function recover(s: Scene): Promise<void> {
    const r = await runCli([
      'promote',
      s.adapter,
      '--rules',
      s.rules,
      '--eval',
      EXAMPLE_EVAL,
      '--lock-timeout',
      '5',
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(normalise(await readFile(s.rules, 'utf8'))).toBe(s.newRules);
    expect(await metadataOf(s.adapter)).toBe(s.newMetadata);
    await expect(stat(`${s.rules}.lock`)).rejects.toThrow();
    await expect(stat(join(s.adapter, '.metadata.json.lock'))).rejects.toThrow();
    expect((await readdir(s.dir)).filter((n) => n.endsWith('.tmp'))).toEqual([]);
    expect((await readdir(s.adapter)).filter((n) => n.endsWith('.tmp'))).toEqual([]);
  }

  const STEPS: [string, string][] = [
    ['promote:verified', 'old/old'],
    ['promote:locked', 'old/old'],
    ['promote:rules-temp', 'old/old'],
    ['promote:rules-written', 'new/old'],
    ['promote:metadata-temp', 'new/old'],
    ['promote:metadata-written', 'new/new'],
  ];

  it.each(STEPS)('SIGKILL at %s leaves %s, and the next promote completes it', async (step, expected) => {
    const s = await scene();
    const run = startCli(['promote', s.adapter, '--rules', s.rules, '--eval', EXAMPLE_EVAL], {
      pauseAt: [step],
    });
    expect(await run.reached(step)).toBe(true);
    run.kill('SIGKILL');
    await run.done;
    expect(await expectConsistent(s)).toBe(expected);
    // killed while it held the adapter's lock (and, at metadata-temp, had a temp file open): verify
    // names what the promote left for what it is
    const verify = await runCli(['verify', s.adapter, '--json']);
    const findings = (verify.json as { findings: { code: string; file?: string }[] }).findings;
    const leftovers = findings.map(
      (f) => `${f.code} ${(f.file ?? '').replace(/\.\d+\.[0-9a-f]{12}\.tmp$/u, '.<pid>.tmp')}`,
    );
    const lock = 'PROMOTE_LEFTOVER .metadata.json.lock';
    const temp = 'PROMOTE_LEFTOVER .metadata.json.<pid>.tmp';
    expect(leftovers.sort()).toEqual(
      step === 'promote:verified' ? [] : step === 'promote:metadata-temp' ? [temp, lock] : [lock],
    );
    await recover(s);
  });

  it('SIGKILL after random delays (8 trials): old or new, never partial', async () => {
    // how long the rest of a promote takes here, once it is past verification
    const probe = await scene();
    const span = await msFromStepToEnd(
      () =>
        startCli(['promote', probe.adapter, '--rules', probe.rules, '--eval', EXAMPLE_EVAL], {
          pauseAt: ['promote:verified'],
        }),
      'promote:verified',
    );

    const outcomes: string[] = [];
    for (let trial = 0; trial < 8; trial++) {
      const s = await scene();
      const { result: r, delay } = await killAfterRandomDelay(
        () =>
          startCli(['promote', s.adapter, '--rules', s.rules, '--eval', EXAMPLE_EVAL], {
            pauseAt: ['promote:verified'],
          }),
        'promote:verified',
        span,
      );
      const state = await expectConsistent(s);
      if (r.code === 0) expect(state).toBe('new/new');
      outcomes.push(`${delay}ms:${r.code === 0 ? 'finished' : state}`);
      await recover(s);
    }
    console.log(`promote kill trials (rest of a promote: ${span} ms): ${outcomes.join(' ')}`);
  }, 240_000);
});
