import type { CodiError } from './errors.js';

export type FindingLevel = 'error' | 'warning';

/** One result of a check. Codes are stable: release scripts match on them. */
export interface Finding {
  level: FindingLevel;
  code: string;
  message: string;
  /** the file the finding is about, relative to the adapter directory */
  file: string;
  /** JSON pointer (metadata, config) or byte offset (binary formats) inside the file */
  pointer?: string;
  /** the resolution to print beside it */
  hint?: string;
}

export function findingFromError(
  err: CodiError,
  fallbackFile: string,
  level: FindingLevel = 'error',
): Finding {
  const finding: Finding = { level, code: err.code, message: err.message, file: err.file ?? fallbackFile };
  if (err.pointer !== undefined) finding.pointer = err.pointer;
  if (err.hint !== undefined) finding.hint = err.hint;
  return finding;
}

/** Collects findings; `--strict` promotes every warning to an error at the end. */
export class Findings {
  readonly items: Finding[] = [];

  error(code: string, message: string, file: string, extra: Pick<Finding, 'pointer' | 'hint'> = {}): void {
    this.items.push({ level: 'error', code, message, file, ...extra });
  }

  warning(code: string, message: string, file: string, extra: Pick<Finding, 'pointer' | 'hint'> = {}): void {
    this.items.push({ level: 'warning', code, message, file, ...extra });
  }

  add(finding: Finding): void {
    this.items.push(finding);
  }

  get hasErrors(): boolean {
    return this.items.some((f) => f.level === 'error');
  }

  /** Findings about `file`, or with the given code prefix. */
  about(file: string): Finding[] {
    return this.items.filter((f) => f.file === file);
  }

  strict(): void {
    for (const f of this.items) f.level = 'error';
  }
}
