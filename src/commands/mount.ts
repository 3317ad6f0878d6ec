import { Args, Flags } from '@oclif/core';
import chalk from 'chalk';
import { BaseCommand } from '../base-command.js';
import { DEFAULT_MODEL_ROOT, mountAdapter, statusOf, type MountResult } from '../catalog.js';
import { isCodiError } from '../errors.js';
import { renderFinding } from '../render.js';

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
  static override args = { source: Args.string({ description: 'adapter folder', required: true }) };
  static override flags = {
    root: Flags.string({
      description: 'models volume root',
      env: 'MODEL_MOUNT_PATH',
      default: DEFAULT_MODEL_ROOT,
    }),
    id: Flags.string({ description: 'install under this id (default: metadata.json id)' }),
    base: Flags.string({
      description:
        'base model GGUF: check compatibility and build the llama.cpp adapter now, so run starts fast',
    }),
    activate: Flags.boolean({ description: 'point <root>/adapters/active at this adapter (atomically)' }),
    force: Flags.boolean({ description: 'replace an id that holds other contents' }),
    'lock-timeout': Flags.integer({
      description: 'seconds to wait for another mount to finish',
      default: 60,
      min: 0,
    }),
  };

  async run(): Promise<MountResult> {
    const { args, flags } = await this.parse(Mount);
    let result: MountResult;
    try {
      result = await mountAdapter(args.source, {
        root: flags.root,
        activate: flags.activate,
        force: flags.force,
        lockTimeoutMs: flags['lock-timeout'] * 1000,
        ...(flags.id === undefined ? {} : { id: flags.id }),
        ...(flags.base === undefined ? {} : { base: flags.base }),
      });
    } catch (e) {
      // the status line comes first, the error and its hint follow on stderr (base command)
      if (isCodiError(e) && !this.jsonEnabled()) {
        this.log(`Adapter Status: ${statusOf(e)} (${e.code}: ${e.message})`);
      }
      throw e;
    }
    if (!this.jsonEnabled()) {
      const verb = {
        registered: 'Registered',
        installed: 'Installed',
        replaced: 'Replaced',
        unchanged: 'Already mounted',
      }[result.action];
      this.log(`${chalk.green('✔')} ${verb} ${result.adapter.id} ${result.adapter.version} → ${result.path}`);
      this.log(`  ${result.adapter.checksum}, base ${result.adapter.base_model}`);
      if (result.activated) this.log(`  active → ${result.id}`);
      else if (result.active) this.log('  active (unchanged)');
      if (result.gguf) this.log(`  GGUF ${result.gguf.cached ? '(cached)' : 'built'}: ${result.gguf.path}`);
      for (const id of result.cleaned.restored) this.log(`  restored ${id} from an interrupted replacement`);
      if (result.cleaned.removed.length > 0) {
        this.log(`  cleaned ${result.cleaned.removed.length} leftover(s) of interrupted mounts`);
      }
      for (const f of result.findings) this.log(renderFinding(f));
      this.log(`Adapter Status: mounted (${result.reason})`);
    }
    return result;
  }
}
