/** `revoke`'s behaviour (its spec and help are in registry.ts). */
import { paint } from '../paint.js';
import { revokeAdapter, type RevokeResult } from '../revoke.js';
import {
  booleanFlag,
  integerFlag,
  requiredString,
  stringFlag,
  type CommandInput,
  type CommandIO,
} from './spec.js';

export type { RevokeResult };

export async function revokeMain(input: CommandInput, io: CommandIO): Promise<RevokeResult> {
  const rules = requiredString(input, 'rules');
  const checksum = stringFlag(input, 'checksum');
  const result = await revokeAdapter(requiredString(input, 'id'), {
    rules,
    reason: requiredString(input, 'reason'),
    dryRun: booleanFlag(input, 'dry-run'),
    lockTimeoutMs: integerFlag(input, 'lock-timeout') * 1000,
    ...(checksum === undefined ? {} : { checksum }),
    onLockWait: (owner) => {
      io.note(`waiting for ${rules}.lock${owner ? ` (pid ${owner.pid} on ${owner.hostname})` : ''}…\n`);
    },
  });
  if (!io.json) {
    const what = `${result.id} (${result.revocation.checksum})`;
    if (result.dry_run && result.diff) io.write(result.diff);
    if (result.already)
      io.log(`${paint.green('✔')} ${what} is already revoked in ${result.rules_file}; nothing changed.`);
    else if (result.dry_run) io.log(paint.dim(`dry run: nothing was written (${what} would be revoked)`));
    else io.log(`${paint.green('✔')} Revoked ${what} in ${result.rules_file}: ${result.revocation.reason}`);
    if (result.is_default) {
      io.log(
        paint.yellow(
          `  ⚠ ${result.id} is the default adapter: run refuses it until llm_assist.default_adapter names another`,
        ),
      );
    }
  }
  return result;
}
