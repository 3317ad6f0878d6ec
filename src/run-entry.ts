/**
 * `run` as the container starts it. `bin/run.js` calls `runMain` directly for `codi-adapter run …`
 * without loading oclif (~150 ms of the entrypoint's start-up, which CONTRACT §7's readiness waits
 * on); `--help` still goes through oclif and src/commands/run.ts, which shares `startRun` below.
 */
import { paint } from './paint.js';
import { colourFor, errorJson, renderError, toCodiError, usageError, writeJson } from './error-output.js';
import { renderFinding } from './render.js';
import {
  flagName,
  parseBoolean,
  resolveRunConfig,
  RUN_SETTINGS,
  type RunConfig,
  type RunFlags,
} from './run-config.js';
import { runServices, type RunEvent, type RunResult } from './run/services.js';
import { VERSION } from './version.js';

/** Flag values by flag name (`llm-port`), as the command line gave them. */
export type RunFlagValues = Record<string, string | boolean | undefined>;

/** Resolves the configuration from flags and environment, runs, and renders progress. */
export function startRun(given: RunFlagValues, json: boolean): Promise<RunResult> {
  const runFlags: RunFlags = {};
  for (const s of RUN_SETTINGS) runFlags[s.name] = given[flagName(s.name)];
  const config = resolveRunConfig({ env: process.env, flags: runFlags });

  // stdout carries the one JSON object under --json; everything else goes to stderr then
  const out = json ? process.stderr : process.stdout;
  // a closed pipe (`run | head`) must not take the supervisor down with it
  out.on('error', () => undefined);
  const write = (text: string): void => {
    out.write(text);
  };
  return runServices({
    config,
    onEvent: (event) => {
      write(renderEvent(event));
    },
    output: (role, line) => {
      write(`${paint.dim(`[${role}]`)} ${line}\n`);
    },
  });
}

const BOOLEAN_FLAGS = new Set(RUN_SETTINGS.filter((s) => s.kind === 'boolean').map((s) => flagName(s.name)));
const VALUE_FLAGS = new Set(RUN_SETTINGS.filter((s) => s.kind !== 'boolean').map((s) => flagName(s.name)));

/**
 * The command line of `run`, parsed as oclif parses the command's flags: `--name value`,
 * `--name=value`, `--flag`/`--no-flag` for booleans, plus `--json` and `--no-color`.
 */
export function parseRunArgv(argv: readonly string[]): { flags: RunFlagValues; json: boolean } {
  const flags: RunFlagValues = {};
  let json = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? '';
    if (arg === '--json') {
      json = true;
      continue;
    }
    if (arg === '--no-color') continue;
    if (!arg.startsWith('--')) throw usageError(`Unexpected argument: ${arg}`);
    const eq = arg.indexOf('=');
    const name = arg.slice(2, eq < 0 ? undefined : eq);
    if (VALUE_FLAGS.has(name)) {
      const value = eq >= 0 ? arg.slice(eq + 1) : argv[++i];
      if (value === undefined) throw usageError(`Flag --${name} expects a value`);
      flags[name] = value;
    } else if (BOOLEAN_FLAGS.has(name)) {
      // `--airgap=false` as well as `--no-airgap`: the value is spelled as the variable's would be
      flags[name] = eq < 0 ? true : parseBoolean(arg.slice(eq + 1), `--${name}`);
    } else if (name.startsWith('no-') && BOOLEAN_FLAGS.has(name.slice(3)) && eq < 0) {
      flags[name.slice(3)] = false;
    } else {
      throw usageError(`Nonexistent flag: --${name}`);
    }
  }
  return { flags, json };
}

/** `codi-adapter run …` without oclif; resolves to the exit status. */
export async function runMain(argv: readonly string[]): Promise<number> {
  const json = argv.includes('--json');
  await colourFor(argv);
  try {
    const parsed = parseRunArgv(argv);
    const result = await startRun(parsed.flags, parsed.json);
    if (json) writeJson(result);
    return 0;
  } catch (e) {
    const error = toCodiError(e);
    if (json) writeJson(errorJson(error));
    else process.stderr.write(renderError(error));
    return error.exitCode;
  }
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
      `  ${s.name.padEnd(width)}  ${config.settings[s.name] || paint.dim('(empty)')}  ${paint.dim(source === 'flag' ? `(--${flagName(s.name)})` : `(${source})`)}`,
    );
  }
  return `${lines.join('\n')}\n`;
}
