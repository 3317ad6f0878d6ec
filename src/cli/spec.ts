/**
 * The shape of a command's arguments and flags, free of oclif: src/cli/parse.ts reads every command
 * line against it, and src/cli/oclif.ts turns it into oclif flags for help and the manifest.
 */
import type { CodiError, ExitCode } from '../errors.js';
import type { EarlyHash } from '../checksum.js';

interface FlagCommon {
  description: string;
  helpGroup?: string;
}
export interface StringFlagSpec extends FlagCommon {
  kind: 'string';
  required?: boolean;
  /** an empty value (`--name=`) is accepted; otherwise it is a usage error */
  allowEmpty?: boolean;
  /** an environment variable read when the flag is absent (a non-empty value only, as oclif does) */
  env?: string;
  default?: string;
}
export interface BooleanFlagSpec extends FlagCommon {
  kind: 'boolean';
  /** `--no-<name>` is accepted */
  allowNo?: boolean;
  /** `--<name>=<value>` is accepted too, the value spelled as an environment variable's (true/false, 1/0, …) */
  allowValue?: boolean;
  /** other words `--<name>=<word>` may give (AIRGAP's `strict`); a value is then passed on as it is */
  words?: readonly string[];
  /** absent means unset (undefined), not false: something else (a variable, a default) decides then */
  unset?: boolean;
}
export interface IntegerFlagSpec extends FlagCommon {
  kind: 'integer';
  default: number;
  min?: number;
}
export interface OptionFlagSpec extends FlagCommon {
  kind: 'option';
  options: readonly string[];
  default: string;
}
export type FlagSpec = StringFlagSpec | BooleanFlagSpec | IntegerFlagSpec | OptionFlagSpec;

export interface ArgSpec {
  name: string;
  description: string;
  required: boolean;
}

export interface CommandSpec {
  args: readonly ArgSpec[];
  flags: Readonly<Record<string, FlagSpec>>;
}

/** A parsed command line. */
export interface CommandInput {
  args: Readonly<Record<string, string | undefined>>;
  flags: Readonly<Record<string, unknown>>;
}

/** How a command talks to its user; made by src/cli/finish.ts, the one module that writes output. */
export interface CommandIO {
  /** `--json`: one JSON object on stdout (the command's result), no human output */
  readonly json: boolean;
  /** a line on stdout (dropped under --json) */
  log(line?: string): void;
  /** text on stdout as it is (dropped under --json) */
  write(text: string): void;
  /** a message for the person on stderr (dropped under --json) */
  note(text: string): void;
  /** progress of a long-running command: stdout, or stderr under --json */
  progress(text: string): void;
  setExitCode(code: ExitCode): void;
  /** the command ran in another process, which wrote its own output: end with its status, print nothing */
  endWith(status: number): void;
  /**
   * Until the returned function is called, SIGINT/SIGTERM/SIGHUP end the command: `stop` cleans up
   * synchronously and returns the error to report; the exit status is `status` (128 + the signal).
   */
  onInterrupt(stop: (signal: NodeJS.Signals, status: InterruptStatus) => CodiError): () => void;
}

/** The statuses of the interrupts a command may handle: 128 + SIGHUP, SIGINT or SIGTERM. */
export type InterruptStatus =
  | typeof ExitCode.INTERRUPTED_SIGHUP
  | typeof ExitCode.INTERRUPTED_SIGINT
  | typeof ExitCode.INTERRUPTED_SIGTERM;

/** What the front door gives a command besides its parsed input. */
export interface CommandContext {
  /** the command line after the command's name, as given */
  argv: readonly string[];
  /** the weights' hash, begun before the command's code was loaded (registry `earlyHash`) */
  earlyHash: EarlyHash | null;
}

/** A command's behaviour (src/cli/<name>.ts): its result is what `--json` prints. */
export type CommandMain = (input: CommandInput, io: CommandIO, context: CommandContext) => Promise<unknown>;

/** Typed reads of a parsed input (the spec guarantees the types; these make TypeScript see them). */
export function stringFlag(input: CommandInput, name: string): string | undefined {
  const v = input.flags[name];
  return typeof v === 'string' ? v : undefined;
}

export function requiredString(input: CommandInput, name: string): string {
  const v = input.flags[name] ?? input.args[name];
  if (typeof v !== 'string') throw new TypeError(`${name} is required`);
  return v;
}

export function booleanFlag(input: CommandInput, name: string): boolean {
  return input.flags[name] === true;
}

export function integerFlag(input: CommandInput, name: string): number {
  const v = input.flags[name];
  if (typeof v !== 'number') throw new TypeError(`${name} must be an integer`);
  return v;
}
