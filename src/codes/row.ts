/**
 * The shape of a row of the codes registry (codes.ts), and the exit statuses and checklist lines a
 * row names.
 */

/**
 * Exit codes shared by every command. A process ended by a signal exits as a shell reports it,
 * 128 + the signal's number; the interrupts a command handles itself are named here.
 */
export const ExitCode = {
  OK: 0,
  /** the checked thing is invalid, or a gate failed */
  INVALID: 1,
  /** the command line is wrong */
  USAGE: 2,
  /** the environment is wrong: path missing or unreadable, lock held, tool missing */
  ENVIRONMENT: 3,
  /** the LLM failed to start or became unhealthy (`run`) */
  LLM_FAILED: 4,
  /** a supervised child died (`run`) */
  CHILD_DIED: 5,
  /** stopped by SIGHUP (128 + 1) */
  INTERRUPTED_SIGHUP: 129,
  /** stopped by SIGINT (128 + 2), e.g. Ctrl-C */
  INTERRUPTED_SIGINT: 130,
  /** stopped by SIGTERM (128 + 15) */
  INTERRUPTED_SIGTERM: 143,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

/** The lines of verify's checklist, in their order. */
export const CHECK_NAMES = [
  'layout',
  'config',
  'weights',
  'tensors',
  'metadata',
  'checksums',
  'signature',
  'base',
] as const;
export type CheckName = (typeof CHECK_NAMES)[number];

export type CodeLevel = 'error' | 'warning';

export interface CodeRow {
  /** a finding's level when it is raised (`verify --strict` makes every warning an error) */
  readonly level: CodeLevel;
  /**
   * The status it ends a command with: as an error, or as a finding at level error. A warning that
   * only `--strict` turns into an error has the status it would then give; 0 is a warning no command
   * fails on.
   */
  readonly exit: ExitCode;
  /** other statuses it ends with, and when */
  readonly overrides?: readonly { readonly exit: ExitCode; readonly when: string }[];
  /**
   * The checklist line a finding of it fails (or warns): a line, `reader` for the line of the check
   * that reads the file it is about, or null for a code verify never reports.
   */
  readonly check: CheckName | 'reader' | null;
  readonly summary: string;
  /** the resolution printed with it, where there is one to give */
  readonly hint?: string;
}
