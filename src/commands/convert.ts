import { BaseCommand } from '../base-command.js';
import { convertMain, convertSpec, type ConvertResult } from '../cli/convert.js';
import { oclifArgs, oclifFlags } from '../cli/oclif.js';

export type { ConvertResult };

export default class Convert extends BaseCommand {
  static override summary = 'Convert a PEFT safetensors LoRA into a llama.cpp GGUF LoRA adapter';
  static override description =
    "Natively, with no Python: the architecture and shapes come from the base GGUF, so it works air-gapped. The adapter is verified first. The GGUF makes llama.cpp apply exactly PEFT's scale for every module (lora_alpha/r, lora_alpha/sqrt(r) with use_rslora, rank_pattern and alpha_pattern): what llama.cpp's single alpha cannot express is folded into lora_b. Without --out the result is cached next to the adapter (<parent>/.gguf-cache), keyed by the weights checksum, config, outtype and arch.";
  static override examples = [
    '<%= config.bin %> convert examples/adapters/tiny-qwen2-lora --base examples/base/tiny-qwen2.gguf',
    '<%= config.bin %> convert /models/adapters/qwen15b-lora-v0.1 --base /models/base/qwen2.5-coder-1.5b.gguf --outtype q8_0 --out /tmp/lora.gguf',
  ];
  static override args = oclifArgs(convertSpec);
  static override flags = oclifFlags(convertSpec);

  async run(): Promise<ConvertResult> {
    return convertMain(await this.parse(Convert), this.io());
  }
}
