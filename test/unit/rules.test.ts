/** rules.yml: parsing the llm_assist section, and recording adapters without disturbing the file. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseDocument } from 'yaml';
import {
  declaredBaseModel,
  parseRules,
  recordAdapter,
  type RulesAdapterEntry,
  type RulesDocument,
} from '../../src/rules.js';
import { applyYamlEdits } from '../../src/yaml-edit.js';
import { thrown } from '../helpers/errors.js';

const SHA_A = `sha256:${'a'.repeat(64)}`;
const SHA_B = `sha256:${'b'.repeat(64)}`;

function entry(over: Partial<RulesAdapterEntry> = {}): RulesAdapterEntry {
  return {
    version: '0.2.0',
    base_model: 'qwen2.5-coder-1.5b',
    checksum: SHA_B,
    ruleset_version: '2026.11.0',
    promoted_at: '2026-11-28T09:00:00Z',
    evaluation: { suite: 'codi-eval', metrics: { ranking_accuracy: 0.9 } },
    ...over,
  };
}

/** A rules file with a comment in every place YAML allows one, and styles a re-stringify would change. */
const COMMENTED = `# leading comment, first line
# second leading line

%YAML 1.2
---
# comment after the directives end marker
version: "2026.11.0"   # trailing comment after a quoted scalar
owner: 'team-codi'    # single-quoted
#comment without a space, column 0
defaults:
    # four-space indentation here, which a re-stringify would turn into two
    severity: warning
    languages: [python, typescript]   # flow sequence
    tags: { a: 1,   b: 2 }            # odd flow spacing
rules:
    - id: py-bare-except      # in a sequence item
      pattern: 'except\\s*:'
      message: >-
        A folded block scalar that is long enough to be folded by a stringifier with a line width of eighty columns.
      # comment between items
    - id: ts-any
      pattern: ":\\\\s*any"
anchors:
  base: &base { retries: 3 }
  copy: *base
a_very_long_line: this value is deliberately much longer than eighty characters so that any re-folding would show up in the diff
llm_assist:   # comment on the section key
  # comment before base_model
  base_model: qwen2.5-coder-1.5b
  gates:
    min_metrics: { ranking_accuracy: 0.80 }   # 0.80 keeps its zero
  # comment before default_adapter
  default_adapter: qwen15b-lora-v0.1
  adapters:
    # comment before the first entry
    qwen15b-lora-v0.1:
      version: 0.1.0          # trailing on version
      base_model: qwen2.5-coder-1.5b
      checksum: '${SHA_A}'
      ruleset_version: "2026.11.0"
      promoted_at: 2026-11-27T10:00:00Z
      evaluation: { suite: codi-eval, metrics: { ranking_accuracy: 0.86 } }
      notes: kept by promote   # a key promote does not own
    # comment after the last entry, inside adapters
  # comment at the end of llm_assist
trailing_section:
  key: value
# comment at the very end
`;

function commentLines(text: string): string[] {
  return text
    .split('\n')
    .map((l) => (l.includes('#') ? l.slice(l.indexOf('#')).trim() : ''))
    .filter((c) => c.startsWith('#'));
}

function commonPrefix(a: string, b: string): number {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return i;
}

function commonSuffix(a: string, b: string): number {
  let i = 0;
  while (i < a.length && i < b.length && a[a.length - 1 - i] === b[b.length - 1 - i]) i++;
  return i;
}

/** Asserts `after` differs from `before` only between the two given markers of `before`. */
function expectChangeWithin(before: string, after: string, from: string, to: string): void {
  const start = before.indexOf(from);
  const end = before.indexOf(to) + to.length;
  expect(start).toBeGreaterThanOrEqual(0);
  expect(commonPrefix(before, after)).toBeGreaterThanOrEqual(start);
  expect(commonSuffix(before, after)).toBeGreaterThanOrEqual(before.length - end);
}

