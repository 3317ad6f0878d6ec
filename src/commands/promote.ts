import { Args, Flags } from '@oclif/core';
import chalk from 'chalk';
import { BaseCommand } from '../base-command.js';
import { promoteAdapter, type PromoteResult } from '../promote.js';

export type { PromoteResult };

export default class Promote extends BaseCommand {
  static override summary = 'Promote an adapter into patterns/rules.yml';
  static override description =
    'Verifies the adapter (fail closed), checks the evaluation against llm_assist.gates.min_metrics (a missing metric fails its gate), records the adapter under llm_assist.adapters.<id> and appends the evaluation to its metadata.json. Comments, order, quoting and every untouched byte of rules.yml are kept. Both writes are atomic and serialised by <rules>.lock. Promoting the same version and checksum again changes nothing. Exit 0 promoted, 1 invalid / gate failed / refused, 3 environment (file missing, lock held).';
  static override examples = [
    '<%= config.bin %> promote examples/adapters/tiny-qwen2-lora --rules examples/patterns/rules.yml --eval examples/eval.json --dry-run',
    '<%= config.bin %> promote /models/adapters/qwen15b-lora-v0.2 --rules patterns/rules.yml --eval eval.json --default --json',
  ];
  static override args = { dir: Args.string({ description: 'adapter directory', required: true }) };
  static override flags = {
    rules: Flags.string({ description: 'the rules file (patterns/rules.yml)', required: true }),
    eval: Flags.string({
      description: 'evaluation (eval.json); default: the newest record in metadata.json evaluations',
    }),
    'dry-run': Flags.boolean({ description: 'print the unified diff, write nothing' }),
    default: Flags.boolean({
      description: 'make it llm_assist.default_adapter (it becomes the default anyway when none is set)',
    }),
    force: Flags.boolean({
      description: 'allow a version downgrade, or other weights under an already promoted version',
    }),
    'lock-timeout': Flags.integer({
      description: 'seconds to wait for another promote of the same rules file',
      default: 10,
      min: 0,
    }),
  };

  async run(): Promise<PromoteResult> {
    const { args, flags } = await this.parse(Promote);
    const human = !this.jsonEnabled();
    const result = await promoteAdapter(args.dir, {
      rules: flags.rules,
      dryRun: flags['dry-run'],
      setDefault: flags.default,
      force: flags.force,
      lockTimeoutMs: flags['lock-timeout'] * 1000,
      ...(flags.eval === undefined ? {} : { eval: flags.eval }),
      onLockWait: (owner) => {
        if (human) {
          process.stderr.write(
            `waiting for ${flags.rules}.lock${owner ? ` (pid ${owner.pid} on ${owner.hostname})` : ''}…\n`,
          );
        }
      },
    });
    if (human) this.render(result);
    return result;
  }

  private render(r: PromoteResult): void {
    const name = `${r.adapter.id} ${r.adapter.version}`;
    for (const g of r.gates) {
      this.log(`${chalk.green('✔')} gate ${g.metric} ${String(g.value)} ≥ ${g.threshold}`);
    }
    if (r.dry_run) {
      if (r.diff) process.stdout.write(r.diff);
      this.log(
        r.already
          ? `${name} is already promoted in ${r.rules_file}; nothing would change.`
          : chalk.dim(
              `dry run: nothing was written (${[r.changed.rules ? 'rules' : '', r.changed.metadata ? 'metadata.json' : ''].filter(Boolean).join(' and ')} would change)`,
            ),
      );
      return;
    }
    if (r.already) {
      this.log(`${chalk.green('✔')} ${name} is already promoted in ${r.rules_file}; nothing changed.`);
      return;
    }
    this.log(`${chalk.green('✔')} Promoted ${name} into ${r.rules_file} (ruleset ${r.ruleset_version})`);
    this.log(
      `  ${r.adapter.checksum}, base ${r.adapter.base_model}, default adapter: ${r.default_adapter ?? '-'}`,
    );
    if (r.evaluation) {
      const metrics = Object.entries(r.evaluation.metrics)
        .map(([k, v]) => `${k} ${v}`)
        .join(', ');
      this.log(`  evaluation ${r.evaluation.suite}: ${metrics}`);
    }
    if (r.changed.metadata) this.log('  metadata.json: evaluation appended');
  }
}
