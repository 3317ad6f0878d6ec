/**
 * The app (APP_COMMAND): its executable looked up before anything is started for it, and started once
 * environment.json is written, with LLM_ENDPOINT and CODI_ENVIRONMENT_FILE.
 */
import { CodiError } from '../errors.js';
import { redactText } from '../redact.js';
import type { RunContext } from './context.js';
import { environmentFile } from './environment.js';
import { findExecutable } from './executable.js';
import { SupervisedChild } from './supervisor.js';

/** A missing app executable is exit 3 (a shell command is the shell's to resolve). */
export async function checkApp(ctx: RunContext): Promise<void> {
  const { app } = ctx.config;
  if (!app || app.shell) return;
  const found = await findExecutable(app.argv[0], ctx.childEnv);
  if (found === null) {
    throw new CodiError(
      'APP_NOT_FOUND',
      `APP_COMMAND: ${app.argv[0]} not found (PATH=${ctx.childEnv.PATH ?? ''})`,
    );
  }
}

/** The app's environment: the children's, with where the LLM and the record of the run are. */
export function appEnvironment(ctx: RunContext): NodeJS.ProcessEnv {
  const { config } = ctx;
  const appEnv: NodeJS.ProcessEnv = {
    ...ctx.childEnv,
    CODI_ENVIRONMENT_FILE: environmentFile(config),
    LLM_ENABLED: String(config.llmEnabled),
  };
  if (config.llmEndpoint !== null) appEnv.LLM_ENDPOINT = config.llmEndpoint;
  else delete appEnv.LLM_ENDPOINT;
  // the key, when given as a flag, reaches the app as the variable it would have read
  if (config.llmApiKey !== null) appEnv.LLM_API_KEY = config.llmApiKey;
  return appEnv;
}

export async function startApp(ctx: RunContext): Promise<void> {
  const { config, report } = ctx;
  if (!config.app) {
    report.info('no app (APP_COMMAND=none): serving the LLM until stopped');
    return;
  }
  const appEnv = appEnvironment(ctx);
  const [command, ...args] = config.app.argv;
  const app = await SupervisedChild.start(
    { role: 'app', command, args, env: appEnv, wrapper: await ctx.wrapper },
    ctx.output,
  );
  ctx.children.app = app;
  report.info(
    `app started (pid ${app.pid}): ${config.app.shell ? '/bin/sh -c ' : ''}${redactText(config.app.text)}`,
  );
}
