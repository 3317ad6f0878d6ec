import { BaseCommand } from '../base-command.js';
import { listMain, listSpec, type ListResult } from '../cli/list.js';
import { oclifArgs, oclifFlags } from '../cli/oclif.js';

export type { ListResult };

export default class List extends BaseCommand {
  static override summary = 'List the adapters in the models volume';
  static override description =
    'Scans <root>/adapters/*: id, version, base model, weights checksum (short), size, status (mounted, invalid with the first finding, or not_mounted when UID 1000 cannot read it), and a * on the active adapter. Without --verify it reads layout, headers and metadata only (fast; the checksum shown is the recorded one); --verify re-hashes every file and exits 1 if any adapter is invalid.';
  static override examples = [
    '<%= config.bin %> list --root /models',
    '<%= config.bin %> list --verify --json',
  ];
  static override args = oclifArgs(listSpec);
  static override flags = oclifFlags(listSpec);

  async run(): Promise<ListResult> {
    return listMain(await this.parse(List), this.io());
  }
}
