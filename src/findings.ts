import { codeRow, isEnvironmentCode, type Code, type CodeLevel } from './codes.js';
import type { CodiError } from './errors.js';
import { thousands } from './text.js';

export type FindingLevel = CodeLevel;

/**
 * One result of a check. Codes are stable: release scripts match on them. (Capping and counting take
 * any code, `C`; what a check raises has a registered one.)
 */
export interface Finding<C extends string = Code> {
  level: FindingLevel;
  code: C;
  message: string;
  /** the file the finding is about, relative to the adapter directory */
  file: string;
  /** JSON pointer (metadata, config) or byte offset (binary formats) inside the file */
  pointer?: string;
  /** the resolution to print beside it */
  hint?: string;
  /**
   * Set on the one finding that stands for the findings of its code left out of a report
   * (`capFindings`): how many there were.
   */
  omitted?: number;
}

/**
 * How many findings of one code a report lists. A hostile file can produce one finding per tensor
 * or per schema violation (hundreds of thousands); past the first few the rest say nothing new, and
 * printing them all would bury the report (and once overflowed the stack).
 */
export const MAX_FINDINGS_PER_CODE = 50;

/**
 * Findings as a report lists them: at most `perCode` of each code, in their order; the rest of a
 * code become one finding (one per level) right after its last listed one: "… and N more CODE
 * findings", about their file when they share one (else the adapter folder, `.`), with `omitted: N`. A finding that already stands for omitted ones (a capped list fed in again) is
 * merged into its code's. Pushing into it keeps memory bounded however many findings arrive.
 */
export class CappedFindings<C extends string = Code> {
  private readonly out: Finding<C>[] = [];
  private readonly seen = new Map<string, number>();
  private readonly rest = new Map<string, Finding<C> & { omitted: number }>();

  constructor(private readonly perCode = MAX_FINDINGS_PER_CODE) {}

  push(f: Finding<C>): void {
    const omitted = f.omitted ?? 0;
    if (omitted === 0) {
      const n = (this.seen.get(f.code) ?? 0) + 1;
      this.seen.set(f.code, n);
      if (n <= this.perCode) {
        this.out.push(f);
        return;
      }
    }
    // one per code and level, so that the counts of errors and warnings stay exact
    const key = `${f.level} ${f.code}`;
    let summary = this.rest.get(key);
    if (!summary) {
      summary = { level: f.level, code: f.code, message: '', file: f.file, omitted: 0 };
      this.rest.set(key, summary);
      this.out.push(summary);
    }
    summary.omitted += omitted || 1;
    if (summary.file !== f.file) summary.file = '.';
  }

  /** The list, each summary's message written. */
  list(): Finding<C>[] {
    for (const summary of this.rest.values()) {
      summary.message = `… and ${thousands(summary.omitted)} more ${summary.code} findings (a report lists the first ${this.perCode} of a code)`;
    }
    return this.out;
  }
}

/** `findings` as a report lists them (see CappedFindings). */
export function capFindings<C extends string>(
  findings: readonly Finding<C>[],
  perCode = MAX_FINDINGS_PER_CODE,
): Finding<C>[] {
  const capped = new CappedFindings<C>(perCode);
  for (const f of findings) capped.push(f);
  return capped.list();
}

/** Errors and warnings, counting the findings a capped report stands for (`omitted`). */
export function countFindings(findings: readonly Pick<Finding<string>, 'level' | 'omitted'>[]): {
  errors: number;
  warnings: number;
} {
  let errors = 0;
  let warnings = 0;
  for (const f of findings) {
    const n = f.omitted ?? 1;
    if (f.level === 'error') errors += n;
    else warnings += n;
  }
  return { errors, warnings };
}

/** Where a finding sits and what it adds: the pointer, and a hint more specific than its code's. */
export type FindingExtra = Pick<Finding, 'pointer' | 'hint'>;

/** A finding of `code` at its registered level, with its registered hint unless `extra` gives one. */
export function finding(code: Code, message: string, file: string, extra: FindingExtra = {}): Finding {
  const row = codeRow(code);
  const f: Finding = { level: row.level, code, message, file };
  if (extra.pointer !== undefined) f.pointer = extra.pointer;
  const hint = extra.hint ?? row.hint;
  if (hint !== undefined) f.hint = hint;
  return f;
}

/**
 * Whether a finding says the adapter could not be read rather than that it is wrong (its code is an
 * environment error): a report with one ends in exit 3: the adapter may be fine, it is the
 * permissions that need fixing.
 */
export function isEnvironmentFinding(f: Pick<Finding, 'code'>): boolean {
  return isEnvironmentCode(f.code);
}

/** A thrown error as a finding: its code, message, pointer and hint, about its file or `fallbackFile`. */
export function findingFromError(err: CodiError, fallbackFile: string): Finding {
  const finding: Finding = {
    level: 'error',
    code: err.code,
    message: err.message,
    file: err.file ?? fallbackFile,
  };
  if (err.pointer !== undefined) finding.pointer = err.pointer;
  if (err.hint !== undefined) finding.hint = err.hint;
  return finding;
}
