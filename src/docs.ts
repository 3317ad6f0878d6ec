/**
 * Parts of the docs written from the code, so they cannot drift from it: each sits in its file
 * between `<!-- generated:NAME -->` and `<!-- /generated:NAME -->`. `npm run docs` rewrites them, and
 * a test fails while a file differs from what `GENERATED` renders. A new generated part is one row.
 */
import { ALL_CODES, codeRow } from './codes.js';
import { CONFIG_MAP_FILE, configMapYaml, DOCKERFILE, imageEnv } from './kubernetes.js';
import { defaultText, RUN_SETTINGS } from './run/settings.js';

export interface GeneratedPart {
  /** relative to the repository */
  readonly file: string;
  readonly name: string;
  readonly render: () => string;
}

export const GENERATED: readonly GeneratedPart[] = [
  { file: 'README.md', name: 'settings', render: settingsTable },
  { file: 'README.md', name: 'codes', render: codesTable },
];

/** A whole file written from the code; `read` gives another file of the repository. */
export interface GeneratedFile {
  /** relative to the repository */
  readonly file: string;
  readonly render: (read: (file: string) => string) => string;
}

export const GENERATED_FILES: readonly GeneratedFile[] = [
  {
    file: CONFIG_MAP_FILE,
    render: (read) => configMapYaml(RUN_SETTINGS, imageEnv(read(DOCKERFILE))),
  },
];

/** `text` with every part of `GENERATED` that belongs to `file` rewritten between its markers. */
export function withGeneratedParts(file: string, text: string, parts = GENERATED): string {
  let out = text;
  for (const part of parts.filter((p) => p.file === file))
    out = replaceBetween(out, part.name, part.render());
  return out;
}

/** Replaces what lies between the markers named `name`; a missing or repeated marker is an error. */
export function replaceBetween(text: string, name: string, content: string): string {
  const begin = `<!-- generated:${name} -->`;
  const end = `<!-- /generated:${name} -->`;
  const start = text.indexOf(begin);
  const stop = text.indexOf(end);
  if (start < 0 || stop < start || text.indexOf(begin, start + 1) >= 0) {
    throw new Error(`expected one ${begin} … ${end} pair`);
  }
  const body = content.endsWith('\n') ? content : `${content}\n`;
  return `${text.slice(0, start + begin.length)}\n${body}${text.slice(stop)}`;
}

/** Markdown table cell: a `|` would end the cell. */
function cell(text: string): string {
  return text.replace(/\|/gu, '\\|');
}

/** Prose in a table cell: `<key>` outside code spans would read as an HTML tag. */
function proseCell(text: string): string {
  return cell(
    text
      .split('`')
      .map((part, i) => (i % 2 === 0 ? part.replace(/</gu, '&lt;').replace(/>/gu, '&gt;') : part))
      .join('`'),
  );
}

/** `run`'s settings, one table row per setting row. */
export function settingsTable(): string {
  const rows = RUN_SETTINGS.map(
    (s) => `| \`${s.name}\` | \`--${s.flag}\` | \`${cell(defaultText(s))}\` | ${cell(s.description)} |`,
  );
  return ['| variable | flag | default | what it sets |', '|---|---|---|---|', ...rows].join('\n');
}

/** Every code, one table row per registry row: level, exit status, checklist line, summary, hint. */
export function codesTable(): string {
  const rows = ALL_CODES.map((code) => {
    const row = codeRow(code);
    const exit = [String(row.exit), ...(row.overrides ?? []).map((o) => `${o.exit} when ${o.when}`)].join(
      '; ',
    );
    const check = row.check === null ? '—' : row.check === 'reader' ? "its file's" : `\`${row.check}\``;
    return `| \`${code}\` | ${row.level} | ${proseCell(exit)} | ${check} | ${proseCell(row.summary)} | ${proseCell(row.hint ?? '—')} |`;
  });
  return [
    '| code | level | exit | checklist line | what it means | hint |',
    '|---|---|---|---|---|---|',
    ...rows,
  ].join('\n');
}
