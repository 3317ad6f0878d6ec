/** promote as a library: gates, refusals that leave both files untouched, idempotence, the lock. */
import { chmod, lstat, readFile, stat, symlink, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CodiError } from '../../src/errors.js';
import { promoteAdapter, type PromoteOptions } from '../../src/promote.js';
import { parseRules } from '../../src/rules.js';
import { compareSemver, isSemver } from '../../src/semver.js';
import { makeAdapter, openTempDir } from '../helpers/catalog.js';
import { rejected } from '../helpers/errors.js';

const RULES = `# CODI rules
version: "2026.11.0" # ruleset
rules:
  - id: r1   # a rule
llm_assist:
  base_model: tiny-qwen2
  gates:
    min_metrics: { ranking_accuracy: 0.80 } # keep the zero
  adapters: # promoted adapters
# end
`;

const EVAL = {
  suite: 'codi-eval',
  evaluated_at: '2026-11-26T18:30:00Z',
  base_model: 'tiny-qwen2',
  metrics: { ranking_accuracy: 0.86, latency_ms: 400 },
};

interface Setup {
  dir: string;
  adapter: string;
  rules: string;
  eval: string;
}

async function setup(
  options: { version?: string; seed?: number; rules?: string; evalData?: unknown } = {},
): Promise<Setup> {
  const dir = await openTempDir('codi-promote-');
  const adapter = await makeAdapter(dir, 'tiny-a', {
    ...(options.version === undefined ? {} : { version: options.version }),
    ...(options.seed === undefined ? {} : { seed: options.seed }),
  });
  const rules = join(dir, 'rules.yml');
  await writeFile(rules, options.rules ?? RULES);
  const evalPath = join(dir, 'eval.json');
  await writeFile(evalPath, JSON.stringify(options.evalData ?? EVAL, null, 2));
  return { dir, adapter, rules, eval: evalPath };
}

async function snapshot(s: Setup): Promise<[string, string]> {
  return [await readFile(s.rules, 'utf8'), await readFile(join(s.adapter, 'metadata.json'), 'utf8')];
}

function opts(s: Setup, over: Partial<PromoteOptions> = {}): PromoteOptions {
  return { rules: s.rules, eval: s.eval, now: new Date('2026-11-27T10:00:00Z'), ...over };
}

async function refused(s: Setup, promise: Promise<unknown>): Promise<CodiError> {
  const before = await snapshot(s);
  const error = await rejected(promise);
  // refused means untouched: both files, byte for byte, and no lock left behind
  expect(await snapshot(s)).toEqual(before);
  await expect(stat(`${s.rules}.lock`)).rejects.toThrow();
  return error;
}

describe('semver', () => {
  it.each([
    ['1.0.0', '1.0.1', -1],
    ['1.10.0', '1.9.0', 1],
    ['1.0.0-alpha', '1.0.0', -1],
    ['1.0.0-alpha', '1.0.0-alpha.1', -1],
    ['1.0.0-alpha.1', '1.0.0-alpha.beta', -1],
    ['1.0.0-beta.2', '1.0.0-beta.11', -1],
    ['1.0.0-rc.1', '1.0.0-beta.11', 1],
    ['1.0.0+build.1', '1.0.0+build.2', 0],
    ['99999999999999999999.0.0', '99999999999999999998.0.0', 1],
  ])('%s vs %s → %i', (a, b, c) => {
    expect(compareSemver(a, b)).toBe(c);
    expect(compareSemver(b, a)).toBe(-c || 0);
  });

  it('knows what is not semver', () => {
    expect(isSemver('1.0')).toBe(false);
    expect(isSemver('01.0.0')).toBe(false);
    expect(() => compareSemver('1.0', '1.0.0')).toThrow();
  });
});

