import { Args, Flags } from '@oclif/core';
import chalk from 'chalk';
import { BaseCommand } from '../base-command.js';
import { convertAdapter, OUTTYPES, type ConvertResult } from '../convert.js';
import { formatBytes, plural } from '../text.js';

export type { ConvertResult };

export default class Convert extends BaseCommand {
  static override summary = 'Convert a PEFT safetensors LoRA into a llama.cpp GGUF LoRA adapter';
  static override description =
    "Natively, with no Python: the architecture and shapes come from the base GGUF, so it works air-gapped. The adapter is verified first. The GGUF makes llama.cpp apply exactly PEFT's scale for every module (lora_alpha/r, lora_alpha/sqrt(r) with use_rslora, rank_pattern and alpha_pattern): what llama.cpp's single alpha cannot express is folded into lora_b. Without --out the result is cached next to the adapter (<parent>/.gguf-cache), keyed by the weights checksum, config, outtype and arch.";
  static override examples = [
    '<%= config.bin %> convert examples/adapters/tiny-qwen2-lora --base examples/base/tiny-qwen2.gguf',
    '<%= config.bin %> convert /models/adapters/qwen15b-lora-v0.1 --base /models/base/qwen2.5-coder-1.5b.gguf --outtype q8_0 --out /tmp/lora.gguf',
  ];
  static override args = { dir: Args.string({ description: 'adapter directory', required: true }) };
  static override flags = {
    base: Flags.string({ description: 'base model GGUF (architecture and shapes)', required: true }),
    out: Flags.string({ description: 'output GGUF file (default: the cache next to the adapter)' }),
    outtype: Flags.option({
      options: OUTTYPES,
      default: 'f32' as const,
      description:
        'tensor type. f32 (default) reproduces PEFT: llama.cpp rounds activations to the weight type in LoRA matmuls. q8_0 falls back to f16 where a row is not a multiple of 32',
    })(),
    force: Flags.boolean({ description: 'convert again even when the cache has the result' }),
  };

  async run(): Promise<ConvertResult> {
    const { args, flags } = await this.parse(Convert);
    const result = await convertAdapter(args.dir, {
      base: flags.base,
      outtype: flags.outtype,
      force: flags.force,
      ...(flags.out ? { out: flags.out } : {}),
    });
    if (!this.jsonEnabled()) {
      const name =
        [result.adapter.id, result.adapter.version].filter(Boolean).join(' ') || result.adapter.path;
      this.log(`${chalk.green('✔')} ${result.cached ? 'Cached' : 'Converted'} ${name} → ${result.output}`);
      this.log(
        `  ${result.base.arch}, ${plural(result.tensors, 'tensor')}, ${result.outtype}, alpha ${result.alpha}, ${formatBytes(result.bytes)}, ${(result.durationMs / 1000).toFixed(2)} s`,
      );
      if (result.folded.length > 0) {
        this.log(
          `  exact PEFT scale folded into lora_b for ${plural(result.folded.length, 'module')} (rsLoRA / rank_pattern / alpha_pattern)`,
        );
      }
      if (result.f16Fallback.length > 0) {
        this.log(
          `  ${chalk.yellow('⚠')} q8_0: ${plural(result.f16Fallback.length, 'tensor')} written as f16 because their rows are not a multiple of 32 (e.g. ${result.f16Fallback[0] ?? ''})`,
        );
      }
    }
    return result;
  }
}
