import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { ALL_CODES } from '../../src/codes.js';
import {
  codesTable,
  GENERATED,
  GENERATED_FILES,
  replaceBetween,
  settingsTable,
  withGeneratedParts,
} from '../../src/docs.js';
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

  it.each(GENERATED_FILES.map((g) => [g.file, g] as const))(
    '%s is what the code writes (npm run docs)',
    (_, g) => {
      const read = (file: string): string => readFileSync(new URL(file, REPO), 'utf8');
      expect(read(g.file)).toBe(g.render(read));
    },
  );

  it('the settings table has one row per setting, with its flag and default', () => {
    const lines = settingsTable().split('\n');
    expect(lines).toHaveLength(RUN_SETTINGS.length + 2);
    expect(lines).toContain('| `LLM_PORT` | `--llm-port` | `8081` | embedded server port |');
  });

  it('the codes table has one row per registered code: level, exit, checklist line, summary, hint', () => {
    const lines = codesTable().split('\n');
    expect(lines).toHaveLength(ALL_CODES.length + 2);
    expect(lines).toContain(
      "| `CHECKSUM_MISMATCH` | error | 1 | `checksums` | a listed file's sha256 is not the one metadata.json records | re-copy the adapter files, or regenerate metadata.json checksums if the change is intended |",
    );
    expect(lines).toContain(
      "| `PATH_INACCESSIBLE` | error | 3 | its file's | a path cannot be read: permission denied, not a regular file, or an I/O error | — |",
    );
    expect(lines.find((l) => l.startsWith('| `CONFIG_INVALID` |'))).toContain('| 1; 2 when a setting of run');
    // `<key>` outside code spans would vanish as an HTML tag
    expect(lines.find((l) => l.startsWith('| `BIN_STORAGE_MISSING` |'))).toContain('data/&lt;key&gt; entry');
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
