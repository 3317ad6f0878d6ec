/**
 * How an error becomes output: one JSON object under `--json`, a message with its hint otherwise.
 * Free of oclif so the `run` fast path (run-entry.ts) shares it with the base command.
 */
import { paint, useColour } from './paint.js';
import { CodiError, ExitCode, isCodiError } from './errors.js';

/** The JSON shape of every failure that is not a command's own result. */
export interface ErrorJson {
  ok: false;
  error: { code: string; message: string; exitCode: number; file?: string; hint?: string; details?: unknown };
}

export function errorJson(error: CodiError): ErrorJson {
  const out: ErrorJson = {
    ok: false,
    error: { code: error.code, message: error.message, exitCode: error.exitCode },
  };
  if (error.file !== undefined) out.error.file = error.file;
  if (error.hint !== undefined) out.error.hint = error.hint;
  if (error.details !== undefined) out.error.details = error.details;
  return out;
}

export function renderError(error: CodiError): string {
  let text = `${paint.red('✖')} ${paint.bold(error.code)}: ${error.message}\n`;
  if (error.hint) text += `  ${paint.dim('hint:')} ${error.hint}\n`;
  if (process.env.CODI_DEBUG && error.cause instanceof Error && error.cause.stack) {
    text += `${paint.dim(error.cause.stack)}\n`;
  }
  return text;
}

/** Maps anything thrown (our errors, oclif's parser errors, the unexpected) to one CodiError. */
export function toCodiError(err: unknown): CodiError {
  if (isCodiError(err)) return err;
  // oclif's CLIError and parser errors carry an `oclif` property (checked by shape: no oclif import here)
  if (err instanceof Error && 'oclif' in err) {
    const message = err.message.replace(/\n\s*See more help with --help\s*$/u, '').trim();
    return usageError(message, err);
  }
  const message = err instanceof Error ? err.message : String(err);
  return new CodiError('INTERNAL', `unexpected internal error: ${message}`, {
    exitCode: ExitCode.INVALID,
    hint: 'this is a bug in codi-adapter; run with CODI_DEBUG=1 for the stack trace and report it',
    cause: err,
  });
}

export function usageError(message: string, cause?: unknown): CodiError {
  return new CodiError('USAGE', message, {
    exitCode: ExitCode.USAGE,
    hint: 'see --help for the flags and arguments',
    cause,
  });
}

/** Plain JSON on stdout: scripts parse it, so no colour codes even on a terminal. */
export function writeJson(json: unknown): void {
  process.stdout.write(`${JSON.stringify(json, null, 2)}\n`);
}

/** Colour on a terminal, unless NO_COLOR or --no-color; plain text otherwise. Resolves to whether it is on. */
export async function colourFor(argv: readonly string[]): Promise<boolean> {
  const on =
    !argv.includes('--no-color') &&
    (process.env.NO_COLOR === undefined || process.env.NO_COLOR === '') &&
    process.stdout.isTTY;
  await useColour(on);
  return on;
}
