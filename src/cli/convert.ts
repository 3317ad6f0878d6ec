/** `convert`'s behaviour (its spec and help are in registry.ts). */
import { paint } from '../paint.js';
import { removeLiveTemps } from '../atomic.js';
import { convertAdapter, type ConvertResult, type OutType } from '../convert.js';
import { CodiError } from '../errors.js';
import { renderFinding } from '../render.js';
import { formatBytes, plural } from '../text.js';
import { booleanFlag, requiredString, stringFlag, type CommandInput, type CommandIO } from './spec.js';

export type { ConvertResult };

/** What `convert` shows: the result without the proof's file identity (inode, times), run's own concern. */
export type ConvertShown = Omit<ConvertResult, 'proof'>;

export async function convertMain(input: CommandInput, io: CommandIO): Promise<ConvertShown> {
  const out = stringFlag(input, 'out');
  // SIGINT/SIGTERM/SIGHUP while the GGUF is written: its temp file is removed, the target keeps its
  // old contents, and the exit status is the shell's for that signal
  const release = io.onInterrupt((signal, status) => {
    removeLiveTemps();
    return new CodiError(
      'INTERRUPTED',
      `convert stopped by ${signal}: nothing was written (a GGUF being written was removed)`,
      { exitCode: status },
    );
  });
  let result: ConvertResult;
  try {
    result = await convertAdapter(requiredString(input, 'dir'), {
      base: requiredString(input, 'base'),
      outtype: (stringFlag(input, 'outtype') ?? 'f32') as OutType,
      force: booleanFlag(input, 'force'),
      ...(out ? { out } : {}),
    });
  } finally {
    release();
  }
  if (!io.json) {
    const name = [result.adapter.id, result.adapter.version].filter(Boolean).join(' ') || result.adapter.path;
    io.log(`${paint.green('✔')} ${result.cached ? 'Cached' : 'Converted'} ${name} → ${result.output}`);
    io.log(
      `  ${result.base.arch}, ${plural(result.tensors, 'tensor')}, ${result.outtype}, alpha ${result.alpha}, ${formatBytes(result.bytes)}, ${(result.durationMs / 1000).toFixed(2)} s`,
    );
    if (result.folded.length > 0) {
      io.log(
        `  exact PEFT scale folded into lora_b for ${plural(result.folded.length, 'module')} (rsLoRA / rank_pattern / alpha_pattern)`,
      );
    }
    if (result.f16Fallback.length > 0) {
      io.log(
        `  ${paint.yellow('⚠')} q8_0: ${plural(result.f16Fallback.length, 'tensor')} written as f16 because their rows are not a multiple of 32 (e.g. ${result.f16Fallback[0] ?? ''})`,
      );
    }
    for (const f of result.warnings) io.log(renderFinding(f));
  }
  const { proof: _proof, ...shown } = result;
  return shown;
}
