/**
 * `run`, the container entrypoint: the configuration from flags and environment, then the services,
 * with their progress rendered. It first starts itself again under an init that is a child
 * subreaper (src/run/init.ts), as PID 1 or not, and this process only passes signals on.
 */
import { paint } from '../paint.js';
import { redactText, redactUrl } from '../redact.js';
import { thousands } from '../text.js';
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
  const init = await import('../run/init.js');
  // once only: a run started under an init does the work (even if it cannot prove its parent is one)
  if (process.env[init.UNDER_INIT] === undefined) {
    const command = await init.findInit();
    if (command !== null) {
      const self = [process.execPath, ...process.execArgv, process.argv[1] ?? '', 'run', ...context.argv];
      io.endWith(await init.runUnderInit(command, self));
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
  const endpoint = config.llmEndpoint === null ? '?' : redactUrl(config.llmEndpoint);
  const mode =
    config.llmMode === 'embedded'
      ? `embedded llama-server on ${endpoint}`
      : config.llmMode === 'remote'
        ? `remote LLM ${endpoint}`
        : 'no LLM';
  const app = config.app ? redactText(config.app.text) : 'none';
  const width = Math.max(...RUN_SETTINGS.map((s) => s.name.length));
  const lines = [`${paint.bold(`codi-adapter ${VERSION} run`)}: ${mode}; app: ${app}`];
  for (const s of RUN_SETTINGS) {
    const source = config.sources[s.name];
    lines.push(
      `  ${s.name.padEnd(width)}  ${shown(config.settings[s.name]) || paint.dim('(empty)')}  ${paint.dim(source === 'flag' ? `(--${s.flag})` : `(${source})`)}`,
    );
  }
  return `${lines.join('\n')}\n`;
}

/** A setting's value as printed: a long one (a large allowlist) shortened, with its length. */
function shown(value: string): string {
  return value.length <= 200 ? value : `${value.slice(0, 160)}… (${thousands(value.length)} characters)`;
}
