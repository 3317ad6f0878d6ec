/**
 * `run`, the container entrypoint: the configuration from flags and environment, then the services,
 * with their progress rendered. As PID 1 it first starts itself again under an init that reaps
 * orphans (src/run/pid1.ts), and this process only passes signals on.
 */
import { paint } from '../paint.js';
import { renderFinding } from '../render.js';
import { resolveRunConfig, type RunConfig, type RunFlags } from '../run/config.js';
import { RUN_SETTINGS } from '../run/settings.js';
import type { RunEvent, RunResult } from '../run/services.js';
import { VERSION } from '../version.js';
import type { CommandContext, CommandInput, CommandIO } from './spec.js';

export type { RunResult };

export async function runMain(
  input: CommandInput,
  io: CommandIO,
  context: CommandContext,
): Promise<RunResult | undefined> {
  if (process.pid === 1) {
    const pid1 = await import('../run/pid1.js');
    const init = pid1.needsInit() ? await pid1.findInit() : null;
    if (init !== null) {
      const self = [process.execPath, ...process.execArgv, process.argv[1] ?? '', 'run', ...context.argv];
      io.endWith(await pid1.runUnderInit(init, self));
      return undefined;
    }
  }
  const flags: RunFlags = {};
  for (const s of RUN_SETTINGS) flags[s.name] = input.flags[s.flag] as string | boolean | undefined;
  const config = resolveRunConfig({ env: process.env, flags });
  // loaded once the configuration is known to be sound: a malformed setting answers at once
  const { runServices } = await import('../run/services.js');
  return runServices({
    config,
    onEvent: (event) => {
      io.progress(renderEvent(event));
    },
    output: (role, line) => {
      io.progress(`${paint.dim(`[${role}]`)} ${line}\n`);
    },
  });
}

function renderEvent(event: RunEvent): string {
  switch (event.kind) {
    case 'config':
      return renderConfig(event.config);
    case 'adapter-status': {
      const colour = event.status === 'mounted' ? paint.green : paint.red;
      let text = `Adapter Status: ${colour(event.status)} (${event.reason})\n`;
      if (event.hint) text += `  ${paint.dim('hint:')} ${event.hint}\n`;
      return text;
    }
    case 'findings':
      return event.findings.map((f) => `${renderFinding(f)}\n`).join('');
    case 'log': {
      const mark = event.level === 'warn' ? `${paint.yellow('⚠')} ` : '';
      let text = `${paint.dim('[run]')} ${mark}${event.message}\n`;
      if (event.hint) text += `      ${paint.dim('hint:')} ${event.hint}\n`;
      return text;
    }
  }
}

function renderConfig(config: RunConfig): string {
  const mode =
    config.llmMode === 'embedded'
      ? `embedded llama-server on ${config.llmEndpoint ?? '?'}`
      : config.llmMode === 'remote'
        ? `remote LLM ${config.llmEndpoint ?? '?'}`
        : 'no LLM';
  const app = config.app ? config.app.text : 'none';
  const width = Math.max(...RUN_SETTINGS.map((s) => s.name.length));
  const lines = [`${paint.bold(`codi-adapter ${VERSION} run`)}: ${mode}; app: ${app}`];
  for (const s of RUN_SETTINGS) {
    const source = config.sources[s.name];
    lines.push(
      `  ${s.name.padEnd(width)}  ${config.settings[s.name] || paint.dim('(empty)')}  ${paint.dim(source === 'flag' ? `(--${s.flag})` : `(${source})`)}`,
    );
  }
  return `${lines.join('\n')}\n`;
}
