/** A CommandSpec as oclif flags and args. */
import { Args, Flags, type Interfaces } from '@oclif/core';
import type { CommandSpec, FlagSpec } from './spec.js';

export function oclifFlags(spec: CommandSpec): Interfaces.FlagInput {
  return Object.fromEntries(Object.entries(spec.flags).map(([name, flag]) => [name, oclifFlag(flag)]));
}

function oclifFlag(flag: FlagSpec): Interfaces.Flag<unknown> {
  const common = {
    description: flag.description,
    ...(flag.helpGroup ? { helpGroup: flag.helpGroup } : {}),
  };
  switch (flag.kind) {
    case 'boolean':
      return Flags.boolean({ ...common, ...(flag.allowNo ? { allowNo: true } : {}) });
    case 'string':
      return Flags.string({
        ...common,
        ...(flag.required ? { required: true } : {}),
        ...(flag.env ? { env: flag.env } : {}),
        ...(flag.default !== undefined ? { default: flag.default } : {}),
      }) as Interfaces.Flag<unknown>;
    case 'integer':
      return Flags.integer({
        ...common,
        default: flag.default,
        ...(flag.min !== undefined ? { min: flag.min } : {}),
      }) as Interfaces.Flag<unknown>;
    case 'option':
      return Flags.option({
        ...common,
        options: flag.options,
        default: flag.default,
      })() as Interfaces.Flag<unknown>;
  }
}

export function oclifArgs(spec: CommandSpec): Interfaces.ArgInput {
  return Object.fromEntries(
    spec.args.map((a) => [a.name, Args.string({ description: a.description, required: a.required })]),
  );
}
