import { readFileSync } from 'node:fs';
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
