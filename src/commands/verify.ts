import { BaseCommand } from '../base-command.js';
import { oclifArgs, oclifFlags } from '../cli/oclif.js';
import { verifyMain, verifySpec, type VerifyResult } from '../cli/verify.js';

export type { VerifyResult };

export default class Verify extends BaseCommand {
  static override summary = 'Verify a PEFT LoRA adapter directory';
  static override description =
    'Checks layout, adapter_config.json, the safetensors header (strictly) or the .bin pickle (scanned, never loaded), tensors against the config, metadata.json against its schema, sha256 checksums (streamed) and, with --base, that llama.cpp will accept the adapter on that base model. Exit 0 when valid (warnings allowed), 1 when invalid, 3 when a path cannot be read.';
  static override examples = [
    '<%= config.bin %> verify examples/adapters/tiny-qwen2-lora',
    '<%= config.bin %> verify /models/adapters/qwen15b-lora-v0.1 --base /models/base/qwen2.5-coder-1.5b.gguf --strict --json',
  ];
  static override args = oclifArgs(verifySpec);
  static override flags = oclifFlags(verifySpec);

  async run(): Promise<VerifyResult> {
    return verifyMain(await this.parse(Verify), this.io());
  }
}
