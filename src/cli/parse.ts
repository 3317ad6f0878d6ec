/**
 * The one command-line parser: every command line, `run`'s included, is read here against its
 * command's spec (src/cli/spec.ts), and every usage error (code USAGE, exit 2) is worded here.
 * oclif renders help from the same specs (src/cli/oclif.ts), so help and parser agree.
 */
import { parseBoolean } from '../run/settings.js';
import { usageError } from '../errors.js';
import type { CommandInput, CommandSpec, FlagSpec } from './spec.js';

export interface ParsedCommandLine extends CommandInput {
  /** one JSON object on stdout: `--json`, or oclif's other spelling, CODI_ADAPTER_CONTENT_TYPE=json */
  json: boolean;
}

/** The flags every command has: `--json` and `--no-color`. */
export const GLOBAL_FLAGS = {
  json: 'one JSON object on stdout, also on failure',
  'no-color': 'plain output without colours (also: NO_COLOR=1)',
} as const;

/** `argv` (the words after the command's name) read against `spec`; a usage error when it does not fit. */
export function parseCommandLine(
  spec: CommandSpec,
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
): ParsedCommandLine {
  const flags: Record<string, unknown> = {};
  const positional: string[] = [];
  let json = env.CODI_ADAPTER_CONTENT_TYPE?.toLowerCase() === 'json';
  let rest = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? '';
    if (rest || !arg.startsWith('-') || arg === '-') {
      positional.push(arg);
      continue;
    }
    if (arg === '--') {
      rest = true;
      continue;
    }
    if (!arg.startsWith('--')) throw usageError(`Nonexistent flag: ${arg}`);
    const eq = arg.indexOf('=');
    const name = arg.slice(2, eq < 0 ? undefined : eq);
    const inline = eq < 0 ? undefined : arg.slice(eq + 1);
    if (name in GLOBAL_FLAGS) {
      if (inline !== undefined) throw usageError(`Flag --${name} takes no value`);
      if (name === 'json') json = true;
      continue;
    }
    const found = findFlag(spec, name, inline);
    if (found.flag.kind === 'boolean') {
      // a flag with words of its own passes a given value on as it is: its setting reads it
      flags[found.name] =
        inline !== undefined && !found.negated && found.flag.words !== undefined
          ? inline
          : booleanValue(found.name, found.flag.allowValue === true, inline, found.negated);
      continue;
    }
    if (found.name in flags) throw usageError(`Flag --${found.name} can only be specified once`);
    const value = inline ?? argv[++i];
    // the next word is another flag: this one was left without its value
    if (value === undefined || (inline === undefined && /^--|^-[A-Za-z]/u.test(value))) {
      throw usageError(`Flag --${found.name} expects a value`);
    }
    flags[found.name] = flagValue(found.name, found.flag, value);
  }
  return { args: argsOf(spec, positional), flags: withDefaults(spec, flags, env), json };
}

function findFlag(
  spec: CommandSpec,
  name: string,
  inline: string | undefined,
): { name: string; flag: FlagSpec; negated: boolean } {
  const flag = spec.flags[name];
  if (flag) return { name, flag, negated: false };
  const positive = spec.flags[name.slice(3)];
  if (name.startsWith('no-') && inline === undefined && positive?.kind === 'boolean' && positive.allowNo) {
    return { name: name.slice(3), flag: positive, negated: true };
  }
  throw usageError(`Nonexistent flag: --${name}`);
}

function booleanValue(
  name: string,
  allowValue: boolean,
  inline: string | undefined,
  negated: boolean,
): boolean {
  if (inline === undefined) return !negated;
  if (!allowValue) throw usageError(`Flag --${name} takes no value (it is on when given)`);
  return parseBoolean(inline, `--${name}`);
}

function flagValue(name: string, flag: Exclude<FlagSpec, { kind: 'boolean' }>, value: string): unknown {
  switch (flag.kind) {
    case 'string':
      if (value === '' && !flag.allowEmpty) throw usageError(`Flag --${name} expects a value`);
      return value;
    case 'option':
      if (!flag.options.includes(value)) {
        throw usageError(`Expected --${name}=${value} to be one of: ${flag.options.join(', ')}`);
      }
      return value;
    case 'integer': {
      const n = /^-?\d+$/u.test(value) ? Number(value) : NaN;
      const what = flag.min === undefined ? 'an integer' : `an integer ≥ ${flag.min}`;
      if (!Number.isSafeInteger(n) || (flag.min !== undefined && n < flag.min)) {
        throw usageError(`Flag --${name} expects ${what}, got ${JSON.stringify(value)}`);
      }
      return n;
    }
  }
}

function argsOf(spec: CommandSpec, positional: readonly string[]): Record<string, string | undefined> {
  const extra = positional[spec.args.length];
  if (extra !== undefined) throw usageError(`Unexpected argument: ${extra === '' ? '""' : extra}`);
  const args: Record<string, string | undefined> = {};
  for (const [i, a] of spec.args.entries()) {
    const value = positional[i];
    if (value === undefined && a.required) {
      throw usageError(`Missing required argument <${a.name}>: ${a.description}`);
    }
    // an empty word is almost always a shell variable that was not set
    if (value === '') throw usageError(`Argument <${a.name}> is empty (expected: ${a.description})`);
    args[a.name] = value;
  }
  return args;
}

function withDefaults(
  spec: CommandSpec,
  given: Record<string, unknown>,
  env: NodeJS.ProcessEnv,
): Record<string, unknown> {
  const flags = { ...given };
  for (const [name, flag] of Object.entries(spec.flags)) {
    if (name in flags) continue;
    if (flag.kind === 'boolean') {
      flags[name] = flag.unset ? undefined : false;
      continue;
    }
    const fromEnv = flag.kind === 'string' && flag.env ? env[flag.env] : undefined;
    if (fromEnv) flags[name] = fromEnv;
    else if (flag.kind === 'string' && flag.required) {
      throw usageError(`Missing required flag --${name}: ${flag.description}`);
    } else flags[name] = flag.default;
  }
  return flags;
}