describe('promoteAdapter', () => {
  it('records the adapter, appends the evaluation, and says so', async () => {
    const s = await setup();
    const r = await promoteAdapter(s.adapter, opts(s));
    expect(r).toMatchObject({
      promoted: true,
      already: false,
      dry_run: false,
      ruleset_version: '2026.11.0',
      default_adapter: 'tiny-a',
      changed: { rules: true, metadata: true },
      gates: [{ metric: 'ranking_accuracy', threshold: 0.8, value: 0.86, ok: true }],
    });
    expect(r.diff).toBeUndefined();
    const [rules, metadata] = await snapshot(s);
    const entry = parseRules(rules).llmAssist?.adapters?.['tiny-a'];
    expect(entry).toEqual({
      version: '0.1.0',
      base_model: 'tiny-qwen2',
      checksum: r.adapter.checksum,
      ruleset_version: '2026.11.0',
      promoted_at: '2026-11-27T10:00:00Z',
      evaluation: { suite: 'codi-eval', metrics: { ranking_accuracy: 0.86, latency_ms: 400 } },
    });
    // untouched parts are byte-identical: everything up to the gates, and from the comment on `adapters:` on
    const gatesEnd = RULES.indexOf('# keep the zero\n') + '# keep the zero\n'.length;
    expect(rules.startsWith(RULES.slice(0, gatesEnd))).toBe(true);
    expect(rules.slice(gatesEnd)).toMatch(
      /^ {2}default_adapter: tiny-a\n {2}adapters: # promoted adapters\n {4}tiny-a:\n/u,
    );
    expect(rules.endsWith('\n# end\n')).toBe(true);
    expect((JSON.parse(metadata) as { evaluations: unknown[] }).evaluations).toEqual([EVAL]);
  });

  it('is idempotent: the same version and checksum again changes neither file', async () => {
    const s = await setup();
    await promoteAdapter(s.adapter, opts(s));
    const before = await snapshot(s);
    const again = await promoteAdapter(s.adapter, opts(s, { now: new Date('2027-01-01T00:00:00Z') }));
    expect(again).toMatchObject({
      promoted: true,
      already: true,
      changed: { rules: false, metadata: false },
    });
    expect(await snapshot(s)).toEqual(before);
  });

  it('completes a promote that died between its two writes (rules recorded, metadata not)', async () => {
    const s = await setup();
    const metadataBefore = await readFile(join(s.adapter, 'metadata.json'), 'utf8');
    await promoteAdapter(s.adapter, opts(s));
    await writeFile(join(s.adapter, 'metadata.json'), metadataBefore);
    const rulesBefore = await readFile(s.rules, 'utf8');
    const r = await promoteAdapter(s.adapter, opts(s));
    expect(r).toMatchObject({ already: false, changed: { rules: false, metadata: true } });
    expect(await readFile(s.rules, 'utf8')).toBe(rulesBefore);
    const evaluations = (
      JSON.parse(await readFile(join(s.adapter, 'metadata.json'), 'utf8')) as { evaluations: unknown[] }
    ).evaluations;
    expect(evaluations).toHaveLength(1);
  });

  it('--dry-run returns the unified diff and writes nothing', async () => {
    const s = await setup();
    const before = await snapshot(s);
    const r = await promoteAdapter(s.adapter, opts(s, { dryRun: true }));
    expect(r).toMatchObject({
      promoted: false,
      already: false,
      dry_run: true,
      changed: { rules: true, metadata: true },
    });
    expect(r.diff).toContain('+    tiny-a:\n');
    expect(r.diff).toContain('+  default_adapter: tiny-a\n');
    expect(r.diff).toContain('+  "evaluations": [\n');
    expect(r.diff).toMatch(/^@@ -\d+,\d+ \+\d+,\d+ @@$/mu);
    expect(await snapshot(s)).toEqual(before);
    await expect(stat(`${s.rules}.lock`)).rejects.toThrow();
  });

  it('a gate below its threshold fails (exit 1), naming metric, value and threshold', async () => {
    const s = await setup({ evalData: { ...EVAL, metrics: { ranking_accuracy: 0.74 } } });
    const e = await refused(s, promoteAdapter(s.adapter, opts(s)));
    expect(e.code).toBe('GATE_FAILED');
    expect(e.exitCode).toBe(1);
    expect(e.message).toContain('ranking_accuracy 0.74 is below the gate 0.8');
  });

  it('a metric the evaluation lacks fails its gate; so does having no evaluation at all', async () => {
    const s = await setup({ evalData: { ...EVAL, metrics: { latency_ms: 300 } } });
    const e = await refused(s, promoteAdapter(s.adapter, opts(s)));
    expect(e.code).toBe('GATE_FAILED');
    expect(e.message).toContain('ranking_accuracy is missing');
    const none = await refused(s, promoteAdapter(s.adapter, opts(s, { eval: undefined })));
    expect(none.code).toBe('GATE_FAILED');
    expect(none.hint).toContain('--eval');
  });

  it('without --eval, the newest evaluation in metadata.json is used (and not appended again)', async () => {
    const s = await setup();
    const meta = JSON.parse(await readFile(join(s.adapter, 'metadata.json'), 'utf8')) as {
      evaluations: unknown[];
    };
    meta.evaluations = [
      { ...EVAL, evaluated_at: '2026-11-01T00:00:00Z', metrics: { ranking_accuracy: 0.5 } },
      { ...EVAL, evaluated_at: '2026-11-20T00:00:00Z', metrics: { ranking_accuracy: 0.9 } },
    ];
    await writeFile(join(s.adapter, 'metadata.json'), JSON.stringify(meta, null, 2));
    const r = await promoteAdapter(s.adapter, opts(s, { eval: undefined }));
    expect(r.evaluation).toMatchObject({ source: 'metadata', metrics: { ranking_accuracy: 0.9 } });
    expect(r.changed.metadata).toBe(false);
  });

  it.each([
    ['not JSON', '{"suite": ', 'EVAL_JSON'],
    [
      'missing metrics',
      JSON.stringify({ suite: 's', evaluated_at: '2026-11-26T18:30:00Z', base_model: 'tiny-qwen2' }),
      'EVAL_INVALID',
    ],
    [
      'a metric that is a string',
      JSON.stringify({ ...EVAL, metrics: { ranking_accuracy: 'high' } }),
      'EVAL_INVALID',
    ],
    ['another base model', JSON.stringify({ ...EVAL, base_model: 'llama-3-8b' }), 'EVAL_BASE_MISMATCH'],
  ])('refuses an eval.json with %s', async (_what, text, code) => {
    const s = await setup();
    await writeFile(s.eval, text);
    const e = await refused(s, promoteAdapter(s.adapter, opts(s)));
    expect(e.code).toBe(code);
    expect(e.exitCode).toBe(1);
  });

  it('refuses an adapter for another base model than the rules declare', async () => {
    const s = await setup({
      rules: RULES.replace('base_model: tiny-qwen2', 'base_model: qwen2.5-coder-1.5b'),
    });
    const e = await refused(s, promoteAdapter(s.adapter, opts(s)));
    expect(e.code).toBe('PROMOTE_BASE_MISMATCH');
    expect(e.message).toContain('llm_assist.base_model');
  });

  it('refuses a downgrade without --force, and new weights under a promoted version', async () => {
    const s = await setup({ version: '0.2.0' });
    await promoteAdapter(s.adapter, opts(s));
    const older = await makeAdapter(join(s.dir, 'older'), 'tiny-a', { version: '0.1.0', seed: 7 });
    const e = await refused(s, promoteAdapter(older, opts(s)));
    expect(e.code).toBe('PROMOTE_DOWNGRADE');
    const sameVersion = await makeAdapter(join(s.dir, 'same'), 'tiny-a', { version: '0.2.0', seed: 8 });
    expect((await refused(s, promoteAdapter(sameVersion, opts(s)))).code).toBe('PROMOTE_VERSION_REUSED');

    const forced = await promoteAdapter(older, opts(s, { force: true }));
    expect(forced.promoted).toBe(true);
    expect(parseRules(await readFile(s.rules, 'utf8')).llmAssist?.adapters?.['tiny-a']?.version).toBe(
      '0.1.0',
    );
  });

  it.each([
    ['not valid YAML', 'version: "1"\nllm_assist: [\n', 'RULES_YAML_INVALID'],
    [
      'a wrong-shaped llm_assist',
      'version: "1"\nllm_assist:\n  gates:\n    min_metric: { a: 1 }\n',
      'RULES_LLM_ASSIST_INVALID',
    ],
    ['no ruleset version', 'llm_assist:\n  adapters:\n', 'RULES_VERSION_MISSING'],
  ])('refuses a rules file with %s (exit 1), untouched', async (_what, text, code) => {
    const s = await setup({ rules: text });
    const e = await refused(s, promoteAdapter(s.adapter, opts(s)));
    expect(e.code).toBe(code);
    expect(e.exitCode).toBe(1);
    expect(e.file).toBe(s.rules);
  });

  it.each([
    [
      'a Latin-1 byte in a comment',
      Buffer.from('# Caf\xe9\n', 'latin1'),
      'invalid byte 0xe9 at byte offset 5',
    ],
    [
      'a UTF-16 byte order mark',
      Buffer.from([0xff, 0xfe]),
      'invalid byte 0xff at byte offset 0; it starts with a UTF-16',
    ],
  ])(
    'refuses a rules.yml that is not UTF-8 (%s): exit 1, the offset named, not a byte changed',
    async (_what, prefix, said) => {
      const s = await setup();
      const bytes = Buffer.concat([prefix, Buffer.from(RULES)]);
      await writeFile(s.rules, bytes);
      const e = await refused(s, promoteAdapter(s.adapter, opts(s)));
      expect(e.code).toBe('RULES_YAML_INVALID');
      expect(e.exitCode).toBe(1);
      expect(e.message).toContain(`is not UTF-8: ${said}`);
      expect(await readFile(s.rules)).toEqual(bytes);
      // a dry run says the same
      expect((await refused(s, promoteAdapter(s.adapter, opts(s, { dryRun: true })))).code).toBe(
        'RULES_YAML_INVALID',
      );
    },
  );

  it('keeps a UTF-8 byte order mark and every non-ASCII byte of rules.yml', async () => {
    const s = await setup({ rules: `\ufeff# Café — règles\n${RULES}` });
    const before = await readFile(s.rules);
    await promoteAdapter(s.adapter, opts(s));
    const after = await readFile(s.rules);
    // everything before the section promote edits, byte for byte
    const untouched = before.indexOf('llm_assist:');
    expect(after.subarray(0, untouched)).toEqual(before.subarray(0, untouched));
    expect(after.toString('utf8')).toContain('# Café — règles');
    expect(after.subarray(0, 3)).toEqual(Buffer.from([0xef, 0xbb, 0xbf]));
  });

  it('refuses an eval.json that is not UTF-8, or with a number beyond a double, naming the literal', async () => {
    const s = await setup();
    await writeFile(s.eval, Buffer.from('{"suite": "caf\xe9"}', 'latin1'));
    const e = await refused(s, promoteAdapter(s.adapter, opts(s)));
    expect(e.code).toBe('EVAL_JSON');
    expect(e.message).toContain('is not UTF-8: invalid byte 0xe9 at byte offset 14');
    await writeFile(s.eval, JSON.stringify(EVAL).replace('0.86', '1e999'));
    const big = await refused(s, promoteAdapter(s.adapter, opts(s)));
    expect(big.code).toBe('EVAL_JSON');
    expect(big.exitCode).toBe(1);
    expect(big.message).toContain('the number 1e999 is too large for a double');
  });

  it('refuses an adapter whose metadata.json holds a number beyond a double (METADATA_JSON naming it)', async () => {
    const s = await setup();
    const path = join(s.adapter, 'metadata.json');
    await writeFile(path, (await readFile(path, 'utf8')).replace('"epochs": 3', '"epochs": 3e999'));
    const e = await refused(s, promoteAdapter(s.adapter, opts(s)));
    expect(e.code).toBe('METADATA_JSON');
    expect(e.message).toContain('the number 3e999 is too large for a double');
  });

  it('refuses an adapter whose id contains "..", as verify does (METADATA_INVALID at /id)', async () => {
    const s = await setup();
    const odd = await makeAdapter(s.dir, 'a..b');
    const e = await refused(s, promoteAdapter(odd, opts(s)));
    expect(e.code).toBe('METADATA_INVALID');
    expect(e.exitCode).toBe(1);
    expect(e.message).toContain('/id');
    expect(e.message).toContain('never ".."');
  });

  it('refuses (exit 1, untouched) to add to an adapters map whose anchor an alias elsewhere shows', async () => {
    const s = await setup({
      rules: [
        'version: "2026.11.0"',
        'llm_assist:',
        '  adapters: &ads',
        '    old:',
        '      version: 0.0.1',
        '      base_model: tiny-qwen2',
        `      checksum: sha256:${'a'.repeat(64)}`,
        'mirror: *ads',
        '',
      ].join('\n'),
    });
    const e = await refused(s, promoteAdapter(s.adapter, opts(s)));
    expect(e.code).toBe('YAML_EDIT_ANCHORED');
    expect(e.exitCode).toBe(1);
    expect(e.file).toBe(s.rules);
  });

  it('fails closed on an invalid adapter, with its first finding', async () => {
    const s = await setup();
    const e = await refused(s, promoteAdapter('examples/adapters/broken-checksum', opts(s)));
    expect(e.code).toBe('CHECKSUM_MISMATCH');
  });

  it('--default moves default_adapter, also for an adapter already recorded', async () => {
    const s = await setup();
    await promoteAdapter(s.adapter, opts(s));
    const other = await makeAdapter(s.dir, 'tiny-b', { seed: 5 });
    const r1 = await promoteAdapter(other, opts(s));
    expect(r1.default_adapter).toBe('tiny-a');
    const r2 = await promoteAdapter(other, opts(s, { setDefault: true }));
    expect(r2).toMatchObject({
      already: false,
      default_adapter: 'tiny-b',
      changed: { rules: true, metadata: false },
    });
  });

  it('waits for the lock a bounded time, then LOCK_HELD (exit 3), files untouched', async () => {
    const s = await setup();
    await writeFile(
      `${s.rules}.lock`,
      JSON.stringify({
        pid: process.pid,
        hostname: hostname(),
        nonce: 'aaaa',
        acquired_at: new Date().toISOString(),
      }),
    );
    const before = await snapshot(s);
    let error: unknown;
    try {
      await promoteAdapter(s.adapter, opts(s, { lockTimeoutMs: 200 }));
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(CodiError);
    expect((error as CodiError).code).toBe('LOCK_HELD');
    expect((error as CodiError).exitCode).toBe(3);
    expect(await snapshot(s)).toEqual(before);
  });

  it('removes temp files a killed promote left, whatever pid or host made them (it holds both locks)', async () => {
    const s = await setup();
    // pid 1 is alive here: a pid from another container says nothing about the writer
    const rulesTemp = join(s.dir, '.rules.yml.1.0123456789ab.tmp');
    const metadataTemp = join(s.adapter, '.metadata.json.1.0123456789ab.tmp');
    // this process's own pid too: promote runs in it here, and holds the locks every writer takes
    const ownTemp = join(s.adapter, `.metadata.json.${process.pid}.abcdefabcdef.tmp`);
    // a lock taker's temp is lock.ts's to judge (it may be a waiter at work): left alone here
    const takerTemp = join(s.dir, '.rules.yml.lock.1.0123456789ab.tmp');
    for (const f of [rulesTemp, metadataTemp, ownTemp, takerTemp]) await writeFile(f, 'partial');
    await promoteAdapter(s.adapter, opts(s));
    await expect(stat(rulesTemp)).rejects.toThrow();
    await expect(stat(metadataTemp)).rejects.toThrow();
    await expect(stat(ownTemp)).rejects.toThrow();
    expect(await readFile(takerTemp, 'utf8')).toBe('partial');
  });

  it('keeps the rules file mode', async () => {
    const s = await setup();
    await chmod(s.rules, 0o640);
    await promoteAdapter(s.adapter, opts(s));
    expect((await stat(s.rules)).mode & 0o777).toBe(0o640);
  });

  it('writes through a symlinked rules.yml: the link stays a link', async () => {
    const s = await setup();
    const link = join(s.dir, 'linked-rules.yml');
    await symlink(s.rules, link);
    const r = await promoteAdapter(s.adapter, opts(s, { rules: link }));
    expect(r.rules_file).toBe(s.rules);
    expect((await lstat(link)).isSymbolicLink()).toBe(true);
    expect(await readFile(s.rules, 'utf8')).toContain('    tiny-a:\n');
  });

  it('a missing rules file is an environment error (exit 3)', async () => {
    const s = await setup();
    let error: unknown;
    try {
      await promoteAdapter(s.adapter, opts(s, { rules: join(s.dir, 'nope.yml') }));
    } catch (e) {
      error = e;
    }
    expect((error as CodiError).exitCode).toBe(3);
  });
});
