import { BaseCommand } from '../base-command.js';
import { oclifArgs, oclifFlags } from '../cli/oclif.js';
import { promoteMain, promoteSpec, type PromoteResult } from '../cli/promote.js';

export type { PromoteResult };

export default class Promote extends BaseCommand {
  static override summary = 'Promote an adapter into patterns/rules.yml';
  static override description =
    'Verifies the adapter (fail closed), checks the evaluation against llm_assist.gates.min_metrics (a missing metric fails its gate), records the adapter under llm_assist.adapters.<id> and appends the evaluation to its metadata.json. Comments, order, quoting and every untouched byte of rules.yml are kept. Both writes are atomic and serialised by <rules>.lock. Promoting the same version and checksum again changes nothing. Exit 0 promoted, 1 invalid / gate failed / refused, 3 environment (file missing, lock held).';
  static override examples = [
    '<%= config.bin %> promote examples/adapters/tiny-qwen2-lora --rules examples/patterns/rules.yml --eval examples/eval.json --dry-run',
    '<%= config.bin %> promote /models/adapters/qwen15b-lora-v0.2 --rules patterns/rules.yml --eval eval.json --default --json',
  ];
  static override args = oclifArgs(promoteSpec);
  static override flags = oclifFlags(promoteSpec);

  async run(): Promise<PromoteResult> {
    return promoteMain(await this.parse(Promote), this.io());
  }
}