describe('parseRules', () => {
  it('reads the ruleset version as written, also when YAML reads it as a number', () => {
    expect(parseRules('version: "2026.11.0"\n').rulesetVersion).toBe('2026.11.0');
    expect(parseRules('version: 2026.10\n').rulesetVersion).toBe('2026.10');
    expect(parseRules('version: 3\n').rulesetVersion).toBe('3');
    expect(parseRules('rules: []\n').rulesetVersion).toBeNull();
    expect(thrown(() => parseRules('version: [1]\n')).code).toBe('RULES_VERSION_INVALID');
  });

  it('parses the commented example and the section', () => {
    const r = parseRules(COMMENTED);
    expect(r.rulesetVersion).toBe('2026.11.0');
    expect(r.llmAssist?.default_adapter).toBe('qwen15b-lora-v0.1');
    expect(r.llmAssist?.gates?.min_metrics).toEqual({ ranking_accuracy: 0.8 });
  });

  it.each([
    ['not YAML', 'version: "1\nllm_assist: [', 'RULES_YAML_INVALID'],
    ['a duplicate key', 'version: "1"\nversion: "2"\n', 'RULES_YAML_INVALID'],
    ['two documents', 'version: "1"\n---\nversion: "2"\n', 'RULES_YAML_INVALID'],
    ['a list at the top', '- version\n', 'RULES_NOT_MAPPING'],
    ['a scalar at the top', 'hello\n', 'RULES_NOT_MAPPING'],
  ])('refuses %s (exit 1)', (_what, text, code) => {
    const e = thrown(() => parseRules(text));
    expect(e.code).toBe(code);
    expect(e.exitCode).toBe(1);
  });

  it.each([
    [
      'a misspelt gates key',
      'llm_assist:\n  gates:\n    min_metric: { a: 0.5 }\n',
      '/llm_assist/gates/min_metric',
    ],
    [
      'a gate that is not a number',
      'llm_assist:\n  gates:\n    min_metrics: { a: high }\n',
      '/llm_assist/gates/min_metrics/a',
    ],
    ['an unknown section key', 'llm_assist:\n  adapter: x\n', '/llm_assist/adapter'],
    ['llm_assist as a list', 'llm_assist: [1, 2]\n', '/llm_assist'],
    [
      'an entry without checksum',
      'llm_assist:\n  adapters:\n    a:\n      version: 0.1.0\n      base_model: b\n',
      '/llm_assist/adapters/a/checksum',
    ],
    [
      'a bad adapter id',
      `llm_assist:\n  adapters:\n    Bad_Id:\n      version: 0.1.0\n      base_model: b\n      checksum: ${SHA_A}\n`,
      '/llm_assist/adapters/Bad_Id',
    ],
    [
      'a version that is not semver',
      `llm_assist:\n  adapters:\n    a:\n      version: 1.0\n      base_model: b\n      checksum: ${SHA_A}\n`,
      '/llm_assist/adapters/a/version',
    ],
  ])('refuses an llm_assist section with %s, naming the place', (_what, text, pointer) => {
    const e = thrown(() => parseRules(`version: "1"\n${text}`));
    expect(e.code).toBe('RULES_LLM_ASSIST_INVALID');
    expect(e.pointer).toBe(pointer);
    expect(e.exitCode).toBe(1);
  });

  it('finds the declared base model: the key, else the default entry, else the one every entry shares', () => {
    expect(declaredBaseModel(parseRules(COMMENTED))).toMatchObject({
      base_model: 'qwen2.5-coder-1.5b',
      from: 'llm_assist.base_model',
    });
    const viaDefault = parseRules(
      `llm_assist:\n  default_adapter: a\n  adapters:\n    a: { version: 0.1.0, base_model: m1, checksum: "${SHA_A}" }\n    b: { version: 0.1.0, base_model: m2, checksum: "${SHA_A}" }\n`,
    );
    expect(declaredBaseModel(viaDefault)?.base_model).toBe('m1');
    const shared = parseRules(
      `llm_assist:\n  adapters:\n    a: { version: 0.1.0, base_model: m1, checksum: "${SHA_A}" }\n`,
    );
    expect(declaredBaseModel(shared)?.base_model).toBe('m1');
    const disagree = parseRules(
      `llm_assist:\n  adapters:\n    a: { version: 0.1.0, base_model: m1, checksum: "${SHA_A}" }\n    b: { version: 0.1.0, base_model: m2, checksum: "${SHA_A}" }\n`,
    );
    expect(declaredBaseModel(disagree)).toBeNull();
    expect(declaredBaseModel(parseRules('version: "1"\n'))).toBeNull();
  });
});

