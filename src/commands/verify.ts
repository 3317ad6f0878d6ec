import { Args, Flags } from '@oclif/core';
import chalk from 'chalk';
import type { Ora } from 'ora';
import { BaseCommand } from '../base-command.js';
import { baseCheckFor, readBaseForCheck } from '../base-model.js';
import { ExitCode } from '../errors.js';
import { progressText, renderChecklist } from '../render.js';
import { plural } from '../text.js';
import { verifyAdapter, type VerifyOptions, type VerifyReport } from '../verify.js';

export type VerifyResult = VerifyReport;

/** Files smaller than this hash too fast for a progress indicator to help. */
const PROGRESS_MIN_BYTES = 64 * 1024 * 1024;

export default class Verify extends BaseCommand {
  static override summary = 'Verify a PEFT LoRA adapter directory';
  static override description =
    'Checks layout, adapter_config.json, the safetensors header (strictly) or the .bin pickle (scanned, never loaded), tensors against the config, metadata.json against its schema, sha256 checksums (streamed) and, with --base, that llama.cpp will accept the adapter on that base model. Exit 0 when valid (warnings allowed), 1 when invalid, 3 when a path cannot be read.';
  static override examples = [
    '<%= config.bin %> verify examples/adapters/tiny-qwen2-lora',
    '<%= config.bin %> verify /models/adapters/qwen15b-lora-v0.1 --base /models/base/qwen2.5-coder-1.5b.gguf --strict --json',
  ];
  static override args = { dir: Args.string({ description: 'adapter directory', required: true }) };
  static override flags = {
    strict: Flags.boolean({ description: 'treat every warning as an error' }),
    base: Flags.string({
      description: 'base model GGUF: also check that llama.cpp will accept the adapter on it',
    }),
  };

  async run(): Promise<VerifyResult> {
    const { args, flags } = await this.parse(Verify);
    const options: VerifyOptions = { strict: flags.strict };
    if (flags.base) options.baseCheck = baseCheckFor(await readBaseForCheck(flags.base));
    let spinner: Ora | undefined;
    // a real terminal only: ora costs ~60 ms to load, and a zero-width one (a bare pty) makes it loop
    if (!this.jsonEnabled() && process.stderr.isTTY && process.stderr.columns > 0) {
      const { default: ora } = await import('ora');
      const started = performance.now();
      options.onHashProgress = ({ file, bytesDone, bytesTotal }) => {
        if (bytesTotal < PROGRESS_MIN_BYTES) return;
        // stdin is left alone: ora would otherwise put it in raw mode to swallow keystrokes
        spinner ??= ora({ stream: process.stderr, discardStdin: false }).start();
        spinner.text = progressText(file, bytesDone, bytesTotal, started);
      };
    }
    let result;
    try {
      result = await verifyAdapter(args.dir, options);
    } finally {
      // also when hashing ended early (an error, a file the checksums do not list)
      spinner?.stop();
    }
    const { verified: _verified, ...report } = result;
    this.setExitCode(report.ok ? ExitCode.OK : ExitCode.INVALID);
    if (!this.jsonEnabled()) {
      const name = report.adapter.id
        ? `${report.adapter.id} ${report.adapter.version ?? ''}`.trim()
        : report.adapter.path;
      this.log(`Verifying ${name} (${report.adapter.path})\n`);
      process.stdout.write(renderChecklist(report.checks, report.findings));
      const errors = report.findings.filter((f) => f.level === 'error').length;
      const warnings = report.findings.length - errors;
      const w = warnings ? plural(warnings, 'warning') : '';
      this.log(
        report.ok
          ? chalk.green(`\nAdapter is valid${w ? ` (${w})` : ''}.`)
          : chalk.red(`\nAdapter is invalid: ${plural(errors, 'error')}${w ? `, ${w}` : ''}.`),
      );
    }
    return report;
  }
}
