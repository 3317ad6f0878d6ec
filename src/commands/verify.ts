import { Args, Flags } from '@oclif/core';
import { BaseCommand } from '../base-command.js';
import { CodiError, ExitCode } from '../errors.js';

export default class Verify extends BaseCommand {
  static override description = 'Verify a PEFT LoRA adapter directory';
  static override args = { dir: Args.directory({ description: 'adapter directory', required: true }) };
  static override flags = {
    strict: Flags.boolean({ description: 'treat every warning as an error' }),
  };

  async run(): Promise<unknown> {
    const { args } = await this.parse(Verify);
    throw new CodiError('NOT_IMPLEMENTED', `verify ${args.dir}: not implemented yet`, {
      exitCode: ExitCode.INVALID,
    });
  }
}
