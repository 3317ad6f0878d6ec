/**
 * The codes registry. Every finding and error code is one row, once: the level a finding of it has,
 * the exit status it ends a command with, the `verify` checklist line it belongs to, a one-line
 * summary and its hint (the resolution printed with it; a raise may give a more specific one, e.g.
 * naming a path). The rows sit in the table of their area (codes/adapter.ts, codes/weights.ts,
 * codes/commands.ts); this module joins them. Codes are stable: release scripts match on them.
 * `Code` is the type of every code parameter (CodiError, findings, format errors), so a code without
 * a row does not compile; README's table of codes is rendered from the rows (`npm run docs`).
 *
 * Exit statuses: a row's `exit`, or one of the `overrides` it declares with the situation that takes
 * it. One rule holds for every finding code: a verification that fails as one error (convert, mount,
 * run) carries its first error's code and the report's status, 3 when some file could not be read.
 */
import { ADAPTER_CODES } from './codes/adapter.js';
import { COMMAND_CODES } from './codes/commands.js';
import { ExitCode, type CodeRow } from './codes/row.js';
import { WEIGHT_CODES } from './codes/weights.js';

export { CHECK_NAMES, ExitCode, type CheckName, type CodeLevel, type CodeRow } from './codes/row.js';

/** The registry: every code's row, from the table of its area. */
export const CODES = { ...COMMAND_CODES, ...ADAPTER_CODES, ...WEIGHT_CODES };

export type Code = keyof typeof CODES;
type Row<C extends Code> = (typeof CODES)[C];

/** The statuses an error of code `C` may end with: its own, and its declared overrides. */
export type ExitOf<C extends Code> = C extends Code
  ? Row<C>['exit'] | (Row<C> extends { overrides: readonly { exit: infer E }[] } ? E : never)
  : never;

export const ALL_CODES: readonly Code[] = Object.keys(CODES).filter(isCode);

export function isCode(value: string): value is Code {
  return Object.hasOwn(CODES, value);
}

export function codeRow(code: Code): CodeRow {
  return CODES[code];
}

/**
 * Whether a finding of this code says something could not be read rather than that it is wrong: a
 * report with one ends in exit 3 (the adapter may be fine; the permissions need fixing).
 */
export function isEnvironmentCode(code: Code): boolean {
  return codeRow(code).exit === ExitCode.ENVIRONMENT;
}
