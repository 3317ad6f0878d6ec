import { BaseCommand } from '../base-command.js';
import { mountMain, mountSpec, type MountResult } from '../cli/mount.js';
import { oclifArgs, oclifFlags } from '../cli/oclif.js';

export type { MountResult };

export default class Mount extends BaseCommand {
  static override summary = 'Install or register an adapter in the models volume';
  static override description =
    'A folder already in <root>/adapters/ is registered in place. Any other folder is installed: copied to a hidden staging folder in <root>/adapters/, verified again there, fsynced, and renamed into <root>/adapters/<id> in one step, so a reader never sees half an adapter. An id that already holds the same checksums is left as it is; other contents are never replaced without --force. Checks that UID 1000 (the runtime user) can read every file. Prints "Adapter Status: mounted|not_mounted|invalid". Exit 0 mounted, 1 invalid or conflicting, 2 usage, 3 environment (volume missing or not writable, unreadable, lock held).';
  static override examples = [
    '<%= config.bin %> mount examples/adapters/tiny-qwen2-lora --root /models --activate',
    '<%= config.bin %> mount /incoming/qwen15b-lora-v0.2 --base /models/base/qwen2.5-coder-1.5b.gguf --activate --json',
    '<%= config.bin %> mount /models/adapters/qwen15b-lora-v0.1',
  ];
  static override args = oclifArgs(mountSpec);
  static override flags = oclifFlags(mountSpec);

  async run(): Promise<MountResult> {
    return mountMain(await this.parse(Mount), this.io());
  }
}
