import { Command, Errors, Flags, type Interfaces } from '@oclif/core';
import chalk from 'chalk';
import { CodiError, ExitCode, isCodiError } from './errors.js';

export type BaseFlags<T extends typeof Command> = Interfaces.InferredFlags<
  (typeof BaseCommand)['baseFlags'] & T['flags']
>;

/** The JSON shape of every failure that is not a command's own result. */
export interface ErrorJson {
  ok: false;
  error: { code: string; message: string; exitCode: number; file?: string; hint?: string; details?: unknown };
}

/**
 * Every command extends this. It owns colour handling and the single place where an error becomes
 * output and an exit status, in human mode and under `--json` (oclif's own `--json` path would exit 1
 * whatever the error said).
 */
export abstract class BaseCommand extends Command {
  static override enableJsonFlag = true;

  static override baseFlags = {
    'no-color': Flags.boolean({
      description: 'plain output without colours (also: NO_COLOR=1)',
      helpGroup: 'GLOBAL',
    }),
  };

  protected colour = true;

  override async init(): Promise<void> {
    await super.init();
    const noColour =
      this.argv.includes('--no-color') ||
      (process.env.NO_COLOR !== undefined && process.env.NO_COLOR !== '') ||
      !process.stdout.isTTY;
    if (noColour) {
      chalk.level = 0;
      this.colour = false;
    }
  }

  /** Plain JSON: scripts parse it, so no colour codes even on a TTY. */
  override logJson(json: unknown): void {
    process.stdout.write(`${JSON.stringify(json, null, 2)}\n`);
  }

  /** Sets the exit status without throwing, so a command can still return its result for `--json`. */
  protected setExitCode(code: ExitCode): void {
    process.exitCode = code;
  }

  // oclif awaits this; nothing here is asynchronous
  override catch(err: Error & { exitCode?: number }): Promise<void> {
    const error = toCodiError(err);
    process.exitCode = error.exitCode;
    if (this.jsonEnabled()) {
      this.logJson(errorJson(error));
    } else {
      process.stderr.write(renderError(error));
    }
    return Promise.resolve();
  }
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
  let text = `${chalk.red('✖')} ${chalk.bold(error.code)}: ${error.message}\n`;
  if (error.hint) text += `  ${chalk.dim('hint:')} ${error.hint}\n`;
  if (process.env.CODI_DEBUG && error.cause instanceof Error && error.cause.stack) {
    text += `${chalk.dim(error.cause.stack)}\n`;
  }
  return text;
}

/** Maps anything thrown (our errors, oclif's parser errors, the unexpected) to one CodiError. */
export function toCodiError(err: unknown): CodiError {
  if (isCodiError(err)) return err;
  if (err instanceof Errors.CLIError || isOclifParseError(err)) {
    const message = (err as Error).message.replace(/\n\s*See more help with --help\s*$/u, '').trim();
    return new CodiError('USAGE', message, {
      exitCode: ExitCode.USAGE,
      hint: 'see --help for the flags and arguments',
      cause: err,
    });
  }
  const message = err instanceof Error ? err.message : String(err);
  return new CodiError('INTERNAL', `unexpected internal error: ${message}`, {
    exitCode: ExitCode.INVALID,
    hint: 'this is a bug in codi-adapter; run with CODI_DEBUG=1 for the stack trace and report it',
    cause: err,
  });
}

function isOclifParseError(err: unknown): boolean {
  return typeof err === 'object' && err !== null && 'parse' in err && 'oclif' in err;
}
