/**
 * The one error type of codi-adapter. Library code throws it; exactly one module (src/cli/finish.ts)
 * turns it into output and an exit status.
 */
import { constants } from 'node:os';

/**
 * Exit codes shared by every command. A process ended by a signal exits as a shell reports it,
 * 128 + the signal's number (`signalExitStatus`); the interrupts a command handles itself are named
 * here.
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

/** The exit status a shell reports for a process that `signal` ended: 128 + its number. */
export function signalExitStatus(signal: NodeJS.Signals): number {
  return 128 + constants.signals[signal];
}

export interface CodiErrorOptions {
  exitCode?: ExitCode;
  /** the file the error is about, relative to the adapter directory where there is one */
  file?: string;
  /** a JSON pointer or a byte offset inside `file` */
  pointer?: string;
  /** what the user can do about it; printed on an indented line */
  hint?: string;
  cause?: unknown;
  /** extra machine-readable detail, included in `--json` output */
  details?: Record<string, unknown>;
}

export class CodiError extends Error {
  readonly code: string;
  readonly exitCode: ExitCode;
  readonly file: string | undefined;
  readonly pointer: string | undefined;
  readonly hint: string | undefined;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: string, message: string, options: CodiErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'CodiError';
    this.code = code;
    this.exitCode = options.exitCode ?? ExitCode.INVALID;
    this.file = options.file;
    this.pointer = options.pointer;
    this.hint = options.hint;
    this.details = options.details;
  }

  /** The same error, about another file (formats do not know the path they were given). */
  withFile(file: string): CodiError {
    if (this.file === file) return this;
    const copy = new CodiError(this.code, this.message, {
      exitCode: this.exitCode,
      file,
      pointer: this.pointer,
      hint: this.hint,
      cause: this.cause,
      details: this.details,
    });
    copy.stack = this.stack;
    return copy;
  }
}

export function isCodiError(value: unknown): value is CodiError {
  return value instanceof CodiError;
}

/** Node's errno errors (ENOENT, EACCES, …) as an environment error about `path`. */
export function environmentError(err: unknown, path: string, what = 'accessed'): CodiError {
  const errno = (err as NodeJS.ErrnoException | undefined)?.code;
  const reason =
    errno === 'ENOENT'
      ? 'does not exist'
      : errno === 'EACCES' || errno === 'EPERM'
        ? 'is not accessible (permission denied)'
        : errno === 'ENOTDIR'
          ? 'is not a directory'
          : errno === 'EISDIR'
            ? 'is a directory'
            : errno === 'ENOSPC'
              ? 'cannot be written: no space left on device'
              : errno === 'EROFS'
                ? 'is on a read-only file system'
                : `cannot be ${what} (${errno ?? String(err)})`;
  return new CodiError(errno === 'ENOENT' ? 'PATH_MISSING' : 'PATH_INACCESSIBLE', `${path} ${reason}`, {
    exitCode: ExitCode.ENVIRONMENT,
    file: path,
    cause: err,
  });
}
