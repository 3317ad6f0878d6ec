/**
 * oclif's command classes, generated from the registry: package.json's `oclif.commands` names this
 * module's `OCLIF_COMMANDS` (oclif's explicit command discovery), the build writes the manifest from
 * it, and help is rendered from that. A class's `run` hands its command line to the front door, so a
 * command behaves the same whichever way it was reached.
 */
import { Args, Command, Flags, type Interfaces } from '@oclif/core';
import { GLOBAL_FLAGS } from './parse.js';
import { runCommand } from './main.js';
import { COMMANDS, type CommandEntry } from './registry.js';
import type { CommandSpec, FlagSpec } from './spec.js';

export function oclifFlags(spec: CommandSpec): Interfaces.FlagInput {
  return Object.fromEntries(Object.entries(spec.flags).map(([name, flag]) => [name, oclifFlag(name, flag)]));
}

function oclifFlag(name: string, flag: FlagSpec): Interfaces.Flag<unknown> {
  const common = { description: flag.description, ...(flag.helpGroup ? { helpGroup: flag.helpGroup } : {}) };
  switch (flag.kind) {
    case 'boolean':
      return Flags.boolean({
        ...common,
        // help shows `--[no-]name`; the parser's other spelling is said in words
        ...(flag.allowValue ? { description: `${flag.description} (also --${name}=true|false)` } : {}),
        ...(flag.allowNo ? { allowNo: true } : {}),
      });
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

function commandClass(name: string, entry: CommandEntry): Command.Class {
  return class extends Command {
    static override id = name;
    static override summary = entry.summary;
    static override description = entry.description;
    static override examples = [...entry.examples];
    static override enableJsonFlag = true;
    // the front door's parser reads the arguments; not strict, oclif would take `list extra` for a
    // command named `list extra` before the parser could say the argument is one too many
    static override strict = false;
    static override baseFlags = {
      'no-color': Flags.boolean({ description: GLOBAL_FLAGS['no-color'], helpGroup: 'GLOBAL' }),
    };
    static override args = oclifArgs(entry.spec);
    static override flags = oclifFlags(entry.spec);

    async run(): Promise<void> {
      // the front door's parser reads the line (oclif's would word its errors differently)
      this.parsed = true;
      await runCommand(name, entry, this.argv);
    }
  };
}

export const OCLIF_COMMANDS: Record<string, Command.Class> = Object.fromEntries(
  Object.entries(COMMANDS).map(([name, entry]) => [name, commandClass(name, entry)]),
);
