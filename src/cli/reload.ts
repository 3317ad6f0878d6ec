/** `reload`'s behaviour (its spec and help are in registry.ts). */
import { paint } from '../paint.js';
import { requestReload, type ReloadResult } from '../gateway/reload-client.js';
import { booleanFlag, integerFlag, requiredString, type CommandInput, type CommandIO } from './spec.js';

export type { ReloadResult };

export async function reloadMain(input: CommandInput, io: CommandIO): Promise<ReloadResult> {
  const result = await requestReload({
    stateDir: requiredString(input, 'state-dir'),
    wait: !booleanFlag(input, 'no-wait'),
    timeoutMs: integerFlag(input, 'timeout') * 1000,
  });
  if (!io.json) {
    const r = result.reload;
    if (r === null) io.log(`${paint.green('✔')} SIGHUP sent to run (pid ${result.pid})`);
    else {
      io.log(`${paint.green('✔')} reload #${r.seq}: ${r.message}`);
      io.log(
        `  serving ${r.served.join(', ')}${r.default ? ` (default ${r.default})` : ''} on ${result.gateway ?? '?'}`,
      );
    }
  }
  return result;
}
