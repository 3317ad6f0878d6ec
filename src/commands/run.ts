import { Flags, type Interfaces } from '@oclif/core';
import { BaseCommand } from '../base-command.js';
import { flagName, RUN_SETTINGS } from '../run-config.js';
import { startRun } from '../run-entry.js';
import type { RunResult } from '../run/services.js';

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

/**
 * The help and the oclif route into `run`. `bin/run.js` starts `codi-adapter run …` through
 * src/run-entry.ts without oclif; both end in the same `startRun`.
 */
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
    return startRun(flags, this.jsonEnabled());
  }
}