describe('recordAdapter', () => {
  const rules = (): RulesDocument => parseRules(COMMENTED);

  it('adds a new entry: every comment survives, and only the adapters section changes', () => {
    const r = recordAdapter(rules(), 'qwen15b-lora-v0.2', entry(), { setDefault: false });
    expect(r.changed).toBe(true);
    expect(commentLines(r.text)).toEqual(commentLines(COMMENTED));
    // the new entry goes after the last one, before the comment that closes the section
    expectChangeWithin(
      COMMENTED,
      r.text,
      '      notes: kept by promote',
      '      notes: kept by promote   # a key promote does not own\n',
    );
    expect(r.text).toContain(
      [
        '    qwen15b-lora-v0.2:',
        '      version: 0.2.0',
        '      base_model: qwen2.5-coder-1.5b',
        `      checksum: ${SHA_B}`,
        '      ruleset_version: "2026.11.0"',
        '      promoted_at: 2026-11-28T09:00:00Z',
        '      evaluation: { suite: codi-eval, metrics: { ranking_accuracy: 0.9 } }',
        '    # comment after the last entry, inside adapters',
      ].join('\n'),
    );
    expect(r.defaultAdapter).toBe('qwen15b-lora-v0.1');
    const data = parseDocument(r.text).toJS() as { llm_assist: { adapters: Record<string, unknown> } };
    expect(Object.keys(data.llm_assist.adapters)).toEqual(['qwen15b-lora-v0.1', 'qwen15b-lora-v0.2']);
  });

  it('updates an existing entry key by key: its comments, quoting and foreign keys stay', () => {
    const r = recordAdapter(rules(), 'qwen15b-lora-v0.1', entry({ version: '0.1.1' }), { setDefault: false });
    expect(commentLines(r.text)).toEqual(commentLines(COMMENTED));
    expect(r.text).toContain('      version: 0.1.1          # trailing on version\n');
    // the checksum was single-quoted and stays so
    expect(r.text).toContain(`      checksum: '${SHA_B}'\n`);
    expect(r.text).toContain('      notes: kept by promote   # a key promote does not own\n');
    expectChangeWithin(
      COMMENTED,
      r.text,
      '      version: 0.1.0',
      'evaluation: { suite: codi-eval, metrics: { ranking_accuracy: 0.86 } }',
    );
  });

  it('is a no-op, byte for byte, when the entry is already recorded', () => {
    const r0 = rules();
    const same = r0.llmAssist?.adapters?.['qwen15b-lora-v0.1'];
    expect(same).toBeDefined();
    const r = recordAdapter(
      r0,
      'qwen15b-lora-v0.1',
      { ...(same as RulesAdapterEntry) },
      { setDefault: false },
    );
    expect(r.changed).toBe(false);
    expect(r.text).toBe(COMMENTED);
  });

  it('--default replaces the default_adapter value in place', () => {
    const r = recordAdapter(rules(), 'qwen15b-lora-v0.2', entry(), { setDefault: true });
    expect(r.text).toContain(
      '  # comment before default_adapter\n  default_adapter: qwen15b-lora-v0.2\n  adapters:\n',
    );
    expect(r.defaultAdapter).toBe('qwen15b-lora-v0.2');
  });

  it('creates the section when the file has none, after everything else', () => {
    const text = '# rules\nversion: "1"   # v\nrules: []\n# end\n';
    const r = recordAdapter(parseRules(text), 'a', entry(), { setDefault: false });
    expect(r.text.startsWith('# rules\nversion: "1"   # v\nrules: []\n')).toBe(true);
    expect(r.text).toContain('# end\n');
    expect(parseRules(r.text).llmAssist).toMatchObject({
      default_adapter: 'a',
      adapters: { a: { version: '0.2.0' } },
    });
  });

  it('fills an empty `adapters:` that has a comment, keeping the comment on its line', () => {
    const text = 'version: "1"\nllm_assist:\n  adapters: # filled in by promote\nother: 1\n';
    const r = recordAdapter(parseRules(text), 'a', entry(), { setDefault: false });
    expect(r.text).toMatch(/^ {2}adapters: # filled in by promote\n {4}a:\n {6}version: 0\.2\.0\n/mu);
    expect(r.text.endsWith('other: 1\n')).toBe(true);
    expect(r.text).toContain('llm_assist:\n  default_adapter: a\n  adapters:');
  });

  it('keeps CRLF line endings and four-space indentation', () => {
    const text =
      'version: "1"\r\nllm_assist:\r\n    adapters:\r\n        old:\r\n            version: 0.1.0\r\n            base_model: qwen2.5-coder-1.5b\r\n            checksum: ' +
      SHA_A +
      '\r\n';
    const r = recordAdapter(parseRules(text), 'new', entry(), { setDefault: false });
    expect(r.text.replace(/\r\n/gu, '')).not.toContain('\n');
    expect(r.text).toContain('\r\n        new:\r\n            version: 0.2.0\r\n');
  });

  it('quotes ids and values that YAML 1.1 readers (PyYAML) would read as booleans or numbers', () => {
    const r = recordAdapter(parseRules('version: "1"\n'), 'yes', entry({ version: '1.0.0' }), {
      setDefault: false,
    });
    expect(r.text).toContain('"yes":');
    expect(r.text).toContain('default_adapter: "yes"');
  });

  it('refuses an edit through something that is not a mapping', () => {
    const e = thrown(() =>
      applyYamlEdits('llm_assist: 3\n', [{ path: ['llm_assist', 'adapters', 'a'], value: 1 }]),
    );
    expect(e.code).toBe('YAML_EDIT_UNSUPPORTED');
  });

  describe('anchors and aliases', () => {
    const OLD = ['      version: 0.0.1', '      base_model: qwen2.5-coder-1.5b', `      checksum: ${SHA_A}`];

    it('refuses to add to an adapters map that an alias elsewhere shows (YAML_EDIT_ANCHORED), naming its line', () => {
      const text = [
        'version: "1"',
        'llm_assist:',
        '  adapters: &ads',
        '    old:',
        ...OLD,
        'mirror: *ads',
        '',
      ].join('\n');
      const e = thrown(() => recordAdapter(parseRules(text), 'new', entry(), { setDefault: false }));
      expect(e.code).toBe('YAML_EDIT_ANCHORED');
      expect(e.exitCode).toBe(1);
      expect(e.message).toContain('llm_assist.adapters carries the anchor &ads');
      expect(e.message).toContain('(*ads at line 8)');
      expect(e.hint).toContain('the file was not changed');
    });

    it('refuses to update an entry an alias shows, or a default_adapter an alias repeats; adds beside them', () => {
      const text = [
        'version: "1"',
        'llm_assist:',
        '  default_adapter: &def old',
        '  adapters:',
        '    old: &old',
        ...OLD,
        'backup: *old',
        'also_default: *def',
        '',
      ].join('\n');
      const rules = parseRules(text);
      const update = thrown(() => recordAdapter(rules, 'old', entry(), { setDefault: false }));
      expect(update.code).toBe('YAML_EDIT_ANCHORED');
      expect(update.message).toContain('llm_assist.adapters.old carries the anchor &old');
      const makeDefault = thrown(() => recordAdapter(rules, 'new', entry(), { setDefault: true }));
      expect(makeDefault.code).toBe('YAML_EDIT_ANCHORED');
      expect(makeDefault.message).toContain('&def');
      // a new entry touches neither anchored node: the aliases mean what they meant
      const r = recordAdapter(rules, 'new', entry(), { setDefault: false });
      const data = parseDocument(r.text).toJS() as Record<string, unknown>;
      expect(data.backup).toEqual({ version: '0.0.1', base_model: 'qwen2.5-coder-1.5b', checksum: SHA_A });
      expect(data.also_default).toBe('old');
      expect(r.text.endsWith('backup: *old\nalso_default: *def\n')).toBe(true);
    });

    it('edits freely next to anchors no alias uses, and keeps aliases that point into llm_assist from elsewhere', () => {
      const unused = ['version: "1"', 'llm_assist:', '  adapters: &ads', '    old:', ...OLD, ''].join('\n');
      expect(recordAdapter(parseRules(unused), 'new', entry(), { setDefault: false }).text).toContain(
        '    new:\n',
      );
      const inbound = [
        'version: "1"',
        'common: &gates',
        '  ranking_accuracy: 0.80',
        'base: &bm qwen2.5-coder-1.5b',
        'llm_assist:',
        '  base_model: *bm',
        '  gates:',
        '    min_metrics: *gates',
        '  adapters:   # x',
        '',
      ].join('\n');
      const r = recordAdapter(parseRules(inbound), 'new', entry(), { setDefault: false });
      expect(r.text.startsWith(inbound.slice(0, inbound.indexOf('  adapters:')))).toBe(true);
      expect(parseRules(r.text).llmAssist?.gates?.min_metrics).toEqual({ ranking_accuracy: 0.8 });
    });

    it('a merge key (<<: *b) is an alias too: the map it merges is not edited', () => {
      const text = 'base: &b { x: 1 }\nderived:\n  <<: *b\n  y: 2\n';
      expect(thrown(() => applyYamlEdits(text, [{ path: ['base', 'z'], value: 3 }])).code).toBe(
        'YAML_EDIT_ANCHORED',
      );
    });
  });

  it('random entries on the commented file always re-parse to exactly the intended data', () => {
    const id = fc.stringMatching(/^[a-z0-9][a-z0-9._-]{0,20}$/u).filter((s) => !s.includes('..'));
    const version = fc.tuple(fc.nat(20), fc.nat(20), fc.nat(20)).map(([a, b, c]) => `${a}.${b}.${c}`);
    const metrics = fc.dictionary(
      fc.stringMatching(/^[a-z_]{1,12}$/u),
      fc.double({ min: 0, max: 1, noNaN: true }),
      {
        maxKeys: 4,
      },
    );
    fc.assert(
      fc.property(id, version, metrics, fc.boolean(), (i, v, m, setDefault) => {
        const r = recordAdapter(
          rules(),
          i,
          entry({ version: v, evaluation: { suite: 'codi-eval', metrics: m } }),
          { setDefault },
        );
        const data = parseRules(r.text).llmAssist;
        expect(data?.adapters?.[i]?.version).toBe(v);
        expect(data?.adapters?.[i]?.evaluation?.metrics).toEqual(m);
        expect(commentLines(r.text)).toEqual(commentLines(COMMENTED));
        // everything before llm_assist is untouched
        expect(r.text.startsWith(COMMENTED.slice(0, COMMENTED.indexOf('llm_assist:')))).toBe(true);
      }),
      { numRuns: 150 },
    );
  });
});
