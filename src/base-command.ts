import { Command, Flags, type Interfaces } from '@oclif/core';
import { colourFor, errorJson, renderError, toCodiError, writeJson } from './error-output.js';
import type { CommandIO } from './cli/spec.js';
import type { ExitCode } from './errors.js';

export type BaseFlags<T extends typeof Command> = Interfaces.InferredFlags<
  (typeof BaseCommand)['baseFlags'] & T['flags']
>;

/**
 * Every command extends this. It owns colour handling and the single place where an error becomes
 * output and an exit status, in human mode and under `--json` (oclif's own `--json` path would exit 1
 * whatever the error said). The rendering itself lives in error-output.ts, shared with the `run` fast
 * path.
 */
export abstract class BaseCommand extends Command {
  static override enableJsonFlag = true;

  static override baseFlags = {
    'no-color': Flags.boolean({
      description: 'plain output without colours (also: NO_COLOR=1)',
      helpGroup: 'GLOBAL',
    }),
  };

  protected colour = true;

  override async init(): Promise<void> {
    await super.init();
    this.colour = await colourFor(this.argv);
  }

  /** Plain JSON: scripts parse it, so no colour codes even on a TTY. */
  override logJson(json: unknown): void {
    writeJson(json);
  }

  /** What the shared command code (src/cli/) writes through: the same on the fast path. */
  protected io(): CommandIO {
    return {
      json: this.jsonEnabled(),
      log: (line = '') => {
        this.log(line);
      },
      setExitCode: (code) => {
        this.setExitCode(code);
      },
    };
  }

  /** Sets the exit status without throwing, so a command can still return its result for `--json`. */
  protected setExitCode(code: ExitCode): void {
    process.exitCode = code;
  }

  // oclif awaits this; nothing here is asynchronous
  override catch(err: Error & { exitCode?: number }): Promise<void> {
    const error = toCodiError(err);
    process.exitCode = error.exitCode;
    if (this.jsonEnabled()) {
      this.logJson(errorJson(error));
    } else {
      process.stderr.write(renderError(error));
    }
    return Promise.resolve();
  }
}
