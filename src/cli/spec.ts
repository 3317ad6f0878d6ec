/**
 * The commands' arguments and flags, declared once, free of oclif: src/cli/oclif.ts turns a spec into
 * oclif flags (help, manifest, the canonical parser), and `parseFast` reads a well-formed command line
 * against the same spec for bin/run.js's fast path, which starts a command without loading oclif
 * (~150 ms). Anything `parseFast` is not sure of, it declines, and oclif parses it instead: so every
 * usage error still comes from oclif's parser, worded as oclif words it.
 */
import type { ExitCode } from '../errors.js';

interface FlagCommon {
  description: string;
  helpGroup?: string;
}
export interface StringFlagSpec extends FlagCommon {
  kind: 'string';
  required?: boolean;
  /** an environment variable read when the flag is absent (a non-empty value only, as oclif does) */
  env?: string;
  default?: string;
}
export interface BooleanFlagSpec extends FlagCommon {
  kind: 'boolean';
  /** `--no-<name>` is accepted */
  allowNo?: boolean;
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

/** A parsed command line: what oclif's `this.parse` gives, and what `parseFast` gives. */
export interface CommandInput {
  args: Readonly<Record<string, string | undefined>>;
  flags: Readonly<Record<string, unknown>>;
}

/** How a command talks to its user, the same under oclif and on the fast path. */
export interface CommandIO {
  /** `--json`: one JSON object on stdout, no human output */
  readonly json: boolean;
  /** a line on stdout (dropped under --json, as oclif's `this.log`) */
  log(line?: string): void;
  setExitCode(code: ExitCode): void;
}

/** The flags every command has (BaseCommand): `--json` and `--no-color`. */
const GLOBAL_BOOLEANS = new Set(['json', 'no-color']);

/**
 * `argv` read against `spec`, or null when oclif should parse it: help, an unknown or short flag,
 * `--`, a missing required argument or flag, a value oclif would refuse, a flag given twice.
 */
export function parseFast(
  spec: CommandSpec,
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
): (CommandInput & { json: boolean }) | null {
  const flags: Record<string, unknown> = {};
  const positional: string[] = [];
  let json = false;
  const seen = new Set<string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? '';
    // an empty word: oclif's reading of it is the reference
    if (arg === '') return null;
    if (!arg.startsWith('-') || arg === '-') {
      positional.push(arg);
      continue;
    }
    if (!arg.startsWith('--') || arg === '--') return null;
    const eq = arg.indexOf('=');
    let name = arg.slice(2, eq < 0 ? undefined : eq);
    const inline = eq < 0 ? undefined : arg.slice(eq + 1);
    if (seen.has(name)) return null;
    seen.add(name);
    if (GLOBAL_BOOLEANS.has(name)) {
      if (inline !== undefined) return null;
      if (name === 'json') json = true;
      continue;
    }
    let negated = false;
    let flag = spec.flags[name];
    if (!flag && name.startsWith('no-')) {
      const positive = spec.flags[name.slice(3)];
      if (positive?.kind === 'boolean' && positive.allowNo) {
        name = name.slice(3);
        flag = positive;
        negated = true;
      }
    }
    if (!flag) return null;
    if (flag.kind === 'boolean') {
      if (inline !== undefined) return null;
      flags[name] = !negated;
      continue;
    }
    const value = inline ?? argv[++i];
    // a value that looks like a flag: oclif decides what it means
    if (value === undefined || value === '' || (inline === undefined && value.startsWith('-'))) return null;
    const parsed = flagValue(flag, value);
    if (parsed === undefined) return null;
    flags[name] = parsed;
  }
  if (positional.length > spec.args.length) return null;
  const args: Record<string, string | undefined> = {};
  for (const [i, a] of spec.args.entries()) {
    const value = positional[i];
    if (value === undefined && a.required) return null;
    args[a.name] = value;
  }
  for (const [name, flag] of Object.entries(spec.flags)) {
    if (name in flags) continue;
    if (flag.kind === 'boolean') {
      flags[name] = false;
      continue;
    }
    const fromEnv = flag.kind === 'string' && flag.env ? env[flag.env] : undefined;
    if (fromEnv) flags[name] = fromEnv;
    else if (flag.kind === 'string' && flag.required) return null;
    else flags[name] = flag.default;
  }
  return { args, flags, json };
}

function flagValue(flag: Exclude<FlagSpec, BooleanFlagSpec>, value: string): string | number | undefined {
  switch (flag.kind) {
    case 'string':
      return value;
    case 'option':
      return flag.options.includes(value) ? value : undefined;
    case 'integer': {
      if (!/^-?\d+$/u.test(value)) return undefined;
      const n = Number(value);
      return Number.isSafeInteger(n) && (flag.min === undefined || n >= flag.min) ? n : undefined;
    }
  }
}

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
