import { Flags, type Interfaces } from '@oclif/core';
import chalk from 'chalk';
import { BaseCommand } from '../base-command.js';
import { renderFinding } from '../render.js';
import { flagName, resolveRunConfig, RUN_SETTINGS, type RunConfig, type RunFlags } from '../run-config.js';
import { runServices, type RunEvent, type RunResult } from '../run.js';
import { VERSION } from '../version.js';

export type { RunResult };

const settingFlags = Object.fromEntries(
  RUN_SETTINGS.map((s) => {
    const description = `${s.description} [env ${s.name}; default: ${s.defaultText}]`;
    return [
      flagName(s.name),
      s.kind === 'boolean'
        ? Flags.boolean({ allowNo: true, description, helpGroup: 'SETTINGS' })
        : Flags.string({ description, helpGroup: 'SETTINGS' }),
    ];
  }),
) as Interfaces.FlagInput;

export default class Run extends BaseCommand {
  static override summary =
    'Serve the mounted adapter with llama-server and start the app (the container entrypoint)';
  static override description = `Resolves the configuration (every setting is an environment variable and the flag named after it; the flag wins), validates MODEL_MOUNT_PATH and ADAPTER_PATH, verifies the adapter, converts it to GGUF (cached), starts llama-server, waits for GET /health, checks GET /lora-adapters lists the adapter at scale 1, writes environment.json to CODI_STATE_DIR, starts APP_COMMAND with LLM_ENDPOINT and CODI_ENVIRONMENT_FILE, then supervises both: child output is prefixed [llm]/[app]; SIGTERM/SIGINT stop the app, then the LLM, gracefully and then by force.

Exit status: 0 stopped by a signal, or the app finished with exit code 0; 1 the adapter is invalid; 2 a setting is malformed; 3 the environment is wrong (adapter not mounted, llama-server missing, port in use, remote endpoint not allowed); 4 the LLM failed to start or became unhealthy; 5 the app died.

With --json the children's lines and progress go to stderr, and one JSON object describing the outcome is printed on stdout when run ends.`;
  static override examples = [
    '<%= config.bin %> run',
    'MODEL_MOUNT_PATH=/srv/models LLAMA_SERVER_BIN=$(scripts/build-llama-server.sh) <%= config.bin %> run --app-command none',
    '<%= config.bin %> run --llm-endpoint http://llm.internal.example.com:8081 --airgap-allowlist llm.internal.example.com',
  ];
  static override flags = settingFlags;

  async run(): Promise<RunResult> {
    const { flags } = await this.parse(Run);
    const given = flags as Record<string, string | boolean | undefined>;
    const runFlags: RunFlags = {};
    for (const s of RUN_SETTINGS) runFlags[s.name] = given[flagName(s.name)];
    const config = resolveRunConfig({ env: process.env, flags: runFlags });

    const json = this.jsonEnabled();
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
        write(`${chalk.dim(`[${role}]`)} ${line}\n`);
      },
    });
  }
}

function renderEvent(event: RunEvent): string {
  switch (event.kind) {
    case 'config':
      return renderConfig(event.config);
    case 'adapter-status': {
      const colour = event.status === 'mounted' ? chalk.green : chalk.red;
      let text = `Adapter Status: ${colour(event.status)} (${event.reason})\n`;
      if (event.hint) text += `  ${chalk.dim('hint:')} ${event.hint}\n`;
      return text;
    }
    case 'findings':
      return event.findings.map((f) => `${renderFinding(f)}\n`).join('');
    case 'log': {
      const mark = event.level === 'warn' ? `${chalk.yellow('⚠')} ` : '';
      let text = `${chalk.dim('[run]')} ${mark}${event.message}\n`;
      if (event.hint) text += `      ${chalk.dim('hint:')} ${event.hint}\n`;
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
  const lines = [`${chalk.bold(`codi-adapter ${VERSION} run`)}: ${mode}; app: ${app}`];
  for (const s of RUN_SETTINGS) {
    const source = config.sources[s.name];
    lines.push(
      `  ${s.name.padEnd(width)}  ${config.settings[s.name] || chalk.dim('(empty)')}  ${chalk.dim(source === 'flag' ? `(--${flagName(s.name)})` : `(${source})`)}`,
    );
  }
  return `${lines.join('\n')}\n`;
}
