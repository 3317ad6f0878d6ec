/**
 * The one error type of codi-adapter. Library code throws it (formats throw `FormatError`, which
 * `asCodiError` turns into one); exactly one module (src/cli/finish.ts) turns it into output and an
 * exit status. Its exit status and hint come from its code's row in codes.ts unless a raise gives
 * them.
 */
import { constants } from 'node:os';
import { codeRow, ExitCode, type Code, type ExitOf } from './codes.js';
import { FormatError } from './formats/format-error.js';

export { ExitCode } from './codes.js';

/** The exit status a shell reports for a process that `signal` ended: 128 + its number. */
export function signalExitStatus(signal: NodeJS.Signals): number {
  return 128 + constants.signals[signal];
}

export interface CodiErrorOptions<C extends Code = Code> {
  /** the status where it is not the code's own: one of the overrides its row declares */
  exitCode?: ExitOf<C>;
  /** the file the error is about, relative to the adapter directory where there is one */
  file?: string;
  /** a JSON pointer or a byte offset inside `file` */
  pointer?: string;
  /** what the user can do about it, when it says more than the code's own hint */
  hint?: string;
  cause?: unknown;
  /** extra machine-readable detail, included in `--json` output */
  details?: Record<string, unknown>;
}

/** What `CodiError.with` may change; the code and the exit status stay. */
export type CodiErrorChanges = Pick<CodiErrorOptions, 'file' | 'pointer' | 'hint' | 'cause' | 'details'> & {
  message?: string;
};

/**
 * The constructor as callers see it: generic in the code, so that an exit status other than the
 * code's own must be one of the overrides its row declares (`ExitOf`).
 */
export interface CodiErrorConstructor {
  new <C extends Code>(code: C, message: string, options?: CodiErrorOptions<C>): CodiError;
  readonly prototype: CodiError;
}

class CodiErrorClass extends Error {
  readonly code: Code;
  readonly exitCode: ExitCode;
  readonly file: string | undefined;
  readonly pointer: string | undefined;
  readonly hint: string | undefined;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: Code, message: string, options: CodiErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'CodiError';
    this.code = code;
    this.exitCode = options.exitCode ?? codeRow(code).exit;
    this.file = options.file;
    this.pointer = options.pointer;
    this.hint = options.hint ?? codeRow(code).hint;
    this.details = options.details;
  }

  /** The same error (code, exit status, stack) with some of its parts changed. */
  with(changes: CodiErrorChanges): CodiError {
    const copy = new CodiErrorClass(this.code, changes.message ?? this.message, {
      exitCode: this.exitCode,
      file: 'file' in changes ? changes.file : this.file,
      pointer: 'pointer' in changes ? changes.pointer : this.pointer,
      hint: 'hint' in changes ? changes.hint : this.hint,
      cause: 'cause' in changes ? changes.cause : this.cause,
      details: 'details' in changes ? changes.details : this.details,
    });
    copy.stack = this.stack;
    return copy;
  }

  /** The same error, about another file (formats do not know the path they were given). */
  withFile(file: string): CodiError {
    return this.file === file ? this : this.with({ file });
  }
}

export type CodiError = CodiErrorClass;
export const CodiError: CodiErrorConstructor = CodiErrorClass;

export function isCodiError(value: unknown): value is CodiError {
  return value instanceof CodiErrorClass;
}

/** A format's refusal as the error commands report: its code's exit status and hint, about `file`. */
export function fromFormatError(e: FormatError, file?: string): CodiError {
  const error = new CodiError(e.code, e.message, {
    ...(file === undefined ? {} : { file }),
    ...(e.pointer === undefined ? {} : { pointer: e.pointer }),
    ...(e.details === undefined ? {} : { details: e.details }),
  });
  error.stack = e.stack;
  return error;
}

/**
 * What was thrown, as a CodiError: itself, or a format's refusal given its code's status and hint;
 * undefined for anything else (a bug, to be thrown on).
 */
export function asCodiError(e: unknown, file?: string): CodiError | undefined {
  if (e instanceof CodiError) return e;
  if (e instanceof FormatError) return fromFormatError(e, file);
  return undefined;
}

/** Runs `f`, turning a format's refusal into the CodiError commands report (about `file`). */
export function lifted<T>(f: () => T, file?: string): T {
  try {
    return f();
  } catch (e) {
    throw e instanceof FormatError ? fromFormatError(e, file) : e;
  }
}

/** `lifted` for a promise. */
export async function liftedAsync<T>(f: () => Promise<T>, file?: string): Promise<T> {
  try {
    return await f();
  } catch (e) {
    throw e instanceof FormatError ? fromFormatError(e, file) : e;
  }
}

/** A wrong command line (`USAGE`, exit 2); `hint` when it says more than to see --help. */
export function usageError(message: string, hint?: string, cause?: unknown): CodiError {
  return new CodiError('USAGE', message, { hint, cause });
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
    file: path,
    cause: err,
  });
}
