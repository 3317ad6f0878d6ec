import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { GENERATED, replaceBetween, settingsTable, withGeneratedParts } from '../../src/docs.js';
import { RUN_SETTINGS } from '../../src/run/settings.js';

const REPO = new URL('../../', import.meta.url);

describe('generated parts of the docs', () => {
  it.each([...new Set(GENERATED.map((p) => p.file))])(
    '%s is what the code renders (npm run docs)',
    (file) => {
      const text = readFileSync(new URL(file, REPO), 'utf8');
      expect(text).toBe(withGeneratedParts(file, text));
    },
  );

  it('the settings table has one row per setting, with its flag and default', () => {
    const lines = settingsTable().split('\n');
    expect(lines).toHaveLength(RUN_SETTINGS.length + 2);
    expect(lines).toContain('| `LLM_PORT` | `--llm-port` | `8081` | embedded server port |');
  });

  it('rewrites only what lies between the markers, and refuses a missing or repeated pair', () => {
    const text = 'a\n<!-- generated:x -->\nold\n<!-- /generated:x -->\nb\n';
    expect(replaceBetween(text, 'x', 'new')).toBe('a\n<!-- generated:x -->\nnew\n<!-- /generated:x -->\nb\n');
    expect(() => replaceBetween('a\n', 'x', 'new')).toThrow(/generated:x/u);
    expect(() => replaceBetween(`${text}${text}`, 'x', 'new')).toThrow(/generated:x/u);
  });
});

describe('the repository is self-contained', () => {
  // written as patterns so that this file does not mention them itself
  const OUTSIDE = [/CONTRACT\.md/u, /\.\.\/shared/u];

  it('no tracked file cites a document outside the repository', () => {
    const files = execFileSync('git', ['ls-files', '-z'], { cwd: fileURLToPath(REPO), encoding: 'utf8' })
      .split('\0')
      .filter((f) => f !== '');
    // a repository without its own files listed would pass vacuously
    expect(files).toContain('docs/reference.md');
    const citing = files.filter((f) => {
      // latin1: every byte is one character, so binary files are searched too
      const text = readFileSync(new URL(f, REPO), 'latin1');
      return OUTSIDE.some((p) => p.test(text));
    });
    expect(citing).toEqual([]);
  });
});
