/**
 * The one module that writes the CLI's output and sets its exit status: a command's lines and its
 * result (one JSON object on stdout under `--json`), an error (that JSON object, or a message with its
 * hint on stderr), an interrupting signal. Commands write through the `CommandIO` made here, so what
 * `--json` drops, and where progress goes, is decided once.
 */
import type { Code } from '../codes.js';
// the exit statuses alone: the codes' tables and the error type are loaded when an error is finished
import { ExitCode } from '../codes/row.js';
import type { CodiError } from '../errors.js';
import { paint, useColour } from '../paint.js';
import type { CommandIO, InterruptStatus } from './spec.js';

/** The JSON shape of every failure that is not a command's own result. */
export interface ErrorJson {
  ok: false;
  error: { code: Code; message: string; exitCode: number; file?: string; hint?: string; details?: unknown };
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

/** Maps anything thrown (our errors, oclif's errors, the unexpected) to one CodiError. */
export async function toCodiError(err: unknown): Promise<CodiError> {
  const { asCodiError, CodiError, usageError } = await import('../errors.js');
  const known = asCodiError(err);
  if (known) return known;
  // oclif's CLIError carries an `oclif` property (checked by shape: no oclif import here)
  if (err instanceof Error && 'oclif' in err) {
    const message = err.message.replace(/\n\s*See more help with --help\s*$/u, '').trim();
    return usageError(message, undefined, err);
  }
  const message = err instanceof Error ? err.message : String(err);
  return new CodiError('INTERNAL', `unexpected internal error: ${message}`, { cause: err });
}

// A reader that goes away (`codi-adapter list | head -1`) must not become a stack trace: the rest of the
// output is dropped, the command finishes, and its exit status is the one it would have had.
let stdoutClosed: () => void = () => undefined;
/** Resolves when stdout's reader has gone away (a closed pipe never drains). */
export const stdoutGone = new Promise<void>((resolve) => (stdoutClosed = resolve));
let guarded = false;

/** Installs the closed-pipe guard once, before anything is written. */
export function guardPipes(): void {
  if (guarded) return;
  guarded = true;
  process.stdout.on('error', () => {
    stdoutClosed();
  });
  process.stderr.on('error', () => undefined);
}

function stdout(text: string): void {
  process.stdout.write(text);
}

function stderr(text: string): void {
  process.stderr.write(text);
}

/** Plain JSON on stdout: scripts parse it, so no colour codes even on a terminal. */
export function writeJson(json: unknown): void {
  stdout(`${JSON.stringify(json, null, 2)}\n`);
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

/** Text a command prints whatever it does: `--version`. */
export function finishText(text: string): void {
  stdout(text);
  process.exitCode = ExitCode.OK;
}

/** An error that ends the command: JSON or a message, and its exit status. */
export async function finishError(err: unknown, json: boolean): Promise<void> {
  finishCodiError(await toCodiError(err), json);
}

function finishCodiError(error: CodiError, json: boolean): void {
  if (json) writeJson(errorJson(error));
  else stderr(renderError(error));
  process.exitCode = error.exitCode;
}

/** oclif ended with its own exit (help, `this.exit`): its status, and nothing more to print. */
export async function finishOclif(err: unknown, json: boolean): Promise<void> {
  const oclif = (err as { code?: unknown; oclif?: { exit?: number } } | null)?.oclif;
  if ((err as { code?: unknown } | null)?.code === 'EEXIT') {
    process.exitCode = oclif?.exit ?? 0;
    process.exit();
  }
  await finishError(err, json);
}

/**
 * Output for one command: a `CommandIO` for its lines, then `done` with its result or `fail` with
 * what it threw. Under `--json` the result is the one JSON object on stdout.
 */
export class Outcome {
  private status: number = ExitCode.OK;
  private handedOff = false;
  readonly io: CommandIO;

  constructor(readonly json: boolean) {
    const human = !json;
    this.io = {
      json,
      log: (line = '') => {
        if (human) stdout(`${line}\n`);
      },
      write: (text) => {
        if (human) stdout(text);
      },
      note: (text) => {
        if (human) stderr(text);
      },
      // stdout carries the one JSON object under --json: progress goes to stderr then
      progress: json ? stderr : stdout,
      setExitCode: (code) => {
        this.status = code;
      },
      endWith: (status) => {
        this.status = status;
        this.handedOff = true;
      },
      onInterrupt: (stop) => onInterrupt(stop, json),
    };
  }

  done(result: unknown): void {
    if (this.json && result !== undefined && !this.handedOff) writeJson(result);
    process.exitCode = this.status;
  }

  async fail(err: unknown): Promise<void> {
    await finishError(err, this.json);
  }
}

/** The interrupts a command may handle, and the status each ends it with (128 + the signal's number). */
export const INTERRUPT_STATUS = {
  SIGHUP: ExitCode.INTERRUPTED_SIGHUP,
  SIGINT: ExitCode.INTERRUPTED_SIGINT,
  SIGTERM: ExitCode.INTERRUPTED_SIGTERM,
} as const;
export type InterruptSignal = keyof typeof INTERRUPT_STATUS;
const INTERRUPTS = Object.keys(INTERRUPT_STATUS) as InterruptSignal[];

/**
 * Until the returned function is called, SIGINT/SIGTERM/SIGHUP end the process: `stop` cleans up
 * (synchronously) and names what happened, the error is printed, and the exit status is the shell's
 * for that signal (`ExitCode.INTERRUPTED_*`), as the signal itself would have given.
 */
function onInterrupt(
  stop: (signal: InterruptSignal, status: InterruptStatus) => CodiError,
  json: boolean,
): () => void {
  const handler = (signal: InterruptSignal): void => {
    const status = INTERRUPT_STATUS[signal];
    try {
      finishCodiError(stop(signal, status), json);
    } finally {
      process.exit(status);
    }
  };
  for (const s of INTERRUPTS) process.on(s, handler);
  return () => {
    for (const s of INTERRUPTS) process.off(s, handler);
  };
}
